//! The abandon rule: a checkout stuck before the pivot past `abandon_after` is compensated,
//! and compensation checks what actually happened rather than what the saga recorded. A
//! step whose side effect happened but whose transition was lost (a crash in between) is
//! simulated by running the steps in memory and storing the saga one step behind. A saga
//! stored with the JSON state of earlier builds (an upgrade mid-checkout) is found and
//! finished the same way.

mod common;

use std::time::{Duration, Instant};

use common::*;
use holdfast_orders::OrdersOptions;
use holdfast_orders::saga::checkout::CheckoutState;
use holdfast_proto::orders::v1::{Order, OrderStatus};
use holdfast_proto::payments::v1::LedgerEntryKind;
use holdfast_store::SagaStore;

fn setup() -> Setup {
    Setup {
        orders: OrdersOptions {
            payment_timeout: Duration::from_millis(800),
            recovery_interval: Duration::from_millis(20),
            ..OrdersOptions::default()
        },
        ..Setup::default()
    }
}

/// Runs a checkout's steps in memory (their side effects and joined writes are real)
/// through `stop`, whose transition is then "lost": the saga is stored at `stop`, started
/// an hour ago (past the abandon window), with no lease, for the recovery worker to find.
/// Returns the saga id.
async fn lose_the_transition_of(fx: &Fixture, key: &str, stop: &str) -> String {
    // The step's joined writes (its order) land, `stop`'s too; only `stop`'s transition is
    // lost (as on ScyllaDB, where they are written before it; SQLite writes them in one
    // transaction, so there both would be lost together).
    let (mut record, _) =
        steps_in_memory(fx, &checkout(key, "abby", &[("mug", 2)], "pm_card_visa"), stop).await;
    let mut state = CheckoutState::decode(&record.state).expect("state");
    state.started_at_ms -= 3_600_000;
    record.state = state.encode();
    let id = record.id.clone();
    fx.store.create_saga(record).await.expect("store the saga");
    id
}

/// Waits (bounded) until the recovery worker finished saga `id`, and returns its order.
async fn settled_order(fx: &Fixture, id: &str) -> Order {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let saga = fx.store.get_saga(id).await.expect("get saga").expect("saga");
        if saga.finished {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recovery worker did not finish {id}: {saga:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fx.order(&format!("ord_{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_checkout_whose_commit_happened_goes_forward() {
    let fx = Fixture::with(setup()).await;
    fx.product("mug", 1250, 10).await;
    let id = lose_the_transition_of(&fx, "k-abandon-commit", "commit").await;
    let order = settled_order(&fx, &id).await;
    // Committed stock is sold: the order must be charged and go to fulfillment, not be
    // cancelled with its money voided.
    assert_eq!(order.status, OrderStatus::Fulfilling as i32, "{order:?}");
    assert_eq!(fx.ledger(&order.id, LedgerEntryKind::Capture).await.len(), 1);
    assert_eq!(fx.ledger(&order.id, LedgerEntryKind::Void).await.len(), 0);
    let level = fx.level("mug").await;
    assert_eq!((level.sold, level.reserved), (2, 0), "{level:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_checkout_cancels_the_order_it_created_unrecorded() {
    let fx = Fixture::with(setup()).await;
    fx.product("mug", 1250, 10).await;
    let id = lose_the_transition_of(&fx, "k-abandon-create", "create_order").await;
    let order = settled_order(&fx, &id).await;
    // The order row exists though the saga never recorded it: it must not stay PLACED
    // with nothing held and nothing charged.
    assert_eq!(order.status, OrderStatus::Cancelled as i32, "{order:?}");
    assert_eq!(
        fx.ledger(&order.id, LedgerEntryKind::Authorization).await.len(),
        1
    );
    assert_eq!(fx.ledger(&order.id, LedgerEntryKind::Void).await.len(), 1);
    assert_eq!(fx.ledger(&order.id, LedgerEntryKind::Capture).await.len(), 0);
    let level = fx.level("mug").await;
    assert_eq!((level.sold, level.reserved), (0, 0), "{level:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_stored_with_the_json_state_of_earlier_builds_finishes_after_the_upgrade() {
    let fx = Fixture::with(setup()).await;
    fx.product("mug", 1250, 10).await;
    // Held and authorized by a build that stored its state as JSON, and stopped there.
    let (mut record, _) = steps_in_memory(
        &fx,
        &checkout("k-json-state", "abby", &[("mug", 2)], "pm_card_visa"),
        "authorize",
    )
    .await;
    let state = CheckoutState::decode(&record.state).expect("state");
    record.state = serde_json::to_vec(&state).expect("the JSON form");
    let id = record.id.clone();
    fx.store.create_saga(record).await.expect("store the saga");
    let order = settled_order(&fx, &id).await;
    assert_eq!(order.status, OrderStatus::Fulfilling as i32, "{order:?}");
    assert_eq!(
        fx.ledger(&order.id, LedgerEntryKind::Authorization).await.len(),
        1
    );
    assert_eq!(fx.ledger(&order.id, LedgerEntryKind::Capture).await.len(), 1);
    let level = fx.level("mug").await;
    assert_eq!((level.sold, level.reserved), (2, 0), "{level:?}");
    // From there on the saga is stored in the new form.
    let saga = fx.store.get_saga(&id).await.expect("get saga").expect("saga");
    assert_ne!(saga.state.first(), Some(&b'{'));
    assert_eq!(
        CheckoutState::decode(&saga.state).expect("state").key,
        "k-json-state"
    );
}
