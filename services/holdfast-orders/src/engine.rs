//! The saga engine: runs one saga's steps, persisting each with a conditional transition,
//! under a lease, with at most one driver per saga in this process.
//!
//! A step is a function from the saga's state to the next step and state (plus events for
//! the outbox). The engine writes the transition conditionally on the version it read, so
//! if another worker took the saga over (its lease ran out while a step was slow), this
//! worker's write loses and it stops; every side effect of a step is idempotent (stable
//! reservation ids and PSP keys), so the step running twice does no harm.
//!
//! A step that fails transiently (an upstream is down) lets go of the saga with a short
//! lease, so the recovery worker (or the client's retry) resumes it a little later.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use holdfast_store::{OutboxMessage, SagaRecord, SagaTransition, StoreError};
use prometheus::IntCounterVec;
use tokio::sync::{Notify, watch};
use tonic::{Code, Status};
use tracing::Instrument;

use crate::{OrdersOptions, OrdersStore, checkout, lifecycle, now_ms, upstream::Clients};

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static STEPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_saga_steps_total",
        "Saga steps run, by saga kind, step and result (done, retry, lost).",
        &["kind", "step", "result"]
    )
    .expect("registers once")
});

/// What a step decided.
#[derive(Debug)]
pub struct StepResult {
    /// The next step's name.
    pub next: &'static str,
    /// The new state.
    pub state: Vec<u8>,
    /// Whether the saga ends with this transition.
    pub finished: bool,
    /// Events written with the transition.
    pub outbox: Vec<OutboxMessage>,
}

/// How a saga run ended when it did not finish.
pub type RunError = (Code, String);

/// Where the one driver of a saga in this process announces how its run ended.
type RunDone = watch::Receiver<Option<Result<(), RunError>>>;

/// Everything steps need, shared by the service, the recovery worker and the drivers.
pub struct Engine<S> {
    /// The durable store.
    pub store: S,
    /// The upstream services.
    pub clients: Clients,
    /// Limits, timings, fault hook.
    pub options: OrdersOptions,
    /// This process's lease owner id.
    pub owner: String,
    /// Region stamped on events.
    pub region: String,
    /// Poked when a transition wrote events, so the relay publishes them at once.
    pub outbox_written: Notify,
    inflight: Mutex<HashMap<String, RunDone>>,
}

impl<S: OrdersStore> Engine<S> {
    /// An engine with a fresh owner id.
    pub fn new(store: S, clients: Clients, options: OrdersOptions, region: &str) -> Self {
        Self {
            store,
            clients,
            options,
            owner: format!("orders-{}", uuid::Uuid::now_v7()),
            region: region.to_string(),
            outbox_written: Notify::new(),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `saga` to its end (or until it cannot go on) in a task of its own, so a caller
    /// that goes away (a client's deadline) does not stop it halfway; a second call for a
    /// saga already running here waits for that run instead of starting another.
    pub async fn run(self: &Arc<Self>, saga: SagaRecord) -> Result<(), RunError> {
        let mut done = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(running) = inflight.get(&saga.id) {
                running.clone()
            } else {
                let (tx, rx) = watch::channel(None);
                inflight.insert(saga.id.clone(), rx.clone());
                let engine = Arc::clone(self);
                let task = async move {
                    let id = saga.id.clone();
                    let result = engine.drive(saga).await;
                    engine
                        .inflight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    let _ = tx.send(Some(result));
                };
                tokio::spawn(task.instrument(tracing::Span::current()));
                rx
            }
        };
        let result = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| (Code::Internal, "saga driver stopped".to_string()))?
            .clone();
        result.unwrap_or_else(|| Err((Code::Internal, "saga driver stopped".into())))
    }

