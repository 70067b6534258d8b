//! The Reserve admission limit on the coalesced path (one line, one bucket, standalone Redis):
//! decided inside the Reserve's own `reserve_batch.lua` call, one script call a Reserve, with
//! the same answers a separate `admission_take.lua` call gave (docs/admission.md).

mod common;

use std::time::Duration;

use common::{Fixture, script_calls_in_redis};
use fred::prelude::{KeysInterface, StreamsInterface};
use holdfast_inventory::keys::BucketKeys;
use holdfast_platform::admission::RateLimit;
use holdfast_proto::inventory::v1::{ReservationStatus, ReserveLine, ReserveRequest};
use tonic::Code;
use tonic_types::StatusExt;

fn one_line(rid: &str, sku: &str, quantity: i64) -> ReserveRequest {
    ReserveRequest {
        reservation_id: rid.into(),
        lines: vec![ReserveLine {
            sku: sku.into(),
            quantity,
        }],
        ttl_seconds: 600,
    }
}

/// `holdfast_admission_decisions_total` of Reserve per SKU with this decision, in this process.
fn decisions(decision: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == "holdfast_admission_decisions_total")
        .flat_map(|family| family.get_metric())
        .filter(|m| {
            let label = |name: &str| m.get_label().iter().find(|l| l.name() == name).map(|l| l.value());
            label("operation") == Some("reserve")
                && label("subject") == Some("sku")
                && label("decision") == Some(decision)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_reserve_takes_one_script_call_and_the_limit_still_refuses_with_its_details() {
    let mut fx = Fixture::standalone_with(common::idle()).await;
    // Two units: a Reserve of three is refused for stock, leaves the units free (no sold-out
    // marker) and writes no outbox entry, so no relay call mixes into Redis's counts.
    fx.set_stock("ADM", 2, 1).await;
    let (_server, mut client) = fx
        .limited_server(RateLimit {
            per_second: 0.01,
            burst: 11,
        })
        .await;
    let events = BucketKeys::new("ADM", 0).events();
    let redis = fx.redis().clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while redis.xlen::<u64, _>(&events).await.expect("xlen") > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stock's entry is published and acknowledged");

    let (calls_before, admitted_before) = (script_calls_in_redis(&redis).await, decisions("admitted"));
    for i in 0..10 {
        let answer = client
            .reserve(one_line(&format!("three-{i}"), "ADM", 3))
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(
            answer.status,
            ReservationStatus::InsufficientStock as i32,
            "{answer:?}"
        );
    }
    let calls = script_calls_in_redis(&redis).await - calls_before;
    assert!(
        calls < 15,
        "{calls} script calls for 10 counted Reserves: admission was a call of its own"
    );
    assert_eq!(decisions("admitted") - admitted_before, 10, "each counted once");
    assert!(
        redis
            .exists::<u64, _>("admission:{sku:ADM}:reserve:tat")
            .await
            .expect("exists")
            == 1,
        "the SKU's clock moved"
    );

    // The last of the burst of 11 holds a unit, then the limit: RESOURCE_EXHAUSTED with its
    // details, and the refused Reserve holds and records nothing.
    let held = client.reserve(one_line("one", "ADM", 1)).await.expect("admitted");
    assert_eq!(held.into_inner().status, ReservationStatus::Reserved as i32);
    let limited_before = decisions("limited");
    let refused = client
        .reserve(one_line("over", "ADM", 1))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let details = refused.get_error_details();
    assert!(details.retry_info().is_some(), "RetryInfo rides along");
    assert_eq!(
        details.quota_failure().expect("QuotaFailure").violations[0].subject,
        "sku:ADM"
    );
    assert_eq!(decisions("limited") - limited_before, 1);
    let level = fx.level("ADM").await;
    assert_eq!(
        (level.reserved, level.available),
        (1, 1),
        "only `one` holds: {level:?}"
    );
    // Nothing recorded for the refused id: the same id through a server without the limit
    // is a new Reserve and holds the unit left (a record would answer it again).
    let fresh = fx.reserve("over", &[("ADM", 1)], 600).await.expect("reserve");
    assert_eq!(fresh.status, ReservationStatus::Reserved as i32, "{fresh:?}");
}

#[tokio::test]
async fn admission_left_to_a_coalesced_call_the_reserve_no_longer_makes_writes_nothing() {
    let fx = Fixture::standalone_with(common::idle()).await;
    // Restocked into two buckets after the caller judged the SKU one-bucket: its Reserve no
    // longer takes the coalesced call its admission was left to.
    fx.set_stock("ADM2", 10, 2).await;
    let stock = fx.inventory.stock.clone();
    let lines = [("ADM2".to_string(), 1)];
    assert!(!stock.coalesces(&lines).await.expect("layout"), "two buckets");
    let refused = stock
        .reserve_admitting(
            "late",
            &lines,
            600,
            Some(RateLimit {
                per_second: 0.01,
                burst: 1,
            }),
        )
        .await
        .expect_err("not run unadmitted");
    assert_eq!(
        tonic::Status::from(refused).code(),
        Code::Aborted,
        "a retry is safe"
    );
    assert_eq!(fx.level("ADM2").await.reserved, 0, "nothing held");
    assert_eq!(
        fx.redis()
            .exists::<u64, _>("admission:{sku:ADM2}:reserve:tat")
            .await
            .expect("exists"),
        0,
        "nothing counted"
    );
    // The retry, admitted before it runs (the service's path for a SKU in several buckets),
    // is a new Reserve: nothing was recorded under the id.
    let held = fx.reserve("late", &[("ADM2", 1)], 600).await.expect("reserve");
    assert_eq!(held.status, ReservationStatus::Reserved as i32, "{held:?}");
}
