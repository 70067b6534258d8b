//! Interrupted commits and live claimers: what a client can do after a Commit died half-way,
//! and why a Reserve that is still working is never taken over. Real redis-server.

mod common;
mod layout_support;

use std::time::Duration;

use common::{Fixture, idle, reserved, script_calls};
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::scripts::{self, Claim, Transition};
use holdfast_proto::inventory::v1::ExtendRequest;
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
async fn on_standalone_redis_extend_and_commit_move_every_hold_and_the_record_in_one_script_call() {
    const RESERVATIONS: u64 = 10;
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 50, 1).await;
    fx.set_stock("B", 50, 1).await;
    let mut first = Vec::new();
    for i in 0..RESERVATIONS {
        let rid = format!("two-{i}");
        let answer = fx.reserve(&rid, &[("A", 2), ("B", 1)], 5).await.expect("reserve");
        assert!(reserved(&answer));
        first.push((rid, answer.expires_at_unix_ms));
    }
    // Half of them as another replica sees them: no lines remembered from their Reserve.
    for (rid, _) in first.iter().step_by(2) {
        fx.inventory.stock.line_hints().forget(rid);
    }
    let unknown = RESERVATIONS / 2;
    let scripts = [
        "reservation_transition.lua",
        "reservation_extend.lua",
        "reservation_commit.lua",
        "commit.lua",
    ];
    let calls = || scripts.iter().map(|s| script_calls(s)).collect::<Vec<u64>>();
    let before = calls();
    let mut until = Vec::new();
    for (rid, _) in &first {
        let extended = fx
            .client
            .clone()
            .extend(ExtendRequest {
                reservation_id: rid.clone(),
                ttl_seconds: 600,
            })
            .await
            .expect("extend")
            .into_inner();
        until.push(extended.expires_at_unix_ms);
    }
    // With the lines its Reserve wrote, an Extend is one call: every hold and the record.
    // Without them the record is read first: two. A cluster (and every build before) runs
    // 2 + 2 per line: the check, an extend.lua per line, the move (and an index write per line).
    let after = calls();
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (unknown, RESERVATIONS),
        "Extend: a record check only where the lines were not known, one move of every hold each"
    );
    for ((rid, was), until) in first.iter().zip(&until) {
        assert!(
            *until >= was + 590_000,
            "{rid}: {until} not ~10 min on from {was}"
        );
        for sku in ["A", "B"] {
            let (_, hold) = layout_support::hold_of(fx.redis(), &BucketKeys::new(sku, 0), rid)
                .await
                .expect("hold");
            assert_eq!(hold, *until, "{rid}: the hold on {sku} carries the answer");
        }
    }
    // The holds outlive their first expiry, and commit as ever.
    fx.wait_redis_time_past(first.iter().map(|(_, was)| *was).max().unwrap_or_default())
        .await;
    let before = calls();
    for (rid, _) in &first {
        fx.commit(rid).await.expect("commit after extend");
    }
    // Per two-line Commit with the lines known: the lease taken with `reserved -> committing`,
    // then every line's commit with the last move. Without them, `reserved -> preparing` first.
    // A cluster: 1 + 2 + 1 + 2 + 1.
    let after = calls();
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        vec![unknown, RESERVATIONS, RESERVATIONS, 0],
        "Commit's calls of {scripts:?}"
    );
    let (a, b) = (fx.level("A").await, fx.level("B").await);
    assert_eq!((a.sold, a.reserved, b.sold, b.reserved), (20, 0, 10, 0));
}

