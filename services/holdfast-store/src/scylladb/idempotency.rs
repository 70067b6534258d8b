//! Idempotency keys on ScyllaDB: one partition per (scope, key), written with `USING TTL`
//! so ScyllaDB forgets a record by itself shortly after `expires_at_ms`.
//!
//! TTLs count whole seconds, so a record may outlive its expiry by up to a second: every
//! read therefore checks `expires_at_ms` as well, and a claim that finds an expired record
//! still stored replaces it with a second LWT conditional on that record's expiry, so one
//! claimer wins that race too.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, lwt_outcome, prepare_statement, serial};
use crate::idempotency::{IdempotencyRecord, IdempotencyStore, KeyClaim, is_live, validate_key};
use crate::{StoreError, now_ms};

/// ScyllaDB's largest TTL (20 years); a later expiry is kept that long.
const MAX_TTL_SECONDS: i64 = 630_720_000;
/// Claim rounds before a key whose record keeps changing under us is reported as busy.
const CLAIM_ATTEMPTS: usize = 4;

const RECORD_COLUMNS: &str = "fingerprint, resource_id, response, created_at_ms, expires_at_ms";

/// A record's columns in `RECORD_COLUMNS` order.
type RecordRow = (
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
);

/// The key statements, prepared.
pub(super) struct KeyStatements {
    get: PreparedStatement,
    get_serial: PreparedStatement,
    claim_if_absent: PreparedStatement,
    replace_if_expiry: PreparedStatement,
    complete: PreparedStatement,
}

impl KeyStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        let get = prepare(
            format!("SELECT {RECORD_COLUMNS} FROM {ks}.idempotency_keys WHERE scope = ? AND key = ?"),
            true,
        )
        .await?;
        Ok(Self {
            get_serial: serial(&get),
            get,
            claim_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.idempotency_keys (scope, key, fingerprint, resource_id, created_at_ms, \
                     expires_at_ms) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                ),
                false,
            )
            .await?,
            replace_if_expiry: prepare(
                format!(
                    "UPDATE {ks}.idempotency_keys USING TTL ? SET fingerprint = ?, resource_id = ?, \
                     response = null, created_at_ms = ?, expires_at_ms = ? \
                     WHERE scope = ? AND key = ? IF expires_at_ms = ?"
                ),
                false,
            )
            .await?,
            // The answer expires with the record it completes.
            complete: prepare(
                format!(
                    "UPDATE {ks}.idempotency_keys USING TTL ? SET response = ? WHERE scope = ? AND key = ?"
                ),
                true,
            )
            .await?,
        })
    }
}

/// The TTL that makes ScyllaDB drop a record expiring at `expires_at_ms`: at least one
/// second (0 would mean "never"), rounded up, at most ScyllaDB's maximum.
fn ttl_seconds(expires_at_ms: i64, now_ms: i64) -> i32 {
    let remaining_ms = expires_at_ms.saturating_sub(now_ms).max(0);
    let seconds = remaining_ms / 1000 + i64::from(remaining_ms % 1000 != 0);
    // The clamp keeps it within i32.
    seconds.clamp(1, MAX_TTL_SECONDS) as i32
}

impl ScyllaStore {
    /// The stored record for (scope, key), live or not; `None` when there is none or it
    /// is a remnant without an expiry.
    async fn read_key(
        &self,
        statement: &PreparedStatement,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(row) = self
            .rows::<RecordRow>(statement, (scope, key))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let (fingerprint, resource_id, response, created_at_ms, expires_at_ms) = row;
        Ok(expires_at_ms.map(|expires_at_ms| IdempotencyRecord {
            scope: scope.to_string(),
            key: key.to_string(),
            fingerprint: fingerprint.unwrap_or_default(),
            resource_id: resource_id.unwrap_or_default(),
            response,
            created_at_ms: created_at_ms.unwrap_or_default(),
            expires_at_ms,
        }))
    }
}

