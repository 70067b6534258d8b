//! Idempotency records: the stored answer of a key, replayed for the same payload.

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::PaymentsError;

use super::{Scope, ttl_ms};

/// The stored answer for `(scope, key)` if the key was used with this payload; the
/// key-reuse error if it was used with another; `None` if it is new (or expired).
pub(super) fn replay<R: Message + Default>(
    tx: &Connection,
    scope: Scope,
    key: &str,
    fingerprint: &[u8],
    now: i64,
) -> Result<Option<R>, PaymentsError> {
    let stored: Option<(Vec<u8>, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT fingerprint, response FROM idempotency_records \
             WHERE scope = ?1 AND idempotency_key = ?2 AND expires_at_unix_ms > ?3",
        )?
        .query_row(params![scope.as_str(), key, now], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    match stored {
        None => Ok(None),
        Some((stored_fingerprint, response)) if stored_fingerprint == fingerprint => R::decode(&response[..])
            .map(Some)
            .map_err(|e| PaymentsError::Corrupt(format!("stored {} response: {e}", scope.as_str()))),
        Some(_) => Err(PaymentsError::key_reused(scope.as_str(), key)),
    }
}

/// Stores the answer under `(scope, key)` for 24 hours, dropping expired records.
pub(super) fn remember<R: Message>(
    tx: &Connection,
    scope: Scope,
    key: &str,
    fingerprint: &[u8],
    response: &R,
    now: i64,
) -> Result<(), PaymentsError> {
    tx.prepare_cached("DELETE FROM idempotency_records WHERE expires_at_unix_ms <= ?1")?
        .execute([now])?;
    tx.prepare_cached("DELETE FROM flaky_attempts WHERE expires_at_unix_ms <= ?1")?
        .execute([now])?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_records \
         (scope, idempotency_key, fingerprint, response, created_at_unix_ms, expires_at_unix_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        scope.as_str(),
        key,
        fingerprint,
        response.encode_to_vec(),
        now,
        now.saturating_add(ttl_ms())
    ])?;
    Ok(())
}
