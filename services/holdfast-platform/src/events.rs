//! The event bus: where state changes are announced, and how services react to them.
//!
//! Two transports behind one interface:
//!
//! - [`InProcessBus`], a bounded queue per consumer, the default under `holdfast dev` (no
//!   `--kafka-brokers`): every consumer sees every event published after it subscribed, at
//!   least once, with back-pressure instead of loss; nothing survives the process.
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
//! the original headers and moves on. A consumer runs one worker per assigned partition: the
//! events of one key are handled one at a time, in partition order; different keys (up to 16
//! events in hand per partition) and partitions in parallel, so a retried event holds back
//! its own key only. Offsets are committed in the background, each only once its record and
//! every earlier one in its partition were handled (see `events/offsets.rs`,
//! `events/lanes.rs`); revoked partitions commit what they finished before they go.
//!
//! # In-process semantics
//!
//! The same handler contract and the same delivery contract, without durability: at least
//! once, a publish fails (and the relay keeps the event) when no consumer can take it, and a
//! slow consumer slows publishers down instead of losing events (see [`InProcessBus`]). A
//! consumer hands a topic's events to its handler as the Kafka consumer hands a partition's:
//! one key's events one at a time in publish order, different keys at once (up to 16 in
//! hand), so a handler's store sees writes in flight together and a retried event holds back
//! its own key only. A retried event is retried in place; a poison event is logged with its
//! reason, counted, and republished unchanged to `<topic>.dlq` on the same in-process bus
//! (where a test or a tool may subscribe; the reason is only in the log, since [`Event`] has
//! no free-form headers). The consumer group id only labels logs and metrics: every
//! in-process consumer sees every event.
//!
//! # Metrics
//!
//! `holdfast_events_published_total{topic}`, and per `{topic, group}`:
//! `holdfast_events_consumed_total` (handled and committed), `holdfast_events_retried_total`,
//! `holdfast_events_dead_lettered_total`.

mod consumer;
mod handler;
mod kafka;
mod kafka_consumer;
mod lanes;
mod offsets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, register_int_counter_vec};
use tokio::sync::{broadcast, mpsc};

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

/// The second half of [`EventBus::send`]: resolves once the bus has every event of the send
/// (for Kafka: the broker acknowledged them), or says why not.
pub type Delivery = BoxFuture<'static, Result<(), BusError>>;

/// Publishes events. Implementations must be at-least-once: `Ok` means the bus has them.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes `events` in order (per key, which is all a partitioned log can promise).
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>>;

    /// Publishes in two steps, so a caller can send more while the bus confirms: the outer
    /// future resolves once `events` are handed to the bus in order, and events sent after
    /// that are ordered after them; the [`Delivery`] resolves once the bus has them all. A
    /// bus that cannot split the two (the default) publishes in full before it answers.
    fn send(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Delivery, BusError>> {
        Box::pin(async move {
            self.publish(events).await?;
            let delivered: Delivery = Box::pin(std::future::ready(Ok(())));
            Ok(delivered)
        })
    }
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

/// The embedded bus, with Kafka's delivery contract inside one process.
///
/// - Every consumer ([`spawn_consumer`]) of a topic gets every event published to it after it
///   subscribed, in order, through a bounded queue of its own. A full queue is back-pressure:
///   `publish` waits for room (up to [`InProcessBus::publish_timeout`]) and then fails, so the
///   relay keeps the rows and publishes them again. Nothing is dropped for a slow consumer.
/// - `publish` fails when the topic has consumers but none can take the event (all of them
///   stopped), and, on a bus made with [`InProcessBus::starting`], when the topic has no
///   consumer before [`InProcessBus::consumers_ready`] was called: the process has not
///   subscribed its consumers yet. After that, a topic no consumer reads is like a Kafka topic
///   no group reads: the event is taken and counted.
/// - A consumer that got an event may get it again (a publish that failed on another
///   consumer's full queue is retried whole): delivery is at least once; handlers dedupe.
/// - [`InProcessBus::subscribe`] is a tap for tests and tools: it sees what was delivered, may
///   lag and lose events, and never holds a publish back.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    inner: Arc<BusInner>,
}

#[derive(Debug)]
struct BusInner {
    topics: Mutex<HashMap<String, Topic>>,
    /// Whether a topic without consumers takes events (see [`InProcessBus::consumers_ready`]).
    ready: AtomicBool,
    capacity: usize,
    publish_timeout: Duration,
}

#[derive(Debug)]
struct Topic {
    /// One bounded queue per consumer.
    consumers: Vec<mpsc::Sender<Event>>,
    /// Whether any consumer ever subscribed: then no live consumer means events would be lost.
    had_consumers: bool,
    taps: broadcast::Sender<Event>,
}

