//! The warehouse aggregate: warehouses, stock per (SKU, warehouse), shipments (the
//! suborders warehouses fulfil), and the claims that make warehouse changes happen once.
//!
//! Every change goes through one primitive, [`WarehouseStore::apply_warehouse_change`]: a
//! [`WarehouseChange`] names the claims it takes (a consumer's event id, an order's routing,
//! a receipt or shrinkage id), the stock deltas it makes (each checked against
//! `0 <= allocatable <= physical` and, optionally, an expected row version), the shipments
//! it creates or updates (updates conditional on a version) and the events it announces
//! (the outbox). On SQLite the whole change is one `IMMEDIATE` transaction: it applies
//! entirely or not at all, and two changes never both take the same units. On ScyllaDB
//! it is a sequence of lightweight transactions anchored by its first claim; what that
//! does and does not guarantee is written in `scylladb/warehouse.rs` and `schema/scylla.cql`.
//!
//! The store does not route orders or interpret events: the warehouse service plans a
//! change from what it read, and the store either applies it or says which condition no
//! longer holds ([`Refusal`]), so the service reads again and plans again.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::{OutboxMessage, StoreError};

/// Largest page the warehouse and shipment listings return; larger requests get this many.
pub const MAX_WAREHOUSE_PAGE_SIZE: u32 = 500;
/// Most SKUs one stock read may name.
pub const MAX_STOCK_READ: usize = 1000;

/// A delivery speed a warehouse offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShippingOptionRecord {
    /// The `holdfast.warehouse.v1.ShippingSpeed` number.
    pub speed: i32,
    /// Promised delivery within this many days.
    pub max_days: u32,
    /// Farthest destination served at this speed, great-circle km; 0 means no limit.
    pub max_distance_km: u32,
}

/// A warehouse as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredWarehouse {
    /// The id, the key.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The region whose inventory its stock counts towards; listings filter on it.
    pub region: String,
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// Speeds offered.
    pub shipping_options: Vec<ShippingOptionRecord>,
    /// Whether routing may send new shipments here.
    pub active: bool,
    /// Set by the store: when first upserted (Unix ms), kept from then on.
    pub created_at_ms: i64,
    /// Set by the store: when last upserted (Unix ms).
    pub updated_at_ms: i64,
}

/// One page of warehouses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WarehousePage {
    /// Warehouses by id.
    pub warehouses: Vec<StoredWarehouse>,
    /// Pass this back for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Stock of one SKU in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StockRow {
    /// The SKU.
    pub sku: String,
    /// The warehouse.
    pub warehouse_id: String,
    /// Units on the shelves, allocated ones included.
    pub physical: i64,
    /// Units not allocated to a shipment: `0 <= allocatable <= physical`, always.
    pub allocatable: i64,
    /// Set by the store: 1 when the row is created, +1 on every change. 0 means "no row".
    pub version: u64,
    /// Set by the store: when the row last changed (Unix ms).
    pub updated_at_ms: i64,
}

/// Units of one SKU in a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShipmentLineRecord {
    /// The SKU.
    pub sku: String,
    /// Units, at least 1.
    pub quantity: i64,
}

/// A shipment (a suborder: the part of an order one warehouse ships) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredShipment {
    /// The id, the key.
    pub id: String,
    /// The order it ships part or all of; shipments are listed by it.
    pub order_id: String,
    /// The shipping warehouse; shipments are listed by it.
    pub warehouse_id: String,
    /// What it contains, one line per SKU.
    pub lines: Vec<ShipmentLineRecord>,
    /// The `holdfast.warehouse.v1.ShipmentStatus` number; listings filter on it.
    pub status: i32,
    /// Carrier, once shipped.
    pub carrier: String,
    /// Tracking number, once shipped.
    pub tracking_number: String,
    /// The encoded `holdfast.common.v1.Address` it goes to, opaque to the store.
    pub ship_to: Vec<u8>,
    /// The `holdfast.warehouse.v1.ShippingSpeed` number promised.
    pub shipping_speed: i32,
    /// Latest delivery the promise allows (Unix ms).
    pub promised_by_ms: i64,
    /// When routing created it (Unix ms); listings sort on it. Kept from the first write.
    pub created_at_ms: i64,
    /// When it shipped (Unix ms), 0 before.
    pub shipped_at_ms: i64,
    /// When it was delivered (Unix ms), 0 before.
    pub delivered_at_ms: i64,
    /// Set by the store: when it last changed (Unix ms).
    pub updated_at_ms: i64,
    /// Set by the store: 1 on creation, +1 on every update.
    pub version: u64,
}

/// One page of shipments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShipmentPage {
    /// Shipments by `created_at_ms` ascending, ties by id.
    pub shipments: Vec<StoredShipment>,
    /// Pass this back for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What a change does when one of its claims was taken before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfTaken {
    /// The change is a repeat: nothing is written and the first claim's record is returned
    /// ([`ChangeOutcome::Repeated`]).
    #[default]
    Repeat,
    /// The claim is a marker only: keep the existing record and apply the rest.
    Ignore,
}

/// A once-only key a change takes with it: a consumer's event id (scope `event:<group>`),
/// an order's routing (scope `route`), a goods receipt or shrinkage id, and so on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claim {
    /// The namespace of `key`.
    pub scope: String,
    /// The key.
    pub key: String,
    /// A digest of what the key was first used for; the caller compares it on a repeat.
    pub fingerprint: String,
    /// What a taken claim means for the change.
    pub if_taken: IfTaken,
}

