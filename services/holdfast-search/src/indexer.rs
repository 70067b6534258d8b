//! The [`Indexer`]: keeps a [`SearchIndex`] current from events, and rebuilds it from the
//! store on start.
//!
//! - `catalog.product_upserted` (topic [`CATALOG_TOPIC`]) says a SKU changed: the indexer
//!   re-reads it from the store and indexes it (or drops it if inactive). The event carries
//!   no product state, so duplicates and reorderings are harmless. Products are never
//!   deleted, so a SKU the store does not have (yet) means the event came before its write
//!   was readable: it is looked up again [`MISSING_RECHECKS`] times with a doubling wait
//!   (from [`MISSING_FIRST_WAIT`], about 16 s in all), then given up, logged and counted.
//! - Inventory events (topic [`INVENTORY_TOPIC`]) carry each bucket's `on_hand` and
//!   `reserved`; the indexer keeps `on_hand - reserved` per bucket and flips the SKU's
//!   in-stock flag when the sum crosses zero.
//!
//! The consumer only queues events; one writer task applies them in batches (one Tantivy
//! commit per batch) and acknowledges nothing durable by itself: the consumer commits its
//! offset as soon as an event is queued. What a crash loses between queueing and the index
//! commit is repaired on start by the catch-up scan: every product updated after the
//! index's checkpoint (minus [`IndexerOptions::catch_up_margin_ms`]) is applied again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_platform::events::{
    BusConfig, BusError, ConsumerHandle, Event, HandleError, handler_fn, spawn_consumer,
};
use holdfast_proto::events::v1::{CatalogEvent, InventoryEvent, catalog_event, inventory_event};
use holdfast_store::ProductStore;
use prometheus::{
    Histogram, IntCounter, IntGauge, register_histogram, register_int_counter, register_int_gauge,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::IndexChange;
use crate::{SearchError, SearchIndex};

/// Where catalog change events go.
pub const CATALOG_TOPIC: &str = "holdfast.catalog.v1";
/// Where inventory stock events come from.
pub const INVENTORY_TOPIC: &str = "holdfast.inventory.v1";
/// Event type of a product upsert.
pub const PRODUCT_UPSERTED: &str = "catalog.product_upserted";
/// How many more times an announced SKU the store does not have is looked up.
pub const MISSING_RECHECKS: u32 = 6;
/// The wait before the first of those look-ups; each next one waits twice as long.
pub const MISSING_FIRST_WAIT: Duration = Duration::from_millis(250);

#[allow(clippy::expect_used)] // registering a static metric can only fail on a duplicate name.
static LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "holdfast_search_index_lag_ms",
        "Age of the oldest change the search indexer has queued and not yet made searchable (0 when caught up)."
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static DELAY: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "holdfast_search_index_delay_seconds",
        "From a catalog upsert to its change being searchable.",
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static MISSING: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "holdfast_search_announced_missing_total",
        "Announced products the store still did not have after every re-check (not indexed)."
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static INDEXED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "holdfast_search_indexed_total",
        "Index changes applied (upserts, removals and stock flips)."
    )
    .expect("metric registers once")
});

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How far behind the index is: the occurrence times of queued, unapplied changes.
#[derive(Debug, Default)]
pub struct LagTracker {
    queued: Mutex<VecDeque<i64>>,
}

impl LagTracker {
    fn push(&self, occurred_ms: i64) {
        self.queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(occurred_ms);
    }

    fn applied(&self, n: usize) {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_ms();
        for _ in 0..n {
            if let Some(occurred) = queued.pop_front()
                && occurred > 0
            {
                DELAY.observe((now - occurred).max(0) as f64 / 1000.0);
            }
        }
        drop(queued);
        LAG.set(i64::try_from(self.lag_ms()).unwrap_or(i64::MAX));
    }

    /// Milliseconds since the oldest queued change happened; 0 when none is queued.
    pub fn lag_ms(&self) -> u64 {
        let queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        queued
            .front()
            .map_or(0, |occurred| u64::try_from(now_ms() - occurred).unwrap_or(0))
    }
}

