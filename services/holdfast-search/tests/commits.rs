//! When the index commits: a stock event that flips no product's `in_stock` flag changes no
//! document, so it makes no commit (no fsync, no reader reload: under checkout load nearly
//! every inventory event is one); a flip, an upsert and a fresh index's first (even empty)
//! batch still commit. Commits are read from the index's own metadata (`meta.json`'s opstamp).

use std::path::Path;

use holdfast_search::model::{IndexChange, SearchQuery};
use holdfast_search::tantivy_index::Opened;
use holdfast_search::{SearchIndex, TantivyIndex, generate};

/// The opstamp of the index's last commit, as stored on disk.
fn opstamp(path: &Path) -> u64 {
    tantivy::Index::open_in_dir(path)
        .and_then(|index| index.load_metas())
        .map(|metas| metas.opstamp)
        .expect("read the index's metadata")
}

async fn in_stock(index: &TantivyIndex) -> Vec<String> {
    let page = index
        .search(SearchQuery {
            in_stock_only: true,
            page_size: 10,
            facet_limit: 10,
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    page.hits.into_iter().map(|hit| hit.product.sku).collect()
}

fn stock(sku: &str, in_stock: bool) -> IndexChange {
    IndexChange::Stock {
        sku: sku.to_string(),
        in_stock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_event_that_flips_nothing_makes_no_commit_and_a_flip_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    let (index, opened) = TantivyIndex::open(&path).expect("open");
    assert_eq!(opened, Opened::Created);

    // A fresh index's first batch commits even empty: it records the schema version.
    index.apply(Vec::new(), 0).await.expect("empty first batch");
    let first = opstamp(&path);
    drop(index);
    let (index, opened) = TantivyIndex::open(&path).expect("reopen");
    assert_eq!(
        opened,
        Opened::Existing,
        "the empty first batch recorded the schema"
    );
    assert_eq!(opstamp(&path), first);

    let product = generate::product(7);
    let sku = product.sku.clone();
    index
        .apply(
            vec![IndexChange::Upsert {
                product: product.clone(),
                in_stock: Some(true),
            }],
            product.updated_at_ms,
        )
        .await
        .expect("upsert");
    let upserted = opstamp(&path);
    assert!(upserted > first, "an upsert commits");
    assert_eq!(in_stock(&index).await, vec![sku.clone()]);

    // Stock events that leave the flag as it is, for an indexed SKU and an unknown one.
    for _ in 0..5 {
        index
            .apply(vec![stock(&sku, true), stock("no-such-sku", false)], 0)
            .await
            .expect("stock events flipping nothing");
    }
    index.apply(Vec::new(), 0).await.expect("an empty batch");
    assert_eq!(
        opstamp(&path),
        upserted,
        "batches that changed no document committed"
    );
    assert_eq!(in_stock(&index).await, vec![sku.clone()]);

    // A flip commits and is searchable when apply returns.
    index.apply(vec![stock(&sku, false)], 0).await.expect("flip");
    assert!(opstamp(&path) > upserted, "a flip commits");
    assert!(
        in_stock(&index).await.is_empty(),
        "the flip is searchable at once"
    );
    drop(index);
    let (reopened, _) = TantivyIndex::open(&path).expect("reopen");
    assert!(in_stock(&reopened).await.is_empty(), "the flip is durable");
    assert_eq!(reopened.num_docs(), 1);
}
