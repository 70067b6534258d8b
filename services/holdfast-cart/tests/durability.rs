//! The durable copy: written behind within the documented bound, and what a Redis loss
//! leaves (everything older than that bound).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use holdfast_proto::cart::v1::Cart;
use holdfast_store::{CartStore, StoredCart, StoredCartLine};

/// `(sku, quantity, snapshot price, added_at)` of every line: what must survive.
fn content(cart: &Cart) -> Vec<(String, i64, i64, i64)> {
    cart.lines
        .iter()
        .map(|l| {
            (
                l.sku.clone(),
                l.quantity,
                l.snapshot_unit_price.as_ref().map_or(0, |m| m.amount_minor),
                l.added_at_unix_ms,
            )
        })
        .collect()
}

fn exists(fx: &Fixture, key: &str) -> bool {
    fx.redis.cli(&["EXISTS", key]).expect("cli").trim() == "1"
}

#[tokio::test]
async fn a_redis_loss_after_the_write_behind_bound_loses_no_cart() {
    let fx = Fixture::start().await;
    for (sku, price) in [("MUG", 1299), ("TEA", 450), ("HAT", 2000)] {
        fx.sellable(sku, price).await;
    }
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    added(&mut c, customer("ann"), "TEA", 1).await;
    added(&mut c, customer("ann"), "HAT", 1).await;
    remove(&mut c, customer("ann"), "TEA", 0).await.expect("remove");
    let ann = update(&mut c, customer("ann"), "MUG", 3, 0)
        .await
        .expect("update")
        .cart
        .expect("cart");
    let guest = added(&mut c, session("guest"), "TEA", 4).await;

    // The bound under test: every change above is in the store within 1 s of its answer.
    let durable = fx.durable("c:ann", ann.version).await;
    assert_eq!(durable.version, ann.version);
    assert_eq!(durable.lines.len(), 2);
    fx.durable("s:guest", guest.version).await;

    fx.redis.cli(&["FLUSHALL"]).expect("flushall");
    assert!(!exists(&fx, "cart:{c:ann}"));

    let restored = get(&mut c, customer("ann")).await;
    assert_eq!(
        content(&restored),
        content(&ann),
        "same lines, snapshots and order"
    );
    assert_eq!(
        (
            restored.version,
            restored.updated_at_unix_ms,
            restored.expires_at_unix_ms
        ),
        (ann.version, ann.updated_at_unix_ms, ann.expires_at_unix_ms)
    );
    assert!(exists(&fx, "cart:{c:ann}"), "the read re-warmed Redis");
    assert_eq!(content(&get(&mut c, session("guest")).await), content(&guest));
}

#[tokio::test]
async fn a_change_to_a_cart_lost_from_redis_keeps_its_durable_lines() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    let before = added(&mut c, customer("ann"), "MUG", 2).await;
    fx.durable("c:ann", before.version).await;

    fx.redis.cli(&["FLUSHALL"]).expect("flushall");
    fx.sellable("TEA", 450).await; // the flush took the catalog cache and stock with it
    let after = added(&mut c, customer("ann"), "TEA", 1).await;
    assert_eq!(
        sorted_lines(&after),
        pairs(&[("MUG", 2), ("TEA", 1)]),
        "not a fresh cart"
    );
    assert_eq!(after.version, before.version + 1);
    let durable = fx.durable("c:ann", after.version).await;
    assert_eq!(durable.lines.len(), 2, "and the store took the new version");
}

#[tokio::test]
async fn a_cleared_cart_stays_cleared_after_a_redis_loss() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    let cleared = clear(&mut c, customer("ann"), 0).await.expect("clear");
    let durable = fx.durable("c:ann", cleared.version).await;
    assert!(durable.lines.is_empty());

    fx.redis.cli(&["FLUSHALL"]).expect("flushall");
    let cart = get(&mut c, customer("ann")).await;
    assert!(cart.lines.is_empty(), "no cleared line comes back");
    assert_eq!(cart.version, cleared.version);
}

#[tokio::test]
async fn a_durable_cart_older_than_its_ttl_reads_empty_and_keeps_counting_versions() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let month_ago = now_ms - Duration::from_secs(31 * 24 * 3600).as_millis() as i64;
    fx.store
        .save_cart(StoredCart {
            owner: "c:ann".into(),
            lines: vec![StoredCartLine {
                sku: "MUG".into(),
                quantity: 2,
                unit_price_minor: 999,
                currency: "EUR".into(),
                added_at_ms: month_ago,
            }],
            version: 9,
            updated_at_ms: month_ago,
        })
        .await
        .expect("save");
    let mut c = fx.device().await;

    let cart = get(&mut c, customer("ann")).await;
    assert!(cart.lines.is_empty(), "a cart untouched for 30 days is dropped");
    assert_eq!(cart.version, 9);
    let next = added(&mut c, customer("ann"), "MUG", 1).await;
    assert_eq!((lines(&next), next.version), (pairs(&[("MUG", 1)]), 10));
    let durable = fx.durable("c:ann", 10).await;
    assert_eq!(durable.lines[0].quantity, 1, "the store takes the next version");
}

#[tokio::test]
async fn flush_on_shutdown_makes_the_last_changes_durable_at_once() {
    // A window so long the worker never writes during the test: only flush() can.
    let fx = Fixture::with(holdfast_cart::CartOptions {
        flush_every: Duration::from_secs(3600),
        ..holdfast_cart::CartOptions::default()
    })
    .await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    let cart = added(&mut c, customer("late"), "MUG", 2).await;
    assert!(
        fx.store.load_cart("c:late").await.expect("load").is_none(),
        "not written yet"
    );

    assert_eq!(fx.cart.flush().await, 0, "every pending cart saved");
    let durable = fx
        .store
        .load_cart("c:late")
        .await
        .expect("load")
        .expect("saved by flush");
    assert_eq!((durable.version, durable.lines.len()), (cart.version, 1));
}

