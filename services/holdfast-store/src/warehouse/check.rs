//! The checks every backend runs before it writes warehouse data (ids, pages, one change's
//! claims, deltas and shipments), the stock arithmetic of one delta, and the page requests
//! that bind a listing's cursor to its filter. It uses the aggregate's types from the
//! parent module; the backends reach it through the parent's re-export.

use super::{
    MAX_STOCK_READ, MAX_WAREHOUSE_PAGE_SIZE, ShipmentPage, ShipmentWrite, StockDelta, StockRow,
    StoredShipment, StoredWarehouse, WarehouseChange, WarehousePage,
};
use crate::{StoreError, cursor};

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
    use crate::warehouse::Claim;

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
