//! Purging stored carts nobody touched for the cart TTL.
//!
//! A live cart expires from Redis 30 days after its last change, and a durable copy older
//! than that is restored empty, so such a row is dead weight. Anonymous sessions make one
//! each; without a purge the table grows with every visitor for ever. The cart service's
//! background task calls [`CartPurge::purge_carts`] periodically. SQLite deletes by
//! `updated_at_ms`; ScyllaDB writes each cart row with a TTL instead and lets the database
//! expire it (its purge deletes nothing): on both, a cart untouched for the TTL is gone.

use std::future::Future;

#[cfg(doc)]
use crate::DEFAULT_CART_TTL;
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
    /// Nothing to delete, so always 0: ScyllaDB writes every cart row `USING TTL` (what is
    /// left of [`DEFAULT_CART_TTL`], or the store's
    /// [`with_cart_ttl`](ScyllaStore::with_cart_ttl), counted from the cart's
    /// `updated_at_ms`) and expires it itself, so a cart untouched for the TTL is gone from
    /// every read as it would be after a purge on SQLite. (Deleting by `updated_at_ms`
    /// would need a full scan: it is not a key column.)
    async fn purge_carts(&self, _updated_before_ms: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
}
