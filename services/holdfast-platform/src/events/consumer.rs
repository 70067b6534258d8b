//! Consumers: one handler contract for both transports.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use super::handler::{EventHandler, HandleError, HandlerFn, handler_fn};
use super::handler::{Outcome, deliver, stopped};
use super::lanes::{IN_HAND, LaneKey, Lanes};
use super::{BusError, CONSUMED, DEAD_LETTERED, Event, EventBus, InProcessBus, KafkaBus, dlq_topic};

/// Which bus a process uses: `--kafka-brokers` set means Kafka, unset the in-process bus.
/// Debug hides credentials in the broker list.
#[derive(Clone)]
pub enum BusConfig {
    /// The embedded bus; producers and consumers must share this one instance.
    InProcess(InProcessBus),
    /// A Kafka cluster.
    Kafka {
        /// Bootstrap brokers, `host:port,host:port`.
        brokers: String,
    },
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess(bus) => f.debug_tuple("InProcess").field(bus).finish(),
            Self::Kafka { brokers } => f
                .debug_struct("Kafka")
                .field("brokers", &crate::redact::redact_url(brokers))
                .finish(),
        }
    }
}

impl Default for BusConfig {
    /// A new in-process bus that refuses events for topics without consumers until
    /// [`BusConfig::consumers_ready`] (see [`InProcessBus::starting`]).
    fn default() -> Self {
        Self::InProcess(InProcessBus::starting())
    }
}

impl BusConfig {
    /// Kafka when `brokers` is given (the value of `--kafka-brokers`), else a new in-process bus.
    pub fn from_kafka_brokers(brokers: Option<&str>) -> Self {
        match brokers {
            Some(brokers) => Self::Kafka {
                brokers: brokers.to_string(),
            },
            None => Self::default(),
        }
    }

    /// Every consumer of this process has subscribed (see [`InProcessBus::consumers_ready`]);
    /// nothing to do on Kafka, where topics keep events for groups that join later.
    pub fn consumers_ready(&self) {
        if let Self::InProcess(bus) = self {
            bus.consumers_ready();
        }
    }

    /// The producer side: the in-process bus itself, or a new [`KafkaBus`].
    pub fn publisher(&self) -> Result<Arc<dyn EventBus>, BusError> {
        Ok(match self {
            Self::InProcess(bus) => Arc::new(bus.clone()),
            Self::Kafka { brokers } => Arc::new(KafkaBus::new(brokers)?),
        })
    }
}

