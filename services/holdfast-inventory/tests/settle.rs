//! Interrupted commits and live claimers: what a client can do after a Commit died half-way,
//! and why a Reserve that is still working is never taken over. Real redis-server.

mod common;
mod layout_support;

use std::time::Duration;

use common::{Fixture, idle, reserved};
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::scripts::{self, Claim, Transition};
use tonic::Code;
use tonic_types::StatusExt;

fn step(from: &'static str, to: &'static str) -> Transition<'static> {
    Transition {
        from,
        to,
        retention_ms: 600_000,
        ..Default::default()
    }
}

/// A committer that died after `reserved -> preparing` and extending its holds by a day.
async fn interrupted_in_preparing(fx: &Fixture, rid: &str, sku: &str) {
    scripts::reservation_transition(fx.redis(), rid, step("reserved", "preparing"))
        .await
        .expect("preparing");
    scripts::extend(fx.redis(), &BucketKeys::new(sku, 0), rid, 86_400_000)
        .await
        .expect("extend");
}

#[tokio::test]
async fn release_unwinds_a_commit_interrupted_before_anything_sold() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 5, 1).await;
    assert!(reserved(
        &fx.reserve("gave-up", &[("A", 2)], 600).await.expect("reserve")
    ));
    interrupted_in_preparing(&fx, "gave-up", "A").await;

    let released = fx.release("gave-up").await.expect("release unwinds preparing");
    assert_eq!(released.released_units, 2);
    assert_eq!(
        fx.level("A").await.available,
        5,
        "units back at once, not in a day"
    );
    let commit = fx.commit("gave-up").await.expect_err("released");
    assert_eq!(commit.code(), Code::FailedPrecondition);
    assert_eq!(
        commit
            .get_details_precondition_failure()
            .expect("details")
            .violations[0]
            .r#type,
        "RESERVATION_RELEASED"
    );
}

#[tokio::test]
async fn an_extend_never_shortens_a_committing_hold() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 5, 1).await;
    assert!(reserved(
        &fx.reserve("race", &[("A", 1)], 600).await.expect("reserve")
    ));
    interrupted_in_preparing(&fx, "race", "A").await;
    let bucket = BucketKeys::new("A", 0);
    let (_, long) = layout_support::hold_of(fx.redis(), &bucket, "race")
        .await
        .expect("hold");
    // An Extend that passed its `reserved` check just before the commit moved the record.
    let answer = scripts::extend(fx.redis(), &bucket, "race", 60_000)
        .await
        .expect("extend")
        .expect("live");
    let (_, after) = layout_support::hold_of(fx.redis(), &bucket, "race")
        .await
        .expect("hold");
    assert!(
        after >= long && answer >= long,
        "{after} / {answer} cut below {long}"
    );
}

#[tokio::test]
async fn a_commit_retried_after_its_lease_does_not_claim_lapsed_units_as_sold() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 5, 1).await;
    let first = fx.reserve("late", &[("A", 2)], 1).await.expect("reserve");
    assert!(reserved(&first));
    // The committer got to `committing`, then stalled; its lease ran out before it committed
    // line A, and the hold lapsed (the units went back to stock, anyone may buy them).
    scripts::reservation_transition(fx.redis(), "late", step("reserved", "preparing"))
        .await
        .expect("preparing");
    scripts::reservation_transition(
        fx.redis(),
        "late",
        Transition {
            expires_at: Some(first.expires_at_unix_ms),
            ..step("preparing", "committing")
        },
    )
    .await
    .expect("committing");
    fx.wait_redis_time_past(first.expires_at_unix_ms).await;
    // Another buyer touches the bucket: the lapsed hold is purged and its units sold on.
    assert!(reserved(
        &fx.reserve("next", &[("A", 5)], 600).await.expect("reserve")
    ));

    let retry = fx.commit("late").await.expect_err("cannot prove the sale");
    assert_eq!(retry.code(), Code::FailedPrecondition, "{retry:?}");
    let level = fx.level("A").await;
    assert_eq!(
        (level.sold, level.reserved, level.on_hand),
        (0, 5, 5),
        "the 2 units belong to the next buyer; the late commit sold nothing it could not prove"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_claimer_keeps_its_claim_past_one_lease() {
    let fx = Fixture::standalone_with(idle()).await;
    let stock = fx.inventory.stock.clone();
    let record = "slow";
    let lease = Duration::from_millis(200);
    let claim = scripts::reservation_claim(fx.redis(), record, "fp", "[]", (200, 600_000), "me")
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Claimed(None));
    let heartbeat =
        holdfast_inventory::reservations::Heartbeat::start(stock, record.to_string(), "me".into(), lease);
    // Five leases later the claimer is still alive: nobody may take over.
    let until = fx.redis_now_ms().await + 1_000;
    fx.wait_redis_time_past(until).await;
    let other = scripts::reservation_claim(fx.redis(), record, "fp", "[]", (200, 600_000), "you")
        .await
        .expect("claim");
    assert_eq!(other, Claim::Busy, "a live claimer was taken over");
    // It dies: its lease lapses, a retry takes over, and the old claimer is fenced out.
    drop(heartbeat);
    let until = fx.redis_now_ms().await + 300;
    fx.wait_redis_time_past(until).await;
    let taker = scripts::reservation_claim(fx.redis(), record, "fp", "[]", (200, 600_000), "you")
        .await
        .expect("claim");
    assert!(matches!(taker, Claim::Claimed(Some(_))), "{taker:?}");
    let (moved, _) = scripts::reservation_transition(
        fx.redis(),
        record,
        Transition {
            owner: "me",
            ..step("pending", "rejected")
        },
    )
    .await
    .expect("transition");
    assert!(!moved, "the claimer taken over cannot finish");
}