/// Unread events one consumer may have queued before `publish` waits for it.
const CONSUMER_QUEUE: usize = 1_024;
/// How long `publish` waits for room in a consumer's queue before it fails.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How many unread events a tap may lag before it misses some.
const TAP_CAPACITY: usize = 65_536;

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// A bus whose topics without consumers take events at once (for tests and tools that
    /// publish with nobody consuming).
    pub fn new() -> Self {
        Self::build(true, CONSUMER_QUEUE, PUBLISH_TIMEOUT)
    }

    /// A bus for a process that subscribes its consumers first: until
    /// [`InProcessBus::consumers_ready`], a publish to a topic with no consumer fails, so an
    /// event published too early stays with its relay instead of being lost.
    pub fn starting() -> Self {
        Self::build(false, CONSUMER_QUEUE, PUBLISH_TIMEOUT)
    }

    /// A bus like [`InProcessBus::new`] with `capacity` queued events per consumer and
    /// `publish_timeout` to wait for room.
    pub fn with_capacity(capacity: usize, publish_timeout: Duration) -> Self {
        Self::build(true, capacity.max(1), publish_timeout)
    }

    fn build(ready: bool, capacity: usize, publish_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(BusInner {
                topics: Mutex::new(HashMap::new()),
                ready: AtomicBool::new(ready),
                capacity,
                publish_timeout,
            }),
        }
    }

    /// Every consumer this process runs has subscribed: from now on a topic without
    /// consumers has no reader here, and its events are taken.
    pub fn consumers_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// How long `publish` waits for room in a consumer's queue.
    pub fn publish_timeout(&self) -> Duration {
        self.inner.publish_timeout
    }

    fn with_topic<T>(&self, topic: &str, f: impl FnOnce(&mut Topic) -> T) -> T {
        let mut topics = self
            .inner
            .topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let topic = topics.entry(topic.to_string()).or_insert_with(|| Topic {
            consumers: Vec::new(),
            had_consumers: false,
            taps: broadcast::channel(TAP_CAPACITY).0,
        });
        f(topic)
    }

    /// A tap on `topic`: receives events delivered from now on, best effort (it may lag and
    /// miss events, and never holds a publish back). For tests and tools; consumers use
    /// [`spawn_consumer`].
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Event> {
        self.with_topic(topic, |t| t.taps.subscribe())
    }

    /// A consumer's queue on `topic`: every event published from now on, in order.
    pub(crate) fn consume(&self, topic: &str) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(self.inner.capacity);
        self.with_topic(topic, |t| {
            t.consumers.push(tx);
            t.had_consumers = true;
        });
        rx
    }

    /// Hands `event` to every consumer of its topic, waiting for room in full queues.
    async fn deliver(&self, event: Event) -> Result<(), BusError> {
        let (consumers, had_consumers, taps) = self.with_topic(&event.topic, |t| {
            t.consumers.retain(|c| !c.is_closed());
            (t.consumers.clone(), t.had_consumers, t.taps.clone())
        });
        if consumers.is_empty() {
            if had_consumers {
                return Err(BusError::Unavailable(format!(
                    "no consumer of {} is running",
                    event.topic
                )));
            }
            if !self.inner.ready.load(Ordering::Acquire) {
                return Err(BusError::Unavailable(format!(
                    "consumers of {} are not subscribed yet",
                    event.topic
                )));
            }
        }
        for consumer in &consumers {
            match tokio::time::timeout(self.inner.publish_timeout, consumer.send(event.clone())).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(BusError::Unavailable(format!(
                        "a consumer of {} stopped",
                        event.topic
                    )));
                }
                Err(_) => {
                    return Err(BusError::Unavailable(format!(
                        "a consumer of {} cannot keep up ({} events queued)",
                        event.topic, self.inner.capacity
                    )));
                }
            }
        }
        PUBLISHED.with_label_values(&[event.topic.as_str()]).inc();
        // Taps are best effort: none listening is fine.
        let _ = taps.send(event);
        Ok(())
    }
}

impl EventBus for InProcessBus {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            for event in events {
                self.deliver(event).await?;
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

    /// A consumer that counts what it handles and reports once it has seen `want` events.
    fn counting_consumer(
        want: usize,
    ) -> (
        impl EventHandler,
        Arc<Mutex<Vec<String>>>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let handler = handler_fn({
            let seen = seen.clone();
            move |event: Event| {
                let (seen, done_tx) = (seen.clone(), done_tx.clone());
                async move {
                    let count = {
                        let mut seen = seen.lock().expect("lock");
                        seen.push(event.id);
                        seen.len()
                    };
                    if count >= want
                        && let Some(tx) = done_tx.lock().expect("lock").take()
                    {
                        let _ = tx.send(());
                    }
                    Ok(())
                }
            }
        });
        (handler, seen, done)
    }

