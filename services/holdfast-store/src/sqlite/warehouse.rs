//! Warehouses, stock, shipments and claims on SQLite. A [`WarehouseChange`] is one writer
//! job (inside the writer's `IMMEDIATE` transaction): SQLite's write lock serialises it
//! against every other writer (other handles on the file included), so the stock it checks
//! is the stock it changes, and a refusal rolls back everything it wrote before it (a
//! nested savepoint).

use std::collections::HashMap;

use holdfast_sqlite::Nested;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::outbox::insert_messages;
use super::{SqliteStore, sqlite_error};
use crate::outbox::distinct_messages;
use crate::warehouse::{
    ChangeOutcome, ClaimRecord, IfTaken, Refusal, ShipmentLineRecord, ShipmentPage, ShipmentPageRequest,
    ShipmentWrite, ShippingOptionRecord, StockRow, StoredShipment, StoredWarehouse, WarehouseChange,
    WarehousePage, WarehousePageRequest, WarehouseStore, applied, distinct_stock_skus, validate_change,
    validate_id, validate_warehouse,
};
use crate::{StoreError, now_ms};

const WAREHOUSE_COLUMNS: &str =
    "id, name, region, latitude, longitude, shipping_options, active, created_at_ms, updated_at_ms";
const STOCK_COLUMNS: &str = "sku, warehouse_id, physical, allocatable, version, updated_at_ms";
const SHIPMENT_COLUMNS: &str = "id, order_id, warehouse_id, status, lines, carrier, tracking_number, \
     ship_to, shipping_speed, promised_by_ms, created_at_ms, shipped_at_ms, delivered_at_ms, \
     updated_at_ms, version";

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into()))
}

fn version_column(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let version: i64 = row.get(index)?;
    u64::try_from(version).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, version))
}

fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidArgument(format!("{what}: {e}")))
}

fn read_warehouse(row: &Row<'_>) -> rusqlite::Result<StoredWarehouse> {
    Ok(StoredWarehouse {
        id: row.get(0)?,
        name: row.get(1)?,
        region: row.get(2)?,
        latitude: row.get(3)?,
        longitude: row.get(4)?,
        shipping_options: json_column::<Vec<ShippingOptionRecord>>(row, 5)?,
        active: row.get(6)?,
        created_at_ms: row.get(7)?,
        updated_at_ms: row.get(8)?,
    })
}

fn read_stock(row: &Row<'_>) -> rusqlite::Result<StockRow> {
    Ok(StockRow {
        sku: row.get(0)?,
        warehouse_id: row.get(1)?,
        physical: row.get(2)?,
        allocatable: row.get(3)?,
        version: version_column(row, 4)?,
        updated_at_ms: row.get(5)?,
    })
}

fn read_shipment(row: &Row<'_>) -> rusqlite::Result<StoredShipment> {
    Ok(StoredShipment {
        id: row.get(0)?,
        order_id: row.get(1)?,
        warehouse_id: row.get(2)?,
        status: row.get(3)?,
        lines: json_column::<Vec<ShipmentLineRecord>>(row, 4)?,
        carrier: row.get(5)?,
        tracking_number: row.get(6)?,
        ship_to: row.get(7)?,
        shipping_speed: row.get(8)?,
        promised_by_ms: row.get(9)?,
        created_at_ms: row.get(10)?,
        shipped_at_ms: row.get(11)?,
        delivered_at_ms: row.get(12)?,
        updated_at_ms: row.get(13)?,
        version: version_column(row, 14)?,
    })
}

fn select_warehouse(conn: &Connection, id: &str) -> Result<Option<StoredWarehouse>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {WAREHOUSE_COLUMNS} FROM warehouses WHERE id = ?1"
    ))
    .and_then(|mut statement| statement.query_row([id], read_warehouse).optional())
    .map_err(sqlite_error)
}

fn select_stock(conn: &Connection, warehouse_id: &str, sku: &str) -> Result<Option<StockRow>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {STOCK_COLUMNS} FROM warehouse_stock WHERE sku = ?1 AND warehouse_id = ?2"
    ))
    .and_then(|mut statement| statement.query_row([sku, warehouse_id], read_stock).optional())
    .map_err(sqlite_error)
}

