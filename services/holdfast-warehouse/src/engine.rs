//! The warehouse's operations: each reads what it needs, plans one [`WarehouseChange`]
//! (stock deltas, shipment writes, the events announcing them, the claims that make it
//! happen once) and hands it to the store, which applies it atomically or says which
//! condition no longer holds; then the operation reads again and plans again, a few times
//! at most.
//!
//! Stock model, per (SKU, warehouse): `physical` units on the shelves and `allocatable`
//! units not promised to a shipment; `allocated = physical - allocatable`.
//!
//! | operation | physical | allocatable | events |
//! |---|---|---|---|
//! | routing allocates a shipment | | − units | `shipment.created` (+ `fulfillment.backorder_raised`) |
//! | shipment cancelled | | + units | `shipment.cancelled` |
//! | shipment shipped | − units | | `shipment.shipped` |
//! | goods receipt, passed return | + units | + units | `reconciliation.warehouse_stock_changed` |
//! | shrinkage | − units | − units (shipments re-routed if it must take allocated units) | same, plus shipment events |
//! | stock take | set | follows, allocated kept | `reconciliation.warehouse_stock_changed` |

use std::collections::HashMap;
use std::sync::Arc;

use holdfast_proto::common::v1::Address;
use holdfast_proto::events::v1::{DispatchRequested, OrderCancelled, ReturnReceived, StockChangeCause};
use holdfast_proto::warehouse::v1::ShipmentStatus;
use holdfast_store::{
    ChangeOutcome, Claim, IfTaken, OutboxMessage, OutboxStore, Refusal, ShipmentLineRecord, ShipmentWrite,
    StockDelta, StockRow, StoredShipment, StoredWarehouse, WarehouseChange, WarehouseStore,
};
use prost::Message;
use tokio::sync::Notify;

use crate::error::WarehouseError;
use crate::events::{Events, StockChange};
use crate::routing::{self, Candidate, Need, Shortfall};
use crate::{CONSUMER_GROUP, keys, now_ms};

/// Plans tried before an operation whose rows keep changing gives up.
const ATTEMPTS: usize = 8;
/// A day in milliseconds, for promises.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The store the warehouse needs: its aggregate and the outbox, shareable across tasks.
pub trait WarehouseBackend: WarehouseStore + OutboxStore + Clone + 'static {}
impl<T: WarehouseStore + OutboxStore + Clone + 'static> WarehouseBackend for T {}

/// Wakes a relay that publishes this store's outbox (when another service's relay does).
pub type WakeRelay = Arc<dyn Fn() + Send + Sync>;

/// How a routing request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Shipments were created (maybe none, if everything was backordered).
    Shipments {
        /// The shipments created.
        shipments: Vec<StoredShipment>,
        /// Lines (or parts of lines) backordered.
        backordered: usize,
    },
    /// The order was routed (or cancelled) before: nothing changed.
    AlreadyDone,
}

/// A shrinkage to book.
#[derive(Debug, Clone)]
pub struct Shrinkage {
    /// Client-made id, the idempotency key.
    pub id: String,
    /// The warehouse.
    pub warehouse_id: String,
    /// The SKU.
    pub sku: String,
    /// Units lost, at least 1.
    pub quantity: i64,
    /// The `ShrinkageReason` number.
    pub reason: i32,
    /// Free text.
    pub note: String,
}

/// An order (or part of one) to route.
struct RouteRequest<'a> {
    order_id: &'a str,
    needs: Vec<Need>,
    ship_to: &'a Address,
    speed: i32,
    region: &'a str,
    occurred_at_ms: i64,
}

/// The part of a change one routing contributes.
#[derive(Default)]
struct RoutingPart {
    stock: Vec<StockDelta>,
    shipments: Vec<StoredShipment>,
    outbox: Vec<OutboxMessage>,
    backorders: Vec<Shortfall>,
}

