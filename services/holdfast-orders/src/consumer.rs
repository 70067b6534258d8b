//! Orders' consumers: shipment events ([`shipments`], group [`CONSUMER_GROUP`]) and
//! backorders on the fulfillment topic ([`backorders`], group [`BACKORDERS_GROUP`]); one
//! handler serves both.
//!
//! Undecodable events and events of unknown orders are poison (dead-lettered); a store
//! outage is retried. Applying is idempotent by construction (a repeat changes nothing), so
//! a redelivery after a crash between the effect and the offset commit is harmless.

use std::sync::Arc;

use holdfast_platform::events::{Event, EventHandler, HandleError, handler_fn};
use holdfast_proto::events::v1::{FulfillmentEvent, ShipmentEvent};
use prost::Message;

use crate::backorders::{self, FULFILLMENT_TOPIC};
use crate::context::{OrdersStore, StepContext};
use crate::shipments::{self, ApplyError};
pub use crate::shipments::{CONSUMER_GROUP, SHIPMENTS_TOPIC};

/// The topics orders' shipment consumer reads (group [`CONSUMER_GROUP`]).
pub const TOPICS: [&str; 1] = [SHIPMENTS_TOPIC];
/// The topics orders' backorder consumer reads (group [`BACKORDERS_GROUP`]).
pub const BACKORDER_TOPICS: [&str; 1] = [FULFILLMENT_TOPIC];
/// Consumer group of orders on the fulfillment topic: its own group, so the shipment
/// consumer's subscription stays one topic.
pub const BACKORDERS_GROUP: &str = "holdfast-orders-backorders";

/// The handler: decode by topic, apply; see the module docs.
pub fn handler<S: OrdersStore>(ctx: Arc<StepContext<S>>) -> impl EventHandler {
    handler_fn(move |event: Event| {
        let ctx = Arc::clone(&ctx);
        async move {
            let applied = if event.topic == FULFILLMENT_TOPIC {
                let fulfillment = FulfillmentEvent::decode(event.payload.as_slice())
                    .map_err(|e| HandleError::Poison(format!("undecodable fulfillment event: {e}")))?;
                backorders::apply(&ctx, &fulfillment).await.map(drop)
            } else {
                let shipment = ShipmentEvent::decode(event.payload.as_slice())
                    .map_err(|e| HandleError::Poison(format!("undecodable shipment event: {e}")))?;
                shipments::apply(&ctx, &shipment).await.map(drop)
            };
            match applied {
                Ok(()) => Ok(()),
                Err(ApplyError::Poison(why)) => Err(HandleError::Poison(why.to_string())),
                Err(ApplyError::Retry(error)) => Err(HandleError::Retry(error.to_string())),
            }
        }
    })
}
