//! Stock operations: stock takes, goods receipts and shrinkage (which may re-route the
//! shipments holding the lost units).

use std::collections::HashMap;

use holdfast_proto::common::v1::Address;
use holdfast_proto::events::v1::StockChangeCause;
use holdfast_proto::warehouse::v1::ShipmentStatus;
use holdfast_store::{
    ChangeOutcome, Claim, IfTaken, ShipmentWrite, StockDelta, StockRow, StoredShipment, StoredWarehouse,
    WarehouseChange,
};
use prost::Message;

use crate::error::WarehouseError;
use crate::events::StockChange;
use crate::routing::{self, Need};
use crate::{keys, now_ms};

use super::{ATTEMPTS, Engine, RouteRequest, Shrinkage, WarehouseBackend, at};

/// Goods arriving on a warehouse's shelves (a goods receipt, a passed return).
pub(super) struct GoodsIn<'a> {
    pub(super) warehouse_id: &'a str,
    pub(super) region: &'a str,
    pub(super) needs: &'a [Need],
    /// The booking's kind and id, which name each SKU's stock change.
    pub(super) booking: (&'a str, &'a str),
    pub(super) cause: StockChangeCause,
}

impl<S: WarehouseBackend> Engine<S> {
    /// The warehouse, if it keeps stock counts: `NotFound`, or `FAILED_PRECONDITION` for
    /// the default warehouse (its stock is what inventory sells).
    async fn stocked_warehouse(&self, id: &str) -> Result<StoredWarehouse, WarehouseError> {
        let warehouse = self.warehouse(id).await?;
        if self.is_default_warehouse(id) {
            return Err(WarehouseError::precondition(
                "DEFAULT_WAREHOUSE",
                id,
                format!(
                    "{id} is the default warehouse: it keeps no stock counts, its stock is what inventory sells"
                ),
            ));
        }
        Ok(warehouse)
    }

    /// A stock take: physical becomes `physical` (allocated units stay allocated). Returns
    /// the row after and the delta that flowed to the region's inventory.
    pub async fn set_stock(
        &self,
        warehouse_id: &str,
        sku: &str,
        physical: i64,
    ) -> Result<(StockRow, i64), WarehouseError> {
        let warehouse = self.stocked_warehouse(warehouse_id).await?;
        for _ in 0..ATTEMPTS {
            let row = self.stock_row(warehouse_id, sku).await?;
            let allocated = row.physical - row.allocatable;
            if physical < allocated {
                return Err(WarehouseError::precondition(
                    "BELOW_ALLOCATED",
                    sku,
                    format!(
                        "{allocated} units of {sku} are allocated to shipments not yet shipped; physical cannot be {physical}"
                    ),
                ));
            }
            let delta = physical - row.physical;
            if delta == 0 {
                return Ok((row, 0));
            }
            let change_id = keys::change_id("take", &format!("{warehouse_id}@{}", row.version + 1), sku);
            let change = WarehouseChange {
                stock: vec![StockDelta {
                    warehouse_id: warehouse_id.to_string(),
                    sku: sku.to_string(),
                    physical: delta,
                    allocatable: delta,
                    expected_version: Some(row.version),
                }],
                outbox: vec![self.events.stock_changed(
                    StockChange {
                        region: &warehouse.region,
                        sku,
                        warehouse_id,
                        delta,
                        change_id: &change_id,
                        cause: StockChangeCause::StockTake,
                    },
                    now_ms(),
                )],
                ..WarehouseChange::default()
            };
            if let ChangeOutcome::Applied { stock, .. } = self.apply(change).await? {
                let row = stock.into_iter().next().unwrap_or(row);
                return Ok((row, delta));
            }
        }
        Err(WarehouseError::Busy(format!("stock of {sku} in {warehouse_id}")))
    }

    /// A goods receipt of `lines` (SKU, units; repeated SKUs summed). Returns one row per
    /// SKU in order of first appearance, and whether this repeated a booked receipt.
    pub async fn receive(
        &self,
        receipt_id: &str,
        warehouse_id: &str,
        lines: &[(String, i64)],
    ) -> Result<(Vec<StockRow>, bool), WarehouseError> {
        let needs = routing::merge_needs(lines.iter().cloned());
        let quantities: Vec<String> = needs.iter().map(|n| n.quantity.to_string()).collect();
        let fingerprint = keys::fingerprint(
            std::iter::once(warehouse_id).chain(
                needs
                    .iter()
                    .zip(&quantities)
                    .flat_map(|(n, q)| [n.sku.as_str(), q.as_str()]),
            ),
        );
        if let Some(record) = self.store.get_claim(keys::RECEIPT, receipt_id).await? {
            return repeated_booking(
                "RECEIPT_ID_REUSED",
                "receipt",
                receipt_id,
                &fingerprint,
                record.fingerprint,
                record.stock,
            );
        }
        let warehouse = self.stocked_warehouse(warehouse_id).await?;
        let change = self.goods_in(
            GoodsIn {
                warehouse_id,
                region: &warehouse.region,
                needs: &needs,
                booking: ("receipt", receipt_id),
                cause: StockChangeCause::Receipt,
            },
            vec![Claim {
                scope: keys::RECEIPT.into(),
                key: receipt_id.to_string(),
                fingerprint: fingerprint.clone(),
                if_taken: IfTaken::Repeat,
            }],
        );
        match self.apply(change).await? {
            ChangeOutcome::Applied { stock, .. } => Ok((stock, false)),
            ChangeOutcome::Repeated(record) => repeated_booking(
                "RECEIPT_ID_REUSED",
                "receipt",
                receipt_id,
                &fingerprint,
                record.fingerprint,
                record.stock,
            ),
            ChangeOutcome::Refused(_) => Err(WarehouseError::precondition(
                "STOCK_OVERFLOW",
                receipt_id,
                "the receipt would overflow a stock count",
            )),
        }
    }

