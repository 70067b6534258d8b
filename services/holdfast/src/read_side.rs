//! Wiring of the read side fed by events (issue 17), kept apart from `lib.rs` so it can be
//! re-applied on another wiring shape:
//!
//! - **search**, with catalog: a Tantivy index under `<data-dir>/search-index`, its indexer
//!   consuming `holdfast.catalog.v1` and `holdfast.inventory.v1` (group
//!   `holdfast-search-<replica>`), handed to catalog as `CatalogOptions`; plus who publishes
//!   catalog's outbox rows: orders' relay when orders runs here (woken through a forwarder),
//!   else a relay of catalog's own.
//! - **notifications**: `holdfast_notifications::start` with `<data-dir>/notifications.db`
//!   and `<data-dir>/notifications-outbox.jsonl`, consuming `holdfast.orders.v1` and
//!   `holdfast.shipments.v1` (group `holdfast-notifications`).

use std::sync::Arc;

use holdfast_platform::CommonArgs;
use holdfast_search::{Indexer, IndexerOptions, RunningIndexer, SearchHandle, SearchIndex, TantivyIndex};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Engines;

/// The search indexer and the catalog outbox's publisher; stop when dropped.
pub struct RunningSearch {
    /// The indexer (consumer and writer).
    pub indexer: RunningIndexer,
    /// Notified by catalog after each upsert.
    pub wake: Arc<Notify>,
    publisher: Option<JoinHandle<()>>,
}

impl Drop for RunningSearch {
    fn drop(&mut self) {
        if let Some(task) = self.publisher.take() {
            task.abort();
        }
    }
}

/// Opens (or creates, then rebuilds from `store`) this replica's index and starts the
/// indexer; returns catalog's options with search and the outbox wake-up.
pub async fn start_search(
    store: holdfast_store::Store,
    engines: &Engines,
    common: &CommonArgs,
) -> anyhow::Result<(holdfast_catalog::CatalogOptions, RunningSearch)> {
    let dir = common.data_dir.join("search-index");
    let (index, opened) = TantivyIndex::open(&dir).map_err(|e| anyhow::anyhow!("search index: {e}"))?;
    let index: Arc<dyn SearchIndex> = Arc::new(index);
    // One index per replica, so one consumer group per replica (on Kafka).
    let replica = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let indexer = Indexer::start(
        store,
        Arc::clone(&index),
        opened == holdfast_search::tantivy_index::Opened::Created,
        &engines.bus_config,
        IndexerOptions {
            group: format!("holdfast-search-{replica}"),
            ..IndexerOptions::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("search: consuming catalog and inventory events: {e}"))?;
    let wake = Arc::new(Notify::new());
    let options = holdfast_catalog::CatalogOptions {
        search: Some(SearchHandle {
            index,
            lag: Arc::clone(&indexer.lag),
        }),
        outbox_wake: Some(Arc::clone(&wake)),
        region: engines.region.clone(),
    };
    Ok((
        options,
        RunningSearch {
            indexer,
            wake,
            publisher: None,
        },
    ))
}

/// Makes sure catalog's outbox rows get published: by waking `shared` (another relay on
/// the same store, e.g. orders') or, when `None`, by a relay of catalog's own.
pub fn publish_catalog_outbox(
    search: &mut RunningSearch,
    store: holdfast_store::Store,
    engines: &Engines,
    shared: Option<Arc<dyn Fn() + Send + Sync>>,
) {
    let wake = Arc::clone(&search.wake);
    search.publisher = Some(match shared {
        Some(notify) => tokio::spawn(async move {
            loop {
                wake.notified().await;
                notify();
            }
        }),
        None => {
            holdfast_catalog::search::spawn_relay(store, engines.bus.clone(), engines.region.clone(), wake)
        }
    });
}

/// Starts the notifications service under `--data-dir`.
pub async fn start_notifications(
    engines: &Engines,
    common: &CommonArgs,
) -> anyhow::Result<holdfast_notifications::RunningNotifications> {
    let options = holdfast_notifications::NotificationsOptions::under(&common.data_dir);
    holdfast_notifications::start(options, &engines.bus_config)
        .await
        .map_err(|e| anyhow::anyhow!("starting notifications: {e}"))
}
