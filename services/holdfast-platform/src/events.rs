//! The event bus: where state changes are announced. In-process (a broadcast channel per
//! topic) under `holdfast dev`; Kafka arrives behind the same [`EventBus`] trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::broadcast;

/// One event: a protobuf payload plus the headers every consumer relies on.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id; consumers dedupe on it (delivery is at least once).
    pub id: String,
    /// Versioned topic, e.g. `holdfast.inventory.v1`.
    pub topic: String,
    /// Partition key: the SKU or order id, so one key's events stay in order.
    pub key: String,
    /// What happened, e.g. `inventory.reserved`.
    pub event_type: String,
    /// Region of the producer.
    pub region: String,
    /// Encoded protobuf message from `holdfast.events.v1`.
    pub payload: Vec<u8>,
    /// W3C trace context of the change that caused it, if any.
    pub traceparent: Option<String>,
}

/// Why a publish failed; the caller keeps the event and retries (the outbox does).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker did not take the event.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

/// Publishes events. Implementations must be at-least-once: `Ok` means the bus has them.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes `events` in order.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>>;
}

/// The embedded bus: every subscriber of a topic sees every event published after it subscribed.
#[derive(Debug, Clone, Default)]
pub struct InProcessBus {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Event>>>>,
}

/// How many unread events a slow in-process subscriber may lag before it misses some.
const IN_PROCESS_CAPACITY: usize = 65_536;

impl InProcessBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn sender(&self, topic: &str) -> broadcast::Sender<Event> {
        let mut topics = self
            .topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        topics
            .entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(IN_PROCESS_CAPACITY).0)
            .clone()
    }

    /// Receives every event published to `topic` from now on.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Event> {
        self.sender(topic).subscribe()
    }
}

impl EventBus for InProcessBus {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            for event in events {
                // No subscriber is not an error: nobody was listening, as with an unread topic.
                let _ = self.sender(&event.topic).send(event);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            topic: "holdfast.test.v1".into(),
            key: "k".into(),
            event_type: "test.happened".into(),
            region: "local".into(),
            payload: vec![1, 2, 3],
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn in_process_bus_delivers_in_order_to_subscribers() {
        let bus = InProcessBus::new();
        let mut rx = bus.subscribe("holdfast.test.v1");
        bus.publish(vec![event("a"), event("b")]).await.expect("publish");
        assert_eq!(rx.recv().await.expect("first").id, "a");
        assert_eq!(rx.recv().await.expect("second").id, "b");
    }
}
