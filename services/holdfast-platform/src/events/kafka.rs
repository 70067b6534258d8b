//! The Kafka transport: [`KafkaBus`] (producer), topic creation and the record format (the
//! consumer is in `kafka_consumer`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{BusError, Delivery, Event, EventBus, PUBLISHED, headers};

/// Partitions of a topic this code creates. Topics are created by the code that uses them,
/// not by a broker's auto-creation (production brokers disable it, and its partition count
/// is the broker's, not ours). Order holds per key, so more partitions only add parallelism
/// across keys.
pub const DEFAULT_PARTITIONS: i32 = 3;

/// A publish that the broker has not acknowledged by then fails, and the outbox retries it.
pub(super) const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one admin request (topic creation).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Producer properties shared by [`KafkaBus`] and the dead-letter writer.
pub(super) fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // No duplicates or reordering from the producer's own retries; implies acks=all and
        // at most 5 requests in flight per connection.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
        // The Java client's key hash: a key lands on the same partition whoever produces it.
        .set("partitioner", "murmur2_random");
    config
}

fn admin_client(brokers: &str) -> Result<AdminClient<DefaultClientContext>, BusError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| BusError::Config(format!("kafka admin client: {e}")))
}

/// How many times a CreateTopics that timed out is sent again. A broker that is busy (a
/// controller election, a loaded machine) can time a creation out that then succeeds, or
/// succeed on the next request; a repeat is harmless (an existing topic is fine).
const CREATE_ATTEMPTS: u32 = 3;

fn timed_out(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut
    )
}

async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[&str],
    partitions: i32,
) -> Result<(), BusError> {
    let mut attempt = 1;
    loop {
        match create_topics_once(admin, topics, partitions).await {
            Err(CreateFailure::TimedOut(why)) if attempt < CREATE_ATTEMPTS => {
                tracing::warn!(attempt, %why, "kafka CreateTopics timed out; sending it again");
                attempt += 1;
            }
            Err(CreateFailure::TimedOut(why) | CreateFailure::Other(why)) => {
                return Err(BusError::Unavailable(why));
            }
            Ok(()) => return Ok(()),
        }
    }
}

/// Why one CreateTopics failed: a timeout is worth another request, anything else is not.
enum CreateFailure {
    TimedOut(String),
    Other(String),
}

async fn create_topics_once(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[&str],
    partitions: i32,
) -> Result<(), CreateFailure> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics(&new, &options).await.map_err(|e| {
        let why = format!("create topics {topics:?}: {e}");
        match e {
            KafkaError::AdminOp(code) if timed_out(code) => CreateFailure::TimedOut(why),
            _ => CreateFailure::Other(why),
        }
    })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) if timed_out(code) => {
                return Err(CreateFailure::TimedOut(format!("create topic {topic}: {code}")));
            }
            Err((topic, code)) => {
                return Err(CreateFailure::Other(format!("create topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

/// Creates each of `topics` that does not exist yet, with `partitions` partitions and one
/// replica. Topics that exist are left as they are.
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<(), BusError> {
    let admin = admin_client(brokers)?;
    create_topics(&admin, topics, partitions).await
}

/// Publishes events to Kafka with an idempotent producer. `publish` returns `Ok` only after
/// the broker acknowledged every event (`acks=all`); events are enqueued in the order given,
/// so one key's events land in its partition in that order. A topic is created on first use
/// if it is missing ([`DEFAULT_PARTITIONS`]); where creation is not allowed, topics must exist.
#[derive(Clone)]
pub struct KafkaBus {
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    known_topics: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus").finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// A producer for `brokers` (`host:port,...`). Connects lazily: a broker that is down
    /// shows up as a failed publish, not here.
    pub fn new(brokers: &str) -> Result<Self, BusError> {
        let producer = producer_config(brokers)
            .create()
            .map_err(|e| BusError::Config(format!("kafka producer: {e}")))?;
        Ok(Self {
            producer,
            admin: Arc::new(admin_client(brokers)?),
            known_topics: Arc::default(),
        })
    }

    /// Creates the topics of `events` not seen before by this bus. Best effort: a broker that
    /// forbids creation may still have the topic, and a missing one fails the publish anyway.
    async fn ensure_known(&self, events: &[Event]) {
        let new: Vec<&str> = {
            let known = self
                .known_topics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut new: Vec<&str> = events
                .iter()
                .map(|e| e.topic.as_str())
                .filter(|t| !known.contains(*t))
                .collect();
            new.sort_unstable();
            new.dedup();
            new
        };
        if new.is_empty() {
            return;
        }
        match create_topics(&self.admin, &new, DEFAULT_PARTITIONS).await {
            Ok(()) => {
                let mut known = self
                    .known_topics
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                known.extend(new.iter().map(|t| (*t).to_string()));
            }
            Err(e) => tracing::warn!(error = %e, "could not create topics before publishing"),
        }
    }
}

/// The record headers of `event`.
fn event_headers(event: &Event) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: headers::EVENT_ID,
            value: Some(event.id.as_str()),
        })
        .insert(Header {
            key: headers::EVENT_TYPE,
            value: Some(event.event_type.as_str()),
        })
        .insert(Header {
            key: headers::REGION,
            value: Some(event.region.as_str()),
        });
    if let Some(traceparent) = &event.traceparent {
        out = out.insert(Header {
            key: headers::TRACEPARENT,
            value: Some(traceparent.as_str()),
        });
    }
    out
}

fn record(event: &Event) -> FutureRecord<'_, str, [u8]> {
    FutureRecord::to(&event.topic)
        .key(event.key.as_str())
        .payload(event.payload.as_slice())
        .headers(event_headers(event))
}

