//! Where a key stands before its work is admitted: its place in a waiting room, its claim,
//! and the queue's depth, read together: [`StandingStore::standing`].
//!
//! Checkout admission asks all three of every new request (docs/admission.md). On SQLite
//! they are one read transaction: one snapshot, one trip to a reader connection instead
//! of three. ScyllaDB has no snapshot across partitions: its default reads them in turn,
//! the queue first (the waiting room claims a key before it dequeues it, so a key no
//! longer queued has its claim already), as three separate calls did.

use std::future::Future;

use crate::{IdempotencyRecord, IdempotencyStore, QueuedEntry, StoreError, WaitingRoomStore};

/// A key's standing in a waiting room and in an idempotency scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Standing {
    /// The key's waiting entry and its position (1 = next), if it waits.
    pub waiting: Option<(QueuedEntry, u64)>,
    /// The key's live claim, if it was claimed.
    pub claim: Option<IdempotencyRecord>,
    /// Entries waiting in the queue.
    pub depth: u64,
}

/// The three reads of [`Standing`] in one call.
pub trait StandingStore: WaitingRoomStore + IdempotencyStore {
    /// The standing of `key` in `queue` and in `scope`. Errors are those of
    /// [`WaitingRoomStore::queue_position`] and [`IdempotencyStore::get_key`].
    fn standing(
        &self,
        queue: &str,
        scope: &str,
        key: &str,
    ) -> impl Future<Output = Result<Standing, StoreError>> + Send {
        async move {
            let waiting = self.queue_position(queue, key).await?;
            let claim = self.get_key(scope, key).await?;
            let depth = self.queue_depth(queue).await?;
            Ok(Standing {
                waiting,
                claim,
                depth,
            })
        }
    }
}

impl StandingStore for crate::ScyllaStore {}

impl StandingStore for crate::Store {
    async fn standing(&self, queue: &str, scope: &str, key: &str) -> Result<Standing, StoreError> {
        match self {
            Self::Sqlite(store) => store.standing(queue, scope, key).await,
            Self::Scylla(store) => store.standing(queue, scope, key).await,
        }
    }
}