fn select_shipment(conn: &Connection, id: &str) -> Result<Option<StoredShipment>, StoreError> {
    conn.prepare_cached(&format!("SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], read_shipment).optional())
        .map_err(sqlite_error)
}

fn select_claim(conn: &Connection, scope: &str, key: &str) -> Result<Option<ClaimRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT fingerprint, stock, created_at_ms FROM warehouse_claims WHERE scope = ?1 AND key = ?2",
    )
    .and_then(|mut statement| {
        statement
            .query_row([scope, key], |row| {
                Ok(ClaimRecord {
                    scope: scope.to_string(),
                    key: key.to_string(),
                    fingerprint: row.get(0)?,
                    stock: json_column(row, 1)?,
                    created_at_ms: row.get(2)?,
                })
            })
            .optional()
    })
    .map_err(sqlite_error)
}

/// The rows `change.stock` leaves, or the stored row of the first delta that cannot apply.
fn plan_stock(
    tx: &Connection,
    change: &WarehouseChange,
) -> Result<Result<Vec<StockRow>, StockRow>, StoreError> {
    let mut rows: Vec<StockRow> = Vec::new();
    let mut stored: Vec<StockRow> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for delta in &change.stock {
        let at = match index.get(&(delta.warehouse_id.as_str(), delta.sku.as_str())) {
            Some(at) => *at,
            None => {
                let row = select_stock(tx, &delta.warehouse_id, &delta.sku)?.unwrap_or_else(|| StockRow {
                    sku: delta.sku.clone(),
                    warehouse_id: delta.warehouse_id.clone(),
                    ..StockRow::default()
                });
                rows.push(row.clone());
                stored.push(row);
                index.insert((delta.warehouse_id.as_str(), delta.sku.as_str()), rows.len() - 1);
                rows.len() - 1
            }
        };
        match applied(&rows[at], delta) {
            Some(next) => rows[at] = next,
            None => return Ok(Err(stored.swap_remove(at))),
        }
    }
    Ok(Ok(rows))
}

fn write_stock(tx: &Connection, rows: &mut [StockRow], now: i64) -> Result<(), StoreError> {
    let mut statement = tx
        .prepare_cached(&format!(
            "INSERT INTO warehouse_stock ({STOCK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (sku, warehouse_id) DO UPDATE SET
                 physical = excluded.physical, allocatable = excluded.allocatable,
                 version = excluded.version, updated_at_ms = excluded.updated_at_ms"
        ))
        .map_err(sqlite_error)?;
    for row in rows {
        row.version += 1;
        row.updated_at_ms = now;
        statement
            .execute(params![
                row.sku,
                row.warehouse_id,
                row.physical,
                row.allocatable,
                StoreError::version_to_i64(row.version)?,
                row.updated_at_ms,
            ])
            .map_err(sqlite_error)?;
    }
    Ok(())
}

/// Writes one shipment; `Err(refusal)` when its version condition fails.
fn write_shipment(
    tx: &Connection,
    write: ShipmentWrite,
    now: i64,
) -> Result<Result<StoredShipment, Refusal>, StoreError> {
    let (mut shipment, expected) = match write {
        ShipmentWrite::Create(shipment) => (shipment, None),
        ShipmentWrite::Update {
            shipment,
            expected_version,
        } => (shipment, Some(expected_version)),
    };
    let current = select_shipment(tx, &shipment.id)?;
    let actual = current.as_ref().map_or(0, |c| c.version);
    if actual != expected.unwrap_or(0) {
        return Ok(Err(Refusal::Shipment {
            id: shipment.id,
            actual,
        }));
    }
    if let Some(current) = &current
        && (current.order_id != shipment.order_id || current.warehouse_id != shipment.warehouse_id)
    {
        return Err(StoreError::InvalidArgument(format!(
            "shipment {:?} cannot change its order or warehouse",
            shipment.id
        )));
    }
    shipment.version = expected.unwrap_or(0) + 1;
    shipment.updated_at_ms = now;
    if let Some(current) = &current {
        shipment.created_at_ms = current.created_at_ms;
    }
    let lines = to_json("shipment lines", &shipment.lines)?;
    tx.prepare_cached(&format!(
        "INSERT INTO shipments ({SHIPMENT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (id) DO UPDATE SET
             status = excluded.status, lines = excluded.lines, carrier = excluded.carrier,
             tracking_number = excluded.tracking_number, ship_to = excluded.ship_to,
             shipping_speed = excluded.shipping_speed, promised_by_ms = excluded.promised_by_ms,
             shipped_at_ms = excluded.shipped_at_ms, delivered_at_ms = excluded.delivered_at_ms,
             updated_at_ms = excluded.updated_at_ms, version = excluded.version"
    ))
    .and_then(|mut statement| {
        statement.execute(params![
            shipment.id,
            shipment.order_id,
            shipment.warehouse_id,
            shipment.status,
            lines,
            shipment.carrier,
            shipment.tracking_number,
            shipment.ship_to,
            shipment.shipping_speed,
            shipment.promised_by_ms,
            shipment.created_at_ms,
            shipment.shipped_at_ms,
            shipment.delivered_at_ms,
            shipment.updated_at_ms,
            i64::try_from(shipment.version).unwrap_or(i64::MAX),
        ])
    })
    .map_err(sqlite_error)?;
    Ok(Ok(shipment))
}

