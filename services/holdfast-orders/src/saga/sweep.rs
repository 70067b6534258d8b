//! The void sweep (kind `void_sweep`, id `sweep_<order id the checkout would have had>`): a checkout that ended
//! without an order (compensated) may still leave money authorized, because its look-up
//! of the payment by key can run before an authorization in flight lands (a PSP timeout;
//! audit H9). Compensation schedules this saga with the checkout's PSP keys; the recovery worker runs it after
//! `void_sweep_grace`, then every `void_sweep_every` until `void_sweep_window` has passed
//! since the checkout ended. Each run looks the payment up by the checkout's authorize key
//! and voids an authorization still standing, with the checkout's own void key (so a void
//! compensation already made is replayed, not repeated). A key the PSP recorded anything
//! under cannot be authorized again, so the sweep ends as soon as it finds a record.

use std::sync::LazyLock;

use holdfast_proto::payments::v1::{GetPaymentRequest, PaymentStatus, VoidRequest, get_payment_request};
use holdfast_store::SagaRecord;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
use crate::options::OrdersOptions;
use crate::saga::record::{NewSaga, SagaKind, StepResult, decode_state, encode_state};

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static SWEPT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_orders_void_sweep_total",
        "Void sweep look-ups of checkouts that ended without an order, by result \
         (voided: an authorization was left standing; settled; none; gave_up).",
        &["result"]
    )
    .expect("registers once")
});

/// The one working step's stored name.
pub const CHECK: &str = "check";

/// What a void sweep carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SweepState {
    /// The checkout's PSP key for Authorize.
    pub authorize_key: String,
    /// The checkout's PSP key for Void.
    pub void_key: String,
    /// The order id the checkout would have had (for logs; no order exists).
    pub order_id: String,
    /// When the checkout ended (Unix ms).
    pub ended_at_ms: i64,
}

/// The sweep's saga id for the checkout whose order id would have been `order_id`.
pub fn sweep_id(order_id: &str) -> String {
    format!("sweep_{order_id}")
}

/// Schedules the sweep of a checkout that ended without an order (create-if-absent, so
/// a compensation that runs twice schedules it once). Nobody holds it until the grace
/// delay ends; then the recovery worker finds it stalled and runs it.
pub async fn schedule<S: OrdersStore>(
    ctx: &StepContext<S>,
    authorize_key: &str,
    void_key: &str,
    order_id: &str,
) -> Result<(), OrdersError> {
    let now = ctx.now_ms();
    let state = SweepState {
        authorize_key: authorize_key.to_string(),
        void_key: void_key.to_string(),
        order_id: order_id.to_string(),
        ended_at_ms: now,
    };
    NewSaga {
        id: sweep_id(order_id),
        kind: SagaKind::VoidSweep,
        step: CHECK,
        state: encode_state(&state),
    }
    .schedule(ctx, now + OrdersOptions::ms(ctx.options.void_sweep_grace))
    .await
}

/// Runs the sweep's current step.
pub async fn step<S: OrdersStore>(
    ctx: &StepContext<S>,
    saga: &SagaRecord,
) -> Result<StepResult, OrdersError> {
    if saga.step != CHECK {
        return Err(OrdersError::Internal(format!(
            "unknown void sweep step {:?}",
            saga.step
        )));
    }
    let state: SweepState = decode_state(&saga.state)?;
    let now = ctx.now_ms();
    let last = now.saturating_sub(state.ended_at_ms) >= OrdersOptions::ms(ctx.options.void_sweep_window);
    let finished = |result: &str| {
        SWEPT.with_label_values(&[result]).inc();
        Ok(StepResult::Finished {
            state: saga.state.clone(),
            joined: Vec::new(),
        })
    };
    match check(ctx, &state).await {
        Ok(Found::Nothing) if last => finished("none"),
        Ok(Found::Nothing) => Ok(StepResult::Later {
            step: CHECK,
            state: saga.state.clone(),
            at_ms: now + OrdersOptions::ms(ctx.options.void_sweep_every),
        }),
        Ok(Found::Voided) => finished("voided"),
        Ok(Found::Settled) => finished("settled"),
        Err(error) if last => {
            tracing::error!(order = %state.order_id, %error,
                "void sweep gave up at the end of its window; check the PSP by hand");
            finished("gave_up")
        }
        Err(error) => Err(error),
    }
}

/// What one look-up found.
enum Found {
    /// No payment under the key (yet).
    Nothing,
    /// An authorization was standing; now voided.
    Voided,
    /// A payment in another state (declined, voided): nothing held.
    Settled,
}

async fn check<S: OrdersStore>(ctx: &StepContext<S>, state: &SweepState) -> Result<Found, OrdersError> {
    let mut payments = ctx.clients.payments.clone();
    let payment = match payments
        .get_payment(ctx.clients.request(GetPaymentRequest {
            lookup: Some(get_payment_request::Lookup::AuthorizeIdempotencyKey(
                state.authorize_key.clone(),
            )),
        }))
        .await
    {
        Ok(found) => found.into_inner().payment,
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => return Err(OrdersError::upstream("payments", &status)),
    };
    let Some(payment) = payment else {
        return Ok(Found::Nothing);
    };
    if payment.status != PaymentStatus::Authorized as i32 {
        return Ok(Found::Settled);
    }
    match payments
        .void(ctx.clients.payment_request(VoidRequest {
            idempotency_key: state.void_key.clone(),
            payment_id: payment.payment_id.clone(),
        }))
        .await
    {
        Ok(_) => {
            tracing::warn!(order = %state.order_id, payment = %payment.payment_id,
                "voided an authorization left standing by a checkout that ended without an order");
            Ok(Found::Voided)
        }
        Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
            Ok(Found::Settled)
        }
        Err(status) => Err(OrdersError::upstream("payments", &status)),
    }
}
