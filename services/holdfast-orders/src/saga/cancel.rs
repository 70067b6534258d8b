//! The cancel saga (kind `cancel`, id `cancel_<order>`). The warehouse decides what of the
//! order can still be cancelled, since shipment state lives there and orders' copy lags:
//!
//! 1. `warehouse`: `CancelOrderShipments` closes the order's routing and cancels every
//!    shipment that has not left, atomically against MarkShipped; its answer (what
//!    shipped) is stored with the step transition, before any money moves. Everything
//!    shipped: the saga ends refused (FAILED_PRECONDITION, suggest a return).
//! 2. `mark`: the order records the answer: CANCELLED with `order.cancelled` when nothing
//!    shipped; otherwise `cancelled_lines` and the status its remaining shipments give it,
//!    with `order.cancelled` (`partial`).
//! 3. `money`: void the authorization or refund the capture; a partial cancellation refunds
//!    exactly the sum of the cancelled lines.
//! 4. `restock`: the units that never left go back on hand.
//!
//! Each step's result is persisted before the next external effect, and every call has a
//! key derived from the order, so a crash anywhere resumes without doing anything twice.

use std::collections::BTreeMap;

use holdfast_proto::common::v1::Money;
use holdfast_proto::events::v1::{
    ShipmentCancelled, ShipmentCreated, ShipmentDelivered, ShipmentEvent, ShipmentLine, ShipmentShipped,
    shipment_event,
};
use holdfast_proto::inventory::v1::AdjustStockRequest;
use holdfast_proto::orders::v1::{Order, OrderLine, OrderStatus};
use holdfast_proto::payments::v1::{
    GetPaymentRequest, PaymentStatus, RefundRequest, VoidRequest, get_payment_request,
};
use holdfast_proto::warehouse::v1::{
    CancelOrderShipmentsRequest, CancelOrderShipmentsResponse, ShipmentStatus,
};
use holdfast_store::SagaRecord;
use serde::{Deserialize, Serialize};

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
use crate::order::{self, CANCELLABLE, Change};
use crate::saga::record::{DONE, NewSaga, SagaKind, StepResult, decode_state, encode_state};
use crate::shipments;

/// The steps of a cancellation, by the names their records store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// Ask the warehouse to cancel what has not shipped; keep its answer.
    Warehouse,
    /// Record the answer on the order (CANCELLED, or the cancelled lines), with
    /// `order.cancelled` in the same write.
    Mark,
    /// Void the authorization or refund the cancelled lines.
    Money,
    /// Put the units that never left back on hand.
    Restock,
    /// Ended.
    Done,
}

impl CancelStep {
    /// Every step.
    pub const ALL: [CancelStep; 5] = [
        CancelStep::Warehouse,
        CancelStep::Mark,
        CancelStep::Money,
        CancelStep::Restock,
        CancelStep::Done,
    ];

    /// The name stored in the saga record.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelStep::Warehouse => "warehouse",
            CancelStep::Mark => "mark",
            CancelStep::Money => "money",
            CancelStep::Restock => "restock",
            CancelStep::Done => DONE,
        }
    }

    /// The step stored under `name`.
    pub fn parse(name: &str) -> Option<CancelStep> {
        CancelStep::ALL.into_iter().find(|step| step.as_str() == name)
    }
}

/// A shipment as the warehouse answered it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenShipment {
    /// The shipment id.
    pub id: String,
    /// Its warehouse.
    pub warehouse_id: String,
    /// The `ShipmentStatus` number (never CREATED or PICKING after a cancellation).
    pub status: i32,
    /// Carrier, once shipped.
    pub carrier: String,
    /// Tracking number, once shipped.
    pub tracking_number: String,
    /// (SKU, units).
    pub lines: Vec<(String, i64)>,
}

/// The warehouse's answer, as the saga keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WarehouseAnswer {
    /// Units per SKU that left a warehouse.
    pub shipped: BTreeMap<String, i64>,
    /// Every shipment of the order.
    pub shipments: Vec<SeenShipment>,
}