impl WarehouseStore for SqliteStore {
    async fn upsert_warehouse(
        &self,
        warehouse: StoredWarehouse,
    ) -> Result<(StoredWarehouse, bool), StoreError> {
        validate_warehouse(&warehouse)?;
        let options = to_json("shipping options", &warehouse.shipping_options)?;
        self.write(move |conn| {
            let tx = conn;
            let current = select_warehouse(tx, &warehouse.id)?;
            let now = now_ms();
            let stored = StoredWarehouse {
                created_at_ms: current.as_ref().map_or(now, |c| c.created_at_ms),
                updated_at_ms: now,
                ..warehouse
            };
            tx.prepare_cached(&format!(
                "INSERT INTO warehouses ({WAREHOUSE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET
                     name = excluded.name, region = excluded.region, latitude = excluded.latitude,
                     longitude = excluded.longitude, shipping_options = excluded.shipping_options,
                     active = excluded.active, updated_at_ms = excluded.updated_at_ms"
            ))
            .and_then(|mut statement| {
                statement.execute(params![
                    stored.id,
                    stored.name,
                    stored.region,
                    stored.latitude,
                    stored.longitude,
                    options,
                    stored.active,
                    stored.created_at_ms,
                    stored.updated_at_ms,
                ])
            })
            .map_err(sqlite_error)?;
            Ok((stored, current.is_none()))
        })
        .await
    }

    async fn get_warehouse(&self, id: &str) -> Result<Option<StoredWarehouse>, StoreError> {
        validate_id("warehouse", id)?;
        let id = id.to_string();
        self.lookup(move |conn| select_warehouse(conn, &id)).await
    }

