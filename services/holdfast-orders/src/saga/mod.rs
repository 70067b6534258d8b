//! The saga kinds and their one dispatch (mini-redis `cmd/` style): one module per kind,
//! each with its typed steps, its persisted state and a `step` function; the engine only
//! calls [`step`] and writes what it returns.
//!
//! - [`checkout`]: validate and re-price, reserve, screen, authorize, create the order,
//!   commit (the pivot), capture, dispatch, notify; or compensate.
//! - [`cancel`]: mark the order CANCELLED, void or refund, restock.
//! - [`returns`]: receive a passed return, refund it, mark it REFUNDED.
//! - [`sweep`]: void an authorization that landed after its checkout ended without an order.
//! - [`cart_clear`]: clear a placed checkout's cart when the checkout could not at once.

pub mod cancel;
pub mod cart_clear;
pub mod checkout;
pub mod record;
pub mod returns;
pub mod sweep;

use holdfast_store::SagaRecord;

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
pub use record::{DONE, NewSaga, PARKED, SagaKind, StepResult};

/// Runs the current step of `saga`, whatever its kind.
pub async fn step<S: OrdersStore>(
    ctx: &StepContext<S>,
    saga: &SagaRecord,
) -> Result<StepResult, OrdersError> {
    match SagaKind::parse(&saga.kind) {
        Some(SagaKind::Checkout) => checkout::step(ctx, saga).await,
        Some(SagaKind::Cancel) => cancel::step(ctx, saga).await,
        Some(SagaKind::Return) => returns::step(ctx, saga).await,
        Some(SagaKind::VoidSweep) => sweep::step(ctx, saga).await,
        Some(SagaKind::CartClear) => cart_clear::step(ctx, saga).await,
        None => Err(OrdersError::Internal(format!(
            "unknown saga kind {:?}",
            saga.kind
        ))),
    }
}

/// Whether the step `step` of a saga of kind `kind` runs at once after the step before it,
/// in that step's transition (the engine runs it when the step before wrote nothing but its
/// transition). Only checkout has such steps.
pub fn runs_with_previous(kind: &str, step: &str) -> bool {
    SagaKind::parse(kind) == Some(SagaKind::Checkout) && checkout::runs_with_previous(step)
}

/// Whether the first step `step` of a new saga of kind `kind` runs before the saga is
/// written, so that it is created at the step after it (the engine does so when the step
/// wrote nothing but its state). Only checkout's validate does.
pub fn runs_before_create(kind: &str, step: &str) -> bool {
    SagaKind::parse(kind) == Some(SagaKind::Checkout) && checkout::runs_before_create(step)
}
