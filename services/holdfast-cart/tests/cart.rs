//! Every CartService RPC against a real redis-server, a real SQLite store and the real
//! catalog and inventory over gRPC.

mod common;

use common::*;
use futures::future::join_all;
use holdfast_cart::CartOptions;
use holdfast_proto::cart::v1::*;
use holdfast_proto::catalog::v1::UpsertProductRequest;
use tonic::Code;

#[tokio::test]
async fn get_cart_of_a_new_owner_is_empty_at_version_zero() {
    let fx = Fixture::start().await;
    let mut c = fx.device().await;
    let cart = get(&mut c, customer("nobody")).await;
    assert_eq!(
        (
            cart.lines.len(),
            cart.version,
            cart.updated_at_unix_ms,
            cart.expires_at_unix_ms
        ),
        (0, 0, 0, 0)
    );
    assert!(cart.totals.is_empty());
    assert_eq!(cart.owner, customer("nobody"));
    assert_eq!(
        fx.redis.cli(&["EXISTS", "cart:{c:nobody}"]).expect("cli").trim(),
        "0"
    );
}

#[tokio::test]
async fn add_item_snapshots_the_catalog_price_and_sums_repeat_adds() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    fx.sellable("TEA", 450).await;
    let mut c = fx.device().await;

    let first = added(&mut c, customer("ann"), "MUG", 2).await;
    assert_eq!(first.version, 1);
    let line = &first.lines[0];
    assert_eq!(
        (line.sku.as_str(), line.quantity, line.title.as_str()),
        ("MUG", 2, "MUG title")
    );
    assert_eq!(
        line.snapshot_unit_price.as_ref().map(|m| m.amount_minor),
        Some(1299)
    );
    assert_eq!(line.current_unit_price, line.snapshot_unit_price);
    assert!(!line.price_changed && !line.out_of_stock);
    assert!(line.added_at_unix_ms > 0);
    assert_eq!(
        first.expires_at_unix_ms - first.updated_at_unix_ms,
        30 * 24 * 3600 * 1000,
        "a cart lives 30 days after its last change"
    );

    added(&mut c, customer("ann"), "TEA", 1).await;
    let cart = added(&mut c, customer("ann"), "MUG", 1).await;
    assert_eq!(
        lines(&cart),
        pairs(&[("MUG", 3), ("TEA", 1)]),
        "one line per sku, first-added order"
    );
    assert_eq!(cart.version, 3);
    assert_eq!(
        cart.lines[0].added_at_unix_ms, line.added_at_unix_ms,
        "added_at is the first add"
    );
    assert_eq!(
        cart.lines[0].line_total.as_ref().map(|m| m.amount_minor),
        Some(3 * 1299)
    );
    assert_eq!(cart.totals.len(), 1);
    assert_eq!(
        (cart.totals[0].currency.as_str(), cart.totals[0].amount_minor),
        ("EUR", 3 * 1299 + 450)
    );
    assert_eq!(
        get(&mut c, customer("ann")).await,
        cart,
        "GetCart answers what AddItem did"
    );
    assert!(
        get(&mut c, session("ann")).await.lines.is_empty(),
        "a session is not the customer"
    );
}

#[tokio::test]
async fn update_item_sets_raises_within_stock_lowers_always_and_zero_removes() {
    let fx = Fixture::start().await;
    fx.product("MUG", 1299, "EUR").await;
    fx.stock("MUG", 5).await;
    let mut c = fx.device().await;
    added(&mut c, session("s1"), "MUG", 2).await;

    let raised = update(&mut c, session("s1"), "MUG", 5, 0).await.expect("raise");
    assert_eq!(raised.outcome(), ItemOutcome::Applied);
    assert_eq!(lines(raised.cart.as_ref().expect("cart")), pairs(&[("MUG", 5)]));

    let refused = update(&mut c, session("s1"), "MUG", 6, 0).await.expect("answer");
    assert_eq!(refused.outcome(), ItemOutcome::OutOfStock);
    assert_eq!(refused.available_quantity, 5);
    let cart = refused.cart.expect("cart");
    assert_eq!(
        (lines(&cart), cart.version),
        (pairs(&[("MUG", 5)]), 2),
        "unchanged"
    );

    fx.stock("MUG", 0).await;
    let lowered = update(&mut c, session("s1"), "MUG", 1, 0).await.expect("lower");
    assert_eq!(
        lowered.outcome(),
        ItemOutcome::Applied,
        "lowering never fails on stock"
    );
    assert_eq!(lines(lowered.cart.as_ref().expect("cart")), pairs(&[("MUG", 1)]));

    let missing = update(&mut c, session("s1"), "TEA", 1, 0)
        .await
        .expect_err("not in cart");
    assert_eq!(missing.code(), Code::NotFound);
    let noop = update(&mut c, session("s1"), "TEA", 0, 0)
        .await
        .expect("0 on a missing line");
    assert_eq!(noop.cart.expect("cart").version, 3, "a no-op changes nothing");

    let removed = update(&mut c, session("s1"), "MUG", 0, 0).await.expect("remove");
    let cart = removed.cart.expect("cart");
    assert!(cart.lines.is_empty());
    assert_eq!((cart.version, cart.expires_at_unix_ms), (4, 0));
}

