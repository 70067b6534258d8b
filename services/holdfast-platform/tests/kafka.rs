//! The Kafka event bus against a real Apache Kafka broker (KRaft, started by the testkit):
//! headers on the wire, order per key (keys in parallel), commit-after-effect, dead letters,
//! retries holding back their key only, trace continuation, and an independent client
//! reading our events. Each test has its own broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_platform::events::{
    Event, EventBus, HandleError, KafkaBus, dlq_topic, ensure_topics, handler_fn, headers, spawn_consumer,
};
use holdfast_platform::{metrics, telemetry};
use holdfast_proto::events::v1::{InventoryEvent, InventoryReserved, inventory_event};
use holdfast_testkit::KafkaBroker;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, util::Timeout};
use tokio::sync::mpsc;

/// Longest any one expected thing may take (a consumer group's first join included).
const WITHIN: Duration = Duration::from_secs(30);

fn reserved(event_id: &str, sku: &str, quantity: i64) -> Vec<u8> {
    InventoryEvent {
        event_id: event_id.into(),
        event: Some(inventory_event::Event::Reserved(InventoryReserved {
            sku: sku.into(),
            reservation_id: format!("r-{event_id}"),
            quantity,
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

fn event(topic: &str, key: &str, id: &str) -> Event {
    Event {
        id: id.into(),
        topic: topic.into(),
        key: key.into(),
        event_type: "inventory.reserved".into(),
        region: "eu-west".into(),
        payload: reserved(id, key, 1),
        traceparent: None,
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(WITHIN, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WITHIN:?}"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

/// A handler that forwards every event it is given and accepts it.
fn forwarding() -> (
    impl holdfast_platform::events::EventHandler,
    mpsc::UnboundedReceiver<Event>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = handler_fn(move |event: Event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
            Ok(())
        }
    });
    (handler, rx)
}

/// Polls the metrics text until `line` appears (consumers count after the commit, which
/// lands after the handler returned).
async fn wait_for_metric(line: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let text = metrics::render();
        if text.contains(line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metric `{line}` never appeared:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A plain rdkafka consumer (no holdfast code) reading `count` records of `topic`.
async fn read_raw(brokers: &str, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    while out.len() < count {
        let message = tokio::time::timeout(WITHIN, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} records in {topic}", out.len()))
            .expect("recv");
        out.push(message.detach());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_round_trip_carries_key_payload_and_every_header() {
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.roundtrip.v1";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let (handler, mut seen) = forwarding();
    let consumer = spawn_consumer(&broker.bus(), "roundtrip", &[topic], handler)
        .await
        .expect("consumer");

    let mut traced = event(topic, "SKU-1", "e-1");
    traced.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let untraced = event(topic, "SKU-1", "e-2");
    bus.publish(vec![traced.clone(), untraced.clone()])
        .await
        .expect("publish");

    assert_eq!(
        next(&mut seen, "first event").await,
        traced,
        "every field survives the trip"
    );
    assert_eq!(
        next(&mut seen, "second event").await,
        untraced,
        "no traceparent stays none"
    );
    assert_eq!(
        InventoryEvent::decode(traced.payload.as_slice())
            .expect("protobuf")
            .event_id,
        "e-1"
    );
    wait_for_metric(&format!(
        "holdfast_events_consumed_total{{group=\"roundtrip\",topic=\"{topic}\"}} 2"
    ))
    .await;
    assert!(
        metrics::render().contains(&format!("holdfast_events_published_total{{topic=\"{topic}\"}} 2")),
        "published counts broker acks"
    );

    // The same record as any Kafka client sees it: key, value and named headers.
    let raw = read_raw(&broker.bootstrap(), topic, 2).await;
    assert_eq!(raw[0].key(), Some(&b"SKU-1"[..]));
    assert_eq!(raw[0].payload(), Some(traced.payload.as_slice()));
    assert_eq!(header(&raw[0], headers::EVENT_ID).as_deref(), Some("e-1"));
    assert_eq!(
        header(&raw[0], headers::EVENT_TYPE).as_deref(),
        Some("inventory.reserved")
    );
    assert_eq!(header(&raw[0], headers::REGION).as_deref(), Some("eu-west"));
    assert_eq!(header(&raw[0], headers::TRACEPARENT), traced.traceparent);
    assert_eq!(header(&raw[1], headers::TRACEPARENT), None);
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_keeps_order_per_key_across_1000_events() {
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.order.v1";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    // Events of different keys are handled at once; each takes a different number of turns
    // of the scheduler, so they finish out of order, and only the lanes keep a key in order.
    let (tx, mut seen) = mpsc::unbounded_channel();
    let handler = handler_fn(move |event: Event| {
        let tx = tx.clone();
        async move {
            let turns = event
                .id
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                % 17;
            for _ in 0..turns {
                tokio::task::yield_now().await;
            }
            let _ = tx.send(event);
            Ok(())
        }
    });
    let consumer = spawn_consumer(&broker.bus(), "order", &[topic], handler)
        .await
        .expect("consumer");

    // 10 keys, 100 events each, interleaved, in 10 batches of 100, each handed over before
    // the one before it is acknowledged (as the outbox relay sends): the bus keeps the order.
    let events: Vec<Event> = (0..1000)
        .map(|i| {
            event(
                topic,
                &format!("SKU-{}", i % 10),
                &format!("{}-{:03}", i % 10, i / 10),
            )
        })
        .collect();
    let mut deliveries = Vec::new();
    for batch in events.chunks(100) {
        deliveries.push(bus.send(batch.to_vec()).await.expect("handed over"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }

    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..1000 {
        let event = next(&mut seen, "event").await;
        per_key.entry(event.key).or_default().push(event.id);
    }
    assert_eq!(per_key.len(), 10);
    for (key, ids) in &per_key {
        let k = key.trim_start_matches("SKU-");
        let expected: Vec<String> = (0..100).map(|n| format!("{k}-{n:03}")).collect();
        assert_eq!(
            ids, &expected,
            "events of {key} arrive in publish order, once each"
        );
    }
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_killed_between_effect_and_commit_gets_the_event_again() {
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.commit.v1";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let group = "commit";

    // First consumer: stores the effect of every event, but never finishes handling e-2, as
    // if the process died between the effect and the commit.
    let effects = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stored_tx, mut stored) = mpsc::unbounded_channel();
    let first = spawn_consumer(&broker.bus(), group, &[topic], {
        let effects = effects.clone();
        handler_fn(move |event: Event| {
            let effects = effects.clone();
            let stored_tx = stored_tx.clone();
            async move {
                effects.lock().expect("lock").push(event.id.clone());
                let _ = stored_tx.send(event.id.clone());
                if event.id == "e-2" {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
    })
    .await
    .expect("first consumer");
    bus.publish(vec![event(topic, "ORD-1", "e-1"), event(topic, "ORD-1", "e-2")])
        .await
        .expect("publish");
    assert_eq!(next(&mut stored, "e-1 effect").await, "e-1");
    assert_eq!(next(&mut stored, "e-2 effect").await, "e-2");
    first.abort().await;

    // Second consumer, same group: e-1 was committed, e-2 was not, so e-2 comes again.
    let (handler, mut seen) = forwarding();
    let second = spawn_consumer(&broker.bus(), group, &[topic], handler)
        .await
        .expect("second consumer");
    assert_eq!(
        next(&mut seen, "redelivery").await.id,
        "e-2",
        "the uncommitted event again, not e-1"
    );
    bus.publish(vec![event(topic, "ORD-1", "e-3")])
        .await
        .expect("publish");
    assert_eq!(next(&mut seen, "e-3").await.id, "e-3");
    assert_eq!(*effects.lock().expect("lock"), ["e-1", "e-2"]);
    // A graceful stop commits what was handled: the next member starts after e-3.
    second.shutdown().await;

    let (handler, mut seen) = forwarding();
    let third = spawn_consumer(&broker.bus(), group, &[topic], handler)
        .await
        .expect("third consumer");
    bus.publish(vec![event(topic, "ORD-1", "e-4")])
        .await
        .expect("publish");
    assert_eq!(next(&mut seen, "after graceful stop").await.id, "e-4");
    third.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_land_in_the_dlq_with_reason_and_the_consumer_goes_on() {
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.poison.v1";
    let dlq = dlq_topic(topic);
    // One partition each, so the order of good and bad records is one order.
    ensure_topics(&broker.bootstrap(), &[topic, &dlq], 1)
        .await
        .expect("topics");
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");

    let (tx, mut handled) = mpsc::unbounded_channel();
    let consumer = spawn_consumer(
        &broker.bus(),
        "poison",
        &[topic],
        handler_fn(move |event: Event| {
            let tx = tx.clone();
            async move {
                InventoryEvent::decode(event.payload.as_slice())
                    .map_err(|e| HandleError::Poison(format!("undecodable payload: {e}")))?;
                let _ = tx.send(event.id);
                Ok(())
            }
        }),
    )
    .await
    .expect("consumer");

    let mut undecodable = event(topic, "SKU-1", "bad");
    undecodable.payload = vec![0xff, 0xff, 0xff];
    bus.publish(vec![event(topic, "SKU-1", "good-1"), undecodable.clone()])
        .await
        .expect("publish");
    // A record from a foreign producer, without any of our headers.
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("raw producer");
    raw.send(
        FutureRecord::to(topic)
            .key("SKU-1")
            .payload(&b"not an event"[..])
            .headers(OwnedHeaders::new().insert(Header {
                key: "foreign",
                value: Some("yes"),
            })),
        Timeout::After(WITHIN),
    )
    .await
    .expect("raw send");
    bus.publish(vec![event(topic, "SKU-1", "good-2")])
        .await
        .expect("publish");

    assert_eq!(next(&mut handled, "first good").await, "good-1");
    assert_eq!(
        next(&mut handled, "good after poison").await,
        "good-2",
        "the consumer goes on"
    );

    let dead = read_raw(&broker.bootstrap(), &dlq, 2).await;
    let reason = header(&dead[0], headers::REASON).expect("reason");
    assert!(reason.starts_with("undecodable payload"), "{reason}");
    assert_eq!(
        header(&dead[0], headers::EVENT_ID).as_deref(),
        Some("bad"),
        "original headers kept"
    );
    assert_eq!(
        header(&dead[0], headers::EVENT_TYPE).as_deref(),
        Some("inventory.reserved")
    );
    assert_eq!(header(&dead[0], headers::ORIGINAL_TOPIC).as_deref(), Some(topic));
    assert_eq!(
        header(&dead[0], headers::CONSUMER_GROUP).as_deref(),
        Some("poison")
    );
    assert_eq!(dead[0].payload(), Some(undecodable.payload.as_slice()));
    assert_eq!(dead[0].key(), Some(&b"SKU-1"[..]));

    assert_eq!(
        header(&dead[1], headers::REASON).as_deref(),
        Some("missing header event-id")
    );
    assert_eq!(
        header(&dead[1], "foreign").as_deref(),
        Some("yes"),
        "original headers kept"
    );
    assert_eq!(header(&dead[1], headers::ORIGINAL_OFFSET).as_deref(), Some("2"));
    assert_eq!(dead[1].payload(), Some(&b"not an event"[..]));

    wait_for_metric(&format!(
        "holdfast_events_dead_lettered_total{{group=\"poison\",topic=\"{topic}\"}} 2"
    ))
    .await;
    wait_for_metric(&format!(
        "holdfast_events_consumed_total{{group=\"poison\",topic=\"{topic}\"}} 2"
    ))
    .await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_handles_the_same_event_again_before_the_next_one() {
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.retry.v1";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let attempts = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, mut accepted) = mpsc::unbounded_channel();
    let consumer = spawn_consumer(&broker.bus(), "retry", &[topic], {
        let attempts = attempts.clone();
        handler_fn(move |event: Event| {
            let attempts = attempts.clone();
            let tx = tx.clone();
            async move {
                let tries = {
                    let mut attempts = attempts.lock().expect("lock");
                    attempts.push(event.id.clone());
                    attempts.iter().filter(|id| **id == event.id).count()
                };
                if event.id == "flaky" && tries < 3 {
                    return Err(HandleError::Retry("store unavailable".into()));
                }
                let _ = tx.send(event.id);
                Ok(())
            }
        })
    })
    .await
    .expect("consumer");
    bus.publish(vec![
        event(topic, "SKU-1", "flaky"),
        event(topic, "SKU-1", "next"),
    ])
    .await
    .expect("publish");
    assert_eq!(next(&mut accepted, "flaky").await, "flaky");
    assert_eq!(next(&mut accepted, "next").await, "next");
    assert_eq!(
        *attempts.lock().expect("lock"),
        ["flaky", "flaky", "flaky", "next"]
    );
    wait_for_metric(&format!(
        "holdfast_events_retried_total{{group=\"retry\",topic=\"{topic}\"}} 2"
    ))
    .await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_holds_back_its_own_key_and_its_offset_but_not_other_keys() {
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.lanes.v1";
    // One partition: both keys share it.
    ensure_topics(&broker.bootstrap(), &[topic, &dlq_topic(topic)], 1)
        .await
        .expect("topics");
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let (tx, mut accepted) = mpsc::unbounded_channel();
    let stuck = spawn_consumer(
        &broker.bus(),
        "lanes",
        &[topic],
        handler_fn(move |event: Event| {
            let tx = tx.clone();
            async move {
                if event.id == "a1" {
                    return Err(HandleError::Retry("store unavailable for a1".into()));
                }
                let _ = tx.send(event.id);
                Ok(())
            }
        }),
    )
    .await
    .expect("consumer");
    bus.publish(vec![
        event(topic, "A", "a1"),
        event(topic, "B", "b1"),
        event(topic, "B", "b2"),
        event(topic, "A", "a2"),
    ])
    .await
    .expect("publish");
    assert_eq!(next(&mut accepted, "b1 while a1 retries").await, "b1");
    assert_eq!(next(&mut accepted, "b2 while a1 retries").await, "b2");
    // Shutting down commits what finished: nothing past a1, which never did.
    stuck.shutdown().await;
    assert!(
        accepted.try_recv().is_err(),
        "a2 waits behind a1, its key's earlier event"
    );

    let (handler, mut seen) = forwarding();
    let next_owner = spawn_consumer(&broker.bus(), "lanes", &[topic], handler)
        .await
        .expect("consumer");
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..4 {
        let event = next(&mut seen, "every event again").await;
        per_key.entry(event.key).or_default().push(event.id);
    }
    assert_eq!(per_key["A"], ["a1", "a2"], "a1 was not committed past");
    assert_eq!(
        per_key["B"],
        ["b1", "b2"],
        "b1 and b2 come again: their offsets lie past a1's"
    );
    next_owner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_span_continues_the_producers_trace() {
    let _telemetry = telemetry::init_with_log_filter("test", "pretty", "warn").expect("telemetry");
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.trace.v1";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let (tx, mut traces) = mpsc::unbounded_channel();
    let consumer = spawn_consumer(
        &broker.bus(),
        "trace",
        &[topic],
        handler_fn(move |event: Event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((
                    event.id,
                    telemetry::current_trace_id(),
                    telemetry::current_traceparent(),
                ));
                Ok(())
            }
        }),
    )
    .await
    .expect("consumer");

    // The producing side runs inside a span, as a gRPC handler does, and stamps its context.
    let producer_span = tracing::info_span!("checkout");
    let (producer_trace, traceparent) =
        producer_span.in_scope(|| (telemetry::current_trace_id(), telemetry::current_traceparent()));
    assert_ne!(producer_trace, "0".repeat(32), "the producer runs in a trace");
    let mut traced = event(topic, "ORD-1", "traced");
    traced.traceparent = traceparent.clone();
    bus.publish(vec![traced, event(topic, "ORD-1", "untraced")])
        .await
        .expect("publish");

    let (id, consumer_trace, consumer_traceparent) = next(&mut traces, "traced").await;
    assert_eq!(id, "traced");
    assert_eq!(
        consumer_trace, producer_trace,
        "the consumer span continues the producer's trace"
    );
    assert_ne!(
        consumer_traceparent, traceparent,
        "as a child span of its own, not the producer's span"
    );
    let (id, untraced_trace, _) = next(&mut traces, "untraced").await;
    assert_eq!(id, "untraced");
    assert_ne!(
        untraced_trace, producer_trace,
        "an event without traceparent starts a new trace"
    );
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_client_reads_our_events_as_plain_kafka() {
    let broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.independent.v1";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let mut first = event(topic, "SKU-7", "ev-1");
    first.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    let second = event(topic, "SKU-7", "ev-2");
    bus.publish(vec![first.clone(), second.clone()])
        .await
        .expect("publish");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka_independent_client.py");
    let bootstrap = broker.bootstrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, bootstrap.as_str(), topic, "independent-python", "2", "30"])
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs (make deps installs confluent-kafka)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the python client read both events: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 2);
    for (record, sent) in records.iter().zip([&first, &second]) {
        assert_eq!(record["key"], sent.key.as_str());
        assert_eq!(record["topic"], topic);
        let headers = &record["headers"];
        assert_eq!(headers[headers::EVENT_ID], sent.id.as_str());
        assert_eq!(headers[headers::EVENT_TYPE], "inventory.reserved");
        assert_eq!(headers[headers::REGION], "eu-west");
        match &sent.traceparent {
            Some(traceparent) => assert_eq!(headers[headers::TRACEPARENT], traceparent.as_str()),
            None => assert!(headers.get(headers::TRACEPARENT).is_none()),
        }
        let hex: String = sent.payload.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(record["payload_hex"], hex, "the protobuf payload, byte for byte");
    }
}
