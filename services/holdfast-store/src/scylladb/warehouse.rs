//! Warehouses, stock, shipments and claims on ScyllaDB.
//!
//! A [`WarehouseChange`] spans partitions, so it runs as an intent log anchored on its
//! first [`IfTaken::Repeat`] claim (the steps, and what is and is not atomic, are written
//! in `schema/scylla.cql` above the warehouse tables). In short: every stock row is an LWT
//! (check-and-set on its version, so two changes never take the same units), every
//! shipment write is an LWT, and the change as a whole is made resumable (a crash leaves a
//! 'pending' anchor that the next attempt finishes) and undoable (a refusal mid-way writes
//! inverse changes), not atomic. A change that cannot apply to the rows as they stand is
//! refused before it writes anything. Tested against Apache Cassandra 5, not ScyllaDB.

use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, corrupt, lwt_outcome, prepare_statement, serial};
use crate::outbox::{OutboxMessage, OutboxStore, distinct_messages};
use crate::warehouse::{
    ChangeOutcome, Claim, ClaimRecord, IfTaken, Refusal, ShipmentLineRecord, ShipmentPage,
    ShipmentPageRequest, ShipmentWrite, ShippingOptionRecord, StockDelta, StockRow, StoredShipment,
    StoredWarehouse, WarehouseChange, WarehousePage, WarehousePageRequest, WarehouseStore, applied,
    distinct_stock_skus, validate_change, validate_id, validate_warehouse,
};
use crate::{StoreError, now_ms};

mod change;
mod statements;

use change::Intent;
pub(super) use statements::WarehouseStatements;

/// The one partition of `warehouses`.
const SHARD: i32 = 0;
/// How long a stock row remembers a change applied to it (seconds): the window in which
/// an interrupted change can be resumed without applying a delta twice.
const CHANGE_MEMORY_SECONDS: i32 = 7 * 24 * 60 * 60;
/// Tries of one stock row's check-and-set while other changes keep winning it.
const STOCK_ATTEMPTS: usize = 16;
/// Listing reads one page may take when filters skip most rows.
const MAX_LISTING_READS: usize = 8;

const WAREHOUSE_COLUMNS: &str =
    "id, name, region, latitude, longitude, shipping_options, active, created_at_ms, updated_at_ms";
const SHIPMENT_COLUMNS: &str = "id, order_id, warehouse_id, status, lines, carrier, tracking_number, \
     ship_to, shipping_speed, promised_by_ms, created_at_ms, shipped_at_ms, delivered_at_ms, \
     updated_at_ms, version";

type WarehouseRow = (
    String,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<Vec<(i32, i32, i32)>>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
);

type ShipmentRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<Vec<(String, i64)>>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A stock row's static columns: physical, allocatable, version, updated_at_ms.
type StockStatics = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// A claim's columns: fingerprint, state, anchor, change, stock, created_at_ms.
type ClaimRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// A stored claim with its bookkeeping.
struct StoredClaim {
    record: ClaimRecord,
    pending: bool,
    anchor: String,
    change: Option<String>,
}

