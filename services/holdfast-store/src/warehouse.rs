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

use crate::{OutboxMessage, StoreError, cursor};

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

/// Refuses warehouses no backend can key or list.
pub(crate) fn validate_warehouse(warehouse: &StoredWarehouse) -> Result<(), StoreError> {
    if warehouse.id.is_empty() {
        return Err(StoreError::InvalidArgument("warehouse id is empty".into()));
    }
    if warehouse.region.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "warehouse {:?} has an empty region",
            warehouse.id
        )));
    }
    if !warehouse.latitude.is_finite() || !warehouse.longitude.is_finite() {
        return Err(StoreError::InvalidArgument(format!(
            "warehouse {:?} has a location that is not a number",
            warehouse.id
        )));
    }
    Ok(())
}

/// Refuses an empty id of `what`.
pub(crate) fn validate_id(what: &str, id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::InvalidArgument(format!("{what} id is empty")));
    }
    Ok(())
}

/// The distinct, non-empty SKUs of a stock read, in order.
pub(crate) fn distinct_stock_skus(skus: &[String]) -> Result<Vec<String>, StoreError> {
    if skus.is_empty() || skus.len() > MAX_STOCK_READ {
        return Err(StoreError::InvalidArgument(format!(
            "a stock read names 1..{MAX_STOCK_READ} SKUs, not {}",
            skus.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(skus.len());
    let mut out = Vec::with_capacity(skus.len());
    for sku in skus {
        if sku.is_empty() {
            return Err(StoreError::InvalidArgument("empty SKU in a stock read".into()));
        }
        if seen.insert(sku.as_str()) {
            out.push(sku.clone());
        }
    }
    Ok(out)
}

/// Checks a change before any backend touches it: keys present, shipment writes whole,
/// no stock delta that cannot be right whatever is stored.
pub(crate) fn validate_change(change: &WarehouseChange) -> Result<(), StoreError> {
    for claim in &change.claims {
        if claim.scope.is_empty() || claim.key.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "claim ({:?}, {:?}) has an empty scope or key",
                claim.scope, claim.key
            )));
        }
    }
    let mut claimed = std::collections::HashSet::new();
    for claim in &change.claims {
        if !claimed.insert((claim.scope.as_str(), claim.key.as_str())) {
            return Err(StoreError::InvalidArgument(format!(
                "claim ({:?}, {:?}) appears twice in one change",
                claim.scope, claim.key
            )));
        }
    }
    for delta in &change.stock {
        if delta.warehouse_id.is_empty() || delta.sku.is_empty() {
            return Err(StoreError::InvalidArgument(
                "stock delta with an empty warehouse id or SKU".into(),
            ));
        }
    }
    let mut written = std::collections::HashSet::new();
    for write in &change.shipments {
        let shipment = match write {
            ShipmentWrite::Create(shipment) | ShipmentWrite::Update { shipment, .. } => shipment,
        };
        validate_id("shipment", &shipment.id)?;
        if shipment.order_id.is_empty() || shipment.warehouse_id.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "shipment {:?} has an empty order or warehouse id",
                shipment.id
            )));
        }
        if !written.insert(shipment.id.as_str()) {
            return Err(StoreError::InvalidArgument(format!(
                "shipment {:?} is written twice in one change",
                shipment.id
            )));
        }
    }
    Ok(())
}

/// `row` after `delta`, or `None` if that breaks `0 <= allocatable <= physical` or the
/// expected version. The version and time are left for the backend to set.
pub(crate) fn applied(row: &StockRow, delta: &StockDelta) -> Option<StockRow> {
    if delta
        .expected_version
        .is_some_and(|expected| expected != row.version)
    {
        return None;
    }
    let physical = row.physical.checked_add(delta.physical)?;
    let allocatable = row.allocatable.checked_add(delta.allocatable)?;
    (0 <= allocatable && allocatable <= physical).then(|| StockRow {
        physical,
        allocatable,
        ..row.clone()
    })
}

