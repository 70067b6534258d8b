//! Returns: requesting one (DELIVERED → RETURN_REQUESTED, lines priced as sold), a failed
//! inspection (RETURN_REJECTED), a lost parcel (RETURN_LOST), and the return saga (kind
//! `return`, id `return_<order>`) of a passed inspection: receive (RETURN_RECEIVED with
//! `order.return_received`, which restocks at the warehouse) → refund → refunded
//! (REFUNDED). The refund's PSP key derives from the order, so it happens once.

use holdfast_proto::events::v1::{OrderEvent, ReturnReceived, order_event};
use holdfast_proto::orders::v1::{InspectionResult, Order, OrderLine, OrderReturn, OrderStatus, ReturnLine};
use holdfast_proto::payments::v1::RefundRequest;
use holdfast_store::SagaRecord;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::context::{OrdersStore, StepContext};
use crate::error::{OrdersError, RETURN_ID, RETURN_LINE};
use crate::order::{self, Change, ORDERS_TOPIC, money};
use crate::saga::record::{DONE, NewSaga, SagaKind, StepResult, decode_state, encode_state};
use crate::upstream::transient;

/// Statuses a requested return may be received (or rejected) from.
const OPEN: [OrderStatus; 2] = [OrderStatus::ReturnRequested, OrderStatus::ReturnLost];

/// The steps of a return saga, by the names their records store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnStep {
    /// RETURN_RECEIVED, with `order.return_received` in the same write.
    Receive,
    /// Refund the returned lines at the PSP.
    Refund,
    /// REFUNDED, with the refund recorded on the order.
    Refunded,
    /// Ended.
    Done,
}

impl ReturnStep {
    /// Every step.
    pub const ALL: [ReturnStep; 4] = [
        ReturnStep::Receive,
        ReturnStep::Refund,
        ReturnStep::Refunded,
        ReturnStep::Done,
    ];

    /// The name stored in the saga record.
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnStep::Receive => "receive",
            ReturnStep::Refund => "refund",
            ReturnStep::Refunded => "refunded",
            ReturnStep::Done => DONE,
        }
    }

    /// The step stored under `name`.
    pub fn parse(name: &str) -> Option<ReturnStep> {
        ReturnStep::ALL.into_iter().find(|step| step.as_str() == name)
    }
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

/// The return saga's id for an order.
pub fn saga_id(order_id: &str) -> String {
    format!("return_{order_id}")
}

/// The lines `wanted` names, priced as sold (quantities of a repeated SKU summed); every
/// line when `wanted` is empty.
pub fn priced_lines(order: &Order, wanted: &[ReturnLine]) -> Result<Vec<OrderLine>, OrdersError> {
    if wanted.is_empty() {
        return Ok(order.lines.clone());
    }
    let mut lines: Vec<OrderLine> = Vec::new();
    for want in wanted {
        let Some(sold) = order.lines.iter().find(|l| l.sku == want.sku) else {
            return Err(OrdersError::precondition(
                RETURN_LINE,
                &want.sku,
                format!("SKU {} is not in order {}", want.sku, order.id),
            ));
        };
        let already = lines.iter().find(|l| l.sku == want.sku).map_or(0, |l| l.quantity);
        // Validation refused sums past i64; saturate anyway rather than trust it here.
        let quantity = already.saturating_add(want.quantity);
        if quantity > sold.quantity {
            return Err(OrdersError::precondition(
                RETURN_LINE,
                &want.sku,
                format!("only {} units of {} were ordered", sold.quantity, want.sku),
            ));
        }
        let unit = sold.unit_price.clone().unwrap_or_default();
        lines.retain(|l| l.sku != want.sku);
        lines.push(order::line(
            &sold.sku,
            quantity,
            unit.amount_minor,
            &unit.currency,
            &sold.title,
        ));
    }
    Ok(lines)
}

