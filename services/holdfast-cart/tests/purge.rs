//! The durable-cart purge: a cart nobody changed for the cart TTL leaves the store (an
//! anonymous session must not occupy a row for ever); a recent one stays.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use holdfast_cart::CartOptions;
use holdfast_store::{CartStore, StoredCart};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tokio::test]
async fn carts_untouched_for_the_ttl_are_purged_from_the_store_by_the_background_task() {
    let fx = Fixture::with(CartOptions {
        purge_every: Duration::from_millis(20),
        ..CartOptions::default()
    })
    .await;
    let ttl_ms = i64::try_from(CartOptions::default().ttl.as_millis()).expect("ttl");
    let old = StoredCart {
        owner: "s:abandoned-session".into(),
        version: 4,
        updated_at_ms: now_ms() - ttl_ms - 60_000,
        ..StoredCart::default()
    };
    let recent = StoredCart {
        owner: "s:recent-session".into(),
        version: 2,
        // A day short of the TTL: still a live cart.
        updated_at_ms: now_ms() - ttl_ms + 86_400_000,
        ..StoredCart::default()
    };
    fx.store.save_cart(old.clone()).await.expect("save old");
    fx.store.save_cart(recent.clone()).await.expect("save recent");

    // The purge runs on its own period: poll for its effect with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.store.load_cart(&old.owner).await.expect("load").is_some() {
        assert!(Instant::now() < deadline, "the abandoned cart was never purged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fx.store.load_cart(&recent.owner).await.expect("load"),
        Some(recent),
        "a cart inside the TTL must stay"
    );
}
