//! Coalesced Reserves (`reserve_batch.lua` behind the per-bucket batcher) on real redis-server
//! processes: the flash sale sells exactly its units in fewer script calls than buyers (and
//! exactly its units with coalescing off); a reservation id repeated inside one batch or
//! across batches holds once; a batch cut off mid-flight (its connection dropped, its process
//! gone) loses or doubles no hold and its callers' retries are safe; the local sold-out marker
//! never grants and never outlives a release, a lapse or a restock; the relay publishes one
//! event per hold from a batch's one outbox entry.

mod common;
mod layout_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, reserved, script_calls_in_redis};
use fred::prelude::{ClientLike, KeysInterface, StreamsInterface, Value};
use futures::future::join_all;
use holdfast_inventory::keys::{self, BucketKeys};
use holdfast_inventory::reservations::ReserveAnswer;
use holdfast_inventory::scripts::{self, BatchItem, BatchMode, SingleReserve};
use holdfast_inventory::{InventoryError, Stock};
use holdfast_platform::admission::RateLimit;
use holdfast_platform::redis;
use holdfast_proto::events::v1::{InventoryEvent, inventory_event};
use holdfast_proto::inventory::v1::ReserveResponse;
use holdfast_testkit::RedisServer;
use prost::Message;

const UNITS: i64 = 100;
const BUYERS: usize = 2000;

async fn buyers(fx: &Fixture, sku: &str) -> Vec<(String, ReserveResponse)> {
    join_all((0..BUYERS).map(|i| async move {
        let rid = layout_support::rid(&format!("{sku}-b"), i);
        let answer = fx.reserve(&rid, &[(sku, 1)], 600).await.expect("reserve answers");
        (rid, answer)
    }))
    .await
}

