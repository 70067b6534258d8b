//! Hot-SKU bucket transfers never create or lose units, even while an admin SetStock runs at
//! the same time, on a real redis-server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Fixture, idle};
use fred::prelude::HashesInterface;
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::scripts;

const BUCKETS: u32 = 4;

async fn total_on_hand(fx: &Fixture, sku: &str) -> i64 {
    let mut total = 0;
    for i in 0..BUCKETS {
        total += scripts::availability(fx.redis(), &BucketKeys::new(sku, i))
            .await
            .expect("level")
            .levels
            .on_hand;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_stock_racing_transfers_always_lands_on_its_target() {
    let fx = Fixture::standalone_with(idle()).await;
    let stock = fx.inventory.stock.clone();
    stock.set_stock("HOT", 400, BUCKETS).await.expect("set");
    for round in 0..60_i64 {
        let stop = Arc::new(AtomicBool::new(false));
        // Transfers between every pair of buckets, as Reserve's gather and the rebalancer do.
        let movers: Vec<_> = (0..2)
            .map(|m| {
                let (stock, stop) = (stock.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut step = m;
                    while !stop.load(Ordering::Relaxed) {
                        let from = step % BUCKETS;
                        let to = (step + 1 + m) % BUCKETS;
                        if from != to {
                            stock.transfer("HOT", from, to, 3).await.expect("transfer");
                        }
                        step += 1;
                    }
                })
            })
            .collect();
        let target = 400 + round;
        let level = loop {
            match stock.set_stock("HOT", target, BUCKETS).await {
                Ok(level) => break level,
                // Refusing while transfers keep the buckets moving is allowed; minting is not.
                Err(holdfast_inventory::InventoryError::Busy(_)) => continue,
                Err(other) => panic!("set_stock: {other}"),
            }
        };
        stop.store(true, Ordering::Relaxed);
        for mover in movers {
            mover.await.expect("mover");
        }
        // Every transfer finished (take, give, forget): nothing is in flight.
        for i in 0..BUCKETS {
            let pending: i64 = fx
                .redis()
                .hlen(BucketKeys::new("HOT", i).transfers_out())
                .await
                .expect("hlen");
            assert_eq!(pending, 0, "round {round}: bucket {i} has transfers in flight");
        }
        assert!(
            level.levels.on_hand <= target,
            "round {round}: SetStock answered {}",
            level.levels.on_hand
        );
        assert_eq!(
            total_on_hand(&fx, "HOT").await,
            target,
            "round {round}: the buckets must sum to what SetStock set"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_transfer_of_a_sku_no_longer_hot_is_still_redriven() {
    let fx = Fixture::standalone().await;
    fx.set_stock("WAS-HOT", 40, BUCKETS).await;
    // A transfer taken, then the process died; the SKU has left the hot set since.
    let moved = scripts::rebalance_take(fx.redis(), &BucketKeys::new("WAS-HOT", 1), "xfer-lost", 2, 3)
        .await
        .expect("take");
    assert_eq!(moved, 2);
    let _: i64 = fred::prelude::SetsInterface::srem(fx.redis(), "inv:hot", "WAS-HOT")
        .await
        .expect("not hot");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while total_on_hand(&fx, "WAS-HOT").await != 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer was never re-driven: its units are lost"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_redrive_never_gives_a_transfer_twice() {
    let fx = Fixture::standalone_with(idle()).await;
    let stock = &fx.inventory.stock;
    stock.set_stock("OLD", 40, BUCKETS).await.expect("set");
    let (source, target) = (BucketKeys::new("OLD", 1), BucketKeys::new("OLD", 3));
    let now = fx.redis_now_ms().await;
    let day = 24 * 3600 * 1000;
    // Two transfers whose give landed long ago but whose source never forgot them (the
    // process died before HDEL): one two days ago, one eight days ago.
    for (id, age) in [("two-days", 2 * day), ("eight-days", 8 * day)] {
        let _: i64 = fx
            .redis()
            .hset(source.transfers_out(), (id, format!("3:2:{}", now - age)))
            .await
            .expect("pending");
        let _: i64 = fred::prelude::SortedSetsInterface::zadd(
            fx.redis(),
            target.transfers_in(),
            None,
            None,
            false,
            false,
            ((now - age) as f64, id),
        )
        .await
        .expect("received");
    }
    stock
        .redrive_transfers("OLD", BUCKETS, false)
        .await
        .expect("redrive");
    assert_eq!(total_on_hand(&fx, "OLD").await, 40, "nothing given twice");
    let left: Vec<String> = fx.redis().hkeys(source.transfers_out()).await.expect("hkeys");
    assert_eq!(
        left,
        vec!["eight-days".to_string()],
        "the stale one is left for a human"
    );
}
