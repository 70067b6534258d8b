//! Idempotency keys on SQLite: one row per (scope, key). An expired row counts as absent
//! in every read, a new claim overwrites it, and `purge_expired_keys` deletes it.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, sqlite_error};
use crate::idempotency::{IdempotencyRecord, IdempotencyStore, KeyClaim, validate_key};
use crate::{StoreError, now_ms};

/// Expired rows one purge statement deletes.
const PURGE_CHUNK: i64 = 5000;

const KEY_COLUMNS: &str = "scope, key, fingerprint, resource_id, response, created_at_ms, expires_at_ms";

fn read_record(row: &Row<'_>) -> rusqlite::Result<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        scope: row.get(0)?,
        key: row.get(1)?,
        fingerprint: row.get(2)?,
        resource_id: row.get(3)?,
        response: row.get(4)?,
        created_at_ms: row.get(5)?,
        expires_at_ms: row.get(6)?,
    })
}

/// The record for (scope, key) if it is live at `now`.
pub(super) fn select_live(
    conn: &Connection,
    scope: &str,
    key: &str,
    now: i64,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM idempotency_keys
         WHERE scope = ?1 AND key = ?2 AND expires_at_ms > ?3"
    ))
    .and_then(|mut statement| {
        statement
            .query_row(params![scope, key, now], read_record)
            .optional()
    })
    .map_err(sqlite_error)
}

/// Stores `response` on the live key (scope, key); false if there is no live key.
pub(super) fn complete_key_on(
    conn: &Connection,
    scope: &str,
    key: &str,
    response: &[u8],
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE idempotency_keys SET response = ?1
             WHERE scope = ?2 AND key = ?3 AND expires_at_ms > ?4",
        )
        .and_then(|mut statement| statement.execute(params![response, scope, key, now_ms()]))
        .map_err(sqlite_error)?;
    Ok(changed > 0)
}

impl IdempotencyStore for SqliteStore {
    async fn claim_key(&self, record: IdempotencyRecord) -> Result<KeyClaim, StoreError> {
        validate_key(&record.scope, &record.key)?;
        let record = IdempotencyRecord {
            response: None,
            ..record
        };
        self.write(move |conn| {
            let tx = conn;
            let now = now_ms();
            // Insert-if-absent in one statement: a live row refuses the write (0 rows
            // changed), an expired one is replaced as if it were not there.
            let changed = tx
                .prepare_cached(&format!(
                    "INSERT INTO idempotency_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6)
                     ON CONFLICT (scope, key) DO UPDATE SET
                         fingerprint = excluded.fingerprint, resource_id = excluded.resource_id,
                         response = NULL, created_at_ms = excluded.created_at_ms,
                         expires_at_ms = excluded.expires_at_ms
                     WHERE idempotency_keys.expires_at_ms <= ?7"
                ))
                .and_then(|mut statement| {
                    statement.execute(params![
                        record.scope,
                        record.key,
                        record.fingerprint,
                        record.resource_id,
                        record.created_at_ms,
                        record.expires_at_ms,
                        now,
                    ])
                })
                .map_err(sqlite_error)?;
            if changed == 1 {
                return Ok(KeyClaim::Claimed(record));
            }
            let existing = select_live(tx, &record.scope, &record.key, now)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "idempotency key {:?}/{:?} refused a claim but is not live",
                    record.scope, record.key
                ))
            })?;
            Ok(KeyClaim::Existing(existing))
        })
        .await
    }

    async fn get_key(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        validate_key(scope, key)?;
        let (scope, key) = (scope.to_string(), key.to_string());
        self.lookup(move |conn| select_live(conn, &scope, &key, now_ms()))
            .await
    }

    async fn complete_key(&self, scope: &str, key: &str, response: Vec<u8>) -> Result<(), StoreError> {
        validate_key(scope, key)?;
        let (scope, key) = (scope.to_string(), key.to_string());
        self.write(move |conn| {
            if complete_key_on(conn, &scope, &key, &response)? {
                Ok(())
            } else {
                Err(StoreError::NotFound(format!("idempotency key {scope:?}/{key:?}")))
            }
        })
        .await
    }

    async fn purge_expired_keys(&self, now_ms: i64) -> Result<u64, StoreError> {
        // In chunks, each its own statement: a day's worth of expired keys never holds the
        // write lock (or this store's connection) for long.
        let mut purged = 0_u64;
        loop {
            let deleted = self
                .write(move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM idempotency_keys WHERE rowid IN
                             (SELECT rowid FROM idempotency_keys WHERE expires_at_ms <= ?1 LIMIT ?2)",
                    )
                    .and_then(|mut statement| statement.execute(params![now_ms, PURGE_CHUNK]))
                    .map_err(sqlite_error)
                })
                .await?;
            purged += u64::try_from(deleted).unwrap_or(u64::MAX);
            if i64::try_from(deleted).unwrap_or(i64::MAX) < PURGE_CHUNK {
                return Ok(purged);
            }
        }
    }
}