/// Every buyer asks again with the same id: the same answer, nothing held twice.
async fn retries_change_nothing(fx: &Fixture, sku: &str, first: &[(String, ReserveResponse)]) {
    let again = join_all(
        first
            .iter()
            .map(|(rid, _)| async move { fx.reserve(rid, &[(sku, 1)], 600).await.expect("retry answers") }),
    )
    .await;
    for ((rid, before), after) in first.iter().zip(again) {
        assert_eq!(
            reserved(before),
            reserved(&after),
            "{rid} answered differently on retry"
        );
        if reserved(before) {
            assert_eq!(
                before.expires_at_unix_ms, after.expires_at_unix_ms,
                "{rid}: the first hold's expiry"
            );
        }
    }
    let level = fx.level(sku).await;
    assert_eq!(
        (level.reserved, level.available),
        (UNITS, 0),
        "retries held nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_two_thousand_buyers_one_hundred_units_exactly_one_hundred_win() {
    let fx = Fixture::standalone().await;
    fx.set_stock("BFLASH", UNITS, 1).await;
    let mut rx = common::events(&fx.bus);
    let before = script_calls_in_redis(fx.redis()).await;
    let results = buyers(&fx, "BFLASH").await;
    let calls = script_calls_in_redis(fx.redis()).await - before;
    let winners = results.iter().filter(|(_, a)| reserved(a)).count();
    assert_eq!(winners, UNITS as usize);
    for (_, answer) in results.iter().filter(|(_, a)| !reserved(a)) {
        assert_eq!(answer.shortages.len(), 1, "a loser is told what was short");
        assert_eq!(
            (answer.shortages[0].requested, answer.shortages[0].available),
            (1, 0)
        );
    }
    // Coalesced: the script calls (plus the relay's acks) are fewer than the buyers.
    assert!(
        calls < BUYERS as u64,
        "{calls} script calls for {BUYERS} buyers: nothing was batched"
    );
    let level = fx.level("BFLASH").await;
    assert_eq!(
        (level.on_hand, level.reserved, level.available, level.sold),
        (UNITS, UNITS, 0, 0)
    );
    assert_one_hold_per_winner(&fx, "BFLASH", &results).await;
    assert_one_reserved_event_per_winner(&mut rx, "BFLASH", &results).await;
    retries_change_nothing(&fx, "BFLASH", &results).await;
}

async fn assert_one_hold_per_winner(fx: &Fixture, sku: &str, results: &[(String, ReserveResponse)]) {
    let keys = BucketKeys::new(sku, 0);
    assert_eq!(
        layout_support::hold_count(fx.redis(), &keys).await,
        UNITS,
        "one hold per winner"
    );
    for (rid, answer) in results {
        let hold = layout_support::hold_of(fx.redis(), &keys, rid).await;
        assert_eq!(hold.map(|(qty, _)| qty), reserved(answer).then_some(1), "{rid}");
    }
}

/// The relay publishes one `reserved` event per winner, though a batch writes one outbox entry
/// for all its holds: each with its own id, in the order the holds were made (the bucket's
/// reserved count after each hold: 1, 2, ... UNITS), and none for a loser.
async fn assert_one_reserved_event_per_winner(
    rx: &mut tokio::sync::broadcast::Receiver<holdfast_platform::events::Event>,
    sku: &str,
    results: &[(String, ReserveResponse)],
) {
    let mut seen = Vec::new();
    let mut ids = HashSet::new();
    while seen.len() < UNITS as usize {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("bus open");
        let decoded = InventoryEvent::decode(event.payload.as_slice()).expect("decodes");
        if let Some(inventory_event::Event::Reserved(hold)) = decoded.event
            && hold.sku == sku
        {
            assert!(
                ids.insert(event.id.clone()),
                "event id {} published twice",
                event.id
            );
            seen.push((hold.reserved, hold.reservation_id, hold.quantity, hold.on_hand));
        }
    }
    let counts: Vec<i64> = seen.iter().map(|(reserved, ..)| *reserved).collect();
    assert_eq!(
        counts,
        (1..=UNITS).collect::<Vec<_>>(),
        "holds in order, each counted once"
    );
    let winners: HashSet<&str> = results
        .iter()
        .filter(|(_, answer)| reserved(answer))
        .map(|(rid, _)| rid.as_str())
        .collect();
    let published: HashSet<&str> = seen.iter().map(|(_, rid, ..)| rid.as_str()).collect();
    assert_eq!(published, winners, "one event per winner, none for a loser");
    assert!(
        seen.iter()
            .all(|(_, _, qty, on_hand)| (*qty, *on_hand) == (1, UNITS))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unbatched_two_thousand_buyers_one_hundred_units_exactly_one_hundred_win() {
    let mut options = common::fast();
    options.stock.reserve_batch = 1;
    let fx = Fixture::standalone_with(options).await;
    fx.set_stock("UFLASH", UNITS, 1).await;
    let mut rx = common::events(&fx.bus);
    let results = buyers(&fx, "UFLASH").await;
    assert_eq!(
        results.iter().filter(|(_, a)| reserved(a)).count(),
        UNITS as usize
    );
    let level = fx.level("UFLASH").await;
    assert_eq!(
        (level.on_hand, level.reserved, level.available),
        (UNITS, UNITS, 0)
    );
    assert_one_hold_per_winner(&fx, "UFLASH", &results).await;
    assert_one_reserved_event_per_winner(&mut rx, "UFLASH", &results).await;
    retries_change_nothing(&fx, "UFLASH", &results).await;
}

fn record_item(rid: &str, qty: i64) -> BatchItem {
    BatchItem {
        rid: rid.into(),
        qty,
        ttl_ms: 60_000,
        fingerprint: format!("fp-{rid}-{qty}"),
        lines: format!(r#"[["S",{qty},0]]"#),
        admit: None,
    }
}

const LIVE: BatchMode = BatchMode::Live {
    missing_is_empty: false,
};

#[tokio::test]
async fn a_rid_repeated_inside_one_batch_and_across_batches_holds_once() {
    let fx = Fixture::standalone().await;
    fx.set_stock("S", 5, 1).await;
    let client = fx.redis();
    let keys = BucketKeys::new("S", 0);
    let retention = (86_400_000, 600_000);
    let items = [
        record_item("a", 2),
        record_item("a", 2),
        record_item("h", 1),
        record_item("b", 3),
        record_item("c", 2),
        record_item("a", 2),
    ];
    let reply = scripts::reserve_batch(client, &keys, &items, retention, LIVE)
        .await
        .expect("batch");
    let answers = reply.outcomes;
    let SingleReserve::Reserved(a_expiry) = answers[0] else {
        panic!("a holds: {answers:?}");
    };
    assert!(
        matches!(&answers[1], SingleReserve::Existing(r) if r.state == "reserved" && r.expires_at == a_expiry),
        "a again in the batch: its first answer, {answers:?}"
    );
    assert!(matches!(answers[2], SingleReserve::Reserved(_)), "h holds 1");
    assert!(
        matches!(&answers[3], SingleReserve::Rejected(s) if s.contains(",3,2]")),
        "b wants 3 of the 2 left: {answers:?}"
    );
    assert!(
        matches!(answers[4], SingleReserve::Reserved(_)),
        "c takes the last 2"
    );
    assert!(matches!(&answers[5], SingleReserve::Existing(_)));
    assert_eq!(reply.available, Some(0), "the batch ends the bucket empty");
    let lapse = reply.lapse_in_ms.expect("holds lapse");
    assert!(
        (59_000..=60_000).contains(&lapse),
        "first hold lapses in {lapse} ms"
    );

    let events_before: u64 = client.xlen(keys.events()).await.expect("xlen");
    // Across batches: the same ids again, in another order, answer the same and hold nothing.
    let again = [record_item("c", 2), record_item("b", 3), record_item("a", 2)];
    let answers = scripts::reserve_batch(client, &keys, &again, retention, LIVE)
        .await
        .expect("batch")
        .outcomes;
    assert!(matches!(&answers[0], SingleReserve::Existing(r) if r.state == "reserved"));
    // A recorded refusal reads as Rejected (same shape); its shortage is the first answer's
    // (2 available then, 0 now).
    assert!(
        matches!(&answers[1], SingleReserve::Rejected(s) if s.contains(",3,2]")),
        "{answers:?}"
    );
    assert!(matches!(&answers[2], SingleReserve::Existing(r) if r.expires_at == a_expiry));
    let level = fx.level("S").await;
    assert_eq!((level.on_hand, level.reserved), (5, 5));
    for (rid, qty) in [("a", 2), ("h", 1), ("c", 2)] {
        assert_eq!(
            layout_support::hold_of(client, &keys, rid).await.map(|(q, _)| q),
            Some(qty)
        );
    }
    assert_eq!(layout_support::hold_count(client, &keys).await, 3);
    let events_after: u64 = client.xlen(keys.events()).await.expect("xlen");
    assert_eq!(events_after, events_before, "repeats write no event");

    // Sold-out mode never reads the bucket and never grants: first answers stand, new ids
    // are refused (recorded), even with units free.
    fx.set_stock("S", 9, 1).await;
    let answers = scripts::reserve_batch(
        client,
        &keys,
        &[record_item("a", 2), record_item("d", 1)],
        retention,
        BatchMode::SoldOut,
    )
    .await
    .expect("batch")
    .outcomes;
    assert!(matches!(&answers[0], SingleReserve::Existing(r) if r.expires_at == a_expiry));
    assert!(matches!(&answers[1], SingleReserve::Rejected(s) if s.contains(",1,0]")));
    assert_eq!(fx.level("S").await.reserved, 5, "sold-out mode held nothing");

    // Refused whole, nothing held: an id with a control character (the service never sends
    // one), which would corrupt the batch's outbox entry; and an item whose record would
    // outlive the longest a record is kept, checked before the first hold is written, not
    // halfway through the batch.
    let forever = BatchItem {
        ttl_ms: 36 * 3600 * 1000,
        ..record_item("f", 1)
    };
    for (bad, why) in [
        (record_item("e\tx", 1), "control characters"),
        (forever, "ttl_ms + retention_ms"),
    ] {
        let refused =
            scripts::reserve_batch(client, &keys, &[record_item("e", 1), bad], retention, LIVE).await;
        assert!(
            matches!(&refused, Err(error) if error.to_string().contains(why)),
            "{refused:?}"
        );
        assert_eq!(fx.level("S").await.reserved, 5, "the refused batch held nothing");
    }

    // A bucket Redis does not have answers -1 per item and is never written; told the SKU
    // was never stocked, the refusal is recorded like any other.
    let missing = BucketKeys::new("GONE", 0);
    let answers = scripts::reserve_batch(
        client,
        &missing,
        &[record_item("g", 1), record_item("g2", 1)],
        retention,
        LIVE,
    )
    .await
    .expect("batch")
    .outcomes;
    assert_eq!(answers, vec![SingleReserve::Missing, SingleReserve::Missing]);
    let exists: i64 = client
        .exists(vec![
            missing.counters(),
            missing.events(),
            keys::legacy_reservation("g"),
        ])
        .await
        .expect("exists");
    assert_eq!(exists, 0, "nothing written for a lost bucket");
    assert_eq!(
        layout_support::record_at(client, "g").await,
        None,
        "no record either"
    );
    let answers = scripts::reserve_batch(
        client,
        &missing,
        &[record_item("g", 1)],
        retention,
        BatchMode::Live {
            missing_is_empty: true,
        },
    )
    .await
    .expect("batch")
    .outcomes;
    assert!(matches!(&answers[0], SingleReserve::Rejected(_)), "{answers:?}");
    let exists: i64 = client.exists(missing.counters()).await.expect("exists");
    assert_eq!(exists, 0, "the bucket is still not created");
}

#[tokio::test]
async fn counted_items_are_admitted_in_order_in_the_call_and_a_limited_one_leaves_nothing() {
    let fx = Fixture::standalone().await;
    fx.set_stock("ADMB", 10, 1).await;
    let client = fx.redis();
    let keys = BucketKeys::new("ADMB", 0);
    let retention = (86_400_000, 600_000);
    // A burst of 2, then one a hundred seconds: of the counted items (a, c, d, e) the first
    // two pass; b is not counted (an admitted checkout's own Reserve) and passes too.
    let limit = Some(RateLimit {
        per_second: 0.01,
        burst: 2,
    });
    let counted = |rid: &str| BatchItem {
        admit: limit,
        ..record_item(rid, 1)
    };
    let items = [
        counted("a"),
        record_item("b", 1),
        counted("c"),
        counted("d"),
        counted("e"),
    ];
    let answers = scripts::reserve_batch(client, &keys, &items, retention, LIVE)
        .await
        .expect("batch")
        .outcomes;
    assert!(matches!(answers[0], SingleReserve::Reserved(_)), "{answers:?}");
    assert!(matches!(answers[1], SingleReserve::Reserved(_)), "{answers:?}");
    assert!(matches!(answers[2], SingleReserve::Reserved(_)), "{answers:?}");
    let SingleReserve::Limited(retry_ms) = answers[3] else {
        panic!("d is over the burst: {answers:?}");
    };
    assert!(
        (1..=100_000).contains(&retry_ms),
        "told to come back when the next unit of rate is due: {retry_ms} ms"
    );
    assert_eq!(
        answers[4],
        SingleReserve::Limited(retry_ms),
        "e with the same delay"
    );
    assert_eq!(fx.level("ADMB").await.reserved, 3, "only a, b and c hold");
    assert_eq!(
        layout_support::record_at(client, "d").await,
        None,
        "nothing recorded for d"
    );

    // The clock is the limiter's own: a separate admission_take.lua call sees the burst spent.
    let limiter = holdfast_platform::admission::Limiter::new(
        fx.inventory.stock.pool().clone(),
        holdfast_platform::admission::Operation::Reserve,
        holdfast_platform::admission::Defaults {
            per_sku: RateLimit {
                per_second: 0.01,
                burst: 2,
            },
            per_customer: RateLimit::UNLIMITED,
        },
    );
    limiter.load_scripts().await.expect("admission scripts");
    assert!(
        limiter.admit(&["ADMB"], None).await.retry_after.is_some(),
        "the batch spent the SKU's burst"
    );
    // d again, not counted this time: a new Reserve, it holds.
    let again = scripts::reserve_batch(client, &keys, &[record_item("d", 1)], retention, LIVE)
        .await
        .expect("batch")
        .outcomes;
    assert!(matches!(again[0], SingleReserve::Reserved(_)), "{again:?}");
}

async fn engine(redis: &RedisServer) -> (Stock, fred::prelude::Pool) {
    let pool = redis::connect(&redis.url(), 2).await.expect("connect");
    holdfast_inventory::scripts::load_all(pool.next())
        .await
        .expect("scripts");
    let (relay, _) = tokio::sync::mpsc::unbounded_channel();
    (Stock::new(pool.clone(), relay), pool)
}

/// Pauses Redis's writes, starts `n` Reserves on a fresh engine (they coalesce: one call in
/// flight at the paused Redis, the rest queued behind it), then that process goes away: its
/// callers are cancelled and, with `kill_connections`, its connections are killed too (a
/// process killed mid-batch). Whether the call in flight ran is not known to anyone.
async fn crash_mid_batch(
    redis: &RedisServer,
    side: &fred::prelude::Client,
    prefix: &str,
    n: usize,
    kill_connections: bool,
) {
    let (stock, pool) = engine(redis).await;
    let mut ids = Vec::new();
    for client in pool.clients() {
        let id: i64 = client
            .custom(fred::cmd!("CLIENT"), vec!["ID"])
            .await
            .expect("client id");
        ids.push(id.to_string());
    }
    // Cached now: the layout read must not wait behind the pause.
    stock.layout("CRASH").await.expect("layout");
    let stock = Arc::new(stock);
    let _: Value = side
        .custom(fred::cmd!("CLIENT"), vec!["PAUSE", "10000", "WRITE"])
        .await
        .expect("pause");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let stock = stock.clone();
            let rid = format!("{prefix}-{i}");
            tokio::spawn(async move { stock.reserve(&rid, &[("CRASH".into(), 1)], 600).await })
        })
        .collect();
    let tag = BucketKeys::new("CRASH", 0).tag;
    while stock.hot_path().waiting(&tag) < n {
        tokio::task::yield_now().await;
    }
    for task in &tasks {
        task.abort();
    }
    if kill_connections {
        for id in &ids {
            let _: Value = side
                .custom(fred::cmd!("CLIENT"), vec!["KILL", "ID", id.as_str()])
                .await
                .expect("kill");
        }
    }
    let _: Value = side
        .custom(fred::cmd!("CLIENT"), vec!["UNPAUSE"])
        .await
        .expect("unpause");
    for task in tasks {
        let _ = task.await;
    }
    drop(stock);
    let _ = pool.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_mid_flight_loses_or_doubles_no_hold_and_retries_are_safe() {
    const STOCK: i64 = 30;
    let redis = RedisServer::start().expect("redis-server");
    let (survivor, side_pool) = engine(&redis).await;
    let side = side_pool.next().clone();
    survivor.set_stock("CRASH", STOCK, 1).await.expect("stock");

    // Process A dies with its connection; process B's callers are cancelled (deadlines) but
    // its connection lives, so the call in flight may still run after the pause.
    crash_mid_batch(&redis, &side, "a", 40, true).await;
    crash_mid_batch(&redis, &side, "b", 40, false).await;

    // Every caller retries on a fresh process, twice, all at once.
    let line = vec![("CRASH".to_string(), 1)];
    let rids: Vec<String> = (0..40)
        .flat_map(|i| [format!("a-{i}"), format!("b-{i}")])
        .collect();
    let first = join_all(rids.iter().map(|rid| survivor.reserve(rid, &line, 600))).await;
    let second = join_all(rids.iter().map(|rid| survivor.reserve(rid, &line, 600))).await;
    let mut winners_of = Vec::new();
    for ((rid, a), b) in rids.iter().zip(first).zip(second) {
        let (a, b) = (a.expect("retry answers"), b.expect("retry answers"));
        assert_eq!(a, b, "{rid}: a retry gets the same answer");
        winners_of.push(matches!(a, ReserveAnswer::Reserved { .. }));
    }
    let winners = winners_of.iter().filter(|won| **won).count();
    assert_eq!(winners, STOCK as usize, "exactly the stock was granted");
    let level = survivor.level("CRASH").await.expect("level");
    assert_eq!((level.levels.on_hand, level.levels.reserved), (STOCK, STOCK));
    let keys = BucketKeys::new("CRASH", 0);
    assert_eq!(
        layout_support::hold_count(&side, &keys).await,
        STOCK,
        "one hold per winner, none lost or doubled"
    );
    for (rid, answer) in rids.iter().zip(&winners_of) {
        let hold = layout_support::hold_of(&side, &keys, rid).await;
        assert_eq!(hold.map(|(q, _)| q), answer.then_some(1), "{rid}");
    }
}

#[test]
fn batch_errors_are_retryable_statuses() {
    // A failed batch answers each caller UNAVAILABLE (retry), never INTERNAL.
    let status = tonic::Status::from(InventoryError::Redis(fred::error::Error::new(
        fred::error::ErrorKind::IO,
        "reserve batch interrupted before it answered",
    )));
    assert_eq!(status.code(), tonic::Code::Unavailable);
}
