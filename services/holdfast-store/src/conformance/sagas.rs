//! Sagas: conditional transitions, leases, the stalled listing.

use tokio::task::JoinSet;

use crate::{OutboxStore, SagaRecord, SagaStore, SagaTransition, StoreError, now_ms};

use super::{
    T0, namespace,
    outbox::{event, ids_of, pending_under, send_all_under},
};

pub(super) fn saga(id: &str, lease_until_ms: i64, created_at_ms: i64) -> SagaRecord {
    SagaRecord {
        id: id.to_string(),
        kind: "checkout".into(),
        step: "reserve".into(),
        state: format!("state of {id}").into_bytes(),
        lease_owner: "worker-a".into(),
        lease_until_ms,
        finished: false,
        created_at_ms,
        ..SagaRecord::default()
    }
}

pub(super) fn step(step: &str, lease_until_ms: i64, finished: bool) -> SagaTransition {
    SagaTransition {
        step: step.to_string(),
        state: format!("state at {step}").into_bytes(),
        lease_owner: if finished {
            String::new()
        } else {
            "worker-b".into()
        },
        lease_until_ms,
        finished,
    }
}

/// A created saga reads back as written with version 1; creating it again returns the
/// stored one unchanged.
pub async fn saga_create_get_and_repeat_create<S: SagaStore>(store: &S) {
    let ns = namespace("saga");
    let id = format!("{ns}-сага-🧾");
    assert_eq!(store.get_saga(&id).await.expect("get"), None);
    let draft = SagaRecord {
        version: 9,
        updated_at_ms: 3,
        ..saga(&id, now_ms() + 60_000, T0)
    };
    let before = now_ms();
    let created = store.create_saga(draft.clone()).await.expect("create");
    assert_eq!(created.version, 1);
    assert!(
        created.updated_at_ms >= before,
        "updated_at_ms is the store's clock"
    );
    assert_eq!(
        created,
        SagaRecord {
            version: 1,
            updated_at_ms: created.updated_at_ms,
            ..draft.clone()
        }
    );
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(created.clone()));
    let retry = SagaRecord {
        kind: "cancel".into(),
        step: "elsewhere".into(),
        finished: true,
        ..draft
    };
    assert_eq!(store.create_saga(retry).await.expect("create again"), created);
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(created));
}

/// Transitions apply only at the stored version of an unfinished saga, with their events;
/// refused ones (stale, unknown, finished) write nothing.
pub async fn saga_transition_is_conditional_and_finished_sagas_never_move<S>(store: &S)
where
    S: SagaStore + OutboxStore,
{
    let ns = namespace("saga-move");
    let id = format!("{ns}-s");
    let lease = now_ms() + 60_000;
    let created = store.create_saga(saga(&id, lease, T0)).await.expect("create");

    let charge = step("charge", lease + 1, false);
    let moved = store
        .transition_saga(&id, 1, charge.clone(), vec![event(&format!("{ns}-ev-1"))])
        .await
        .expect("transition at version 1");
    assert_eq!(
        moved,
        SagaRecord {
            id: id.clone(),
            kind: created.kind.clone(),
            step: charge.step.clone(),
            state: charge.state.clone(),
            version: 2,
            lease_owner: charge.lease_owner.clone(),
            lease_until_ms: charge.lease_until_ms,
            finished: false,
            created_at_ms: T0,
            updated_at_ms: moved.updated_at_ms,
        }
    );
    assert!(moved.updated_at_ms >= created.updated_at_ms);
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(moved.clone()));
    assert_eq!(
        pending_under(store, &ns).await,
        vec![event(&format!("{ns}-ev-1"))]
    );

    for (expected, why) in [(1, "stale version"), (3, "future version")] {
        assert_eq!(
            store
                .transition_saga(
                    &id,
                    expected,
                    step("wrong", 0, false),
                    vec![event(&format!("{ns}-ev-refused-{expected}"))]
                )
                .await,
            Err(StoreError::VersionConflict { expected, actual: 2 }),
            "{why}"
        );
    }
    assert!(matches!(
        store
            .transition_saga(
                &format!("{ns}-unknown"),
                1,
                step("x", 0, false),
                vec![event(&format!("{ns}-ev-unknown"))]
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_saga(&format!("{ns}-unknown")).await.expect("get"), None);
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(moved));

    let done = store
        .transition_saga(&id, 2, step("done", 0, true), vec![event(&format!("{ns}-ev-2"))])
        .await
        .expect("finishing transition");
    assert!(done.finished);
    assert_eq!(done.version, 3);
    assert_eq!(
        store
            .transition_saga(
                &id,
                3,
                step("again", lease, false),
                vec![event(&format!("{ns}-ev-after-end"))]
            )
            .await,
        Err(StoreError::VersionConflict {
            expected: 3,
            actual: 3
        }),
        "a finished saga never moves"
    );
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(done));
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-1"), format!("{ns}-ev-2")],
        "only applied transitions wrote events"
    );
    send_all_under(store, &ns).await;
}

