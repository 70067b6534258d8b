//! The load engine behind every scenario and benchmark.
//!
//! Two ways to send load:
//! - **open loop** ([`Arrival::Open`]): attempt `i` is scheduled at `start + i / rate`
//!   whatever the server does, and its latency is measured from that *scheduled* time. A slow
//!   server therefore cannot slow the load down and hide its own queueing (no coordinated
//!   omission): time an attempt spends waiting to be sent counts against the server.
//! - **closed loop** ([`Arrival::Closed`]): `concurrency` workers each send their next attempt
//!   when the previous one answered, latency from the send: the maximum throughput at that
//!   concurrency.
//!
//! Latencies go to HDR histograms (microseconds, 3 significant digits) per operation and
//! overall; a ticker keeps a per-second timeline and drives the live progress bar.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

/// Longest latency recorded, in microseconds (one hour); longer ones saturate.
const MAX_MICROS: u64 = 3_600_000_000;

/// An empty latency histogram (microseconds).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("bounds are valid")
}

/// How attempts arrive.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Arrival {
    /// Attempts scheduled on a clock at `rate` per second; latency from the scheduled time.
    /// At most `max_in_flight` run at once: an attempt waiting for room counts the wait.
    Open {
        /// Attempts per second.
        rate: f64,
        /// Most attempts in flight.
        max_in_flight: usize,
    },
    /// `concurrency` workers back to back; latency from the send.
    Closed {
        /// Workers.
        concurrency: usize,
    },
}

impl std::fmt::Display for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arrival::Open { rate, .. } => write!(f, "open loop at {rate} attempts/s"),
            Arrival::Closed { concurrency } => write!(f, "closed loop, {concurrency} workers"),
        }
    }
}

/// One measured phase: how attempts arrive and when to stop (at least one of `attempts` and
/// `duration`).
#[derive(Debug, Clone)]
pub struct Plan {
    /// How attempts arrive.
    pub arrival: Arrival,
    /// Stop after this many attempts.
    pub attempts: Option<u64>,
    /// Stop scheduling (open loop) or sending (closed loop) after this long.
    pub duration: Option<Duration>,
    /// Shown in front of the progress bar.
    pub label: String,
    /// Draw the progress bar (on a terminal) or a line every few seconds (otherwise).
    pub progress: bool,
}

/// What one attempt came to, as the scenario classifies it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The operation, e.g. `"Reserve"`; one histogram each.
    pub op: &'static str,
    /// Its outcome.
    pub outcome: Outcome,
}

/// The outcome of an attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An answer, business refusals included (`"reserved"`, `"insufficient_stock"`).
    Answer(&'static str),
    /// A failed call: the gRPC code's name, or what was wrong with the answer.
    Error(String),
}

impl Sample {
    /// An answer labelled `label`.
    pub fn answer(op: &'static str, label: &'static str) -> Self {
        Self {
            op,
            outcome: Outcome::Answer(label),
        }
    }

    /// A failed call.
    pub fn error(op: &'static str, status: &tonic::Status) -> Self {
        Self {
            op,
            outcome: Outcome::Error(code_name(status.code()).to_string()),
        }
    }

    /// An answer the harness judged wrong (counted as an error, labelled `what`).
    pub fn wrong(op: &'static str, what: &str) -> Self {
        Self {
            op,
            outcome: Outcome::Error(what.to_string()),
        }
    }
}

/// The canonical name of a gRPC status code (`UNAVAILABLE`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One operation's tally.
#[derive(Debug, Clone)]
pub struct OpTally {
    /// Latency, microseconds.
    pub latency: Histogram<u64>,
    /// Answers by label.
    pub answers: BTreeMap<&'static str, u64>,
    /// Errors by code or label.
    pub errors: BTreeMap<String, u64>,
}

impl OpTally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            answers: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Attempts recorded.
    pub fn count(&self) -> u64 {
        self.latency.len()
    }
}

