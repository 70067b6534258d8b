//! The saga engine: runs one saga's steps, persisting each with a conditional transition,
//! under a lease, with at most one driver per saga in this process. It knows no saga kind:
//! [`crate::saga::step`] dispatches on the record's kind.
//!
//! A step is a function from the saga's state to a [`StepResult`] (the next step and state,
//! plus events for the outbox). The engine writes the transition conditionally on the
//! version it read, so if another worker took the saga over (its lease ran out while a step
//! was slow), this worker's write loses and it stops; every side effect of a step is
//! idempotent (stable reservation ids and PSP keys), so the step running twice does no harm.
//! A step with no effect outside the saga's own write (checkout's screen, create order,
//! dispatch and finish: [`saga::runs_with_previous`]) runs at once after the step before it and is
//! persisted in that step's transition; one that only reads (checkout's validate:
//! [`saga::runs_before_create`]) runs before the saga is first written, which is then created
//! past it.
//!
//! A step that fails transiently (an upstream is down) lets go of the saga with a short
//! lease, so the recovery worker (or the client's retry) resumes it a little later. A
//! cancel or return still failing `park_after` after it started is parked instead (step
//! `parked:<step>`, a lease that never ends, `holdfast_orders_sagas_parked_total`): a human
//! looks at it; nothing retries it. A step may also ask to run later
//! ([`StepResult::Later`]): the saga is let go with its lease ending then.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use holdfast_store::{JoinedWrite, SagaRecord, SagaTransition, StoreError};
use prometheus::IntCounterVec;
use tokio::sync::watch;
use tracing::Instrument;

use crate::context::{OrdersStore, StepContext, now_ms};
use crate::error::{OrdersError, SAGA_PARKED};
use crate::options::OrdersOptions;
use crate::saga::{self, NewSaga, PARKED, SagaKind, StepResult};

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static STEPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_saga_steps_total",
        "Saga steps run, by saga kind, step and result (done, retry, lost).",
        &["kind", "step", "result"]
    )
    .expect("registers once")
});

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static PARKED_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_orders_sagas_parked_total",
        "Sagas parked for review after failing past --saga-park-after, by kind.",
        &["kind"]
    )
    .expect("registers once")
});

/// The lease owner a parked saga stores (with a lease that never ends).
const PARKED_OWNER: &str = "parked";

/// How a run of a saga ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The saga is finished.
    Finished,
    /// Another process holds a live lease on it.
    Elsewhere,
    /// It waits for a later time (a [`StepResult::Later`]); the recovery worker resumes it.
    Waiting,
}

/// The steps one transition persists, and what the last of them decided.
struct Ran {
    /// The stored names of the steps run, in order.
    steps: Vec<String>,
    /// What the last step decided.
    result: StepResult,
}

/// Where the one driver of a saga in this process announces how its run ended.
type RunDone = watch::Receiver<Option<Result<Run, OrdersError>>>;

/// The drivers of sagas in this process, over the steps' context.
pub struct Engine<S> {
    ctx: Arc<StepContext<S>>,
    /// This process's lease owner id.
    owner: String,
    inflight: Mutex<HashMap<String, RunDone>>,
}

/// The engine is its steps' context plus the drivers; reading the context through it keeps
/// `engine.store` and `engine.outbox_written` working for the binary's wiring.
impl<S> Deref for Engine<S> {
    type Target = StepContext<S>;

    fn deref(&self) -> &StepContext<S> {
        &self.ctx
    }
}