impl IdempotencyStore for ScyllaStore {
    async fn claim_key(&self, record: IdempotencyRecord) -> Result<KeyClaim, StoreError> {
        validate_key(&record.scope, &record.key)?;
        let record = IdempotencyRecord {
            response: None,
            ..record
        };
        let statements = &self.statements().await?.keys;
        for _ in 0..CLAIM_ATTEMPTS {
            let ttl = ttl_seconds(record.expires_at_ms, now_ms());
            let result = self
                .run(
                    &statements.claim_if_absent,
                    (
                        &record.scope,
                        &record.key,
                        &record.fingerprint,
                        &record.resource_id,
                        record.created_at_ms,
                        record.expires_at_ms,
                        ttl,
                    ),
                )
                .await?;
            if lwt_outcome(result)?.0 {
                return Ok(KeyClaim::Claimed(record));
            }
            // Someone holds it. A SERIAL read sees exactly what the LWT saw (or newer).
            let Some(existing) = self
                .read_key(&statements.get_serial, &record.scope, &record.key)
                .await?
            else {
                // Expired by TTL since: claim again.
                continue;
            };
            if is_live(existing.expires_at_ms, now_ms()) {
                return Ok(KeyClaim::Existing(existing));
            }
            // Expired but not yet dropped: replace exactly that record, or lose to whoever
            // replaced it first and look again.
            let ttl = ttl_seconds(record.expires_at_ms, now_ms());
            let result = self
                .run(
                    &statements.replace_if_expiry,
                    (
                        ttl,
                        &record.fingerprint,
                        &record.resource_id,
                        record.created_at_ms,
                        record.expires_at_ms,
                        &record.scope,
                        &record.key,
                        existing.expires_at_ms,
                    ),
                )
                .await?;
            if lwt_outcome(result)?.0 {
                return Ok(KeyClaim::Claimed(record));
            }
        }
        Err(StoreError::Unavailable(format!(
            "idempotency key {:?}/{:?} kept changing during the claim",
            record.scope, record.key
        )))
    }

    async fn get_key(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        validate_key(scope, key)?;
        let statements = &self.statements().await?.keys;
        let record = self.read_key(&statements.get, scope, key).await?;
        Ok(record.filter(|record| is_live(record.expires_at_ms, now_ms())))
    }

    async fn complete_key(&self, scope: &str, key: &str, response: Vec<u8>) -> Result<(), StoreError> {
        validate_key(scope, key)?;
        let statements = &self.statements().await?.keys;
        let now = now_ms();
        let Some(record) = self
            .read_key(&statements.get, scope, key)
            .await?
            .filter(|record| is_live(record.expires_at_ms, now))
        else {
            return Err(StoreError::NotFound(format!("idempotency key {scope:?}/{key:?}")));
        };
        // A plain write: the record is live and only its claimer completes it. Were it to
        // expire in between, the answer alone would be stored, expire with the same TTL,
        // and read as no record at all (no expiry column).
        self.run(
            &statements.complete,
            (ttl_seconds(record.expires_at_ms, now), response, scope, key),
        )
        .await?;
        Ok(())
    }

    async fn purge_expired_keys(&self, _now_ms: i64) -> Result<u64, StoreError> {
        // `USING TTL` makes ScyllaDB drop expired records itself.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_stays_in_scylla_range() {
        assert_eq!(ttl_seconds(10_000, 0), 10);
        assert_eq!(ttl_seconds(10_001, 0), 11);
        assert_eq!(ttl_seconds(1, 0), 1);
        assert_eq!(ttl_seconds(0, 0), 1, "0 would mean never expire");
        assert_eq!(ttl_seconds(-5_000, 0), 1, "already expired: gone within a second");
        assert_eq!(ttl_seconds(i64::MAX, i64::MIN), MAX_TTL_SECONDS as i32);
        assert_eq!(
            ttl_seconds(crate::IDEMPOTENCY_TTL_MS, 0),
            86_400,
            "a day-long record lives a day"
        );
    }
}
