//! The durable copy, written behind the live cart.
//!
//! Every successful change marks its owner here. The worker waits until something is
//! marked, lets marks collect for `flush_every` (many changes to one cart in that window cost
//! one store write), then for each marked owner reads the live cart and saves it whole. The
//! store keeps the highest version it was given, so late or repeated saves are harmless. A
//! change therefore reaches the store within `flush_every` plus one round of store writes:
//! that is how long a change can be lost if Redis is lost. A crash of this process loses no
//! change while Redis survives: the next change of that cart saves all of it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use fred::prelude::{HashesInterface, Pool};
use futures::StreamExt;
use holdfast_store::CartStore;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;

use crate::error::CartError;
use crate::live::{LiveCart, redis_key};

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

/// Owners whose carts changed since their last durable write.
#[derive(Debug, Default)]
pub struct WriteBehind {
    pending: Mutex<HashSet<String>>,
    wake: Notify,
}

impl WriteBehind {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `owner_key`'s cart as changed. Never blocks: a cart changed twice before the
    /// worker gets to it is written once.
    pub fn enqueue(&self, owner_key: String) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.insert(owner_key);
        PENDING.set(pending.len() as i64);
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<String> {
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
                for (owner, _) in failures {
                    queue.enqueue(owner);
                }
            }
        }
    }
}

/// Copies one live cart to the store.
/// Saves every marked cart now; returns the ones that failed (the worker re-marks them).
pub async fn flush<S: CartStore>(queue: &WriteBehind, redis: &Pool, store: &S) -> Vec<(String, CartError)> {
    let owners = queue.take();
    futures::stream::iter(owners)
        .map(|owner| async move {
            let result = save(redis, store, &owner).await;
            result.err().map(|error| (owner, error))
        })
        .buffer_unordered(FLUSH_CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await
}

async fn save<S: CartStore>(redis: &Pool, store: &S, owner_key: &str) -> Result<(), CartError> {
    let fields: HashMap<String, String> = redis.next().hgetall(redis_key(owner_key)).await?;
    let cart = LiveCart::from_hash(fields).map_err(|detail| CartError::Protocol {
        what: "cart hash",
        detail,
    })?;
    // Gone from Redis (lost, or expired): there is nothing newer than the durable copy, and
    // a Redis loss must never erase that.
    let Some(cart) = cart else {
        return Ok(());
    };
    store.save_cart(cart.to_stored(owner_key)).await?;
    Ok(())
}
