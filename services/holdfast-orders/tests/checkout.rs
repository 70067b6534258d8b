//! Checkout against the real services: redis-server, SQLite, catalog, inventory, cart and
//! the simulated PSP over gRPC.

mod common;

use std::time::Duration;

use common::*;
use holdfast_orders::OrdersOptions;
use holdfast_platform::events::Event;
use holdfast_proto::events::v1::{FulfillmentEvent, fulfillment_event};
use holdfast_proto::orders::v1::{
    CheckoutOutcome, CheckoutResponse, ListOrdersRequest, OrderStatus, checkout_request,
};
use holdfast_proto::payments::v1::{LedgerEntryKind, PaymentStatus};
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

async fn placed(fx: &Fixture, request: holdfast_proto::orders::v1::CheckoutRequest) -> CheckoutResponse {
    let response = fx
        .orders
        .clone()
        .checkout(request)
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(
        response.outcome,
        CheckoutOutcome::Placed as i32,
        "expected PLACED, got {response:?}"
    );
    response
}

/// A placed checkout's order history: placed, paid, then dispatched to fulfillment.
const DISPATCHED: [OrderStatus; 3] = [OrderStatus::Placed, OrderStatus::Paid, OrderStatus::Fulfilling];

/// The statuses of `order`'s history, in order.
fn statuses(order: &holdfast_proto::orders::v1::Order) -> Vec<OrderStatus> {
    order
        .status_history
        .iter()
        .map(|change| OrderStatus::try_from(change.status).expect("a known status"))
        .collect()
}

async fn next_event(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("bus open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn happy_path_holds_commits_charges_once_and_dispatches() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    fx.product("tea", 400, 10).await;
    let mut dispatches = fx.bus.subscribe("holdfast.fulfillment.v1");

    let response = placed(
        &fx,
        checkout(
            "k-happy",
            "alice",
            &[("mug", 2), ("tea", 1), ("mug", 1)],
            "pm_card_visa",
        ),
    )
    .await;
    let order = response.order.expect("order");
    assert!(order.id.starts_with("ord_"));
    assert_eq!(order.customer_id, "alice");
    assert_eq!(
        order.total,
        Some(usd(3 * 1250 + 400)),
        "duplicate lines are summed and priced"
    );
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.status, OrderStatus::Fulfilling as i32);
    assert_eq!(statuses(&order), DISPATCHED);
    assert!(!order.payment_id.is_empty());

    let mug = fx.level("mug").await;
    assert_eq!(
        (mug.on_hand, mug.reserved, mug.sold),
        (7, 0, 3),
        "stock committed, no hold left"
    );
    assert_eq!(
        fx.ledger(&order.id, LedgerEntryKind::Authorization).await.len(),
        1
    );
    let captures = fx.ledger(&order.id, LedgerEntryKind::Capture).await;
    assert_eq!(captures.len(), 1, "charged exactly once");
    assert_eq!(captures[0].amount, Some(usd(4150)));

    let event = next_event(&mut dispatches).await;
    assert_eq!(event.key, order.id);
    let dispatch = FulfillmentEvent::decode(event.payload.as_slice()).expect("fulfillment event");
    assert_eq!(dispatch.event_id, event.id);
    match dispatch.event {
        Some(fulfillment_event::Event::DispatchRequested(d)) => {
            assert_eq!(d.order_id, order.id);
            assert_eq!(d.lines.len(), 2);
            assert_eq!(d.ship_to.map(|a| a.city), Some("London".into()));
        }
        other => panic!("expected dispatch_requested, got {other:?}"),
    }

    assert_eq!(fx.order(&order.id).await, order);
}

