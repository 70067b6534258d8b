//! Purging stored carts nobody touched for the cart TTL.
//!
//! A live cart expires from Redis 30 days after its last change, and a durable copy older
//! than that is restored empty, so such a row is dead weight. Anonymous sessions make one
//! each; without a purge the table grows with every visitor for ever. The cart service's
//! background task calls [`CartPurge::purge_carts`] periodically.

use std::future::Future;

use crate::{ScyllaStore, Store, StoreError};

/// Deleting carts last changed before a cut-off.
pub trait CartPurge: Send + Sync {
    /// Deletes every stored cart (tombstones included) whose `updated_at_ms` is before
    /// `updated_before_ms`; returns how many rows went. A late save of a purged cart lands
    /// as a new cart, which the cart service restores empty anyway once it has outlived the
    /// TTL, so dropping tombstones that old loses nothing.
    fn purge_carts(&self, updated_before_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl CartPurge for Store {
    async fn purge_carts(&self, updated_before_ms: i64) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => store.purge_carts(updated_before_ms).await,
            Self::Scylla(store) => store.purge_carts(updated_before_ms).await,
        }
    }
}

impl CartPurge for ScyllaStore {
    /// Nothing yet: ScyllaDB cannot delete by a non-key column without a full scan.
    // TODO(issue 12): write carts `USING TTL` (the cart TTL) in the ScyllaDB save statement so
    // the database expires them itself; the ScyllaDB backend's owner does that change.
    async fn purge_carts(&self, _updated_before_ms: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
}
