//! Crashes and restarts converge: Redis restarted from its append-only file, a process that
//! died between a script and its publish, mid-reserve, mid-commit, or mid-transfer.

mod common;
mod layout_support;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, events, idle, next_event, reserved};
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::{scripts, stock::Stock};
use holdfast_proto::events::v1::inventory_event::Event as Ev;

/// Retries `call` until it succeeds (bounded): what a client does while Redis restarts.
async fn eventually<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(
                    status.code(),
                    tonic::Code::Unavailable,
                    "only unavailability is retried: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("still failing after 15s: {status:?}"),
        }
    }
}

#[tokio::test]
async fn redis_restart_keeps_holds_and_counts_and_the_service_reconnects() {
    let mut fx = Fixture::standalone().await;
    fx.set_stock("A", 10, 1).await;
    fx.set_stock("HOT", 8, 4).await;
    assert!(reserved(
        &fx.reserve("held", &[("A", 3), ("HOT", 2)], 600)
            .await
            .expect("reserve")
    ));
    assert!(reserved(
        &fx.reserve("sold", &[("A", 2)], 600).await.expect("reserve")
    ));
    fx.commit("sold").await.expect("commit");
    let before = (fx.level("A").await, fx.level("HOT").await);

    fx.standalone_redis().restart().expect("restart redis");

    // Scripts are gone from the restarted server's cache; the first call reloads them.
    let after_a = eventually(|| {
        let mut client = fx.client.clone();
        async move {
            client
                .get_availability(holdfast_proto::inventory::v1::GetAvailabilityRequest {
                    skus: vec!["A".into()],
                })
                .await
                .map(|r| r.into_inner().levels.remove(0))
        }
    })
    .await;
    assert_eq!(after_a, before.0, "counts survive the restart");
    assert_eq!(fx.level("HOT").await, before.1);
    eventually(|| fx.commit("held")).await;
    let level = fx.level("A").await;
    assert_eq!(
        (level.on_hand, level.reserved, level.sold),
        (5, 0, 5),
        "the surviving hold committed"
    );
    assert!(reserved(
        &fx.reserve("new", &[("A", 5)], 600)
            .await
            .expect("reserve after restart")
    ));
}

#[tokio::test]
async fn outbox_entries_left_by_a_dead_process_are_published_on_restart() {
    let fx = Fixture::standalone_with(idle()).await;
    // A process whose relay never ran: its scripts wrote the outbox, nothing published it.
    let (dead_relay, _) = tokio::sync::mpsc::unbounded_channel();
    let crashed = Stock::new(fred_pool(&fx).await, dead_relay);
    let set = scripts::set_stock(crashed.client(), &BucketKeys::new("ORPHAN", 0), 5, 1, "")
        .await
        .expect("set");
    assert!(matches!(set, scripts::StockSet::Set(_)), "ok");
    let hold = scripts::reserve(
        crashed.client(),
        &BucketKeys::new("ORPHAN", 0),
        "lost-event",
        2,
        60_000,
    )
    .await
    .expect("reserve");
    assert!(matches!(hold, scripts::Hold::Held { .. }));
    drop(crashed);

    // A new process starts on the same Redis: its relay finds the leftovers at once.
    let mut rx = events(&fx.bus);
    let restarted = holdfast_inventory::start(
        fred_pool(&fx).await,
        Arc::new(fx.bus.clone()),
        "test",
        common::fast(),
    )
    .await
    .expect("start");
    let event = next_event(
        &mut rx,
        |e| matches!(e, Ev::Reserved(r) if r.reservation_id == "lost-event"),
    )
    .await;
    let Ev::Reserved(r) = event else { unreachable!() };
    assert_eq!((r.sku.as_str(), r.quantity), ("ORPHAN", 2));
    drop(restarted);
}

async fn fred_pool(fx: &Fixture) -> fred::prelude::Pool {
    let port = match &fx.engine {
        common::Engine::Standalone(redis) => redis.port(),
        common::Engine::Cluster(_) => unreachable!(),
    };
    holdfast_platform::redis::connect(
        &holdfast_platform::RedisUrl::Standalone(format!("redis://127.0.0.1:{port}")),
        1,
    )
    .await
    .expect("pool")
}

#[tokio::test]
async fn a_retry_takes_over_a_dead_reserve_without_holding_twice() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 10, 1).await;
    fx.set_stock("B", 10, 1).await;
    // The dead process claimed the record and held line A, then died before line B.
    let lines = [("A".to_string(), 3), ("B".to_string(), 4)];
    let fp = holdfast_inventory::reservations::fingerprint(&lines, 600);
    let client = fx.redis();
    let claim = scripts::reservation_claim(client, "crash", &fp, "[]", (5_000, 600_000), "dead")
        .await
        .expect("claim");
    assert_eq!(claim, scripts::Claim::Claimed(None));
    scripts::reserve(client, &BucketKeys::new("A", 0), "crash", 3, 600_000)
        .await
        .expect("hold A");
    // Its lease lapses (as if 5 s had passed).
    layout_support::set_record_field(client, "crash", "lease", "0").await;

    let answer = fx
        .reserve("crash", &[("A", 3), ("B", 4)], 600)
        .await
        .expect("retry");
    assert!(reserved(&answer));
    assert_eq!(
        (fx.level("A").await.reserved, fx.level("B").await.reserved),
        (3, 4),
        "no double hold"
    );
}

