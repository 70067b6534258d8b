//! A checkout whose hold Redis lost before the pivot (a FLUSHALL here; a restart without the
//! append-only file or a failover in production). Inventory rebuilds its counts from the
//! durable truth, which gives the lost hold's units back; the saga holds its lines again
//! under the same reservation id and commits, or, when the units went to someone else
//! meanwhile, compensates: no charge kept, the order it created CANCELLED with its
//! `order.cancelled` event.
//!
//! The loss is injected while the payment provider sits in its latency: the authorization is
//! in the ledger (so the hold was made) and the commit has not run yet.

mod common;

use std::time::{Duration, Instant};

use common::*;
use holdfast_proto::events::v1::{OrderEvent, order_event};
use holdfast_proto::inventory::v1::{ReservationStatus, ReserveLine, ReserveRequest};
use holdfast_proto::orders::v1::{CheckoutOutcome, CheckoutResponse, ListOrdersRequest, OrderStatus};
use holdfast_proto::payments::v1::{LedgerEntryKind, PaymentStatus};
use prost::Message;
use tokio::task::JoinHandle;

/// A mesh whose PSP takes 2 s per money call: the window in which Redis is lost.
async fn slow_psp() -> Fixture {
    let mut setup = Setup {
        psp_latency: Duration::from_secs(2),
        ..Setup::default()
    };
    setup.orders.payment_timeout = Duration::from_secs(10);
    Fixture::with(setup).await
}

/// Starts `customer`'s checkout of one `sku`, and returns once its authorization is recorded
/// (the PSP is in its latency, the commit still ahead).
async fn checkout_until_authorized(
    fx: &Fixture,
    key: &str,
    customer: &str,
    sku: &str,
) -> JoinHandle<CheckoutResponse> {
    let mut orders = fx.orders.clone();
    let request = checkout(key, customer, &[(sku, 1)], "pm_card_visa");
    let running = tokio::spawn(async move { orders.checkout(request).await.expect("checkout").into_inner() });
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.all_ledger(LedgerEntryKind::Authorization).await.is_empty() {
        assert!(Instant::now() < deadline, "no authorization recorded within 10 s");
        tokio::task::yield_now().await;
    }
    running
}