impl From<CancelOrderShipmentsResponse> for WarehouseAnswer {
    fn from(answer: CancelOrderShipmentsResponse) -> Self {
        let mut shipped = BTreeMap::new();
        for line in answer.shipped {
            let units: &mut i64 = shipped.entry(line.sku).or_default();
            *units = units.saturating_add(line.quantity);
        }
        Self {
            shipped,
            shipments: answer
                .shipments
                .into_iter()
                .map(|s| SeenShipment {
                    id: s.id,
                    warehouse_id: s.warehouse_id,
                    status: s.status,
                    carrier: s.carrier,
                    tracking_number: s.tracking_number,
                    lines: s.lines.into_iter().map(|l| (l.sku, l.quantity)).collect(),
                })
                .collect(),
        }
    }
}

/// What a cancel saga carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CancelState {
    /// The order.
    pub order_id: String,
    /// The caller's reason.
    pub reason: String,
    /// Set when the order could not be cancelled (everything shipped).
    #[serde(default)]
    pub refused: Option<String>,
    /// The warehouse's answer, once asked. A saga stored before this step existed has none
    /// past `mark`: it cancels every line, as it did then.
    #[serde(default)]
    pub warehouse: Option<WarehouseAnswer>,
}

impl CancelState {
    /// Units of `sku` that left a warehouse (0 before the warehouse was asked).
    fn shipped(&self, sku: &str) -> i64 {
        self.warehouse
            .as_ref()
            .and_then(|w| w.shipped.get(sku).copied())
            .unwrap_or(0)
    }

    /// The order's lines cut to the units that did not ship, priced as charged; empty when
    /// everything shipped.
    pub fn cancelled_lines(&self, lines: &[OrderLine]) -> Vec<OrderLine> {
        lines
            .iter()
            .filter_map(|l| {
                let units = l
                    .quantity
                    .saturating_sub(self.shipped(&l.sku).clamp(0, l.quantity));
                (units > 0).then(|| {
                    let unit = l.unit_price.clone().unwrap_or_default();
                    order::line(&l.sku, units, unit.amount_minor, &unit.currency, &l.title)
                })
            })
            .collect()
    }

    /// Whether nothing of the order shipped.
    fn nothing_shipped(&self) -> bool {
        self.warehouse
            .as_ref()
            .is_none_or(|w| w.shipped.values().all(|units| *units <= 0))
    }
}

/// The cancel saga's id for an order.
pub fn saga_id(order_id: &str) -> String {
    format!("cancel_{order_id}")
}

/// Whether a cancellation of `order` may start.
#[derive(Debug)]
pub enum Admission {
    /// Cancelled already, by no saga of ours (checkout compensated it): nothing to do.
    AlreadyCancelled,
    /// Run (or join) the order's cancel saga.
    Run(NewSaga),
}

/// Decides whether `order` may be cancelled (for `reason`): a cancel saga that exists is
/// joined; otherwise the order must be in a status to ask from and its own checkout
/// finished.
pub async fn admit<S: OrdersStore>(
    ctx: &StepContext<S>,
    order: &Order,
    reason: &str,
) -> Result<Admission, OrdersError> {
    let id = saga_id(&order.id);
    if ctx.store.get_saga(&id).await?.is_none() {
        if order::status(order) == OrderStatus::Cancelled {
            return Ok(Admission::AlreadyCancelled);
        }
        if !order::cancellable(order) {
            return Err(not_cancellable(order));
        }
        // The checkout that made the order must have ended (it may still be capturing).
        if let Some(checkout_id) = order.id.strip_prefix("ord_")
            && let Some(checkout) = ctx.store.get_saga(checkout_id).await?
            && !checkout.finished
        {
            return Err(OrdersError::Busy(
                "the order's checkout is still finishing; retry in a moment",
            ));
        }
    }
    let state = CancelState {
        order_id: order.id.clone(),
        reason: if reason.is_empty() {
            "cancelled by request".into()
        } else {
            reason.to_string()
        },
        refused: None,
        warehouse: None,
    };
    Ok(Admission::Run(NewSaga {
        id,
        kind: SagaKind::Cancel,
        step: CancelStep::Warehouse.as_str(),
        state: encode_state(&state),
    }))
}

