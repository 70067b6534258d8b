//! The waiting room on SQLite: one row per waiting entry, `seq` (AUTOINCREMENT, never
//! reused) its arrival order, and one `waiting_room_depth` row per queue that triggers keep
//! equal to its entries. The bound check and the insert are one writer job, so the bound is
//! exact.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, sqlite_error};
use crate::waiting_room::{Enqueued, QueuedEntry, WaitingRoomStore, validate, validate_head};
use crate::{StoreError, now_ms};

const COLUMNS: &str = "queue, key, payload, enqueued_at_ms, seq";

fn read_entry(row: &Row<'_>) -> rusqlite::Result<QueuedEntry> {
    Ok(QueuedEntry {
        queue: row.get(0)?,
        key: row.get(1)?,
        payload: row.get(2)?,
        enqueued_at_ms: row.get(3)?,
        seq: row.get(4)?,
    })
}

/// The waiting entry of (queue, key): one probe of the (queue, key) index.
pub(super) fn entry(conn: &Connection, queue: &str, key: &str) -> Result<Option<QueuedEntry>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM waiting_room WHERE queue = ?1 AND key = ?2"
    ))
    .and_then(|mut statement| statement.query_row(params![queue, key], read_entry).optional())
    .map_err(sqlite_error)
}

/// The waiting entry of (queue, key) and its 1-based position: a count of the entries
/// ahead of it, so a scan of up to the queue's depth.
pub(super) fn position(
    conn: &Connection,
    queue: &str,
    key: &str,
) -> Result<Option<(QueuedEntry, u64)>, StoreError> {
    let Some(entry) = entry(conn, queue, key)? else {
        return Ok(None);
    };
    let ahead: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM waiting_room WHERE queue = ?1 AND seq <= ?2")
        .and_then(|mut statement| statement.query_row(params![queue, entry.seq], |row| row.get(0)))
        .map_err(sqlite_error)?;
    Ok(Some((entry, u64::try_from(ahead).unwrap_or(0))))
}

/// The entries waiting in `queue`: one row, kept by the triggers of migration 6.
pub(super) fn depth(conn: &Connection, queue: &str) -> Result<u64, StoreError> {
    let depth: Option<i64> = conn
        .prepare_cached("SELECT depth FROM waiting_room_depth WHERE queue = ?1")
        .and_then(|mut statement| statement.query_row(params![queue], |row| row.get(0)).optional())
        .map_err(sqlite_error)?;
    u64::try_from(depth.unwrap_or(0))
        .map_err(|_| StoreError::Corrupt(format!("waiting room {queue:?} has a negative depth")))
}

impl WaitingRoomStore for SqliteStore {
    async fn enqueue(
        &self,
        queue: &str,
        key: &str,
        payload: Vec<u8>,
        max_depth: u64,
    ) -> Result<Enqueued, StoreError> {
        validate(queue, key)?;
        let (queue, key) = (queue.to_string(), key.to_string());
        self.write(move |conn| {
            let tx = conn;
            if let Some((entry, position)) = position(tx, &queue, &key)? {
                return Ok(Enqueued::Existing { position, entry });
            }
            let waiting = depth(tx, &queue)?;
            if waiting >= max_depth {
                return Ok(Enqueued::Full { depth: waiting });
            }
            tx.prepare_cached(
                "INSERT INTO waiting_room (queue, key, payload, enqueued_at_ms) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut statement| statement.execute(params![queue, key, payload, now_ms()]))
            .map_err(sqlite_error)?;
            // AUTOINCREMENT: the new entry's seq is above every other's, so it is last.
            let entry = entry(tx, &queue, &key)?
                .ok_or_else(|| StoreError::Corrupt("an enqueued entry vanished".into()))?;
            Ok(Enqueued::Added {
                position: waiting + 1,
                entry,
            })
        })
        .await
    }

    async fn queue_position(&self, queue: &str, key: &str) -> Result<Option<(QueuedEntry, u64)>, StoreError> {
        validate(queue, key)?;
        let (queue, key) = (queue.to_string(), key.to_string());
        self.read(move |conn| position(conn, &queue, &key)).await
    }

    async fn queue_head(&self, queue: &str, limit: u32) -> Result<Vec<QueuedEntry>, StoreError> {
        validate_head(queue, limit)?;
        let queue = queue.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM waiting_room WHERE queue = ?1 ORDER BY seq LIMIT ?2"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map(params![queue, limit], read_entry)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sqlite_error)
        })
        .await
    }

    async fn dequeue(&self, queue: &str, key: &str) -> Result<bool, StoreError> {
        validate(queue, key)?;
        let (queue, key) = (queue.to_string(), key.to_string());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM waiting_room WHERE queue = ?1 AND key = ?2")
                .and_then(|mut statement| statement.execute(params![queue, key]))
                .map(|deleted| deleted > 0)
                .map_err(sqlite_error)
        })
        .await
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, StoreError> {
        validate(queue, "-")?;
        let queue = queue.to_string();
        self.lookup(move |conn| depth(conn, &queue)).await
    }
}
