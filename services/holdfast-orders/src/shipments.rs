//! Shipment events from the warehouse move orders through FULFILLING, PARTIALLY_SHIPPED,
//! SHIPPED and DELIVERED and record each suborder's tracking number.
//!
//! Applying an event is a pure function of the order and the event, and applying one twice
//! changes nothing the second time, so redelivery (at-least-once buses) is harmless.

use holdfast_proto::events::v1::{ShipmentEvent, shipment_event};
use holdfast_proto::orders::v1::{Order, OrderLine, OrderStatus, Suborder};
use holdfast_proto::warehouse::v1::ShipmentStatus;

use crate::context::{OrdersStore, StepContext, now_ms};
use crate::error::OrdersError;
use crate::order::{self, Change};

/// Order statuses shipment events move an order out of.
const SHIPPING: [OrderStatus; 4] = [
    OrderStatus::Paid,
    OrderStatus::Fulfilling,
    OrderStatus::PartiallyShipped,
    OrderStatus::Shipped,
];

/// Why a shipment event cannot be applied, ever (the consumer dead-letters it).
#[derive(Debug, thiserror::Error)]
pub enum Poison {
    /// The event has no body.
    #[error("shipment event without a body")]
    Empty,
    /// The event names an order this store does not hold.
    #[error("{0}")]
    UnknownOrder(String),
    /// The event names an order id the store refuses (empty, too long).
    #[error("{0}")]
    BadOrderId(String),
}

/// Applies `event` to its order. An empty event or an unknown order is poison (the caller
/// dead-letters it); any other error is worth a retry.
pub async fn apply<S: OrdersStore>(ctx: &StepContext<S>, event: &ShipmentEvent) -> Result<Order, ApplyError> {
    let order_id = match &event.event {
        Some(shipment_event::Event::Created(e)) => e.order_id.clone(),
        Some(shipment_event::Event::Shipped(e)) => e.order_id.clone(),
        Some(shipment_event::Event::Delivered(e)) => e.order_id.clone(),
        Some(shipment_event::Event::Cancelled(e)) => e.order_id.clone(),
        None => return Err(ApplyError::Poison(Poison::Empty)),
    };
    order::change(ctx, &order_id, |current| {
        Ok(if apply_to(current, event) {
            Change::Write(Vec::new())
        } else {
            Change::Keep
        })
    })
    .await
    .map_err(classify)
}

/// An order writer's failure, as poison (unknown or bad order id) or worth a retry.
pub(crate) fn classify(error: OrdersError) -> ApplyError {
    match error {
        OrdersError::NotFound(what) => ApplyError::Poison(Poison::UnknownOrder(format!("{what} not found"))),
        OrdersError::InvalidArgument(status) => {
            ApplyError::Poison(Poison::BadOrderId(status.message().to_string()))
        }
        other => ApplyError::Retry(other),
    }
}

/// Why [`apply`] did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Never applicable.
    #[error(transparent)]
    Poison(Poison),
    /// Not now (the store failed, or the order kept changing).
    #[error(transparent)]
    Retry(OrdersError),
}

/// The change `event` makes to `order`; `false` if none.
pub fn apply_to(order: &mut Order, event: &ShipmentEvent) -> bool {
    let before = order.clone();
    match &event.event {
        Some(shipment_event::Event::Created(e)) => {
            let lines = e
                .lines
                .iter()
                .map(|l| {
                    let priced = order.lines.iter().find(|o| o.sku == l.sku);
                    let unit = priced.and_then(|p| p.unit_price.clone()).unwrap_or_default();
                    let title = priced.map(|p| p.title.clone()).unwrap_or_default();
                    order::line(&l.sku, l.quantity, unit.amount_minor, &unit.currency, &title)
                })
                .collect::<Vec<OrderLine>>();
            // A shipment first heard of through a later event has no lines yet.
            let sub = suborder(order, &e.shipment_id, &e.warehouse_id);
            if let Some(sub) = sub
                && sub.lines.is_empty()
            {
                sub.lines = lines;
            }
        }
        Some(shipment_event::Event::Shipped(e)) => {
            if let Some(sub) = suborder(order, &e.shipment_id, &e.warehouse_id)
                && sub.status < ShipmentStatus::Shipped as i32
            {
                sub.status = ShipmentStatus::Shipped as i32;
                sub.carrier = e.carrier.clone();
                sub.tracking_number = e.tracking_number.clone();
            }
        }
        Some(shipment_event::Event::Delivered(e)) => {
            if let Some(sub) = suborder(order, &e.shipment_id, &e.warehouse_id)
                && sub.status != ShipmentStatus::Delivered as i32
            {
                sub.status = ShipmentStatus::Delivered as i32;
            }
        }
        Some(shipment_event::Event::Cancelled(e)) => {
            if let Some(sub) = suborder(order, &e.shipment_id, &e.warehouse_id)
                && sub.status < ShipmentStatus::Shipped as i32
            {
                sub.status = ShipmentStatus::Cancelled as i32;
            }
        }
        None => {}
    }
    if let Some(next) = derived_status(order) {
        order::transition(order, &SHIPPING, next, now_ms(), "");
    }
    *order != before
}

