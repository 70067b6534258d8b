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

use std::collections::{BTreeMap, HashMap};

use scylla::client::session::Session;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use serde::{Deserialize, Serialize};

use super::{BatchRow, ScyllaStore, corrupt, lwt_outcome, prepare_statement, serial};
use crate::outbox::{OutboxMessage, OutboxStore, distinct_messages};
use crate::warehouse::{
    ChangeOutcome, Claim, ClaimRecord, IfTaken, Refusal, ShipmentLineRecord, ShipmentPage,
    ShipmentPageRequest, ShipmentWrite, ShippingOptionRecord, StockDelta, StockRow, StoredShipment,
    StoredWarehouse, WarehouseChange, WarehousePage, WarehousePageRequest, WarehouseStore, applied,
    distinct_stock_skus, validate_change, validate_id, validate_warehouse,
};
use crate::{StoreError, now_ms};

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

/// The warehouse statements, prepared.
pub(super) struct WarehouseStatements {
    get_warehouse: PreparedStatement,
    insert_warehouse_if_absent: PreparedStatement,
    update_warehouse: PreparedStatement,
    list_warehouses: PreparedStatement,
    get_stock: PreparedStatement,
    get_stock_serial: PreparedStatement,
    stock_change: PreparedStatement,
    set_stock_if_version: PreparedStatement,
    insert_stock_change: PreparedStatement,
    index_stock: PreparedStatement,
    stock_warehouses: PreparedStatement,
    get_shipment: PreparedStatement,
    get_shipment_serial: PreparedStatement,
    insert_shipment_if_absent: PreparedStatement,
    update_shipment_if_version: PreparedStatement,
    delete_shipment_if_version: PreparedStatement,
    index_by_order: PreparedStatement,
    index_by_warehouse: PreparedStatement,
    list_by_order: PreparedStatement,
    list_by_warehouse: PreparedStatement,
    get_claim: PreparedStatement,
    insert_claim_if_absent: PreparedStatement,
    mark_claim_applied: PreparedStatement,
    delete_claim_if_pending: PreparedStatement,
}