fn flushall(fx: &Fixture) {
    assert_eq!(fx.redis.cli(&["FLUSHALL"]).expect("flushall").trim(), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_redis_lost_before_the_commit_is_held_again_and_the_checkout_placed() {
    let fx = slow_psp().await;
    fx.product("mug", 1250, 10).await;
    let running = checkout_until_authorized(&fx, "k-lost-hold", "olga", "mug").await;
    flushall(&fx);

    let response = running.await.expect("checkout task");
    assert_eq!(
        response.outcome,
        CheckoutOutcome::Placed as i32,
        "the buyer keeps the unit Redis forgot: {response:?}"
    );
    let order = response.order.expect("order");
    assert_eq!(fx.ledger(&order.id, LedgerEntryKind::Capture).await.len(), 1);
    // Counted once: the rebuilt counts gave the lost hold back, the new hold took it again.
    let mug = fx.level("mug").await;
    assert_eq!((mug.on_hand, mug.reserved, mug.sold), (9, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_hold_whose_unit_went_to_another_buyer_is_compensated_and_the_order_cancelled_with_its_event()
{
    let fx = slow_psp().await;
    fx.product("lamp", 4000, 1).await;
    let mut order_events = fx.bus.subscribe("holdfast.orders.v1");
    let running = checkout_until_authorized(&fx, "k-lost-last", "piet", "lamp").await;
    flushall(&fx);
    // The last unit is free again after the rebuild, and another buyer holds it first. While
    // the checkout's own call rebuilds the stock, a Reserve is told UNAVAILABLE with a retry
    // delay: this buyer retries as a client does (the checkout sits in the PSP's 2 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let other = loop {
        let answer = fx
            .inventory
            .clone()
            .reserve(ReserveRequest {
                reservation_id: "another-buyer".into(),
                lines: vec![ReserveLine {
                    sku: "lamp".into(),
                    quantity: 1,
                }],
                ttl_seconds: 60,
            })
            .await;
        match answer {
            Err(status) if status.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => break answer.expect("reserve").into_inner(),
        }
    };
    assert_eq!(other.status, ReservationStatus::Reserved as i32);

    let response = running.await.expect("checkout task");
    assert_eq!(
        response.outcome,
        CheckoutOutcome::OutOfStock as i32,
        "{response:?}"
    );
    // Nothing sold twice, nothing left held but the other buyer's unit.
    let lamp = fx.level("lamp").await;
    assert_eq!((lamp.on_hand, lamp.reserved, lamp.sold), (1, 1, 0));
    // The authorization is voided, nothing captured.
    let auths = fx.all_ledger(LedgerEntryKind::Authorization).await;
    assert_eq!(auths.len(), 1);
    assert_eq!(
        fx.payment_status(&auths[0].payment_id).await,
        PaymentStatus::Voided as i32
    );
    assert!(fx.all_ledger(LedgerEntryKind::Capture).await.is_empty());
    // The order created before the commit is CANCELLED, and says so downstream.
    let orders = fx
        .orders
        .clone()
        .list_orders(ListOrdersRequest {
            customer_id: "piet".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .orders;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].status, OrderStatus::Cancelled as i32);
    let event = tokio::time::timeout(Duration::from_secs(5), order_events.recv())
        .await
        .expect("an order event within 5 s")
        .expect("bus open");
    assert_eq!(event.event_type, "order.cancelled");
    let Some(order_event::Event::Cancelled(cancelled)) = OrderEvent::decode(event.payload.as_slice())
        .expect("decodes")
        .event
    else {
        panic!("not a cancellation: {event:?}");
    };
    assert_eq!(cancelled.order_id, orders[0].id);
    assert_eq!(
        cancelled
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        [("lamp", 1)]
    );
    assert!(!cancelled.partial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cart_redis_lost_during_the_checkout_is_still_cleared_once_the_write_behind_brings_it_back() {
    // The cart's durable copy is written behind (here: only by hand), so a Redis loss
    // during the checkout takes the live cart with it and the clear at the version the
    // checkout read cannot be done then. The answer does not wait; the follow-up clears the
    // cart once the write-behind has saved it again.
    let mut setup = Setup {
        psp_latency: Duration::from_secs(2),
        cart: holdfast_cart::CartOptions {
            flush_every: Duration::from_secs(3600),
            ..holdfast_cart::CartOptions::default()
        },
        ..Setup::default()
    };
    setup.orders.payment_timeout = Duration::from_secs(10);
    let fx = Fixture::with(setup).await;
    fx.product("mug", 1250, 10).await;
    fx.add_to_cart("quinn", "mug", 2).await;

    let mut orders = fx.orders.clone();
    let running = tokio::spawn(async move {
        orders
            .checkout(checkout_cart("k-cart-lost", "quinn", "pm_card_visa"))
            .await
            .expect("checkout")
            .into_inner()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.all_ledger(LedgerEntryKind::Authorization).await.is_empty() {
        assert!(Instant::now() < deadline, "no authorization recorded within 10 s");
        tokio::task::yield_now().await;
    }
    flushall(&fx);
    let response = running.await.expect("checkout task");
    assert_eq!(response.outcome, CheckoutOutcome::Placed as i32, "{response:?}");

    // The write-behind saves the cart as it was acknowledged: the bought lines, for now.
    assert_eq!(fx.cart_running.flush().await, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let cart = loop {
        let cart = fx
            .cart
            .clone()
            .get_cart(holdfast_proto::cart::v1::GetCartRequest {
                owner: customer_cart("quinn"),
            })
            .await
            .expect("get cart")
            .into_inner()
            .cart
            .expect("cart");
        if cart.lines.is_empty() {
            break cart;
        }
        assert!(
            Instant::now() < deadline,
            "the bought lines are still in the cart after 15 s: {cart:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Cleared by the follow-up at the version the checkout read (1), not emptied otherwise.
    assert_eq!(cart.version, 2);
    assert_eq!(fx.level("mug").await.sold, 2);
}
