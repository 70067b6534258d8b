//! After checkout: cancellation and returns. Each money movement runs as a saga of its own
//! (kinds "cancel" and "return", one per order, ids derived from the order id), so a crash
//! between the order's status change and the refund resumes the refund instead of
//! stranding it; each PSP call has a key derived from the order, so it happens once.

use std::sync::Mutex;

use holdfast_proto::events::v1::{
    OrderCancelled, OrderEvent, OrderLine as EventLine, ReturnReceived, order_event,
};
use holdfast_proto::inventory::v1::AdjustStockRequest;
use holdfast_proto::orders::v1::{InspectionResult, Order, OrderStatus};
use holdfast_proto::payments::v1::{
    GetPaymentRequest, PaymentStatus, RefundRequest, VoidRequest, get_payment_request,
};
use holdfast_store::SagaRecord;
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::checkout::{ORDERS_TOPIC, change_order};
use crate::engine::{Engine, StepResult, transient};
use crate::order::{self, money};
use crate::{OrdersStore, now_ms};

/// Saga kind of cancellations.
pub const CANCEL_KIND: &str = "cancel";
/// Saga kind of passed returns (receive, refund).
pub const RETURN_KIND: &str = "return";

/// The cancel saga's id for an order.
pub fn cancel_saga_id(order_id: &str) -> String {
    format!("cancel_{order_id}")
}

/// The return saga's id for an order.
pub fn return_saga_id(order_id: &str) -> String {
    format!("return_{order_id}")
}

/// What a cancel saga carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CancelState {
    /// The order.
    pub order_id: String,
    /// The caller's reason.
    pub reason: String,
    /// Set when the order could not be cancelled (it shipped meanwhile).
    #[serde(default)]
    pub refused: Option<String>,
}

/// What a return saga carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReturnState {
    /// The order.
    pub order_id: String,
    /// The return id from the label.
    pub return_id: String,
    /// The inspector's note.
    pub inspection_note: String,
    /// The receiving warehouse.
    pub warehouse_id: String,
    /// The PSP refund, once made.
    #[serde(default)]
    pub refund_id: Option<String>,
    /// Amount refunded.
    #[serde(default)]
    pub refund_minor: i64,
}

fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes).map_err(|e| Status::internal(format!("stored saga state is corrupt: {e}")))
}

fn result(next: &'static str, state: Vec<u8>) -> StepResult {
    StepResult {
        next,
        state,
        finished: next == "done",
        outbox: Vec::new(),
    }
}

fn event_lines(lines: &[holdfast_proto::orders::v1::OrderLine]) -> Vec<EventLine> {
    lines
        .iter()
        .map(|l| EventLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price.clone(),
        })
        .collect()
}

/// Statuses an order may be cancelled from (while nothing shipped).
pub fn cancellable(order: &Order) -> bool {
    matches!(
        order::status(order),
        OrderStatus::Placed | OrderStatus::Paid | OrderStatus::Fulfilling | OrderStatus::ManualReview
    ) && order::nothing_shipped(order)
}

/// Steps: mark (CANCELLED + order.cancelled event) → money (void or refund) → restock → done.
pub async fn cancel_step<S: OrdersStore>(
    engine: &Engine<S>,
    saga: &SagaRecord,
) -> Result<StepResult, Status> {
    let mut state: CancelState = decode(&saga.state)?;
    match saga.step.as_str() {
        "mark" => {
            let refused: Mutex<Option<String>> = Mutex::new(None);
            let reason = state.reason.clone();
            change_order(
                engine,
                &state.order_id,
                |current| {
                    let mut event = engine.event(ORDERS_TOPIC, &current.id, "order.cancelled", Vec::new());
                    event.payload = OrderEvent {
                        event_id: event.id.clone(),
                        event: Some(order_event::Event::Cancelled(OrderCancelled {
                            order_id: current.id.clone(),
                            customer_id: current.customer_id.clone(),
                            lines: event_lines(&current.lines),
                            reason: reason.clone(),
                            occurred_at_unix_ms: now_ms(),
                        })),
                    }
                    .encode_to_vec();
                    vec![event]
                },
                |current| {
                    let mut refused = refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *refused = None;
                    if order::status(current) == OrderStatus::Cancelled {
                        return false;
                    }
                    if !cancellable(current) {
                        *refused = Some(format!(
                            "order is {} and can no longer be cancelled",
                            order::status(current).as_str_name()
                        ));
                        return false;
                    }
                    order::set_status(current, OrderStatus::Cancelled, now_ms(), &reason);
                    true
                },
            )
            .await?;
            let refused = refused
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(why) = refused {
                state.refused = Some(why);
                return Ok(result("done", encode(&state)));
            }
            Ok(result("money", encode(&state)))
        }
        "money" => {
            let order = load(engine, &state.order_id).await?;
            if !order.payment_id.is_empty() {
                settle_payment(engine, &order, &format!("{}:cancel", order.id), &state.reason).await?;
            }
            Ok(result("restock", encode(&state)))
        }
        "restock" => {
            let order = load(engine, &state.order_id).await?;
            for line in &order.lines {
                let request = AdjustStockRequest {
                    sku: line.sku.clone(),
                    delta: line.quantity,
                    adjustment_id: format!("{}:cancel:{}", order.id, line.sku),
                };
                engine
                    .clients
                    .inventory
                    .clone()
                    .adjust_stock(engine.clients.request(request))
                    .await?;
            }
            Ok(result("done", encode(&state)))
        }
        other => Err(Status::internal(format!("unknown cancel step {other:?}"))),
    }
}

