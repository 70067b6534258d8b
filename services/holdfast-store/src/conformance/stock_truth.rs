//! Inventory's durable truth: versioned stock writes, idempotent sales, lookups and scans.

use std::collections::BTreeMap;

use tokio::task::JoinSet;

use crate::{SaleRecord, StockTruth, StockTruthStore, StockWrite, StoreError};

use super::{T0, namespace};

fn write(sku: &str, stocked: i64, version: i64) -> StockWrite {
    StockWrite {
        sku: sku.to_string(),
        stocked,
        version,
    }
}

fn sale(sku: &str, rid: &str, qty: i64) -> SaleRecord {
    SaleRecord {
        sku: sku.to_string(),
        reservation_id: rid.to_string(),
        qty,
        at_ms: T0,
    }
}

async fn truth<S: StockTruthStore>(store: &S, sku: &str) -> Option<StockTruth> {
    store.get_stock_truth(sku).await.expect("get stock truth")
}

/// A stock write lands only with a higher version, in any order; sales count once each.
pub async fn truth_stock_versions_and_sales_once<S: StockTruthStore>(store: &S) {
    let ns = namespace("truth");
    let sku = format!("{ns}-a");
    assert_eq!(truth(store, &sku).await, None, "nothing stored");

    store
        .record_stock(vec![write(&sku, 10, 5)])
        .await
        .expect("first write");
    let first = truth(store, &sku).await.expect("stored");
    assert_eq!((first.stocked, first.version, first.sold), (10, 5, 0));
    assert!(first.updated_at_ms > 0);

    store
        .record_stock(vec![write(&sku, 99, 4)])
        .await
        .expect("older write");
    let kept = truth(store, &sku).await.expect("stored");
    assert_eq!(
        (kept.stocked, kept.version),
        (10, 5),
        "an older version never replaces a newer one"
    );

    store
        .record_stock(vec![write(&sku, 7, 9)])
        .await
        .expect("newer write");
    assert_eq!(
        truth(store, &sku).await.map(|t| (t.stocked, t.version)),
        Some((7, 9))
    );

    store.record_sales(vec![sale(&sku, "r1", 2)]).await.expect("sale");
    store
        .record_sales(vec![sale(&sku, "r1", 2)])
        .await
        .expect("repeated sale");
    store
        .record_sales(vec![sale(&sku, "r2", 3)])
        .await
        .expect("another sale");
    let after = truth(store, &sku).await.expect("stored");
    assert_eq!(after.sold, 5, "a repeated sale counts once");
    assert_eq!(
        (after.stocked, after.version),
        (7, 9),
        "sales leave the stock alone"
    );

    // Sales of a SKU with no stock row still show (stocked 0, version 0).
    let only_sales = format!("{ns}-sales-only");
    store
        .record_sales(vec![sale(&only_sales, "r9", 4)])
        .await
        .expect("sale");
    let seen = truth(store, &only_sales).await.expect("sales are truth too");
    assert_eq!((seen.stocked, seen.version, seen.sold), (0, 0, 4));

    // A reservation's lines in one call: every SKU's sale recorded, a repeat counting once.
    let lines = vec![sale(&sku, "r3", 1), sale(&only_sales, "r3", 2)];
    store
        .record_sales(lines.clone())
        .await
        .expect("a reservation's sales");
    store.record_sales(lines).await.expect("the same sales again");
    assert_eq!(truth(store, &sku).await.map(|t| t.sold), Some(6));
    assert_eq!(truth(store, &only_sales).await.map(|t| t.sold), Some(6));

    let mut found = store
        .sales_of(&sku, &["r2".into(), "nope".into(), "r1".into()])
        .await
        .expect("lookup");
    found.sort_by(|a, b| a.reservation_id.cmp(&b.reservation_id));
    assert_eq!(found, vec![sale(&sku, "r1", 2), sale(&sku, "r2", 3)]);
    assert!(store.sales_of(&sku, &[]).await.expect("empty lookup").is_empty());
    assert!(
        store
            .sales_of(&only_sales, &["r1".into()])
            .await
            .expect("lookup")
            .is_empty()
    );
}

