//! Idempotency records: the first request with a client-made key claims it; repeats find
//! the claim (and, once the work is done, its stored answer). Records live 24 hours.

use std::future::Future;

use crate::StoreError;

/// How long a key is kept.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// A claimed key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdempotencyRecord {
    /// Which API the key belongs to, e.g. "checkout" (keys are scoped per API).
    pub scope: String,
    /// The client-made key.
    pub key: String,
    /// A digest of the request payload the key was first used with; a repeat with another
    /// fingerprint is a different request and must be refused by the caller.
    pub fingerprint: String,
    /// What the first request started (e.g. the saga id).
    pub resource_id: String,
    /// The stored answer once the work is done (encoded response); `None` while running.
    pub response: Option<Vec<u8>>,
    /// When it was claimed (Unix ms).
    pub created_at_ms: i64,
    /// When it is forgotten (Unix ms); an expired record counts as absent everywhere.
    pub expires_at_ms: i64,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key was free (or expired); this is the record now stored.
    Claimed(IdempotencyRecord),
    /// Someone claimed it first; this is their live record, unchanged.
    Existing(IdempotencyRecord),
}

/// Durable storage of idempotency records.
pub trait IdempotencyStore: Send + Sync {
    /// Stores `record` if no live record has its (scope, key): insert-if-absent, exactly
    /// one of any number of concurrent claims wins. `response` of the argument is ignored
    /// (a claim is always unanswered).
    fn claim_key(
        &self,
        record: IdempotencyRecord,
    ) -> impl Future<Output = Result<KeyClaim, StoreError>> + Send;

    /// The live record for (scope, key), if any.
    fn get_key(
        &self,
        scope: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Stores the answer on the live record for (scope, key), keeping its expiry. Setting
    /// the same answer again is fine; `NotFound` if there is no live record.
    fn complete_key(
        &self,
        scope: &str,
        key: &str,
        response: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes records that expired before `now_ms` and returns how many (ScyllaDB expires
    /// them itself with `USING TTL` and answers 0).
    fn purge_expired_keys(&self, now_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Refuses an empty scope or key.
pub(crate) fn validate_key(scope: &str, key: &str) -> Result<(), StoreError> {
    if scope.is_empty() {
        return Err(StoreError::InvalidArgument("idempotency scope is empty".into()));
    }
    if key.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "idempotency key in scope {scope:?} is empty"
        )));
    }
    Ok(())
}

/// Whether a record expiring at `expires_at_ms` is still live at `now_ms`: a record is
/// gone from the millisecond it expires.
pub(crate) fn is_live(expires_at_ms: i64, now_ms: i64) -> bool {
    expires_at_ms > now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_need_scope_and_key_and_expire_at_their_instant() {
        assert_eq!(validate_key("checkout", "k"), Ok(()));
        assert!(validate_key("", "k").is_err());
        assert!(validate_key("checkout", "").is_err());
        assert!(is_live(11, 10));
        assert!(!is_live(10, 10));
    }
}
