//! The handler contract both transports share, and the delivery of one event to a handler:
//! in a span continuing the producer's trace, retried in place with backoff until the
//! handler accepts or rejects it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::Instrument;

use super::{Event, RETRIED};
use crate::telemetry;

/// First wait before an event whose handler asked for a retry is handled again.
pub(super) const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between two attempts at the same event.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why a handler did not accept an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// A transient failure (the store is down, a dependency timed out): the same event is
    /// handled again after a backoff, and nothing after it with the same key is handled first
    /// (on Kafka, other keys go on; its partition's offset is not committed past it).
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