/// A warehouse listing request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WarehousePageRequest {
    /// Return warehouses with ids strictly after this; empty on the first page.
    pub after_id: String,
    /// Page size, 1..=MAX_WAREHOUSE_PAGE_SIZE.
    pub limit: usize,
    partition: String,
}

impl WarehousePageRequest {
    pub(crate) fn new(
        region: Option<&str>,
        include_inactive: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Self, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidArgument("page size must be at least 1".into()));
        }
        if region == Some("") {
            return Err(StoreError::InvalidArgument(
                "region filter is empty (pass none for every region)".into(),
            ));
        }
        // A cursor is bound to the filter it was made with.
        let partition = format!("warehouses:{}:{include_inactive}", region.unwrap_or("*"));
        let after_id = cursor
            .map(|cursor| cursor::decode(&partition, cursor))
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            after_id,
            limit: limit.min(MAX_WAREHOUSE_PAGE_SIZE) as usize,
            partition,
        })
    }

    /// Rows to read: one more than the page, to learn whether another follows.
    pub(crate) fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// The page from up to `fetch()` matching warehouses in id order.
    pub(crate) fn page(&self, mut rows: Vec<StoredWarehouse>) -> WarehousePage {
        let next_cursor = if rows.len() > self.limit {
            rows.truncate(self.limit);
            rows.last().map(|last| cursor::encode(&self.partition, &last.id))
        } else {
            None
        };
        WarehousePage {
            warehouses: rows,
            next_cursor,
        }
    }
}

/// A warehouse's shipment listing request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShipmentPageRequest {
    /// Return shipments strictly after this (created_at_ms, id); `None` on the first page.
    pub after: Option<(i64, String)>,
    /// Statuses to keep, sorted and distinct; empty keeps all.
    pub statuses: Vec<i32>,
    /// Page size, 1..=MAX_WAREHOUSE_PAGE_SIZE.
    pub limit: usize,
    partition: String,
}