fn not_cancellable(order: &Order) -> OrdersError {
    OrdersError::order_status(
        &order.id,
        format!(
            "order is {} and can no longer be cancelled",
            order::status(order).as_str_name()
        ),
    )
}

/// How a finished cancel saga ended: `Ok` when some or all of the order was cancelled,
/// the refusal when everything had shipped.
pub fn outcome(saga: &SagaRecord) -> Result<(), OrdersError> {
    let ended: CancelState = decode_state(&saga.state)?;
    match ended.refused {
        Some(why) => Err(OrdersError::order_status(&ended.order_id, why)),
        None => Ok(()),
    }
}

fn next(step: CancelStep, state: &CancelState) -> StepResult {
    match step {
        CancelStep::Done => StepResult::Finished {
            state: encode_state(state),
            joined: Vec::new(),
        },
        step => StepResult::Next {
            step: step.as_str(),
            state: encode_state(state),
            outbox: Vec::new(),
            joined: Vec::new(),
        },
    }
}

/// Runs the cancel saga's current step.
pub async fn step<S: OrdersStore>(
    ctx: &StepContext<S>,
    saga: &SagaRecord,
) -> Result<StepResult, OrdersError> {
    let mut state: CancelState = decode_state(&saga.state)?;
    let step = CancelStep::parse(&saga.step)
        .ok_or_else(|| OrdersError::Internal(format!("unknown cancel step {:?}", saga.step)))?;
    let to = match step {
        CancelStep::Warehouse => ask_warehouse(ctx, &mut state).await?,
        // A saga stored before the warehouse step existed asks first.
        CancelStep::Mark if state.warehouse.is_none() => CancelStep::Warehouse,
        CancelStep::Mark => mark(ctx, &mut state).await?,
        CancelStep::Money => {
            let (order, _) = order::load(ctx, &state.order_id).await?;
            if !order.payment_id.is_empty() {
                let refund = (!state.nothing_shipped()).then(|| total(&state.cancelled_lines(&order.lines)));
                settle_payment(
                    ctx,
                    &order,
                    &format!("{}:cancel", order.id),
                    &state.reason,
                    refund,
                )
                .await?;
            }
            CancelStep::Restock
        }
        CancelStep::Restock => {
            restock(ctx, &state).await?;
            CancelStep::Done
        }
        CancelStep::Done => return Err(OrdersError::Internal("a finished cancel was asked to run".into())),
    };
    Ok(next(to, &state))
}

/// Warehouse: cancel what has not shipped there and keep the answer; everything shipped
/// ends the saga refused.
async fn ask_warehouse<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CancelState,
) -> Result<CancelStep, OrdersError> {
    let answer = ctx
        .clients
        .warehouse
        .clone()
        .cancel_order_shipments(ctx.clients.request(CancelOrderShipmentsRequest {
            order_id: state.order_id.clone(),
            reason: state.reason.chars().take(500).collect(),
        }))
        .await
        .map_err(|status| OrdersError::upstream("warehouse", &status))?
        .into_inner();
    state.warehouse = Some(WarehouseAnswer::from(answer));
    let (order, _) = order::load(ctx, &state.order_id).await?;
    if state.cancelled_lines(&order.lines).is_empty() {
        state.refused = Some(format!(
            "every unit of order {} has shipped; request a return once it is delivered",
            order.id
        ));
        return Ok(CancelStep::Done);
    }
    Ok(CancelStep::Mark)
}

