//! The warehouse's consumer (group [`CONSUMER_GROUP`](crate::CONSUMER_GROUP)) on
//! `holdfast.fulfillment.v1` and `holdfast.orders.v1`.
//!
//! | event type | what happens |
//! |---|---|
//! | `fulfillment.dispatch_requested` | the order is routed ([`Engine::route`]) |
//! | `order.cancelled` | its open shipments are cancelled ([`Engine::cancel_order`]) |
//! | `order.return_received` | passed goods are restocked ([`Engine::restock_return`]) |
//! | `fulfillment.backorder_raised`, `order.confirmed` | nothing (ours, or dispatch covers it) |
//! | anything else | poison |
//!
//! Every effect is stored with the event id (claim `event:holdfast-warehouse/<id>`) in one
//! change, so a redelivery after a crash between the effect and the offset commit changes
//! nothing. A payload that does not decode, an event type this consumer does not know, a
//! request that cannot be routed (an unknown SKU, a missing location) is poison: it goes to
//! the dead-letter topic with the reason and the consumer goes on. Store outages and
//! contention are retried.

use std::sync::Arc;

use holdfast_platform::events::{Event, EventHandler, HandleError, handler_fn};
use holdfast_platform::status::FieldViolations;
use holdfast_proto::events::v1::{
    DispatchRequested, FulfillmentEvent, OrderEvent, ReturnReceived, fulfillment_event, order_event,
};
use prost::Message;

use crate::engine::{Engine, Routed, WarehouseBackend};
use crate::error::WarehouseError;
use crate::events::{FULFILLMENT_TOPIC, ORDERS_TOPIC, types};
use crate::validate;

/// The topics the warehouse consumes.
pub const TOPICS: [&str; 2] = [FULFILLMENT_TOPIC, ORDERS_TOPIC];

/// The handler: decode, check, act; see the module docs for what is poison.
pub fn handler<S: WarehouseBackend>(engine: Arc<Engine<S>>) -> impl EventHandler {
    handler_fn(move |event: Event| {
        let engine = Arc::clone(&engine);
        async move { handle(&engine, &event).await }
    })
}

/// Handles one event.
pub async fn handle<S: WarehouseBackend>(engine: &Engine<S>, event: &Event) -> Result<(), HandleError> {
    match (event.topic.as_str(), event.event_type.as_str()) {
        (FULFILLMENT_TOPIC, types::DISPATCH_REQUESTED) => {
            let decoded = FulfillmentEvent::decode(event.payload.as_slice())
                .map_err(|e| poison(format!("undecodable fulfillment event: {e}")))?;
            let Some(fulfillment_event::Event::DispatchRequested(dispatch)) = decoded.event else {
                return Err(poison(format!(
                    "event type {} does not match its payload",
                    event.event_type
                )));
            };
            check_dispatch(&dispatch)?;
            match engine.route(&event.id, &dispatch).await.map_err(classify)? {
                Routed::Shipments {
                    shipments,
                    backordered,
                } => tracing::info!(
                    order = %dispatch.order_id, shipments = shipments.len(), backordered,
                    "order routed"
                ),
                Routed::AlreadyDone => {
                    tracing::debug!(order = %dispatch.order_id, "order routed before; nothing to do");
                }
            }
            Ok(())
        }
        (FULFILLMENT_TOPIC, types::BACKORDER_RAISED) | (ORDERS_TOPIC, types::ORDER_CONFIRMED) => Ok(()),
        (ORDERS_TOPIC, types::ORDER_CANCELLED | types::RETURN_RECEIVED) => {
            let decoded = OrderEvent::decode(event.payload.as_slice())
                .map_err(|e| poison(format!("undecodable order event: {e}")))?;
            match decoded.event {
                Some(order_event::Event::Cancelled(cancelled))
                    if event.event_type == types::ORDER_CANCELLED =>
                {
                    if cancelled.order_id.is_empty() {
                        return Err(poison("order.cancelled without an order id".into()));
                    }
                    let count = engine
                        .cancel_order(&event.id, &cancelled)
                        .await
                        .map_err(classify)?;
                    tracing::info!(order = %cancelled.order_id, cancelled = count, "order cancelled");
                    Ok(())
                }
                Some(order_event::Event::ReturnReceived(returned))
                    if event.event_type == types::RETURN_RECEIVED =>
                {
                    check_return(&returned)?;
                    engine
                        .restock_return(&event.id, &returned)
                        .await
                        .map_err(classify)?;
                    Ok(())
                }
                _ => Err(poison(format!(
                    "event type {} does not match its payload",
                    event.event_type
                ))),
            }
        }
        (topic, event_type) => Err(poison(format!("unknown event type {event_type:?} on {topic}"))),
    }
}

fn poison(reason: String) -> HandleError {
    HandleError::Poison(reason)
}

/// Transient failures are retried; a request the warehouse cannot act on is poison.
fn classify(error: WarehouseError) -> HandleError {
    if error.is_transient() {
        return HandleError::Retry(error.to_string());
    }
    match error {
        WarehouseError::InvalidArgument(status) => HandleError::Poison(status.message().to_string()),
        other => HandleError::Poison(other.to_string()),
    }
}

fn checked(violations: FieldViolations) -> Result<(), HandleError> {
    violations
        .into_result()
        .map_err(|status| poison(format!("invalid event: {}", status.message())))
}

fn check_dispatch(dispatch: &DispatchRequested) -> Result<(), HandleError> {
    let mut v = FieldViolations::new();
    validate::id(&mut v, "order_id", &dispatch.order_id);
    if dispatch.lines.is_empty() || dispatch.lines.len() > validate::MAX_LINES {
        v.add("lines", format!("must have 1..{} lines", validate::MAX_LINES));
    }
    for (i, line) in dispatch.lines.iter().enumerate() {
        validate::sku(&mut v, &format!("lines[{i}].sku"), &line.sku);
        if line.quantity < 1 || line.quantity > validate::MAX_RECEIPT_UNITS {
            v.add(
                format!("lines[{i}].quantity"),
                format!("must be 1..{}", validate::MAX_RECEIPT_UNITS),
            );
        }
    }
    validate::location(
        &mut v,
        "ship_to.location",
        dispatch.ship_to.as_ref().and_then(|a| a.location.as_ref()),
    );
    validate::speed(&mut v, "shipping_speed", dispatch.shipping_speed);
    if !dispatch.region.is_empty() {
        validate::region(&mut v, "region", &dispatch.region);
    }
    checked(v)
}

fn check_return(returned: &ReturnReceived) -> Result<(), HandleError> {
    let mut v = FieldViolations::new();
    validate::id(&mut v, "order_id", &returned.order_id);
    validate::id(&mut v, "return_id", &returned.return_id);
    if returned.inspection_passed {
        validate::warehouse_id(&mut v, "warehouse_id", &returned.warehouse_id);
        if returned.lines.is_empty() || returned.lines.len() > validate::MAX_LINES {
            v.add("lines", format!("must have 1..{} lines", validate::MAX_LINES));
        }
        for (i, line) in returned.lines.iter().enumerate() {
            validate::sku(&mut v, &format!("lines[{i}].sku"), &line.sku);
            if line.quantity < 1 || line.quantity > validate::MAX_RECEIPT_UNITS {
                v.add(
                    format!("lines[{i}].quantity"),
                    format!("must be 1..{}", validate::MAX_RECEIPT_UNITS),
                );
            }
        }
    }
    checked(v)
}
