//! Coalescing of calls per key (a group commit for Redis): the Reserves that arrive for one
//! bucket while a script is in flight there go out together in the next call.
//!
//! Leader/follower, no timer. The first caller on an idle lane leads: it runs its own item at
//! once (a batch of one at low load). Callers arriving meanwhile queue. When the leader's call
//! returns it passes the lead to the oldest queued caller together with up to `cap` queued
//! items (arrival order), then hands out the answers. A caller whose future is dropped
//! (deadline, client gone) never strands the lane: the lead is a value whose `Drop` passes it
//! on. A failed call fails every caller in it with a copy of the error; an interrupted one
//! fails them with UNAVAILABLE. Their retries are safe because every item is idempotent by
//! reservation id inside the script.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::InventoryError;

/// Lanes kept before the map is cleared (a catalog-wide burst must not grow it without
/// bound; a lane dropped while busy only means two leaders for a moment, which the atomic
/// scripts make harmless).
const LANES_LIMIT: usize = 100_000;

/// Per-key batcher of `I` items answered by `O`.
pub struct Batcher<I, O> {
    lanes: Mutex<HashMap<String, Arc<Lane<I, O>>>>,
    cap: usize,
    /// Told the size of every call (a metric).
    observe: fn(usize),
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

struct Lane<I, O> {
    state: Mutex<LaneState<I, O>>,
    cap: usize,
}

struct LaneState<I, O> {
    queue: VecDeque<Entry<I, O>>,
    leading: bool,
}

struct Entry<I, O> {
    item: I,
    /// `None` for the leader's own item (it gets its answer directly).
    tx: Option<oneshot::Sender<Msg<I, O>>>,
}

enum Msg<I, O> {
    Done(Result<O, InventoryError>),
    Lead(Lead<I, O>),
}

/// The right to run a lane's next call, with the items of that call. Dropped, it passes
/// itself on (after putting back items it did not run), so a cancelled leader never stalls
/// the lane.
struct Lead<I, O> {
    lane: Arc<Lane<I, O>>,
    batch: Vec<Entry<I, O>>,
    armed: bool,
}

impl<I, O> Drop for Lead<I, O> {
    fn drop(&mut self) {
        if self.armed {
            let mut unrun = std::mem::take(&mut self.batch);
            // The first entry is its (gone) leader's own item: nobody waits for it.
            unrun.retain(|entry| entry.tx.is_some());
            Lane::pass(&self.lane, unrun);
        }
    }
}

impl<I, O> Lane<I, O> {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState<I, O>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the lead to the oldest queued caller with the next batch, or marks the lane idle.
    fn pass(lane: &Arc<Self>, mut requeue: Vec<Entry<I, O>>) {
        loop {
            let mut batch: Vec<Entry<I, O>> = {
                let mut state = lane.lock();
                for entry in requeue.drain(..).rev() {
                    state.queue.push_front(entry);
                }
                if state.queue.is_empty() {
                    state.leading = false;
                    return;
                }
                let take = state.queue.len().min(lane.cap);
                state.queue.drain(..take).collect()
            };
            let Some(tx) = batch[0].tx.take() else {
                // Cannot happen (only leaders' items lack a sender, and they are never queued);
                // drop it rather than stall.
                batch.remove(0);
                requeue = batch;
                continue;
            };
            let lead = Lead {
                lane: Arc::clone(lane),
                batch,
                armed: true,
            };
            match tx.send(Msg::Lead(lead)) {
                Ok(()) => return,
                Err(Msg::Lead(mut lead)) => {
                    // That caller is gone: skip it, the others go back to the front.
                    lead.armed = false;
                    let mut rest = std::mem::take(&mut lead.batch);
                    rest.remove(0);
                    requeue = rest;
                }
                Err(Msg::Done(_)) => return,
            }
        }
    }
}

impl<I, O> Batcher<I, O> {
    /// A batcher whose calls carry at most `cap` items; `observe` is told each call's size.
    pub fn new(cap: usize, observe: fn(usize)) -> Self {
        Self {
            lanes: Mutex::default(),
            cap: cap.max(1),
            observe,
        }
    }