/// RequestReturn: DELIVERED → RETURN_REQUESTED with a new return of `lines`; a repeat of
/// the same request changes nothing; any other status is refused.
pub async fn request<S: OrdersStore>(
    ctx: &StepContext<S>,
    order_id: &str,
    lines: Vec<OrderLine>,
    reason: &str,
) -> Result<Order, OrdersError> {
    let key = |ls: &[OrderLine]| {
        let mut k: Vec<(String, i64)> = ls.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        k.sort();
        k
    };
    let wanted = key(&lines);
    order::change(ctx, order_id, |current| match order::status(current) {
        OrderStatus::Delivered => {
            let now = ctx.now_ms();
            current.order_return = Some(OrderReturn {
                return_id: format!("rma_{}", uuid::Uuid::now_v7()),
                lines: lines.clone(),
                reason: reason.to_string(),
                requested_at_unix_ms: now,
                ..OrderReturn::default()
            });
            order::transition(
                current,
                &[OrderStatus::Delivered],
                OrderStatus::ReturnRequested,
                now,
                reason,
            );
            Ok(Change::Write(Vec::new()))
        }
        OrderStatus::ReturnRequested
            if current
                .order_return
                .as_ref()
                .is_some_and(|r| key(&r.lines) == wanted) =>
        {
            Ok(Change::Keep)
        }
        other => Err(OrdersError::order_status(
            order_id,
            format!(
                "order is {} ; only DELIVERED orders can be returned",
                other.as_str_name()
            ),
        )),
    })
    .await
}

/// The order's requested return, if `return_id` names it and `inspection` does not
/// contradict an inspection already recorded.
pub fn open_return(
    order: &Order,
    return_id: &str,
    inspection: InspectionResult,
) -> Result<OrderReturn, OrdersError> {
    let Some(ret) = order.order_return.clone() else {
        return Err(OrdersError::order_status(
            &order.id,
            "no return was requested for this order",
        ));
    };
    if ret.return_id != return_id {
        return Err(OrdersError::precondition(
            RETURN_ID,
            return_id,
            format!("return id does not match order {}'s return", order.id),
        ));
    }
    let status = order::status(order);
    let recorded = InspectionResult::try_from(ret.inspection).unwrap_or(InspectionResult::Unspecified);
    if !OPEN.contains(&status) && recorded != inspection {
        return Err(OrdersError::order_status(
            &order.id,
            format!(
                "order is {}; the return was already inspected differently",
                status.as_str_name()
            ),
        ));
    }
    Ok(ret)
}

/// A failed inspection: RETURN_REJECTED, nothing refunded.
pub async fn reject<S: OrdersStore>(
    ctx: &StepContext<S>,
    order_id: &str,
    note: &str,
) -> Result<Order, OrdersError> {
    let now = ctx.now_ms();
    let updated = order::change(ctx, order_id, |current| {
        if !order::transition(
            current,
            &OPEN,
            OrderStatus::ReturnRejected,
            now,
            "returned parcel failed inspection",
        ) {
            return Ok(Change::Keep);
        }
        if let Some(ret) = current.order_return.as_mut() {
            ret.inspection = InspectionResult::Failed as i32;
            ret.inspection_note = note.to_string();
            ret.received_at_unix_ms = now;
        }
        Ok(Change::Write(Vec::new()))
    })
    .await?;
    if order::status(&updated) != OrderStatus::ReturnRejected {
        return Err(OrdersError::order_status(
            order_id,
            format!("order is {}", order::status(&updated).as_str_name()),
        ));
    }
    Ok(updated)
}

/// MarkReturnLost: RETURN_REQUESTED → RETURN_LOST, nothing refunded.
pub async fn mark_lost<S: OrdersStore>(
    ctx: &StepContext<S>,
    order_id: &str,
    reason: &str,
) -> Result<Order, OrdersError> {
    let now = ctx.now_ms();
    let updated = order::change(ctx, order_id, |current| {
        Ok(
            if order::transition(
                current,
                &[OrderStatus::ReturnRequested],
                OrderStatus::ReturnLost,
                now,
                reason,
            ) {
                Change::Write(Vec::new())
            } else {
                Change::Keep
            },
        )
    })
    .await?;
    if order::status(&updated) != OrderStatus::ReturnLost {
        return Err(OrdersError::order_status(
            order_id,
            format!(
                "order is {}; only RETURN_REQUESTED returns can be marked lost",
                order::status(&updated).as_str_name()
            ),
        ));
    }
    Ok(updated)
}

/// The return saga of a passed inspection of `ret`.
pub fn begin(order_id: &str, ret: &OrderReturn, inspection_note: &str, warehouse_id: &str) -> NewSaga {
    let state = ReturnState {
        order_id: order_id.to_string(),
        return_id: ret.return_id.clone(),
        inspection_note: inspection_note.to_string(),
        warehouse_id: warehouse_id.to_string(),
        refund_id: None,
        refund_minor: 0,
    };
    NewSaga {
        id: saga_id(order_id),
        kind: SagaKind::Return,
        step: ReturnStep::Receive.as_str(),
        state: encode_state(&state),
    }
}