/// Voids an authorization or refunds a capture, whichever the payment is in.
async fn settle_payment<S: OrdersStore>(
    engine: &Engine<S>,
    order: &Order,
    key_prefix: &str,
    reason: &str,
) -> Result<(), Status> {
    let mut payments = engine.clients.payments.clone();
    let payment = payments
        .get_payment(engine.clients.request(GetPaymentRequest {
            lookup: Some(get_payment_request::Lookup::PaymentId(order.payment_id.clone())),
        }))
        .await?
        .into_inner()
        .payment
        .unwrap_or_default();
    match PaymentStatus::try_from(payment.status) {
        Ok(PaymentStatus::Authorized) => {
            payments
                .void(engine.clients.payment_request(VoidRequest {
                    idempotency_key: format!("{key_prefix}:void"),
                    payment_id: payment.payment_id,
                }))
                .await?;
        }
        Ok(PaymentStatus::Captured | PaymentStatus::PartiallyRefunded) => {
            payments
                .refund(engine.clients.payment_request(RefundRequest {
                    idempotency_key: format!("{key_prefix}:refund"),
                    payment_id: payment.payment_id,
                    amount: None,
                    reason: reason.chars().take(500).collect(),
                }))
                .await?;
        }
        _ => {}
    }
    Ok(())
}

async fn load<S: OrdersStore>(engine: &Engine<S>, order_id: &str) -> Result<Order, Status> {
    let stored = engine
        .store
        .get_order(order_id)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?
        .ok_or_else(|| Status::not_found(format!("order {order_id} not found")))?;
    order::from_stored(&stored)
}

/// Steps: receive (RETURN_RECEIVED + order.return_received event, which restocks) →
/// refund → refunded (REFUNDED) → done.
pub async fn return_step<S: OrdersStore>(
    engine: &Engine<S>,
    saga: &SagaRecord,
) -> Result<StepResult, Status> {
    let mut state: ReturnState = decode(&saga.state)?;
    match saga.step.as_str() {
        "receive" => {
            let warehouse_id = state.warehouse_id.clone();
            let note = state.inspection_note.clone();
            change_order(
                engine,
                &state.order_id,
                |current| {
                    let mut event =
                        engine.event(ORDERS_TOPIC, &current.id, "order.return_received", Vec::new());
                    let ret = current.order_return.clone().unwrap_or_default();
                    event.payload = OrderEvent {
                        event_id: event.id.clone(),
                        event: Some(order_event::Event::ReturnReceived(ReturnReceived {
                            order_id: current.id.clone(),
                            return_id: ret.return_id,
                            lines: event_lines(&ret.lines),
                            warehouse_id: warehouse_id.clone(),
                            inspection_passed: true,
                            occurred_at_unix_ms: now_ms(),
                        })),
                    }
                    .encode_to_vec();
                    vec![event]
                },
                |current| {
                    if !matches!(
                        order::status(current),
                        OrderStatus::ReturnRequested | OrderStatus::ReturnLost
                    ) {
                        return false;
                    }
                    let now = now_ms();
                    if let Some(ret) = current.order_return.as_mut() {
                        ret.inspection = InspectionResult::Passed as i32;
                        ret.inspection_note = note.clone();
                        ret.received_at_unix_ms = now;
                    }
                    order::set_status(
                        current,
                        OrderStatus::ReturnReceived,
                        now,
                        "returned parcel passed inspection",
                    );
                    true
                },
            )
            .await?;
            Ok(result("refund", encode(&state)))
        }
        "refund" => {
            let order = load(engine, &state.order_id).await?;
            let ret = order.order_return.clone().unwrap_or_default();
            let currency = order
                .total
                .as_ref()
                .map(|m| m.currency.clone())
                .unwrap_or_default();
            let amount: i64 = ret
                .lines
                .iter()
                .map(|l| l.line_total.as_ref().map_or(0, |m| m.amount_minor))
                .sum();
            if amount > 0 && !order.payment_id.is_empty() {
                let response = engine
                    .clients
                    .payments
                    .clone()
                    .refund(engine.clients.payment_request(RefundRequest {
                        idempotency_key: format!("{}:return:refund", order.id),
                        payment_id: order.payment_id.clone(),
                        amount: Some(money(amount, &currency)),
                        reason: format!("return {}", ret.return_id),
                    }))
                    .await;
                match response {
                    Ok(response) => {
                        let response = response.into_inner();
                        state.refund_id = Some(response.refund_id);
                        state.refund_minor = response.refunded_amount.map_or(amount, |m| m.amount_minor);
                    }
                    Err(status) if transient(&status) => return Err(status),
                    Err(status) => {
                        return Err(Status::new(
                            Code::Internal,
                            format!("refund refused: {}", status.message()),
                        ));
                    }
                }
            }
            Ok(result("refunded", encode(&state)))
        }
        "refunded" => {
            let refund_id = state.refund_id.clone().unwrap_or_default();
            let refund_minor = state.refund_minor;
            change_order(
                engine,
                &state.order_id,
                |_| Vec::new(),
                |current| {
                    if order::status(current) != OrderStatus::ReturnReceived {
                        return false;
                    }
                    let currency = current
                        .total
                        .as_ref()
                        .map(|m| m.currency.clone())
                        .unwrap_or_default();
                    if let Some(ret) = current.order_return.as_mut() {
                        ret.refund_amount = Some(money(refund_minor, &currency));
                        ret.refund_id = refund_id.clone();
                    }
                    order::set_status(current, OrderStatus::Refunded, now_ms(), "return refunded");
                    true
                },
            )
            .await?;
            Ok(result("done", encode(&state)))
        }
        other => Err(Status::internal(format!("unknown return step {other:?}"))),
    }
}