/// A stored claim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimRecord {
    /// The namespace of `key`.
    pub scope: String,
    /// The key.
    pub key: String,
    /// The fingerprint it was taken with.
    pub fingerprint: String,
    /// The stock rows the claiming change left (its answer), one per row it touched.
    pub stock: Vec<StockRow>,
    /// When it was taken (Unix ms).
    pub created_at_ms: i64,
}

/// A relative change to one stock row. A row that does not exist yet counts as
/// `physical = allocatable = 0, version = 0` and is created by the change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StockDelta {
    /// The warehouse.
    pub warehouse_id: String,
    /// The SKU.
    pub sku: String,
    /// Added to `physical` (negative removes).
    pub physical: i64,
    /// Added to `allocatable` (negative allocates).
    pub allocatable: i64,
    /// Refuse unless the row is at this version (0: the row must not exist).
    pub expected_version: Option<u64>,
}

/// A shipment a change writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentWrite {
    /// A new shipment (version 1). Refused if its id exists.
    Create(StoredShipment),
    /// Replaces a shipment's fields if it is at `expected_version`; `order_id`,
    /// `warehouse_id` and `created_at_ms` cannot change.
    Update {
        /// The new state.
        shipment: StoredShipment,
        /// The version it was read at.
        expected_version: u64,
    },
}

/// One atomic warehouse change; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WarehouseChange {
    /// Once-only keys, checked (and taken) first.
    pub claims: Vec<Claim>,
    /// Stock deltas, applied in order; several on one row add up.
    pub stock: Vec<StockDelta>,
    /// Shipments to create or update.
    pub shipments: Vec<ShipmentWrite>,
    /// Events announcing the change, written with it.
    pub outbox: Vec<OutboxMessage>,
}

/// Why a change was not applied. Nothing of it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A stock delta would break `0 <= allocatable <= physical`, or the row is not at the
    /// expected version. This is the row as it stands.
    Stock(StockRow),
    /// A shipment update found another version, or a create found the id taken (`actual`
    /// is the stored version; 0 when there is no such shipment).
    Shipment {
        /// The shipment.
        id: String,
        /// Its stored version (0: none).
        actual: u64,
    },
}

/// What became of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Everything was written.
    Applied {
        /// Every stock row the change touched, after it, in order of first appearance.
        stock: Vec<StockRow>,
        /// Every shipment it wrote, as stored, in the order given.
        shipments: Vec<StoredShipment>,
    },
    /// A claim with [`IfTaken::Repeat`] was taken before: nothing was written. The first
    /// such claim's record.
    Repeated(ClaimRecord),
    /// A condition failed: nothing was written.
    Refused(Refusal),
}

/// Durable storage of warehouses, their stock and their shipments.
pub trait WarehouseStore: Send + Sync {
    /// Creates the warehouse or replaces its fields (keeping `created_at_ms`). Returns it
    /// as stored, and whether this call created it.
    fn upsert_warehouse(
        &self,
        warehouse: StoredWarehouse,
    ) -> impl Future<Output = Result<(StoredWarehouse, bool), StoreError>> + Send;

    /// The warehouse with this id, if any.
    fn get_warehouse(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredWarehouse>, StoreError>> + Send;

    /// A page of warehouses by id: of `region` only when given, inactive ones only with
    /// `include_inactive`, starting after `cursor`. `limit` is 1.. and capped at
    /// [`MAX_WAREHOUSE_PAGE_SIZE`].
    fn list_warehouses(
        &self,
        region: Option<&str>,
        include_inactive: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<WarehousePage, StoreError>> + Send;

    /// Stock rows of `skus` (1..=[`MAX_STOCK_READ`], repeats ignored) in one warehouse, or
    /// in every warehouse when `warehouse_id` is `None`; ordered by SKU then warehouse.
    /// Pairs without a row are absent.
    fn get_stock(
        &self,
        skus: &[String],
        warehouse_id: Option<&str>,
    ) -> impl Future<Output = Result<Vec<StockRow>, StoreError>> + Send;

    /// The shipment with this id, if any.
    fn get_shipment(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredShipment>, StoreError>> + Send;

    /// Every shipment of an order, by `created_at_ms` then id.
    fn list_shipments_by_order(
        &self,
        order_id: &str,
    ) -> impl Future<Output = Result<Vec<StoredShipment>, StoreError>> + Send;

    /// A page of a warehouse's shipments by `created_at_ms` then id, only those whose
    /// status is in `statuses` (empty: all), starting after `cursor`. `limit` is 1.. and
    /// capped at [`MAX_WAREHOUSE_PAGE_SIZE`]. A page may be short and still have a cursor.
    fn list_shipments_by_warehouse(
        &self,
        warehouse_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<ShipmentPage, StoreError>> + Send;

    /// The claim (scope, key), if taken.
    fn get_claim(
        &self,
        scope: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<ClaimRecord>, StoreError>> + Send;

    /// Applies `change`: claims first (a taken [`IfTaken::Repeat`] claim makes it a
    /// repeat), then stock deltas, shipments and outbox events, all or nothing (see the
    /// module docs for ScyllaDB). The claims are stored with the stock rows the change
    /// left, so a repeat can answer what the first call answered.
    fn apply_warehouse_change(
        &self,
        change: WarehouseChange,
    ) -> impl Future<Output = Result<ChangeOutcome, StoreError>> + Send;
}

mod check;

pub(crate) use check::{
    ShipmentPageRequest, WarehousePageRequest, applied, distinct_stock_skus, validate_change, validate_id,
    validate_warehouse,
};