    fn lane(&self, key: &str) -> Arc<Lane<I, O>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lane) = lanes.get(key) {
            return Arc::clone(lane);
        }
        if lanes.len() >= LANES_LIMIT {
            lanes.clear();
        }
        let lane = Arc::new(Lane {
            state: Mutex::new(LaneState {
                queue: VecDeque::new(),
                leading: false,
            }),
            cap: self.cap,
        });
        lanes.insert(key.to_string(), Arc::clone(&lane));
        lane
    }

    /// Callers on lane `key` right now: the one whose call is in flight (if any) plus those
    /// queued behind it.
    pub fn waiting(&self, key: &str) -> usize {
        let lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes.get(key).map_or(0, |lane| {
            let state = lane.lock();
            state.queue.len() + usize::from(state.leading)
        })
    }

    /// Submits `item` on the lane `key` and waits for its answer. If this caller leads, it
    /// runs `run` on the batch (its own item first, then followers' in arrival order); `run`
    /// must answer one `O` per item, in order.
    pub async fn submit<F, Fut>(&self, key: &str, item: I, run: F) -> Result<O, InventoryError>
    where
        F: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = Result<Vec<O>, InventoryError>>,
    {
        let lane = self.lane(key);
        // Decided under the lane's lock, awaited outside it.
        let role = {
            let mut state = lane.lock();
            if state.leading {
                let (tx, rx) = oneshot::channel();
                state.queue.push_back(Entry { item, tx: Some(tx) });
                Err(rx)
            } else {
                state.leading = true;
                Ok(Entry { item, tx: None })
            }
        };
        let mut lead = match role {
            Ok(own) => Lead {
                lane: Arc::clone(&lane),
                batch: vec![own],
                armed: true,
            },
            Err(rx) => match rx.await {
                Ok(Msg::Done(answer)) => return answer,
                Ok(Msg::Lead(lead)) => lead,
                Err(_) => return Err(interrupted()),
            },
        };
        let batch = std::mem::take(&mut lead.batch);
        let mut items = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for entry in batch {
            items.push(entry.item);
            waiters.push(entry.tx);
        }
        (self.observe)(items.len());
        let result = run(items).await;
        // The next batch starts before this one's answers are handed out.
        drop(lead);
        let answers = match result {
            Ok(answers) if answers.len() == waiters.len() => answers,
            Ok(answers) => {
                let detail = format!("{} answers for {} items", answers.len(), waiters.len());
                return fail_all(
                    waiters,
                    &InventoryError::Protocol {
                        script: "reserve_batch.lua",
                        detail,
                    },
                );
            }
            Err(error) => return fail_all(waiters, &error),
        };
        let mut own = None;
        for (waiter, answer) in waiters.into_iter().zip(answers) {
            match waiter {
                Some(tx) => {
                    let _ = tx.send(Msg::Done(Ok(answer)));
                }
                None => own = Some(answer),
            }
        }
        own.ok_or_else(interrupted)
    }
}

fn fail_all<I, O>(
    waiters: Vec<Option<oneshot::Sender<Msg<I, O>>>>,
    error: &InventoryError,
) -> Result<O, InventoryError> {
    for tx in waiters.into_iter().flatten() {
        let _ = tx.send(Msg::Done(Err(duplicate(error))));
    }
    Err(duplicate(error))
}

/// The error of a batch whose leader was dropped before it answered: Redis may or may not
/// have run it, so the caller retries (idempotent by reservation id).
fn interrupted() -> InventoryError {
    InventoryError::Redis(fred::error::Error::new(
        fred::error::ErrorKind::IO,
        "reserve batch interrupted before it answered",
    ))
}

