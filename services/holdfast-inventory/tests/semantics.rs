//! What a caller of InventoryService sees: answers, idempotency, expiry on the Redis clock,
//! preconditions and validation, each against a real redis-server.

mod common;

use common::{Fixture, events, idle, next_event, reserved};
use holdfast_proto::events::v1::inventory_event::Event as Ev;
use holdfast_proto::inventory::v1::{AdjustStockRequest, ExtendRequest, SetStockRequest};
use tonic::Code;
use tonic_types::StatusExt;

fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[tokio::test]
async fn multi_line_reservation_is_all_or_nothing() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 5, 1).await;
    fx.set_stock("B", 1, 1).await;
    let answer = fx
        .reserve("r1", &[("A", 2), ("B", 2)], 600)
        .await
        .expect("answer");
    assert!(!reserved(&answer));
    assert_eq!(answer.shortages.len(), 1);
    assert_eq!(
        (
            answer.shortages[0].sku.as_str(),
            answer.shortages[0].requested,
            answer.shortages[0].available
        ),
        ("B", 2, 1)
    );
    assert_eq!(answer.expires_at_unix_ms, 0);
    assert_eq!(fx.level("A").await.reserved, 0, "A was held and given back");

    // The refusal is the answer for this id from now on, even though stock arrives.
    fx.set_stock("B", 10, 1).await;
    let again = fx
        .reserve("r1", &[("A", 2), ("B", 2)], 600)
        .await
        .expect("answer");
    assert_eq!(again, answer);
}

#[tokio::test]
async fn duplicate_skus_are_summed_before_checking() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 3, 1).await;
    let answer = fx
        .reserve("dup", &[("A", 2), ("A", 2)], 600)
        .await
        .expect("answer");
    assert!(!reserved(&answer), "2 + 2 > 3 although each line fits");
    assert_eq!(answer.shortages[0].requested, 4);
    let ok = fx
        .reserve("dup2", &[("A", 1), ("A", 2)], 600)
        .await
        .expect("answer");
    assert!(reserved(&ok));
    assert_eq!(fx.level("A").await.reserved, 3);
}

#[tokio::test]
async fn repeats_change_nothing_the_second_time() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 10, 1).await;
    let first = fx.reserve("r", &[("A", 4)], 600).await.expect("reserve");
    let second = fx.reserve("r", &[("A", 4)], 600).await.expect("repeat");
    assert_eq!(first, second);
    assert_eq!(fx.level("A").await.reserved, 4);

    // Same id, different lines: refused rather than silently answered with the old hold.
    let conflict = fx.reserve("r", &[("A", 5)], 600).await.expect_err("conflict");
    assert_eq!(conflict.code(), Code::AlreadyExists);

    fx.commit("r").await.expect("commit");
    fx.commit("r").await.expect("commit again is fine");
    let level = fx.level("A").await;
    assert_eq!((level.on_hand, level.reserved, level.sold), (6, 0, 4));
    let release = fx
        .release("r")
        .await
        .expect_err("a committed reservation cannot be released");
    assert_eq!(release.code(), Code::FailedPrecondition);

    let mut client = fx.client.clone();
    let adjust = |delta| AdjustStockRequest {
        sku: "A".into(),
        delta,
        adjustment_id: "count-7".into(),
    };
    assert_eq!(
        client
            .adjust_stock(adjust(3))
            .await
            .expect("adjust")
            .into_inner()
            .on_hand,
        9
    );
    assert_eq!(
        client
            .adjust_stock(adjust(3))
            .await
            .expect("repeat")
            .into_inner()
            .on_hand,
        9
    );
    let level = fx.level("A").await;
    assert_eq!(
        level.on_hand + level.sold,
        13,
        "on_hand + sold moved only by the adjustment"
    );
}

