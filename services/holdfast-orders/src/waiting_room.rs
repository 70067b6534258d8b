//! The waiting room's worker: starts queued checkouts in arrival order, as many at once as
//! the capacity leaves free, each exactly once (docs/admission.md).
//!
//! Starting one is the normal path of a checkout: claim its key (insert-if-absent, the
//! saga id fixed by the first claim), create its saga, and only then take it out of the
//! queue. A process killed anywhere in between leaves the entry queued or the saga
//! created (or both): the next worker repeats the claim (it finds the same saga) and the
//! recovery worker resumes the saga, so nothing is lost and nothing runs twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_proto::orders::v1::CheckoutRequest;
use holdfast_store::QueuedEntry;
use prost::Message as _;

use crate::admission::{Admission, QUEUE, QUEUE_DEPTH, QUEUE_WAIT, starting};
use crate::context::{OrdersStore, now_ms};
use crate::saga::checkout;

/// How often the worker looks at the queue when nothing woke it (another replica's
/// arrivals, a store that was down).
const POLL: Duration = Duration::from_millis(200);

/// Runs the waiting room forever.
pub async fn run<S: OrdersStore>(admission: Arc<Admission<S>>) {
    loop {
        if let Err(error) = tick(&admission).await {
            tracing::warn!(%error, "waiting room: could not read the queue; retrying");
        }
        let _ = tokio::time::timeout(POLL, admission.state.wake.notified()).await;
    }
}

/// One look at the queue: starts as many head entries as there are free slots.
async fn tick<S: OrdersStore>(admission: &Arc<Admission<S>>) -> Result<(), holdfast_store::StoreError> {
    let store = &admission.engine.context().store;
    let depth = store.queue_depth(QUEUE).await?;
    QUEUE_DEPTH.set(i64::try_from(depth).unwrap_or(i64::MAX));
    if depth == 0 {
        return Ok(());
    }
    let inflight = admission
        .state
        .inflight
        .load(std::sync::atomic::Ordering::Acquire);
    let free = admission.drain().saturating_sub(inflight);
    if free == 0 {
        return Ok(());
    }
    let limit = u32::try_from(free.min(1000)).unwrap_or(1000);
    let head = store.queue_head(QUEUE, limit).await?;
    for entry in head {
        if !starting(&admission.state).insert(entry.key.clone()) {
            continue;
        }
        let slot = admission.slot();
        let admission = Arc::clone(admission);
        tokio::spawn(async move {
            let key = entry.key.clone();
            start(&admission, entry).await;
            starting(&admission.state).remove(&key);
            drop(slot);
        });
    }
    Ok(())
}

/// Starts one queued checkout and runs it to its end.
async fn start<S: OrdersStore>(admission: &Admission<S>, entry: QueuedEntry) {
    let ctx = admission.engine.context();
    let Ok(request) = CheckoutRequest::decode(entry.payload.as_slice()) else {
        tracing::error!(key = %entry.key, "waiting room: a queued checkout is corrupt; dropping it");
        let _ = ctx.store.dequeue(QUEUE, &entry.key).await;
        return;
    };
    let began = Instant::now();
    let saga = match checkout::claim(ctx, &request).await {
        Ok(checkout::Claim::Answered(_)) => None,
        Ok(checkout::Claim::Run(new)) => match admission.engine.open(new).await {
            Ok(saga) => Some(saga),
            Err(error) => {
                tracing::warn!(key = %entry.key, %error, "waiting room: could not start a checkout; it stays queued");
                return;
            }
        },
        Err(error) => {
            // A key taken by another payload meanwhile (its own answer stands), or a store
            // error (the entry stays and is tried again).
            if matches!(error, crate::OrdersError::Precondition { .. }) {
                tracing::warn!(key = %entry.key, %error, "waiting room: key already used; dropping the queued request");
                let _ = ctx.store.dequeue(QUEUE, &entry.key).await;
            } else {
                tracing::warn!(key = %entry.key, %error, "waiting room: could not claim a checkout; it stays queued");
            }
            return;
        }
    };
    // The saga exists (or the key has its answer): the entry has done its job.
    if let Err(error) = ctx.store.dequeue(QUEUE, &entry.key).await {
        tracing::warn!(key = %entry.key, %error, "waiting room: started a checkout but could not dequeue it; the next start finds its saga");
    }
    QUEUE_WAIT.observe(((now_ms() - entry.enqueued_at_ms).max(0) as f64) / 1000.0);
    if let Some(saga) = saga
        && let Err(error) = admission.engine.run_to_end(saga).await
    {
        // The recovery worker resumes it once its lease lapses.
        tracing::warn!(key = %entry.key, %error, "waiting room: checkout stopped; recovery resumes it");
    }
    admission.state.record_duration(began.elapsed());
}
