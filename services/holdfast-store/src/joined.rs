//! A saga transition together with the order and key writes of the same step:
//! [`JoinedWriteStore::transition_saga_joined`].
//!
//! A checkout step that writes its order (create, capture's PAID, dispatch's FULFILLING and
//! its events) or stores its answer on the key (finish) used to make that write and then
//! the saga transition: two writes, and a window in which the order and the saga disagree.
//! Joined, SQLite makes them one writer job (one savepoint: all of it or none of it).
//! ScyllaDB has no transaction across partitions: its default runs the joined writes in
//! order, then the transition, which is what the two calls did (every write is conditional
//! or create-if-absent, so a step that runs again after a crash in between repeats it
//! harmlessly).

use std::future::Future;

use crate::{
    IdempotencyStore, OrderStore, OutboxMessage, SagaRecord, SagaStore, SagaTransition, StoreError,
    StoredOrder,
};

/// A write that joins a saga transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinedWrite {
    /// [`OrderStore::create_order`]: create-if-absent.
    CreateOrder(StoredOrder),
    /// [`OrderStore::update_order`] at `expected_version`, with its events. A conflict
    /// fails the whole transition with `VersionConflict` (nothing written).
    UpdateOrder {
        /// The order to store.
        order: StoredOrder,
        /// The version it was read at.
        expected_version: u64,
        /// Events written with it.
        outbox: Vec<OutboxMessage>,
    },
    /// [`IdempotencyStore::complete_key`]; a key no longer live (expired under a saga older
    /// than its TTL) is skipped: nobody is left to answer.
    CompleteKey {
        /// The key's scope.
        scope: String,
        /// The key.
        key: String,
        /// The answer stored on it.
        response: Vec<u8>,
    },
}

/// Saga transitions with joined writes.
pub trait JoinedWriteStore: SagaStore + OrderStore + IdempotencyStore {
    /// Applies `joined` and [`SagaStore::transition_saga`] (`id` from `expected_version`,
    /// with `outbox`) as one atomic write where the backend can (SQLite), else in order,
    /// the transition last. Errors are those of the write that failed.
    fn transition_saga_joined(
        &self,
        id: &str,
        expected_version: u64,
        transition: SagaTransition,
        outbox: Vec<OutboxMessage>,
        joined: Vec<JoinedWrite>,
    ) -> impl Future<Output = Result<SagaRecord, StoreError>> + Send {
        async move {
            for write in joined {
                apply_in_order(self, write).await?;
            }
            self.transition_saga(id, expected_version, transition, outbox)
                .await
        }
    }
}

/// Makes one joined write on its own, as the default [`JoinedWriteStore`] does before the
/// transition (also how a test stands for a transition lost after its writes).
pub async fn apply_in_order<S: JoinedWriteStore + ?Sized>(
    store: &S,
    write: JoinedWrite,
) -> Result<(), StoreError> {
    match write {
        JoinedWrite::CreateOrder(order) => store.create_order(order).await.map(drop),
        JoinedWrite::UpdateOrder {
            order,
            expected_version,
            outbox,
        } => store
            .update_order(order, expected_version, outbox)
            .await
            .map(drop),
        JoinedWrite::CompleteKey { scope, key, response } => {
            match store.complete_key(&scope, &key, response).await {
                Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

impl JoinedWriteStore for crate::ScyllaStore {}

impl JoinedWriteStore for crate::Store {
    async fn transition_saga_joined(
        &self,
        id: &str,
        expected_version: u64,
        transition: SagaTransition,
        outbox: Vec<OutboxMessage>,
        joined: Vec<JoinedWrite>,
    ) -> Result<SagaRecord, StoreError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .transition_saga_joined(id, expected_version, transition, outbox, joined)
                    .await
            }
            Self::Scylla(store) => {
                store
                    .transition_saga_joined(id, expected_version, transition, outbox, joined)
                    .await
            }
        }
    }
}