#[tokio::test]
async fn release_gives_units_back_and_is_idempotent() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 2, 1).await;
    fx.reserve("r", &[("A", 2)], 600).await.expect("reserve");
    assert_eq!(fx.level("A").await.available, 0);
    assert_eq!(fx.release("r").await.expect("release").released_units, 2);
    assert_eq!(fx.release("r").await.expect("again").released_units, 0);
    assert_eq!(fx.release("never-made").await.expect("unknown").released_units, 0);
    assert_eq!(fx.level("A").await.available, 2);
    let commit = fx.commit("r").await.expect_err("released");
    assert_eq!(commit.code(), Code::FailedPrecondition);
    let unknown = fx.commit("never-made").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn expired_hold_stops_counting_on_redis_time_without_any_sweeper() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 5, 1).await;
    let answer = fx.reserve("short", &[("A", 3)], 1).await.expect("reserve");
    assert!(reserved(&answer));
    let now = fx.redis_now_ms().await;
    assert!(
        (answer.expires_at_unix_ms - now - 1000).abs() < 200,
        "expiry is Redis time + 1 s"
    );
    assert_eq!(fx.level("A").await.reserved, 3);

    fx.wait_redis_time_past(answer.expires_at_unix_ms).await;
    let level = fx.level("A").await;
    assert_eq!(
        (level.reserved, level.available),
        (0, 5),
        "lapsed hold no longer counts"
    );
    // Another buyer can have the units although nothing swept them.
    assert!(reserved(
        &fx.reserve("next", &[("A", 5)], 600).await.expect("reserve")
    ));
    let late = fx.commit("short").await.expect_err("expired");
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(fx.level("A").await.sold, 0);
}

#[tokio::test]
async fn sweeper_frees_lapsed_holds_and_emits_expired_events() {
    sweeper_frees_a_lapsed_hold(Fixture::standalone().await).await;
}

/// The same on a 3-node Redis Cluster: the sweeper's index shards live on every node, and one
/// pass reads them all.
#[tokio::test]
async fn sweeper_frees_lapsed_holds_on_a_cluster() {
    sweeper_frees_a_lapsed_hold(Fixture::cluster().await).await;
}

async fn sweeper_frees_a_lapsed_hold(fx: Fixture) {
    let mut rx = events(&fx.bus);
    fx.set_stock("A", 4, 1).await;
    let answer = fx.reserve("lapse", &[("A", 4)], 1).await.expect("reserve");
    assert!(reserved(&answer));
    let reserved_event = next_event(&mut rx, |e| matches!(e, Ev::Reserved(_))).await;
    let Ev::Reserved(r) = reserved_event else {
        unreachable!()
    };
    assert_eq!(
        (r.sku.as_str(), r.reservation_id.as_str(), r.quantity),
        ("A", "lapse", 4)
    );

    let expired = next_event(&mut rx, |e| matches!(e, Ev::Expired(_))).await;
    let Ev::Expired(e) = expired else { unreachable!() };
    assert_eq!(
        (e.reservation_id.as_str(), e.quantity, e.reserved),
        ("lapse", 4, 0)
    );
    assert!(
        e.occurred_at_unix_ms >= answer.expires_at_unix_ms,
        "freed after its expiry, not before"
    );
    // The sweeper wrote the hold out of Redis itself, not just out of the count.
    let holds: i64 = fred::prelude::SortedSetsInterface::zcard(fx.redis(), "inv:{A}:holds")
        .await
        .expect("zcard");
    assert_eq!(holds, 0);
    assert_eq!(
        fx.commit("lapse").await.expect_err("expired").code(),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn extend_keeps_a_hold_alive_and_refuses_dead_ones() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 1, 1).await;
    let first = fx.reserve("pay", &[("A", 1)], 1).await.expect("reserve");
    let extended = fx
        .client
        .clone()
        .extend(ExtendRequest {
            reservation_id: "pay".into(),
            ttl_seconds: 60,
        })
        .await
        .expect("extend")
        .into_inner();
    assert!(extended.expires_at_unix_ms > first.expires_at_unix_ms + 50_000);
    fx.wait_redis_time_past(first.expires_at_unix_ms).await;
    assert_eq!(
        fx.level("A").await.reserved,
        1,
        "still held past the original expiry"
    );
    fx.commit("pay").await.expect("commit after extend");

    let dead = fx
        .client
        .clone()
        .extend(ExtendRequest {
            reservation_id: "pay".into(),
            ttl_seconds: 60,
        })
        .await
        .expect_err("committed");
    assert_eq!(dead.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn stock_never_goes_below_what_is_held() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 10, 1).await;
    fx.reserve("r", &[("A", 7)], 600).await.expect("reserve");
    let mut client = fx.client.clone();
    let set = client
        .set_stock(SetStockRequest {
            sku: "A".into(),
            on_hand: 6,
            buckets: 1,
        })
        .await
        .expect_err("below held");
    assert_eq!(set.code(), Code::FailedPrecondition);
    let adjust = client
        .adjust_stock(AdjustStockRequest {
            sku: "A".into(),
            delta: -4,
            adjustment_id: "shrink".into(),
        })
        .await
        .expect_err("below held");
    assert_eq!(adjust.code(), Code::FailedPrecondition);
    let rebucket = client
        .set_stock(SetStockRequest {
            sku: "A".into(),
            on_hand: 10,
            buckets: 4,
        })
        .await
        .expect_err("bucket change with live holds");
    assert_eq!(rebucket.code(), Code::FailedPrecondition);
    let level = fx.level("A").await;
    assert_eq!(
        (level.on_hand, level.reserved, level.buckets),
        (10, 7, 1),
        "refusals changed nothing"
    );
}

