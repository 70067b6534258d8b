//! The state of the Reserve hot path ([`crate::coalesce`]): the per-bucket batchers of
//! plain-bucket Reserves and the local sold-out markers, kept by [`crate::stock::Stock`].
//! The calls that use them live in `coalesce.rs`; this file holds only the state, so the
//! stock handle can own it without depending on the Reserve code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::batcher::Batcher;
use crate::metrics;
use crate::scripts::{BatchItem, MAX_BATCH, SingleReserve};

/// How long a local sold-out marker answers before a script call looks again. Short: another
/// process's restock may reach this one only through this expiry.
pub const LOCAL_SOLD_OUT: Duration = Duration::from_millis(100);
/// SKUs with a marker kept before the map is cleared.
const MARKERS_LIMIT: usize = 100_000;

/// One queued Reserve's answer, and whether the local sold-out marker gave it.
pub(crate) type Queued = (SingleReserve, bool);

/// The batcher of plain-bucket Reserves and the local sold-out markers.
#[derive(Debug)]
pub struct HotPath {
    pub(crate) batcher: Option<Batcher<BatchItem, Queued>>,
    /// The Reserves that found their SKU's marker standing: always coalesced (up to
    /// [`MAX_BATCH`] per call, whatever `--reserve-batch` says), in a lane of their own so
    /// they never queue behind a live call of the bucket. Its calls re-read the marker when
    /// sent and run live if it is gone (a grant still only through the script).
    pub(crate) refusals: Batcher<BatchItem, Queued>,
    sold_out: Mutex<HashMap<String, (Instant, u64)>>,
    /// Bumped by every clear: a call sent before a restock must not mark afterwards.
    pub(crate) clears: AtomicU64,
}

impl HotPath {
    /// Coalescing on (`batch` > 1: at most that many Reserves per call) or off (every Reserve
    /// its own call).
    pub fn new(batch: usize) -> Self {
        Self {
            batcher: (batch > 1).then(|| Batcher::new(batch.min(MAX_BATCH), metrics::observe_reserve_batch)),
            refusals: Batcher::new(MAX_BATCH, metrics::observe_reserve_batch),
            sold_out: Mutex::default(),
            clears: AtomicU64::new(0),
        }
    }

    /// Whether `sku` is marked sold out in `era` (0 without a truth guard).
    pub fn is_sold_out(&self, sku: &str, era: u64) -> bool {
        let mut markers = self.sold_out.lock().unwrap_or_else(PoisonError::into_inner);
        match markers.get(sku) {
            Some((until, at_era)) if *at_era == era && Instant::now() < *until => true,
            Some(_) => {
                markers.remove(sku);
                false
            }
            None => false,
        }
    }

    pub(crate) fn mark_sold_out(&self, sku: &str, era: u64, clears_seen: u64, until: Instant) {
        let mut markers = self.sold_out.lock().unwrap_or_else(PoisonError::into_inner);
        if self.clears.load(Ordering::SeqCst) != clears_seen || until <= Instant::now() {
            return;
        }
        if markers.len() >= MARKERS_LIMIT {
            markers.clear();
        }
        markers.insert(sku.to_string(), (until, era));
    }

    /// Drops `sku`'s marker: something may have freed units.
    pub fn clear_sold_out(&self, sku: &str) {
        let mut markers = self.sold_out.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock, so a mark that read the counter before this clear is refused.
        self.clears.fetch_add(1, Ordering::SeqCst);
        markers.remove(sku);
    }

    /// Reserves on bucket `tag` waiting for (or in) a `reserve_batch.lua` call.
    pub fn waiting(&self, tag: &str) -> usize {
        self.batcher.as_ref().map_or(0, |b| b.waiting(tag)) + self.refusals.waiting(tag)
    }
}

impl Default for HotPath {
    fn default() -> Self {
        Self::new(MAX_BATCH)
    }
}

/// Whether an outbox entry of `kind` may have made units available (every kind but a hold,
/// a sale and a debit: an unknown kind counts as freeing).
pub fn frees_units(kind: &str) -> bool {
    !matches!(
        kind,
        "reserved" | "reserved_n" | "committed" | "transfer_out" | "debited"
    )
}