/// Everything the operations share: the store, the event builders, the relay's wake-up.
pub struct Engine<S> {
    /// The durable store.
    pub store: S,
    /// This service's region (stamped on events; routes dispatches that name none).
    pub region: String,
    /// Poked after a change wrote events, so the relay publishes them at once.
    pub outbox_written: Notify,
    events: Events,
    shared_relay: Option<WakeRelay>,
}

fn status(shipment: &StoredShipment) -> ShipmentStatus {
    ShipmentStatus::try_from(shipment.status).unwrap_or(ShipmentStatus::Unspecified)
}

fn is_open(shipment: &StoredShipment) -> bool {
    matches!(
        status(shipment),
        ShipmentStatus::Created | ShipmentStatus::Picking
    )
}

/// The `(warehouse, sku)` key of stock maps.
fn at(warehouse_id: &str, sku: &str) -> (String, String) {
    (warehouse_id.to_string(), sku.to_string())
}

impl<S: WarehouseBackend> Engine<S> {
    /// An engine over `store` in `region`. With `shared_relay`, another relay publishes
    /// this store's outbox and is woken through it.
    pub fn new(store: S, region: &str, shared_relay: Option<WakeRelay>) -> Self {
        Self {
            store,
            region: region.to_string(),
            outbox_written: Notify::new(),
            events: Events::new(region),
            shared_relay,
        }
    }

    /// Applies `change`, waking the relay if it wrote events.
    async fn apply(&self, change: WarehouseChange) -> Result<ChangeOutcome, WarehouseError> {
        let wrote_events = !change.outbox.is_empty();
        let outcome = self.store.apply_warehouse_change(change).await?;
        if wrote_events && matches!(outcome, ChangeOutcome::Applied { .. }) {
            self.outbox_written.notify_one();
            if let Some(wake) = &self.shared_relay {
                wake();
            }
        }
        Ok(outcome)
    }

    /// The warehouse, or `NotFound`.
    pub async fn warehouse(&self, id: &str) -> Result<StoredWarehouse, WarehouseError> {
        self.store
            .get_warehouse(id)
            .await?
            .ok_or_else(|| WarehouseError::NotFound(format!("warehouse {id:?}")))
    }