/// Knobs.
#[derive(Debug, Clone)]
pub struct IndexerOptions {
    /// Consumer group. Every replica has its own index, so its own group (on Kafka).
    pub group: String,
    /// Most changes per index commit.
    pub batch: usize,
    /// On start, products updated since `checkpoint - margin` are applied again (covers
    /// clock skew between catalog replicas and changes lost in a crash).
    pub catch_up_margin_ms: i64,
    /// Products read per store page while rebuilding.
    pub scan_page: u32,
}

impl Default for IndexerOptions {
    fn default() -> Self {
        Self {
            group: "holdfast-search".into(),
            batch: 5000,
            catch_up_margin_ms: 60_000,
            scan_page: 500,
        }
    }
}

/// A queued event, decoded.
#[derive(Debug)]
enum Queued {
    Product {
        sku: String,
        /// Look-ups of this SKU that found nothing so far.
        misses: u32,
    },
    Stock {
        sku: String,
        bucket: u32,
        available: i64,
        buckets: Option<u32>,
    },
}

/// The running indexer; dropping it stops the consumer and the writer.
pub struct RunningIndexer {
    /// The consumer of catalog and inventory events.
    pub consumer: Option<ConsumerHandle>,
    /// The writer task.
    pub writer: JoinHandle<()>,
    /// The index lag.
    pub lag: Arc<LagTracker>,
}

impl Drop for RunningIndexer {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Builds and runs the indexer; see the module docs.
pub struct Indexer;

impl Indexer {
    /// Subscribes to catalog and inventory events on `bus` first (so nothing that happens
    /// during the scan is missed), then catches the index up with `store` (all of it when
    /// `rebuild`), then applies events as they come.
    pub async fn start<S>(
        store: S,
        index: Arc<dyn SearchIndex>,
        rebuild: bool,
        bus: &BusConfig,
        options: IndexerOptions,
    ) -> Result<RunningIndexer, BusError>
    where
        S: ProductStore + Clone + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Queued>();
        // The writer re-queues announced SKUs it did not find; weak, so it never keeps the
        // queue open by itself.
        let requeue = tx.downgrade();
        let lag = Arc::new(LagTracker::default());
        let consumer = spawn_consumer(
            bus,
            &options.group,
            &[CATALOG_TOPIC, INVENTORY_TOPIC],
            handler_fn({
                let lag = Arc::clone(&lag);
                move |event: Event| {
                    let decoded = decode(&event);
                    let (tx, lag) = (tx.clone(), Arc::clone(&lag));
                    async move {
                        match decoded? {
                            Some((queued, occurred_ms)) => {
                                lag.push(occurred_ms);
                                tx.send(queued)
                                    .map_err(|_| HandleError::Retry("search index writer stopped".into()))
                            }
                            None => Ok(()),
                        }
                    }
                }
            }),
        )
        .await?;
        let writer = tokio::spawn(write_loop(
            store,
            index,
            rebuild,
            (rx, requeue),
            Arc::clone(&lag),
            options,
        ));
        Ok(RunningIndexer {
            consumer: Some(consumer),
            writer,
            lag,
        })
    }
}

