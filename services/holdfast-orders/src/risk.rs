//! Rule-based risk screening: an order too large, or a customer ordering too fast, goes to
//! manual review instead of being charged. The thresholds are [`RiskRules`].
//!
//! The velocity rule is atomic across concurrent checkouts (and processes): a checkout
//! that passes screening takes one of the customer's `max_orders_per_window` velocity
//! slots, each an insert-if-absent idempotency record (`velocity` scope, key
//! `<customer>:<slot>`) that lives for `window`. Two checkouts can never take one slot, so
//! at most `max_orders_per_window` pass within any window; a checkout that finds every
//! slot live is held for review. A retried screen finds the slot it took before (the
//! record names its order), so a repeat does not take a second one.

use holdfast_store::{IdempotencyRecord, KeyClaim};

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
pub use crate::options::RiskRules;

/// The idempotency scope of velocity slots.
pub const VELOCITY_SCOPE: &str = "velocity";

/// Why the order `order_id` of `customer_id` must be reviewed, or `None` to go on (having
/// taken a velocity slot).
pub async fn screen<S: OrdersStore>(
    ctx: &StepContext<S>,
    customer_id: &str,
    order_id: &str,
    total_minor: i64,
) -> Result<Option<String>, OrdersError> {
    let rules = &ctx.options.risk;
    if total_minor > rules.max_amount_minor {
        return Ok(Some(format!(
            "total {total_minor} exceeds the review threshold {}",
            rules.max_amount_minor
        )));
    }
    let slots = u64::from(rules.max_orders_per_window.max(1));
    let now = ctx.now_ms();
    let window_ms = i64::try_from(rules.window.as_millis()).unwrap_or(i64::MAX / 4);
    // Probe from a slot the order id picks, so concurrent checkouts mostly try different
    // slots first and a customer far from the limit needs one claim.
    let start = first_slot(order_id, slots);
    for probe in 0..slots {
        let slot = (start + probe) % slots;
        let claim = ctx
            .store
            .claim_key(IdempotencyRecord {
                scope: VELOCITY_SCOPE.into(),
                key: format!("{customer_id}:{slot}"),
                fingerprint: String::new(),
                resource_id: order_id.to_string(),
                response: None,
                created_at_ms: now,
                expires_at_ms: now.saturating_add(window_ms),
            })
            .await?;
        match claim {
            KeyClaim::Claimed(_) => return Ok(None),
            KeyClaim::Existing(record) if record.resource_id == order_id => return Ok(None),
            KeyClaim::Existing(_) => {}
        }
    }
    Ok(Some(format!(
        "{slots} orders within {}s reach the velocity limit {}",
        rules.window.as_secs(),
        rules.max_orders_per_window
    )))
}

/// FNV-1a of the order id, modulo `slots`.
fn first_slot(order_id: &str, slots: u64) -> u64 {
    let hash = order_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % slots.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_slot_stays_in_range_and_is_stable() {
        for slots in [1, 2, 50, 1_000_000] {
            let slot = first_slot("ord_abc", slots);
            assert!(slot < slots);
            assert_eq!(slot, first_slot("ord_abc", slots));
        }
        assert_eq!(first_slot("ord_abc", 0), 0);
    }
}