impl<S: OrdersStore> Engine<S> {
    /// An engine over `ctx` with a fresh owner id.
    pub fn new(ctx: Arc<StepContext<S>>) -> Self {
        Self {
            ctx,
            owner: format!("orders-{}", uuid::Uuid::now_v7()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The steps' context.
    pub fn context(&self) -> &Arc<StepContext<S>> {
        &self.ctx
    }

    /// Creates `new` (or finds the saga with its id), leased to this process. A first step
    /// that runs before the saga is written ([`saga::runs_before_create`]) runs here, and
    /// the saga is created at the step after it with its state: the creation is that step's
    /// transition. If it fails or writes anything besides its state, the saga is created at
    /// it as it is, and runs it as any step.
    pub async fn open(&self, new: NewSaga) -> Result<SagaRecord, OrdersError> {
        let now = now_ms();
        let mut record = SagaRecord {
            id: new.id,
            kind: new.kind.as_str().to_string(),
            step: new.step.to_string(),
            state: new.state,
            lease_owner: self.owner.clone(),
            lease_until_ms: now + self.ctx.options.lease_ms(),
            created_at_ms: now,
            ..SagaRecord::default()
        };
        let ran = self.run_before_create(&mut record).await;
        let step_after = record.step.clone();
        let created = self.ctx.store.create_saga(record).await?;
        // The step counts (and is a crash point) only if this call created the saga: a saga
        // that existed (a retried key) is returned as it was, and runs from where it is.
        let ours = created.version == 1
            && created.created_at_ms == now
            && created.lease_owner == self.owner
            && created.step == step_after;
        if let Some(step) = ran.filter(|_| ours) {
            STEPS.with_label_values(&[&created.kind, &step, "done"]).inc();
            self.fault_hook(&created.kind, &step);
        }
        Ok(created)
    }

    /// Runs `record`'s step if it runs before the saga is written, and moves `record` past
    /// it: the step's name, or `None` (`record` as it was) when it does not run there,
    /// failed, or wrote more than its state.
    async fn run_before_create(&self, record: &mut SagaRecord) -> Option<String> {
        if !saga::runs_before_create(&record.kind, &record.step) {
            return None;
        }
        match saga::step(&self.ctx, record).await {
            Ok(result) => {
                let (step, state) = result.state_only()?;
                record.state = state.to_vec();
                Some(std::mem::replace(&mut record.step, step.to_string()))
            }
            Err(error) => {
                tracing::debug!(saga = %record.id, step = %record.step, %error,
                    "a step run before the saga's creation failed; it runs again after it");
                None
            }
        }
    }

    /// Runs (or joins, or waits for) the saga until it finished, or the error that stopped
    /// it. A saga another process runs is polled until it ends, or `wait_for_running`.
    pub async fn run_to_end(self: &Arc<Self>, saga: SagaRecord) -> Result<(), OrdersError> {
        let deadline = Instant::now() + self.ctx.options.wait_for_running;
        let mut saga = saga;
        loop {
            if matches!(self.run(saga.clone()).await?, Run::Finished | Run::Waiting) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(OrdersError::TimedOut(
                    "still running elsewhere; retry with the same key or id",
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            saga = self
                .ctx
                .store
                .get_saga(&saga.id)
                .await?
                .ok_or_else(|| OrdersError::Internal("saga vanished".into()))?;
            if saga.finished {
                return Ok(());
            }
        }
    }

    /// Runs `saga` to its end (or until it cannot go on) in a task of its own, so a caller
    /// that goes away (a client's deadline) does not stop it halfway; a second call for a
    /// saga already running here waits for that run instead of starting another.
    pub async fn run(self: &Arc<Self>, saga: SagaRecord) -> Result<Run, OrdersError> {
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
        let stopped = || OrdersError::Internal("saga driver stopped".into());
        let result = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| stopped())?
            .clone();
        result.unwrap_or_else(|| Err(stopped()))
    }

    /// One pass of the recovery worker: resumes every stalled saga (unfinished, no live
    /// lease) at once.
    pub async fn resume_stalled(self: &Arc<Self>) -> Result<(), OrdersError> {
        let stalled = self.ctx.store.list_stalled_sagas(now_ms(), 64).await?;
        let runs = stalled.into_iter().map(|saga| async move {
            tracing::info!(saga = %saga.id, kind = %saga.kind, step = %saga.step, "resuming a stalled saga");
            if let Err(error) = self.run(saga).await {
                tracing::debug!(%error, "stalled saga not finished yet");
            }
        });
        futures::future::join_all(runs).await;
        Ok(())
    }

    /// Takes the saga (if nobody else holds a live lease) and runs steps until it finishes
    /// or a step must wait.
    async fn drive(&self, saga: SagaRecord) -> Result<Run, OrdersError> {
        let Some(mut saga) = self.acquire(saga).await? else {
            return Ok(Run::Elsewhere);
        };
        loop {
            if saga.finished {
                return Ok(Run::Finished);
            }
            let step_name = saga.step.clone();
            match self.steps(&saga).await {
                Ok(Ran { steps, result }) => {
                    let step = result.step_name();
                    let mut later = None;
                    let (state, outbox, joined, finished) = match result {
                        StepResult::Next {
                            state,
                            outbox,
                            joined,
                            ..
                        } => (state, outbox, joined, false),
                        StepResult::Later { state, at_ms, .. } => {
                            later = Some(at_ms);
                            (state, Vec::new(), Vec::new(), false)
                        }
                        StepResult::Finished { state, joined } => (state, Vec::new(), joined, true),
                    };
                    let wrote_events = !outbox.is_empty()
                        || joined
                            .iter()
                            .any(|write| matches!(write, JoinedWrite::UpdateOrder { outbox, .. } if !outbox.is_empty()));
                    let joins_writes = !joined.is_empty();
                    let transition = SagaTransition {
                        step: step.to_string(),
                        state,
                        // A saga that waits lets go until its time.
                        lease_owner: if later.is_some() {
                            String::new()
                        } else {
                            self.owner.clone()
                        },
                        lease_until_ms: later.unwrap_or_else(|| now_ms() + self.ctx.options.lease_ms()),
                        finished,
                    };
                    // The step's order and key writes go with the transition: one atomic
                    // write on SQLite, so the order and the saga never disagree.
                    match self
                        .ctx
                        .store
                        .transition_saga_joined(&saga.id, saga.version, transition, outbox, joined)
                        .await
                    {
                        Ok(next) => saga = next,
                        // With joined writes, the conflict may be the order's (a cancel
                        // moved it): let go briefly and run the step again on the fresh
                        // order. If it was the saga's, letting go fails too: harmless.
                        Err(StoreError::VersionConflict { .. }) if joins_writes => {
                            STEPS.with_label_values(&[&saga.kind, &step_name, "retry"]).inc();
                            self.let_go(&saga).await;
                            return Err(OrdersError::Conflict("the order changed under the step; retry"));
                        }
                        Err(StoreError::VersionConflict { .. }) => {
                            STEPS.with_label_values(&[&saga.kind, &step_name, "lost"]).inc();
                            return Err(OrdersError::Conflict("another worker took this saga over; retry"));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    if wrote_events {
                        self.ctx.outbox_written.notify_one();
                    }
                    for ran in &steps {
                        STEPS.with_label_values(&[&saga.kind, ran, "done"]).inc();
                        self.fault_hook(&saga.kind, ran);
                    }
                    if later.is_some() {
                        return Ok(Run::Waiting);
                    }
                }
                Err(error) if self.past_bound(&saga) => {
                    self.park(&saga, &error).await;
                    return Err(error);
                }
                Err(error) => {
                    STEPS.with_label_values(&[&saga.kind, &step_name, "retry"]).inc();
                    tracing::warn!(saga = %saga.id, kind = %saga.kind, step = %step_name,
                        %error, "saga step failed; it will be retried");
                    self.let_go(&saga).await;
                    return Err(error);
                }
            }
        }
    }

    /// Runs the saga's current step, then each next step that runs with its transition
    /// ([`saga::runs_with_previous`]) as long as the steps so far wrote nothing but the
    /// transition (a later step must not read the store behind an unwritten write). A step
    /// that fails there is dropped, not failed: the transition of the steps before it is
    /// written, and it runs again on its own.
    async fn steps(&self, saga: &SagaRecord) -> Result<Ran, OrdersError> {
        let mut ran = Ran {
            steps: vec![saga.step.clone()],
            result: saga::step(&self.ctx, saga).await?,
        };
        while let Some((step, state)) = ran.result.state_only()
            && saga::runs_with_previous(&saga.kind, step)
        {
            let mut next = saga.clone();
            next.step = step.to_string();
            next.state = state.to_vec();
            match saga::step(&self.ctx, &next).await {
                Ok(result) => {
                    ran.steps.push(next.step);
                    ran.result = result;
                }
                Err(error) => {
                    tracing::debug!(saga = %saga.id, step = %next.step, %error,
                        "a step run with the transition before it failed; it runs again after it");
                    break;
                }
            }
        }
        Ok(ran)
    }

    /// Lets go of `saga` with a short lease: the recovery worker (or the client's retry)
    /// picks it up after it. A failure to let go only means waiting for the full lease.
    async fn let_go(&self, saga: &SagaRecord) {
        let transition = SagaTransition {
            step: saga.step.clone(),
            state: saga.state.clone(),
            lease_owner: String::new(),
            lease_until_ms: now_ms() + self.ctx.options.retry_after.as_millis() as i64,
            finished: false,
        };
        let _ = self
            .ctx
            .store
            .transition_saga(&saga.id, saga.version, transition, Vec::new())
            .await;
    }

    /// Whether `saga` is of a kind that parks and has failed past `park_after` since it
    /// started.
    fn past_bound(&self, saga: &SagaRecord) -> bool {
        SagaKind::parse(&saga.kind).is_some_and(SagaKind::parks)
            && now_ms().saturating_sub(saga.created_at_ms) >= OrdersOptions::ms(self.ctx.options.park_after)
    }

    /// Parks `saga` for review: step `parked:<step>`, a lease that never ends (so the
    /// recovery worker never lists it again), the state kept as it was; counted and logged.
    async fn park(&self, saga: &SagaRecord, error: &OrdersError) {
        let transition = SagaTransition {
            step: format!("{PARKED}{}", saga.step),
            state: saga.state.clone(),
            lease_owner: PARKED_OWNER.to_string(),
            lease_until_ms: i64::MAX,
            finished: false,
        };
        match self
            .ctx
            .store
            .transition_saga(&saga.id, saga.version, transition, Vec::new())
            .await
        {
            Ok(_) => {
                STEPS.with_label_values(&[&saga.kind, &saga.step, "parked"]).inc();
                PARKED_TOTAL.with_label_values(&[&saga.kind]).inc();
                tracing::error!(saga = %saga.id, kind = %saga.kind, step = %saga.step, %error,
                    "saga kept failing past its bound; parked for review (not retried)");
            }
            Err(park_error) => {
                tracing::warn!(saga = %saga.id, %park_error, "parking the saga failed; it will be retried");
            }
        }
    }

    /// Makes this process the saga's lease holder, unless it is finished (returned as is)
    /// or someone else holds a live lease (`None`: in progress elsewhere).
    async fn acquire(&self, mut saga: SagaRecord) -> Result<Option<SagaRecord>, OrdersError> {
        let lease_ms = self.ctx.options.lease_ms();
        for _ in 0..3 {
            if saga.finished {
                return Ok(Some(saga));
            }
            if saga.step.starts_with(PARKED) {
                return Err(OrdersError::precondition(
                    SAGA_PARKED,
                    format!("saga {}", saga.id),
                    "this operation kept failing and is parked for review; it is not retried",
                ));
            }
            let now = now_ms();
            // Created (or last moved) by this process with plenty of lease left: ours
            // already, and the in-flight map guarantees no other driver here.
            if saga.lease_owner == self.owner && saga.lease_until_ms > now + lease_ms / 2 {
                return Ok(Some(saga));
            }
            let free =
                saga.lease_owner.is_empty() || saga.lease_owner == self.owner || saga.lease_until_ms <= now;
            if !free {
                return Ok(None);
            }
            let transition = SagaTransition {
                step: saga.step.clone(),
                state: saga.state.clone(),
                lease_owner: self.owner.clone(),
                lease_until_ms: now + lease_ms,
                finished: false,
            };
            match self
                .ctx
                .store
                .transition_saga(&saga.id, saga.version, transition, Vec::new())
                .await
            {
                Ok(taken) => return Ok(Some(taken)),
                Err(StoreError::VersionConflict { .. }) => {
                    saga = self
                        .ctx
                        .store
                        .get_saga(&saga.id)
                        .await?
                        .ok_or_else(|| OrdersError::Internal("saga vanished".into()))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(OrdersError::Conflict("the saga kept moving under us; retry"))
    }

    /// The crash hook: with `crash_after` naming this step (see
    /// [`SagaKind::is_crash_point`]), the process aborts right after the step was persisted.
    /// Off unless configured.
    fn fault_hook(&self, kind: &str, step: &str) {
        let Some(point) = &self.ctx.options.crash_after else {
            return;
        };
        if SagaKind::parse(kind).is_some_and(|kind| kind.is_crash_point(point, step)) {
            tracing::error!(%kind, %step, "fault hook: aborting the process after this step");
            std::process::abort();
        }
    }
}