/// A running consumer. Dropping it aborts it (like [`ConsumerHandle::abort`], without waiting).
#[derive(Debug)]
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl ConsumerHandle {
    /// Stops gracefully: the event in hand is finished (its handler returns and, on Kafka, its
    /// offset is committed; a handler waiting to retry gives up without committing), then the
    /// consumer leaves its group. Returns once it has.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops at once, wherever it is (mid-handler, between effect and commit), as a crash
    /// would, and returns once the consumer is gone. Uncommitted events are redelivered to the
    /// group's next consumer.
    pub async fn abort(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts a consumer in consumer group `group` on `topics`, handing each event to `handler`.
///
/// On Kafka it first creates the topics and their `<topic>.dlq` if they are missing (production
/// brokers do not auto-create), then joins the group; a group with no committed offset
/// starts at the earliest retained event. In-process it subscribes before returning, so every
/// event published after this returns is seen.
pub async fn spawn_consumer<H: EventHandler>(
    bus: &BusConfig,
    group: &str,
    topics: &[&str],
    handler: H,
) -> Result<ConsumerHandle, BusError> {
    if topics.is_empty() {
        return Err(BusError::Config(format!("consumer group {group}: no topics")));
    }
    let handler: Arc<dyn EventHandler> = Arc::new(handler);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    match bus {
        BusConfig::InProcess(bus) => {
            for topic in topics {
                let receiver = bus.consume(topic);
                tasks.spawn(run_in_process(
                    bus.clone(),
                    receiver,
                    (*topic).to_string(),
                    group.to_string(),
                    handler.clone(),
                    stop_rx.clone(),
                ));
            }
        }
        BusConfig::Kafka { brokers } => {
            let consumer = super::kafka_consumer::start_consumer(brokers, group, topics).await?;
            tasks.spawn(super::kafka_consumer::run_consumer(
                consumer,
                group.to_string(),
                handler,
                stop_rx,
            ));
        }
    }
    Ok(ConsumerHandle { stop, tasks })
}

/// What every event task of one in-process consumer shares.
struct InProcess {
    bus: InProcessBus,
    topic: String,
    group: String,
    handler: Arc<dyn EventHandler>,
}

/// What became of one event an in-process consumer started: its place and key (its lane), and
/// whether it finished (`false`: given up because the consumer is stopping).
struct InProcessDone {
    seq: i64,
    key: LaneKey,
    finished: bool,
}

/// Hands one topic's events to the handler as the Kafka consumer hands a partition's: those
/// of one key in publish order, different keys at once (at most [`IN_HAND`] in
/// hand, so a full queue holds the publisher back). Once asked to stop it takes no more
/// events and lets the running ones finish.
async fn run_in_process(
    bus: InProcessBus,
    mut receiver: mpsc::Receiver<Event>,
    topic: String,
    group: String,
    handler: Arc<dyn EventHandler>,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Arc::new(InProcess {
        bus,
        topic,
        group,
        handler,
    });
    let mut lanes: Lanes<(i64, Event)> = Lanes::default();
    let mut running: JoinSet<InProcessDone> = JoinSet::new();
    let mut next_seq = 0_i64;
    let mut taking = true;
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop), if taking => taking = false,
            Some(joined) = running.join_next() => {
                let done = match joined {
                    Ok(done) => done,
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    // Only when the runtime shuts down.
                    Err(_) => return,
                };
                if !done.finished {
                    taking = false;
                    continue;
                }
                if let Some((seq, event)) = lanes.finish(done.seq, &done.key).filter(|_| taking) {
                    // The next event of the same lane: its key is the finished one's.
                    running.spawn(handle_in_process(shared.clone(), seq, done.key, event, stop.clone()));
                }
            }
            received = receiver.recv(), if taking && lanes.in_hand() < IN_HAND => {
                // Every sender is gone: the bus itself was dropped.
                let Some(event) = received else {
                    taking = false;
                    continue;
                };
                let seq = next_seq;
                next_seq += 1;
                let key = Some(event.key.as_bytes().to_vec());
                if let Some((seq, event)) = lanes.take(seq, key.clone(), (seq, event)) {
                    running.spawn(handle_in_process(shared.clone(), seq, key, event, stop.clone()));
                }
            }
            else => return,
        }
    }
}

