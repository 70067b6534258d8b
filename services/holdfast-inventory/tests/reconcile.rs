//! Warehouse stock changes reach on_hand once, only in their own region, on a real
//! redis-server; through the consumer on the in-process bus as `holdfast dev` runs it.

mod common;

use std::time::{Duration, Instant};

use common::Fixture;
use holdfast_inventory::reconcile::{self, RECONCILIATION_TOPIC, Reconciled, STOCK_CHANGED};
use holdfast_platform::events::{BusConfig, Event, EventBus, HandleError};
use holdfast_proto::events::v1::{
    ReconciliationEvent, StockChangeCause, WarehouseStockChanged, reconciliation_event,
};
use prost::Message;

fn change(region: &str, sku: &str, delta: i64, change_id: &str) -> Event {
    let id = format!("ev-{change_id}-{region}");
    Event {
        payload: ReconciliationEvent {
            event_id: id.clone(),
            event: Some(reconciliation_event::Event::WarehouseStockChanged(
                WarehouseStockChanged {
                    region: region.into(),
                    sku: sku.into(),
                    warehouse_id: "ber".into(),
                    delta,
                    change_id: change_id.into(),
                    cause: StockChangeCause::Receipt as i32,
                    occurred_at_unix_ms: 1,
                },
            )),
        }
        .encode_to_vec(),
        id,
        topic: RECONCILIATION_TOPIC.into(),
        key: sku.into(),
        event_type: STOCK_CHANGED.into(),
        region: region.into(),
        traceparent: None,
    }
}

