//! Rule-based risk screening: an order too large, or a customer ordering too fast, goes to
//! manual review instead of being charged.

use std::time::Duration;

use tonic::Status;

use crate::engine::Engine;
use crate::{OrdersStore, now_ms};

/// The thresholds. An order is held for review when its total exceeds `max_amount_minor`
/// or the customer already placed `max_orders_per_window` orders within `window`.
#[derive(Debug, Clone)]
pub struct RiskRules {
    /// Largest total charged without review, in minor units of the order's currency.
    pub max_amount_minor: i64,
    /// Most orders per customer within `window` before review.
    pub max_orders_per_window: u32,
    /// The velocity window.
    pub window: Duration,
}

impl Default for RiskRules {
    fn default() -> Self {
        Self {
            max_amount_minor: 1_000_000,
            max_orders_per_window: 50,
            window: Duration::from_secs(3600),
        }
    }
}

/// Why the order must be reviewed, or `None` to go on.
pub async fn screen<S: OrdersStore>(
    engine: &Engine<S>,
    customer_id: &str,
    total_minor: i64,
) -> Result<Option<String>, Status> {
    let rules = &engine.options.risk;
    if total_minor > rules.max_amount_minor {
        return Ok(Some(format!(
            "total {total_minor} exceeds the review threshold {}",
            rules.max_amount_minor
        )));
    }
    let since = now_ms() - i64::try_from(rules.window.as_millis()).unwrap_or(i64::MAX / 4);
    let limit = rules
        .max_orders_per_window
        .clamp(1, holdfast_store::orders::MAX_ORDER_PAGE_SIZE);
    let page = engine
        .store
        .list_orders_by_customer(customer_id, &[], None, limit)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let recent = page.orders.iter().filter(|o| o.created_at_ms >= since).count();
    if recent >= rules.max_orders_per_window as usize {
        return Ok(Some(format!(
            "{recent} orders within {}s reach the velocity limit {}",
            rules.window.as_secs(),
            rules.max_orders_per_window
        )));
    }
    Ok(None)
}
