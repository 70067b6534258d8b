//! The local sold-out marker on a real redis-server: a sold-out SKU is answered from it
//! (refusals recorded, repeats answered as first), it never grants, and it never outlives a
//! change that frees units: a release, a hold that lapses, a restock (SetStock, AdjustStock).

mod common;

use std::sync::Arc;

use common::{Fixture, reserved};
use futures::future::join_all;
use holdfast_inventory::reservations::ReserveAnswer;
use holdfast_proto::inventory::v1::AdjustStockRequest;

/// Short-circuited refusals so far (the marker's metric, process-wide).
fn short_circuits() -> u64 {
    prometheus::gather()
        .iter()
        .find(|m| m.name() == "holdfast_inventory_sold_out_short_circuits_total")
        .map_or(0, |m| m.get_metric()[0].get_counter().get_value() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unit_released_after_sold_out_goes_to_the_next_reserve() {
    let fx = Fixture::standalone().await;
    let stock = fx.inventory.stock.clone();
    fx.set_stock("REL-MARK", 2, 1).await;
    for rid in ["w-0", "w-1"] {
        assert!(reserved(
            &fx.reserve(rid, &[("REL-MARK", 1)], 600).await.expect("answer")
        ));
    }
    assert!(
        stock.locally_sold_out("REL-MARK"),
        "the batch that emptied the bucket marks it"
    );
    let before = short_circuits();
    let refused = fx
        .reserve("late-0", &[("REL-MARK", 1)], 600)
        .await
        .expect("answer");
    assert!(!reserved(&refused));
    assert_eq!(refused.shortages[0].available, 0);
    assert!(short_circuits() > before, "answered from the marker");
    // A repeat of a winner is still its first answer while the marker stands.
    let again = fx.reserve("w-1", &[("REL-MARK", 1)], 600).await.expect("answer");
    assert!(reserved(&again), "a winner's retry is not refused by the marker");

    assert_eq!(fx.release("w-0").await.expect("release").released_units, 1);
    assert!(!stock.locally_sold_out("REL-MARK"), "a release drops the marker");
    let next = fx.reserve("next", &[("REL-MARK", 1)], 600).await.expect("answer");
    assert!(reserved(&next), "the released unit is granted at once: {next:?}");
    // The refusal given while sold out stays that id's answer.
    let refused_again = fx
        .reserve("late-0", &[("REL-MARK", 1)], 600)
        .await
        .expect("answer");
    assert!(!reserved(&refused_again));
    let level = fx.level("REL-MARK").await;
    assert_eq!((level.on_hand, level.reserved), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_marker_never_outlives_a_hold_that_lapses() {
    // No sweeper: only the marker's own bound (the first hold's lapse) can end it in time.
    let fx = Fixture::standalone_with(common::idle()).await;
    let stock = fx.inventory.stock.clone();
    fx.set_stock("LAPSE-MARK", 1, 1).await;
    let held = fx
        .reserve("short", &[("LAPSE-MARK", 1)], 1)
        .await
        .expect("answer");
    assert!(reserved(&held));
    assert!(!reserved(
        &fx.reserve("l-0", &[("LAPSE-MARK", 1)], 600)
            .await
            .expect("answer")
    ));
    // 2-unit Reserves never fit: they keep setting the marker afresh up to the lapse.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let (stock, stop) = (stock.clone(), stop.clone());
        tokio::spawn(async move {
            let line = vec![("LAPSE-MARK".to_string(), 2)];
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = stock.reserve(&format!("two-{i}"), &line, 600).await;
                assert!(matches!(answer, Ok(ReserveAnswer::Insufficient(_))), "{answer:?}");
                i += 1;
            }
        })
    };
    fx.wait_redis_time_past(held.expires_at_unix_ms).await;
    assert!(
        !stock.locally_sold_out("LAPSE-MARK"),
        "the marker ended with the hold"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    storm.await.expect("storm");
    let next = fx
        .reserve("l-1", &[("LAPSE-MARK", 1)], 600)
        .await
        .expect("answer");
    assert!(reserved(&next), "the lapsed unit is granted: {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sold_out_marker_never_blocks_a_grant_after_a_restock() {
    let fx = Fixture::standalone().await;
    let stock = fx.inventory.stock.clone();
    fx.set_stock("MARK", 1, 1).await;
    assert!(reserved(
        &fx.reserve("m-0", &[("MARK", 1)], 600).await.expect("answer")
    ));
    let refused = fx.reserve("m-1", &[("MARK", 1)], 600).await.expect("answer");
    assert!(!reserved(&refused));
    assert!(stock.locally_sold_out("MARK"), "an empty bucket sets the marker");
    // A refusal from the marker is still the answer to its id.
    let again = fx.reserve("m-1", &[("MARK", 1)], 600).await.expect("answer");
    assert!(!reserved(&again));

    // A storm of 2-unit Reserves keeps the marker fresh and batches in flight, while each
    // restock adds one unit: every restock's unit goes to the 1-unit Reserve right after it.
    let storm = {
        let stock = stock.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut i = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let line = vec![("MARK".to_string(), 2)];
                let rids: Vec<String> = (0..16).map(|k| format!("storm-{i}-{k}")).collect();
                i += 1;
                let answers = join_all(rids.iter().map(|rid| stock.reserve(rid, &line, 600))).await;
                for answer in answers {
                    assert!(
                        matches!(answer, Ok(ReserveAnswer::Insufficient(_))),
                        "2 units never fit: {answer:?}"
                    );
                }
            }
        });
        (stop, handle)
    };
    let mut client = fx.client.clone();
    for round in 0..30 {
        let level = fx.level("MARK").await;
        assert_eq!(level.available, 0);
        if round % 2 == 0 {
            fx.set_stock("MARK", level.on_hand + 1, 1).await;
        } else {
            client
                .adjust_stock(AdjustStockRequest {
                    sku: "MARK".into(),
                    delta: 1,
                    adjustment_id: format!("restock-{round}"),
                })
                .await
                .expect("adjust");
        }
        let answer = fx
            .reserve(&format!("after-{round}"), &[("MARK", 1)], 600)
            .await
            .expect("answer");
        assert!(
            reserved(&answer),
            "round {round}: the restocked unit is granted, {answer:?}"
        );
        // Sold out again: the next 1-unit Reserve is refused (and may set the marker).
        let answer = fx
            .reserve(&format!("late-{round}"), &[("MARK", 1)], 600)
            .await
            .expect("answer");
        assert!(!reserved(&answer));
    }
    storm.0.store(true, std::sync::atomic::Ordering::Relaxed);
    storm.1.await.expect("storm");
    let level = fx.level("MARK").await;
    assert_eq!(
        (level.reserved, level.on_hand),
        (31, 31),
        "one per restock plus the first"
    );
}
