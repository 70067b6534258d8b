//! Checkout admission at the edge (docs/admission.md): before a new key is claimed, the
//! per-customer and per-SKU rate limits (shared through Redis, `holdfast_platform::admission`)
//! and the service's capacity decide whether it runs now, waits in the waiting room
//! ([`crate::waiting_room`]), or is refused with `RESOURCE_EXHAUSTED` and a retry delay.
//!
//! A key already claimed (a repeat, a checkout the waiting room started) or already waiting
//! is never counted again: a repeat finds its answer, its saga or its place.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use holdfast_platform::admission::{self, Limiter};
use holdfast_proto::orders::v1::{CheckoutOutcome, CheckoutRequest, CheckoutResponse, checkout_request};
use holdfast_store::{Enqueued, QueuedEntry};
use prometheus::{Histogram, IntCounterVec, IntGauge};
use tokio::sync::Notify;
use tonic::Status;

use crate::context::OrdersStore;
use crate::engine::Engine;
use crate::error::{KEY_REUSED, OrdersError};
use crate::saga::checkout::{self, StoredAnswer};

/// The waiting room's queue name in the store.
pub const QUEUE: &str = "checkout";
/// Checkouts the waiting room runs at once when no capacity is configured (drops only).
pub const DEFAULT_DRAIN: usize = 32;
/// What a checkout is assumed to take before one was measured, for estimated waits.
const INITIAL_CHECKOUT_MS: u64 = 500;

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_orders_checkout_admission_total",
        "New checkout keys by admission decision: admitted, queued, rate_limited, queue_full.",
        &["decision"]
    )
    .expect("registers once")
});

#[allow(clippy::expect_used)]
pub(crate) static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "holdfast_orders_checkout_queue_depth",
        "Checkouts waiting in the waiting room, as this process last counted."
    )
    .expect("registers once")
});

#[allow(clippy::expect_used)]
pub(crate) static QUEUE_WAIT: LazyLock<Histogram> = LazyLock::new(|| {
    prometheus::register_histogram!(
        "holdfast_orders_checkout_queue_wait_seconds",
        "Time a checkout waited in the waiting room before it started.",
        vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
    )
    .expect("registers once")
});

/// Capacity and bounds of the waiting room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Checkouts this process runs at once before new ones wait; 0: no limit (only drops
    /// wait).
    pub capacity: usize,
    /// Most checkouts waiting (over every replica); more are refused.
    pub queue_max: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            capacity: 0,
            queue_max: 10_000,
        }
    }
}

/// What admission says about one checkout request.
pub enum Admit {
    /// Answer this now (PENDING, or a refusal) without running anything.
    Answer(Box<Result<CheckoutResponse, Status>>),
    /// Run it (claim, saga) now; a new key holds its capacity slot until dropped.
    Run(Option<Slot>),
}

/// One running checkout counted against the capacity; freed on drop.
pub struct Slot {
    admission: Arc<AdmissionState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.inflight.fetch_sub(1, Ordering::AcqRel);
        self.admission.wake.notify_one();
    }
}

/// The counters the service and the waiting room share.
pub(crate) struct AdmissionState {
    pub(crate) inflight: AtomicUsize,
    pub(crate) wake: Notify,
    /// Smoothed checkout duration, ms (for estimated waits).
    avg_ms: AtomicU64,
    /// Keys the waiting room of this process is starting now.
    pub(crate) starting: Mutex<HashSet<String>>,
}

impl AdmissionState {
    /// Folds one checkout's duration into the smoothed average (weight 1/8).
    pub(crate) fn record_duration(&self, took: Duration) {
        let took = u64::try_from(took.as_millis()).unwrap_or(u64::MAX).max(1);
        let old = self.avg_ms.load(Ordering::Relaxed);
        self.avg_ms.store(
            (old.saturating_mul(7).saturating_add(took)) / 8,
            Ordering::Relaxed,
        );
    }
}

/// Checkout admission: limits, capacity and the waiting room of one process.
pub struct Admission<S> {
    pub(crate) engine: Arc<Engine<S>>,
    limiter: Option<Limiter>,
    pub(crate) settings: AdmissionSettings,
    pub(crate) state: Arc<AdmissionState>,
}

