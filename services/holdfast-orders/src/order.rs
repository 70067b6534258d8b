//! Orders as the service shows them (`holdfast.orders.v1.Order`) and as the store keeps
//! them (a few indexed columns plus the encoded message).

use holdfast_proto::common::v1::Money;
use holdfast_proto::orders::v1::{Order, OrderLine, OrderStatus, StatusChange};
use holdfast_store::StoredOrder;
use prost::Message;
use tonic::Status;

/// Money in `currency`.
pub fn money(amount_minor: i64, currency: &str) -> Money {
    Money {
        amount_minor,
        currency: currency.to_string(),
    }
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
pub fn from_stored(stored: &StoredOrder) -> Result<Order, Status> {
    Order::decode(stored.payload.as_slice())
        .map_err(|e| Status::internal(format!("stored order {} is corrupt: {e}", stored.id)))
}

/// The order's status.
pub fn status(order: &Order) -> OrderStatus {
    OrderStatus::try_from(order.status).unwrap_or(OrderStatus::Unspecified)
}

/// Moves `order` to `to` and records it in the history.
pub fn set_status(order: &mut Order, to: OrderStatus, at_ms: i64, reason: &str) {
    order.status = to as i32;
    order.updated_at_unix_ms = at_ms;
    order.status_history.push(StatusChange {
        status: to as i32,
        at_unix_ms: at_ms,
        reason: reason.to_string(),
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_are_recorded_in_order() {
        let mut order = Order {
            id: "ord_1".into(),
            ..Order::default()
        };
        set_status(&mut order, OrderStatus::Placed, 10, "");
        set_status(&mut order, OrderStatus::Paid, 20, "captured");
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
    fn line_totals_multiply() {
        let l = line("s", 3, 250, "USD", "t");
        assert_eq!(l.line_total, Some(money(750, "USD")));
    }
}