/// Mark: the order takes in the warehouse's answer (its suborders' statuses) and becomes
/// CANCELLED when nothing shipped, or lists its cancelled lines when some did; with
/// `order.cancelled` in the same write. A repeat changes nothing.
async fn mark<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CancelState,
) -> Result<CancelStep, OrdersError> {
    let mut refused = None;
    let now = ctx.now_ms();
    let answer = state.warehouse.clone().unwrap_or_default();
    let full = state.nothing_shipped();
    order::change(ctx, &state.order_id, |current| {
        refused = None;
        if order::status(current) == OrderStatus::Cancelled || !current.cancelled_lines.is_empty() {
            return Ok(Change::Keep);
        }
        for event in shipment_events(&current.id, &answer.shipments) {
            shipments::apply_to(current, &event);
        }
        let cancelled = state.cancelled_lines(&current.lines);
        if full && !order::transition(current, &CANCELLABLE, OrderStatus::Cancelled, now, &state.reason) {
            refused = Some(not_cancellable(current).to_string());
            return Ok(Change::Keep);
        }
        current.cancelled_lines = cancelled.clone();
        current.updated_at_unix_ms = now;
        let event = order::cancelled_event(ctx, current, &cancelled, &state.reason, !full, now);
        Ok(Change::Write(vec![event]))
    })
    .await?;
    if let Some(why) = refused {
        state.refused = Some(why);
        return Ok(CancelStep::Done);
    }
    Ok(CancelStep::Money)
}

/// The shipment events that bring an order's suborders to what the warehouse answered.
fn shipment_events(order_id: &str, shipments: &[SeenShipment]) -> Vec<ShipmentEvent> {
    let mut events = Vec::new();
    for s in shipments {
        let mut push = |event| {
            events.push(ShipmentEvent {
                event_id: format!("cancel:{}:{}", s.id, events.len()),
                event: Some(event),
            });
        };
        push(shipment_event::Event::Created(ShipmentCreated {
            shipment_id: s.id.clone(),
            order_id: order_id.to_string(),
            warehouse_id: s.warehouse_id.clone(),
            lines: s
                .lines
                .iter()
                .map(|(sku, quantity)| ShipmentLine {
                    sku: sku.clone(),
                    quantity: *quantity,
                })
                .collect(),
            ..ShipmentCreated::default()
        }));
        match ShipmentStatus::try_from(s.status) {
            Ok(ShipmentStatus::Shipped | ShipmentStatus::Delivered) => {
                push(shipment_event::Event::Shipped(ShipmentShipped {
                    shipment_id: s.id.clone(),
                    order_id: order_id.to_string(),
                    warehouse_id: s.warehouse_id.clone(),
                    carrier: s.carrier.clone(),
                    tracking_number: s.tracking_number.clone(),
                    ..ShipmentShipped::default()
                }));
                if s.status == ShipmentStatus::Delivered as i32 {
                    push(shipment_event::Event::Delivered(ShipmentDelivered {
                        shipment_id: s.id.clone(),
                        order_id: order_id.to_string(),
                        warehouse_id: s.warehouse_id.clone(),
                        ..ShipmentDelivered::default()
                    }));
                }
            }
            Ok(ShipmentStatus::Cancelled) => push(shipment_event::Event::Cancelled(ShipmentCancelled {
                shipment_id: s.id.clone(),
                order_id: order_id.to_string(),
                warehouse_id: s.warehouse_id.clone(),
                ..ShipmentCancelled::default()
            })),
            _ => {}
        }
    }
    events
}

/// The sum of `lines`' totals (their currency; empty lines give an empty sum).
fn total(lines: &[OrderLine]) -> Money {
    let currency = lines
        .iter()
        .find_map(|l| l.line_total.as_ref().map(|m| m.currency.clone()))
        .unwrap_or_default();
    let amount = lines
        .iter()
        .filter_map(|l| l.line_total.as_ref())
        .fold(0_i64, |sum, m| sum.saturating_add(m.amount_minor));
    order::money(amount, &currency)
}