impl<S: OrdersStore> Admission<S> {
    /// Admission over `engine`'s store; `limiter` is the Checkout rate limiter (none: no
    /// rate limits, no drop flags).
    pub fn new(engine: Arc<Engine<S>>, limiter: Option<Limiter>, settings: AdmissionSettings) -> Self {
        Self {
            engine,
            limiter,
            settings,
            state: Arc::new(AdmissionState {
                inflight: AtomicUsize::new(0),
                wake: Notify::new(),
                avg_ms: AtomicU64::new(INITIAL_CHECKOUT_MS),
                starting: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn store(&self) -> &S {
        &self.engine.context().store
    }

    /// How many checkouts the waiting room runs at once.
    pub(crate) fn drain(&self) -> usize {
        if self.settings.capacity > 0 {
            self.settings.capacity
        } else {
            DEFAULT_DRAIN
        }
    }

    /// Takes a capacity slot (even over capacity: the caller decided to run).
    pub(crate) fn slot(&self) -> Slot {
        self.state.inflight.fetch_add(1, Ordering::AcqRel);
        Slot {
            admission: Arc::clone(&self.state),
        }
    }

    /// Takes a capacity slot if one is free (always, with no capacity configured).
    fn free_slot(&self) -> Option<Slot> {
        let capacity = self.settings.capacity;
        let taken = self
            .state
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (capacity == 0 || running < capacity).then_some(running + 1)
            });
        taken.is_ok().then(|| Slot {
            admission: Arc::clone(&self.state),
        })
    }

    /// A rough wait for the checkout at `position`: position times the recent checkout
    /// duration over the drain rate.
    fn estimate_ms(&self, position: u64) -> i64 {
        let avg = self.state.avg_ms.load(Ordering::Relaxed);
        let drain = self.drain() as u64;
        i64::try_from(position.saturating_mul(avg) / drain.max(1)).unwrap_or(i64::MAX)
    }

    /// The PENDING answer for `key` at `position` (0: running).
    pub(crate) fn pending(&self, key: &str, position: u64) -> CheckoutResponse {
        CheckoutResponse {
            outcome: CheckoutOutcome::Pending as i32,
            idempotency_key: key.to_string(),
            queue_position: position,
            estimated_wait_ms: if position == 0 {
                0
            } else {
                self.estimate_ms(position)
            },
            ..CheckoutResponse::default()
        }
    }

    /// Decides about a validated checkout request.
    pub async fn admit(&self, request: &CheckoutRequest) -> Result<Admit, OrdersError> {
        if self.limiter.is_none() && self.settings.capacity == 0 {
            // Nothing configured: nothing can wait, every checkout runs as before.
            return Ok(Admit::Run(None));
        }
        let key = &request.idempotency_key;
        // The queue, the key and the queue's depth in one read (one snapshot on SQLite; on
        // ScyllaDB the queue before the key, as in `lookup`: a key started from the waiting
        // room between the two reads is claimed before it leaves the queue).
        let standing = self.store().standing(QUEUE, checkout::SCOPE, key).await?;
        if let Some((entry, position)) = standing.waiting {
            return self
                .waiting(request, &entry, position)
                .map(|waiting| Admit::Answer(Box::new(Ok(waiting))));
        }
        if standing.claim.is_some() {
            return Ok(Admit::Run(None));
        }
        let mut drop = false;
        if let Some(limiter) = &self.limiter {
            let skus = skus_of(request);
            let decision = limiter.admit(&skus, Some(&request.customer_id)).await;
            if let Some(retry_after) = decision.retry_after {
                DECISIONS.with_label_values(&["rate_limited"]).inc();
                let subject = decision.limited_by.unwrap_or_else(|| "checkout".into());
                let refusal = admission::exhausted("checkout", &subject, retry_after);
                return Ok(Admit::Answer(Box::new(Err(refusal))));
            }
            drop = decision.drop;
        }
        // The slot is taken (or not) in one step after the queue was read: a check of the
        // count before an await let a storm's calls all see room and all run over capacity.
        // The depth is the one read before the rate limits (one Redis call earlier): a
        // checkout queued in between may see this one start first; the capacity holds.
        if !drop
            && standing.depth == 0
            && let Some(slot) = self.free_slot()
        {
            DECISIONS.with_label_values(&["admitted"]).inc();
            return Ok(Admit::Run(Some(slot)));
        }
        self.enqueue(request)
            .await
            .map(|answer| Admit::Answer(Box::new(answer)))
    }

    /// PENDING with its position for `request`, whose key waits as `entry` (refused if it
    /// waits with another payload).
    fn waiting(
        &self,
        request: &CheckoutRequest,
        entry: &QueuedEntry,
        position: u64,
    ) -> Result<CheckoutResponse, OrdersError> {
        let queued = CheckoutRequest::decode_from(&entry.payload)?;
        if checkout::fingerprint(&queued) != checkout::fingerprint(request) {
            return Err(key_reused(&request.idempotency_key));
        }
        Ok(self.pending(&request.idempotency_key, position))
    }

    async fn enqueue(
        &self,
        request: &CheckoutRequest,
    ) -> Result<Result<CheckoutResponse, Status>, OrdersError> {
        use prost::Message as _;
        let key = &request.idempotency_key;
        let outcome = self
            .store()
            .enqueue(QUEUE, key, request.encode_to_vec(), self.settings.queue_max)
            .await?;
        self.state.wake.notify_one();
        match outcome {
            Enqueued::Added { position, .. } => {
                DECISIONS.with_label_values(&["queued"]).inc();
                Ok(Ok(self.pending(key, position)))
            }
            Enqueued::Existing { position, entry } => {
                let queued = CheckoutRequest::decode_from(&entry.payload)?;
                if checkout::fingerprint(&queued) != checkout::fingerprint(request) {
                    return Err(key_reused(key));
                }
                Ok(Ok(self.pending(key, position)))
            }
            Enqueued::Full { depth } => {
                DECISIONS.with_label_values(&["queue_full"]).inc();
                let retry_after = Duration::from_millis(
                    u64::try_from(self.estimate_ms(depth.min(self.drain() as u64)))
                        .unwrap_or(1000)
                        .max(100),
                );
                Ok(Err(admission::exhausted("checkout", "waiting room", retry_after)))
            }
        }
    }

    /// GetCheckout: the key's stored answer, PENDING with its place or running, or
    /// NOT_FOUND.
    ///
    /// The queue and the key are one read ([`holdfast_store::StandingStore`]): one snapshot
    /// on SQLite, the queue first on ScyllaDB. The waiting room claims a key before it
    /// dequeues it, so a key no longer queued has its claim already. Read the other way
    /// round, a start between the two reads (claim, then dequeue) answered NOT_FOUND for a
    /// queued key.
    pub async fn lookup(&self, key: &str) -> Result<Result<CheckoutResponse, Status>, OrdersError> {
        let standing = self.store().standing(QUEUE, checkout::SCOPE, key).await?;
        if let Some((_, position)) = standing.waiting {
            return Ok(Ok(self.pending(key, position)));
        }
        match standing.claim {
            Some(record) => Ok(match record.response {
                Some(answer) => StoredAnswer::decode(&answer)?.into_result(),
                None => Ok(self.pending(key, 0)),
            }),
            None => Err(OrdersError::NotFound(format!("checkout {key:?}"))),
        }
    }
}

/// The SKUs of an explicit-lines checkout, each once (a cart checkout names none before
/// its cart is read: only the customer's limit applies to it).
fn skus_of(request: &CheckoutRequest) -> Vec<&str> {
    let mut skus: Vec<&str> = match &request.source {
        Some(checkout_request::Source::Lines(lines)) => lines.lines.iter().map(|l| l.sku.as_str()).collect(),
        _ => Vec::new(),
    };
    skus.sort_unstable();
    skus.dedup();
    skus
}

fn key_reused(key: &str) -> OrdersError {
    OrdersError::precondition(
        KEY_REUSED,
        format!("idempotency_key {key}"),
        "this idempotency_key was used with a different request; use a new key",
    )
}

/// Decoding a queued request.
trait DecodeQueued: Sized {
    fn decode_from(bytes: &[u8]) -> Result<Self, OrdersError>;
}

impl DecodeQueued for CheckoutRequest {
    fn decode_from(bytes: &[u8]) -> Result<Self, OrdersError> {
        use prost::Message as _;
        CheckoutRequest::decode(bytes).map_err(|_| OrdersError::Internal("queued checkout is corrupt".into()))
    }
}

/// Keeps the slot of a key being started from the waiting room from being listed twice.
pub(crate) fn starting(state: &AdmissionState) -> std::sync::MutexGuard<'_, HashSet<String>> {
    state.starting.lock().unwrap_or_else(PoisonError::into_inner)
}
