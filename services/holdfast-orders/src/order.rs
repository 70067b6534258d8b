//! The order aggregate: the order as the service shows it (`holdfast.orders.v1.Order`) and
//! as the store keeps it, the status moves it allows, and the one way to change a stored
//! order ([`change`]): load, decide, write conditionally on the version read, with the
//! outbox events of the change in the same store write.
//!
//! Every writer goes through here: checkout's steps (create, capture, dispatch,
//! compensate), the cancel and return sagas, the return RPCs and the shipments consumer.
//! A status moves only through [`transition`], which refuses moves [`allowed`] does not list.

use holdfast_proto::common::v1::Money;
use holdfast_proto::events::v1::{OrderCancelled, OrderEvent, OrderLine as EventLine, order_event};
use holdfast_proto::orders::v1::{Order, OrderLine, OrderStatus, StatusChange};
use holdfast_store::{JoinedWrite, OutboxMessage, StoreError, StoredOrder};
use prost::Message;

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;

/// Topic of order events.
pub const ORDERS_TOPIC: &str = "holdfast.orders.v1";

/// How many times [`change`] re-reads an order another writer moved under it.
const CHANGE_ATTEMPTS: usize = 8;

/// Money in `currency`.
pub fn money(amount_minor: i64, currency: &str) -> Money {
    Money {
        amount_minor,
        currency: currency.to_string(),
    }
}

/// An order line at `unit_price_minor`.
pub fn line(sku: &str, quantity: i64, unit_price_minor: i64, currency: &str, title: &str) -> OrderLine {
    OrderLine {
        sku: sku.to_string(),
        quantity,
        unit_price: Some(money(unit_price_minor, currency)),
        line_total: Some(money(unit_price_minor.saturating_mul(quantity), currency)),
        title: title.to_string(),
    }
}

/// Order lines as events carry them.
pub fn event_lines(lines: &[OrderLine]) -> Vec<EventLine> {
    lines
        .iter()
        .map(|l| EventLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price.clone(),
        })
        .collect()
}

/// The `order.cancelled` event of `order`, for `cancelled` of its lines (`partial` when some
/// lines stay): the one shape both the cancel saga and checkout's compensation publish.
pub fn cancelled_event<S>(
    ctx: &StepContext<S>,
    order: &Order,
    cancelled: &[OrderLine],
    reason: &str,
    partial: bool,
    now: i64,
) -> OutboxMessage {
    let mut event = ctx.event(ORDERS_TOPIC, &order.id, "order.cancelled", Vec::new());
    event.payload = OrderEvent {
        event_id: event.id.clone(),
        event: Some(order_event::Event::Cancelled(OrderCancelled {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            lines: event_lines(cancelled),
            reason: reason.to_string(),
            occurred_at_unix_ms: now,
            partial,
        })),
    }
    .encode_to_vec();
    event
}

/// The order as the store keeps it.
pub fn to_stored(order: &Order, version: u64) -> StoredOrder {
    StoredOrder {
        id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        status: order.status,
        created_at_ms: order.created_at_unix_ms,
        updated_at_ms: order.updated_at_unix_ms,
        version,
        payload: order.encode_to_vec(),
    }
}

/// The order a stored record holds.
pub fn from_stored(stored: &StoredOrder) -> Result<Order, OrdersError> {
    Order::decode(stored.payload.as_slice())
        .map_err(|e| OrdersError::Internal(format!("stored order {} is corrupt: {e}", stored.id)))
}

/// The order's status.
pub fn status(order: &Order) -> OrderStatus {
    OrderStatus::try_from(order.status).unwrap_or(OrderStatus::Unspecified)
}

/// Whether no shipment of the order has left a warehouse.
pub fn nothing_shipped(order: &Order) -> bool {
    use holdfast_proto::warehouse::v1::ShipmentStatus;
    order.suborders.iter().all(|sub| {
        !matches!(
            ShipmentStatus::try_from(sub.status),
            Ok(ShipmentStatus::Shipped | ShipmentStatus::Delivered)
        )
    })
}