/// Eight workers moving one saga from the same version: exactly one wins, the others are
/// told it moved, and only the winner's event is written.
pub async fn saga_concurrent_transitions_from_8_tasks_one_wins<S>(store: &S)
where
    S: SagaStore + OutboxStore + Clone + 'static,
{
    let ns = namespace("saga-race");
    let id = format!("{ns}-s");
    let lease = now_ms() + 60_000;
    store.create_saga(saga(&id, lease, T0)).await.expect("create");
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let (store, ns, id) = (store.clone(), ns.clone(), id.clone());
        tasks.spawn(async move {
            let transition = SagaTransition {
                lease_owner: format!("worker-{task}"),
                ..step("charge", lease + task, false)
            };
            let result = store
                .transition_saga(&id, 1, transition, vec![event(&format!("{ns}-ev-{task}"))])
                .await;
            (task, result)
        });
    }
    let mut winners = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.expect("worker task") {
            (task, Ok(saga)) => winners.push((task, saga)),
            (
                _,
                Err(StoreError::VersionConflict {
                    expected: 1,
                    actual: 2,
                }),
            ) => {}
            (_, Err(other)) => panic!("unexpected answer to a lost race: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one transition wins");
    let (task, winner) = winners.pop().expect("one winner");
    assert_eq!(winner.lease_owner, format!("worker-{task}"));
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(winner));
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-{task}")],
        "only the winner's event"
    );
    send_all_under(store, &ns).await;
}

