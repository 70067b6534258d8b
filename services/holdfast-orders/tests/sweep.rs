//! Money and sagas left behind (issue 12): an authorization that lands after its checkout
//! ended without an order is voided by the sweep; a cancel whose refund keeps failing is
//! parked for review after its bound instead of retried forever.

mod common;

use std::time::{Duration, Instant};

use common::*;
use holdfast_orders::OrdersOptions;
use holdfast_orders::saga::PARKED;
use holdfast_orders::saga::checkout::psp_key_for;
use holdfast_proto::orders::v1::{CancelOrderRequest, CheckoutOutcome, Order};
use holdfast_proto::payments::v1::{AuthorizeRequest, PaymentStatus};
use holdfast_store::{OrderStore, SagaRecord, SagaStore};
use prost::Message;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorization_landing_after_the_checkout_ended_is_voided_by_the_sweep() {
    let fx = Fixture::with(Setup {
        orders: OrdersOptions {
            // Every checkout is abandoned right after validate: it compensates, its
            // look-up finds no payment, and it ends without an order.
            abandon_after: Duration::ZERO,
            void_sweep_grace: Duration::from_millis(50),
            void_sweep_every: Duration::from_millis(50),
            recovery_interval: Duration::from_millis(25),
            ..Setup::default().orders
        },
        ..Setup::default()
    })
    .await;
    fx.product("mug", 1250, 10).await;
    let key = "k-late-authorization";
    let ended = fx
        .orders
        .clone()
        .checkout(checkout(key, "lena", &[("mug", 1)], "pm_card_visa"))
        .await;
    match ended {
        Ok(response) => assert_ne!(response.into_inner().outcome, CheckoutOutcome::Placed as i32),
        Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
    }
    // The authorization the saga gave up on lands now, under the checkout's own key.
    let authorized = fx
        .payments
        .clone()
        .authorize(AuthorizeRequest {
            idempotency_key: psp_key_for(key, "authorize"),
            amount: Some(usd(1250)),
            payment_method: "pm_card_visa".into(),
            customer_id: "lena".into(),
            order_reference: "late".into(),
        })
        .await
        .expect("authorize")
        .into_inner();
    assert_eq!(authorized.status, PaymentStatus::Authorized as i32);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = fx.payment_status(&authorized.payment_id).await;
    while status != PaymentStatus::Voided as i32 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        status = fx.payment_status(&authorized.payment_id).await;
    }
    assert_eq!(
        status,
        PaymentStatus::Voided as i32,
        "the late authorization must not stay standing"
    );
}

/// Points the stored order at a payment the PSP does not know, so every refund attempt
/// of its cancellation fails.
async fn break_payment_of(fx: &Fixture, order_id: &str) {
    let stored = fx.store.get_order(order_id).await.expect("get").expect("order");
    let mut order = Order::decode(stored.payload.as_slice()).expect("decode");
    order.payment_id = "pay_00000000-0000-7000-8000-000000000000".into();
    let version = stored.version;
    let broken = holdfast_store::StoredOrder {
        payload: order.encode_to_vec(),
        ..stored
    };
    fx.store
        .update_order(broken, version, Vec::new())
        .await
        .expect("update");
}

fn parked_count(kind: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == "holdfast_orders_sagas_parked_total")
        .flat_map(|family| family.get_metric())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.name() == "kind" && label.value() == kind)
        })
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_whose_refund_keeps_failing_is_parked_and_not_retried() {
    let fx = Fixture::with(Setup {
        orders: OrdersOptions {
            park_after: Duration::from_millis(400),
            retry_after: Duration::from_millis(20),
            recovery_interval: Duration::from_millis(20),
            ..Setup::default().orders
        },
        ..Setup::default()
    })
    .await;
    fx.product("mug", 1250, 10).await;
    let placed = fx
        .orders
        .clone()
        .checkout(checkout("k-park", "milo", &[("mug", 1)], "pm_card_visa"))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(placed.outcome, CheckoutOutcome::Placed as i32, "{placed:?}");
    let order = placed.order.expect("order");
    break_payment_of(&fx, &order.id).await;
    let before = parked_count("cancel");

    let first = fx
        .orders
        .clone()
        .cancel_order(CancelOrderRequest {
            order_id: order.id.clone(),
            reason: "changed my mind".into(),
        })
        .await;
    assert!(first.is_err(), "the refund cannot succeed: {first:?}");

    let id = format!("cancel_{}", order.id);
    let saga = |fx: &Fixture| {
        let store = fx.store.clone();
        let id = id.clone();
        async move { store.get_saga(&id).await.expect("get").expect("saga") }
    };
    // The park is stored first and counted right after, on the worker's thread: wait for
    // both (reading the counter the moment the stored step reads parked can miss the count).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut current: SagaRecord = saga(&fx).await;
    while !(current.step.starts_with(PARKED) && parked_count("cancel") > before) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
        current = saga(&fx).await;
    }
    assert_eq!(current.step, format!("{PARKED}money"), "{current:?}");
    assert!(!current.finished);
    assert_eq!(parked_count("cancel"), before + 1);

    // Not retried: the recovery worker does not list it, a pass of it moves nothing, and
    // asking again says it is parked.
    let stalled = fx
        .store
        .list_stalled_sagas(i64::MAX - 1, 1000)
        .await
        .expect("stalled");
    assert!(stalled.iter().all(|s| s.id != id), "{stalled:?}");
    fx.orders_running.engine.resume_stalled().await.expect("resume");
    let again = fx
        .orders
        .clone()
        .cancel_order(CancelOrderRequest {
            order_id: order.id.clone(),
            reason: "changed my mind".into(),
        })
        .await;
    let after = saga(&fx).await;
    assert_eq!(after.version, current.version, "a parked saga must not move");
    assert_eq!(after.step, current.step);
    // The order already reads CANCELLED, so the service may answer it as is; if it runs
    // the saga, it is told the saga is parked.
    if let Err(status) = again {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
}