#[tokio::test]
async fn on_standalone_redis_a_two_line_reserve_is_one_script_call_and_commit_answers_from_its_own() {
    const RESERVATIONS: u64 = 8;
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 20, 1).await;
    fx.set_stock("B", 9, 1).await;
    let steps = [
        "reservation_claim.lua",
        "reserve.lua",
        "reservation_transition.lua",
    ];
    let before: Vec<u64> = steps.iter().map(|s| script_calls(s)).collect();
    let whole = script_calls("reservation_reserve.lua");
    for i in 0..RESERVATIONS {
        let answer = fx
            .reserve(&format!("pair-{i}"), &[("B", 1), ("A", 2)], 600)
            .await
            .expect("reserve");
        assert!(reserved(&answer), "pair-{i}: {answer:?}");
    }
    // The one that does not fit: B has 1 left, nothing of A may stay held.
    let short = fx
        .reserve("too-many", &[("A", 1), ("B", 2)], 600)
        .await
        .expect("answer");
    assert!(!reserved(&short));
    let shortages: Vec<(String, i64, i64)> = short
        .shortages
        .iter()
        .map(|s| (s.sku.clone(), s.requested, s.available))
        .collect();
    assert_eq!(
        shortages,
        vec![("B".to_string(), 2, 1)],
        "only the short line is named"
    );
    assert_eq!(
        fx.reserve("too-many", &[("A", 1), ("B", 2)], 600)
            .await
            .expect("repeat")
            .shortages
            .len(),
        1,
        "a repeat gets the first answer"
    );
    let conflict = fx
        .reserve("pair-0", &[("A", 1), ("B", 1)], 600)
        .await
        .expect_err("another request under a used id");
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    // Every Reserve above (the repeats and the conflict too) was one script call; a cluster (and
    // every build before) claims the record, holds each line and moves the record: 4 calls.
    assert_eq!(
        script_calls("reservation_reserve.lua") - whole,
        RESERVATIONS + 3,
        "one reservation_reserve.lua call per Reserve"
    );
    let after: Vec<u64> = steps.iter().map(|s| script_calls(s)).collect();
    assert_eq!(after, before, "no multi-step Reserve ran: {steps:?}");
    let (a, b) = (fx.level("A").await, fx.level("B").await);
    assert_eq!(
        (a.reserved, a.available, b.reserved, b.available),
        (16, 4, 8, 1),
        "every pair held, the refused one held nothing"
    );

    // Commit answers each SKU's level from its own script: no availability read of its own.
    let reads = script_calls("availability.lua");
    let mut answer = None;
    for i in 0..RESERVATIONS {
        answer = Some(fx.commit(&format!("pair-{i}")).await.expect("commit"));
    }
    assert_eq!(
        script_calls("availability.lua"),
        reads,
        "Commit's answer read no level again"
    );
    let levels: Vec<(String, i64, i64, i64, i64)> = answer
        .expect("committed")
        .levels
        .into_iter()
        .map(|l| (l.sku, l.on_hand, l.reserved, l.sold, l.available))
        .collect();
    assert_eq!(
        levels,
        vec![("A".to_string(), 4, 0, 16, 4), ("B".to_string(), 1, 0, 8, 1)],
        "the last Commit's answer: every unit sold, nothing held"
    );
    let (a, b) = (fx.level("A").await, fx.level("B").await);
    assert_eq!(
        (a.on_hand, a.sold, b.on_hand, b.sold),
        (4, 16, 1, 8),
        "the answer is what a read says"
    );
}

#[tokio::test]
async fn a_commit_of_two_lines_one_of_them_lapsed_expires_and_gives_the_other_back() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("A", 5, 1).await;
    fx.set_stock("B", 5, 1).await;
    let answer = fx
        .reserve("half", &[("A", 2), ("B", 1)], 600)
        .await
        .expect("reserve");
    assert!(reserved(&answer));
    // B's hold lapses on its own (the record still says 10 minutes): the lease cannot cover it.
    layout_support::lapse_hold(fx.redis(), &BucketKeys::new("B", 0), "half").await;

    let refused = fx.commit("half").await.expect_err("a line lapsed");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let (a, b) = (fx.level("A").await, fx.level("B").await);
    assert_eq!(
        (a.sold, a.reserved, a.available, b.sold, b.reserved, b.available),
        (0, 0, 5, 0, 0, 5),
        "nothing sold, both lines' units back"
    );
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