#[tokio::test]
async fn remove_item_removes_and_is_idempotent() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    fx.sellable("TEA", 450).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 1).await;
    added(&mut c, customer("ann"), "TEA", 1).await;

    let cart = remove(&mut c, customer("ann"), "MUG", 0).await.expect("remove");
    assert_eq!((lines(&cart), cart.version), (pairs(&[("TEA", 1)]), 3));
    let again = remove(&mut c, customer("ann"), "MUG", 0)
        .await
        .expect("remove again");
    assert_eq!(
        (lines(&again), again.version),
        (pairs(&[("TEA", 1)]), 3),
        "a repeat changes nothing"
    );
    let never = remove(&mut c, customer("bob"), "MUG", 0)
        .await
        .expect("no cart at all");
    assert_eq!(never.version, 0);
}

#[tokio::test]
async fn clear_cart_empties_once_and_keeps_counting_versions() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 1).await;

    let cleared = clear(&mut c, customer("ann"), 0).await.expect("clear");
    assert!(cleared.lines.is_empty() && cleared.totals.is_empty());
    assert_eq!(cleared.version, 2);
    let again = clear(&mut c, customer("ann"), 0).await.expect("clear again");
    assert_eq!(again.version, 2, "clearing an empty cart changes nothing");
    let next = added(&mut c, customer("ann"), "MUG", 1).await;
    assert_eq!(next.version, 3, "versions never restart");
}

#[tokio::test]
async fn add_item_refuses_unknown_and_inactive_skus() {
    let fx = Fixture::start().await;
    fx.upsert("RETIRED", 500, "EUR", false).await;
    fx.stock("RETIRED", 10).await;
    let mut c = fx.device().await;

    let unknown = add(&mut c, customer("ann"), "NOPE", 1)
        .await
        .expect_err("unknown");
    assert_eq!(precondition_kind(&unknown), "SKU_UNKNOWN");
    assert!(
        unknown.message().contains("unknown or inactive sku"),
        "{}",
        unknown.message()
    );
    let inactive = add(&mut c, customer("ann"), "RETIRED", 1)
        .await
        .expect_err("inactive");
    assert_eq!(precondition_kind(&inactive), "SKU_INACTIVE");
    assert_eq!(
        get(&mut c, customer("ann")).await.version,
        0,
        "nothing was written"
    );
}

#[tokio::test]
async fn add_item_out_of_stock_is_an_answer_and_changes_nothing() {
    let fx = Fixture::start().await;
    fx.product("MUG", 1299, "EUR").await;
    fx.stock("MUG", 3).await;
    fx.product("GHOST", 100, "EUR").await; // never stocked
    let mut c = fx.device().await;
    let before = added(&mut c, customer("ann"), "MUG", 2).await;

    let refused = add(&mut c, customer("ann"), "MUG", 2)
        .await
        .expect("an answer, not an error");
    assert_eq!(refused.outcome(), ItemOutcome::OutOfStock);
    assert_eq!(
        refused.available_quantity, 3,
        "2 in the cart + 2 more > 3 available"
    );
    assert_eq!(refused.cart.as_ref().expect("cart"), &before);

    let ghost = add(&mut c, customer("ann"), "GHOST", 1).await.expect("answer");
    assert_eq!(
        (ghost.outcome(), ghost.available_quantity),
        (ItemOutcome::OutOfStock, 0)
    );
    assert_eq!(
        get(&mut c, customer("ann")).await,
        before,
        "the cart is unchanged"
    );

    let fits = add(&mut c, customer("ann"), "MUG", 1).await.expect("fits");
    assert_eq!(fits.outcome(), ItemOutcome::Applied);
    assert_eq!(fits.available_quantity, 0);
}

