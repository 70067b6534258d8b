//! The Kafka consumer across broker restarts (a real Apache Kafka broker, SIGKILLed by pid and
//! started again on the same ports and log dirs): before its first partition assignment, after
//! it, and while a crashed member (a PyPI confluent-kafka process) still holds the group. Every
//! event published must reach the handler, and its offset must be committed.
//!
//! The tests where the broker dies before the consumer's first assignment reproduced issue 18:
//! librdkafka queues an error for every failed connection attempt on the queue that also
//! carries rebalances and records, and the dispatcher used to pause up to 1 s after each, so
//! the assignment waited behind hundreds of stale errors for minutes. `RUST_LOG` (e.g.
//! `RUST_LOG=librdkafka=debug,holdfast_platform=debug`) shows the consumer's log, and
//! `HOLDFAST_KAFKA_DEBUG=cgrp,fetch` adds librdkafka's debug contexts to it.

use std::collections::BTreeSet;
use std::time::Duration;

use holdfast_platform::events::{Event, EventBus, KafkaBus, handler_fn, spawn_consumer};
use holdfast_testkit::KafkaBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

/// Longest the consumer may take to see every event after the broker is back: its group must
/// rejoin (the dead member's session, 45 s by default, may have to time out first).
const WITHIN: Duration = Duration::from_secs(90);

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=librdkafka=debug,info`).
fn init_log() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

fn event(topic: &str, n: usize) -> Event {
    Event {
        id: format!("e-{n:03}"),
        topic: topic.into(),
        key: format!("ORD-{}", n % 7),
        event_type: "test.happened".into(),
        region: "eu-west".into(),
        payload: vec![1, 2, 3],
        traceparent: None,
    }
}

fn events(topic: &str, range: std::ops::Range<usize>) -> Vec<Event> {
    range.map(|n| event(topic, n)).collect()
}

/// A handler that forwards each event id it accepts.
fn forwarding() -> (
    impl holdfast_platform::events::EventHandler,
    mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = handler_fn(move |event: Event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event.id);
            Ok(())
        }
    });
    (handler, rx)
}

/// Receives ids until every one of `expected` was seen (repeats allowed: at least once).
async fn expect_all(seen: &mut mpsc::UnboundedReceiver<String>, expected: &[Event], what: &str) {
    let mut missing: BTreeSet<String> = expected.iter().map(|e| e.id.clone()).collect();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !missing.is_empty() {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(id)) => {
                missing.remove(&id);
            }
            Ok(None) => panic!("{what}: the consumer stopped"),
            Err(_) => panic!(
                "{what}: {} of {} events never handled within {WITHIN:?}: {missing:?}",
                missing.len(),
                expected.len()
            ),
        }
    }
}

/// Publishes, retrying while the broker is still coming back.
async fn publish(bus: &KafkaBus, events: Vec<Event>) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        match bus.publish(events.clone()).await {
            Ok(()) => return,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "publish: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The group's committed offsets summed over `topic`'s partitions, read by a client of its own.
fn committed_total(brokers: &str, group: &str, topic: &str) -> i64 {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..holdfast_platform::events::DEFAULT_PARTITIONS {
        partitions.add_partition(topic, partition);
    }
    let committed = reader
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum()
}

/// Polls until the group committed every one of `count` records of `topic`.
async fn expect_committed(brokers: &str, group: &str, topic: &str, count: i64) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let (b, g, t) = (brokers.to_string(), group.to_string(), topic.to_string());
        let total = tokio::task::spawn_blocking(move || committed_total(&b, &g, &t))
            .await
            .expect("join");
        if total == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {total} of {count} offsets within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_started_just_before_a_broker_restart_handles_every_event() {
    init_log();
    let mut broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.restart.before.v1";
    let group = "restart-before";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let first = events(topic, 0..30);
    publish(&bus, first.clone()).await;

    // The consumer subscribes, then the broker dies before (or while) the group forms.
    let (handler, mut seen) = forwarding();
    let consumer = spawn_consumer(&broker.bus(), group, &[topic], handler)
        .await
        .expect("consumer");
    broker.restart().expect("broker restart");

    expect_all(&mut seen, &first, "events published before the restart").await;
    let second = events(topic, 30..60);
    publish(&bus, second.clone()).await;
    expect_all(&mut seen, &second, "events published after the restart").await;
    expect_committed(&broker.bootstrap(), group, topic, 60).await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_keeps_handling_events_across_a_broker_restart_after_its_assignment() {
    init_log();
    let mut broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.restart.after.v1";
    let group = "restart-after";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let (handler, mut seen) = forwarding();
    let consumer = spawn_consumer(&broker.bus(), group, &[topic], handler)
        .await
        .expect("consumer");
    let first = events(topic, 0..30);
    publish(&bus, first.clone()).await;
    expect_all(&mut seen, &first, "events before the restart").await;
    expect_committed(&broker.bootstrap(), group, topic, 30).await;

    broker.restart().expect("broker restart");
    let second = events(topic, 30..60);
    publish(&bus, second.clone()).await;
    expect_all(&mut seen, &second, "events published after the restart").await;
    expect_committed(&broker.bootstrap(), group, topic, 60).await;
    consumer.shutdown().await;
}

/// A group member in a process of its own (PyPI confluent-kafka) that has joined `group` and
/// read a record of `topic`: SIGKILL it and its member stays in the group until its session
/// (10 s) times out, as a crashed holdfast's consumer does.
fn dead_member(brokers: &str, topic: &str, group: &str) {
    use std::io::BufRead as _;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka_group_member.py");
    let mut child = std::process::Command::new("python3")
        .args([script, brokers, topic, group, "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (make deps installs confluent-kafka)");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line.trim(), "assigned", "the member joined and read a record");
    child.kill().expect("SIGKILL the member");
    child.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_replacing_a_crashed_member_handles_every_event_across_a_broker_restart() {
    init_log();
    let mut broker = KafkaBroker::start().expect("broker");
    let topic = "holdfast.restart.crashed.v1";
    let group = "restart-crashed";
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let first = events(topic, 0..30);
    publish(&bus, first.clone()).await;
    // The crashed process's member still holds every partition when ours subscribes.
    let (brokers, t, g) = (broker.bootstrap(), topic.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || dead_member(&brokers, &t, &g))
        .await
        .expect("join");

    let (handler, mut seen) = forwarding();
    let consumer = spawn_consumer(&broker.bus(), group, &[topic], handler)
        .await
        .expect("consumer");
    // The broker dies while our member waits for the dead one's session to end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart().expect("broker restart");

    expect_all(&mut seen, &first, "events published before the restarts").await;
    let second = events(topic, 30..60);
    publish(&bus, second.clone()).await;
    expect_all(&mut seen, &second, "events published after the restarts").await;
    expect_committed(&broker.bootstrap(), group, topic, 60).await;
    consumer.shutdown().await;
}