    async fn list_warehouses(
        &self,
        region: Option<&str>,
        include_inactive: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<WarehousePage, StoreError> {
        let request = WarehousePageRequest::new(region, include_inactive, cursor, limit)?;
        let region = region.map(str::to_string);
        self.read(move |conn| {
            let fetch = i64::try_from(request.fetch()).unwrap_or(i64::MAX);
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {WAREHOUSE_COLUMNS} FROM warehouses
                     WHERE id > ?1 AND (?2 IS NULL OR region = ?2) AND (?3 OR active)
                     ORDER BY id LIMIT ?4"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(
                            params![request.after_id, region, include_inactive, fetch],
                            read_warehouse,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            Ok(request.page(rows))
        })
        .await
    }

    async fn get_stock(
        &self,
        skus: &[String],
        warehouse_id: Option<&str>,
    ) -> Result<Vec<StockRow>, StoreError> {
        let mut skus = distinct_stock_skus(skus)?;
        skus.sort_unstable();
        if let Some(id) = warehouse_id {
            validate_id("warehouse", id)?;
        }
        let warehouse_id = warehouse_id.map(str::to_string);
        self.read(move |conn| {
            let mut rows = Vec::with_capacity(skus.len());
            for sku in &skus {
                match &warehouse_id {
                    Some(warehouse_id) => rows.extend(select_stock(conn, warehouse_id, sku)?),
                    None => rows.extend(
                        conn.prepare_cached(&format!(
                            "SELECT {STOCK_COLUMNS} FROM warehouse_stock WHERE sku = ?1 ORDER BY warehouse_id"
                        ))
                        .and_then(|mut statement| {
                            statement
                                .query_map([sku], read_stock)?
                                .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .map_err(sqlite_error)?,
                    ),
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn get_shipment(&self, id: &str) -> Result<Option<StoredShipment>, StoreError> {
        validate_id("shipment", id)?;
        let id = id.to_string();
        self.lookup(move |conn| select_shipment(conn, &id)).await
    }

    async fn list_shipments_by_order(&self, order_id: &str) -> Result<Vec<StoredShipment>, StoreError> {
        validate_id("order", order_id)?;
        let order_id = order_id.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = ?1 ORDER BY created_at_ms, id"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map([&order_id], read_shipment)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sqlite_error)
        })
        .await
    }

    async fn list_shipments_by_warehouse(
        &self,
        warehouse_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ShipmentPage, StoreError> {
        let request = ShipmentPageRequest::new(warehouse_id, statuses, cursor, limit)?;
        let warehouse_id = warehouse_id.to_string();
        let statuses = to_json("statuses", &request.statuses)?;
        self.read(move |conn| {
            let fetch = i64::try_from(request.fetch()).unwrap_or(i64::MAX);
            let (after_at, after_id) = request.after.clone().unwrap_or((i64::MIN, String::new()));
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {SHIPMENT_COLUMNS} FROM shipments
                     WHERE warehouse_id = ?1
                       AND (?2 = '[]' OR status IN (SELECT value FROM json_each(?2)))
                       AND (created_at_ms, id) > (?3, ?4)
                     ORDER BY created_at_ms, id LIMIT ?5"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(
                            params![warehouse_id, statuses, after_at, after_id, fetch],
                            read_shipment,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            Ok(request.page(rows, None))
        })
        .await
    }

    async fn get_claim(&self, scope: &str, key: &str) -> Result<Option<ClaimRecord>, StoreError> {
        if scope.is_empty() || key.is_empty() {
            return Err(StoreError::InvalidArgument("claim scope or key is empty".into()));
        }
        let (scope, key) = (scope.to_string(), key.to_string());
        self.lookup(move |conn| select_claim(conn, &scope, &key)).await
    }

    async fn apply_warehouse_change(&self, change: WarehouseChange) -> Result<ChangeOutcome, StoreError> {
        validate_change(&change)?;
        let outbox = distinct_messages(change.outbox.clone())?;
        self.write(move |conn| {
            // A refusal undoes what the change wrote before it; an error undoes the job.
            holdfast_sqlite::nested(conn, |tx| {
                let mut free = Vec::with_capacity(change.claims.len());
                for claim in &change.claims {
                    match select_claim(tx, &claim.scope, &claim.key)? {
                        Some(record) if claim.if_taken == IfTaken::Repeat => {
                            return Ok(Nested::Undo(ChangeOutcome::Repeated(record)));
                        }
                        Some(_) => {}
                        None => free.push(claim),
                    }
                }
                let mut stock = match plan_stock(tx, &change)? {
                    Ok(rows) => rows,
                    Err(stored) => return Ok(Nested::Undo(ChangeOutcome::Refused(Refusal::Stock(stored)))),
                };
                let now = now_ms();
                write_stock(tx, &mut stock, now)?;
                let mut shipments = Vec::with_capacity(change.shipments.len());
                for write in change.shipments.iter().cloned() {
                    match write_shipment(tx, write, now)? {
                        Ok(shipment) => shipments.push(shipment),
                        Err(refusal) => return Ok(Nested::Undo(ChangeOutcome::Refused(refusal))),
                    }
                }
                insert_messages(tx, &outbox)?;
                let answer = to_json("claim stock", &stock)?;
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO warehouse_claims (scope, key, fingerprint, stock, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .map_err(sqlite_error)?;
                    for claim in free {
                        insert
                            .execute(params![claim.scope, claim.key, claim.fingerprint, answer, now])
                            .map_err(sqlite_error)?;
                    }
                }
                Ok(Nested::Keep(ChangeOutcome::Applied { stock, shipments }))
            })
        })
        .await
    }
}
