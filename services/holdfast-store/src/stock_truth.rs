//! Inventory's durable truth: per SKU the units ever stocked and every committed sale.
//!
//! Inventory serves reservations from Redis (`docs/inventory-redis.md`); Redis may lose
//! writes (a failover to a replica that missed them, a restart without the append-only file,
//! a FLUSHALL). What it must never forget is written here, so the counts can be rebuilt:
//!
//! - the **stock** of a SKU: `stocked` = on_hand + sold summed over its buckets, the quantity
//!   SetStock, AdjustStock and the warehouse reconciliation change and commits do not (a commit
//!   moves units from on_hand to sold). It is absolute and versioned by the SKU's bucket-0
//!   sequence number in Redis; a write with a version not above the stored one changes nothing,
//!   so late or repeated writes never roll the level back;
//! - every **sale**: (SKU, reservation id) -> units, recorded once (a repeat is a no-op).
//!
//! Rebuilt on_hand = `stocked - sold`; see `docs/inventory-redis.md`, "Durable truth".

use std::future::Future;

use crate::StoreError;

/// A SKU's durable stock and the units sold from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StockTruth {
    /// The SKU.
    pub sku: String,
    /// on_hand + sold as of `version` (0 when only sales are stored).
    pub stocked: i64,
    /// The version of `stocked` (inventory's bucket-0 sequence number; 0 when none stored).
    pub version: i64,
    /// Units of every sale recorded for the SKU.
    pub sold: i64,
    /// When the stock was last written (Unix ms; 0 when none stored).
    pub updated_at_ms: i64,
}

/// One absolute stock write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StockWrite {
    /// The SKU (non-empty).
    pub sku: String,
    /// on_hand + sold (>= 0).
    pub stocked: i64,
    /// Applied only when above the stored version (>= 0).
    pub version: i64,
}

/// One committed sale of a reservation's line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SaleRecord {
    /// The SKU (non-empty).
    pub sku: String,
    /// The reservation id (non-empty): a sale is recorded once per (SKU, reservation).
    pub reservation_id: String,
    /// Units sold (>= 1).
    pub qty: i64,
    /// When it was recorded (Unix ms).
    pub at_ms: i64,
}

/// Durable storage of inventory's truth.
pub trait StockTruthStore: Send + Sync {
    /// Stores each write whose version is above the one stored for its SKU (absent = -1);
    /// others change nothing. Two writes of one version: either may be kept (callers never
    /// write two levels at one version). Each write on its own: no batch atomicity.
    fn record_stock(&self, writes: Vec<StockWrite>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records each sale once per (SKU, reservation id); a repeat (a retried commit) changes
    /// nothing. Callers always record the same units for one (SKU, reservation). Every sale
    /// is checked before any is written; one reservation's lines are recorded in one write
    /// on SQLite (atomically), in turn on ScyllaDB (a retry records what is missing).
    fn record_sales(&self, sales: Vec<SaleRecord>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The SKU's stock and sold units; `None` when neither is stored.
    fn get_stock_truth(
        &self,
        sku: &str,
    ) -> impl Future<Output = Result<Option<StockTruth>, StoreError>> + Send;

    /// The sales recorded among `reservation_ids` for `sku` (at most 1000 ids), any order.
    fn sales_of(
        &self,
        sku: &str,
        reservation_ids: &[String],
    ) -> impl Future<Output = Result<Vec<SaleRecord>, StoreError>> + Send;

    /// A page of SKUs with stored stock (with their sold units), in the backend's scan
    /// order (SQLite: by SKU; ScyllaDB: by partition token): pass the last SKU of a page as
    /// `after_sku` for the next one; a page shorter than `limit` is the last. `limit` is
    /// capped at 1000 and must be >= 1.
    fn scan_stock_truth(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StockTruth>, StoreError>> + Send;
}

/// Largest page of [`StockTruthStore::scan_stock_truth`].
pub const MAX_TRUTH_PAGE: u32 = 1000;
/// Most ids one [`StockTruthStore::sales_of`] call takes.
pub const MAX_SALES_LOOKUP: usize = 1000;

/// Refuses an unusable stock write.
pub(crate) fn validate_stock(write: &StockWrite) -> Result<(), StoreError> {
    if write.sku.is_empty() {
        return Err(StoreError::InvalidArgument("stock write: sku is empty".into()));
    }
    if write.stocked < 0 || write.version < 0 {
        return Err(StoreError::InvalidArgument(format!(
            "stock write for {:?}: stocked {} and version {} must be >= 0",
            write.sku, write.stocked, write.version
        )));
    }
    Ok(())
}

/// Refuses an unusable sale.
pub(crate) fn validate_sale(sale: &SaleRecord) -> Result<(), StoreError> {
    if sale.sku.is_empty() || sale.reservation_id.is_empty() {
        return Err(StoreError::InvalidArgument(
            "sale: sku and reservation_id must not be empty".into(),
        ));
    }
    if sale.qty < 1 {
        return Err(StoreError::InvalidArgument(format!(
            "sale {:?}/{:?}: qty {} must be >= 1",
            sale.sku, sale.reservation_id, sale.qty
        )));
    }
    Ok(())
}

/// Refuses an unusable lookup or page size; the page size capped.
pub(crate) fn validate_lookup(sku: &str, ids: usize) -> Result<(), StoreError> {
    if sku.is_empty() {
        return Err(StoreError::InvalidArgument("sales lookup: sku is empty".into()));
    }
    if ids > MAX_SALES_LOOKUP {
        return Err(StoreError::InvalidArgument(format!(
            "sales lookup: at most {MAX_SALES_LOOKUP} reservation ids, got {ids}"
        )));
    }
    Ok(())
}

/// The page size to use, or an error for 0.
pub(crate) fn page_size(limit: u32) -> Result<u32, StoreError> {
    if limit == 0 {
        return Err(StoreError::InvalidArgument("scan page size must be >= 1".into()));
    }
    Ok(limit.min(MAX_TRUTH_PAGE))
}
