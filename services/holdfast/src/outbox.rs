//! The process's one relay per store: publishes the store's outbox, whichever services wrote
//! it (orders and warehouse share it under `holdfast dev`).

use std::sync::{Arc, LazyLock};

use holdfast_platform::events::{BusError, Event, EventBus};
use holdfast_store::relay::{self, RelayOptions};
use holdfast_store::{OutboxMessage, Store};
use prometheus::IntCounterVec;
use tokio::sync::Notify;

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static RELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_outbox_events_total",
        "Events of the store's outbox handed to the bus (published) or kept for the next try (failed).",
        &["result"]
    )
    .expect("registers once")
});

/// Runs the relay of `store`'s outbox to `bus` forever (abort the task to stop it): in id
/// order, each row marked sent only once the bus took it. `wake` is notified by writers.
pub async fn relay(store: Store, wake: Arc<Notify>, bus: Arc<dyn EventBus>, region: String) {
    relay::run(&store, &wake, &RelayOptions::default(), |batch| {
        let events: Vec<Event> = batch.into_iter().map(|m| to_event(m, &region)).collect();
        let count = events.len() as u64;
        let bus = Arc::clone(&bus);
        async move {
            let delivery = bus.send(events).await.map_err(|e| failed(&e, count))?;
            Ok(async move {
                delivery.await.map_err(|e| failed(&e, count))?;
                RELAYED.with_label_values(&["published"]).inc_by(count);
                Ok(())
            })
        }
    })
    .await;
}

/// Counts `count` events kept for the next try; the reason, for the relay's log.
fn failed(error: &BusError, count: u64) -> String {
    RELAYED.with_label_values(&["failed"]).inc_by(count);
    error.to_string()
}

/// A row as a bus event; rows without a region header get this process's.
fn to_event(message: OutboxMessage, region: &str) -> Event {
    Event {
        region: message
            .headers
            .get("region")
            .cloned()
            .unwrap_or_else(|| region.to_string()),
        traceparent: message.headers.get("traceparent").cloned(),
        id: message.id,
        topic: message.topic,
        key: message.key,
        event_type: message.event_type,
        payload: message.payload,
    }
}