fn decode(event: &Event) -> Result<Option<(Queued, i64)>, HandleError> {
    let poison = |e: prost::DecodeError| HandleError::Poison(format!("{}: {e}", event.event_type));
    if event.topic == CATALOG_TOPIC {
        let decoded = CatalogEvent::decode(event.payload.as_slice()).map_err(poison)?;
        return Ok(match decoded.event {
            Some(catalog_event::Event::ProductUpserted(upserted)) if !upserted.sku.is_empty() => Some((
                Queued::Product {
                    sku: upserted.sku,
                    misses: 0,
                },
                upserted.occurred_at_unix_ms,
            )),
            Some(catalog_event::Event::ProductUpserted(_)) => {
                return Err(HandleError::Poison(
                    "catalog.product_upserted without a sku".into(),
                ));
            }
            None => None,
        });
    }
    if event.topic == INVENTORY_TOPIC {
        use inventory_event::Event as E;
        let decoded = InventoryEvent::decode(event.payload.as_slice()).map_err(poison)?;
        let levels = match decoded.event {
            Some(E::Reserved(e)) => (
                e.sku,
                e.bucket_index,
                e.on_hand - e.reserved,
                None,
                e.occurred_at_unix_ms,
            ),
            Some(E::Committed(e)) => (
                e.sku,
                e.bucket_index,
                e.on_hand - e.reserved,
                None,
                e.occurred_at_unix_ms,
            ),
            Some(E::Released(e)) => (
                e.sku,
                e.bucket_index,
                e.on_hand - e.reserved,
                None,
                e.occurred_at_unix_ms,
            ),
            Some(E::Expired(e)) => (
                e.sku,
                e.bucket_index,
                e.on_hand - e.reserved,
                None,
                e.occurred_at_unix_ms,
            ),
            Some(E::Adjusted(e)) => (
                e.sku,
                e.bucket_index,
                e.on_hand - e.reserved,
                None,
                e.occurred_at_unix_ms,
            ),
            Some(E::StockSet(e)) => (
                e.sku,
                e.bucket_index,
                e.on_hand - e.reserved,
                Some(e.buckets),
                e.occurred_at_unix_ms,
            ),
            Some(E::Rebalanced(e)) => (
                e.sku,
                e.bucket_index,
                e.on_hand - e.reserved,
                None,
                e.occurred_at_unix_ms,
            ),
            None => return Ok(None),
        };
        let (sku, bucket, available, buckets, occurred) = levels;
        return Ok(Some((
            Queued::Stock {
                sku,
                bucket,
                available,
                buckets,
            },
            occurred,
        )));
    }
    Ok(None)
}

/// Available units per bucket of each SKU heard of, and the flag last sent to the index.
#[derive(Default)]
struct StockBook {
    skus: HashMap<String, (HashMap<u32, i64>, Option<bool>)>,
}

impl StockBook {
    /// Records a bucket's level; returns the SKU's new in-stock flag if it changed.
    fn record(&mut self, sku: &str, bucket: u32, available: i64, buckets: Option<u32>) -> Option<bool> {
        let (levels, flag) = self.skus.entry(sku.to_string()).or_default();
        if let Some(buckets) = buckets {
            levels.retain(|b, _| *b < buckets);
        }
        levels.insert(bucket, available);
        let now = levels.values().any(|v| *v > 0);
        (*flag != Some(now)).then(|| {
            *flag = Some(now);
            now
        })
    }

    fn known(&self, sku: &str) -> Option<bool> {
        self.skus.get(sku).and_then(|(_, flag)| *flag)
    }
}