/// A copy of a batch's error for each of its callers.
fn duplicate(error: &InventoryError) -> InventoryError {
    match error {
        InventoryError::Redis(e) => InventoryError::Redis(e.clone()),
        InventoryError::Script { script, detail } => InventoryError::Script {
            script,
            detail: detail.clone(),
        },
        InventoryError::Backpressure(s) => InventoryError::Backpressure(s.clone()),
        InventoryError::Rebuilding(s) => InventoryError::Rebuilding(s.clone()),
        InventoryError::Busy(s) => InventoryError::Busy(s.clone()),
        InventoryError::Store(s) => InventoryError::Store(s.clone()),
        other => InventoryError::Protocol {
            script: "reserve_batch.lua",
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn batcher_runs_alone_at_low_load() {
        let batcher: Batcher<u32, u32> = Batcher::new(8, |_| {});
        let calls = AtomicUsize::new(0);
        for i in 0..3 {
            let answer = batcher
                .submit("k", i, |items| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(items, vec![i], "a lone caller runs its own item at once");
                    async move { Ok(items.iter().map(|x| x * 10).collect()) }
                })
                .await
                .expect("answered");
            assert_eq!(answer, i * 10);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batcher_coalesces_in_arrival_order_and_caps_batches() {
        let batcher: Arc<Batcher<u32, u32>> = Arc::new(Batcher::new(4, |_| {}));
        let seen: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (release, gate) = tokio::sync::watch::channel(false);
        // The first caller leads and blocks until the others have queued.
        let first = {
            let (batcher, seen, mut gate) = (batcher.clone(), seen.clone(), gate.clone());
            tokio::spawn(async move {
                batcher
                    .submit("k", 0, |items| async move {
                        let _ = gate.wait_for(|open| *open).await;
                        seen.lock().unwrap().push(items.clone());
                        Ok(items)
                    })
                    .await
            })
        };
        while !batcher.lane("k").lock().leading {
            tokio::task::yield_now().await;
        }
        let mut followers = Vec::new();
        for i in 1..=9u32 {
            let (follower, seen) = (batcher.clone(), seen.clone());
            followers.push(tokio::spawn(async move {
                follower
                    .submit("k", i, |items| async move {
                        seen.lock().unwrap().push(items.clone());
                        Ok(items)
                    })
                    .await
            }));
            // Queue in a known order.
            while batcher.lane("k").lock().queue.len() < i as usize {
                tokio::task::yield_now().await;
            }
        }
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (i, follower) in followers.into_iter().enumerate() {
            assert_eq!(
                follower.await.unwrap().unwrap(),
                i as u32 + 1,
                "each caller gets its own answer"
            );
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, vec![vec![0], vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9]]);
        assert!(!batcher.lane("k").lock().leading, "idle again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batcher_fails_a_batch_cleanly_and_survives_a_dropped_leader() {
        let batcher: Arc<Batcher<u32, u32>> = Arc::new(Batcher::new(8, |_| {}));
        // A leader whose future is dropped mid-call.
        let stuck = {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                batcher
                    .submit("k", 0, |_| async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(vec![0])
                    })
                    .await
            })
        };
        while !batcher.lane("k").lock().leading {
            tokio::task::yield_now().await;
        }
        let queued = {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                batcher
                    .submit("k", 1, |items| async move {
                        Err::<Vec<u32>, _>(InventoryError::Backpressure(format!("{items:?}")))
                    })
                    .await
            })
        };
        while batcher.lane("k").lock().queue.is_empty() {
            tokio::task::yield_now().await;
        }
        stuck.abort();
        // The queued caller takes the lead and its failure is its answer, not a hang.
        match queued.await.unwrap() {
            Err(InventoryError::Backpressure(items)) => assert_eq!(items, "[1]"),
            other => panic!("expected the batch's error, got {other:?}"),
        }
        let after = batcher.submit("k", 2, |items| async move { Ok(items) }).await;
        assert_eq!(after.unwrap(), 2, "the lane still serves");
    }
}
