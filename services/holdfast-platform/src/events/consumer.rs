//! Consumers: one handler contract for both transports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{BusError, CONSUMED, DEAD_LETTERED, Event, EventBus, InProcessBus, KafkaBus, RETRIED, dlq_topic};
use crate::telemetry;

/// First wait before an event whose handler asked for a retry is handled again.
pub(super) const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between two attempts at the same event.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why a handler did not accept an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// A transient failure (the store is down, a dependency timed out): the same event is
    /// handled again after a backoff, and nothing after it on the partition is handled first.
    #[error("transient failure: {0}")]
    Retry(String),
    /// The event itself is bad (undecodable payload, unknown type, unknown SKU): it is
    /// dead-lettered with this reason and the consumer goes on with the next one.
    #[error("poison event: {0}")]
    Poison(String),
}

/// Reacts to events. Delivery is at least once, so a handler dedupes by [`Event::id`] and
/// stores its effect together with that id before it returns `Ok`.
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event. `Ok` lets the consumer commit it: it will not be delivered again
    /// to this consumer group (unless the commit itself is lost).
    fn handle(&self, event: Event) -> BoxFuture<'_, Result<(), HandleError>>;
}

impl<T: EventHandler + ?Sized> EventHandler for Arc<T> {
    fn handle(&self, event: Event) -> BoxFuture<'_, Result<(), HandleError>> {
        (**self).handle(event)
    }
}

/// An [`EventHandler`] made from an async closure; see [`handler_fn`].
#[derive(Debug, Clone)]
pub struct HandlerFn<F>(F);

/// Wraps `f` (`Fn(Event) -> impl Future<Output = Result<(), HandleError>>`) as a handler.
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    HandlerFn(f)
}

impl<F, Fut> EventHandler for HandlerFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    fn handle(&self, event: Event) -> BoxFuture<'_, Result<(), HandleError>> {
        Box::pin((self.0)(event))
    }
}

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
    fn default() -> Self {
        Self::InProcess(InProcessBus::new())
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
/// On Kafka it first creates the topics and their `<topic>.dlq` if they are missing (brokers
/// such as tansu do not auto-create), then joins the group; a group with no committed offset
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
                let receiver = bus.subscribe(topic);
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
            let consumer = super::kafka::start_consumer(brokers, group, topics).await?;
            tasks.spawn(super::kafka::run_consumer(
                consumer,
                group.to_string(),
                handler,
                stop_rx,
            ));
        }
    }
    Ok(ConsumerHandle { stop, tasks })
}

/// What became of one event.
pub(super) enum Outcome {
    /// The handler accepted it.
    Handled,
    /// The handler (or decoding) rejected it for good.
    Poison(String),
    /// The consumer was asked to stop while the event waited for a retry.
    Stopped,
}

/// Resolves once the consumer is asked to stop (or its handle is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Waits `delay`; `true` when asked to stop meanwhile.
pub(super) async fn wait_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = stopped(stop) => true,
    }
}

/// Hands `event` to `handler` inside a span that continues the producer's trace, retrying in
/// place with backoff until the handler accepts or rejects it.
pub(super) async fn deliver(
    handler: &dyn EventHandler,
    event: &Event,
    group: &str,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let mut backoff = RETRY_INITIAL;
    loop {
        let span = tracing::info_span!(
            "event.consume",
            otel.kind = "consumer",
            topic = %event.topic,
            event_type = %event.event_type,
            event_id = %event.id,
            group = %group,
        );
        telemetry::continue_traceparent(&span, event.traceparent.as_deref());
        match handler.handle(event.clone()).instrument(span).await {
            Ok(()) => return Outcome::Handled,
            Err(HandleError::Poison(reason)) => return Outcome::Poison(reason),
            Err(HandleError::Retry(reason)) => {
                RETRIED.with_label_values(&[event.topic.as_str(), group]).inc();
                tracing::warn!(
                    topic = %event.topic, group, event_id = %event.id, %reason,
                    retry_in_ms = backoff.as_millis() as u64,
                    "event handler asked for a retry"
                );
                if wait_or_stop(backoff, stop).await {
                    return Outcome::Stopped;
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn run_in_process(
    bus: InProcessBus,
    mut receiver: broadcast::Receiver<Event>,
    topic: String,
    group: String,
    handler: Arc<dyn EventHandler>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            received = receiver.recv() => match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(%topic, %group, missed, "in-process consumer fell behind; events lost");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        match deliver(&*handler, &event, &group, &mut stop).await {
            Outcome::Handled => CONSUMED.with_label_values(&[topic.as_str(), &group]).inc(),
            Outcome::Poison(reason) => {
                tracing::warn!(%topic, %group, event_id = %event.id, %reason, "poison event dead-lettered");
                DEAD_LETTERED.with_label_values(&[topic.as_str(), &group]).inc();
                let mut dead = event;
                dead.topic = dlq_topic(&topic);
                // The in-process bus cannot fail.
                let _ = bus.publish(vec![dead]).await;
            }
            Outcome::Stopped => return,
        }
    }
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

    #[tokio::test]
    async fn spawn_consumer_rejects_no_topics() {
        let result = spawn_consumer(&BusConfig::default(), "g", &[], handler_fn(|_| async { Ok(()) })).await;
        assert!(matches!(result, Err(BusError::Config(_))));
    }
}