/// A shipment the event names, created on the fly if `created` was not seen yet (events of
/// one order keep their order on one partition, but a lost `created` must not lose tracking).
fn suborder<'a>(order: &'a mut Order, shipment_id: &str, warehouse_id: &str) -> Option<&'a mut Suborder> {
    if order.suborders.iter().all(|s| s.shipment_id != shipment_id) {
        order.suborders.push(Suborder {
            shipment_id: shipment_id.to_string(),
            warehouse_id: warehouse_id.to_string(),
            status: ShipmentStatus::Created as i32,
            ..Suborder::default()
        });
    }
    order.suborders.iter_mut().find(|s| s.shipment_id == shipment_id)
}

/// The status the suborders imply, if any.
fn derived_status(order: &Order) -> Option<OrderStatus> {
    let live: Vec<i32> = order
        .suborders
        .iter()
        .map(|s| s.status)
        .filter(|s| *s != ShipmentStatus::Cancelled as i32)
        .collect();
    if live.is_empty() {
        return None;
    }
    let delivered = live
        .iter()
        .filter(|s| **s == ShipmentStatus::Delivered as i32)
        .count();
    let shipped = live
        .iter()
        .filter(|s| **s >= ShipmentStatus::Shipped as i32)
        .count();
    Some(if delivered == live.len() {
        OrderStatus::Delivered
    } else if shipped == live.len() {
        OrderStatus::Shipped
    } else if shipped > 0 {
        OrderStatus::PartiallyShipped
    } else {
        OrderStatus::Fulfilling
    })
}

/// Topic of shipment events.
pub const SHIPMENTS_TOPIC: &str = "holdfast.shipments.v1";
/// Consumer group of orders on [`SHIPMENTS_TOPIC`].
pub const CONSUMER_GROUP: &str = "holdfast-orders";

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::events::v1::{ShipmentCreated, ShipmentDelivered, ShipmentLine, ShipmentShipped};

    fn created(id: &str) -> ShipmentEvent {
        ShipmentEvent {
            event_id: format!("e-{id}"),
            event: Some(shipment_event::Event::Created(ShipmentCreated {
                shipment_id: id.into(),
                order_id: "ord_1".into(),
                warehouse_id: "w".into(),
                lines: vec![ShipmentLine {
                    sku: "a".into(),
                    quantity: 1,
                }],
                ..ShipmentCreated::default()
            })),
        }
    }

    fn shipped(id: &str) -> ShipmentEvent {
        ShipmentEvent {
            event_id: format!("s-{id}"),
            event: Some(shipment_event::Event::Shipped(ShipmentShipped {
                shipment_id: id.into(),
                order_id: "ord_1".into(),
                warehouse_id: "w".into(),
                carrier: "ups".into(),
                tracking_number: format!("1Z{id}"),
                ..ShipmentShipped::default()
            })),
        }
    }

    fn delivered(id: &str) -> ShipmentEvent {
        ShipmentEvent {
            event_id: format!("d-{id}"),
            event: Some(shipment_event::Event::Delivered(ShipmentDelivered {
                shipment_id: id.into(),
                order_id: "ord_1".into(),
                warehouse_id: "w".into(),
                ..ShipmentDelivered::default()
            })),
        }
    }

    #[test]
    fn split_shipment_goes_partial_then_shipped_then_delivered_and_repeats_change_nothing() {
        let mut order = Order {
            id: "ord_1".into(),
            lines: vec![order::line("a", 2, 100, "USD", "A")],
            ..Order::default()
        };
        order.status = OrderStatus::Fulfilling as i32;
        assert!(apply_to(&mut order, &created("s1")));
        assert!(apply_to(&mut order, &created("s2")));
        assert!(!apply_to(&mut order, &created("s2")), "a repeat changes nothing");
        assert_eq!(order::status(&order), OrderStatus::Fulfilling);
        assert!(apply_to(&mut order, &shipped("s1")));
        assert_eq!(order::status(&order), OrderStatus::PartiallyShipped);
        assert_eq!(order.suborders[0].tracking_number, "1Zs1");
        assert!(apply_to(&mut order, &shipped("s2")));
        assert_eq!(order::status(&order), OrderStatus::Shipped);
        assert!(!apply_to(&mut order, &shipped("s2")));
        assert!(apply_to(&mut order, &delivered("s1")));
        assert_eq!(order::status(&order), OrderStatus::Shipped);
        assert!(apply_to(&mut order, &delivered("s2")));
        assert_eq!(order::status(&order), OrderStatus::Delivered);
        assert_eq!(
            order.suborders[0].lines[0]
                .unit_price
                .as_ref()
                .map(|m| m.amount_minor),
            Some(100)
        );
    }

    #[test]
    fn cancelled_orders_do_not_move() {
        let mut order = Order {
            id: "ord_1".into(),
            ..Order::default()
        };
        order.status = OrderStatus::Cancelled as i32;
        apply_to(&mut order, &created("s1"));
        apply_to(&mut order, &shipped("s1"));
        assert_eq!(order::status(&order), OrderStatus::Cancelled);
    }
}