#[tokio::test]
async fn the_line_cap_is_a_clear_failed_precondition() {
    let fx = Fixture::with(CartOptions {
        max_lines: 2,
        ..CartOptions::default()
    })
    .await;
    for sku in ["A", "B", "C"] {
        fx.sellable(sku, 100).await;
    }
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "A", 1).await;
    let full = added(&mut c, customer("ann"), "B", 1).await;

    let status = add(&mut c, customer("ann"), "C", 1)
        .await
        .expect_err("third line");
    assert_eq!(precondition_kind(&status), "CART_LINE_LIMIT");
    assert!(status.message().contains("2 lines"), "{}", status.message());
    assert_eq!(get(&mut c, customer("ann")).await, full);
    added(&mut c, customer("ann"), "A", 1).await; // more units of a line already there fit
}

#[tokio::test]
async fn the_quantity_cap_is_a_clear_failed_precondition() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 100).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 60).await;

    let status = add(&mut c, customer("ann"), "MUG", 40)
        .await
        .expect_err("100 > 99");
    assert_eq!(precondition_kind(&status), "CART_QUANTITY_LIMIT");
    assert!(status.message().contains("at most 99"), "{}", status.message());
    assert_eq!(lines(&get(&mut c, customer("ann")).await), pairs(&[("MUG", 60)]));
    let at_cap = added(&mut c, customer("ann"), "MUG", 39).await;
    assert_eq!(lines(&at_cap), pairs(&[("MUG", 99)]));
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted_and_changes_nothing() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 100).await;
    let mut c = fx.device().await;
    let v1 = added(&mut c, customer("ann"), "MUG", 1).await;
    let v2 = add_at(&mut c, customer("ann"), "MUG", 1, v1.version)
        .await
        .expect("current version applies")
        .cart
        .expect("cart");
    assert_eq!(v2.version, 2);

    let stale = v1.version;
    let add = add_at(&mut c, customer("ann"), "MUG", 1, stale)
        .await
        .expect_err("add");
    let upd = update(&mut c, customer("ann"), "MUG", 5, stale)
        .await
        .expect_err("update");
    let rem = remove(&mut c, customer("ann"), "MUG", stale)
        .await
        .expect_err("remove");
    let clr = clear(&mut c, customer("ann"), stale).await.expect_err("clear");
    for status in [add, upd, rem, clr] {
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
    }
    assert_eq!(get(&mut c, customer("ann")).await, v2, "nothing changed");
    let fresh = clear(&mut c, session("new"), 3)
        .await
        .expect_err("no cart is version 0");
    assert_eq!(fresh.code(), Code::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_adds_from_two_devices_lose_nothing() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    fx.sellable("TEA", 450).await;
    let (phone, laptop) = (fx.device().await, fx.device().await);
    let before = added(&mut phone.clone(), customer("ann"), "TEA", 1).await;

    let adds = (0..50).map(|i| {
        let mut device = if i % 2 == 0 { phone.clone() } else { laptop.clone() };
        async move { add(&mut device, customer("ann"), "MUG", 1).await }
    });
    for reply in join_all(adds).await {
        assert_eq!(reply.expect("add").outcome(), ItemOutcome::Applied);
    }
    let cart = get(&mut laptop.clone(), customer("ann")).await;
    assert_eq!(sorted_lines(&cart), pairs(&[("MUG", 50), ("TEA", 1)]));
    assert_eq!(cart.version, before.version + 50, "every add is one version");
}

