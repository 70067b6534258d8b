//! Clearing the checked-out cart, and the follow-up that finishes it (kind `cart_clear`,
//! id `clear_<order id>`).
//!
//! A placed checkout clears exactly the cart it checked out: `ClearCart` at the version its
//! validate step read, so a cart the shopper changed since is kept. The answer does not
//! wait for the cart: when the clear cannot be done now, because the cart service or its
//! Redis is unavailable, or because the live cart is *behind* that version (its Redis lost
//! writes and re-warmed an older durable copy, which the cart's write-behind corrects
//! shortly), [`attempt`] says so and the checkout schedules this saga. The recovery worker
//! runs it every `cart_clear_every` until the clear is done or decided (a cart changed
//! since is kept), or `cart_clear_window` has passed since the checkout (then it logs and
//! gives up: the shopper sees bought lines in the cart, nothing else is at stake).

use std::sync::LazyLock;

use holdfast_proto::cart::v1::{CartOwner, ClearCartRequest, GetCartRequest, cart_owner};
use holdfast_store::SagaRecord;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
use crate::options::OrdersOptions;
use crate::saga::record::{NewSaga, SagaKind, StepResult, decode_state, encode_state};
use crate::upstream::transient;

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static FOLLOW_UPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_orders_cart_clear_follow_ups_total",
        "Cart clears a placed checkout could not finish at once, by how their follow-up ended \
         (cleared; kept: the cart changed since; gave_up: still not possible at the end of the window).",
        &["result"]
    )
    .expect("registers once")
});

/// The one working step's stored name.
pub const CLEAR: &str = "clear";

/// The cart a checkout bought from, at the version it read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClearState {
    /// The owner, `c:<customer>` or `s:<session>`.
    pub owner: String,
    /// The cart version the checkout read.
    pub version: u64,
    /// The checkout's order (for logs).
    pub order_id: String,
    /// When the checkout first tried (Unix ms).
    pub since_ms: i64,
}

impl ClearState {
    /// The state for `owner`'s cart at `version`.
    pub fn new(owner: &CartOwner, version: u64, order_id: &str, since_ms: i64) -> Option<Self> {
        let owner = match owner.owner.as_ref()? {
            cart_owner::Owner::CustomerId(id) => format!("c:{id}"),
            cart_owner::Owner::SessionId(id) => format!("s:{id}"),
        };
        Some(Self {
            owner,
            version,
            order_id: order_id.to_string(),
            since_ms,
        })
    }

    fn cart_owner(&self) -> CartOwner {
        let owner = match self.owner.split_once(':') {
            Some(("s", id)) => cart_owner::Owner::SessionId(id.to_string()),
            Some((_, id)) => cart_owner::Owner::CustomerId(id.to_string()),
            None => cart_owner::Owner::CustomerId(self.owner.clone()),
        };
        CartOwner { owner: Some(owner) }
    }
}

/// What one clear attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Cleared (or already empty at that version).
    Cleared,
    /// The cart changed since the checkout read it (or is gone): kept as it is.
    Kept,
    /// Not possible now: try again later.
    Later,
}

/// Clears the cart of `state` if it is still at the version the checkout read.
pub async fn attempt<S: OrdersStore>(ctx: &StepContext<S>, state: &ClearState) -> Attempt {
    let mut cart = ctx.clients.cart.clone();
    let refused = match cart
        .clear_cart(ctx.clients.request(ClearCartRequest {
            owner: Some(state.cart_owner()),
            expected_version: state.version,
        }))
        .await
    {
        Ok(_) => return Attempt::Cleared,
        Err(status) => status,
    };
    if transient(&refused) {
        return Attempt::Later;
    }
    if refused.code() != Code::Aborted {
        tracing::info!(order = %state.order_id, code = ?refused.code(), "cart not cleared: {}", refused.message());
        return Attempt::Kept;
    }
    // Another version: newer means the shopper changed the cart (keep it); older means the
    // live copy went back (its Redis lost writes), which the write-behind corrects.
    match cart
        .get_cart(ctx.clients.request(GetCartRequest {
            owner: Some(state.cart_owner()),
        }))
        .await
    {
        Ok(found) => {
            let live = found.into_inner().cart.map_or(0, |c| c.version);
            if live < state.version {
                Attempt::Later
            } else {
                Attempt::Kept
            }
        }
        Err(_) => Attempt::Later,
    }
}

/// Schedules the follow-up of a clear [`attempt`] answered [`Attempt::Later`] for
/// (create-if-absent: a checkout step that runs twice schedules it once).
pub async fn schedule<S: OrdersStore>(ctx: &StepContext<S>, state: &ClearState) -> Result<(), OrdersError> {
    NewSaga {
        id: format!("clear_{}", state.order_id),
        kind: SagaKind::CartClear,
        step: CLEAR,
        state: encode_state(state),
    }
    .schedule(
        ctx,
        ctx.now_ms() + OrdersOptions::ms(ctx.options.cart_clear_every),
    )
    .await
}

/// Runs the follow-up's current step.
pub async fn step<S: OrdersStore>(
    ctx: &StepContext<S>,
    saga: &SagaRecord,
) -> Result<StepResult, OrdersError> {
    if saga.step != CLEAR {
        return Err(OrdersError::Internal(format!(
            "unknown cart clear step {:?}",
            saga.step
        )));
    }
    let state: ClearState = decode_state(&saga.state)?;
    let now = ctx.now_ms();
    let finished = |result: &str| {
        FOLLOW_UPS.with_label_values(&[result]).inc();
        Ok(StepResult::Finished {
            state: saga.state.clone(),
            joined: Vec::new(),
        })
    };
    match attempt(ctx, &state).await {
        Attempt::Cleared => finished("cleared"),
        Attempt::Kept => finished("kept"),
        Attempt::Later
            if now.saturating_sub(state.since_ms) >= OrdersOptions::ms(ctx.options.cart_clear_window) =>
        {
            tracing::error!(order = %state.order_id, owner = %state.owner,
                "the checked-out cart could not be cleared within the window; it keeps the bought lines");
            finished("gave_up")
        }
        Attempt::Later => Ok(StepResult::Later {
            step: CLEAR,
            state: saga.state.clone(),
            at_ms: now + OrdersOptions::ms(ctx.options.cart_clear_every),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip_through_the_stored_state() {
        for owner in [
            cart_owner::Owner::CustomerId("ann:with:colons".into()),
            cart_owner::Owner::SessionId("sess-1".into()),
        ] {
            let owner = CartOwner { owner: Some(owner) };
            let state = ClearState::new(&owner, 3, "ord_1", 0).expect("owner");
            assert_eq!(state.cart_owner(), owner);
        }
        assert_eq!(ClearState::new(&CartOwner { owner: None }, 3, "ord_1", 0), None);
    }
}
