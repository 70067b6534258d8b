//! Products as read models see them: announcements drained by a relay while upserts land,
//! and the full-table scan a read model rebuilds from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinSet;

use crate::{OutboxMessage, OutboxStore, ProductStore, StoreError};

use super::namespace;
use super::products::sample;

/// Products the announcement check writes, and the tasks writing them.
const ANNOUNCED: usize = 200;
const WRITERS: usize = 8;

/// An announcement of `sku` in the shape the catalog writes (it says "re-read this SKU").
fn announcement(id: String, sku: &str) -> OutboxMessage {
    OutboxMessage {
        id,
        topic: "holdfast.catalog.v1".into(),
        key: sku.to_string(),
        event_type: "catalog.product_upserted".into(),
        payload: sku.as_bytes().to_vec(),
        ..OutboxMessage::default()
    }
}

/// 200 announced upserts from 8 tasks while a relay-like reader drains the outbox as fast
/// as it can, re-reading each announced product the way the search indexer does: every
/// announcement is listed exactly once, and when it is listed its product can already be
/// read. (An announcement listed before its product is written sends a consumer that
/// re-reads the SKU to nothing, and nothing tells it to look again.)
pub async fn product_announcements_are_listed_once_and_never_before_their_product<S>(store: &S)
where
    S: ProductStore + OutboxStore + Clone + 'static,
{
    // `!` sorts before the UUIDs and names other checks give their events, so this check's
    // events are at the head of the pending listing whatever else a shared keyspace holds.
    let ns = format!("!{}", namespace("announce"));
    let category = format!("{ns}-cat");
    let writers_done = Arc::new(AtomicBool::new(false));
    let relay = tokio::spawn({
        let (store, ns, writers_done) = (store.clone(), ns.clone(), Arc::clone(&writers_done));
        async move {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            let mut early: Vec<String> = Vec::new();
            loop {
                // Read the flag before listing: once set, an empty listing is final.
                let last_round = writers_done.load(Ordering::SeqCst);
                let mine: Vec<OutboxMessage> = store
                    .pending_outbox(1000)
                    .await
                    .expect("pending outbox")
                    .into_iter()
                    .filter(|m| m.id.starts_with(&ns))
                    .collect();
                if mine.is_empty() && last_round {
                    return (seen, early);
                }
                let skus: Vec<String> = mine.iter().map(|m| m.key.clone()).collect();
                let found: BTreeSet<String> = store
                    .get_products(&skus)
                    .await
                    .expect("re-read announced products")
                    .into_iter()
                    .map(|p| p.sku)
                    .collect();
                for message in &mine {
                    if !found.contains(&message.key) {
                        early.push(message.key.clone());
                    }
                    let again = seen.insert(message.id.clone(), message.key.clone());
                    assert_eq!(
                        again, None,
                        "event {} listed after it was marked sent",
                        message.id
                    );
                }
                let ids: Vec<String> = mine.into_iter().map(|m| m.id).collect();
                store.mark_outbox_sent(&ids).await.expect("mark sent");
                tokio::task::yield_now().await;
            }
        }
    });
    let mut writers = JoinSet::new();
    for task in 0..WRITERS {
        let (store, ns, category) = (store.clone(), ns.clone(), category.clone());
        writers.spawn(async move {
            for i in (task..ANNOUNCED).step_by(WRITERS) {
                let sku = format!("{ns}-p{i:03}");
                let event = announcement(format!("{ns}-e{i:03}"), &sku);
                store
                    .upsert_product_announced(sample(&sku, &category), None, vec![event])
                    .await
                    .expect("announced upsert");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer task");
    }
    writers_done.store(true, Ordering::SeqCst);
    let (seen, early) = relay.await.expect("relay task");
    assert_eq!(
        early,
        Vec::<String>::new(),
        "announcements listed before their product could be read"
    );
    let expected: BTreeMap<String, String> = (0..ANNOUNCED)
        .map(|i| (format!("{ns}-e{i:03}"), format!("{ns}-p{i:03}")))
        .collect();
    assert_eq!(seen, expected, "every announcement listed, once");
}

/// A refused conditional upsert announces nothing.
pub async fn product_refused_upsert_announces_nothing<S>(store: &S)
where
    S: ProductStore + OutboxStore,
{
    let ns = format!("!{}", namespace("refused-announce"));
    let sku = format!("{ns}-sku");
    let category = format!("{ns}-cat");
    let refused = store
        .upsert_product_announced(
            sample(&sku, &category),
            Some(3),
            vec![announcement(format!("{ns}-e0"), &sku)],
        )
        .await;
    assert!(matches!(refused, Err(StoreError::NotFound(_))), "{refused:?}");
    store
        .upsert_product(sample(&sku, &category), Some(0))
        .await
        .expect("create");
    let refused = store
        .upsert_product_announced(
            sample(&sku, &category),
            Some(0),
            vec![announcement(format!("{ns}-e1"), &sku)],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::VersionConflict { .. })),
        "{refused:?}"
    );
    let pending: Vec<String> = store
        .pending_outbox(1000)
        .await
        .expect("pending outbox")
        .into_iter()
        .map(|m| m.id)
        .filter(|id| id.starts_with(&ns))
        .collect();
    store.mark_outbox_sent(&pending).await.expect("clean up");
    assert_eq!(pending, Vec::<String>::new(), "refused upserts announced");
}

/// `scan_products` pages through every product exactly once (inactive ones included),
/// whatever the page size, and an empty page ends it; page size 0 is refused.
pub async fn product_scan_visits_every_product_once<S: ProductStore>(store: &S) {
    let ns = namespace("scan");
    let category = format!("{ns}-cat");
    let mut mine = BTreeSet::new();
    for i in 0..23 {
        let sku = format!("{ns}-{i:02}");
        let product = crate::Product {
            active: i % 5 != 0,
            ..sample(&sku, &category)
        };
        store.upsert_product(product, None).await.expect("upsert");
        mine.insert(sku);
    }
    assert!(matches!(
        store.scan_products(None, 0).await,
        Err(StoreError::InvalidArgument(_))
    ));
    for page_size in [1, 7, 500] {
        let mut after: Option<String> = None;
        let mut everything = BTreeSet::new();
        let mut found = BTreeMap::new();
        let mut pages = 0;
        loop {
            let page = store
                .scan_products(after.as_deref(), page_size)
                .await
                .expect("scan");
            assert!(page.len() <= page_size as usize, "at most the page size");
            let Some(last) = page.last() else { break };
            after = Some(last.sku.clone());
            for product in page {
                assert!(
                    everything.insert(product.sku.clone()),
                    "{} scanned twice at page size {page_size}",
                    product.sku
                );
                if mine.contains(&product.sku) {
                    found.insert(product.sku.clone(), product.active);
                }
            }
            pages += 1;
            assert!(pages < 1_000_000, "the scan never ends");
        }
        let skus: BTreeSet<String> = found.keys().cloned().collect();
        assert_eq!(skus, mine, "every product scanned at page size {page_size}");
        assert_eq!(
            found.values().filter(|active| !**active).count(),
            5,
            "inactive products are scanned too"
        );
    }
}