/// The finished saga behind `order` (its id is `ord_<saga id>`).
async fn saga_of(fx: &Fixture, order: &holdfast_proto::orders::v1::Order) -> holdfast_store::SagaRecord {
    use holdfast_store::SagaStore as _;
    let id = order.id.strip_prefix("ord_").expect("a checkout's order id");
    let saga = fx.store.get_saga(id).await.expect("read saga").expect("the saga");
    assert!(saga.finished, "the checkout's saga ended");
    saga
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validate_runs_before_the_creation_and_screen_create_order_dispatch_and_finish_with_the_step_before_them()
 {
    let mut setup = Setup::default();
    setup.orders.risk.max_amount_minor = 5_000;
    let fx = Fixture::with(setup).await;
    fx.product("mug", 1250, 10).await;
    fx.product("tv", 60_000, 3).await;

    let order = placed(&fx, checkout("k-steps", "alice", &[("mug", 1)], "pm_card_visa"))
        .await
        .order
        .expect("order");
    // Created at version 1 past validate (which runs before the creation), then one
    // transition after each external effect: reserve (with screen), authorize (with create
    // order), commit, capture (with dispatch), notify (with finish). A transition per step
    // would be ten, after a creation at validate.
    assert_eq!(saga_of(&fx, &order).await.version, 1 + 5);
    assert_eq!(fx.level("mug").await.sold, 1);

    // Held for review: screen sends it to create order, both with reserve's transition.
    let review = fx
        .orders
        .clone()
        .checkout(checkout("k-steps-review", "eve", &[("tv", 1)], "pm_card_visa"))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(review.outcome, CheckoutOutcome::ManualReview as i32);
    let order = review.order.expect("order");
    assert_eq!(order.status, OrderStatus::ManualReview as i32);
    // Created past validate; reserve (with screen and create order), commit, notify (with
    // finish).
    assert_eq!(saga_of(&fx, &order).await.version, 1 + 3);
}

/// A checkout stored at `dispatch` after its capture (dispatch failed while riding with
/// capture's transition, or a build whose capture wrote PAID stored it) is run on its own:
/// the order moves on from where it is, to FULFILLING with one PAID in its history and its
/// dispatch announced, charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_stored_at_dispatch_moves_its_order_on_from_where_it_is() {
    use holdfast_orders::order::{self, Change};
    use holdfast_store::SagaStore as _;

    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let mut dispatches = fx.bus.subscribe("holdfast.fulfillment.v1");
    let engine = &fx.orders_running.engine;
    for (key, paid_before) in [("k-at-dispatch-placed", false), ("k-at-dispatch-paid", true)] {
        let request = checkout(key, "alice", &[("mug", 1)], "pm_card_visa");
        let (_, at_dispatch) = steps_in_memory(&fx, &request, "capture").await;
        assert_eq!(at_dispatch.step, "dispatch");
        let order_id = format!("ord_{}", at_dispatch.id);
        if paid_before {
            order::change(engine.context(), &order_id, |current| {
                let paid = order::transition(
                    current,
                    &[OrderStatus::Placed],
                    OrderStatus::Paid,
                    engine.context().now_ms(),
                    "payment captured",
                );
                Ok(if paid {
                    Change::Write(Vec::new())
                } else {
                    Change::Keep
                })
            })
            .await
            .expect("the order written PAID");
        }
        fx.store
            .create_saga(at_dispatch.clone())
            .await
            .expect("store the saga");
        engine
            .run_to_end(at_dispatch)
            .await
            .expect("the saga runs to its end");

        assert_eq!(statuses(&fx.order(&order_id).await), DISPATCHED, "{key}");
        assert_eq!(
            fx.ledger(&order_id, LedgerEntryKind::Capture).await.len(),
            1,
            "{key}"
        );
        let event = next_event(&mut dispatches).await;
        assert_eq!(event.key, order_id, "{key}: its dispatch announced");
    }
}

/// Inventory RPCs of `method` this process served so far (every server of the test's mesh
/// counts into the one registry).
fn inventory_calls(method: &str) -> u64 {
    let series = format!(
        "holdfast_rpc_requests_total{{method=\"{method}\",service=\"holdfast.inventory.v1.InventoryService\"}} "
    );
    holdfast_platform::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |count| count.trim().parse().expect("a count"))
}