#[tokio::test]
async fn get_cart_reprices_and_rechecks_stock_on_every_read() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    fx.product("HAT", 2000, "USD").await;
    fx.stock("HAT", 1).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    added(&mut c, customer("ann"), "HAT", 1).await;
    let before = get(&mut c, customer("ann")).await; // also fills the catalog cache
    assert!(before.lines.iter().all(|l| !l.price_changed && !l.out_of_stock));

    fx.catalog
        .clone()
        .upsert_product(UpsertProductRequest {
            product: Some(holdfast_proto::catalog::v1::Product {
                sku: "MUG".into(),
                title: "MUG, now bigger".into(),
                price: Some(holdfast_proto::common::v1::Money {
                    amount_minor: 1499,
                    currency: "EUR".into(),
                }),
                category: "kitchen".into(),
                active: true,
                ..Default::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("price change");
    fx.stock("HAT", 0).await;

    let cart = get(&mut c, customer("ann")).await;
    let mug = &cart.lines[0];
    assert_eq!(
        mug.snapshot_unit_price.as_ref().map(|m| m.amount_minor),
        Some(1299)
    );
    assert_eq!(
        mug.current_unit_price.as_ref().map(|m| m.amount_minor),
        Some(1499)
    );
    assert!(mug.price_changed && !mug.out_of_stock);
    assert_eq!(mug.title, "MUG, now bigger");
    assert_eq!(
        mug.line_total.as_ref().map(|m| m.amount_minor),
        Some(2 * 1499),
        "at the current price"
    );
    let hat = &cart.lines[1];
    assert!(hat.out_of_stock && !hat.price_changed);
    let totals: Vec<(&str, i64)> = cart
        .totals
        .iter()
        .map(|m| (m.currency.as_str(), m.amount_minor))
        .collect();
    assert_eq!(
        totals,
        [("EUR", 2 * 1499), ("USD", 2000)],
        "one total per currency, by code"
    );
    assert_eq!(cart.version, before.version, "reading changes nothing");

    fx.upsert("HAT", 2000, "USD", false).await;
    fx.stock("HAT", 10).await;
    let cart = get(&mut c, customer("ann")).await;
    assert!(
        cart.lines[1].out_of_stock,
        "a deactivated product cannot be bought either"
    );
}

#[tokio::test]
async fn bad_inputs_are_invalid_argument_naming_each_field() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 100).await;
    let mut c = fx.device().await;
    let long = "x".repeat(129);

    let status = c
        .get_cart(GetCartRequest { owner: None })
        .await
        .expect_err("no owner");
    assert_eq!(bad_fields(&status), ["owner"]);
    let status = c
        .get_cart(GetCartRequest {
            owner: Some(CartOwner { owner: None }),
        })
        .await
        .expect_err("empty owner");
    assert_eq!(bad_fields(&status), ["owner"]);
    let status = c
        .get_cart(GetCartRequest { owner: customer("") })
        .await
        .expect_err("empty id");
    assert_eq!(bad_fields(&status), ["owner.customer_id"]);

    let status = add(&mut c, session("a{b}"), "bad sku", 0).await.expect_err("add");
    assert_eq!(bad_fields(&status), ["owner.session_id", "sku", "quantity"]);
    let status = add(&mut c, customer("ann"), "MUG", 100)
        .await
        .expect_err("over 99");
    assert_eq!(bad_fields(&status), ["quantity"]);
    let status = add(&mut c, customer("ann"), "MUG", -1)
        .await
        .expect_err("negative");
    assert_eq!(bad_fields(&status), ["quantity"]);

    let status = update(&mut c, customer(&long), "", -1, 0)
        .await
        .expect_err("update");
    assert_eq!(bad_fields(&status), ["owner.customer_id", "sku", "quantity"]);
    let status = update(&mut c, customer("ann"), "MUG", 100, 0)
        .await
        .expect_err("over 99");
    assert_eq!(bad_fields(&status), ["quantity"]);

    let status = remove(&mut c, None, "a~1", 0).await.expect_err("remove");
    assert_eq!(bad_fields(&status), ["owner", "sku"]);
    let status = clear(&mut c, session(""), 0).await.expect_err("clear");
    assert_eq!(bad_fields(&status), ["owner.session_id"]);

    let status = merge(&mut c, "", "x}").await.expect_err("merge");
    assert_eq!(bad_fields(&status), ["session_id", "customer_id"]);
    let status = merge(&mut c, &long, "\u{7}").await.expect_err("merge");
    assert_eq!(bad_fields(&status), ["session_id", "customer_id"]);

    assert_eq!(
        get(&mut c, customer("ann")).await.version,
        0,
        "no bad call wrote anything"
    );
}