/// Stalled sagas are the unfinished ones whose lease ended before `now`, oldest first
/// (earliest lease end, ties by id; their creation order agrees here); finished sagas,
/// live leases and leases moved away never show.
pub async fn saga_stalled_lists_unfinished_expired_leases_oldest_first<S: SagaStore>(store: &S) {
    let ns = namespace("saga-stalled");
    // A window of times far in the past and unique to this run: the store's other sagas
    // (real-time leases) stay out of it.
    let base = 1_000_000_000_000 + now_ms() % 1_000_000_000;
    let now = base + 10_000;
    let name = |tail: &str| format!("{ns}-{tail}");
    let create = |tail: &'static str, lease_until_ms: i64, created: i64| {
        let id = name(tail);
        async move {
            store
                .create_saga(saga(&id, lease_until_ms, base + created))
                .await
                .expect("create")
        }
    };
    // Ids sort against lease order, so only the lease order explains the listing; the
    // creation order agrees with it.
    create("d-first", base + 1_000, 1).await;
    create("b-tie-b", base + 2_000, 3).await;
    create("b-tie-a", base + 2_000, 2).await;
    // Stalled through a transition: its created lease was live.
    let third = create("a-third", base + 20_000, 4).await;
    store
        .transition_saga(&third.id, 1, step("retry", base + 3_000, false), vec![])
        .await
        .expect("let go");
    create("c-at-now", now, 5).await;
    // Never stalled: finished, live, moved to a live lease.
    let finished = create("finished", base + 500, 0).await;
    store
        .transition_saga(&finished.id, 1, step("done", base + 500, true), vec![])
        .await
        .expect("finish");
    create("live", base + 60_000, 6).await;
    let moved = create("moved", base + 100, 0).await;
    store
        .transition_saga(&moved.id, 1, step("taken", base + 50_000, false), vec![])
        .await
        .expect("take over");

    let ours = |listed: Vec<SagaRecord>| -> Vec<String> {
        listed
            .into_iter()
            .filter(|s| s.id.starts_with(&ns))
            .map(|s| s.id)
            .collect()
    };
    let all = store.list_stalled_sagas(now, 1000).await.expect("stalled");
    assert!(
        all.iter().all(|s| !s.finished && s.lease_until_ms < now),
        "only unfinished sagas with a lease ended before now"
    );
    assert!(
        all.windows(2)
            .all(|pair| (pair[0].lease_until_ms, &pair[0].id) < (pair[1].lease_until_ms, &pair[1].id)),
        "oldest first, each once"
    );
    let stalled = ours(all.clone());
    assert_eq!(
        stalled,
        [name("d-first"), name("b-tie-a"), name("b-tie-b"), name("a-third")]
    );
    let third_listed = all.iter().find(|s| s.id == third.id).expect("listed");
    assert_eq!(
        (third_listed.step.as_str(), third_listed.version),
        ("retry", 2),
        "listed as stored now"
    );
    assert_eq!(
        ours(store.list_stalled_sagas(now + 1, 1000).await.expect("stalled")),
        [
            name("d-first"),
            name("b-tie-a"),
            name("b-tie-b"),
            name("a-third"),
            name("c-at-now")
        ],
        "a lease ending at `now` has ended before `now + 1`"
    );
    let two = store.list_stalled_sagas(now, 2).await.expect("stalled");
    assert_eq!(two, all[..2.min(all.len())], "at most `limit`, the oldest");
    assert_eq!(store.list_stalled_sagas(now, 0).await.expect("stalled"), vec![]);

    // Tidy up: finished sagas never show again, here or in a later run's listing.
    for tail in ["d-first", "b-tie-a", "b-tie-b", "c-at-now", "live", "moved"] {
        let current = store.get_saga(&name(tail)).await.expect("get").expect("saga");
        store
            .transition_saga(&current.id, current.version, step("done", 0, true), vec![])
            .await
            .expect("finish");
    }
    store
        .transition_saga(&third.id, 2, step("done", 0, true), vec![])
        .await
        .expect("finish");
    assert_eq!(
        ours(store.list_stalled_sagas(now + 1, 1000).await.expect("stalled")),
        Vec::<String>::new()
    );
}

pub(super) async fn bad_saga_requests_are_refused<S: SagaStore + OutboxStore>(store: &S, ns: &str) {
    let refused =
        |result: Result<SagaRecord, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    assert!(refused(store.create_saga(saga("", 0, T0)).await), "empty id");
    assert!(matches!(
        store.get_saga("").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(refused(
        store.transition_saga("", 1, step("x", 0, false), vec![]).await
    ));
    let id = format!("{ns}-saga");
    let created = store
        .create_saga(saga(&id, now_ms() + 60_000, T0))
        .await
        .expect("create");
    assert!(
        refused(
            store
                .transition_saga(
                    &id,
                    1,
                    step("x", 0, false),
                    vec![event(&format!("{ns}-saga-ev")), event("")]
                )
                .await
        ),
        "an event without id"
    );
    assert!(refused(
        store
            .transition_saga(&id, u64::MAX, step("x", 0, false), vec![])
            .await
    ));
    assert_eq!(
        store.get_saga(&id).await.expect("get"),
        Some(created.clone()),
        "a refused transition changes nothing"
    );
    assert_eq!(pending_under(store, ns).await, vec![], "and writes no event");
    store
        .transition_saga(&id, 1, step("done", 0, true), vec![])
        .await
        .expect("finish");
}