    /// Takes the saga (if nobody else holds a live lease) and runs steps until it finishes
    /// or a step must wait.
    async fn drive(&self, mut saga: SagaRecord) -> Result<(), RunError> {
        saga = self.acquire(saga).await?;
        loop {
            if saga.finished {
                return Ok(());
            }
            let step_name = saga.step.clone();
            let result = match saga.kind.as_str() {
                checkout::KIND => checkout::step(self, &saga).await,
                lifecycle::CANCEL_KIND => lifecycle::cancel_step(self, &saga).await,
                lifecycle::RETURN_KIND => lifecycle::return_step(self, &saga).await,
                other => Err(Status::internal(format!("unknown saga kind {other:?}"))),
            };
            match result {
                Ok(step) => {
                    let wrote_events = !step.outbox.is_empty();
                    let transition = SagaTransition {
                        step: step.next.to_string(),
                        state: step.state,
                        lease_owner: self.owner.clone(),
                        lease_until_ms: now_ms() + self.lease_ms(),
                        finished: step.finished,
                    };
                    match self
                        .store
                        .transition_saga(&saga.id, saga.version, transition, step.outbox)
                        .await
                    {
                        Ok(next) => saga = next,
                        Err(StoreError::VersionConflict { .. }) => {
                            STEPS.with_label_values(&[&saga.kind, &step_name, "lost"]).inc();
                            return Err((
                                Code::Aborted,
                                "another worker took this checkout over; retry".into(),
                            ));
                        }
                        Err(e) => return Err(store_error(&e)),
                    }
                    if wrote_events {
                        self.outbox_written.notify_one();
                    }
                    STEPS.with_label_values(&[&saga.kind, &step_name, "done"]).inc();
                    self.fault_hook(&saga.kind, &step_name);
                }
                Err(status) => {
                    STEPS.with_label_values(&[&saga.kind, &step_name, "retry"]).inc();
                    tracing::warn!(saga = %saga.id, kind = %saga.kind, step = %step_name,
                        error = %status.message(), "saga step failed; it will be retried");
                    // Let go with a short lease: the recovery worker picks it up after it.
                    let transition = SagaTransition {
                        step: saga.step.clone(),
                        state: saga.state.clone(),
                        lease_owner: String::new(),
                        lease_until_ms: now_ms() + self.options.retry_after.as_millis() as i64,
                        finished: false,
                    };
                    let _ = self
                        .store
                        .transition_saga(&saga.id, saga.version, transition, Vec::new())
                        .await;
                    return Err((status.code(), status.message().to_string()));
                }
            }
        }
    }

    /// Makes this process the saga's lease holder, unless it is finished or someone else
    /// holds a live lease (`UNAVAILABLE`: in progress elsewhere).
    async fn acquire(&self, mut saga: SagaRecord) -> Result<SagaRecord, RunError> {
        for _ in 0..3 {
            if saga.finished {
                return Ok(saga);
            }
            let now = now_ms();
            // Created (or last moved) by this process with plenty of lease left: ours
            // already, and the in-flight map guarantees no other driver here.
            if saga.lease_owner == self.owner && saga.lease_until_ms > now + self.lease_ms() / 2 {
                return Ok(saga);
            }
            let free =
                saga.lease_owner.is_empty() || saga.lease_owner == self.owner || saga.lease_until_ms <= now;
            if !free {
                return Err((
                    Code::Unavailable,
                    "this checkout is running elsewhere; retry".into(),
                ));
            }
            let transition = SagaTransition {
                step: saga.step.clone(),
                state: saga.state.clone(),
                lease_owner: self.owner.clone(),
                lease_until_ms: now + self.lease_ms(),
                finished: false,
            };
            match self
                .store
                .transition_saga(&saga.id, saga.version, transition, Vec::new())
                .await
            {
                Ok(taken) => return Ok(taken),
                Err(StoreError::VersionConflict { .. }) => {
                    saga = self
                        .store
                        .get_saga(&saga.id)
                        .await
                        .map_err(|e| store_error(&e))?
                        .ok_or((Code::Internal, "saga vanished".to_string()))?;
                }
                Err(e) => return Err(store_error(&e)),
            }
        }
        Err((Code::Aborted, "the checkout kept moving under us; retry".into()))
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.options.saga_lease.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// The crash hook: with `crash_after` set to "<kind>:<step>" (or "<step>" for checkout),
    /// the process aborts right after that step was persisted. Off unless configured.
    fn fault_hook(&self, kind: &str, step: &str) {
        if let Some(point) = &self.options.crash_after {
            let hit = point == &format!("{kind}:{step}") || (kind == checkout::KIND && point == step);
            if hit {
                tracing::error!(%kind, %step, "fault hook: aborting the process after this step");
                std::process::abort();
            }
        }
    }

    /// An event for the outbox.
    pub fn event(&self, topic: &str, key: &str, event_type: &str, payload: Vec<u8>) -> OutboxMessage {
        let mut headers = std::collections::BTreeMap::new();
        headers.insert("region".to_string(), self.region.clone());
        if let Some(traceparent) = holdfast_platform::telemetry::current_traceparent() {
            headers.insert("traceparent".to_string(), traceparent);
        }
        OutboxMessage {
            id: uuid::Uuid::now_v7().to_string(),
            topic: topic.to_string(),
            key: key.to_string(),
            event_type: event_type.to_string(),
            payload,
            headers,
            created_at_ms: now_ms(),
        }
    }
}

/// A store failure as a retryable status.
pub fn store_error(error: &StoreError) -> RunError {
    match error {
        StoreError::InvalidArgument(message) => (Code::InvalidArgument, message.clone()),
        other => (Code::Unavailable, other.to_string()),
    }
}

/// Whether an upstream error is worth retrying (the call may not have happened).
pub fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}