/// Restock: the units of each line that never left back on hand, one adjustment id per
/// line.
async fn restock<S: OrdersStore>(ctx: &StepContext<S>, state: &CancelState) -> Result<(), OrdersError> {
    let (order, _) = order::load(ctx, &state.order_id).await?;
    for line in state.cancelled_lines(&order.lines) {
        let request = AdjustStockRequest {
            sku: line.sku.clone(),
            delta: line.quantity,
            adjustment_id: format!("{}:cancel:{}", order.id, line.sku),
        };
        ctx.clients
            .inventory
            .clone()
            .adjust_stock(ctx.clients.request(request))
            .await
            .map_err(|status| OrdersError::upstream("inventory", &status))?;
    }
    Ok(())
}

/// Voids an authorization or refunds a capture, whichever the payment is in: all of it,
/// or `refund` of a capture when only part of the order was cancelled.
async fn settle_payment<S: OrdersStore>(
    ctx: &StepContext<S>,
    order: &Order,
    key_prefix: &str,
    reason: &str,
    refund: Option<Money>,
) -> Result<(), OrdersError> {
    let failed = |status: tonic::Status| OrdersError::upstream("payments", &status);
    let mut payments = ctx.clients.payments.clone();
    let payment = payments
        .get_payment(ctx.clients.request(GetPaymentRequest {
            lookup: Some(get_payment_request::Lookup::PaymentId(order.payment_id.clone())),
        }))
        .await
        .map_err(failed)?
        .into_inner()
        .payment
        .unwrap_or_default();
    match PaymentStatus::try_from(payment.status) {
        Ok(PaymentStatus::Authorized) if refund.is_none() => {
            payments
                .void(ctx.clients.payment_request(VoidRequest {
                    idempotency_key: format!("{key_prefix}:void"),
                    payment_id: payment.payment_id,
                }))
                .await
                .map_err(failed)?;
        }
        Ok(PaymentStatus::Captured | PaymentStatus::PartiallyRefunded) => {
            payments
                .refund(ctx.clients.payment_request(RefundRequest {
                    idempotency_key: format!("{key_prefix}:refund"),
                    payment_id: payment.payment_id,
                    amount: refund,
                    reason: reason.chars().take(500).collect(),
                }))
                .await
                .map_err(failed)?;
        }
        Ok(PaymentStatus::Authorized) => {
            return Err(OrdersError::Internal(format!(
                "order {} shipped in part but its payment was never captured",
                order.id
            )));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_the_names_stored_on_disk() {
        let names: Vec<_> = CancelStep::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["warehouse", "mark", "money", "restock", "done"]);
        for step in CancelStep::ALL {
            assert_eq!(CancelStep::parse(step.as_str()), Some(step));
        }
        assert_eq!(CancelStep::parse("refund"), None);
    }

    #[test]
    fn cancelled_lines_are_what_did_not_ship() {
        let lines = vec![
            order::line("a", 3, 100, "USD", "A"),
            order::line("b", 1, 250, "USD", "B"),
        ];
        let mut state = CancelState {
            order_id: "ord_1".into(),
            reason: "r".into(),
            refused: None,
            warehouse: None,
        };
        assert_eq!(
            state.cancelled_lines(&lines),
            lines,
            "before the warehouse answers: all"
        );
        assert!(state.nothing_shipped());
        state.warehouse = Some(WarehouseAnswer {
            shipped: BTreeMap::from([("a".to_string(), 2)]),
            shipments: Vec::new(),
        });
        assert!(!state.nothing_shipped());
        let cancelled = state.cancelled_lines(&lines);
        assert_eq!(
            cancelled,
            vec![order::line("a", 1, 100, "USD", "A"), lines[1].clone()]
        );
        assert_eq!(total(&cancelled), order::money(350, "USD"));
        state.warehouse = Some(WarehouseAnswer {
            shipped: BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 5)]),
            shipments: Vec::new(),
        });
        assert!(state.cancelled_lines(&lines).is_empty(), "everything shipped");
    }
}
