//! One statement without parameters or rows (`BEGIN`, `SAVEPOINT`, `COMMIT`, ...), cached on
//! its connection: what the writer, the readers and nested savepoints run around the work.

use rusqlite::Connection;

use crate::Failure;

pub(crate) fn exec(conn: &Connection, sql: &str) -> Result<(), Failure> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(Failure::from)
}