    // Regression: the broadcast bus lagged a consumer more than 65,536 events behind and
    // dropped what it missed. A consumer now gets every event, in order; publish waits.
    #[tokio::test]
    async fn in_process_slow_consumer_loses_no_event() {
        const EVENTS: usize = 70_000;
        let bus = InProcessBus::new();
        let (handler, seen, done) = counting_consumer(EVENTS);
        let consumer = spawn_consumer(
            &BusConfig::InProcess(bus.clone()),
            "slow",
            &["holdfast.test.v1"],
            handler,
        )
        .await
        .expect("spawn");
        // One batch: the publisher never yields unless the bus makes it wait for room.
        let batch: Vec<Event> = (0..EVENTS).map(|i| event(&format!("{i:06}"))).collect();
        bus.publish(batch).await.expect("publish");
        tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .expect("every event within 30 s")
            .expect("consumer alive");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), EVENTS, "no event lost");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in publish order");
        consumer.shutdown().await;
    }

    // Regression: a relay that published before the consumers subscribed got `Ok` and the
    // event was lost. Now the publish fails (the relay keeps the row) until consumers are in.
    #[tokio::test]
    async fn in_process_publish_before_consumers_subscribe_fails_then_delivers() {
        let config = BusConfig::default();
        let publisher = config.publisher().expect("publisher");
        assert!(
            publisher.publish(vec![event("early")]).await.is_err(),
            "nobody can take it yet"
        );
        let (handler, seen, done) = counting_consumer(1);
        let consumer = spawn_consumer(&config, "late", &["holdfast.test.v1"], handler)
            .await
            .expect("spawn");
        config.consumers_ready();
        publisher
            .publish(vec![event("early")])
            .await
            .expect("the relay's retry");
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("delivered")
            .expect("consumer alive");
        assert_eq!(*seen.lock().expect("lock"), ["early"]);
        // A topic no consumer of this process reads takes events once consumers are ready.
        let mut other = event("x");
        other.topic = "holdfast.unread.v1".into();
        publisher.publish(vec![other]).await.expect("unread topic");
        consumer.shutdown().await;
    }

    // Regression: with its only consumer gone, a publish answered `Ok` and the event was lost.
    #[tokio::test]
    async fn in_process_publish_fails_when_no_consumer_is_running() {
        let bus = InProcessBus::new();
        let (handler, _seen, _done) = counting_consumer(1);
        let consumer = spawn_consumer(
            &BusConfig::InProcess(bus.clone()),
            "gone",
            &["holdfast.test.v1"],
            handler,
        )
        .await
        .expect("spawn");
        consumer.shutdown().await;
        assert!(bus.publish(vec![event("a")]).await.is_err());
    }

    // A consumer that cannot keep up holds publishers back, then makes them fail: the relay
    // keeps the events and publishes them again, nothing is dropped.
    #[tokio::test]
    async fn in_process_publish_fails_when_a_consumer_cannot_keep_up() {
        let bus = InProcessBus::with_capacity(1, Duration::from_millis(100));
        // One key: the first in the handler, the rest of the consumer's hand waiting behind
        // it, one in the queue, and the last finds no room.
        let ids: Vec<String> = (0..lanes::IN_HAND + 2).map(|i| format!("e{i}")).collect();
        let (release, released) = tokio::sync::watch::channel(false);
        let (handler, seen, done) = {
            let (inner, seen, done) = counting_consumer(ids.len());
            let inner = Arc::new(inner);
            let handler = handler_fn(move |event: Event| {
                let (inner, mut released) = (inner.clone(), released.clone());
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    inner.handle(event).await
                }
            });
            (handler, seen, done)
        };
        let consumer = spawn_consumer(
            &BusConfig::InProcess(bus.clone()),
            "stuck",
            &["holdfast.test.v1"],
            handler,
        )
        .await
        .expect("spawn");
        let refused = bus.publish(ids.iter().map(|id| event(id)).collect()).await;
        assert!(
            matches!(refused, Err(BusError::Unavailable(_))),
            "the consumer's hand and its queue are full, the last finds no room: {refused:?}"
        );
        release.send(true).expect("release");
        let last = ids.last().expect("events");
        bus.publish(vec![event(last)]).await.expect("room again");
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("delivered")
            .expect("consumer alive");
        assert_eq!(*seen.lock().expect("lock"), ids, "every event once, in order");
        consumer.shutdown().await;
    }

    #[test]
    fn dlq_topic_appends_suffix() {
        assert_eq!(dlq_topic("holdfast.orders.v1"), "holdfast.orders.v1.dlq");
    }
}