/// Statuses an order may be cancelled from (while nothing shipped).
pub const CANCELLABLE: [OrderStatus; 4] = [
    OrderStatus::Placed,
    OrderStatus::Paid,
    OrderStatus::Fulfilling,
    OrderStatus::ManualReview,
];

/// Statuses CancelOrder asks the warehouse from: nothing, or only part, may have shipped
/// (this copy of shipments lags the warehouse, which decides).
pub const CANCEL_ASKS: [OrderStatus; 6] = [
    OrderStatus::Placed,
    OrderStatus::Paid,
    OrderStatus::Fulfilling,
    OrderStatus::ManualReview,
    OrderStatus::PartiallyShipped,
    OrderStatus::Shipped,
];

/// Whether a cancellation of the order may be asked for.
pub fn cancellable(order: &Order) -> bool {
    CANCEL_ASKS.contains(&status(order))
}

/// The status moves an order may make. `Unspecified` is a new order's status before
/// checkout writes it.
pub fn allowed(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::{
        Cancelled, Delivered, Fulfilling, ManualReview, Paid, PartiallyShipped, Placed, Refunded, ReturnLost,
        ReturnReceived, ReturnRejected, ReturnRequested, Shipped, Unspecified,
    };
    matches!(
        (from, to),
        // Checkout: created, then captured (or held when capture is refused).
        (Unspecified, Placed | ManualReview)
            | (Placed, Paid | ManualReview | Cancelled)
            | (ManualReview, Cancelled)
            // Dispatch, then shipment events (a suborder may turn up after others shipped).
            | (Paid, Fulfilling | PartiallyShipped | Shipped | Delivered | Cancelled)
            | (Fulfilling, PartiallyShipped | Shipped | Delivered | Cancelled)
            | (PartiallyShipped, Shipped | Delivered)
            | (Shipped, PartiallyShipped | Delivered)
            // Returns.
            | (Delivered, ReturnRequested)
            | (ReturnRequested, ReturnReceived | ReturnRejected | ReturnLost)
            | (ReturnLost, ReturnReceived | ReturnRejected)
            | (ReturnReceived, Refunded)
    )
}

/// Moves `order` to `to` if its status is one of `from` and the move is [`allowed`], and
/// records it in the history; `false` (nothing changed) otherwise.
pub fn transition(
    order: &mut Order,
    from: &[OrderStatus],
    to: OrderStatus,
    at_ms: i64,
    reason: &str,
) -> bool {
    let current = status(order);
    if current == to || !from.contains(&current) || !allowed(current, to) {
        return false;
    }
    order.status = to as i32;
    order.updated_at_unix_ms = at_ms;
    order.status_history.push(StatusChange {
        status: to as i32,
        at_unix_ms: at_ms,
        reason: reason.to_string(),
    });
    true
}

/// What a writer decided about the order it was shown.
#[derive(Debug)]
pub enum Change {
    /// Nothing to write: already done, or not this writer's business any more.
    Keep,
    /// Write the order as changed, with these events in the same store write.
    Write(Vec<OutboxMessage>),
}

/// The stored order and its version.
pub async fn load<S: OrdersStore>(ctx: &StepContext<S>, order_id: &str) -> Result<(Order, u64), OrdersError> {
    let stored = ctx
        .store
        .get_order(order_id)
        .await?
        .ok_or_else(|| OrdersError::order_not_found(order_id))?;
    Ok((from_stored(&stored)?, stored.version))
}

/// Writes a new order (create-if-absent: a step that runs twice writes it once).
pub async fn create<S: OrdersStore>(ctx: &StepContext<S>, order: &Order) -> Result<(), OrdersError> {
    ctx.store.create_order(to_stored(order, 1)).await?;
    Ok(())
}