impl ShipmentPageRequest {
    pub(crate) fn new(
        warehouse_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Self, StoreError> {
        validate_id("warehouse", warehouse_id)?;
        if limit == 0 {
            return Err(StoreError::InvalidArgument("page size must be at least 1".into()));
        }
        let mut statuses = statuses.to_vec();
        statuses.sort_unstable();
        statuses.dedup();
        let partition = format!("shipments:{warehouse_id}:{statuses:?}");
        let after = cursor
            .map(|cursor| cursor::decode_position(&partition, cursor))
            .transpose()?;
        Ok(Self {
            after,
            statuses,
            limit: limit.min(MAX_WAREHOUSE_PAGE_SIZE) as usize,
            partition,
        })
    }

    /// Matching rows to read: one more than the page.
    pub(crate) fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// Whether a shipment with this status belongs on the page.
    pub(crate) fn keeps(&self, status: i32) -> bool {
        self.statuses.is_empty() || self.statuses.binary_search(&status).is_ok()
    }

    /// The page from up to `fetch()` matching shipments in listing order; `scanned_to` is
    /// where a backend that filters as it reads stopped short of the listing's end.
    pub(crate) fn page(
        &self,
        mut rows: Vec<StoredShipment>,
        scanned_to: Option<(i64, String)>,
    ) -> ShipmentPage {
        let next_cursor = if rows.len() > self.limit {
            rows.truncate(self.limit);
            rows.last()
                .map(|last| cursor::encode_position(&self.partition, last.created_at_ms, &last.id))
        } else {
            scanned_to.map(|(at, id)| cursor::encode_position(&self.partition, at, &id))
        };
        ShipmentPage {
            shipments: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(physical: i64, allocatable: i64, version: u64) -> StockRow {
        StockRow {
            sku: "s".into(),
            warehouse_id: "w".into(),
            physical,
            allocatable,
            version,
            updated_at_ms: 0,
        }
    }

    fn delta(physical: i64, allocatable: i64, expected_version: Option<u64>) -> StockDelta {
        StockDelta {
            warehouse_id: "w".into(),
            sku: "s".into(),
            physical,
            allocatable,
            expected_version,
        }
    }

    #[test]
    fn applied_keeps_allocatable_between_zero_and_physical() {
        assert_eq!(applied(&row(10, 4, 3), &delta(0, -4, None)), Some(row(10, 0, 3)));
        assert_eq!(
            applied(&row(10, 4, 3), &delta(0, -5, None)),
            None,
            "over-allocation"
        );
        assert_eq!(
            applied(&row(10, 4, 3), &delta(-7, 0, None)),
            None,
            "physical below allocated"
        );
        assert_eq!(applied(&row(10, 4, 3), &delta(-6, 0, None)), Some(row(4, 4, 3)));
        assert_eq!(applied(&row(0, 0, 0), &delta(5, 5, Some(0))), Some(row(5, 5, 0)));
        assert_eq!(
            applied(&row(10, 4, 3), &delta(1, 1, Some(2))),
            None,
            "version moved on"
        );
        assert_eq!(
            applied(&row(i64::MAX, 0, 1), &delta(1, 0, None)),
            None,
            "overflow"
        );
    }

    #[test]
    fn validate_change_refuses_empty_keys_and_double_writes() {
        let ok = WarehouseChange {
            claims: vec![Claim {
                scope: "route".into(),
                key: "o".into(),
                ..Claim::default()
            }],
            ..WarehouseChange::default()
        };
        assert_eq!(validate_change(&ok), Ok(()));
        let mut twice = ok.clone();
        twice.claims.push(twice.claims[0].clone());
        assert!(validate_change(&twice).is_err());
        let empty_sku = WarehouseChange {
            stock: vec![StockDelta {
                sku: String::new(),
                ..delta(1, 1, None)
            }],
            ..WarehouseChange::default()
        };
        assert!(validate_change(&empty_sku).is_err());
        let shipment = StoredShipment {
            id: "x".into(),
            order_id: "o".into(),
            warehouse_id: "w".into(),
            ..StoredShipment::default()
        };
        let double = WarehouseChange {
            shipments: vec![
                ShipmentWrite::Create(shipment.clone()),
                ShipmentWrite::Update {
                    shipment,
                    expected_version: 1,
                },
            ],
            ..WarehouseChange::default()
        };
        assert!(validate_change(&double).is_err());
    }

    #[test]
    fn page_requests_bind_cursors_to_their_filter() {
        let request = WarehousePageRequest::new(Some("eu"), false, None, 1).unwrap();
        let page = request.page(vec![
            StoredWarehouse {
                id: "a".into(),
                ..StoredWarehouse::default()
            },
            StoredWarehouse {
                id: "b".into(),
                ..StoredWarehouse::default()
            },
        ]);
        let cursor = page.next_cursor.expect("more");
        let next = WarehousePageRequest::new(Some("eu"), false, Some(&cursor), 1).unwrap();
        assert_eq!(next.after_id, "a");
        assert!(WarehousePageRequest::new(Some("us"), false, Some(&cursor), 1).is_err());
        assert!(WarehousePageRequest::new(Some("eu"), true, Some(&cursor), 1).is_err());
        assert!(WarehousePageRequest::new(None, false, None, 0).is_err());
        assert!(WarehousePageRequest::new(Some(""), false, None, 1).is_err());

        let shipments = ShipmentPageRequest::new("w", &[3, 1, 3], None, u32::MAX).unwrap();
        assert_eq!(shipments.statuses, [1, 3]);
        assert_eq!(shipments.limit, MAX_WAREHOUSE_PAGE_SIZE as usize);
        assert!(shipments.keeps(3) && !shipments.keeps(2));
        let short = shipments.page(vec![], Some((5, "q".into())));
        let cursor = short.next_cursor.expect("scan position");
        let next = ShipmentPageRequest::new("w", &[1, 3], Some(&cursor), 5).unwrap();
        assert_eq!(next.after, Some((5, "q".to_string())));
        assert!(ShipmentPageRequest::new("w", &[], Some(&cursor), 5).is_err());
    }
}