/// One second (or the last, shorter interval) of a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimelinePoint {
    /// End of the interval, seconds since the start.
    pub t_s: f64,
    /// Attempts completed per second in the interval.
    pub rate: f64,
    /// Median latency of the interval's attempts, ms.
    pub p50_ms: f64,
    /// 99th percentile of the interval's attempts, ms.
    pub p99_ms: f64,
    /// Attempts that failed in the interval.
    pub errors: u64,
}

struct Tally {
    ops: BTreeMap<&'static str, OpTally>,
    all: Histogram<u64>,
    window: Histogram<u64>,
    window_errors: u64,
    errors: u64,
}

/// Where attempts are recorded; shared by every in-flight attempt and the ticker.
struct Recorder {
    tally: Mutex<Tally>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            tally: Mutex::new(Tally {
                ops: BTreeMap::new(),
                all: histogram(),
                window: histogram(),
                window_errors: 0,
                errors: 0,
            }),
        }
    }

    fn record(&self, sample: Sample, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut tally = self.tally.lock().expect("recorder lock");
        tally.all.saturating_record(micros);
        tally.window.saturating_record(micros);
        let op = tally.ops.entry(sample.op).or_insert_with(OpTally::new);
        op.latency.saturating_record(micros);
        match sample.outcome {
            Outcome::Answer(label) => *op.answers.entry(label).or_default() += 1,
            Outcome::Error(label) => {
                *op.errors.entry(label).or_default() += 1;
                tally.errors += 1;
                tally.window_errors += 1;
            }
        }
    }

    /// The interval since the last call: (attempts, errors, p50 ms, p99 ms, total completed).
    fn take_window(&self) -> (u64, u64, f64, f64, u64) {
        let mut tally = self.tally.lock().expect("recorder lock");
        let count = tally.window.len();
        let ms = |q: f64| tally.window.value_at_quantile(q) as f64 / 1000.0;
        let (p50, p99) = if count > 0 {
            (ms(0.5), ms(0.99))
        } else {
            (0.0, 0.0)
        };
        let errors = tally.window_errors;
        tally.window.reset();
        tally.window_errors = 0;
        (count, errors, p50, p99, tally.all.len())
    }
}

/// What a phase measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// How attempts arrived.
    pub arrival: Arrival,
    /// From the first scheduled attempt to the last answer.
    pub elapsed: Duration,
    /// Per operation.
    pub ops: BTreeMap<&'static str, OpTally>,
    /// Every attempt's latency, microseconds.
    pub all: Histogram<u64>,
    /// Attempts that failed.
    pub errors: u64,
    /// Per-second intervals.
    pub timeline: Vec<TimelinePoint>,
    /// How far behind its schedule the latest-sent attempt went out (open loop; zero for
    /// closed loop). Large values mean the target (or this generator) could not keep up, and
    /// the latencies include that wait.
    pub max_send_lag: Duration,
}

impl LoadResult {
    /// Attempts completed.
    pub fn completed(&self) -> u64 {
        self.all.len()
    }