/// Loads the order, lets `decide` change it (through [`transition`]) and writes it with the
/// events `decide` returns, conditionally on the version read; a writer that lost the race
/// decides again on the fresh order. An error from `decide` is returned as is.
pub async fn change<S: OrdersStore>(
    ctx: &StepContext<S>,
    order_id: &str,
    mut decide: impl FnMut(&mut Order) -> Result<Change, OrdersError>,
) -> Result<Order, OrdersError> {
    for _ in 0..CHANGE_ATTEMPTS {
        let (mut current, version) = load(ctx, order_id).await?;
        let Change::Write(events) = decide(&mut current)? else {
            return Ok(current);
        };
        match ctx
            .store
            .update_order(to_stored(&current, version), version, events)
            .await
        {
            Ok(_) => {
                ctx.outbox_written.notify_one();
                return Ok(current);
            }
            Err(StoreError::VersionConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(OrdersError::Conflict("the order kept changing; retry"))
}

/// Loads the order and lets `decide` change it, like [`change`], but returns the write
/// instead of making it: the step joins it to its saga transition (one atomic write on
/// SQLite). `None` when `decide` keeps the order as it is. A conflict (someone changed the
/// order after this read) fails that joined write, and the engine runs the step again.
pub async fn change_joined<S: OrdersStore>(
    ctx: &StepContext<S>,
    order_id: &str,
    decide: impl FnOnce(&mut Order) -> Result<Change, OrdersError>,
) -> Result<Option<JoinedWrite>, OrdersError> {
    let (mut current, version) = load(ctx, order_id).await?;
    let Change::Write(events) = decide(&mut current)? else {
        return Ok(None);
    };
    Ok(Some(JoinedWrite::UpdateOrder {
        order: to_stored(&current, version),
        expected_version: version,
        outbox: events,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_are_recorded_in_order() {
        let mut order = Order {
            id: "ord_1".into(),
            ..Order::default()
        };
        assert!(transition(
            &mut order,
            &[OrderStatus::Unspecified],
            OrderStatus::Placed,
            10,
            ""
        ));
        assert!(transition(
            &mut order,
            &[OrderStatus::Placed],
            OrderStatus::Paid,
            20,
            "captured"
        ));
        assert_eq!(status(&order), OrderStatus::Paid);
        assert_eq!(order.updated_at_unix_ms, 20);
        let history: Vec<_> = order.status_history.iter().map(|c| c.status).collect();
        assert_eq!(
            history,
            vec![OrderStatus::Placed as i32, OrderStatus::Paid as i32]
        );
        let stored = to_stored(&order, 3);
        assert_eq!(stored.version, 3);
        assert_eq!(from_stored(&stored).expect("decodes"), order);
    }

    #[test]
    fn transition_refuses_moves_the_aggregate_does_not_allow() {
        let mut order = Order::default();
        assert!(transition(
            &mut order,
            &[OrderStatus::Unspecified],
            OrderStatus::Placed,
            1,
            ""
        ));
        // Not from a status the writer named.
        assert!(!transition(
            &mut order,
            &[OrderStatus::Paid],
            OrderStatus::Fulfilling,
            2,
            ""
        ));
        // Named, but not a legal move: a placed order is never delivered directly.
        assert!(!transition(
            &mut order,
            &[OrderStatus::Placed],
            OrderStatus::Delivered,
            2,
            ""
        ));
        // A repeat of the current status is no move.
        assert!(!transition(
            &mut order,
            &[OrderStatus::Placed],
            OrderStatus::Placed,
            2,
            ""
        ));
        assert_eq!(status(&order), OrderStatus::Placed);
        assert_eq!(order.status_history.len(), 1);
        assert!(!allowed(OrderStatus::Delivered, OrderStatus::Cancelled));
        assert!(!allowed(OrderStatus::Refunded, OrderStatus::ReturnRequested));
    }

    #[test]
    fn line_totals_multiply() {
        let l = line("s", 3, 250, "USD", "t");
        assert_eq!(l.line_total, Some(money(750, "USD")));
    }
}
