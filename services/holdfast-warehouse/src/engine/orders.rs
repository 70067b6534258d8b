//! Order events: routing a dispatched order, cancelling an order's open shipments,
//! restocking a passed return.

use std::collections::HashMap;

use holdfast_proto::events::v1::{DispatchRequested, OrderCancelled, ReturnReceived, StockChangeCause};
use holdfast_proto::warehouse::v1::ShipmentStatus;
use holdfast_store::{
    ChangeOutcome, Claim, IfTaken, ShipmentLineRecord, ShipmentWrite, StockDelta, StoredShipment,
    WarehouseChange,
};
use prost::Message;

use crate::error::WarehouseError;
use crate::routing::{self, Candidate};
use crate::{CONSUMER_GROUP, keys, now_ms};

use super::stock::GoodsIn;
use super::{
    ATTEMPTS, DAY_MS, Engine, RouteRequest, Routed, RoutingPart, WarehouseBackend, at, invalid, is_open,
};

impl<S: WarehouseBackend> Engine<S> {
    /// changes of the change being built): the deltas, shipments and events it adds.
    pub(super) async fn plan_routing(
        &self,
        request: &RouteRequest<'_>,
        adjust: &HashMap<(String, String), i64>,
    ) -> Result<RoutingPart, WarehouseError> {
        let (warehouses, default): (Vec<_>, Vec<_>) = self
            .active_warehouses(request.region)
            .await?
            .into_iter()
            .partition(|w| !self.is_default_warehouse(&w.id));
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
        let mut plan = routing::plan(&request.needs, &candidates);
        // The default warehouse ships whatever the others cannot (its stock is what
        // inventory sold), if it keeps the promise.
        if !plan.backorders.is_empty()
            && let Some(fallback) = default.first()
            && let Some(option) = routing::option_for(
                fallback,
                request.speed,
                routing::distance_km((fallback.latitude, fallback.longitude), to),
            )
        {
            plan.shipments.push(routing::PlannedShipment {
                warehouse_id: fallback.id.clone(),
                lines: plan
                    .backorders
                    .drain(..)
                    .map(|short| (short.sku, short.missing))
                    .collect(),
                max_days: option.max_days,
            });
        }
        for short in &mut plan.backorders {
            short.reason = if rows.iter().any(|r| r.sku == short.sku) {
                format!(
                    "not enough units of {} allocatable in the active warehouses of region {} that ship at this speed to the address",
                    short.sku, request.region
                )
            } else {
                format!("no warehouse of region {} stocks {}", request.region, short.sku)
            };
        }
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
            if !self.is_default_warehouse(&planned.warehouse_id) {
                part.stock
                    .extend(planned.lines.iter().map(|(sku, quantity)| StockDelta {
                        warehouse_id: planned.warehouse_id.clone(),
                        sku: sku.clone(),
                        physical: 0,
                        allocatable: -quantity,
                        expected_version: None,
                    }));
            }
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
    /// shipments, announces them and any backorder, all at once and once per order. Lines
    /// no warehouse can ship (an unknown SKU among them) are backordered with a reason.
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
        // A SKU no warehouse stocks is backordered (or shipped by the default warehouse),
        // never poison: the order shows it.
        let needs = routing::merge_needs(dispatch.lines.iter().map(|l| (l.sku.clone(), l.quantity)));
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

    pub(super) fn event_claim(&self, event_id: &str) -> Claim {
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
                let keeps_stock = !self.is_default_warehouse(&shipment.warehouse_id);
                change
                    .stock
                    .extend(shipment.lines.iter().filter(|_| keeps_stock).map(|l| StockDelta {
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
        let change = self.goods_in(
            GoodsIn {
                warehouse_id: &warehouse.id,
                region: &warehouse.region,
                needs: &needs,
                booking: ("return", &returned.return_id),
                cause: StockChangeCause::Return,
            },
            vec![
                self.event_claim(event_id),
                Claim {
                    scope: keys::RETURN.into(),
                    key: returned.return_id.clone(),
                    fingerprint: warehouse.id.clone(),
                    if_taken: IfTaken::Repeat,
                },
            ],
        );
        match self.apply(change).await? {
            ChangeOutcome::Applied { .. } => Ok(true),
            ChangeOutcome::Repeated(_) => Ok(false),
            ChangeOutcome::Refused(_) => Err(invalid(format!(
                "return {} would overflow a stock count",
                returned.return_id
            ))),
        }
    }
}
