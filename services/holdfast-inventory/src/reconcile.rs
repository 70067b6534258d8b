//! Warehouse stock changes flow into the region's `on_hand`: a consumer (group
//! [`CONSUMER_GROUP`]) of [`RECONCILIATION_TOPIC`] applies each
//! `reconciliation.warehouse_stock_changed` of its own region as an `AdjustStock` whose
//! adjustment id is the event's change id. The adjust script remembers adjustment ids for
//! seven days, so a redelivery within that window changes nothing: the effect and its
//! dedupe are one script run.
//!
//! Other regions' changes are skipped (their inventories follow them). A change inventory
//! refuses for good (it would leave `on_hand` below the units held, e.g. a warehouse loss
//! larger than what is free here) is dead-lettered with the reason, for someone to
//! reconcile by hand with `SetStock`; Redis outages are retried.

use holdfast_platform::events::{
    BusConfig, BusError, ConsumerHandle, Event, EventHandler, HandleError, handler_fn, spawn_consumer,
};
use holdfast_platform::status::FieldViolations;
use holdfast_proto::events::v1::{ReconciliationEvent, reconciliation_event};
use prost::Message;

use crate::error::InventoryError;
use crate::stock::Stock;
use crate::validate;

/// Topic of cross-service stock reconciliation.
pub const RECONCILIATION_TOPIC: &str = "holdfast.reconciliation.v1";
/// Inventory's consumer group.
pub const CONSUMER_GROUP: &str = "holdfast-inventory";
/// The one event type on [`RECONCILIATION_TOPIC`].
pub const STOCK_CHANGED: &str = "reconciliation.warehouse_stock_changed";

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The change is in `on_hand`: applied now, or before under the same change id.
    Adjusted,
    /// Another region's change: not ours to apply.
    OtherRegion,
}

/// Applies one reconciliation event to `stock` if it is of `region`.
pub async fn apply(stock: &Stock, region: &str, event: &Event) -> Result<Reconciled, HandleError> {
    if event.event_type != STOCK_CHANGED {
        return Err(HandleError::Poison(format!(
            "unknown event type {:?} on {}",
            event.event_type, event.topic
        )));
    }
    let decoded = ReconciliationEvent::decode(event.payload.as_slice())
        .map_err(|e| HandleError::Poison(format!("undecodable reconciliation event: {e}")))?;
    let Some(reconciliation_event::Event::WarehouseStockChanged(change)) = decoded.event else {
        return Err(HandleError::Poison(
            "reconciliation event without a stock change".into(),
        ));
    };
    if change.region != region {
        return Ok(Reconciled::OtherRegion);
    }
    let mut v = FieldViolations::new();
    validate::sku(&mut v, "sku", &change.sku);
    validate::id(&mut v, "change_id", &change.change_id);
    if change.delta == 0 || change.delta.unsigned_abs() > validate::MAX_ON_HAND.unsigned_abs() {
        v.add(
            "delta",
            format!("must be non-zero and within ±{}", validate::MAX_ON_HAND),
        );
    }
    v.into_result()
        .map_err(|status| HandleError::Poison(format!("invalid stock change: {}", status.message())))?;

    match stock
        .adjust_stock(&change.sku, change.delta, &change.change_id)
        .await
    {
        Ok(_) => Ok(Reconciled::Adjusted),
        Err(InventoryError::Precondition { reason, .. }) => Err(HandleError::Poison(format!(
            "warehouse {} change {} of {} units of {}: {reason}",
            change.warehouse_id, change.change_id, change.delta, change.sku
        ))),
        Err(other) => Err(HandleError::Retry(other.to_string())),
    }
}

/// The handler over `stock`, for `region`.
pub fn handler(stock: Stock, region: &str) -> impl EventHandler {
    let region = region.to_string();
    handler_fn(move |event: Event| {
        let (stock, region) = (stock.clone(), region.clone());
        async move {
            let outcome = apply(&stock, &region, &event).await?;
            tracing::debug!(event_id = %event.id, ?outcome, "warehouse stock change reconciled");
            Ok(())
        }
    })
}

/// Starts the reconciliation consumer on `bus`; it stops when the handle is dropped.
pub async fn spawn(bus: &BusConfig, stock: Stock, region: &str) -> Result<ConsumerHandle, BusError> {
    spawn_consumer(
        bus,
        CONSUMER_GROUP,
        &[RECONCILIATION_TOPIC],
        handler(stock, region),
    )
    .await
}