/// Concurrent writers of many versions leave the highest; concurrent repeats of a sale count once.
pub async fn truth_concurrent_writes_keep_the_highest_version<S: StockTruthStore + Clone + 'static>(
    store: &S,
) {
    let ns = namespace("truth-race");
    let sku = format!("{ns}-hot");
    let mut tasks = JoinSet::new();
    for task in 0..8_i64 {
        let (store, sku) = (store.clone(), sku.clone());
        tasks.spawn(async move {
            for step in 0..5_i64 {
                let version = step * 8 + task + 1;
                store
                    .record_stock(vec![write(&sku, version * 10, version)])
                    .await
                    .expect("write");
                store
                    .record_sales(vec![sale(&sku, &format!("r{step}"), 1)])
                    .await
                    .expect("sale");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let kept = truth(store, &sku).await.expect("stored");
    assert_eq!(
        (kept.version, kept.stocked),
        (40, 400),
        "the highest version wins"
    );
    assert_eq!(kept.sold, 5, "each (sku, reservation) once");
}

/// A scan pages through every SKU with stock exactly once, with its sold units.
pub async fn truth_scan_pages_every_sku_once<S: StockTruthStore>(store: &S) {
    let ns = namespace("truth-scan");
    let skus: Vec<String> = (0..7).map(|i| format!("{ns}-{i}")).collect();
    store
        .record_stock(skus.iter().map(|sku| write(sku, 3, 1)).collect())
        .await
        .expect("batch write");
    store
        .record_sales(vec![sale(&skus[2], "r", 2)])
        .await
        .expect("sale");

    let mut seen: BTreeMap<String, StockTruth> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .scan_stock_truth(after.as_deref(), 3)
            .await
            .expect("scan page");
        assert!(page.len() <= 3, "at most `limit` per page");
        for row in &page {
            assert!(
                seen.insert(row.sku.clone(), row.clone()).is_none(),
                "{} seen twice",
                row.sku
            );
        }
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|t| t.sku.clone());
    }
    for (i, sku) in skus.iter().enumerate() {
        let row = seen
            .get(sku)
            .unwrap_or_else(|| panic!("{sku} missing from the scan"));
        assert_eq!((row.stocked, row.version), (3, 1));
        assert_eq!(row.sold, if i == 2 { 2 } else { 0 });
    }
}

/// Unusable writes and lookups are refused as invalid and write nothing.
pub async fn truth_bad_requests_are_refused<S: StockTruthStore>(store: &S) {
    let ns = namespace("truth-bad");
    let invalid = |result: Result<(), StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    assert!(
        invalid(store.record_stock(vec![write("", 1, 1)]).await),
        "empty sku"
    );
    assert!(
        invalid(store.record_stock(vec![write(&ns, -1, 1)]).await),
        "negative stock"
    );
    assert!(
        invalid(store.record_stock(vec![write(&ns, 1, -1)]).await),
        "negative version"
    );
    assert!(
        invalid(store.record_sales(vec![sale(&ns, "", 1)]).await),
        "empty reservation"
    );
    assert!(
        invalid(store.record_sales(vec![sale(&ns, "r", 0)]).await),
        "no units"
    );
    assert!(
        invalid(store.record_sales(vec![sale("", "r", 1)]).await),
        "empty sku"
    );
    assert!(
        invalid(
            store
                .record_sales(vec![sale(&ns, "r", 1), sale(&ns, "r2", 0)])
                .await
        ),
        "one bad line refuses the call"
    );
    assert_eq!(truth(store, &ns).await, None, "refusals write nothing");
    let too_many: Vec<String> = (0..1001).map(|i| format!("r{i}")).collect();
    assert!(matches!(
        store.sales_of(&ns, &too_many).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.scan_stock_truth(None, 0).await,
        Err(StoreError::InvalidArgument(_))
    ));
}