/// Places one checkout of a mug on a mesh whose hold lasts `hold_ttl`, and answers the
/// inventory Extends and Commits it sent.
async fn extends_and_commits_of_one_checkout(hold_ttl: Duration) -> (u64, u64) {
    let mut setup = Setup::default();
    setup.orders.hold_ttl = hold_ttl;
    let fx = Fixture::with(setup).await;
    fx.product("mug", 1250, 10).await;
    let (extends, commits) = (inventory_calls("Extend"), inventory_calls("Commit"));
    placed(&fx, checkout("k-hold", "alice", &[("mug", 1)], "pm_card_visa")).await;
    assert_eq!(fx.level("mug").await.sold, 1);
    (
        inventory_calls("Extend") - extends,
        inventory_calls("Commit") - commits,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_whose_ttl_still_covers_the_payment_is_not_extended_before_authorizing() {
    // The default hold (120 s) outlasts the payment's attempts and the commit: the Reserve's
    // own TTL covers the authorization, so no Extend is sent.
    assert_eq!(
        extends_and_commits_of_one_checkout(OrdersOptions::default().hold_ttl).await,
        (0, 1),
        "a fresh hold is committed without an Extend"
    );
    // A hold shorter than the payment's attempts and the commit is extended first.
    assert_eq!(
        extends_and_commits_of_one_checkout(Duration::from_secs(5)).await,
        (1, 1),
        "a short hold is extended before authorizing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declined_card_releases_the_hold_and_leaves_no_order_or_charge() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 5).await;
    let response = fx
        .orders
        .clone()
        .checkout(checkout("k-decline", "bob", &[("mug", 2)], "pm_card_declined"))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(response.outcome, CheckoutOutcome::PaymentDeclined as i32);
    assert_eq!(response.decline_code, "card_declined");
    assert!(response.order.is_none());
    let mug = fx.level("mug").await;
    assert_eq!(
        (mug.available, mug.reserved, mug.sold),
        (5, 0, 0),
        "hold released"
    );
    let orders = fx
        .orders
        .clone()
        .list_orders(ListOrdersRequest {
            customer_id: "bob".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .orders;
    assert!(
        orders.iter().all(|o| o.status == OrderStatus::Cancelled as i32),
        "no live order: {orders:?}"
    );
    assert!(fx.all_ledger(LedgerEntryKind::Capture).await.is_empty());
    assert!(fx.all_ledger(LedgerEntryKind::Authorization).await.is_empty());

    // A repeat answers the stored refusal and moves nothing.
    let again = fx
        .orders
        .clone()
        .checkout(checkout("k-decline", "bob", &[("mug", 2)], "pm_card_declined"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, response);
    assert_eq!(fx.level("mug").await.available, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_stock_returns_shortages_and_charges_nothing() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 1).await;
    fx.product("tea", 400, 10).await;
    let response = fx
        .orders
        .clone()
        .checkout(checkout(
            "k-oos",
            "carol",
            &[("tea", 1), ("mug", 2)],
            "pm_card_visa",
        ))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(response.outcome, CheckoutOutcome::OutOfStock as i32);
    assert_eq!(response.shortages.len(), 1);
    assert_eq!(response.shortages[0].sku, "mug");
    assert_eq!(
        (response.shortages[0].requested, response.shortages[0].available),
        (2, 1)
    );
    assert_eq!(fx.level("tea").await.available, 10, "nothing held");
    assert!(fx.all_ledger(LedgerEntryKind::Authorization).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn price_change_since_the_cart_answers_new_prices_then_accepting_places_and_clears_the_cart() {
    let fx = Fixture::start().await;
    fx.product("mug", 1000, 10).await;
    fx.add_to_cart("dave", "mug", 2).await;
    fx.price("mug", 1200).await;

    let refused = fx
        .orders
        .clone()
        .checkout(checkout_cart("k-price-1", "dave", "pm_card_visa"))
        .await
        .expect_err("a price change is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("mug now costs 1200 USD"),
        "{}",
        refused.message()
    );
    let violations = refused
        .get_details_precondition_failure()
        .expect("precondition failure details")
        .violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(
        (violations[0].r#type.as_str(), violations[0].subject.as_str()),
        ("PRICE_CHANGED", "mug")
    );
    // The typed new prices travel in the same details.
    let details = tonic_types::Status::decode(refused.details()).expect("google.rpc.Status");
    let typed = details
        .details
        .iter()
        .find(|any| any.type_url.ends_with("holdfast.orders.v1.CheckoutResponse"))
        .map(|any| CheckoutResponse::decode(any.value.as_slice()).expect("typed lines"))
        .expect("typed repriced lines");
    assert_eq!(typed.repriced_lines.len(), 1);
    assert_eq!(typed.repriced_lines[0].expected_unit_price, Some(usd(1000)));
    assert_eq!(typed.repriced_lines[0].current_unit_price, Some(usd(1200)));
    assert_eq!(fx.level("mug").await.reserved, 0, "no hold for a price change");
    // The refusal is the key's stored answer, details included.
    let replay = fx
        .orders
        .clone()
        .checkout(checkout_cart("k-price-1", "dave", "pm_card_visa"))
        .await
        .expect_err("replayed");
    assert_eq!(
        (replay.code(), replay.message()),
        (refused.code(), refused.message())
    );
    assert_eq!(replay.details(), refused.details());

    let mut accept = checkout_cart("k-price-2", "dave", "pm_card_visa");
    accept.accept_price_changes = true;
    let order = placed(&fx, accept).await.order.expect("order");
    assert_eq!(order.total, Some(usd(2400)), "charged the current price");
    let cart = fx
        .cart
        .clone()
        .get_cart(holdfast_proto::cart::v1::GetCartRequest {
            owner: customer_cart("dave"),
        })
        .await
        .expect("cart")
        .into_inner()
        .cart
        .unwrap_or_default();
    assert!(cart.lines.is_empty(), "the checked-out cart is cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn high_risk_goes_to_manual_review_uncharged_and_cancel_restocks() {
    let mut setup = Setup::default();
    setup.orders.risk.max_amount_minor = 5_000;
    let fx = Fixture::with(setup).await;
    fx.product("tv", 60_000, 3).await;
    let response = fx
        .orders
        .clone()
        .checkout(checkout("k-risk", "eve", &[("tv", 1)], "pm_card_visa"))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(response.outcome, CheckoutOutcome::ManualReview as i32);
    let order = response.order.expect("order");
    assert_eq!(order.status, OrderStatus::ManualReview as i32);
    assert!(order.payment_id.is_empty());
    assert!(
        fx.all_ledger(LedgerEntryKind::Unspecified).await.is_empty(),
        "nothing charged or held"
    );
    let tv = fx.level("tv").await;
    assert_eq!(
        (tv.on_hand, tv.reserved),
        (2, 0),
        "stock set aside for the reviewer"
    );

    let cancelled = fx
        .orders
        .clone()
        .cancel_order(holdfast_proto::orders::v1::CancelOrderRequest {
            order_id: order.id.clone(),
            reason: "review rejected".into(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    assert_eq!(fx.level("tv").await.on_hand, 3, "restocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_checkouts_with_one_key_make_one_order_and_one_authorization() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 100).await;
    let request = checkout("k-storm", "frank", &[("mug", 1)], "pm_card_visa");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut client = fx.orders.clone();
        let request = request.clone();
        calls.spawn(async move { client.checkout(request).await });
    }
    let mut order_ids = std::collections::BTreeSet::new();
    while let Some(result) = calls.join_next().await {
        let response = result.expect("task").expect("checkout").into_inner();
        assert_eq!(response.outcome, CheckoutOutcome::Placed as i32);
        order_ids.insert(response.order.expect("order").id);
    }
    assert_eq!(order_ids.len(), 1, "one order for one key");
    let order_id = order_ids.into_iter().next().expect("one");
    assert_eq!(
        fx.ledger(&order_id, LedgerEntryKind::Authorization).await.len(),
        1
    );
    assert_eq!(fx.all_ledger(LedgerEntryKind::Capture).await.len(), 1);
    assert_eq!(fx.level("mug").await.sold, 1);

    // The same key with another payload is refused, and moves nothing.
    let other = checkout("k-storm", "frank", &[("mug", 2)], "pm_card_visa");
    let refused = fx.orders.clone().checkout(other).await.expect_err("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(fx.level("mug").await.sold, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_checkout_retried_with_its_key_charges_once() {
    let fx = Fixture::with(Setup {
        psp_latency: Duration::from_millis(300),
        ..Setup::default()
    })
    .await;
    fx.product("mug", 1250, 10).await;
    let request = checkout("k-timeout", "gina", &[("mug", 1)], "pm_card_visa");
    let mut hurried = tonic::Request::new(request.clone());
    hurried.set_timeout(Duration::from_millis(100));
    let error = fx
        .orders
        .clone()
        .checkout(hurried)
        .await
        .expect_err("the client gives up");
    // tonic reports a client-side deadline as CANCELLED "Timeout expired".
    assert!(
        matches!(error.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{error:?}"
    );

    let order = placed(&fx, request).await.order.expect("order");
    assert_eq!(
        fx.ledger(&order.id, LedgerEntryKind::Authorization).await.len(),
        1
    );
    assert_eq!(
        fx.ledger(&order.id, LedgerEntryKind::Capture).await.len(),
        1,
        "one charge"
    );
    assert_eq!(fx.all_ledger(LedgerEntryKind::Capture).await.len(), 1);
    assert_eq!(fx.level("mug").await.sold, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_psp_that_never_answers_is_voided_and_the_hold_released() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let response = fx
        .orders
        .clone()
        .checkout(checkout(
            "k-psp-timeout",
            "hank",
            &[("mug", 1)],
            "pm_card_timeout",
        ))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(response.outcome, CheckoutOutcome::PaymentDeclined as i32);
    assert_eq!(response.decline_code, "processor_timeout");
    let mug = fx.level("mug").await;
    assert_eq!((mug.available, mug.reserved, mug.sold), (10, 0, 0));
    // The authorization the PSP recorded but never answered was voided.
    let auths = fx.all_ledger(LedgerEntryKind::Authorization).await;
    assert_eq!(auths.len(), 1);
    assert_eq!(
        fx.payment_status(&auths[0].payment_id).await,
        PaymentStatus::Voided as i32
    );
    assert!(fx.all_ledger(LedgerEntryKind::Capture).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flaky_psp_is_retried_with_the_same_key() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let order = placed(&fx, checkout("k-flaky", "ivan", &[("mug", 1)], "pm_card_flaky"))
        .await
        .order
        .expect("order");
    assert_eq!(
        fx.ledger(&order.id, LedgerEntryKind::Authorization).await.len(),
        1
    );
    assert_eq!(fx.ledger(&order.id, LedgerEntryKind::Capture).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_name_every_bad_field_and_claim_nothing() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let mut bad = checkout("k-bad", "", &[("mug", 0), ("bad sku", 1)], "pm_card_gold");
    bad.shipping_address.as_mut().expect("address").country = "gb".into();
    let error = fx.orders.clone().checkout(bad).await.expect_err("invalid");
    assert_eq!(error.code(), Code::InvalidArgument);
    let fields: Vec<String> = error
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for field in [
        "customer_id",
        "lines.lines[0].quantity",
        "lines.lines[1].sku",
        "payment_method",
        "shipping_address.country",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }
    let mut no_source = checkout("k-bad", "x", &[], "pm_card_visa");
    no_source.source = None;
    assert_eq!(
        fx.orders
            .clone()
            .checkout(no_source)
            .await
            .expect_err("no source")
            .code(),
        Code::InvalidArgument
    );
    let mut empty = checkout("", "x", &[("mug", 1)], "pm_card_visa");
    empty.shipping_address = None;
    assert_eq!(
        fx.orders
            .clone()
            .checkout(empty)
            .await
            .expect_err("no key")
            .code(),
        Code::InvalidArgument
    );

    // Nothing was claimed: the key still works with a good payload.
    placed(&fx, checkout("k-bad", "x", &[("mug", 1)], "pm_card_visa")).await;

    // Unknown SKU and an empty cart are refusals after validation, replayed for the key.
    let unknown = fx
        .orders
        .clone()
        .checkout(checkout("k-unknown", "x", &[("nope", 1)], "pm_card_visa"))
        .await
        .expect_err("unknown sku");
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    assert!(unknown.message().contains("nope"), "{}", unknown.message());
    let empty_cart = fx
        .orders
        .clone()
        .checkout(checkout_cart("k-empty", "nobody", "pm_card_visa"))
        .await
        .expect_err("empty cart");
    assert_eq!(empty_cart.code(), Code::FailedPrecondition);
    let mut others = checkout_cart("k-others", "x", "pm_card_visa");
    others.source = Some(checkout_request::Source::Cart(
        customer_cart("someone-else").expect("owner"),
    ));
    assert_eq!(
        fx.orders
            .clone()
            .checkout(others)
            .await
            .expect_err("other's cart")
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(fx.level("mug").await.reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_orders_pages_own_orders_newest_first() {
    let fx = Fixture::start().await;
    fx.product("mug", 100, 100).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            placed(
                &fx,
                checkout(&format!("k-list-{i}"), "judy", &[("mug", 1)], "pm_card_visa"),
            )
            .await
            .order
            .expect("order")
            .id,
        );
    }
    placed(
        &fx,
        checkout("k-list-other", "mallory", &[("mug", 1)], "pm_card_visa"),
    )
    .await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = fx
            .orders
            .clone()
            .list_orders(ListOrdersRequest {
                customer_id: "judy".into(),
                statuses: vec![],
                page: Some(holdfast_proto::common::v1::PageRequest {
                    page_size: 2,
                    page_token: token.clone(),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders.into_iter().map(|o| o.id));
        token = page.page.unwrap_or_default().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "own orders only, newest first, each once");
    let bad = fx
        .orders
        .clone()
        .list_orders(ListOrdersRequest {
            customer_id: "judy".into(),
            statuses: vec![99],
            page: None,
        })
        .await
        .expect_err("bad status");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_velocity_rule_holds_against_concurrent_checkouts_of_one_customer() {
    let mut setup = Setup {
        // Authorizations take a while, so every screen runs before any order is written:
        // a rule that counts orders lets them all through.
        psp_latency: Duration::from_millis(150),
        ..Setup::default()
    };
    setup.orders.risk.max_orders_per_window = 2;
    let fx = Fixture::with(setup).await;
    fx.product("mug", 1250, 100).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let mut client = fx.orders.clone();
        let request = checkout(&format!("k-velocity-{i}"), "vera", &[("mug", 1)], "pm_card_visa");
        calls.spawn(async move { client.checkout(request).await });
    }
    let mut placed = 0;
    let mut reviewed = 0;
    while let Some(result) = calls.join_next().await {
        let response = result.expect("task").expect("checkout").into_inner();
        match CheckoutOutcome::try_from(response.outcome) {
            Ok(CheckoutOutcome::Placed) => placed += 1,
            Ok(CheckoutOutcome::ManualReview) => reviewed += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(
        (placed, reviewed),
        (2, 6),
        "at most two orders an hour pass screening"
    );
    let later = fx
        .orders
        .clone()
        .checkout(checkout("k-velocity-late", "vera", &[("mug", 1)], "pm_card_visa"))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(later.outcome, CheckoutOutcome::ManualReview as i32);
    let other = fx
        .orders
        .clone()
        .checkout(checkout(
            "k-velocity-other",
            "walt",
            &[("mug", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(
        other.outcome,
        CheckoutOutcome::Placed as i32,
        "another customer is not held"
    );
}
