//! Answers at the edges: extreme request values never panic, deterministic script errors never
//! invite a retry, and refusals do not park keys in Redis for a day.

mod common;
mod layout_support;

use common::{Fixture, reserved};
use fred::prelude::SortedSetsInterface;
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::reservations::REJECTED_RETENTION;
use holdfast_inventory::scripts;
use holdfast_proto::inventory::v1::AdjustStockRequest;
use tonic::Code;

#[tokio::test]
async fn adjust_stock_with_extreme_deltas_is_invalid_argument_not_a_panic() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 5, 1).await;
    for delta in [
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        -1_000_000_000_001,
        1_000_000_000_001,
    ] {
        let status = fx
            .client
            .clone()
            .adjust_stock(AdjustStockRequest {
                sku: "A".into(),
                delta,
                adjustment_id: format!("adj-{delta}"),
            })
            .await
            .expect_err("out of range");
        assert_eq!(status.code(), Code::InvalidArgument, "delta {delta}: {status:?}");
    }
    assert_eq!(fx.level("A").await.on_hand, 5, "nothing applied");
}

#[tokio::test]
async fn a_script_argument_error_is_internal_never_unavailable() {
    let fx = Fixture::standalone().await;
    // A deterministic refusal by the script itself (delta 0 passes no validation in Lua).
    let error = scripts::adjust_stock(fx.redis(), &BucketKeys::new("A", 0), "adj-0", 0, 0)
        .await
        .expect_err("the script refuses delta 0");
    let status = tonic::Status::from(error);
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        !status.message().contains("retry"),
        "a deterministic error must not invite a retry: {status:?}"
    );
}

#[tokio::test]
async fn a_refused_reservation_keeps_its_record_only_as_long_as_a_replay_needs() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 1, 1).await;
    fx.set_stock("B", 1, 1).await;
    // The single-script path (one line) and the multi-step path (two lines).
    let single = fx.reserve("no-1", &[("A", 5)], 600).await.expect("answer");
    let multi = fx
        .reserve("no-2", &[("A", 1), ("B", 5)], 600)
        .await
        .expect("answer");
    assert!(!reserved(&single) && !reserved(&multi));
    let limit = i64::try_from(REJECTED_RETENTION.as_millis()).expect("fits");
    assert!(
        limit <= 15 * 60 * 1000,
        "a refusal is replayable for minutes, not a day"
    );
    // Refusals live in 5-minute generation hashes: kept their retention, at most 5 min longer.
    let bound = 15 * 60 * 1000;
    for rid in ["no-1", "no-2"] {
        let (at, ttl) = layout_support::record_at(fx.redis(), rid)
            .await
            .expect("a record");
        assert!(
            ttl > 0 && ttl <= bound,
            "{rid}: pttl {ttl} of {at} beyond {bound}"
        );
    }
    // The replay within that window still answers the first refusal.
    assert_eq!(
        fx.reserve("no-1", &[("A", 5)], 600).await.expect("replay"),
        single
    );
}

#[tokio::test]
async fn availability_reads_a_bounded_number_of_lapsed_holds() {
    let fx = Fixture::standalone().await;
    fx.set_stock("A", 5_000, 1).await;
    let bucket = BucketKeys::new("A", 0);
    // 3,000 lapsed holds of one unit each, left unpurged (as after a wave of abandoned carts).
    let client = fx.redis();
    let members: Vec<(f64, String)> = (0..3_000).map(|i| (1.0, format!("gone-{i}"))).collect();
    let _: i64 = client
        .zadd(bucket.holds(), None, None, false, false, members)
        .await
        .expect("holds");
    let held: Vec<(String, i64)> = (0..3_000).map(|i| (format!("gone-{i}"), 1)).collect();
    let _: i64 = fred::prelude::HashesInterface::hset(client, bucket.held(), held)
        .await
        .expect("held");
    let _: i64 = fred::prelude::HashesInterface::hset(client, bucket.counters(), ("reserved", 3_000))
        .await
        .expect("reserved");
    let level = scripts::availability(client, &bucket).await.expect("read");
    let lapsed_read = 3_000 - level.levels.reserved;
    assert!(
        (1..=scripts::AVAILABILITY_LAPSED_LIMIT).contains(&lapsed_read),
        "one read looks at no more than {} lapsed holds, saw {lapsed_read}",
        scripts::AVAILABILITY_LAPSED_LIMIT
    );
}
