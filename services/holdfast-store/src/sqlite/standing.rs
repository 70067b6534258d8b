//! A key's standing on SQLite: its waiting entry, its claim and the queue's depth in one
//! read transaction.
//!
//! A key that does not wait (every checkout the waiting room did not hold back) is three
//! probes by key, read on the caller's thread ([`SqliteStore::lookup`]). A waiting key's
//! position counts the entries ahead of it, up to the queue's bound: that read goes to the
//! blocking pool, again in one snapshot.

use rusqlite::Connection;

use super::SqliteStore;
use super::idempotency::select_live;
use super::waiting_room::{depth, entry, position};
use crate::idempotency::validate_key;
use crate::standing::{Standing, StandingStore};
use crate::waiting_room::validate;
use crate::{QueuedEntry, StoreError, now_ms};

impl StandingStore for SqliteStore {
    async fn standing(&self, queue: &str, scope: &str, key: &str) -> Result<Standing, StoreError> {
        validate(queue, key)?;
        validate_key(scope, key)?;
        let owned = || (queue.to_string(), scope.to_string(), key.to_string());
        let (q, s, k) = owned();
        let probe = self
            .lookup(move |conn| match entry(conn, &q, &k)? {
                Some(_) => Ok(None),
                None => standing_with(conn, &q, &s, &k, None).map(Some),
            })
            .await?;
        if let Some(standing) = probe {
            return Ok(standing);
        }
        let (q, s, k) = owned();
        self.read(move |conn| {
            let waiting = position(conn, &q, &k)?;
            standing_with(conn, &q, &s, &k, waiting)
        })
        .await
    }
}

/// `waiting` with the key's live claim and the queue's depth, read in the caller's transaction.
fn standing_with(
    conn: &Connection,
    queue: &str,
    scope: &str,
    key: &str,
    waiting: Option<(QueuedEntry, u64)>,
) -> Result<Standing, StoreError> {
    Ok(Standing {
        waiting,
        claim: select_live(conn, scope, key, now_ms())?,
        depth: depth(conn, queue)?,
    })
}
