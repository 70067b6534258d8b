//! The durable-truth guard's state: the store it reads, the era, and which SKUs are verified
//! in it. The protocol that uses it is in [`crate::truth`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use holdfast_store::{SaleRecord, StockTruth, StockTruthStore, StockWrite, StoreError};

/// The store as the guard uses it (object safe, so [`Stock`] stays one type).
pub trait TruthBackend: Send + Sync {
    /// [`StockTruthStore::record_stock`].
    fn record_stock(&self, writes: Vec<StockWrite>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// [`StockTruthStore::record_sales`].
    fn record_sales(&self, sales: Vec<SaleRecord>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// [`StockTruthStore::get_stock_truth`].
    fn get<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<StockTruth>, StoreError>>;
    /// [`StockTruthStore::sales_of`].
    fn sales_of<'a>(
        &'a self,
        sku: &'a str,
        rids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<SaleRecord>, StoreError>>;
    /// [`StockTruthStore::scan_stock_truth`].
    fn scan<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StockTruth>, StoreError>>;
}

impl<S: StockTruthStore + 'static> TruthBackend for S {
    fn record_stock(&self, writes: Vec<StockWrite>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(StockTruthStore::record_stock(self, writes))
    }
    fn record_sales(&self, sales: Vec<SaleRecord>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(StockTruthStore::record_sales(self, sales))
    }
    fn get<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<StockTruth>, StoreError>> {
        Box::pin(self.get_stock_truth(sku))
    }
    fn sales_of<'a>(
        &'a self,
        sku: &'a str,
        rids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<SaleRecord>, StoreError>> {
        Box::pin(StockTruthStore::sales_of(self, sku, rids))
    }
    fn scan<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StockTruth>, StoreError>> {
        Box::pin(self.scan_stock_truth(after, limit))
    }
}

/// How often the generation marker is beaten by the background watch.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// SKUs verified per era kept in memory; past it the map is cleared (a SKU dropped is only
/// verified again: one store read).
pub(crate) const VERIFIED_LIMIT: usize = 2_000_000;
/// SKUs the background rebuild pass works on at once.
pub(crate) const REBUILD_CONCURRENCY: usize = 64;

/// The guard's state: the durable store, the era, and which SKUs are verified in it.
pub struct Truth {
    pub(crate) store: Arc<dyn TruthBackend>,
    pub(crate) era: AtomicU64,
    pub(crate) last_beat: AtomicI64,
    pub(crate) generation: Mutex<Option<String>>,
    pub(crate) verified: Mutex<HashMap<String, u64>>,
    /// SKUs neither Redis nor the store knows, per era: a reserve of one answers short without
    /// asking the store again.
    pub(crate) absent: Mutex<HashMap<String, u64>>,
    pub(crate) rebuilding: Mutex<HashSet<String>>,
    pub(crate) rebuilt: AtomicU64,
}

impl std::fmt::Debug for Truth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Truth")
            .field("era", &self.era.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Truth {
    /// A guard over `store`. Era 1: every SKU is verified once before it serves.
    pub fn new(store: Arc<dyn TruthBackend>) -> Self {
        Self {
            store,
            era: AtomicU64::new(1),
            last_beat: AtomicI64::new(0),
            generation: Mutex::new(None),
            verified: Mutex::default(),
            absent: Mutex::default(),
            rebuilding: Mutex::default(),
            rebuilt: AtomicU64::new(0),
        }
    }

    /// The current era (bumped on every suspected loss).
    pub fn era(&self) -> u64 {
        self.era.load(Ordering::SeqCst)
    }

    /// SKUs rebuilt from the store since start.
    pub fn rebuilt(&self) -> u64 {
        self.rebuilt.load(Ordering::Relaxed)
    }

    pub(crate) fn is_verified(&self, sku: &str, era: u64) -> bool {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified.get(sku) == Some(&era)
    }

    pub(crate) fn mark_verified(&self, sku: &str, era: u64) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_LIMIT {
            verified.clear();
        }
        verified.insert(sku.to_string(), era);
    }

    pub(crate) fn is_absent(&self, sku: &str, era: u64) -> bool {
        let absent = self.absent.lock().unwrap_or_else(PoisonError::into_inner);
        absent.get(sku) == Some(&era)
    }

    /// `Some(era)`: remember that neither Redis nor the store knew `sku` in `era`; `None`:
    /// forget it (the SKU was just stocked).
    pub(crate) fn set_absent(&self, sku: &str, era: Option<u64>) {
        let mut absent = self.absent.lock().unwrap_or_else(PoisonError::into_inner);
        match era {
            Some(era) => {
                if absent.len() >= VERIFIED_LIMIT {
                    absent.clear();
                }
                absent.insert(sku.to_string(), era);
            }
            None => {
                absent.remove(sku);
            }
        }
    }
}

/// Releases a SKU's rebuild claim when dropped.
pub(crate) struct Claim<'a>(pub(crate) &'a Truth, pub(crate) String);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut rebuilding = self.0.rebuilding.lock().unwrap_or_else(PoisonError::into_inner);
        rebuilding.remove(&self.1);
    }
}
