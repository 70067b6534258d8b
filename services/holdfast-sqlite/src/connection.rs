//! What every connection holdfast opens on a SQLite file gets before its first statement
//! ([`tune`]): room for every statement it runs in its statement cache, and the query
//! planner's stability guarantee.
//!
//! Both keep a cached statement compiled for good. rusqlite's cache holds 16 statements by
//! default; the store's writer runs well over a hundred distinct ones, so the least recently
//! used were evicted and compiled again on their next call (a profile of `bench checkout`
//! found 19% of the writer thread in `sqlite3Prepare`). And without the guarantee, SQLite
//! marks a statement whose plan could depend on a bound value (`LIMIT ?1`, `?2 IS NULL OR
//! region = ?2`, `?3 OR active`) to be re-planned whenever that value is rebound; rusqlite
//! clears a statement's bindings when it goes back to the cache, so such a statement was
//! compiled again on every call (`sqlite3Reprepare`, ≈5% of the server's Tokio workers in
//! the same profile). With the guarantee a statement keeps the plan it was compiled with;
//! none of holdfast's queries needs a plan per value (partial indexes are matched by
//! literals, e.g. `finished = 0`).

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use crate::Failure;

/// Statements a connection keeps compiled (least recently used evicted past this).
pub const STATEMENT_CACHE: usize = 512;

/// Gives `conn` a statement cache of [`STATEMENT_CACHE`] and turns the query planner
/// stability guarantee on.
pub fn tune(conn: &Connection) -> Result<(), Failure> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}
