//! The indexer on its real parts: an in-process bus, a SQLite store and a Tantivy index in a
//! temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_platform::events::{BusConfig, Event, EventBus, InProcessBus};
use holdfast_proto::events::v1::{CatalogEvent, ProductUpserted, catalog_event};
use holdfast_search::indexer::PRODUCT_UPSERTED;
use holdfast_search::{CATALOG_TOPIC, Indexer, IndexerOptions, SearchIndex, SearchQuery, TantivyIndex};
use holdfast_store::{Product, ProductStore, SqliteStore};
use prost::Message;

fn upserted(sku: &str) -> Event {
    let id = format!("event-of-{sku}");
    Event {
        payload: CatalogEvent {
            event_id: id.clone(),
            event: Some(catalog_event::Event::ProductUpserted(ProductUpserted {
                sku: sku.to_string(),
                occurred_at_unix_ms: 1,
            })),
        }
        .encode_to_vec(),
        id,
        topic: CATALOG_TOPIC.into(),
        key: sku.into(),
        event_type: PRODUCT_UPSERTED.into(),
        region: "local".into(),
        traceparent: None,
    }
}

fn product(sku: &str) -> Product {
    Product {
        sku: sku.into(),
        title: format!("Lantern {sku}"),
        price_minor: 1_500,
        currency: "EUR".into(),
        category: "lamps".into(),
        active: true,
        ..Product::default()
    }
}

async fn indexed(index: &dyn SearchIndex) -> Vec<String> {
    let page = index
        .search(SearchQuery {
            page_size: 50,
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    let mut skus: Vec<String> = page.hits.into_iter().map(|h| h.product.sku).collect();
    skus.sort();
    skus
}

/// Polls until the index holds exactly `want`, for at most `within`.
async fn wait_for(index: &dyn SearchIndex, want: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = indexed(index).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "index holds {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An announcement that arrives before its product can be read (the ScyllaDB backend once
/// published them before the write) must not leave the product out of the index for good:
/// the indexer looks the SKU up again until it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_announced_before_it_is_readable_is_indexed_once_it_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_in_memory().await.expect("store");
    store
        .upsert_product(product("known"), None)
        .await
        .expect("upsert");
    let (index, _) = TantivyIndex::open(&dir.path().join("index")).expect("index");
    let index: Arc<dyn SearchIndex> = Arc::new(index);
    let bus = InProcessBus::new();
    let _indexer = Indexer::start(
        store.clone(),
        Arc::clone(&index),
        true,
        &BusConfig::InProcess(bus.clone()),
        IndexerOptions::default(),
    )
    .await
    .expect("indexer");
    wait_for(index.as_ref(), &["known"], Duration::from_secs(10)).await;

    // "early" is announced first, then "later" (which exists): once "later" is indexed,
    // the look-up of "early" ran too and found nothing.
    bus.publish(vec![upserted("early")]).await.expect("publish");
    store
        .upsert_product(product("later"), None)
        .await
        .expect("upsert");
    bus.publish(vec![upserted("later")]).await.expect("publish");
    wait_for(index.as_ref(), &["known", "later"], Duration::from_secs(10)).await;

    // Now the write lands, with no event of its own.
    store
        .upsert_product(product("early"), None)
        .await
        .expect("upsert");
    wait_for(
        index.as_ref(),
        &["early", "known", "later"],
        Duration::from_secs(30),
    )
    .await;
}
