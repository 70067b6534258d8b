//! MergeCarts: an anonymous session's cart folded into the customer's on sign-in.

mod common;

use common::*;
use holdfast_cart::scripts::{self, Absent, Limits};
use holdfast_cart::{CartOptions, Owner};
use holdfast_platform::redis;

#[tokio::test]
async fn merge_sums_quantities_dedupes_skus_and_empties_the_session_cart() {
    let fx = Fixture::start().await;
    for sku in ["MUG", "TEA", "HAT"] {
        fx.sellable(sku, 1000).await;
    }
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    let signed_in = added(&mut c, customer("ann"), "TEA", 1).await;
    added(&mut c, session("s1"), "MUG", 3).await;
    added(&mut c, session("s1"), "HAT", 1).await;

    let reply = merge(&mut c, "s1", "ann").await.expect("merge");
    let cart = reply.cart.expect("cart");
    assert_eq!(sorted_lines(&cart), pairs(&[("HAT", 1), ("MUG", 5), ("TEA", 1)]));
    assert_eq!(cart.owner, customer("ann"));
    assert_eq!(cart.version, signed_in.version + 1, "one merge, one version");
    assert!(reply.capped_skus.is_empty() && reply.dropped_skus.is_empty());
    assert_eq!(get(&mut c, customer("ann")).await, cart);

    let anonymous = get(&mut c, session("s1")).await;
    assert!(anonymous.lines.is_empty(), "the session cart is gone");
    let durable = fx.durable("s:s1", anonymous.version).await;
    assert!(durable.lines.is_empty(), "and so is its durable copy");
}

#[tokio::test]
async fn merge_respects_caps_and_reports_capped_and_dropped() {
    let fx = Fixture::with(CartOptions {
        max_lines: 4,
        ..CartOptions::default()
    })
    .await;
    for sku in ["MUG", "TEA", "CUP", "HAT", "CAP", "GONE"] {
        fx.sellable(sku, 1000).await;
    }
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 90).await;
    added(&mut c, customer("ann"), "TEA", 1).await;
    added(&mut c, customer("ann"), "CUP", 1).await;
    for (sku, quantity) in [("MUG", 20), ("HAT", 1), ("CAP", 1), ("GONE", 1)] {
        added(&mut c, session("s1"), sku, quantity).await;
    }
    fx.upsert("GONE", 1000, "EUR", false).await;

    let reply = merge(&mut c, "s1", "ann").await.expect("merge");
    let cart = reply.cart.expect("cart");
    assert_eq!(cart.lines.len(), 4, "never more than the line cap");
    assert_eq!(lines(&cart)[0], ("MUG".to_string(), 99), "summed, capped at 99");
    assert_eq!(
        (cart.lines[1].sku.as_str(), cart.lines[2].sku.as_str()),
        ("TEA", "CUP")
    );
    let fitted = &cart.lines[3].sku;
    assert!(
        fitted == "HAT" || fitted == "CAP",
        "one new line fitted: {fitted}"
    );
    assert_eq!(reply.capped_skus, ["MUG"]);
    let mut dropped = reply.dropped_skus.clone();
    dropped.sort();
    let mut expected = vec![if fitted == "HAT" { "CAP" } else { "HAT" }, "GONE"];
    expected.sort();
    assert_eq!(dropped, expected, "over the line cap, and no longer sold");
    assert!(get(&mut c, session("s1")).await.lines.is_empty());
}

#[tokio::test]
async fn a_retried_merge_changes_nothing() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1000).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 1).await;
    added(&mut c, session("s1"), "MUG", 2).await;

    let first = merge(&mut c, "s1", "ann")
        .await
        .expect("merge")
        .cart
        .expect("cart");
    let retry = merge(&mut c, "s1", "ann").await.expect("retry");
    assert_eq!(retry.cart.as_ref(), Some(&first), "same lines, same version");
    assert!(retry.capped_skus.is_empty() && retry.dropped_skus.is_empty());
    assert_eq!(lines(&first), pairs(&[("MUG", 3)]));
}

#[tokio::test]
async fn a_merge_retried_after_a_crash_before_the_session_cart_was_emptied_adds_nothing_twice() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1000).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 1).await;
    added(&mut c, session("s1"), "MUG", 2).await;

    // What the first MergeCarts did before its process died: the merge script ran, the
    // session cart was not emptied yet.
    let pool = redis::connect(&fx.redis.url(), 1).await.expect("pool");
    let anonymous: std::collections::HashMap<String, String> =
        fred::prelude::HashesInterface::hgetall(pool.next(), Owner::Session("s1".into()).redis_key())
            .await
            .expect("hgetall");
    let anonymous = holdfast_cart::LiveCart::from_hash(anonymous)
        .expect("decodes")
        .expect("exists");
    let limits = Limits {
        max_lines: 100,
        max_quantity: 99,
        ttl_ms: 60_000,
    };
    scripts::merge(
        pool.next(),
        &Owner::Customer("ann".into()).redis_key(),
        Absent::NoCart,
        "s1",
        &anonymous,
        limits,
    )
    .await
    .expect("merge script")
    .expect("warm");

    let retry = merge(&mut c, "s1", "ann").await.expect("retry");
    assert_eq!(
        lines(retry.cart.as_ref().expect("cart")),
        pairs(&[("MUG", 3)]),
        "not 5"
    );
    assert!(get(&mut c, session("s1")).await.lines.is_empty());
}

#[tokio::test]
async fn a_session_that_shops_again_after_signing_in_merges_again() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1000).await;
    let mut c = fx.device().await;
    added(&mut c, session("s1"), "MUG", 2).await;
    merge(&mut c, "s1", "ann").await.expect("first sign-in");
    added(&mut c, session("s1"), "MUG", 1).await;

    let reply = merge(&mut c, "s1", "ann").await.expect("second sign-in");
    assert_eq!(lines(reply.cart.as_ref().expect("cart")), pairs(&[("MUG", 3)]));
}

#[tokio::test]
async fn merging_a_session_without_a_cart_leaves_the_customer_cart_alone() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1000).await;
    let mut c = fx.device().await;
    let before = added(&mut c, customer("ann"), "MUG", 1).await;

    let reply = merge(&mut c, "never-shopped", "ann").await.expect("merge");
    assert_eq!(reply.cart.as_ref(), Some(&before));
    let fresh = merge(&mut c, "never-shopped", "new-customer")
        .await
        .expect("merge");
    assert_eq!(
        fresh.cart.expect("cart").version,
        0,
        "no cart is made from nothing"
    );
}
