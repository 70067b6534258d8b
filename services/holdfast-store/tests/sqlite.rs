//! The conformance suite against SQLite: a file in a temporary directory (WAL, as
//! `holdfast dev` runs it) and an in-memory database, both through [`Store`].

use holdfast_store::conformance::{self, ConformanceStore};
use holdfast_store::{Product, ProductStore, SqliteStore, Store, StoreError};

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