async fn write_loop<S: ProductStore>(
    store: S,
    index: Arc<dyn SearchIndex>,
    rebuild: bool,
    (mut rx, requeue): (mpsc::UnboundedReceiver<Queued>, mpsc::WeakUnboundedSender<Queued>),
    lag: Arc<LagTracker>,
    options: IndexerOptions,
) {
    loop {
        match catch_up(&store, index.as_ref(), rebuild, &options).await {
            Ok(applied) => {
                tracing::info!(
                    applied,
                    docs = index.num_docs(),
                    rebuild,
                    "search index caught up with the store"
                );
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "search index catch-up failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let mut book = StockBook::default();
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, options.batch).await > 0 {
        let count = queued.len();
        loop {
            match resolve(&store, &mut book, &queued).await {
                Ok((changes, checkpoint, missing)) => {
                    let applied = changes.len();
                    match index.apply(changes, checkpoint).await {
                        Ok(()) => {
                            INDEXED.inc_by(applied as u64);
                            recheck_later(missing, &requeue, &lag);
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "applying search index changes failed; retrying")
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reading products for the search index failed; retrying")
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        lag.applied(count);
        queued.clear();
    }
}

/// Queues another look-up of each announced SKU the store did not have, after its wait;
/// gives up (logged, counted) after [`MISSING_RECHECKS`].
fn recheck_later(
    missing: Vec<(String, u32)>,
    requeue: &mpsc::WeakUnboundedSender<Queued>,
    lag: &Arc<LagTracker>,
) {
    for (sku, misses) in missing {
        if misses > MISSING_RECHECKS {
            MISSING.inc();
            tracing::warn!(%sku, misses, "an announced product is not in the store; not indexed");
            continue;
        }
        let wait = MISSING_FIRST_WAIT.saturating_mul(1 << (misses - 1).min(16));
        let (requeue, lag) = (requeue.clone(), Arc::clone(lag));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(tx) = requeue.upgrade() {
                lag.push(now_ms());
                let _ = tx.send(Queued::Product { sku, misses });
            }
        });
    }
}

/// The index changes for a batch of events (re-reading every mentioned product once), the
/// checkpoint they reach, and the announced SKUs the store did not have with their misses
/// so far (this one included).
async fn resolve<S: ProductStore>(
    store: &S,
    book: &mut StockBook,
    queued: &[Queued],
) -> Result<(Vec<IndexChange>, i64, Vec<(String, u32)>), SearchError> {
    let mut skus: Vec<String> = Vec::new();
    for q in queued {
        if let Queued::Product { sku, .. } = q
            && !skus.contains(sku)
        {
            skus.push(sku.clone());
        }
    }
    let mut products = HashMap::new();
    for chunk in skus.chunks(holdfast_store::products::MAX_BATCH_GET) {
        for product in store
            .get_products(chunk)
            .await
            .map_err(|e| SearchError::Engine(format!("store: {e}")))?
        {
            products.insert(product.sku.clone(), product);
        }
    }
    let mut checkpoint = 0;
    let mut changes = Vec::with_capacity(queued.len());
    let mut done = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for q in queued {
        match q {
            Queued::Product { sku, misses } => {
                // One upsert per SKU per batch: the store's current state.
                if !done.insert(sku.clone()) {
                    continue;
                }
                match products.get(sku) {
                    Some(product) => {
                        checkpoint = checkpoint.max(product.updated_at_ms);
                        changes.push(IndexChange::Upsert {
                            product: product.clone(),
                            in_stock: book.known(sku),
                        });
                    }
                    None => missing.push((sku.clone(), misses + 1)),
                }
            }
            Queued::Stock {
                sku,
                bucket,
                available,
                buckets,
            } => {
                if let Some(in_stock) = book.record(sku, *bucket, *available, *buckets) {
                    changes.push(IndexChange::Stock {
                        sku: sku.clone(),
                        in_stock,
                    });
                }
            }
        }
    }
    Ok((changes, checkpoint, missing))
}

/// Applies every product updated since the checkpoint (all of them when `rebuild`).
/// Returns how many changes were applied.
pub async fn catch_up<S: ProductStore>(
    store: &S,
    index: &dyn SearchIndex,
    rebuild: bool,
    options: &IndexerOptions,
) -> Result<usize, SearchError> {
    let since = if rebuild {
        i64::MIN
    } else {
        index.checkpoint_ms().saturating_sub(options.catch_up_margin_ms)
    };
    let mut after: Option<String> = None;
    let mut applied = 0;
    let mut batch = Vec::new();
    let mut checkpoint = 0;
    loop {
        let page = store
            .scan_products(after.as_deref(), options.scan_page)
            .await
            .map_err(|e| SearchError::Engine(format!("store: {e}")))?;
        let Some(last) = page.last() else { break };
        after = Some(last.sku.clone());
        for product in page {
            if product.updated_at_ms >= since && (product.active || !rebuild) {
                checkpoint = checkpoint.max(product.updated_at_ms);
                batch.push(IndexChange::Upsert {
                    product,
                    in_stock: None,
                });
            }
        }
        if batch.len() >= options.batch {
            applied += batch.len();
            index.apply(std::mem::take(&mut batch), checkpoint).await?;
        }
    }
    applied += batch.len();
    // Commit even an empty batch: it records the schema version of a new index.
    index.apply(batch, checkpoint).await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::StockBook;

    #[test]
    fn stock_flag_flips_only_when_the_sum_crosses_zero() {
        let mut book = StockBook::default();
        assert_eq!(book.record("a", 0, 0, Some(2)), Some(false));
        assert_eq!(book.record("a", 1, 3, None), Some(true));
        assert_eq!(book.record("a", 1, 2, None), None);
        assert_eq!(book.record("a", 1, 0, None), Some(false));
        assert_eq!(book.record("a", 0, 5, None), Some(true));
        // A stock set to one bucket forgets bucket 1.
        assert_eq!(book.record("a", 0, 0, Some(1)), Some(false));
        assert_eq!(book.known("a"), Some(false));
        assert_eq!(book.known("b"), None);
    }
}