impl WarehouseStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        let get_stock = prepare(
            format!(
                "SELECT physical, allocatable, version, updated_at_ms FROM {ks}.warehouse_stock \
                 WHERE warehouse_id = ? AND sku = ? LIMIT 1"
            ),
            true,
        )
        .await?;
        let get_shipment = prepare(
            format!("SELECT {SHIPMENT_COLUMNS} FROM {ks}.shipments WHERE id = ?"),
            true,
        )
        .await?;
        let get_claim = prepare(
            format!(
                "SELECT fingerprint, state, anchor, change, stock, created_at_ms FROM {ks}.warehouse_claims \
                 WHERE scope = ? AND key = ?"
            ),
            true,
        )
        .await?;
        Ok(Self {
            get_warehouse: prepare(
                format!("SELECT {WAREHOUSE_COLUMNS} FROM {ks}.warehouses WHERE shard = {SHARD} AND id = ?"),
                true,
            )
            .await?,
            insert_warehouse_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.warehouses (shard, {WAREHOUSE_COLUMNS}) \
                     VALUES ({SHARD}, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            update_warehouse: prepare(
                format!(
                    "UPDATE {ks}.warehouses SET name = ?, region = ?, latitude = ?, longitude = ?, \
                     shipping_options = ?, active = ?, updated_at_ms = ? WHERE shard = {SHARD} AND id = ?"
                ),
                true,
            )
            .await?,
            list_warehouses: prepare(
                format!(
                    "SELECT {WAREHOUSE_COLUMNS} FROM {ks}.warehouses WHERE shard = {SHARD} AND id > ? LIMIT ?"
                ),
                true,
            )
            .await?,
            get_stock_serial: serial(&get_stock),
            get_stock,
            stock_change: prepare(
                format!(
                    "SELECT change_id FROM {ks}.warehouse_stock WHERE warehouse_id = ? AND sku = ? AND change_id = ?"
                ),
                true,
            )
            .await?,
            set_stock_if_version: prepare(
                format!(
                    "UPDATE {ks}.warehouse_stock SET physical = ?, allocatable = ?, version = ?, updated_at_ms = ? \
                     WHERE warehouse_id = ? AND sku = ? IF version = ?"
                ),
                false,
            )
            .await?,
            insert_stock_change: prepare(
                format!(
                    "INSERT INTO {ks}.warehouse_stock (warehouse_id, sku, change_id) VALUES (?, ?, ?) \
                     USING TTL {CHANGE_MEMORY_SECONDS}"
                ),
                false,
            )
            .await?,
            index_stock: prepare(
                format!("INSERT INTO {ks}.warehouse_stock_by_sku (sku, warehouse_id) VALUES (?, ?)"),
                true,
            )
            .await?,
            stock_warehouses: prepare(
                format!("SELECT warehouse_id FROM {ks}.warehouse_stock_by_sku WHERE sku = ?"),
                true,
            )
            .await?,
            get_shipment_serial: serial(&get_shipment),
            get_shipment,
            insert_shipment_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.shipments ({SHIPMENT_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            update_shipment_if_version: prepare(
                format!(
                    "UPDATE {ks}.shipments SET status = ?, lines = ?, carrier = ?, tracking_number = ?, \
                     ship_to = ?, shipping_speed = ?, promised_by_ms = ?, shipped_at_ms = ?, \
                     delivered_at_ms = ?, updated_at_ms = ?, version = ? WHERE id = ? IF version = ?"
                ),
                false,
            )
            .await?,
            delete_shipment_if_version: prepare(
                format!("DELETE FROM {ks}.shipments WHERE id = ? IF version = ?"),
                false,
            )
            .await?,
            index_by_order: prepare(
                format!("INSERT INTO {ks}.shipments_by_order (order_id, created_at_ms, id) VALUES (?, ?, ?)"),
                true,
            )
            .await?,
            index_by_warehouse: prepare(
                format!(
                    "INSERT INTO {ks}.shipments_by_warehouse (warehouse_id, created_at_ms, id) VALUES (?, ?, ?)"
                ),
                true,
            )
            .await?,
            list_by_order: prepare(
                format!("SELECT id FROM {ks}.shipments_by_order WHERE order_id = ?"),
                true,
            )
            .await?,
            list_by_warehouse: prepare(
                format!(
                    "SELECT created_at_ms, id FROM {ks}.shipments_by_warehouse \
                     WHERE warehouse_id = ? AND (created_at_ms, id) > (?, ?) LIMIT ?"
                ),
                true,
            )
            .await?,
            get_claim: serial(&get_claim),
            insert_claim_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.warehouse_claims (scope, key, fingerprint, state, anchor, change, stock, \
                     created_at_ms) VALUES (?, ?, ?, 'pending', ?, ?, '[]', ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            mark_claim_applied: prepare(
                format!(
                    "UPDATE {ks}.warehouse_claims SET state = 'applied', stock = ? WHERE scope = ? AND key = ?"
                ),
                true,
            )
            .await?,
            delete_claim_if_pending: prepare(
                format!(
                    "DELETE FROM {ks}.warehouse_claims WHERE scope = ? AND key = ? IF state = 'pending' AND anchor = ?"
                ),
                false,
            )
            .await?,
        })
    }
}

/// A change as the anchor claim stores it (JSON), so another attempt can finish it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Intent {
    /// (scope, key, fingerprint, repeat) per claim.
    claims: Vec<(String, String, String, bool)>,
    stock: Vec<StockDelta>,
    shipments: Vec<ShipmentWrite>,
    outbox: Vec<IntentEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IntentEvent {
    id: String,
    topic: String,
    key: String,
    event_type: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
    created_at_ms: i64,
}

impl Intent {
    fn of(change: &WarehouseChange, outbox: &[OutboxMessage]) -> Self {
        Self {
            claims: change
                .claims
                .iter()
                .map(|c| {
                    (
                        c.scope.clone(),
                        c.key.clone(),
                        c.fingerprint.clone(),
                        c.if_taken == IfTaken::Repeat,
                    )
                })
                .collect(),
            stock: change.stock.clone(),
            shipments: change.shipments.clone(),
            outbox: outbox
                .iter()
                .map(|m| IntentEvent {
                    id: m.id.clone(),
                    topic: m.topic.clone(),
                    key: m.key.clone(),
                    event_type: m.event_type.clone(),
                    payload: m.payload.clone(),
                    headers: m.headers.clone(),
                    created_at_ms: m.created_at_ms,
                })
                .collect(),
        }
    }

    fn change(&self) -> (WarehouseChange, Vec<OutboxMessage>) {
        let outbox: Vec<OutboxMessage> = self
            .outbox
            .iter()
            .map(|e| OutboxMessage {
                id: e.id.clone(),
                topic: e.topic.clone(),
                key: e.key.clone(),
                event_type: e.event_type.clone(),
                payload: e.payload.clone(),
                headers: e.headers.clone(),
                created_at_ms: e.created_at_ms,
            })
            .collect();
        let change = WarehouseChange {
            claims: self
                .claims
                .iter()
                .map(|(scope, key, fingerprint, repeat)| Claim {
                    scope: scope.clone(),
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                    if_taken: if *repeat { IfTaken::Repeat } else { IfTaken::Ignore },
                })
                .collect(),
            stock: self.stock.clone(),
            shipments: self.shipments.clone(),
            outbox: outbox.clone(),
        };
        (change, outbox)
    }
}

/// A stored claim with its bookkeeping.
struct StoredClaim {
    record: ClaimRecord,
    pending: bool,
    anchor: String,
    change: Option<String>,
}

/// Something a running change wrote that a refusal must take back.
enum Undo {
    /// A stock delta it applied.
    Stock(StockDelta),
    /// A created shipment, now at this version.
    Created(String, u64),
    /// An updated shipment: its state before, and the version it is at now.
    Updated(Box<StoredShipment>, u64),
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

    /// Applies `delta` to its row once under `change_id`: a no-op if the row already
    /// records that change. `Ok(Err(row))` when it cannot apply (the row as it stands).
    async fn apply_stock_delta(
        &self,
        delta: &StockDelta,
        change_id: &str,
    ) -> Result<Result<StockRow, StockRow>, StoreError> {
        self.apply_stock_deltas(std::slice::from_ref(delta), change_id)
            .await
    }

    /// Applies `deltas` (all on one row, in order, each checked as it comes, as one
    /// version step: the row moves once per change) once under `change_id`.
    /// `Ok(Err(row))` when one of them cannot apply (the row as it stands).
    async fn apply_stock_deltas(
        &self,
        deltas: &[StockDelta],
        change_id: &str,
    ) -> Result<Result<StockRow, StockRow>, StoreError> {
        let Some(delta) = deltas.first() else {
            return Err(StoreError::InvalidArgument("no stock delta to apply".into()));
        };
        let statements = self.warehouse_statements().await?;
        self.run(&statements.index_stock, (&delta.sku, &delta.warehouse_id))
            .await?;
        for _ in 0..STOCK_ATTEMPTS {
            let current = self
                .read_stock(&statements.get_stock_serial, &delta.warehouse_id, &delta.sku)
                .await?
                .unwrap_or_else(|| StockRow {
                    sku: delta.sku.clone(),
                    warehouse_id: delta.warehouse_id.clone(),
                    ..StockRow::default()
                });
            let seen: Vec<(String,)> = self
                .rows(
                    &statements.stock_change,
                    (&delta.warehouse_id, &delta.sku, change_id),
                )
                .await?;
            if !seen.is_empty() {
                return Ok(Ok(current));
            }
            let mut next = current.clone();
            for delta in deltas {
                match applied(&next, delta) {
                    Some(row) => next = row,
                    None => return Ok(Err(current)),
                }
            }
            next.version = current.version + 1;
            next.updated_at_ms = now_ms();
            let expected = (current.version > 0)
                .then(|| StoreError::version_to_i64(current.version))
                .transpose()?;
            let mut batch = Batch::default();
            batch.append_statement(statements.set_stock_if_version.clone());
            batch.append_statement(statements.insert_stock_change.clone());
            let rows: Vec<BatchRow> = vec![
                Box::new((
                    next.physical,
                    next.allocatable,
                    StoreError::version_to_i64(next.version)?,
                    next.updated_at_ms,
                    delta.warehouse_id.clone(),
                    delta.sku.clone(),
                    expected,
                )),
                Box::new((
                    delta.warehouse_id.clone(),
                    delta.sku.clone(),
                    change_id.to_string(),
                )),
            ];
            // One partition: the row's check-and-set and the change marker commit together.
            if lwt_outcome(self.run_batch(&batch, rows).await?)?.0 {
                return Ok(Ok(next));
            }
        }
        Err(StoreError::Unavailable(format!(
            "stock of {} in {} keeps changing; retry",
            delta.sku, delta.warehouse_id
        )))
    }

    /// Writes one shipment; `Ok(Err(refusal))` when its condition fails. `resuming`
    /// accepts a write that an interrupted attempt of the same change already made.
    async fn write_shipment(
        &self,
        write: &ShipmentWrite,
        resuming: bool,
    ) -> Result<Result<(StoredShipment, Undo), Refusal>, StoreError> {
        let statements = self.warehouse_statements().await?;
        let now = now_ms();
        match write {
            ShipmentWrite::Create(shipment) => {
                let stored = StoredShipment {
                    version: 1,
                    updated_at_ms: now,
                    ..shipment.clone()
                };
                self.run(
                    &statements.index_by_order,
                    (&stored.order_id, stored.created_at_ms, &stored.id),
                )
                .await?;
                self.run(
                    &statements.index_by_warehouse,
                    (&stored.warehouse_id, stored.created_at_ms, &stored.id),
                )
                .await?;
                let result = self
                    .run(
                        &statements.insert_shipment_if_absent,
                        (
                            &stored.id,
                            &stored.order_id,
                            &stored.warehouse_id,
                            stored.status,
                            shipment_lines(&stored),
                            &stored.carrier,
                            &stored.tracking_number,
                            &stored.ship_to,
                            stored.shipping_speed,
                            stored.promised_by_ms,
                            stored.created_at_ms,
                            stored.shipped_at_ms,
                            stored.delivered_at_ms,
                            stored.updated_at_ms,
                            1_i64,
                        ),
                    )
                    .await?;
                if lwt_outcome(result)?.0 {
                    return Ok(Ok((stored.clone(), Undo::Created(stored.id, 1))));
                }
                let current = self
                    .read_shipment(&statements.get_shipment_serial, &shipment.id)
                    .await?;
                match current {
                    Some(current) if resuming && current.order_id == shipment.order_id => {
                        let version = current.version;
                        Ok(Ok((current, Undo::Created(shipment.id.clone(), version))))
                    }
                    current => Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual: current.map_or(0, |c| c.version),
                    })),
                }
            }
            ShipmentWrite::Update {
                shipment,
                expected_version,
            } => {
                let before = self
                    .read_shipment(&statements.get_shipment_serial, &shipment.id)
                    .await?;
                let Some(before) = before else {
                    return Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual: 0,
                    }));
                };
                if resuming && before.version == expected_version + 1 {
                    let version = before.version;
                    return Ok(Ok((before.clone(), Undo::Updated(Box::new(before), version))));
                }
                if before.version != *expected_version
                    || before.order_id != shipment.order_id
                    || before.warehouse_id != shipment.warehouse_id
                {
                    return Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual: before.version,
                    }));
                }
                let stored = StoredShipment {
                    version: expected_version + 1,
                    updated_at_ms: now,
                    created_at_ms: before.created_at_ms,
                    ..shipment.clone()
                };
                if self.set_shipment(&stored, *expected_version).await? {
                    let version = stored.version;
                    Ok(Ok((stored, Undo::Updated(Box::new(before), version))))
                } else {
                    let actual = self
                        .read_shipment(&statements.get_shipment_serial, &shipment.id)
                        .await?
                        .map_or(0, |c| c.version);
                    Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual,
                    }))
                }
            }
        }
    }

    /// Replaces a shipment's mutable fields if it is at `expected`; whether it applied.
    async fn set_shipment(&self, shipment: &StoredShipment, expected: u64) -> Result<bool, StoreError> {
        let statements = self.warehouse_statements().await?;
        let result = self
            .run(
                &statements.update_shipment_if_version,
                (
                    shipment.status,
                    shipment_lines(shipment),
                    &shipment.carrier,
                    &shipment.tracking_number,
                    &shipment.ship_to,
                    shipment.shipping_speed,
                    shipment.promised_by_ms,
                    shipment.shipped_at_ms,
                    shipment.delivered_at_ms,
                    shipment.updated_at_ms,
                    StoreError::version_to_i64(shipment.version)?,
                    &shipment.id,
                    StoreError::version_to_i64(expected)?,
                ),
            )
            .await?;
        Ok(lwt_outcome(result)?.0)
    }

    /// Takes back what a refused change wrote, newest first. Best effort per item: an
    /// item someone else changed since is left as it is (and logged).
    async fn undo(&self, undo: Vec<Undo>, anchor: &str) -> Result<(), StoreError> {
        let statements = self.warehouse_statements().await?;
        for (index, item) in undo.into_iter().enumerate().rev() {
            match item {
                Undo::Stock(delta) => {
                    let inverse = StockDelta {
                        physical: -delta.physical,
                        allocatable: -delta.allocatable,
                        expected_version: None,
                        ..delta
                    };
                    if let Ok(Err(row)) = self
                        .apply_stock_delta(&inverse, &format!("undo:{anchor}:{index}"))
                        .await
                    {
                        tracing::error!(
                            sku = %row.sku, warehouse = %row.warehouse_id,
                            "could not undo a stock delta of a refused change"
                        );
                    }
                }
                Undo::Created(id, version) => {
                    let _ = self
                        .run(
                            &statements.delete_shipment_if_version,
                            (&id, StoreError::version_to_i64(version)?),
                        )
                        .await?;
                }
                Undo::Updated(before, now) => {
                    let restored = StoredShipment {
                        version: now + 1,
                        updated_at_ms: now_ms(),
                        ..*before
                    };
                    if !self.set_shipment(&restored, now).await? {
                        tracing::error!(shipment = %restored.id, "could not undo a shipment update of a refused change");
                    }
                }
            }
        }
        Ok(())
    }

    /// Steps 2-5 of a change (see the schema): shipments, stock, outbox, claims applied.
    async fn run_intent(
        &self,
        change: &WarehouseChange,
        outbox: Vec<OutboxMessage>,
        anchor: &str,
        resuming: bool,
    ) -> Result<ChangeOutcome, StoreError> {
        let statements = self.warehouse_statements().await?;
        let groups = stock_groups(&change.stock);
        // A change whose stock cannot apply to the rows as they stand is refused before it
        // writes anything (as on SQLite). Not when resuming: its deltas may be applied already.
        if !resuming && let Some(row) = self.stock_refusal(&groups).await? {
            return Ok(ChangeOutcome::Refused(Refusal::Stock(row)));
        }
        let mut undo = Vec::new();
        let mut written: Vec<Option<StoredShipment>> = vec![None; change.shipments.len()];
        // Updates first: they are what a concurrent writer makes fail.
        let order: Vec<usize> = (0..change.shipments.len())
            .filter(|i| matches!(change.shipments[*i], ShipmentWrite::Update { .. }))
            .chain(
                (0..change.shipments.len())
                    .filter(|i| matches!(change.shipments[*i], ShipmentWrite::Create(_))),
            )
            .collect();
        for index in order {
            match self.write_shipment(&change.shipments[index], resuming).await? {
                Ok((shipment, item)) => {
                    written[index] = Some(shipment);
                    undo.push(item);
                }
                Err(refusal) => {
                    self.undo(undo, anchor).await?;
                    return Ok(ChangeOutcome::Refused(refusal));
                }
            }
        }
        let mut stock: Vec<StockRow> = Vec::with_capacity(groups.len());
        for (index, deltas) in &groups {
            let change_id = format!("{anchor}#{index}");
            match self.apply_stock_deltas(deltas, &change_id).await? {
                Ok(row) => {
                    undo.push(Undo::Stock(StockDelta {
                        physical: deltas.iter().map(|d| d.physical).sum(),
                        allocatable: deltas.iter().map(|d| d.allocatable).sum(),
                        expected_version: None,
                        ..deltas[0].clone()
                    }));
                    stock.push(row);
                }
                Err(row) => {
                    self.undo(undo, anchor).await?;
                    return Ok(ChangeOutcome::Refused(Refusal::Stock(row)));
                }
            }
        }
        self.append_outbox(outbox).await?;
        let answer = serde_json::to_string(&stock).map_err(corrupt)?;
        for claim in &change.claims {
            self.run(
                &statements.mark_claim_applied,
                (&answer, &claim.scope, &claim.key),
            )
            .await?;
        }
        Ok(ChangeOutcome::Applied {
            stock,
            shipments: written.into_iter().flatten().collect(),
        })
    }

    /// The stored row of the first group of deltas that cannot apply to the rows as they
    /// stand now, if any. A row changed concurrently after this read is caught again when
    /// the deltas are applied (by check-and-set) and undone then.
    async fn stock_refusal(
        &self,
        groups: &[(usize, Vec<StockDelta>)],
    ) -> Result<Option<StockRow>, StoreError> {
        let statements = self.warehouse_statements().await?;
        for (_, deltas) in groups {
            let delta = &deltas[0];
            let current = self
                .read_stock(&statements.get_stock, &delta.warehouse_id, &delta.sku)
                .await?
                .unwrap_or_else(|| StockRow {
                    sku: delta.sku.clone(),
                    warehouse_id: delta.warehouse_id.clone(),
                    ..StockRow::default()
                });
            let mut next = current.clone();
            for delta in deltas {
                match applied(&next, delta) {
                    Some(row) => next = row,
                    None => return Ok(Some(current)),
                }
            }
        }
        Ok(None)
    }

    /// Deletes the claims a refused or repeated change took (those still pending under
    /// `anchor`).
    async fn release_claims(&self, claims: &[Claim], anchor: &str) -> Result<(), StoreError> {
        let statements = self.warehouse_statements().await?;
        for claim in claims {
            self.run(
                &statements.delete_claim_if_pending,
                (&claim.scope, &claim.key, anchor),
            )
            .await?;
        }
        Ok(())
    }
}

/// `deltas` grouped by row, rows in order of first appearance, each group under the index
/// of its first delta. Deltas on one row are applied together, so the row moves one version
/// per change (as on SQLite), and the index names the change marker, so a resumed intent
/// finds its own markers.
fn stock_groups(deltas: &[StockDelta]) -> Vec<(usize, Vec<StockDelta>)> {
    let mut groups: Vec<(usize, Vec<StockDelta>)> = Vec::new();
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, delta) in deltas.iter().enumerate() {
        let key = (delta.warehouse_id.as_str(), delta.sku.as_str());
        match at.get(&key) {
            Some(i) => groups[*i].1.push(delta.clone()),
            None => {
                at.insert(key, groups.len());
                groups.push((index, vec![delta.clone()]));
            }
        }
    }
    groups
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