    /// Books lost units. When the loss takes units allocated to shipments not yet shipped,
    /// the newest such shipments are cancelled and their lines routed again (elsewhere,
    /// or backordered), in the same change. Returns the row after, and whether this
    /// repeated a booked shrinkage.
    pub async fn shrink(&self, shrinkage: &Shrinkage) -> Result<(StockRow, bool), WarehouseError> {
        let quantity = shrinkage.quantity.to_string();
        let reason = shrinkage.reason.to_string();
        let fingerprint = keys::fingerprint([
            shrinkage.warehouse_id.as_str(),
            shrinkage.sku.as_str(),
            quantity.as_str(),
            reason.as_str(),
            shrinkage.note.as_str(),
        ]);
        let first_row = |rows: Vec<StockRow>| rows.into_iter().next().unwrap_or_default();
        if let Some(record) = self.store.get_claim(keys::SHRINKAGE, &shrinkage.id).await? {
            return repeated_booking(
                "SHRINKAGE_ID_REUSED",
                "shrinkage",
                &shrinkage.id,
                &fingerprint,
                record.fingerprint,
                record.stock,
            )
            .map(|(rows, duplicate)| (first_row(rows), duplicate));
        }
        let warehouse = self.stocked_warehouse(&shrinkage.warehouse_id).await?;
        let (wh, sku) = (shrinkage.warehouse_id.as_str(), shrinkage.sku.as_str());
        for _ in 0..ATTEMPTS {
            let row = self.stock_row(wh, sku).await?;
            if shrinkage.quantity > row.physical {
                return Err(WarehouseError::precondition(
                    "EXCEEDS_PHYSICAL",
                    sku,
                    format!(
                        "cannot lose {} units of {sku}: {wh} has {} on the shelves",
                        shrinkage.quantity, row.physical
                    ),
                ));
            }
            let now = now_ms();
            let change_id = keys::change_id("shrinkage", &shrinkage.id, sku);
            let mut change = WarehouseChange {
                claims: vec![Claim {
                    scope: keys::SHRINKAGE.into(),
                    key: shrinkage.id.clone(),
                    fingerprint: fingerprint.clone(),
                    if_taken: IfTaken::Repeat,
                }],
                outbox: vec![self.events.stock_changed(
                    StockChange {
                        region: &warehouse.region,
                        sku,
                        warehouse_id: wh,
                        delta: -shrinkage.quantity,
                        change_id: &change_id,
                        cause: StockChangeCause::Shrinkage,
                    },
                    now,
                )],
                ..WarehouseChange::default()
            };
            let shortfall = shrinkage.quantity - row.allocatable;
            let mut freed = 0;
            if shortfall > 0 {
                freed = self
                    .release_for_shrinkage(&warehouse, shrinkage, shortfall, &mut change)
                    .await?;
            }
            // The shrunk row first, pinned to the version the plan was made on.
            change.stock.insert(
                0,
                StockDelta {
                    warehouse_id: wh.to_string(),
                    sku: sku.to_string(),
                    physical: -shrinkage.quantity,
                    allocatable: freed - shrinkage.quantity,
                    expected_version: Some(row.version),
                },
            );
            match self.apply(change).await? {
                ChangeOutcome::Applied { stock, .. } => {
                    let after = stock
                        .into_iter()
                        .find(|r| r.warehouse_id == wh && r.sku == sku)
                        .unwrap_or(row);
                    return Ok((after, false));
                }
                ChangeOutcome::Repeated(record) => {
                    return repeated_booking(
                        "SHRINKAGE_ID_REUSED",
                        "shrinkage",
                        &shrinkage.id,
                        &fingerprint,
                        record.fingerprint,
                        record.stock,
                    )
                    .map(|(rows, duplicate)| (first_row(rows), duplicate));
                }
                ChangeOutcome::Refused(_) => continue,
            }
        }
        Err(WarehouseError::Busy(format!("stock of {sku} in {wh}")))
    }

