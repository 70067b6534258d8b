//! The cancel saga (kind `cancel`, id `cancel_<order>`): mark the order CANCELLED with
//! `order.cancelled` in the outbox, then void or refund the payment, then restock. A crash
//! between the status change and the refund resumes the refund instead of stranding it;
//! every PSP call and stock adjustment has a key derived from the order, so it happens once.

use holdfast_proto::events::v1::{OrderCancelled, OrderEvent, order_event};
use holdfast_proto::inventory::v1::AdjustStockRequest;
use holdfast_proto::orders::v1::{Order, OrderStatus};
use holdfast_proto::payments::v1::{
    GetPaymentRequest, PaymentStatus, RefundRequest, VoidRequest, get_payment_request,
};
use holdfast_store::SagaRecord;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
use crate::order::{self, CANCELLABLE, Change, ORDERS_TOPIC};
use crate::saga::record::{DONE, NewSaga, SagaKind, StepResult, decode_state, encode_state};

/// The steps of a cancellation, by the names their records store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// CANCELLED, with `order.cancelled` in the same write (refused if it shipped).
    Mark,
    /// Void the authorization or refund the capture.
    Money,
    /// Put the units back on hand.
    Restock,
    /// Ended.
    Done,
}

impl CancelStep {
    /// Every step.
    pub const ALL: [CancelStep; 4] = [
        CancelStep::Mark,
        CancelStep::Money,
        CancelStep::Restock,
        CancelStep::Done,
    ];

    /// The name stored in the saga record.
    pub fn as_str(self) -> &'static str {
        match self {
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
/// joined; otherwise the order must be cancellable and its own checkout finished.
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
    };
    Ok(Admission::Run(NewSaga {
        id,
        kind: SagaKind::Cancel,
        step: CancelStep::Mark.as_str(),
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

/// How a finished cancel saga ended: `Ok` when the order was cancelled, the refusal when
/// it had shipped meanwhile.
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
        },
        step => StepResult::Next {
            step: step.as_str(),
            state: encode_state(state),
            outbox: Vec::new(),
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
        CancelStep::Mark => mark(ctx, &mut state).await?,
        CancelStep::Money => {
            let (order, _) = order::load(ctx, &state.order_id).await?;
            if !order.payment_id.is_empty() {
                settle_payment(ctx, &order, &format!("{}:cancel", order.id), &state.reason).await?;
            }
            CancelStep::Restock
        }
        CancelStep::Restock => {
            restock(ctx, &state.order_id).await?;
            CancelStep::Done
        }
        CancelStep::Done => return Err(OrdersError::Internal("a finished cancel was asked to run".into())),
    };
    Ok(next(to, &state))
}

/// Mark: CANCELLED with `order.cancelled`, unless it shipped meanwhile (then the saga ends
/// refused) or it is cancelled already.
async fn mark<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CancelState,
) -> Result<CancelStep, OrdersError> {
    let mut refused = None;
    let now = ctx.now_ms();
    order::change(ctx, &state.order_id, |current| {
        refused = None;
        if order::status(current) == OrderStatus::Cancelled {
            return Ok(Change::Keep);
        }
        if !order::nothing_shipped(current)
            || !order::transition(current, &CANCELLABLE, OrderStatus::Cancelled, now, &state.reason)
        {
            refused = Some(not_cancellable(current).to_string());
            return Ok(Change::Keep);
        }
        let mut event = ctx.event(ORDERS_TOPIC, &current.id, "order.cancelled", Vec::new());
        event.payload = OrderEvent {
            event_id: event.id.clone(),
            event: Some(order_event::Event::Cancelled(OrderCancelled {
                order_id: current.id.clone(),
                customer_id: current.customer_id.clone(),
                lines: order::event_lines(&current.lines),
                reason: state.reason.clone(),
                occurred_at_unix_ms: now,
            })),
        }
        .encode_to_vec();
        Ok(Change::Write(vec![event]))
    })
    .await?;
    if let Some(why) = refused {
        state.refused = Some(why);
        return Ok(CancelStep::Done);
    }
    Ok(CancelStep::Money)
}

/// Restock: every line back on hand, one adjustment id per line.
async fn restock<S: OrdersStore>(ctx: &StepContext<S>, order_id: &str) -> Result<(), OrdersError> {
    let (order, _) = order::load(ctx, order_id).await?;
    for line in &order.lines {
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

/// Voids an authorization or refunds a capture, whichever the payment is in.
async fn settle_payment<S: OrdersStore>(
    ctx: &StepContext<S>,
    order: &Order,
    key_prefix: &str,
    reason: &str,
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
        Ok(PaymentStatus::Authorized) => {
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
                    amount: None,
                    reason: reason.chars().take(500).collect(),
                }))
                .await
                .map_err(failed)?;
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
        assert_eq!(names, ["mark", "money", "restock", "done"]);
        for step in CancelStep::ALL {
            assert_eq!(CancelStep::parse(step.as_str()), Some(step));
        }
        assert_eq!(CancelStep::parse("refund"), None);
    }
}