impl EventBus for KafkaBus {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move { self.send(events).await?.await })
    }

    fn send(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Delivery, BusError>> {
        Box::pin(async move {
            self.ensure_known(&events).await;
            let mut pending = VecDeque::with_capacity(events.len());
            for (index, event) in events.iter().enumerate() {
                let mut next = record(event);
                loop {
                    match self.producer.send_result(next) {
                        Ok(delivery) => {
                            pending.push_back((delivery, index));
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            // The local queue is full: wait for our oldest event to be acked
                            // (or, if none is ours, for the queue to drain a little).
                            next = back;
                            match pending.pop_front() {
                                Some((delivery, sent)) => acknowledged(delivery.await, &events[sent])?,
                                None => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                        Err((e, _)) => {
                            return Err(BusError::Unavailable(format!(
                                "event {} to {}: {e}",
                                event.id, event.topic
                            )));
                        }
                    }
                }
            }
            // Every event is in the producer's queue, in order: later sends queue behind them.
            let delivered: Delivery = Box::pin(async move {
                for (delivery, sent) in pending {
                    acknowledged(delivery.await, &events[sent])?;
                }
                Ok(())
            });
            Ok(delivered)
        })
    }
}

/// Counts an acknowledged event, or says why it was not.
fn acknowledged<E>(delivery: Result<OwnedDeliveryResult, E>, event: &Event) -> Result<(), BusError> {
    match delivery {
        Ok(Ok(_)) => {
            PUBLISHED.with_label_values(&[event.topic.as_str()]).inc();
            Ok(())
        }
        Ok(Err((e, _))) => Err(BusError::Unavailable(format!(
            "event {} to {}: {e}",
            event.id, event.topic
        ))),
        Err(_) => Err(BusError::Unavailable("producer closed".into())),
    }
}

/// Reads an [`Event`] back from a record; the reason it is poison otherwise.
pub(super) fn decode(message: &OwnedMessage) -> Result<Event, String> {
    fn text(value: Option<&[u8]>, what: &str) -> Result<String, String> {
        let value = value.ok_or_else(|| format!("empty {what}"))?;
        String::from_utf8(value.to_vec()).map_err(|_| format!("{what} is not utf-8"))
    }
    let (mut id, mut event_type, mut region, mut traceparent) = (None, None, None, None);
    if let Some(found) = message.headers() {
        for header in found.iter() {
            let slot = match header.key {
                headers::EVENT_ID => &mut id,
                headers::EVENT_TYPE => &mut event_type,
                headers::REGION => &mut region,
                headers::TRACEPARENT => &mut traceparent,
                _ => continue,
            };
            *slot = Some(text(header.value, &format!("header {}", header.key))?);
        }
    }
    let missing = |name: &str| format!("missing header {name}");
    Ok(Event {
        id: id.ok_or_else(|| missing(headers::EVENT_ID))?,
        topic: message.topic().to_string(),
        key: text(message.key(), "key")?,
        event_type: event_type.ok_or_else(|| missing(headers::EVENT_TYPE))?,
        region: region.ok_or_else(|| missing(headers::REGION))?,
        payload: message.payload().unwrap_or_default().to_vec(),
        traceparent,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn message(headers: Option<OwnedHeaders>, key: Option<&[u8]>) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![8, 1]),
            key.map(<[u8]>::to_vec),
            "holdfast.test.v1".into(),
            Timestamp::NotAvailable,
            0,
            7,
            headers,
        )
    }

    fn sample() -> Event {
        Event {
            id: "e-1".into(),
            topic: "holdfast.test.v1".into(),
            key: "SKU-1".into(),
            event_type: "test.happened".into(),
            region: "eu".into(),
            payload: vec![8, 1],
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    #[test]
    fn decode_reads_back_what_event_headers_wrote() {
        let event = sample();
        let decoded = decode(&message(Some(event_headers(&event)), Some(b"SKU-1"))).expect("decode");
        assert_eq!(decoded, event);
    }

    #[test]
    fn decode_calls_missing_headers_or_key_poison() {
        assert_eq!(
            decode(&message(None, Some(b"k"))).expect_err("no headers"),
            "missing header event-id"
        );
        let mut event = sample();
        event.traceparent = None;
        let only_id = OwnedHeaders::new().insert(Header {
            key: headers::EVENT_ID,
            value: Some("e-1"),
        });
        assert_eq!(
            decode(&message(Some(only_id), Some(b"k"))).expect_err("no type"),
            "missing header event-type"
        );
        assert_eq!(
            decode(&message(Some(event_headers(&event)), None)).expect_err("no key"),
            "empty key"
        );
        let bad = OwnedHeaders::new().insert(Header {
            key: headers::EVENT_ID,
            value: Some(&[0xff_u8][..]),
        });
        assert_eq!(
            decode(&message(Some(bad), Some(b"k"))).expect_err("not utf-8"),
            "header event-id is not utf-8"
        );
    }
}