    /// Completed attempts per second.
    pub fn throughput(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `call(i)` for attempts `i = 0, 1, ...` as `plan` says and measures them.
pub async fn run<F, Fut>(plan: &Plan, call: F) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Sample> + Send + 'static,
{
    assert!(
        plan.attempts.is_some() || plan.duration.is_some(),
        "a plan stops after a count or a duration"
    );
    let call = Arc::new(call);
    let recorder = Arc::new(Recorder::new());
    let started = Instant::now();
    let progress = Progress::start(plan, recorder.clone(), started);
    let max_send_lag = match plan.arrival {
        Arrival::Open { rate, max_in_flight } => {
            open_loop(plan, rate, max_in_flight, call, recorder.clone(), started).await
        }
        Arrival::Closed { concurrency } => {
            closed_loop(plan, concurrency, call, recorder.clone(), started).await;
            Duration::ZERO
        }
    };
    let elapsed = started.elapsed();
    let timeline = progress.finish().await;
    // Every attempt is recorded (all permits are back, all workers joined); a finished task
    // may still be dropping its handle on the recorder, so take the tally rather than unwrap.
    let tally = std::mem::replace(
        &mut *recorder.tally.lock().expect("recorder lock"),
        Recorder::new().tally.into_inner().expect("fresh lock"),
    );
    LoadResult {
        arrival: plan.arrival,
        elapsed,
        ops: tally.ops,
        all: tally.all,
        errors: tally.errors,
        timeline,
        max_send_lag,
    }
}

async fn open_loop<F, Fut>(
    plan: &Plan,
    rate: f64,
    max_in_flight: usize,
    call: Arc<F>,
    recorder: Arc<Recorder>,
    started: Instant,
) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let room = Arc::new(Semaphore::new(max_in_flight));
    let mut max_lag = Duration::ZERO;
    for i in 0u64.. {
        if plan.attempts.is_some_and(|n| i >= n) {
            break;
        }
        let offset = Duration::from_secs_f64(i as f64 / rate);
        if plan.duration.is_some_and(|d| offset >= d) {
            break;
        }
        let scheduled = started + offset;
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled).await;
        }
        let permit = room.clone().acquire_owned().await.expect("never closed");
        max_lag = max_lag.max(Instant::now().saturating_duration_since(scheduled));
        let (call, recorder) = (call.clone(), recorder.clone());
        tokio::spawn(async move {
            let sample = call(i).await;
            recorder.record(sample, scheduled.elapsed());
            drop(permit);
        });
    }
    // Every permit back means every attempt has been recorded.
    let _all = room
        .acquire_many(max_in_flight as u32)
        .await
        .expect("never closed");
    max_lag
}