#[tokio::test]
async fn an_extend_of_a_reserve_cut_short_answers_aborted_until_a_retried_reserve_finishes_it() {
    // A checkout holding its lines again after a Redis loss (orders' hold_again) whose Reserve
    // died mid-way leaves the record pending. Extend must not read that as a dead hold
    // (FAILED_PRECONDITION made the saga give the checkout up): it answers ABORTED, and the
    // saga's next Reserve of the id takes the claim over.
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 10, 1).await;
    let lines = [("A".to_string(), 3)];
    let fp = holdfast_inventory::reservations::fingerprint(&lines, 600);
    let client = fx.redis();
    let claim = scripts::reservation_claim(client, "cut", &fp, "[]", (5_000, 600_000), "dead")
        .await
        .expect("claim");
    assert_eq!(claim, scripts::Claim::Claimed(None));

    let refused = fx
        .client
        .clone()
        .extend(holdfast_proto::inventory::v1::ExtendRequest {
            reservation_id: "cut".into(),
            ttl_seconds: 600,
        })
        .await
        .expect_err("nothing is held yet");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");

    layout_support::set_record_field(client, "cut", "lease", "0").await;
    assert!(reserved(
        &fx.reserve("cut", &[("A", 3)], 600).await.expect("retry")
    ));
    fx.client
        .clone()
        .extend(holdfast_proto::inventory::v1::ExtendRequest {
            reservation_id: "cut".into(),
            ttl_seconds: 600,
        })
        .await
        .expect("extended once held");
    assert_eq!(fx.level("A").await.reserved, 3);
}

#[tokio::test]
async fn a_retry_finishes_a_commit_that_died_halfway() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 10, 1).await;
    fx.set_stock("B", 10, 1).await;
    assert!(reserved(
        &fx.reserve("half", &[("A", 1), ("B", 2)], 600)
            .await
            .expect("reserve")
    ));
    // The dead committer got as far as committing line A.
    let client = fx.redis();
    let step = |from: &'static str, to: &'static str| scripts::Transition {
        from,
        to,
        retention_ms: 600_000,
        ..Default::default()
    };
    scripts::reservation_transition(client, "half", step("reserved", "preparing"))
        .await
        .expect("t");
    for (sku, _) in [("A", 1), ("B", 2)] {
        scripts::extend(client, &BucketKeys::new(sku, 0), "half", 86_400_000)
            .await
            .expect("extend");
    }
    scripts::reservation_transition(client, "half", step("preparing", "committing"))
        .await
        .expect("t");
    scripts::commit(client, &BucketKeys::new("A", 0), "half")
        .await
        .expect("commit A");

    fx.commit("half").await.expect("retry completes the commit");
    let (a, b) = (fx.level("A").await, fx.level("B").await);
    assert_eq!(
        (a.sold, a.reserved, b.sold, b.reserved),
        (1, 0, 2, 0),
        "each line sold exactly once"
    );
}

#[tokio::test]
async fn rebalancer_finishes_half_done_transfers_and_refills_dry_buckets() {
    let fx = Fixture::standalone().await;
    let mut rx = events(&fx.bus);
    fx.set_stock("HOT", 40, 4).await;
    // A transfer taken from bucket 1 whose give never happened (the process died).
    let moved = scripts::rebalance_take(fx.redis(), &BucketKeys::new("HOT", 1), "xfer-dead", 2, 3)
        .await
        .expect("take");
    assert_eq!(moved, 2);
    assert_eq!(fx.level("HOT").await.on_hand, 38, "in flight: counted nowhere");

    let given = next_event(
        &mut rx,
        |e| matches!(e, Ev::Rebalanced(r) if r.transfer_id == "xfer-dead" && r.quantity > 0),
    )
    .await;
    let Ev::Rebalanced(r) = given else { unreachable!() };
    assert_eq!(r.bucket_index, 3);
    assert_eq!(
        fx.level("HOT").await.on_hand,
        40,
        "the re-driven give restored the units"
    );

    // Empty one bucket completely; the rebalancer refills it from the others.
    let dry = BucketKeys::new("HOT", 2);
    let free = scripts::availability(fx.redis(), &dry)
        .await
        .expect("level")
        .levels
        .on_hand;
    assert!(matches!(
        scripts::reserve(fx.redis(), &dry, "drain", free, 600_000)
            .await
            .expect("reserve"),
        scripts::Hold::Held { .. }
    ));
    let refill = next_event(
        &mut rx,
        |e| matches!(e, Ev::Rebalanced(r) if r.bucket_index == 2 && r.quantity > 0),
    )
    .await;
    let Ev::Rebalanced(r) = refill else { unreachable!() };
    assert!(r.on_hand > free, "bucket 2 received units beyond its holds");
    let level = fx.level("HOT").await;
    assert_eq!(
        (level.on_hand, level.reserved),
        (40, free),
        "rebalancing never changes the total"
    );
}
