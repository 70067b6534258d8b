//! Rule-based risk screening: an order too large, or a customer ordering too fast, goes to
//! manual review instead of being charged. The thresholds are [`RiskRules`].

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
pub use crate::options::RiskRules;

/// Why the order must be reviewed, or `None` to go on.
pub async fn screen<S: OrdersStore>(
    ctx: &StepContext<S>,
    customer_id: &str,
    total_minor: i64,
) -> Result<Option<String>, OrdersError> {
    let rules = &ctx.options.risk;
    if total_minor > rules.max_amount_minor {
        return Ok(Some(format!(
            "total {total_minor} exceeds the review threshold {}",
            rules.max_amount_minor
        )));
    }
    let since = ctx.now_ms() - i64::try_from(rules.window.as_millis()).unwrap_or(i64::MAX / 4);
    let limit = rules
        .max_orders_per_window
        .clamp(1, holdfast_store::orders::MAX_ORDER_PAGE_SIZE);
    let page = ctx
        .store
        .list_orders_by_customer(customer_id, &[], None, limit)
        .await?;
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