/// Hands one in-process event (at `seq`, in lane `key`) to the handler; a poison one is
/// counted, logged and republished to `<topic>.dlq`.
async fn handle_in_process(
    shared: Arc<InProcess>,
    seq: i64,
    key: LaneKey,
    event: Event,
    mut stop: watch::Receiver<bool>,
) -> InProcessDone {
    let InProcess {
        bus,
        topic,
        group,
        handler,
    } = &*shared;
    let finished = match deliver(&**handler, &event, group, &mut stop).await {
        Outcome::Handled => {
            CONSUMED.with_label_values(&[topic.as_str(), group]).inc();
            true
        }
        Outcome::Poison(reason) => {
            tracing::warn!(%topic, %group, event_id = %event.id, %reason, "poison event dead-lettered");
            DEAD_LETTERED.with_label_values(&[topic.as_str(), group]).inc();
            let mut dead = event;
            dead.topic = dlq_topic(topic);
            // The dead letter was logged and counted; the dlq topic is for taps and tools.
            if let Err(error) = bus.publish(vec![dead]).await {
                tracing::warn!(%topic, %group, %error, "dead letter not republished");
            }
            true
        }
        Outcome::Stopped => false,
    };
    InProcessDone { seq, key, finished }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            topic: "holdfast.test.v1".into(),
            key: "k".into(),
            event_type: "test.happened".into(),
            region: "local".into(),
            payload: id.as_bytes().to_vec(),
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn in_process_consumer_retries_the_same_event_then_dead_letters_poison_and_goes_on() {
        let bus = InProcessBus::new();
        let config = BusConfig::InProcess(bus.clone());
        let mut dlq = bus.subscribe("holdfast.test.v1.dlq");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let consumer = spawn_consumer(&config, "test", &["holdfast.test.v1"], {
            let seen = seen.clone();
            handler_fn(move |event: Event| {
                let seen = seen.clone();
                let done_tx = done_tx.clone();
                async move {
                    let attempts = {
                        let mut seen = seen.lock().expect("lock");
                        seen.push(event.id.clone());
                        seen.iter().filter(|id| **id == event.id).count()
                    };
                    match event.id.as_str() {
                        "flaky" if attempts < 3 => Err(HandleError::Retry("not yet".into())),
                        "bad" => Err(HandleError::Poison("cannot decode".into())),
                        _ => {
                            let _ = done_tx.send(event.id);
                            Ok(())
                        }
                    }
                }
            })
        })
        .await
        .expect("spawn");

        bus.publish(vec![event("flaky"), event("bad"), event("good")])
            .await
            .expect("publish");
        assert_eq!(done.recv().await.as_deref(), Some("flaky"));
        assert_eq!(done.recv().await.as_deref(), Some("good"));
        assert_eq!(
            *seen.lock().expect("lock"),
            ["flaky", "flaky", "flaky", "bad", "good"],
            "a retried event is handled again before anything after it"
        );
        let dead = dlq.recv().await.expect("dead letter");
        assert_eq!(
            (dead.id.as_str(), dead.topic.as_str()),
            ("bad", "holdfast.test.v1.dlq")
        );
        consumer.shutdown().await;
    }

    /// The next event `done` reports; fails the test after 10 s without one.
    async fn next(done: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
        tokio::time::timeout(std::time::Duration::from_secs(10), done.recv())
            .await
            .expect("an event is handled within 10 s")
    }

    #[tokio::test]
    async fn in_process_consumer_handles_other_keys_while_one_key_waits_and_keeps_each_keys_order() {
        let bus = InProcessBus::new();
        let config = BusConfig::InProcess(bus.clone());
        let (gate_tx, gate) = tokio::sync::oneshot::channel::<()>();
        let gate = Arc::new(tokio::sync::Mutex::new(Some(gate)));
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let consumer = spawn_consumer(&config, "test", &["holdfast.test.v1"], {
            handler_fn(move |event: Event| {
                let (gate, done_tx) = (gate.clone(), done_tx.clone());
                async move {
                    if event.id == "a1" {
                        let gate = gate.lock().await.take().expect("a1 is handled once");
                        gate.await.expect("the test opens the gate");
                    }
                    let _ = done_tx.send(event.id);
                    Ok(())
                }
            })
        })
        .await
        .expect("spawn");
        let keyed = |id: &str, key: &str| Event {
            key: key.into(),
            ..event(id)
        };

        bus.publish(vec![
            keyed("a1", "a"),
            keyed("a2", "a"),
            keyed("b1", "b"),
            keyed("b2", "b"),
        ])
        .await
        .expect("publish");
        assert_eq!(
            next(&mut done).await.as_deref(),
            Some("b1"),
            "b does not wait for a1"
        );
        assert_eq!(next(&mut done).await.as_deref(), Some("b2"));
        gate_tx.send(()).expect("a1 waits at the gate");
        assert_eq!(next(&mut done).await.as_deref(), Some("a1"));
        assert_eq!(
            next(&mut done).await.as_deref(),
            Some("a2"),
            "a2 waited for a1, its key's event before it"
        );
        consumer.shutdown().await;
    }

    #[tokio::test]
    async fn spawn_consumer_rejects_no_topics() {
        let result = spawn_consumer(&BusConfig::default(), "g", &[], handler_fn(|_| async { Ok(()) })).await;
        assert!(matches!(result, Err(BusError::Config(_))));
    }
}
