//! The Redis round-trip budget of cart calls (docs/cart.md): GetCart one, AddItem, UpdateItem
//! and RemoveItem two, with no call to the catalog or inventory while their data is in Redis;
//! and prices and stock as fresh as a call to them would give.

mod common;

use common::*;
use holdfast_proto::cart::v1::ItemOutcome;
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, ReserveLine, ReserveRequest, SetStockRequest};

/// Redis requests of the cart and gRPC requests to catalog and inventory made by `call`.
macro_rules! cost {
    ($fx:expr, $call:expr) => {{
        let (redis, upstream) = ($fx.cart.redis_calls(), upstream_calls());
        let out = $call;
        (out, $fx.cart.redis_calls() - redis, upstream_calls() - upstream)
    }};
}

/// `(sku, current price, out of stock)` of every line.
fn priced(cart: &holdfast_proto::cart::v1::Cart) -> Vec<(String, Option<i64>, bool)> {
    cart.lines
        .iter()
        .map(|l| {
            (
                l.sku.clone(),
                l.current_unit_price.as_ref().map(|m| m.amount_minor),
                l.out_of_stock,
            )
        })
        .collect()
}

#[tokio::test]
async fn get_cart_is_one_redis_round_trip_and_asks_neither_catalog_nor_inventory() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    fx.sellable("TEA", 450).await;
    fx.product("HAT", 2000, "USD").await;
    fx.stock("HAT", 1).await;
    let mut c = fx.device().await;
    for (sku, quantity) in [("MUG", 2), ("TEA", 1), ("HAT", 1)] {
        added(&mut c, customer("ann"), sku, quantity).await;
    }
    let warm = get(&mut c, customer("ann")).await; // the catalog fills its cache

    let (cart, redis, upstream) = cost!(fx, get(&mut c, customer("ann")).await);
    assert_eq!((redis, upstream), (1, 0), "one script, no gRPC");
    assert_eq!(cart, warm);
    assert_eq!(
        priced(&cart),
        [
            ("MUG".to_string(), Some(1299), false),
            ("TEA".to_string(), Some(450), false),
            ("HAT".to_string(), Some(2000), false)
        ]
    );
    assert_eq!(cart.lines[0].title, "MUG title");

    let (empty, redis, upstream) = cost!(fx, get(&mut c, customer("nobody")).await);
    assert_eq!((redis, upstream, empty.version), (1, 0, 0));
}

#[tokio::test]
async fn changes_are_two_redis_round_trips_and_clear_is_one() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    fx.sellable("TEA", 450).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 1).await;
    get(&mut c, customer("ann")).await;
    fx.catalog
        .clone()
        .batch_get_products(holdfast_proto::catalog::v1::BatchGetProductsRequest {
            skus: vec!["TEA".into()],
        })
        .await
        .expect("warm the catalog cache");

    let (cart, redis, upstream) = cost!(fx, added(&mut c, customer("ann"), "TEA", 2).await);
    assert_eq!((redis, upstream), (2, 0), "AddItem");
    assert_eq!(
        priced(&cart),
        [
            ("MUG".to_string(), Some(1299), false),
            ("TEA".to_string(), Some(450), false)
        ]
    );
    let (reply, redis, upstream) = cost!(fx, update(&mut c, customer("ann"), "MUG", 5, 0).await);
    assert_eq!((redis, upstream), (2, 0), "UpdateItem");
    assert_eq!(
        lines(&reply.expect("update").cart.expect("cart"))[0],
        ("MUG".to_string(), 5)
    );
    let (cart, redis, upstream) = cost!(fx, remove(&mut c, customer("ann"), "TEA", 0).await);
    assert_eq!((redis, upstream), (2, 0), "RemoveItem");
    assert_eq!(lines(&cart.expect("remove")), pairs(&[("MUG", 5)]));
    let (cart, redis, upstream) = cost!(fx, clear(&mut c, customer("ann"), 0).await);
    assert_eq!((redis, upstream), (1, 0), "ClearCart");
    assert!(cart.expect("clear").lines.is_empty());
}

#[tokio::test]
async fn a_price_change_and_a_stock_change_show_on_the_next_read() {
    let fx = Fixture::start().await;
    fx.sellable("MUG", 1299).await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    get(&mut c, customer("ann")).await;

    // The upsert leaves a tombstone in the cache: the next read asks the catalog, once.
    fx.product("MUG", 1499, "EUR").await;
    let (cart, redis, upstream) = cost!(fx, get(&mut c, customer("ann")).await);
    assert_eq!(priced(&cart), [("MUG".to_string(), Some(1499), false)]);
    assert!(cart.lines[0].price_changed);
    assert_eq!((redis, upstream), (1, 1), "one BatchGetProducts for the miss");
    let (_, redis, upstream) = cost!(fx, get(&mut c, customer("ann")).await);
    assert_eq!((redis, upstream), (1, 0), "cached again");

    // Stock is read live from inventory's keys: a change shows at once.
    fx.stock("MUG", 1).await;
    assert_eq!(
        priced(&get(&mut c, customer("ann")).await),
        [("MUG".to_string(), Some(1499), true)]
    );
    fx.stock("MUG", 2).await;
    assert!(!get(&mut c, customer("ann")).await.lines[0].out_of_stock);
}

#[tokio::test]
async fn stock_read_with_the_cart_matches_inventory_for_split_skus_and_live_holds() {
    let fx = Fixture::start().await;
    fx.product("HOT", 500, "EUR").await;
    fx.inventory
        .clone()
        .set_stock(SetStockRequest {
            sku: "HOT".into(),
            on_hand: 10,
            buckets: 4,
        })
        .await
        .expect("split stock");
    fx.inventory
        .clone()
        .reserve(ReserveRequest {
            reservation_id: "r-1".into(),
            lines: vec![ReserveLine {
                sku: "HOT".into(),
                quantity: 3,
            }],
            ttl_seconds: 600,
        })
        .await
        .expect("reserve");
    let level = fx
        .inventory
        .clone()
        .get_availability(GetAvailabilityRequest {
            skus: vec!["HOT".into()],
        })
        .await
        .expect("availability")
        .into_inner()
        .levels
        .remove(0)
        .available;
    assert_eq!(level, 7);

    let mut c = fx.device().await;
    let too_many = add(&mut c, customer("ann"), "HOT", 8).await.expect("add");
    assert_eq!(
        (too_many.outcome(), too_many.available_quantity),
        (ItemOutcome::OutOfStock, level)
    );
    let cart = added(&mut c, customer("ann"), "HOT", 7).await;
    assert!(!cart.lines[0].out_of_stock, "all seven available units");
}

#[tokio::test]
async fn with_a_separate_redis_every_figure_comes_from_catalog_and_inventory() {
    let fx = Fixture::with(holdfast_cart::CartOptions {
        shared_redis: false,
        ..holdfast_cart::CartOptions::default()
    })
    .await;
    fx.sellable("MUG", 1299).await;
    fx.product("HAT", 2000, "USD").await;
    let mut c = fx.device().await;
    added(&mut c, customer("ann"), "MUG", 2).await;
    let hat = add(&mut c, customer("ann"), "HAT", 1).await.expect("add");
    assert_eq!(hat.outcome(), ItemOutcome::OutOfStock, "never stocked");

    let (cart, redis, upstream) = cost!(fx, get(&mut c, customer("ann")).await);
    assert_eq!(priced(&cart), [("MUG".to_string(), Some(1299), false)]);
    assert_eq!((redis, upstream), (1, 2), "BatchGetProducts and GetAvailability");
}
