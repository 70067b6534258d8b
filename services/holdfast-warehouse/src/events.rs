//! The events the warehouse announces (through the outbox).
//!
//! | event type | topic | key | payload |
//! |---|---|---|---|
//! | `shipment.created` / `.shipped` / `.delivered` / `.cancelled` | `holdfast.shipments.v1` | order id | `ShipmentEvent` |
//! | `fulfillment.backorder_raised` | `holdfast.fulfillment.v1` | order id | `FulfillmentEvent` |
//! | `reconciliation.warehouse_stock_changed` | `holdfast.reconciliation.v1` | SKU | `ReconciliationEvent` |

use std::collections::BTreeMap;

use holdfast_proto::events::v1::{
    BackorderLine, BackorderRaised, FulfillmentEvent, ReconciliationEvent, ShipmentCancelled,
    ShipmentCreated, ShipmentDelivered, ShipmentEvent, ShipmentLine, ShipmentShipped, StockChangeCause,
    WarehouseStockChanged, fulfillment_event, reconciliation_event, shipment_event,
};
use holdfast_store::{OutboxMessage, StoredShipment};
use prost::Message;

use crate::routing::Shortfall;

/// Topic of fulfillment requests (dispatch in, backorders out).
pub const FULFILLMENT_TOPIC: &str = "holdfast.fulfillment.v1";
/// Topic of order lifecycle events (cancellations and returns in).
pub const ORDERS_TOPIC: &str = "holdfast.orders.v1";
/// Topic of shipment events (out; orders consumes them).
pub const SHIPMENTS_TOPIC: &str = "holdfast.shipments.v1";
/// Topic of stock reconciliation (out; inventory consumes it).
pub const RECONCILIATION_TOPIC: &str = "holdfast.reconciliation.v1";

/// Event types this service reads or writes.
pub mod types {
    /// Orders asks for an order to be shipped.
    pub const DISPATCH_REQUESTED: &str = "fulfillment.dispatch_requested";
    /// Routing could not allocate some lines.
    pub const BACKORDER_RAISED: &str = "fulfillment.backorder_raised";
    /// An order was confirmed (not acted on here: dispatch is).
    pub const ORDER_CONFIRMED: &str = "order.confirmed";
    /// An order was cancelled.
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// A returned parcel arrived and was inspected.
    pub const RETURN_RECEIVED: &str = "order.return_received";
    /// Routing created a shipment.
    pub const SHIPMENT_CREATED: &str = "shipment.created";
    /// A shipment left with a carrier.
    pub const SHIPMENT_SHIPPED: &str = "shipment.shipped";
    /// A shipment was delivered.
    pub const SHIPMENT_DELIVERED: &str = "shipment.delivered";
    /// A shipment was cancelled before it shipped.
    pub const SHIPMENT_CANCELLED: &str = "shipment.cancelled";
    /// A warehouse's physical stock changed.
    pub const STOCK_CHANGED: &str = "reconciliation.warehouse_stock_changed";
}

/// Builds outbox rows stamped with the producing region and the current trace.
#[derive(Debug, Clone)]
pub struct Events {
    region: String,
}