    /// Every active warehouse of `region`.
    async fn active_warehouses(&self, region: &str) -> Result<Vec<StoredWarehouse>, WarehouseError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list_warehouses(Some(region), false, cursor.as_deref(), 500)
                .await?;
            all.extend(page.warehouses);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn stock_row(&self, warehouse_id: &str, sku: &str) -> Result<StockRow, WarehouseError> {
        Ok(self
            .store
            .get_stock(&[sku.to_string()], Some(warehouse_id))
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| StockRow {
                sku: sku.to_string(),
                warehouse_id: warehouse_id.to_string(),
                ..StockRow::default()
            }))
    }

    // ---- stock ----------------------------------------------------------------------------

    /// A stock take: physical becomes `physical` (allocated units stay allocated). Returns
    /// the row after and the delta that flowed to the region's inventory.
    pub async fn set_stock(
        &self,
        warehouse_id: &str,
        sku: &str,
        physical: i64,
    ) -> Result<(StockRow, i64), WarehouseError> {
        let warehouse = self.warehouse(warehouse_id).await?;
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
        let warehouse = self.warehouse(warehouse_id).await?;
        let now = now_ms();
        let change_ids: Vec<String> = needs
            .iter()
            .map(|n| keys::change_id("receipt", receipt_id, &n.sku))
            .collect();
        let change = WarehouseChange {
            claims: vec![Claim {
                scope: keys::RECEIPT.into(),
                key: receipt_id.to_string(),
                fingerprint: fingerprint.clone(),
                if_taken: IfTaken::Repeat,
            }],
            stock: needs
                .iter()
                .map(|n| StockDelta {
                    warehouse_id: warehouse_id.to_string(),
                    sku: n.sku.clone(),
                    physical: n.quantity,
                    allocatable: n.quantity,
                    expected_version: None,
                })
                .collect(),
            shipments: Vec::new(),
            outbox: needs
                .iter()
                .zip(&change_ids)
                .map(|(n, change_id)| {
                    self.events.stock_changed(
                        StockChange {
                            region: &warehouse.region,
                            sku: &n.sku,
                            warehouse_id,
                            delta: n.quantity,
                            change_id,
                            cause: StockChangeCause::Receipt,
                        },
                        now,
                    )
                })
                .collect(),
        };
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
        let warehouse = self.warehouse(&shrinkage.warehouse_id).await?;
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
    async fn release_for_shrinkage(
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

    // ---- routing --------------------------------------------------------------------------

    /// Plans the routing of `request` over the stock as stored plus `adjust` (allocatable
    /// changes of the change being built): the deltas, shipments and events it adds.
    async fn plan_routing(
        &self,
        request: &RouteRequest<'_>,
        adjust: &HashMap<(String, String), i64>,
    ) -> Result<RoutingPart, WarehouseError> {
        let warehouses = self.active_warehouses(request.region).await?;
        let skus: Vec<String> = request.needs.iter().map(|n| n.sku.clone()).collect();
        let rows = if skus.is_empty() {
            Vec::new()
        } else {
            self.store.get_stock(&skus, None).await?
        };
        let mut allocatable: HashMap<(String, String), i64> = rows
            .iter()
            .map(|r| (at(&r.warehouse_id, &r.sku), r.allocatable))
            .collect();
        for (key, change) in adjust {
            *allocatable.entry(key.clone()).or_default() += change;
        }
        let to = request
            .ship_to
            .location
            .as_ref()
            .map_or((0.0, 0.0), |l| (l.latitude, l.longitude));
        let candidates: Vec<Candidate> = warehouses
            .iter()
            .filter_map(|w| {
                let distance_km = routing::distance_km((w.latitude, w.longitude), to);
                let option = routing::option_for(w, request.speed, distance_km)?;
                Some(Candidate {
                    warehouse_id: w.id.clone(),
                    distance_km,
                    max_days: option.max_days,
                    allocatable: skus
                        .iter()
                        .map(|sku| {
                            let units = allocatable.get(&at(&w.id, sku)).copied().unwrap_or(0);
                            (sku.clone(), units)
                        })
                        .collect(),
                })
            })
            .collect();
        let plan = routing::plan(&request.needs, &candidates);
        let now = now_ms();
        let ship_to = request.ship_to.encode_to_vec();
        let count = u32::try_from(plan.shipments.len()).unwrap_or(u32::MAX);
        let mut part = RoutingPart {
            backorders: plan.backorders.clone(),
            ..RoutingPart::default()
        };
        for planned in plan.shipments {
            let shipment = StoredShipment {
                id: format!("shp_{}", uuid::Uuid::now_v7()),
                order_id: request.order_id.to_string(),
                warehouse_id: planned.warehouse_id.clone(),
                lines: planned
                    .lines
                    .iter()
                    .map(|(sku, quantity)| ShipmentLineRecord {
                        sku: sku.clone(),
                        quantity: *quantity,
                    })
                    .collect(),
                status: ShipmentStatus::Created as i32,
                ship_to: ship_to.clone(),
                shipping_speed: routing::effective_speed(request.speed),
                promised_by_ms: request
                    .occurred_at_ms
                    .saturating_add(i64::from(planned.max_days).saturating_mul(DAY_MS)),
                created_at_ms: now,
                ..StoredShipment::default()
            };
            part.stock
                .extend(planned.lines.iter().map(|(sku, quantity)| StockDelta {
                    warehouse_id: planned.warehouse_id.clone(),
                    sku: sku.clone(),
                    physical: 0,
                    allocatable: -quantity,
                    expected_version: None,
                }));
            part.outbox.push(self.events.created(&shipment, count, now));
            part.shipments.push(shipment);
        }
        if !part.backorders.is_empty() {
            part.outbox.push(
                self.events
                    .backorder(request.order_id, request.region, &part.backorders, now),
            );
        }
        Ok(part)
    }

    /// Routes a dispatch request (consumed event `event_id`): allocates stock, creates the
    /// shipments, announces them and any backorder, all at once and once per order.
    /// `InvalidArgument` for a request that cannot be routed (an unknown SKU among them).
    pub async fn route(
        &self,
        event_id: &str,
        dispatch: &DispatchRequested,
    ) -> Result<Routed, WarehouseError> {
        let event_claim = self.event_claim(event_id);
        if self
            .store
            .get_claim(keys::ROUTE, &dispatch.order_id)
            .await?
            .is_some()
            || self
                .store
                .get_claim(&event_claim.scope, event_id)
                .await?
                .is_some()
        {
            return Ok(Routed::AlreadyDone);
        }
        let needs = routing::merge_needs(dispatch.lines.iter().map(|l| (l.sku.clone(), l.quantity)));
        let skus: Vec<String> = needs.iter().map(|n| n.sku.clone()).collect();
        let known = self.store.get_stock(&skus, None).await?;
        if let Some(unknown) = skus.iter().find(|sku| known.iter().all(|r| &r.sku != *sku)) {
            return Err(invalid(format!(
                "unknown sku {unknown}: no warehouse has ever stocked it"
            )));
        }
        let region = if dispatch.region.is_empty() {
            self.region.as_str()
        } else {
            dispatch.region.as_str()
        };
        let ship_to = dispatch.ship_to.clone().unwrap_or_default();
        let occurred_at_ms = if dispatch.occurred_at_unix_ms > 0 {
            dispatch.occurred_at_unix_ms
        } else {
            now_ms()
        };
        let request = RouteRequest {
            order_id: &dispatch.order_id,
            needs,
            ship_to: &ship_to,
            speed: dispatch.shipping_speed,
            region,
            occurred_at_ms,
        };
        for _ in 0..ATTEMPTS {
            let part = self.plan_routing(&request, &HashMap::new()).await?;
            let backordered = part.backorders.len();
            let change = WarehouseChange {
                claims: vec![
                    event_claim.clone(),
                    Claim {
                        scope: keys::ROUTE.into(),
                        key: dispatch.order_id.clone(),
                        fingerprint: "routed".into(),
                        if_taken: IfTaken::Repeat,
                    },
                ],
                stock: part.stock,
                shipments: part.shipments.into_iter().map(ShipmentWrite::Create).collect(),
                outbox: part.outbox,
            };
            match self.apply(change).await? {
                ChangeOutcome::Applied { shipments, .. } => {
                    crate::metrics::routed(shipments.len(), backordered);
                    return Ok(Routed::Shipments {
                        shipments,
                        backordered,
                    });
                }
                ChangeOutcome::Repeated(_) => return Ok(Routed::AlreadyDone),
                // Another order took units this plan counted on: plan again.
                ChangeOutcome::Refused(_) => continue,
            }
        }
        Err(WarehouseError::Busy(format!(
            "stock for order {}",
            dispatch.order_id
        )))
    }

    fn event_claim(&self, event_id: &str) -> Claim {
        Claim {
            scope: keys::processed(CONSUMER_GROUP),
            key: event_id.to_string(),
            fingerprint: String::new(),
            if_taken: IfTaken::Repeat,
        }
    }

    /// An order was cancelled (consumed event `event_id`): cancels its shipments not yet
    /// shipped and gives their units back; an order not routed yet never will be. Returns
    /// how many shipments it cancelled.
    pub async fn cancel_order(
        &self,
        event_id: &str,
        cancelled: &OrderCancelled,
    ) -> Result<usize, WarehouseError> {
        let reason = if cancelled.reason.is_empty() {
            "order cancelled".to_string()
        } else {
            format!("order cancelled: {}", cancelled.reason)
        };
        for _ in 0..ATTEMPTS {
            let shipments = self.store.list_shipments_by_order(&cancelled.order_id).await?;
            let now = now_ms();
            let mut change = WarehouseChange {
                claims: vec![
                    self.event_claim(event_id),
                    // Arriving before the dispatch, this keeps the order from being routed.
                    Claim {
                        scope: keys::ROUTE.into(),
                        key: cancelled.order_id.clone(),
                        fingerprint: "cancelled".into(),
                        if_taken: IfTaken::Ignore,
                    },
                ],
                ..WarehouseChange::default()
            };
            for shipment in shipments.into_iter().filter(is_open) {
                change.stock.extend(shipment.lines.iter().map(|l| StockDelta {
                    warehouse_id: shipment.warehouse_id.clone(),
                    sku: l.sku.clone(),
                    physical: 0,
                    allocatable: l.quantity,
                    expected_version: None,
                }));
                let expected_version = shipment.version;
                let updated = StoredShipment {
                    status: ShipmentStatus::Cancelled as i32,
                    ..shipment
                };
                change.outbox.push(self.events.cancelled(&updated, &reason, now));
                change.shipments.push(ShipmentWrite::Update {
                    shipment: updated,
                    expected_version,
                });
            }
            let count = change.shipments.len();
            match self.apply(change).await? {
                ChangeOutcome::Applied { .. } => return Ok(count),
                ChangeOutcome::Repeated(_) => return Ok(0),
                // A shipment moved meanwhile (picked, shipped): look again.
                ChangeOutcome::Refused(_) => continue,
            }
        }
        Err(WarehouseError::Busy(format!(
            "shipments of order {}",
            cancelled.order_id
        )))
    }

    /// A returned parcel arrived (consumed event `event_id`): if it passed inspection, its
    /// units go back on the receiving warehouse's shelves (once per return id) and to the
    /// region's inventory. Returns whether anything was restocked.
    pub async fn restock_return(
        &self,
        event_id: &str,
        returned: &ReturnReceived,
    ) -> Result<bool, WarehouseError> {
        if !returned.inspection_passed {
            return Ok(false);
        }
        let warehouse = self.warehouse(&returned.warehouse_id).await?;
        let needs = routing::merge_needs(returned.lines.iter().map(|l| (l.sku.clone(), l.quantity)));
        let now = now_ms();
        let change_ids: Vec<String> = needs
            .iter()
            .map(|n| keys::change_id("return", &returned.return_id, &n.sku))
            .collect();
        let change = WarehouseChange {
            claims: vec![
                self.event_claim(event_id),
                Claim {
                    scope: keys::RETURN.into(),
                    key: returned.return_id.clone(),
                    fingerprint: warehouse.id.clone(),
                    if_taken: IfTaken::Repeat,
                },
            ],
            stock: needs
                .iter()
                .map(|n| StockDelta {
                    warehouse_id: warehouse.id.clone(),
                    sku: n.sku.clone(),
                    physical: n.quantity,
                    allocatable: n.quantity,
                    expected_version: None,
                })
                .collect(),
            shipments: Vec::new(),
            outbox: needs
                .iter()
                .zip(&change_ids)
                .map(|(n, change_id)| {
                    self.events.stock_changed(
                        StockChange {
                            region: &warehouse.region,
                            sku: &n.sku,
                            warehouse_id: &warehouse.id,
                            delta: n.quantity,
                            change_id,
                            cause: StockChangeCause::Return,
                        },
                        now,
                    )
                })
                .collect(),
        };
        match self.apply(change).await? {
            ChangeOutcome::Applied { .. } => Ok(true),
            ChangeOutcome::Repeated(_) => Ok(false),
            ChangeOutcome::Refused(_) => Err(invalid(format!(
                "return {} would overflow a stock count",
                returned.return_id
            ))),
        }
    }

    // ---- shipments ------------------------------------------------------------------------

    /// The shipment, or `NotFound`.
    pub async fn shipment(&self, id: &str) -> Result<StoredShipment, WarehouseError> {
        self.store
            .get_shipment(id)
            .await?
            .ok_or_else(|| WarehouseError::NotFound(format!("shipment {id:?}")))
    }

    /// CREATED → PICKING; idempotent on PICKING.
    pub async fn start_picking(&self, id: &str) -> Result<StoredShipment, WarehouseError> {
        for _ in 0..ATTEMPTS {
            let shipment = self.shipment(id).await?;
            match status(&shipment) {
                ShipmentStatus::Picking => return Ok(shipment),
                ShipmentStatus::Created => {}
                other => return Err(wrong_status(id, other, "start picking")),
            }
            let expected_version = shipment.version;
            let change = WarehouseChange {
                shipments: vec![ShipmentWrite::Update {
                    shipment: StoredShipment {
                        status: ShipmentStatus::Picking as i32,
                        ..shipment
                    },
                    expected_version,
                }],
                ..WarehouseChange::default()
            };
            if let ChangeOutcome::Applied { mut shipments, .. } = self.apply(change).await?
                && let Some(picked) = shipments.pop()
            {
                return Ok(picked);
            }
        }
        Err(WarehouseError::Busy(format!("shipment {id}")))
    }

    /// CREATED or PICKING → SHIPPED with a carrier and tracking number: the units leave
    /// physical stock and `shipment.shipped` is announced. A repeat with the same carrier
    /// and tracking number answers the shipment.
    pub async fn mark_shipped(
        &self,
        id: &str,
        carrier: &str,
        tracking: &str,
    ) -> Result<StoredShipment, WarehouseError> {
        for _ in 0..ATTEMPTS {
            let shipment = self.shipment(id).await?;
            match status(&shipment) {
                ShipmentStatus::Shipped
                    if shipment.carrier == carrier && shipment.tracking_number == tracking =>
                {
                    return Ok(shipment);
                }
                ShipmentStatus::Shipped => {
                    return Err(WarehouseError::precondition(
                        "SHIPPED_WITH_OTHER_TRACKING",
                        id,
                        format!(
                            "shipment {id} already shipped with {} tracking number {}",
                            shipment.carrier, shipment.tracking_number
                        ),
                    ));
                }
                ShipmentStatus::Created | ShipmentStatus::Picking => {}
                other => return Err(wrong_status(id, other, "ship")),
            }
            let expected_version = shipment.version;
            let shipped = StoredShipment {
                status: ShipmentStatus::Shipped as i32,
                carrier: carrier.to_string(),
                tracking_number: tracking.to_string(),
                shipped_at_ms: now_ms(),
                ..shipment
            };
            let change = WarehouseChange {
                claims: vec![Claim {
                    scope: keys::SHIP.into(),
                    key: id.to_string(),
                    fingerprint: keys::fingerprint([carrier, tracking]),
                    if_taken: IfTaken::Repeat,
                }],
                stock: shipped
                    .lines
                    .iter()
                    .map(|l| StockDelta {
                        warehouse_id: shipped.warehouse_id.clone(),
                        sku: l.sku.clone(),
                        physical: -l.quantity,
                        allocatable: 0,
                        expected_version: None,
                    })
                    .collect(),
                outbox: vec![self.events.shipped(&shipped)],
                shipments: vec![ShipmentWrite::Update {
                    shipment: shipped,
                    expected_version,
                }],
            };
            match self.apply(change).await? {
                ChangeOutcome::Applied { mut shipments, .. } => {
                    if let Some(shipped) = shipments.pop() {
                        return Ok(shipped);
                    }
                }
                ChangeOutcome::Refused(Refusal::Stock(row)) => {
                    return Err(WarehouseError::precondition(
                        "STOCK_MISSING",
                        &row.sku,
                        format!(
                            "{} has fewer units of {} than the shipment holds",
                            row.warehouse_id, row.sku
                        ),
                    ));
                }
                // Shipped meanwhile, or the shipment moved: look again.
                ChangeOutcome::Repeated(_) | ChangeOutcome::Refused(_) => {}
            }
        }
        Err(WarehouseError::Busy(format!("shipment {id}")))
    }

    /// SHIPPED → DELIVERED at `delivered_at_ms` (0: now): `shipment.delivered` is
    /// announced. Idempotent on DELIVERED.
    pub async fn mark_delivered(
        &self,
        id: &str,
        delivered_at_ms: i64,
    ) -> Result<StoredShipment, WarehouseError> {
        for _ in 0..ATTEMPTS {
            let shipment = self.shipment(id).await?;
            match status(&shipment) {
                ShipmentStatus::Delivered => return Ok(shipment),
                ShipmentStatus::Shipped => {}
                other => return Err(wrong_status(id, other, "deliver")),
            }
            let now = now_ms();
            let at = if delivered_at_ms == 0 {
                now
            } else {
                delivered_at_ms
            };
            if at < shipment.shipped_at_ms {
                return Err(field_error(
                    "delivered_at_unix_ms",
                    format!(
                        "must not be before the shipment shipped ({})",
                        shipment.shipped_at_ms
                    ),
                ));
            }
            let expected_version = shipment.version;
            let delivered = StoredShipment {
                status: ShipmentStatus::Delivered as i32,
                delivered_at_ms: at,
                ..shipment
            };
            let change = WarehouseChange {
                claims: vec![Claim {
                    scope: keys::DELIVER.into(),
                    key: id.to_string(),
                    fingerprint: String::new(),
                    if_taken: IfTaken::Repeat,
                }],
                outbox: vec![self.events.delivered(&delivered)],
                shipments: vec![ShipmentWrite::Update {
                    shipment: delivered,
                    expected_version,
                }],
                ..WarehouseChange::default()
            };
            if let ChangeOutcome::Applied { mut shipments, .. } = self.apply(change).await?
                && let Some(delivered) = shipments.pop()
            {
                return Ok(delivered);
            }
        }
        Err(WarehouseError::Busy(format!("shipment {id}")))
    }
}

fn wrong_status(id: &str, status: ShipmentStatus, what: &str) -> WarehouseError {
    let (kind, name) = match status {
        ShipmentStatus::Created => ("SHIPMENT_NOT_PICKED", "CREATED"),
        ShipmentStatus::Picking => ("SHIPMENT_PICKING", "PICKING"),
        ShipmentStatus::Shipped => ("SHIPMENT_SHIPPED", "SHIPPED"),
        ShipmentStatus::Delivered => ("SHIPMENT_DELIVERED", "DELIVERED"),
        ShipmentStatus::Cancelled => ("SHIPMENT_CANCELLED", "CANCELLED"),
        ShipmentStatus::Unspecified => ("SHIPMENT_STATUS_UNKNOWN", "UNSPECIFIED"),
    };
    WarehouseError::precondition(kind, id, format!("cannot {what} shipment {id}: it is {name}"))
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

/// A request (or event) that cannot be acted on, as `INVALID_ARGUMENT`.
fn invalid(message: String) -> WarehouseError {
    WarehouseError::InvalidArgument(tonic::Status::invalid_argument(message))
}

/// `INVALID_ARGUMENT` with a `BadRequest` naming `field`.
fn field_error(field: &str, why: String) -> WarehouseError {
    let mut violations = holdfast_platform::status::FieldViolations::new();
    violations.add(field, why);
    let status = violations
        .into_result()
        .err()
        .unwrap_or_else(|| tonic::Status::invalid_argument(field.to_string()));
    WarehouseError::InvalidArgument(status)
}