fn next(step: ReturnStep, state: &ReturnState) -> StepResult {
    match step {
        ReturnStep::Done => StepResult::Finished {
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

/// Runs the return saga's current step.
pub async fn step<S: OrdersStore>(
    ctx: &StepContext<S>,
    saga: &SagaRecord,
) -> Result<StepResult, OrdersError> {
    let mut state: ReturnState = decode_state(&saga.state)?;
    let step = ReturnStep::parse(&saga.step)
        .ok_or_else(|| OrdersError::Internal(format!("unknown return step {:?}", saga.step)))?;
    let to = match step {
        ReturnStep::Receive => {
            receive(ctx, &state).await?;
            ReturnStep::Refund
        }
        ReturnStep::Refund => {
            refund(ctx, &mut state).await?;
            ReturnStep::Refunded
        }
        ReturnStep::Refunded => {
            refunded(ctx, &state).await?;
            ReturnStep::Done
        }
        ReturnStep::Done => return Err(OrdersError::Internal("a finished return was asked to run".into())),
    };
    Ok(next(to, &state))
}

/// Receive: RETURN_RECEIVED with `order.return_received` (the warehouse restocks on it).
async fn receive<S: OrdersStore>(ctx: &StepContext<S>, state: &ReturnState) -> Result<(), OrdersError> {
    let now = ctx.now_ms();
    order::change(ctx, &state.order_id, |current| {
        if !order::transition(
            current,
            &OPEN,
            OrderStatus::ReturnReceived,
            now,
            "returned parcel passed inspection",
        ) {
            return Ok(Change::Keep);
        }
        if let Some(ret) = current.order_return.as_mut() {
            ret.inspection = InspectionResult::Passed as i32;
            ret.inspection_note = state.inspection_note.clone();
            ret.received_at_unix_ms = now;
        }
        let ret = current.order_return.clone().unwrap_or_default();
        let mut event = ctx.event(ORDERS_TOPIC, &current.id, "order.return_received", Vec::new());
        event.payload = OrderEvent {
            event_id: event.id.clone(),
            event: Some(order_event::Event::ReturnReceived(ReturnReceived {
                order_id: current.id.clone(),
                return_id: ret.return_id,
                lines: order::event_lines(&ret.lines),
                warehouse_id: state.warehouse_id.clone(),
                inspection_passed: true,
                occurred_at_unix_ms: now,
            })),
        }
        .encode_to_vec();
        Ok(Change::Write(vec![event]))
    })
    .await?;
    Ok(())
}

/// Refund: the returned lines, at the prices sold, with a key derived from the order.
async fn refund<S: OrdersStore>(ctx: &StepContext<S>, state: &mut ReturnState) -> Result<(), OrdersError> {
    let (order, _) = order::load(ctx, &state.order_id).await?;
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
    if amount <= 0 || order.payment_id.is_empty() {
        return Ok(());
    }
    let response = ctx
        .clients
        .payments
        .clone()
        .refund(ctx.clients.payment_request(RefundRequest {
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
            Ok(())
        }
        Err(status) if transient(&status) => Err(OrdersError::upstream("payments", &status)),
        Err(status) => Err(OrdersError::Internal(format!(
            "refund refused: {:?}: {}",
            status.code(),
            status.message()
        ))),
    }
}

/// Refunded: REFUNDED, with the refund recorded on the order's return.
async fn refunded<S: OrdersStore>(ctx: &StepContext<S>, state: &ReturnState) -> Result<(), OrdersError> {
    let now = ctx.now_ms();
    order::change(ctx, &state.order_id, |current| {
        if !order::transition(
            current,
            &[OrderStatus::ReturnReceived],
            OrderStatus::Refunded,
            now,
            "return refunded",
        ) {
            return Ok(Change::Keep);
        }
        let currency = current
            .total
            .as_ref()
            .map(|m| m.currency.clone())
            .unwrap_or_default();
        if let Some(ret) = current.order_return.as_mut() {
            ret.refund_amount = Some(money(state.refund_minor, &currency));
            ret.refund_id = state.refund_id.clone().unwrap_or_default();
        }
        Ok(Change::Write(Vec::new()))
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_the_names_stored_on_disk() {
        let names: Vec<_> = ReturnStep::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["receive", "refund", "refunded", "done"]);
        for step in ReturnStep::ALL {
            assert_eq!(ReturnStep::parse(step.as_str()), Some(step));
        }
        assert_eq!(ReturnStep::parse("mark"), None);
    }
}
