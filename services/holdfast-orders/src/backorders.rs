//! Backorders raised by warehouse routing (`fulfillment.backorder_raised`) shown on the
//! order: each short SKU becomes a [`BackorderedLine`] (status BACKORDERED, with why), so
//! an order no warehouse can fill says so instead of sitting in FULFILLING silently.
//!
//! Applying is a pure function of the order and the event, and a repeat changes nothing
//! (a SKU already listed is kept as first raised).

use holdfast_proto::events::v1::{BackorderRaised, FulfillmentEvent, fulfillment_event};
use holdfast_proto::orders::v1::{BackorderedLine, LineStatus, Order};

use crate::context::{OrdersStore, StepContext};
use crate::order::{self, Change};
use crate::shipments::{ApplyError, classify};

/// Topic of fulfillment requests and backorders.
pub const FULFILLMENT_TOPIC: &str = "holdfast.fulfillment.v1";
/// The one event type of [`FULFILLMENT_TOPIC`] orders acts on.
pub const BACKORDER_RAISED: &str = "fulfillment.backorder_raised";

/// Applies a fulfillment event: a backorder is recorded on its order; anything else on
/// the topic (orders' own dispatch requests) is not orders' business.
pub async fn apply<S: OrdersStore>(
    ctx: &StepContext<S>,
    event: &FulfillmentEvent,
) -> Result<Option<Order>, ApplyError> {
    let Some(fulfillment_event::Event::BackorderRaised(raised)) = &event.event else {
        return Ok(None);
    };
    order::change(ctx, &raised.order_id, |current| {
        Ok(if apply_to(current, raised) {
            Change::Write(Vec::new())
        } else {
            Change::Keep
        })
    })
    .await
    .map(Some)
    .map_err(classify)
}

/// The change `raised` makes to `order`; `false` if none.
pub fn apply_to(order: &mut Order, raised: &BackorderRaised) -> bool {
    let mut changed = false;
    for line in &raised.lines {
        if line.missing < 1 || order.backorders.iter().any(|b| b.sku == line.sku) {
            continue;
        }
        order.backorders.push(BackorderedLine {
            sku: line.sku.clone(),
            requested: line.requested,
            missing: line.missing,
            status: LineStatus::Backordered as i32,
            reason: if line.reason.is_empty() {
                "no warehouse could ship it when the order was routed".into()
            } else {
                line.reason.clone()
            },
            raised_at_unix_ms: raised.occurred_at_unix_ms,
        });
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::events::v1::BackorderLine;

    #[test]
    fn backorders_are_listed_once_with_their_reason() {
        let mut order = Order::default();
        let raised = BackorderRaised {
            order_id: "ord_1".into(),
            lines: vec![BackorderLine {
                sku: "ghost".into(),
                requested: 2,
                missing: 2,
                reason: "no warehouse of region eu stocks ghost".into(),
            }],
            region: "eu".into(),
            occurred_at_unix_ms: 7,
        };
        assert!(apply_to(&mut order, &raised));
        assert!(!apply_to(&mut order, &raised), "a repeat changes nothing");
        assert_eq!(order.backorders.len(), 1);
        assert_eq!(order.backorders[0].status, LineStatus::Backordered as i32);
        assert_eq!(
            order.backorders[0].reason,
            "no warehouse of region eu stocks ghost"
        );
    }
}