    /// Adds to `change` the cancellation of the newest open shipments holding `sku` in the
    /// shrunk warehouse until `shortfall` units are freed, the release of all their units,
    /// and the routing of their lines again. Returns the units of `sku` freed.
    pub(super) async fn release_for_shrinkage(
        &self,
        warehouse: &StoredWarehouse,
        shrinkage: &Shrinkage,
        shortfall: i64,
        change: &mut WarehouseChange,
    ) -> Result<i64, WarehouseError> {
        let (wh, sku) = (shrinkage.warehouse_id.as_str(), shrinkage.sku.as_str());
        let mut open = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list_shipments_by_warehouse(
                    wh,
                    &[ShipmentStatus::Created as i32, ShipmentStatus::Picking as i32],
                    cursor.as_deref(),
                    500,
                )
                .await?;
            open.extend(
                page.shipments
                    .into_iter()
                    .filter(|s| s.lines.iter().any(|l| l.sku == sku)),
            );
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // Newest first: the orders that waited least lose their allocation.
        open.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        let now = now_ms();
        let reason = format!("stock lost in {wh} (shrinkage {})", shrinkage.id);
        let mut freed = 0;
        // Allocatable changes this change makes so far, for the routings below.
        let mut adjust: HashMap<(String, String), i64> = HashMap::new();
        let mut cancelled = Vec::new();
        for shipment in open {
            if freed >= shortfall {
                break;
            }
            for line in &shipment.lines {
                if line.sku == sku {
                    freed += line.quantity;
                } else {
                    change.stock.push(StockDelta {
                        warehouse_id: wh.to_string(),
                        sku: line.sku.clone(),
                        physical: 0,
                        allocatable: line.quantity,
                        expected_version: None,
                    });
                }
                *adjust.entry(at(wh, &line.sku)).or_default() += line.quantity;
            }
            let expected_version = shipment.version;
            let updated = StoredShipment {
                status: ShipmentStatus::Cancelled as i32,
                ..shipment
            };
            change.outbox.push(self.events.cancelled(&updated, &reason, now));
            change.shipments.push(ShipmentWrite::Update {
                shipment: updated.clone(),
                expected_version,
            });
            cancelled.push(updated);
        }
        *adjust.entry(at(wh, sku)).or_default() -= shrinkage.quantity;
        for shipment in cancelled {
            let ship_to = Address::decode(shipment.ship_to.as_slice()).unwrap_or_default();
            let request = RouteRequest {
                order_id: &shipment.order_id,
                needs: shipment
                    .lines
                    .iter()
                    .map(|l| Need {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
                    })
                    .collect(),
                ship_to: &ship_to,
                speed: shipment.shipping_speed,
                region: &warehouse.region,
                occurred_at_ms: now,
            };
            let part = self.plan_routing(&request, &adjust).await?;
            for delta in &part.stock {
                *adjust.entry(at(&delta.warehouse_id, &delta.sku)).or_default() += delta.allocatable;
            }
            change.stock.extend(part.stock);
            change
                .shipments
                .extend(part.shipments.into_iter().map(ShipmentWrite::Create));
            change.outbox.extend(part.outbox);
        }
        Ok(freed)
    }
    /// A change putting `goods.needs` on the warehouse's shelves (physical and allocatable
    /// up), each SKU announced to the region's inventory, under `claims`.
    pub(super) fn goods_in(&self, goods: GoodsIn<'_>, claims: Vec<Claim>) -> WarehouseChange {
        let now = now_ms();
        let (kind, booking_id) = goods.booking;
        let mut change = WarehouseChange {
            claims,
            ..WarehouseChange::default()
        };
        for need in goods.needs {
            let change_id = keys::change_id(kind, booking_id, &need.sku);
            change.stock.push(StockDelta {
                warehouse_id: goods.warehouse_id.to_string(),
                sku: need.sku.clone(),
                physical: need.quantity,
                allocatable: need.quantity,
                expected_version: None,
            });
            change.outbox.push(self.events.stock_changed(
                StockChange {
                    region: goods.region,
                    sku: &need.sku,
                    warehouse_id: goods.warehouse_id,
                    delta: need.quantity,
                    change_id: &change_id,
                    cause: goods.cause,
                },
                now,
            ));
        }
        change
    }
}

/// The answer to a booking whose id was taken: the first answer for the same payload,
/// `FAILED_PRECONDITION` for another.
fn repeated_booking(
    kind: &'static str,
    what: &str,
    id: &str,
    fingerprint: &str,
    stored_fingerprint: String,
    stock: Vec<StockRow>,
) -> Result<(Vec<StockRow>, bool), WarehouseError> {
    if stored_fingerprint == fingerprint {
        Ok((stock, true))
    } else {
        Err(WarehouseError::precondition(
            kind,
            id,
            format!("{what} {id} was booked with a different payload"),
        ))
    }
}