fn u32_from(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn i32_from(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn warehouse_from_row(row: WarehouseRow) -> StoredWarehouse {
    let (id, name, region, latitude, longitude, options, active, created_at_ms, updated_at_ms) = row;
    StoredWarehouse {
        id,
        name: name.unwrap_or_default(),
        region: region.unwrap_or_default(),
        latitude: latitude.unwrap_or_default(),
        longitude: longitude.unwrap_or_default(),
        shipping_options: options
            .unwrap_or_default()
            .into_iter()
            .map(|(speed, max_days, max_distance_km)| ShippingOptionRecord {
                speed,
                max_days: u32_from(max_days),
                max_distance_km: u32_from(max_distance_km),
            })
            .collect(),
        active: active.unwrap_or_default(),
        created_at_ms: created_at_ms.unwrap_or_default(),
        updated_at_ms: updated_at_ms.unwrap_or_default(),
    }
}

fn options_of(warehouse: &StoredWarehouse) -> Vec<(i32, i32, i32)> {
    warehouse
        .shipping_options
        .iter()
        .map(|o| (o.speed, i32_from(o.max_days), i32_from(o.max_distance_km)))
        .collect()
}

fn shipment_from_row(row: ShipmentRow) -> Result<StoredShipment, StoreError> {
    let (
        id,
        order_id,
        warehouse_id,
        status,
        lines,
        carrier,
        tracking_number,
        ship_to,
        shipping_speed,
        promised_by_ms,
        created_at_ms,
        shipped_at_ms,
        delivered_at_ms,
        updated_at_ms,
        version,
    ) = row;
    Ok(StoredShipment {
        id,
        order_id: order_id.unwrap_or_default(),
        warehouse_id: warehouse_id.unwrap_or_default(),
        lines: lines
            .unwrap_or_default()
            .into_iter()
            .map(|(sku, quantity)| ShipmentLineRecord { sku, quantity })
            .collect(),
        status: status.unwrap_or_default(),
        carrier: carrier.unwrap_or_default(),
        tracking_number: tracking_number.unwrap_or_default(),
        ship_to: ship_to.unwrap_or_default(),
        shipping_speed: shipping_speed.unwrap_or_default(),
        promised_by_ms: promised_by_ms.unwrap_or_default(),
        created_at_ms: created_at_ms.unwrap_or_default(),
        shipped_at_ms: shipped_at_ms.unwrap_or_default(),
        delivered_at_ms: delivered_at_ms.unwrap_or_default(),
        updated_at_ms: updated_at_ms.unwrap_or_default(),
        version: StoreError::version_from_i64(version.unwrap_or_default())?,
    })
}

fn shipment_lines(shipment: &StoredShipment) -> Vec<(String, i64)> {
    shipment
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect()
}

impl ScyllaStore {
    async fn warehouse_statements(&self) -> Result<&WarehouseStatements, StoreError> {
        Ok(&self.statements().await?.warehouse)
    }

    async fn read_stock(
        &self,
        statement: &PreparedStatement,
        warehouse_id: &str,
        sku: &str,
    ) -> Result<Option<StockRow>, StoreError> {
        let rows: Vec<StockStatics> = self.rows(statement, (warehouse_id, sku)).await?;
        let Some((physical, allocatable, version, updated_at_ms)) = rows.into_iter().next() else {
            return Ok(None);
        };
        let Some(version) = version else {
            return Ok(None);
        };
        Ok(Some(StockRow {
            sku: sku.to_string(),
            warehouse_id: warehouse_id.to_string(),
            physical: physical.unwrap_or_default(),
            allocatable: allocatable.unwrap_or_default(),
            version: StoreError::version_from_i64(version)?,
            updated_at_ms: updated_at_ms.unwrap_or_default(),
        }))
    }

    async fn read_shipment(
        &self,
        statement: &PreparedStatement,
        id: &str,
    ) -> Result<Option<StoredShipment>, StoreError> {
        match self
            .rows::<ShipmentRow>(statement, (id,))
            .await?
            .into_iter()
            .next()
        {
            Some(row) => shipment_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    async fn read_claim(&self, scope: &str, key: &str) -> Result<Option<StoredClaim>, StoreError> {
        let statements = self.warehouse_statements().await?;
        let Some((fingerprint, state, anchor, change, stock, created_at_ms)) = self
            .rows::<ClaimRow>(&statements.get_claim, (scope, key))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let stock: Vec<StockRow> = match stock.as_deref() {
            None | Some("") => Vec::new(),
            Some(json) => serde_json::from_str(json).map_err(corrupt)?,
        };
        Ok(Some(StoredClaim {
            record: ClaimRecord {
                scope: scope.to_string(),
                key: key.to_string(),
                fingerprint: fingerprint.unwrap_or_default(),
                stock,
                created_at_ms: created_at_ms.unwrap_or_default(),
            },
            pending: state.as_deref() != Some("applied"),
            anchor: anchor.unwrap_or_default(),
            change,
        }))
    }
}

impl WarehouseStore for ScyllaStore {
    async fn upsert_warehouse(
        &self,
        warehouse: StoredWarehouse,
    ) -> Result<(StoredWarehouse, bool), StoreError> {
        validate_warehouse(&warehouse)?;
        let statements = self.warehouse_statements().await?;
        let now = now_ms();
        let created = StoredWarehouse {
            created_at_ms: now,
            updated_at_ms: now,
            ..warehouse.clone()
        };
        let result = self
            .run(
                &statements.insert_warehouse_if_absent,
                (
                    &created.id,
                    &created.name,
                    &created.region,
                    created.latitude,
                    created.longitude,
                    options_of(&created),
                    created.active,
                    created.created_at_ms,
                    created.updated_at_ms,
                ),
            )
            .await?;
        if lwt_outcome(result)?.0 {
            return Ok((created, true));
        }
        self.run(
            &statements.update_warehouse,
            (
                &warehouse.name,
                &warehouse.region,
                warehouse.latitude,
                warehouse.longitude,
                options_of(&warehouse),
                warehouse.active,
                now,
                &warehouse.id,
            ),
        )
        .await?;
        let stored = self
            .get_warehouse(&warehouse.id)
            .await?
            .ok_or_else(|| StoreError::Unavailable(format!("warehouse {:?} vanished", warehouse.id)))?;
        Ok((stored, false))
    }

    async fn get_warehouse(&self, id: &str) -> Result<Option<StoredWarehouse>, StoreError> {
        validate_id("warehouse", id)?;
        let statements = self.warehouse_statements().await?;
        Ok(self
            .rows::<WarehouseRow>(&statements.get_warehouse, (id,))
            .await?
            .into_iter()
            .next()
            .map(warehouse_from_row))
    }

    async fn list_warehouses(
        &self,
        region: Option<&str>,
        include_inactive: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<WarehousePage, StoreError> {
        let request = WarehousePageRequest::new(region, include_inactive, cursor, limit)?;
        let statements = self.warehouse_statements().await?;
        let fetch = request.fetch();
        let fetch_i32 = i32::try_from(fetch).unwrap_or(i32::MAX);
        let mut after = request.after_id.clone();
        let mut found = Vec::with_capacity(fetch);
        // One small partition: read on until the page is full or it ends.
        loop {
            let rows: Vec<WarehouseRow> = self
                .rows(&statements.list_warehouses, (&after, fetch_i32))
                .await?;
            let exhausted = rows.len() < fetch;
            if let Some(last) = rows.last() {
                after.clone_from(&last.0);
            }
            found.extend(
                rows.into_iter()
                    .map(warehouse_from_row)
                    .filter(|w| region.is_none_or(|r| w.region == r) && (include_inactive || w.active)),
            );
            if exhausted || found.len() >= fetch {
                break;
            }
        }
        found.truncate(fetch);
        Ok(request.page(found))
    }

    async fn get_stock(
        &self,
        skus: &[String],
        warehouse_id: Option<&str>,
    ) -> Result<Vec<StockRow>, StoreError> {
        let mut skus = distinct_stock_skus(skus)?;
        skus.sort_unstable();
        let statements = self.warehouse_statements().await?;
        let mut rows = Vec::new();
        for sku in &skus {
            let warehouses: Vec<String> = match warehouse_id {
                Some(id) => {
                    validate_id("warehouse", id)?;
                    vec![id.to_string()]
                }
                None => self
                    .rows::<(String,)>(&statements.stock_warehouses, (sku,))
                    .await?
                    .into_iter()
                    .map(|(id,)| id)
                    .collect(),
            };
            for warehouse in warehouses {
                rows.extend(self.read_stock(&statements.get_stock, &warehouse, sku).await?);
            }
        }
        Ok(rows)
    }

    async fn get_shipment(&self, id: &str) -> Result<Option<StoredShipment>, StoreError> {
        validate_id("shipment", id)?;
        let statements = self.warehouse_statements().await?;
        self.read_shipment(&statements.get_shipment, id).await
    }

    async fn list_shipments_by_order(&self, order_id: &str) -> Result<Vec<StoredShipment>, StoreError> {
        validate_id("order", order_id)?;
        let statements = self.warehouse_statements().await?;
        let ids: Vec<(String,)> = self.rows(&statements.list_by_order, (order_id,)).await?;
        let mut shipments = Vec::with_capacity(ids.len());
        for (id,) in ids {
            // A listing row whose shipment was never written (or was undone) is skipped.
            if let Some(shipment) = self.read_shipment(&statements.get_shipment, &id).await? {
                shipments.push(shipment);
            }
        }
        Ok(shipments)
    }

    async fn list_shipments_by_warehouse(
        &self,
        warehouse_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ShipmentPage, StoreError> {
        let request = ShipmentPageRequest::new(warehouse_id, statuses, cursor, limit)?;
        let statements = self.warehouse_statements().await?;
        let fetch = request.fetch();
        let fetch_i32 = i32::try_from(fetch).unwrap_or(i32::MAX);
        let mut after = request.after.clone().unwrap_or((i64::MIN, String::new()));
        let mut found = Vec::with_capacity(fetch);
        let mut scanned_to = None;
        for read in 1..=MAX_LISTING_READS {
            let rows: Vec<(i64, String)> = self
                .rows(
                    &statements.list_by_warehouse,
                    (warehouse_id, after.0, &after.1, fetch_i32),
                )
                .await?;
            let exhausted = rows.len() < fetch;
            let last = rows.last().cloned();
            for (_, id) in rows {
                if let Some(shipment) = self.read_shipment(&statements.get_shipment, &id).await?
                    && request.keeps(shipment.status)
                {
                    found.push(shipment);
                    if found.len() == fetch {
                        break;
                    }
                }
            }
            if exhausted || found.len() == fetch {
                break;
            }
            if let Some(last) = last {
                after = last;
            }
            if read == MAX_LISTING_READS {
                scanned_to = Some(after.clone());
            }
        }
        Ok(request.page(found, scanned_to))
    }

    async fn get_claim(&self, scope: &str, key: &str) -> Result<Option<ClaimRecord>, StoreError> {
        if scope.is_empty() || key.is_empty() {
            return Err(StoreError::InvalidArgument("claim scope or key is empty".into()));
        }
        Ok(self
            .read_claim(scope, key)
            .await?
            .filter(|claim| !claim.pending)
            .map(|claim| claim.record))
    }

    async fn apply_warehouse_change(&self, change: WarehouseChange) -> Result<ChangeOutcome, StoreError> {
        validate_change(&change)?;
        let outbox = distinct_messages(change.outbox.clone())?;
        let statements = self.warehouse_statements().await?;
        let Some(anchor_claim) = change
            .claims
            .iter()
            .find(|c| c.if_taken == IfTaken::Repeat)
            .cloned()
        else {
            // Nothing to anchor an intent on: a plain sequence (documented on the trait).
            let anchor = format!("plain:{}", uuid_like());
            return self.run_intent(&change, outbox, &anchor, false).await;
        };
        let anchor = format!("{}/{}", anchor_claim.scope, anchor_claim.key);

        // 1. The anchor: a pending one is an interrupted attempt of this change to finish.
        if let Some(stored) = self.read_claim(&anchor_claim.scope, &anchor_claim.key).await? {
            if !stored.pending {
                return Ok(ChangeOutcome::Repeated(stored.record));
            }
            let intent: Intent = serde_json::from_str(stored.change.as_deref().unwrap_or_default())
                .map_err(|e| StoreError::Corrupt(format!("stored warehouse change of {anchor}: {e}")))?;
            let (stored_change, stored_outbox) = intent.change();
            return self
                .run_intent(&stored_change, stored_outbox, &anchor, true)
                .await;
        }
        let intent = serde_json::to_string(&Intent::of(&change, &outbox)).map_err(corrupt)?;
        let now = now_ms();
        let result = self
            .run(
                &statements.insert_claim_if_absent,
                (
                    &anchor_claim.scope,
                    &anchor_claim.key,
                    &anchor_claim.fingerprint,
                    &anchor,
                    Some(intent.as_str()),
                    now,
                ),
            )
            .await?;
        if !lwt_outcome(result)?.0 {
            return match self.read_claim(&anchor_claim.scope, &anchor_claim.key).await? {
                Some(stored) if !stored.pending => Ok(ChangeOutcome::Repeated(stored.record)),
                _ => Err(StoreError::Unavailable(format!(
                    "another attempt of change {anchor} is running; retry"
                ))),
            };
        }
        // The other claims, naming the anchor.
        let mut taken = vec![anchor_claim.clone()];
        for claim in change.claims.iter().filter(|c| **c != anchor_claim) {
            let result = self
                .run(
                    &statements.insert_claim_if_absent,
                    (
                        &claim.scope,
                        &claim.key,
                        &claim.fingerprint,
                        &anchor,
                        None::<&str>,
                        now,
                    ),
                )
                .await?;
            if lwt_outcome(result)?.0 {
                taken.push(claim.clone());
                continue;
            }
            let existing = self.read_claim(&claim.scope, &claim.key).await?;
            match existing {
                Some(existing) if existing.anchor == anchor => taken.push(claim.clone()),
                Some(existing) if claim.if_taken == IfTaken::Repeat => {
                    self.release_claims(&taken, &anchor).await?;
                    return Ok(ChangeOutcome::Repeated(existing.record));
                }
                _ => {}
            }
        }
        let applied_change = WarehouseChange {
            claims: taken.clone(),
            ..change
        };
        let outcome = self.run_intent(&applied_change, outbox, &anchor, false).await?;
        if matches!(outcome, ChangeOutcome::Refused(_)) {
            self.release_claims(&taken, &anchor).await?;
        }
        Ok(outcome)
    }
}

/// A unique enough id for an unanchored change's markers (time and a process counter).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
