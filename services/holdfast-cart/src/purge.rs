//! The durable-cart purge: carts untouched for the cart TTL are deleted from the store.
//!
//! Redis forgets a cart `ttl` after its last change, and a durable copy older than that is
//! restored empty, so such copies only take space; anonymous sessions leave one per visitor.

use std::sync::LazyLock;
use std::time::Duration;

use holdfast_store::CartPurge;
use prometheus::IntCounter;

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static PURGED: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "holdfast_cart_purged_total",
        "Durable carts deleted because nobody changed them for the cart TTL."
    )
    .expect("registers once")
});

/// Runs until its task is aborted: purges once at start, then every `every`.
pub async fn run<S: CartPurge>(store: S, ttl: Duration, every: Duration) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    loop {
        let cutoff = now_ms().saturating_sub(ttl_ms);
        match store.purge_carts(cutoff).await {
            Ok(0) => {}
            Ok(purged) => {
                PURGED.inc_by(purged);
                tracing::info!(purged, "purged carts untouched for the cart ttl");
            }
            Err(error) => tracing::warn!(%error, "cart purge failed; retrying next round"),
        }
        tokio::time::sleep(every).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
