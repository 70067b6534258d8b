//! The outbox on SQLite: one table of unsent events. Marking an event sent deletes it, so
//! the table is the relay's backlog and nothing more.

use rusqlite::{Connection, Row, params};

use super::{SqliteStore, sqlite_error};
use crate::StoreError;
use crate::outbox::{MAX_OUTBOX_BATCH, OutboxMessage, OutboxStore, distinct_messages, validate_ids};

const OUTBOX_COLUMNS: &str = "id, topic, event_key, event_type, payload, headers, created_at_ms";

/// Appends checked, distinct `messages` on `conn`, inside the caller's transaction (so a
/// state change and its events commit or roll back together). An id already pending keeps
/// its first content.
pub(super) fn insert_messages(conn: &Connection, messages: &[OutboxMessage]) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut statement = conn
        .prepare_cached(&format!(
            "INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO NOTHING"
        ))
        .map_err(sqlite_error)?;
    for message in messages {
        let headers = serde_json::to_string(&message.headers)
            .map_err(|e| StoreError::InvalidArgument(format!("outbox headers: {e}")))?;
        statement
            .execute(params![
                message.id,
                message.topic,
                message.key,
                message.event_type,
                message.payload,
                headers,
                message.created_at_ms,
            ])
            .map_err(sqlite_error)?;
    }
    Ok(())
}

fn read_message(row: &Row<'_>) -> rusqlite::Result<OutboxMessage> {
    let headers: String = row.get(5)?;
    let headers = serde_json::from_str(&headers)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into()))?;
    Ok(OutboxMessage {
        id: row.get(0)?,
        topic: row.get(1)?,
        key: row.get(2)?,
        event_type: row.get(3)?,
        payload: row.get(4)?,
        headers,
        created_at_ms: row.get(6)?,
    })
}

impl OutboxStore for SqliteStore {
    async fn append_outbox(&self, messages: Vec<OutboxMessage>) -> Result<(), StoreError> {
        let messages = distinct_messages(messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let tx = conn;
            insert_messages(tx, &messages)?;
            Ok(())
        })
        .await
    }

    /// Leaves `skip` out in the query, so the rows on their way are neither read nor counted
    /// against `limit`.
    async fn pending_outbox_except(
        &self,
        limit: u32,
        skip: &[&str],
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let limit = i64::from(limit.min(MAX_OUTBOX_BATCH));
        if limit == 0 {
            return Ok(Vec::new());
        }
        let skip = serde_json::to_string(skip)
            .map_err(|e| StoreError::InvalidArgument(format!("outbox ids to skip: {e}")))?;
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE id NOT IN (SELECT value FROM json_each(?2))
                 ORDER BY id LIMIT ?1"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map(params![limit, skip], read_message)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sqlite_error)
        })
        .await
    }

    async fn mark_outbox_sent(&self, ids: &[String]) -> Result<(), StoreError> {
        validate_ids(ids)?;
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.write(move |conn| {
            let tx = conn;
            {
                let mut delete = tx
                    .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                    .map_err(sqlite_error)?;
                for id in &ids {
                    delete.execute([id]).map_err(sqlite_error)?;
                }
            }
            Ok(())
        })
        .await
    }
}
