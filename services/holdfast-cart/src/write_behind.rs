//! The durable copy, written behind the live cart.
//!
//! Every successful change marks its owner here together with the cart its script answered
//! (the acknowledged state). The worker waits until something is marked, lets marks collect
//! for `flush_every` (many changes to one cart in that window cost one store write), then
//! saves each marked cart whole, as it was acknowledged: not as Redis holds it at flush time,
//! which after a Redis loss is nothing or an older copy (re-warmed from the store, or left by
//! a restart that lost the last writes). So a clear acknowledged just before the loss (the
//! clear after a checkout) still reaches the store. Once saved, a live copy older than the
//! saved state is dropped from Redis (`cart_evict_stale.lua`): the next read re-warms the
//! saved state instead of answering lines that were removed. The store keeps the highest
//! version it was given, so late or repeated saves are harmless. A change therefore reaches
//! the store within `flush_every` plus one round of store writes: that is how long a change
//! can be lost if this process and Redis are lost together. A crash of this process loses no
//! change while Redis survives: the next change of that cart saves all of it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use fred::prelude::Pool;
use futures::StreamExt;
use holdfast_store::CartStore;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;

use crate::error::CartError;
use crate::live::{LiveCart, redis_key};
use crate::scripts;

/// Store writes in flight at once during a flush.
const FLUSH_CONCURRENCY: usize = 16;

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "holdfast_cart_write_behind_pending",
        "Carts changed in Redis whose durable copy has not been written yet."
    )
    .expect("registers once")
});

#[allow(clippy::expect_used)]
static FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "holdfast_cart_write_behind_failures_total",
        "Durable cart writes that failed and were retried in the next window."
    )
    .expect("registers once")
});

/// Owners whose carts changed since their last durable write, each with the newest cart a
/// change answered.
#[derive(Debug, Default)]
pub struct WriteBehind {
    pending: Mutex<HashMap<String, LiveCart>>,
    wake: Notify,
}

impl WriteBehind {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `owner_key`'s cart as changed to `cart` (what the change answered). Never
    /// blocks: a cart changed twice before the worker gets to it is written once, at the
    /// newer of the two versions (the later call on a tie). A cart at version 0 is the empty
    /// cart of an owner who never had one (a no-op change of a cart nobody created): there is
    /// nothing to save, and the store must never hold a version 0 that no script can restore.
    pub fn enqueue(&self, owner_key: String, cart: LiveCart) {
        if cart.version == 0 {
            return;
        }
        self.mark(owner_key, cart, |marked, cart| cart.version >= marked.version);
    }

    /// Marks again a cart whose write failed, unless a change since marked a newer one.
    fn retry(&self, owner_key: String, cart: LiveCart) {
        self.mark(owner_key, cart, |marked, cart| cart.version > marked.version);
    }

    fn mark(&self, owner_key: String, cart: LiveCart, replaces: impl Fn(&LiveCart, &LiveCart) -> bool) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get_mut(&owner_key) {
            Some(marked) if replaces(marked, &cart) => *marked = cart,
            Some(_) => {}
            None => {
                pending.insert(owner_key, cart);
            }
        }
        PENDING.set(pending.len() as i64);
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<(String, LiveCart)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        PENDING.set(0);
        pending.drain().collect()
    }
}

/// The worker: runs until its task is aborted.
pub async fn run<S: CartStore>(queue: Arc<WriteBehind>, redis: Pool, store: S, flush_every: Duration) {
    let mut failing = false;
    loop {
        queue.wake.notified().await;
        // The window bounds how stale the durable copy may get; it is a deadline, not a
        // synchronisation: everything marked by its end is written below.
        tokio::time::sleep(flush_every).await;
        let failures = flush(&queue, &redis, &store).await;
        match failures.first() {
            None if failing => {
                failing = false;
                tracing::info!("cart write-behind recovered");
            }
            None => {}
            Some((owner, error)) => {
                // Logged when the failures start, not every window while they last.
                if !failing {
                    tracing::warn!(%owner, %error, carts = failures.len(), "cart write-behind failed; retrying");
                }
                failing = true;
                FAILED.inc_by(failures.len() as u64);
            }
        }
    }
}

/// Saves every marked cart now; returns the ones that failed (marked again, so the next
/// window retries them).
pub async fn flush<S: CartStore>(queue: &WriteBehind, redis: &Pool, store: &S) -> Vec<(String, CartError)> {
    let carts = queue.take();
    futures::stream::iter(carts)
        .map(|(owner, cart)| async move {
            match save(redis, store, &owner, &cart).await {
                Ok(()) => None,
                Err(error) => {
                    queue.retry(owner.clone(), cart);
                    Some((owner, error))
                }
            }
        })
        .buffer_unordered(FLUSH_CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// Saves `cart` as acknowledged, then drops a live copy older than it (Redis lost writes).
async fn save<S: CartStore>(
    redis: &Pool,
    store: &S,
    owner_key: &str,
    cart: &LiveCart,
) -> Result<(), CartError> {
    store.save_cart(cart.to_stored(owner_key)).await?;
    if scripts::evict_stale(redis.next(), &redis_key(owner_key), cart.version).await? {
        tracing::warn!(
            owner = owner_key,
            version = cart.version,
            "Redis held an older copy of this cart than it had acknowledged; dropped it, the next read \
             re-warms the saved one"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: u64) -> LiveCart {
        LiveCart {
            version,
            ..LiveCart::default()
        }
    }

    fn sorted(mut taken: Vec<(String, LiveCart)>) -> Vec<(String, LiveCart)> {
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    #[test]
    fn the_newest_acknowledged_cart_is_written_and_a_retry_never_replaces_a_newer_one() {
        let queue = WriteBehind::new();
        queue.enqueue("c:ann".into(), at(3));
        queue.enqueue("c:ann".into(), at(2)); // a slower call answered an older version
        queue.enqueue("s:guest".into(), at(1));
        queue.enqueue("c:nobody".into(), at(0)); // a no-op on a cart that never existed
        assert_eq!(
            sorted(queue.take()),
            [("c:ann".into(), at(3)), ("s:guest".into(), at(1))]
        );
        assert!(queue.take().is_empty());

        queue.enqueue("c:ann".into(), at(5));
        queue.retry("c:ann".into(), at(3));
        queue.retry("s:guest".into(), at(1));
        assert_eq!(
            sorted(queue.take()),
            [("c:ann".into(), at(5)), ("s:guest".into(), at(1))]
        );
    }
}
