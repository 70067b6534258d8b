//! The waiting room: durable, bounded first-in-first-out queues of work admitted but not
//! started (checkouts at overload, docs/admission.md). One entry per (queue, key): a repeat
//! enqueue of a waiting key finds the first entry and its position instead of adding one.
//!
//! Entries leave only by [`WaitingRoomStore::dequeue`], after the caller made the work
//! durable elsewhere (a saga), so a process killed mid-queue loses nothing: the next one
//! lists the same head.

use std::future::Future;

use crate::StoreError;

/// One waiting entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueuedEntry {
    /// The queue, e.g. "checkout".
    pub queue: String,
    /// The client's key (e.g. the idempotency key); unique in its queue.
    pub key: String,
    /// What to run (e.g. the encoded request).
    pub payload: Vec<u8>,
    /// When it was enqueued (Unix ms, the enqueuing process's clock).
    pub enqueued_at_ms: i64,
    /// Arrival order in its queue, set by the store: smaller arrived first.
    pub seq: i64,
}

/// The outcome of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Added; `position` counts from 1 at the head.
    Added {
        /// Where it waits (1 = next).
        position: u64,
        /// The stored entry.
        entry: QueuedEntry,
    },
    /// The key already waits: its first entry, unchanged, and its position.
    Existing {
        /// Where it waits (1 = next).
        position: u64,
        /// The stored entry.
        entry: QueuedEntry,
    },
    /// The queue holds `max_depth` entries already; nothing was written.
    Full {
        /// Entries waiting.
        depth: u64,
    },
}

/// Durable storage of waiting rooms.
pub trait WaitingRoomStore: Send + Sync {
    /// Appends (queue, key) with `payload` unless the key already waits (then its first
    /// entry is answered) or the queue holds `max_depth` entries (then `Full`, nothing
    /// written). On SQLite the bound is exact; on ScyllaDB concurrent enqueuers can overshoot
    /// it by at most their number.
    fn enqueue(
        &self,
        queue: &str,
        key: &str,
        payload: Vec<u8>,
        max_depth: u64,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;

    /// The waiting entry of (queue, key) and its position (1 = next), if it waits.
    fn queue_position(
        &self,
        queue: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<(QueuedEntry, u64)>, StoreError>> + Send;

    /// The first `limit` (1..=1000) entries of `queue`, in arrival order.
    fn queue_head(
        &self,
        queue: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<QueuedEntry>, StoreError>> + Send;

    /// Removes (queue, key); `true` if it was waiting. Repeating it is harmless.
    fn dequeue(&self, queue: &str, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// How many entries wait in `queue`.
    fn queue_depth(&self, queue: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Refuses an empty queue or key, and a head listing outside 1..=1000.
pub(crate) fn validate(queue: &str, key: &str) -> Result<(), StoreError> {
    if queue.is_empty() {
        return Err(StoreError::InvalidArgument("waiting room queue is empty".into()));
    }
    if key.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "waiting room key in queue {queue:?} is empty"
        )));
    }
    Ok(())
}

/// Refuses a head listing outside 1..=1000 or of an unnamed queue.
pub(crate) fn validate_head(queue: &str, limit: u32) -> Result<(), StoreError> {
    validate(queue, "-")?;
    if !(1..=1000).contains(&limit) {
        return Err(StoreError::InvalidArgument(format!(
            "waiting room head limit {limit} must be 1..=1000"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_room_names_and_limits_are_checked() {
        assert!(validate("checkout", "k").is_ok());
        assert!(validate("", "k").is_err());
        assert!(validate("checkout", "").is_err());
        assert!(validate_head("checkout", 1).is_ok());
        assert!(validate_head("checkout", 0).is_err());
        assert!(validate_head("checkout", 1001).is_err());
    }
}
