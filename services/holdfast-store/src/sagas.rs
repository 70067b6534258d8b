//! The saga aggregate: the persisted state of a multi-step workflow (checkout, cancel,
//! return) so that a crash at any point resumes or compensates.
//!
//! A saga moves only by conditional transitions on its version, so two workers can never
//! both move it from the same state. A worker owns a saga while its lease runs
//! (`lease_owner`, `lease_until_ms`); taking it over is itself a transition. The step and
//! state are opaque to the store: the orders service names the steps and encodes the state.

use std::future::Future;

use crate::{OutboxMessage, StoreError};

/// A saga as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SagaRecord {
    /// The saga id, the key.
    pub id: String,
    /// Which workflow, e.g. "checkout"; fixed at creation.
    pub kind: String,
    /// The step it is at (the next step to run), e.g. "reserve".
    pub step: String,
    /// The workflow's own data (request, results of steps so far), opaque to the store.
    pub state: Vec<u8>,
    /// Set by the store: 1 on creation, +1 on every transition.
    pub version: u64,
    /// Who runs it now (a process instance id); empty when nobody does.
    pub lease_owner: String,
    /// Until when `lease_owner` owns it (Unix ms); after that anyone may take it over.
    pub lease_until_ms: i64,
    /// Whether it reached an end (done or fully compensated); finished sagas never move.
    pub finished: bool,
    /// When it was created (Unix ms). Kept from the first write.
    pub created_at_ms: i64,
    /// Set by the store: when it last moved (Unix ms).
    pub updated_at_ms: i64,
}

/// What a transition writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SagaTransition {
    /// The new step.
    pub step: String,
    /// The new state.
    pub state: Vec<u8>,
    /// The new lease owner (the same one to keep running it, another to take over, empty
    /// to let go).
    pub lease_owner: String,
    /// The new lease end (Unix ms).
    pub lease_until_ms: i64,
    /// Whether this transition ends the saga.
    pub finished: bool,
}

/// Durable storage of sagas.
pub trait SagaStore: Send + Sync {
    /// Creates `saga` (version 1) unless one with its id exists, in which case the stored
    /// one is returned unchanged (so creation is safe to repeat). `version` and
    /// `updated_at_ms` of the argument are ignored.
    fn create_saga(&self, saga: SagaRecord) -> impl Future<Output = Result<SagaRecord, StoreError>> + Send;

    /// The saga with this id, if any.
    fn get_saga(&self, id: &str) -> impl Future<Output = Result<Option<SagaRecord>, StoreError>> + Send;

    /// Moves the saga if its stored version is `expected_version` and it is not finished,
    /// appending `outbox` in the same atomic write (SQLite: one transaction; ScyllaDB: one
    /// conditional batch). `NotFound` if there is no such saga; `VersionConflict` if it
    /// moved on or is finished (then nothing is written, outbox included). Returns the saga
    /// as stored (version + 1).
    fn transition_saga(
        &self,
        id: &str,
        expected_version: u64,
        transition: SagaTransition,
        outbox: Vec<OutboxMessage>,
    ) -> impl Future<Output = Result<SagaRecord, StoreError>> + Send;

    /// Unfinished sagas whose lease ended before `now_ms` (nobody is running them), oldest
    /// first, at most `limit`: what a recovery worker resumes.
    fn list_stalled_sagas(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<SagaRecord>, StoreError>> + Send;
}

/// Most sagas one `list_stalled_sagas` call returns, whatever `limit` asks.
pub(crate) const MAX_STALLED_BATCH: u32 = 1000;

/// Refuses an empty saga id.
pub(crate) fn validate_saga_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::InvalidArgument("saga id is empty".into()));
    }
    Ok(())
}

/// Whether a saga in this condition counts as stalled at `now_ms`.
pub(crate) fn is_stalled(saga: &SagaRecord, now_ms: i64) -> bool {
    !saga.finished && saga.lease_until_ms < now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_means_unfinished_with_lease_ended_before_now() {
        let saga = SagaRecord {
            id: "s".into(),
            lease_until_ms: 100,
            ..SagaRecord::default()
        };
        assert!(is_stalled(&saga, 101));
        assert!(
            !is_stalled(&saga, 100),
            "a lease ending now has not ended before now"
        );
        let finished = SagaRecord {
            finished: true,
            ..saga
        };
        assert!(!is_stalled(&finished, 101));
        assert!(validate_saga_id("").is_err());
    }
}