/// A cart whose write-behind window never ends during the test: only `flush()` saves.
async fn flushed_by_hand() -> Fixture {
    Fixture::with(holdfast_cart::CartOptions {
        flush_every: Duration::from_secs(3600),
        ..holdfast_cart::CartOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_clear_acknowledged_just_before_a_redis_loss_stays_cleared() {
    // The checkout storm's `carts-cleared` finding: the clear after a checkout, then Redis
    // lost before the write-behind saved it.
    let fx = flushed_by_hand().await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    assert_eq!(fx.cart.flush().await, 0);
    let cleared = clear(&mut c, customer("ann"), 0).await.expect("clear");

    fx.redis.cli(&["FLUSHALL"]).expect("flushall");
    // A read inside the window re-warms the older durable copy into Redis...
    get(&mut c, customer("ann")).await;
    // ...and the write-behind saves what was acknowledged, not what Redis holds now.
    assert_eq!(fx.cart.flush().await, 0);
    let durable = fx.store.load_cart("c:ann").await.expect("load").expect("saved");
    assert_eq!((durable.version, durable.lines.len()), (cleared.version, 0));
    let cart = get(&mut c, customer("ann")).await;
    assert!(
        cart.lines.is_empty(),
        "the bought lines do not come back: {cart:?}"
    );
    assert_eq!(cart.version, cleared.version);
}

#[tokio::test]
async fn a_clear_is_durable_before_it_is_answered() {
    // The chaos run's finding: the clear after a checkout acknowledged, this process killed
    // inside the write-behind window (its marks lost; Redis on its AOF kept the clear), then
    // Redis lost later: the older durable copy came back with the bought lines.
    let fx = flushed_by_hand().await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    assert_eq!(fx.cart.flush().await, 0);
    let cleared = clear(&mut c, customer("ann"), 0).await.expect("clear");

    // No write-behind pass: the store has the clear already.
    let durable = fx.store.load_cart("c:ann").await.expect("load").expect("saved");
    assert_eq!((durable.version, durable.lines.len()), (cleared.version, 0));
    fx.redis.cli(&["FLUSHALL"]).expect("flushall");
    let cart = get(&mut c, customer("ann")).await;
    assert!(
        cart.lines.is_empty(),
        "the bought lines do not come back: {cart:?}"
    );
    assert_eq!(cart.version, cleared.version);
}

#[tokio::test]
async fn a_redis_that_comes_back_with_an_older_cart_is_corrected_by_the_write_behind() {
    let fx = flushed_by_hand().await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    fx.redis
        .cli(&["COPY", "cart:{c:ann}", "before-clear"])
        .expect("copy");
    let cleared = clear(&mut c, customer("ann"), 0).await.expect("clear");
    // Redis restarted from a copy that missed the clear (AOF tail lost, or a failover).
    fx.redis
        .cli(&["COPY", "before-clear", "cart:{c:ann}", "REPLACE"])
        .expect("copy back");

    assert_eq!(fx.cart.flush().await, 0);
    let durable = fx.store.load_cart("c:ann").await.expect("load").expect("saved");
    assert_eq!((durable.version, durable.lines.len()), (cleared.version, 0));
    let cart = get(&mut c, customer("ann")).await;
    assert!(cart.lines.is_empty(), "the stale copy was dropped: {cart:?}");
    assert_eq!(cart.version, cleared.version);
    let next = added(&mut c, customer("ann"), "MUG", 1).await;
    assert_eq!(
        (lines(&next), next.version),
        (pairs(&[("MUG", 1)]), cleared.version + 1)
    );
}

#[tokio::test]
async fn a_merge_acknowledged_just_before_a_redis_loss_saves_both_carts() {
    let fx = flushed_by_hand().await;
    fx.sellable("MUG", 1299).await;
    fx.sellable("TEA", 450).await;
    let mut c = fx.device().await;
    let guest = added(&mut c, session("s1"), "MUG", 2).await;
    added(&mut c, customer("ann"), "TEA", 1).await;
    let merged = merge(&mut c, "s1", "ann")
        .await
        .expect("merge")
        .cart
        .expect("cart");

    fx.redis.cli(&["FLUSHALL"]).expect("flushall");
    assert_eq!(fx.cart.flush().await, 0);
    let ann = fx.store.load_cart("c:ann").await.expect("load").expect("saved");
    assert_eq!((ann.version, ann.lines.len()), (merged.version, 2));
    let s1 = fx.store.load_cart("s:s1").await.expect("load").expect("saved");
    assert_eq!((s1.version, s1.lines.len()), (guest.version + 1, 0), "emptied");
    assert_eq!(
        sorted_lines(&get(&mut c, customer("ann")).await),
        pairs(&[("MUG", 2), ("TEA", 1)])
    );
    assert!(get(&mut c, session("s1")).await.lines.is_empty());
}

#[tokio::test]
async fn a_no_op_on_a_cart_that_never_existed_saves_nothing() {
    let fx = flushed_by_hand().await;
    let mut c = fx.device().await;
    let cart = clear(&mut c, customer("nobody"), 0).await.expect("clear");
    assert_eq!(cart.version, 0);
    remove(&mut c, session("nobody"), "MUG", 0).await.expect("remove");

    assert_eq!(fx.cart.flush().await, 0);
    assert!(fx.store.load_cart("c:nobody").await.expect("load").is_none());
    assert!(fx.store.load_cart("s:nobody").await.expect("load").is_none());
    let cart = get(&mut c, customer("nobody")).await;
    assert_eq!((cart.version, cart.lines.len()), (0, 0));
}