impl Events {
    /// Events produced in `region`.
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
        }
    }

    fn message(
        &self,
        topic: &str,
        key: &str,
        event_type: &str,
        encode: impl FnOnce(String) -> Vec<u8>,
    ) -> OutboxMessage {
        let id = uuid::Uuid::now_v7().to_string();
        let mut headers = BTreeMap::new();
        headers.insert("region".to_string(), self.region.clone());
        if let Some(traceparent) = holdfast_platform::telemetry::current_traceparent() {
            headers.insert("traceparent".to_string(), traceparent);
        }
        OutboxMessage {
            payload: encode(id.clone()),
            id,
            topic: topic.to_string(),
            key: key.to_string(),
            event_type: event_type.to_string(),
            headers,
            created_at_ms: crate::now_ms(),
        }
    }

    fn shipment_event(
        &self,
        order_id: &str,
        event_type: &str,
        event: shipment_event::Event,
    ) -> OutboxMessage {
        self.message(SHIPMENTS_TOPIC, order_id, event_type, |event_id| {
            ShipmentEvent {
                event_id,
                event: Some(event),
            }
            .encode_to_vec()
        })
    }

    /// `shipment.created` for `shipment`, one of `shipments_in_order` made by one routing.
    pub fn created(&self, shipment: &StoredShipment, shipments_in_order: u32, at_ms: i64) -> OutboxMessage {
        self.shipment_event(
            &shipment.order_id,
            types::SHIPMENT_CREATED,
            shipment_event::Event::Created(ShipmentCreated {
                shipment_id: shipment.id.clone(),
                order_id: shipment.order_id.clone(),
                warehouse_id: shipment.warehouse_id.clone(),
                lines: shipment
                    .lines
                    .iter()
                    .map(|l| ShipmentLine {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
                    })
                    .collect(),
                shipments_in_order,
                promised_by_unix_ms: shipment.promised_by_ms,
                occurred_at_unix_ms: at_ms,
            }),
        )
    }

    /// `shipment.shipped` for `shipment` (carrier and tracking number set).
    pub fn shipped(&self, shipment: &StoredShipment) -> OutboxMessage {
        self.shipment_event(
            &shipment.order_id,
            types::SHIPMENT_SHIPPED,
            shipment_event::Event::Shipped(ShipmentShipped {
                shipment_id: shipment.id.clone(),
                order_id: shipment.order_id.clone(),
                warehouse_id: shipment.warehouse_id.clone(),
                carrier: shipment.carrier.clone(),
                tracking_number: shipment.tracking_number.clone(),
                occurred_at_unix_ms: shipment.shipped_at_ms,
            }),
        )
    }

    /// `shipment.delivered` for `shipment`.
    pub fn delivered(&self, shipment: &StoredShipment) -> OutboxMessage {
        self.shipment_event(
            &shipment.order_id,
            types::SHIPMENT_DELIVERED,
            shipment_event::Event::Delivered(ShipmentDelivered {
                shipment_id: shipment.id.clone(),
                order_id: shipment.order_id.clone(),
                warehouse_id: shipment.warehouse_id.clone(),
                occurred_at_unix_ms: shipment.delivered_at_ms,
            }),
        )
    }

    /// `shipment.cancelled` for `shipment`.
    pub fn cancelled(&self, shipment: &StoredShipment, reason: &str, at_ms: i64) -> OutboxMessage {
        self.shipment_event(
            &shipment.order_id,
            types::SHIPMENT_CANCELLED,
            shipment_event::Event::Cancelled(ShipmentCancelled {
                shipment_id: shipment.id.clone(),
                order_id: shipment.order_id.clone(),
                warehouse_id: shipment.warehouse_id.clone(),
                reason: reason.to_string(),
                occurred_at_unix_ms: at_ms,
            }),
        )
    }

    /// `fulfillment.backorder_raised` for the lines of `order_id` routing could not fill.
    pub fn backorder(&self, order_id: &str, region: &str, short: &[Shortfall], at_ms: i64) -> OutboxMessage {
        self.message(FULFILLMENT_TOPIC, order_id, types::BACKORDER_RAISED, |event_id| {
            FulfillmentEvent {
                event_id,
                event: Some(fulfillment_event::Event::BackorderRaised(BackorderRaised {
                    order_id: order_id.to_string(),
                    lines: short
                        .iter()
                        .map(|s| BackorderLine {
                            sku: s.sku.clone(),
                            requested: s.requested,
                            missing: s.missing,
                            reason: s.reason.clone(),
                        })
                        .collect(),
                    region: region.to_string(),
                    occurred_at_unix_ms: at_ms,
                })),
            }
            .encode_to_vec()
        })
    }

    /// `reconciliation.warehouse_stock_changed`: `delta` units of `sku` in `warehouse_id`
    /// (of `region`), with its change id.
    pub fn stock_changed(&self, change: StockChange<'_>, at_ms: i64) -> OutboxMessage {
        self.message(
            RECONCILIATION_TOPIC,
            change.sku,
            types::STOCK_CHANGED,
            |event_id| {
                ReconciliationEvent {
                    event_id,
                    event: Some(reconciliation_event::Event::WarehouseStockChanged(
                        WarehouseStockChanged {
                            region: change.region.to_string(),
                            sku: change.sku.to_string(),
                            warehouse_id: change.warehouse_id.to_string(),
                            delta: change.delta,
                            change_id: change.change_id.to_string(),
                            cause: change.cause as i32,
                            occurred_at_unix_ms: at_ms,
                        },
                    )),
                }
                .encode_to_vec()
            },
        )
    }
}

/// What a `WarehouseStockChanged` says.
#[derive(Debug, Clone, Copy)]
pub struct StockChange<'a> {
    /// The region whose inventory follows.
    pub region: &'a str,
    /// The SKU.
    pub sku: &'a str,
    /// The warehouse.
    pub warehouse_id: &'a str,
    /// Units added (positive) or removed (negative); never 0.
    pub delta: i64,
    /// The change's idempotency id.
    pub change_id: &'a str,
    /// Why.
    pub cause: StockChangeCause,
}