async fn on_hand(fx: &Fixture, sku: &str) -> i64 {
    fx.inventory.stock.level(sku).await.expect("level").levels.on_hand
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_changes_of_the_region_adjust_on_hand_once_per_change_id() {
    let fx = Fixture::standalone().await;
    let stock = &fx.inventory.stock;
    stock.set_stock("tee", 10, 1).await.expect("set");

    let receipt = change("eu", "tee", 5, "receipt:DN-1:tee");
    assert_eq!(
        reconcile::apply(stock, "eu", &receipt).await,
        Ok(Reconciled::Adjusted)
    );
    assert_eq!(
        reconcile::apply(stock, "eu", &receipt).await,
        Ok(Reconciled::Adjusted)
    );
    let same_change_other_event = Event {
        id: "another-delivery".into(),
        ..receipt.clone()
    };
    reconcile::apply(stock, "eu", &same_change_other_event)
        .await
        .expect("repeat");
    assert_eq!(on_hand(&fx, "tee").await, 15, "one change id, one adjustment");

    assert_eq!(
        reconcile::apply(stock, "eu", &change("us", "tee", 7, "receipt:DN-9:tee")).await,
        Ok(Reconciled::OtherRegion)
    );
    assert_eq!(
        on_hand(&fx, "tee").await,
        15,
        "another region's change is not ours"
    );

    reconcile::apply(stock, "eu", &change("eu", "tee", -3, "shrinkage:S-1:tee"))
        .await
        .expect("loss");
    assert_eq!(on_hand(&fx, "tee").await, 12);
    reconcile::apply(stock, "eu", &change("eu", "new-sku", 4, "receipt:DN-2:new-sku"))
        .await
        .expect("a SKU inventory never saw");
    assert_eq!(on_hand(&fx, "new-sku").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_inventory_cannot_take_are_poison_with_a_reason() {
    let fx = Fixture::standalone().await;
    let stock = &fx.inventory.stock;
    stock.set_stock("tee", 2, 1).await.expect("set");

    let too_much = reconcile::apply(stock, "eu", &change("eu", "tee", -5, "shrinkage:S-9:tee")).await;
    assert!(
        matches!(&too_much, Err(HandleError::Poison(reason)) if reason.contains("shrinkage:S-9:tee")),
        "{too_much:?}"
    );
    assert_eq!(on_hand(&fx, "tee").await, 2, "nothing changed");

    let mut unknown_type = change("eu", "tee", 1, "x");
    unknown_type.event_type = "reconciliation.something_else".into();
    assert!(matches!(
        reconcile::apply(stock, "eu", &unknown_type).await,
        Err(HandleError::Poison(_))
    ));
    let mut garbage = change("eu", "tee", 1, "y");
    garbage.payload = vec![0xff, 0xff];
    assert!(matches!(
        reconcile::apply(stock, "eu", &garbage).await,
        Err(HandleError::Poison(_))
    ));
    for bad in [
        change("eu", "tee", 0, "z"),
        change("eu", "a b", 1, "z"),
        change("eu", "tee", 1, ""),
    ] {
        assert!(
            matches!(
                reconcile::apply(stock, "eu", &bad).await,
                Err(HandleError::Poison(_))
            ),
            "{bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_applies_changes_published_on_the_bus() {
    let fx = Fixture::standalone().await;
    fx.inventory.stock.set_stock("mug", 1, 1).await.expect("set");
    let bus = BusConfig::InProcess(fx.bus.clone());
    let consumer = reconcile::spawn(&bus, fx.inventory.stock.clone(), "eu")
        .await
        .expect("consumer");
    let mut dlq = fx.bus.subscribe(&format!("{RECONCILIATION_TOPIC}.dlq"));
    fx.bus
        .publish(vec![
            change("eu", "mug", 3, "receipt:DN-3:mug"),
            change("eu", "mug", -100, "shrinkage:S-3:mug"),
            change("eu", "mug", 3, "receipt:DN-3:mug"),
            change("eu", "mug", 2, "return:RMA-1:mug"),
        ])
        .await
        .expect("publish");
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_hand(&fx, "mug").await != 6 {
        assert!(Instant::now() < deadline, "on_hand never reached 6");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dead = tokio::time::timeout(Duration::from_secs(10), dlq.recv())
        .await
        .expect("dead letter")
        .expect("bus");
    assert_eq!(dead.id, "ev-shrinkage:S-3:mug-eu");
    consumer.shutdown().await;
    assert_eq!(
        on_hand(&fx, "mug").await,
        6,
        "1 + 3 once + 2; the impossible loss skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrinkage_below_the_held_units_is_retried_until_the_holds_go() {
    let fx = Fixture::standalone().await;
    let stock = &fx.inventory.stock;
    stock.set_stock("tee", 10, 1).await.expect("set");
    assert!(common::reserved(
        &fx.reserve("sale", &[("tee", 8)], 600).await.expect("hold")
    ));

    let loss = change("eu", "tee", -5, "shrinkage:S-7:tee");
    let refused = reconcile::apply(stock, "eu", &loss).await;
    assert!(
        matches!(&refused, Err(HandleError::Retry(reason)) if reason.contains("shrinkage:S-7:tee")),
        "held units come back: a temporary refusal, not poison: {refused:?}"
    );
    assert_eq!(on_hand(&fx, "tee").await, 10);
    fx.release("sale").await.expect("release");
    assert_eq!(
        reconcile::apply(stock, "eu", &loss).await,
        Ok(Reconciled::Adjusted)
    );
    assert_eq!(on_hand(&fx, "tee").await, 5);

    // Impossible for good (more than the stock, nothing held): poison, as before.
    let impossible = reconcile::apply(stock, "eu", &change("eu", "tee", -50, "shrinkage:S-8:tee")).await;
    assert!(
        matches!(impossible, Err(HandleError::Poison(_))),
        "{impossible:?}"
    );
    // Extreme values from event data are poison too, never a panic.
    let extreme = reconcile::apply(stock, "eu", &change("eu", "tee", i64::MIN, "shrinkage:S-9:tee")).await;
    assert!(matches!(extreme, Err(HandleError::Poison(_))), "{extreme:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_applies_a_shrinkage_once_the_sale_lets_go() {
    let fx = Fixture::standalone().await;
    fx.inventory.stock.set_stock("cap", 10, 1).await.expect("set");
    assert!(common::reserved(
        &fx.reserve("sale", &[("cap", 8)], 600).await.expect("hold")
    ));
    let bus = BusConfig::InProcess(fx.bus.clone());
    let consumer = reconcile::spawn(&bus, fx.inventory.stock.clone(), "eu")
        .await
        .expect("consumer");
    let mut dlq = fx.bus.subscribe(&format!("{RECONCILIATION_TOPIC}.dlq"));
    fx.bus
        .publish(vec![change("eu", "cap", -5, "shrinkage:S-1:cap")])
        .await
        .expect("publish");
    // The consumer refuses it at least once (and retries in place) before the sale lets go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while retried() == 0 {
        assert!(Instant::now() < deadline, "the consumer never asked for a retry");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fx.release("sale").await.expect("release");
    let deadline = Instant::now() + Duration::from_secs(20);
    while on_hand(&fx, "cap").await != 5 {
        assert!(Instant::now() < deadline, "the shrinkage never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await;
    assert!(dlq.try_recv().is_err(), "nothing was dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustment_ids_are_remembered_beyond_a_week() {
    let fx = Fixture::standalone().await;
    let stock = &fx.inventory.stock;
    stock.set_stock("tee", 10, 1).await.expect("set");
    let receipt = change("eu", "tee", 5, "receipt:DN-OLD:tee");
    reconcile::apply(stock, "eu", &receipt).await.expect("apply");
    // The id was applied eight days ago (as far as its recorded time says).
    let adj = holdfast_inventory::keys::BucketKeys::new("tee", 0).adjustments();
    let eight_days_ago = fx.redis_now_ms().await - 8 * 24 * 3600 * 1000;
    let _: i64 = fred::prelude::SortedSetsInterface::zadd(
        fx.redis(),
        &adj,
        None,
        None,
        false,
        false,
        (eight_days_ago as f64, "receipt:DN-OLD:tee"),
    )
    .await
    .expect("age the id");
    reconcile::apply(stock, "eu", &change("eu", "tee", 1, "receipt:DN-NEW:tee"))
        .await
        .expect("a later change");
    // A group reset replays the old event: it must change nothing.
    reconcile::apply(stock, "eu", &receipt).await.expect("replay");
    assert_eq!(on_hand(&fx, "tee").await, 16, "10 + 5 once + 1");
}

/// Retries the reconciliation consumer asked for so far (`holdfast_events_retried_total`).
fn retried() -> u64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == "holdfast_events_retried_total")
        .flat_map(|family| family.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "topic" && l.value() == RECONCILIATION_TOPIC)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
