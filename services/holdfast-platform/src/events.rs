//! The event bus: where state changes are announced, and how services react to them.
//!
//! Two transports behind one interface:
//!
//! - [`InProcessBus`], a broadcast channel per topic, the default under `holdfast dev` (no
//!   `--kafka-brokers`): every consumer sees every event published after it subscribed; nothing
//!   survives the process.
//! - [`KafkaBus`] over `rdkafka` (bundled librdkafka): an idempotent producer (`acks=all`,
//!   `enable.idempotence=true`), so `publish` returns `Ok` only once the broker acknowledged
//!   every event, in order per key.
//!
//! Producers hold an `Arc<dyn EventBus>` ([`BusConfig::publisher`]). Consumers implement
//! [`EventHandler`] and run with [`spawn_consumer`], which picks the transport from a
//! [`BusConfig`], so a service never knows which bus it is on.
//!
//! # On the wire (Kafka)
//!
//! One Kafka record per [`Event`]: the record key is [`Event::key`] (SKU or order id, so one
//! key's events stay in one partition and in order), the value is the protobuf payload, and the
//! headers are [`headers::EVENT_ID`], [`headers::EVENT_TYPE`], [`headers::REGION`] and, when the
//! change ran inside a trace, [`headers::TRACEPARENT`] (W3C). A record without the first three
//! is poison.
//!
//! # Delivery guarantees (Kafka)
//!
//! At least once. Consumers join a consumer group, never auto-commit, and commit a record's
//! offset only after the handler returned `Ok`, or after a poison record was written to
//! `<topic>.dlq` ([`dlq_topic`]). A consumer killed between the handler's effect and the commit
//! gets the record again after restart, so handlers dedupe by [`Event::id`] in their store.
//! [`HandleError::Retry`] redelivers the same event with exponential backoff (100 ms doubling to
//! 10 s) and never skips it; [`HandleError::Poison`] dead-letters it with a `reason` header plus
//! the original headers and moves on. One consumer handles one event at a time, in partition
//! order.
//!
//! # In-process semantics
//!
//! The same handler contract, without durability: a retried event is retried in place; a
//! poison event is logged with its reason, counted, and republished unchanged to `<topic>.dlq`
//! on the same in-process bus (where a test or a tool may subscribe; the reason is only in the
//! log, since [`Event`] has no free-form headers). The consumer group id only labels logs and
//! metrics: every in-process consumer sees every event.
//!
//! # Metrics
//!
//! `holdfast_events_published_total{topic}`, and per `{topic, group}`:
//! `holdfast_events_consumed_total` (handled and committed), `holdfast_events_retried_total`,
//! `holdfast_events_dead_lettered_total`.

mod consumer;
mod handler;
mod kafka;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, register_int_counter_vec};
use tokio::sync::broadcast;

pub use consumer::{
    BusConfig, ConsumerHandle, EventHandler, HandleError, HandlerFn, handler_fn, spawn_consumer,
};
pub use kafka::{DEFAULT_PARTITIONS, KafkaBus, ensure_topics};

/// Kafka header names, shared by every producer and consumer (and by non-Rust clients).
pub mod headers {
    /// [`super::Event::id`], UTF-8.
    pub const EVENT_ID: &str = "event-id";
    /// [`super::Event::event_type`], UTF-8, e.g. `inventory.reserved`.
    pub const EVENT_TYPE: &str = "event-type";
    /// [`super::Event::region`], UTF-8.
    pub const REGION: &str = "region";
    /// W3C trace context of the change, when there was one.
    pub const TRACEPARENT: &str = "traceparent";
    /// On a dead-lettered record: why it was dead-lettered.
    pub const REASON: &str = "reason";
    /// On a dead-lettered record: the topic it was consumed from.
    pub const ORIGINAL_TOPIC: &str = "original-topic";
    /// On a dead-lettered record: its partition in the original topic.
    pub const ORIGINAL_PARTITION: &str = "original-partition";
    /// On a dead-lettered record: its offset in the original topic.
    pub const ORIGINAL_OFFSET: &str = "original-offset";
    /// On a dead-lettered record: the consumer group that gave up on it.
    pub const CONSUMER_GROUP: &str = "consumer-group";
}

/// The dead-letter topic of `topic`: `<topic>.dlq`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

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

/// Why a publish failed, or a consumer could not start; the caller keeps the event and
/// retries (the outbox does).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker did not take the event (or could not be reached).
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The bus was configured wrongly (a bad broker list or client property).
    #[error("event bus misconfigured: {0}")]
    Config(String),
}

/// Publishes events. Implementations must be at-least-once: `Ok` means the bus has them.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes `events` in order (per key, which is all a partitioned log can promise).
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>>;
}

#[allow(clippy::expect_used)] // registering a static metric can only fail on a duplicate name, a programming error.
static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_events_published_total",
        "Events the bus accepted (for Kafka: acknowledged by the broker), by topic.",
        &["topic"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_events_consumed_total",
        "Events a handler accepted (for Kafka: and whose offset was then committed), by topic and consumer group.",
        &["topic", "group"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static RETRIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_events_retried_total",
        "Handler attempts that asked for a redelivery (transient failure), by topic and consumer group.",
        &["topic", "group"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_events_dead_lettered_total",
        "Poison events sent to the dead-letter topic, by original topic and consumer group.",
        &["topic", "group"]
    )
    .expect("metric registers once")
});

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
                PUBLISHED.with_label_values(&[event.topic.as_str()]).inc();
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

    #[test]
    fn dlq_topic_appends_suffix() {
        assert_eq!(dlq_topic("holdfast.orders.v1"), "holdfast.orders.v1.dlq");
    }
}