async fn closed_loop<F, Fut>(
    plan: &Plan,
    concurrency: usize,
    call: Arc<F>,
    recorder: Arc<Recorder>,
    started: Instant,
) where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let deadline = plan.duration.map(|d| started + d);
    let attempts = plan.attempts;
    let workers = (0..concurrency.max(1)).map(|_| {
        let (call, recorder, next) = (call.clone(), recorder.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if attempts.is_some_and(|n| i >= n) {
                    return;
                }
                let sent = Instant::now();
                let sample = call(i).await;
                recorder.record(sample, sent.elapsed());
            }
        })
    });
    for worker in futures::future::join_all(workers).await {
        if let Err(e) = worker
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The ticker: a timeline point every second, the progress bar (on a terminal) or a line every
/// five seconds (otherwise).
struct Progress {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<TimelinePoint>>,
}

impl Progress {
    fn start(plan: &Plan, recorder: Arc<Recorder>, started: Instant) -> Self {
        let expected = match (plan.attempts, plan.duration, plan.arrival) {
            (Some(n), _, _) => Some(n),
            (None, Some(d), Arrival::Open { rate, .. }) => Some((d.as_secs_f64() * rate) as u64),
            _ => None,
        };
        let bar = if plan.progress && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(expected, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let template = if expected.is_some() {
            "{prefix} {elapsed_precise} [{bar:28}] {human_pos}/{human_len} {msg}"
        } else {
            "{prefix} {elapsed_precise} {human_pos} done {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(plan.label.clone());
        let lines = plan.progress && !std::io::stderr().is_terminal();
        let label = plan.label.clone();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut timeline = Vec::new();
            let mut ticks =
                tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
            let mut last = started;
            loop {
                let done = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = &mut stopped => true,
                };
                let now = Instant::now();
                let dt = now.duration_since(last).as_secs_f64();
                last = now;
                let (count, errors, p50, p99, completed) = recorder.take_window();
                if !done || count > 0 {
                    timeline.push(TimelinePoint {
                        t_s: now.duration_since(started).as_secs_f64(),
                        rate: count as f64 / dt.max(1e-3),
                        p50_ms: p50,
                        p99_ms: p99,
                        errors,
                    });
                }
                let message = format!(
                    "{:>7.0}/s  p99 {:>8.2} ms  errors {errors}",
                    count as f64 / dt.max(1e-3),
                    p99
                );
                bar.set_position(completed);
                bar.set_message(message.clone());
                if lines && timeline.len() % 5 == 0 && !done {
                    eprintln!(
                        "{label} {:>4.0}s  {completed} done  {message}",
                        now.duration_since(started).as_secs_f64()
                    );
                }
                if done {
                    bar.finish_and_clear();
                    return timeline;
                }
            }
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<TimelinePoint> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(arrival: Arrival, attempts: u64) -> Plan {
        Plan {
            arrival,
            attempts: Some(attempts),
            duration: None,
            label: "test".into(),
            progress: false,
        }
    }

    // A server that takes 10 ms per call and serves one call at a time, offered 1,000 calls
    // a second: the open loop must charge the queueing to the server (latency grows with the
    // backlog), where a closed loop would report a flat 10 ms.
    #[tokio::test(start_paused = true)]
    async fn open_loop_measures_from_the_scheduled_time() {
        let server = Arc::new(tokio::sync::Mutex::new(()));
        let call = move |_| {
            let server = server.clone();
            async move {
                let _busy = server.lock().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                Sample::answer("Call", "ok")
            }
        };
        let open = run(
            &plan(
                Arrival::Open {
                    rate: 1000.0,
                    max_in_flight: 1000,
                },
                100,
            ),
            call.clone(),
        )
        .await;
        // The 100th call was scheduled at 99 ms and answered at ~1,000 ms.
        assert!(open.all.max() >= 850_000, "max {} us", open.all.max());
        assert!(open.all.value_at_quantile(0.5) >= 400_000);
        let closed = run(&plan(Arrival::Closed { concurrency: 1 }, 100), call).await;
        assert!(closed.all.max() < 12_000, "max {} us", closed.all.max());
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_waiting_for_room_counts_as_latency() {
        // One call in flight at a time: the rest wait for room, and that wait is latency.
        let call = |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Sample::answer("Call", "ok")
        };
        let result = run(
            &plan(
                Arrival::Open {
                    rate: 1000.0,
                    max_in_flight: 1,
                },
                50,
            ),
            call,
        )
        .await;
        assert_eq!(result.completed(), 50);
        assert!(result.all.max() >= 400_000, "max {} us", result.all.max());
        assert!(result.max_send_lag >= Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn run_tallies_answers_and_errors_per_operation() {
        let call = |i: u64| async move {
            if i.is_multiple_of(4) {
                Sample::error("Get", &tonic::Status::unavailable("shed"))
            } else if i.is_multiple_of(2) {
                Sample::answer("Put", "applied")
            } else {
                Sample::answer("Get", "found")
            }
        };
        let result = run(&plan(Arrival::Closed { concurrency: 3 }, 100), call).await;
        assert_eq!(result.completed(), 100);
        assert_eq!(result.errors, 25);
        assert_eq!(result.ops["Get"].errors["UNAVAILABLE"], 25);
        assert_eq!(result.ops["Get"].answers["found"], 50);
        assert_eq!(result.ops["Put"].answers["applied"], 25);
    }

    #[tokio::test(start_paused = true)]
    async fn a_duration_bounds_an_open_loop() {
        let call = |_| async { Sample::answer("Call", "ok") };
        let result = run(
            &Plan {
                arrival: Arrival::Open {
                    rate: 200.0,
                    max_in_flight: 10,
                },
                attempts: None,
                duration: Some(Duration::from_secs(2)),
                label: "test".into(),
                progress: false,
            },
            call,
        )
        .await;
        assert_eq!(result.completed(), 400);
        assert!(result.timeline.len() >= 2);
    }
}
