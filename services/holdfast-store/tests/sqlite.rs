//! The conformance suite against SQLite: a file in a temporary directory (WAL, as
//! `holdfast dev` runs it) and an in-memory database, both through [`Store`].

use holdfast_store::conformance::{self, ConformanceStore};
use holdfast_store::{
    IDEMPOTENCY_TTL_MS, IdempotencyRecord, IdempotencyStore, JoinedWrite, JoinedWriteStore, KeyClaim,
    OrderStore, OutboxMessage, OutboxStore, Product, ProductStore, SagaRecord, SagaStore, SagaTransition,
    SqliteStore, Store, StoreError, StoredOrder,
};
use tokio::task::JoinSet;

async fn run_each_check<S: ConformanceStore>(store: S) {
    for (name, check) in conformance::checks::<S>() {
        println!("conformance: {name}");
        check(store.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_passes_conformance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("holdfast.db"))
        .await
        .expect("open sqlite file");
    run_each_check(Store::from(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_passes_conformance() {
    let store = SqliteStore::open_in_memory()
        .await
        .expect("open in-memory sqlite");
    run_each_check(Store::from(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_shared_by_two_handles_takes_concurrent_writes() {
    // Two handles on one file stand in for two processes (a service and an admin tool):
    // WAL and busy_timeout let them interleave writes without "database is locked".
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("holdfast.db");
    let first = Store::from(SqliteStore::open(&path).await.expect("open"));
    let second = Store::from(SqliteStore::open(&path).await.expect("open again"));
    tokio::join!(
        conformance::product_concurrent_upserts_from_8_tasks_all_land(&first),
        conformance::product_concurrent_upserts_from_8_tasks_all_land(&second),
        conformance::cart_older_version_never_overwrites_newer(&first),
        conformance::product_concurrent_conditional_updates_one_wins(&second),
    );

    let product = Product {
        sku: "shared-1".into(),
        category: "shared".into(),
        ..Product::default()
    };
    let written = first
        .upsert_product(product, Some(0))
        .await
        .expect("write through one handle");
    assert_eq!(
        second
            .get_product("shared-1")
            .await
            .expect("read through the other"),
        Some(written)
    );
    let conflict = second
        .upsert_product(
            Product {
                sku: "shared-1".into(),
                category: "shared".into(),
                ..Product::default()
            },
            Some(0),
        )
        .await;
    assert_eq!(
        conflict,
        Err(StoreError::VersionConflict {
            expected: 0,
            actual: 1
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_shared_by_two_handles_lets_one_claim_and_one_transition_win() {
    // Two handles stand in for two processes: each has its own writer thread, so
    // only SQLite's write lock (BEGIN IMMEDIATE) keeps the races below to one winner.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("holdfast.db");
    let handles = [
        Store::from(SqliteStore::open(&path).await.expect("open")),
        Store::from(SqliteStore::open(&path).await.expect("open again")),
    ];

    let mut claims = JoinSet::new();
    for task in 0..16 {
        let store = handles[task % 2].clone();
        claims.spawn(async move {
            store
                .claim_key(IdempotencyRecord {
                    scope: "checkout".into(),
                    key: "shared".into(),
                    fingerprint: format!("fp-{task}"),
                    expires_at_ms: i64::MAX - IDEMPOTENCY_TTL_MS,
                    ..IdempotencyRecord::default()
                })
                .await
                .expect("claim")
        });
    }
    let mut winners = 0;
    while let Some(claim) = claims.join_next().await {
        winners += usize::from(matches!(claim.expect("claim task"), KeyClaim::Claimed(_)));
    }
    assert_eq!(winners, 1, "one claim wins across handles");

    handles[0]
        .create_saga(SagaRecord {
            id: "shared-saga".into(),
            lease_until_ms: i64::MAX,
            ..SagaRecord::default()
        })
        .await
        .expect("create");
    let mut moves = JoinSet::new();
    for task in 0..8 {
        let store = handles[task % 2].clone();
        moves.spawn(async move {
            let event = OutboxMessage {
                id: format!("shared-ev-{task}"),
                ..OutboxMessage::default()
            };
            let transition = SagaTransition {
                step: format!("step-{task}"),
                ..SagaTransition::default()
            };
            store
                .transition_saga("shared-saga", 1, transition, vec![event])
                .await
        });
    }
    let mut won = Vec::new();
    while let Some(result) = moves.join_next().await {
        match result.expect("transition task") {
            Ok(saga) => won.push(saga.step),
            Err(StoreError::VersionConflict {
                expected: 1,
                actual: 2,
            }) => {}
            Err(other) => panic!("unexpected answer to a lost race: {other}"),
        }
    }
    assert_eq!(won.len(), 1, "one transition wins across handles");
    let winner = won[0].trim_start_matches("step-");
    let pending = handles[1].pending_outbox(100).await.expect("pending");
    assert_eq!(
        pending.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [format!("shared-ev-{winner}")],
        "only the winner's event, seen from either handle"
    );
}

#[tokio::test]
async fn sqlite_joined_transition_refused_by_the_saga_writes_no_order_and_no_answer() {
    // SQLite joins the order and key writes to the saga's move in one savepoint: a stale
    // saga version leaves the order uncreated and the key unanswered (ScyllaDB writes them
    // in order, the transition last, so there the order would be in place).
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::from(
        SqliteStore::open(dir.path().join("holdfast.db"))
            .await
            .expect("open"),
    );
    store
        .create_saga(SagaRecord {
            id: "joined-saga".into(),
            lease_until_ms: i64::MAX,
            ..SagaRecord::default()
        })
        .await
        .expect("create");
    store
        .claim_key(IdempotencyRecord {
            scope: "checkout".into(),
            key: "joined-key".into(),
            expires_at_ms: i64::MAX - IDEMPOTENCY_TTL_MS,
            ..IdempotencyRecord::default()
        })
        .await
        .expect("claim");
    let refused = store
        .transition_saga_joined(
            "joined-saga",
            5,
            SagaTransition::default(),
            Vec::new(),
            vec![
                JoinedWrite::CreateOrder(StoredOrder {
                    id: "joined-order".into(),
                    customer_id: "c".into(),
                    ..StoredOrder::default()
                }),
                JoinedWrite::CompleteKey {
                    scope: "checkout".into(),
                    key: "joined-key".into(),
                    response: b"answer".to_vec(),
                },
            ],
        )
        .await;
    assert_eq!(
        refused,
        Err(StoreError::VersionConflict {
            expected: 5,
            actual: 1
        })
    );
    assert_eq!(store.get_order("joined-order").await.expect("get"), None);
    let key = store
        .get_key("checkout", "joined-key")
        .await
        .expect("get key")
        .expect("claimed");
    assert_eq!(key.response, None, "no answer stored");
}
