//! Finish: the client-facing answer of a checkout that reached its outcome, stored on its
//! idempotency key (a repeat of the key gets it from then on), and the outcome metric.

use std::sync::LazyLock;

use holdfast_proto::inventory::v1::Shortage;
use holdfast_proto::orders::v1::{
    CheckoutOutcome, CheckoutResponse, OrderStatus, RepricedLine as ProtoRepriced,
};
use holdfast_store::JoinedWrite;
use prometheus::IntCounterVec;
use prost::Message;
use tonic::{Code, Status};

use super::state::{CheckoutState, Outcome, RepricedLine, Step, StoredAnswer};
use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
use crate::order::{self, money};

/// The idempotency scope of checkout keys.
pub const SCOPE: &str = "checkout";

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static CHECKOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_checkouts_total",
        "Checkouts that reached an answer, by outcome (placed, payment_declined, out_of_stock, price_changed, manual_review, error).",
        &["outcome"]
    )
    .expect("registers once")
});

fn record_outcome(outcome: Option<&Outcome>) {
    let label = match outcome {
        Some(Outcome::Placed) => "placed",
        Some(Outcome::Declined { .. }) => "payment_declined",
        Some(Outcome::OutOfStock { .. }) => "out_of_stock",
        Some(Outcome::PriceChanged { .. }) => "price_changed",
        Some(Outcome::ManualReview) => "manual_review",
        Some(Outcome::Refused { .. }) | None => "error",
    };
    CHECKOUTS.with_label_values(&[label]).inc();
}

/// Finish: store the answer on the key, with the saga's last transition (a key that
/// expired under a saga older than 24 h is skipped: nobody is left to answer); the saga is
/// done.
pub async fn finish<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &CheckoutState,
    joined: &mut Vec<JoinedWrite>,
) -> Result<Step, OrdersError> {
    let answer = answer(ctx, state).await?;
    record_outcome(state.outcome.as_ref());
    joined.push(JoinedWrite::CompleteKey {
        scope: SCOPE.into(),
        key: state.key.clone(),
        response: answer.encode(),
    });
    Ok(Step::Done)
}

/// The client-facing answer of a checkout that reached its outcome.
async fn answer<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &CheckoutState,
) -> Result<StoredAnswer, OrdersError> {
    let mut response = CheckoutResponse::default();
    match state.outcome.clone().unwrap_or(Outcome::Refused {
        code: Code::Internal as i32,
        message: "checkout ended without an outcome".into(),
    }) {
        Outcome::Placed | Outcome::ManualReview => {
            let (placed, _) = order::load(ctx, &state.order_id).await.map_err(|e| match e {
                OrdersError::NotFound(_) => {
                    OrdersError::Internal("the order of a placed checkout is missing".into())
                }
                other => other,
            })?;
            response.outcome = if order::status(&placed) == OrderStatus::ManualReview {
                CheckoutOutcome::ManualReview as i32
            } else {
                CheckoutOutcome::Placed as i32
            };
            response.order = Some(placed);
        }
        Outcome::Declined { decline_code } => {
            response.outcome = CheckoutOutcome::PaymentDeclined as i32;
            response.decline_code = decline_code;
        }
        Outcome::OutOfStock { shortages } => {
            response.outcome = CheckoutOutcome::OutOfStock as i32;
            response.shortages = shortages
                .into_iter()
                .map(|s| Shortage {
                    sku: s.sku,
                    requested: s.requested,
                    available: s.available,
                })
                .collect();
        }
        Outcome::PriceChanged { lines } => return Ok(price_changed(&lines)),
        Outcome::Refused { code, message } => {
            return Ok(StoredAnswer::Error(Code::from_i32(code), message, Vec::new()));
        }
    }
    Ok(StoredAnswer::Response(Box::new(response)))
}

/// A price change answers FAILED_PRECONDITION with the new prices: one
/// `google.rpc.PreconditionFailure` violation per moved line (type PRICE_CHANGED, subject
/// the SKU) for generic clients, and the typed lines as a `holdfast.orders.v1.CheckoutResponse`
/// (outcome PRICE_CHANGED, `repriced_lines`) packed in the same status details.
fn price_changed(lines: &[RepricedLine]) -> StoredAnswer {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut details = ErrorDetails::new();
    let mut moved = Vec::with_capacity(lines.len());
    for line in lines {
        let change = format!(
            "{} now costs {} {} (was {} {})",
            line.sku, line.current_minor, line.current_currency, line.expected_minor, line.expected_currency
        );
        details.add_precondition_failure_violation("PRICE_CHANGED", &line.sku, &change);
        moved.push(change);
    }
    let message = format!(
        "prices changed since the cart snapshot: {}; check out again with a new key and the new prices or accept_price_changes",
        moved.join(", ")
    );
    let status = Status::with_error_details(Code::FailedPrecondition, message.clone(), details);
    let mut rpc_status = tonic_types::Status::decode(status.details()).unwrap_or_default();
    let typed = CheckoutResponse {
        outcome: CheckoutOutcome::PriceChanged as i32,
        repriced_lines: lines
            .iter()
            .map(|l| ProtoRepriced {
                sku: l.sku.clone(),
                expected_unit_price: Some(money(l.expected_minor, &l.expected_currency)),
                current_unit_price: Some(money(l.current_minor, &l.current_currency)),
            })
            .collect(),
        ..CheckoutResponse::default()
    };
    rpc_status.details.push(prost_types::Any {
        type_url: "type.googleapis.com/holdfast.orders.v1.CheckoutResponse".into(),
        value: typed.encode_to_vec(),
    });
    StoredAnswer::Error(Code::FailedPrecondition, message, rpc_status.encode_to_vec())
}