#[tokio::test]
async fn hot_sku_buckets_sum_to_the_set_stock_and_rebalance_when_dry() {
    let fx = Fixture::standalone().await;
    let set = fx.set_stock("HOT", 10, 4).await;
    assert_eq!((set.on_hand, set.available, set.buckets), (10, 10, 4));
    // A reservation bigger than any one bucket (each has 2 or 3) still succeeds: the units
    // are gathered into its home bucket first.
    let big = fx.reserve("big", &[("HOT", 8)], 600).await.expect("answer");
    assert!(reserved(&big), "{big:?}");
    let level = fx.level("HOT").await;
    assert_eq!((level.on_hand, level.reserved, level.available), (10, 8, 2));
    fx.commit("big").await.expect("commit");
    let level = fx.level("HOT").await;
    assert_eq!(
        (level.on_hand, level.sold),
        (2, 8),
        "on_hand + sold conserved across buckets"
    );

    // Shrinking back to one bucket keeps every sold unit in the sum.
    let plain = fx.set_stock("HOT", 5, 1).await;
    assert_eq!((plain.on_hand, plain.sold, plain.buckets), (5, 8, 1));
}

#[tokio::test]
async fn every_bad_field_is_invalid_argument_with_details() {
    let fx = Fixture::standalone().await;
    let err = fx
        .reserve("", &[("a{b", 0), ("ok", 1_000_001)], 3601)
        .await
        .expect_err("invalid");
    assert_eq!(
        bad_fields(&err),
        [
            "reservation_id",
            "ttl_seconds",
            "lines[0].sku",
            "lines[0].quantity",
            "lines[1].quantity"
        ]
    );
    let many: Vec<(&str, i64)> = vec![("A", 1); 101];
    assert_eq!(
        bad_fields(&fx.reserve("r", &many, 60).await.expect_err("too many")),
        ["lines"]
    );
    assert_eq!(
        bad_fields(&fx.reserve("r", &[], 60).await.expect_err("no lines")),
        ["lines"]
    );
    assert_eq!(
        bad_fields(&fx.reserve("r", &[("a b", 1)], 60).await.expect_err("space")),
        ["lines[0].sku"]
    );
    assert_eq!(
        bad_fields(&fx.reserve("r", &[("a\u{1}", 1)], 60).await.expect_err("control")),
        ["lines[0].sku"]
    );
    let long = "x".repeat(65);
    assert_eq!(
        bad_fields(&fx.reserve("r", &[(&long, 1)], 60).await.expect_err("long")),
        ["lines[0].sku"]
    );

    let mut client = fx.client.clone();
    let set = client
        .set_stock(SetStockRequest {
            sku: "}".into(),
            on_hand: -1,
            buckets: 65,
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad_fields(&set), ["sku", "on_hand", "buckets"]);
    let adjust = client
        .adjust_stock(AdjustStockRequest {
            sku: "A".into(),
            delta: 0,
            adjustment_id: String::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad_fields(&adjust), ["adjustment_id", "delta"]);
    assert_eq!(
        bad_fields(&fx.commit("").await.expect_err("empty id")),
        ["reservation_id"]
    );
    // Nothing was written by any of them.
    let keys: Vec<String> = fred::prelude::ClientLike::custom(fx.redis(), fred::cmd!("KEYS"), vec!["inv:*"])
        .await
        .expect("keys");
    assert!(keys.is_empty(), "{keys:?}");
}
