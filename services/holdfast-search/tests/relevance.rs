//! Known answers over a generated catalog of 100,000 products (the size; Tantivy is
//! built optimised even in the dev profile, see the root Cargo.toml); the 1,000,000 run is
//! `holdfast-load bench search`, release.

use std::sync::Arc;

use holdfast_search::model::{IndexChange, SearchQuery, SortOrder};
use holdfast_search::{SearchIndex, TantivyIndex, generate, relevance};

const PRODUCTS: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_catalog_answers_known_queries() {
    let index: Arc<dyn SearchIndex> = Arc::new(TantivyIndex::in_memory().unwrap());
    relevance::load(index.as_ref(), PRODUCTS, 5_000).await.unwrap();
    assert_eq!(index.num_docs(), PRODUCTS as u64);
    if let Err(failure) = relevance::check(index.as_ref(), PRODUCTS).await {
        panic!("{failure}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_deactivation_hides_and_a_price_change_resorts_and_reopen_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let (index, opened) = TantivyIndex::open(&path).unwrap();
    assert_eq!(opened, holdfast_search::tantivy_index::Opened::Created);
    relevance::load(&index, 100, 100).await.unwrap();
    let cheapest = |index: TantivyIndex| async move {
        let page = index
            .search(SearchQuery {
                text: "runner".into(),
                sort: SortOrder::PriceAscending,
                page_size: 1,
                facet_limit: 10,
                ..SearchQuery::default()
            })
            .await
            .unwrap();
        (page.total_hits, page.hits[0].product.sku.clone())
    };
    let (runners, first) = cheapest(index.clone()).await;
    assert_eq!(runners, 10);
    // Make product 50 (a runner) the cheapest; deactivate the previous cheapest.
    let mut cheap = generate::product(50);
    cheap.price_minor = 1;
    cheap.updated_at_ms += 1000;
    let mut gone = generate::product(first[1..].parse().unwrap());
    gone.active = false;
    index
        .apply(
            vec![
                IndexChange::Upsert {
                    product: cheap.clone(),
                    in_stock: None,
                },
                IndexChange::Upsert {
                    product: gone.clone(),
                    in_stock: None,
                },
            ],
            cheap.updated_at_ms,
        )
        .await
        .unwrap();
    assert_eq!(cheapest(index.clone()).await, (9, cheap.sku.clone()));
    let checkpoint = index.checkpoint_ms();
    assert_eq!(checkpoint, cheap.updated_at_ms);
    drop(index);
    let (reopened, opened) = TantivyIndex::open(&path).unwrap();
    assert_eq!(opened, holdfast_search::tantivy_index::Opened::Existing);
    assert_eq!(reopened.checkpoint_ms(), checkpoint);
    assert_eq!(cheapest(reopened).await, (9, cheap.sku));
}
