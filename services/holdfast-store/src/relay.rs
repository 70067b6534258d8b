//! The outbox relay every service with an outbox runs: publish pending events in id
//! order, and mark them sent only once the publisher (the event bus) took them.
//!
//! [`run_to_bus`] is the relay the services run: it turns each row into a bus [`Event`]
//! ([`to_event`]) and hands it to an [`EventBus`], telling the caller how each batch ended
//! (for its metrics). [`run`] is the loop underneath, for a caller that publishes some other
//! way. A crash between a publish and its mark publishes the same events again on the next
//! run: duplicates are possible and harmless, since consumers dedupe by event id; nothing is
//! ever lost, since a row leaves the outbox only after a successful publish.
//!
//! Publishing is pipelined: `publish` answers in two steps (the batch handed to the bus in
//! order, then the bus confirming it), and while up to [`RelayOptions::in_flight`] batches
//! wait for their confirmation the relay reads and hands over the next ones, so an event
//! written meanwhile waits for one read, not for a whole publish-and-mark cycle. Batches are
//! handed over one after another, so the bus gets every event in id order; each batch is
//! marked sent once it is confirmed. A batch that fails is not marked: the relay lets the
//! batches after it settle (those confirmed are marked), waits, and reads again from the
//! oldest unsent row, so the failed batch's events go out again after the later ones (as an
//! event that failed within one batch always did; consumers dedupe and keep their own per-key
//! versions where order matters).
//!
//! One relay per outbox is enough: it publishes every service's rows, whoever wrote them.
//! Two relays over one outbox (two processes on one store) are safe but publish some
//! events twice while both are busy.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use holdfast_platform::events::{Event, EventBus};
use tokio::sync::Notify;

use crate::{OutboxMessage, OutboxStore};

/// Batch size, pipelining and waits.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Most events read and published at once.
    pub batch: u32,
    /// Most batches handed to the bus and not yet confirmed (at least 1; 1 publishes one
    /// batch at a time).
    pub in_flight: usize,
    /// With nothing pending, how long to wait for a wake-up before looking again (a
    /// writer in another process cannot wake us).
    pub idle_wait: Duration,
    /// After a failed read, publish or mark, how long to wait before trying again.
    pub retry_wait: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch: 256,
            in_flight: 4,
            idle_wait: Duration::from_millis(500),
            retry_wait: Duration::from_millis(500),
        }
    }
}

/// A batch handed to the bus, waiting for its confirmation.
struct Sent<A> {
    ids: Vec<String>,
    confirmed: Pin<Box<A>>,
}

/// Runs the relay of `store`'s outbox to `bus` forever (abort the task to stop it); rows
/// without a region header are published as `region`'s. `watch` sees each batch as it is
/// handed over and answers what to call once it settled: with `true` once the bus has it,
/// `false` if it failed (it stays pending and goes again).
pub async fn run_to_bus<S, O, W>(
    store: &S,
    wake: &Notify,
    options: &RelayOptions,
    bus: &dyn EventBus,
    region: &str,
    mut watch: O,
) where
    S: OutboxStore,
    O: FnMut(&[Event]) -> W,
    W: FnOnce(bool) + Send + 'static,
{
    run(store, wake, options, |batch| {
        let events: Vec<Event> = batch.into_iter().map(|m| to_event(m, region)).collect();
        let settled = watch(&events);
        async move {
            let delivery = match bus.send(events).await {
                Ok(delivery) => delivery,
                Err(error) => {
                    settled(false);
                    return Err(error.to_string());
                }
            };
            Ok(async move {
                let result = delivery.await;
                settled(result.is_ok());
                result.map_err(|e| e.to_string())
            })
        }
    })
    .await;
}

/// The bus event for an outbox row; its region is the one it was written with (else
/// `region`), and so is its trace context.
pub fn to_event(message: OutboxMessage, region: &str) -> Event {
    Event {
        region: message
            .headers
            .get("region")
            .cloned()
            .unwrap_or_else(|| region.to_string()),
        traceparent: message.headers.get("traceparent").cloned(),
        id: message.id,
        topic: message.topic,
        key: message.key,
        event_type: message.event_type,
        payload: message.payload,
    }
}

/// Runs the relay over `store` forever (abort the task to stop it). `wake` is notified by
/// writers after they commit events, so they go out at once. `publish` gets each batch in
/// id order; its future answers `Ok` once the batch is handed to the bus (events published
/// after that are ordered after it), with a second future that answers `Ok` once every
/// event in it is published.
pub async fn run<S, P, F, A>(store: &S, wake: &Notify, options: &RelayOptions, mut publish: P)
where
    S: OutboxStore,
    P: FnMut(Vec<OutboxMessage>) -> F,
    F: Future<Output = Result<A, String>>,
    A: Future<Output = Result<(), String>>,
{
    let most_in_flight = options.in_flight.max(1);
    let mut in_flight: VecDeque<Sent<A>> = VecDeque::with_capacity(most_in_flight);
    loop {
        if in_flight.len() < most_in_flight {
            // The rows handed over and not yet settled are still pending: leave them out.
            let on_their_way: Vec<&str> = in_flight
                .iter()
                .flat_map(|sent| sent.ids.iter().map(String::as_str))
                .collect();
            let read = store.pending_outbox_except(options.batch, &on_their_way).await;
            drop(on_their_way);
            let fresh: Vec<OutboxMessage> = match read {
                Ok(fresh) => fresh,
                Err(error) => {
                    tracing::warn!(%error, "reading the outbox failed");
                    settle_all(store, &mut in_flight).await;
                    tokio::time::sleep(options.retry_wait).await;
                    continue;
                }
            };
            if !fresh.is_empty() {
                let ids: Vec<String> = fresh.iter().map(|m| m.id.clone()).collect();
                match publish(fresh).await {
                    Ok(confirmed) => {
                        in_flight.push_back(Sent {
                            ids,
                            confirmed: Box::pin(confirmed),
                        });
                        // Read again at once: more may have been written meanwhile.
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "publishing events failed; retrying");
                        settle_all(store, &mut in_flight).await;
                        tokio::time::sleep(options.retry_wait).await;
                        continue;
                    }
                }
            }
        }
        let room = in_flight.len() < most_in_flight;
        let Some(oldest) = in_flight.front_mut() else {
            // Nothing pending and nothing on its way. A wake-up that came while we were
            // busy is kept by `Notify` and ends this at once.
            let _ = tokio::time::timeout(options.idle_wait, wake.notified()).await;
            continue;
        };
        tokio::select! {
            result = oldest.confirmed.as_mut() => {
                if let Some(sent) = in_flight.pop_front()
                    && !settle(store, sent, result).await
                {
                    settle_all(store, &mut in_flight).await;
                    tokio::time::sleep(options.retry_wait).await;
                }
            }
            // New rows were written: read them while the oldest batch is confirmed.
            () = wake.notified(), if room => {}
        }
    }
}

/// Marks `sent` sent if `result` says the bus has it; false if it failed (it stays pending).
async fn settle<S, A>(store: &S, sent: Sent<A>, result: Result<(), String>) -> bool
where
    S: OutboxStore,
{
    match result {
        Ok(()) => {
            if let Err(error) = store.mark_outbox_sent(&sent.ids).await {
                tracing::warn!(%error, "marking events sent failed; they will be published again");
            }
            true
        }
        Err(error) => {
            tracing::warn!(%error, "publishing events failed; retrying");
            false
        }
    }
}

/// Waits for every batch still in flight and settles each (after a failure, before reading
/// again from the oldest unsent row).
async fn settle_all<S, A>(store: &S, in_flight: &mut VecDeque<Sent<A>>)
where
    S: OutboxStore,
    A: Future<Output = Result<(), String>>,
{
    while let Some(mut sent) = in_flight.pop_front() {
        let result = sent.confirmed.as_mut().await;
        settle(store, sent, result).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use futures::future::BoxFuture;
    use holdfast_platform::events::BusError;
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::SqliteStore;

    fn message(id: &str) -> OutboxMessage {
        OutboxMessage {
            id: id.into(),
            topic: "t".into(),
            key: "k".into(),
            event_type: "x.y".into(),
            ..OutboxMessage::default()
        }
    }

    /// A batch the relay handed over, and the switch that confirms or fails it.
    type Handed = (Vec<String>, oneshot::Sender<Result<(), String>>);

    /// Runs a relay over `store` whose bus takes each batch at once and confirms it when
    /// the test says so; the batches come out of the receiver in the order handed over.
    fn spawn_relay(
        store: &SqliteStore,
        wake: &Arc<Notify>,
        in_flight: usize,
    ) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<Handed>) {
        let (handed_tx, handed) = mpsc::unbounded_channel();
        let options = RelayOptions {
            in_flight,
            retry_wait: Duration::from_millis(1),
            ..RelayOptions::default()
        };
        let task = tokio::spawn({
            let (store, wake) = (store.clone(), wake.clone());
            async move {
                run(&store, &wake, &options, |batch| {
                    let ids = batch.iter().map(|m| m.id.clone()).collect();
                    let (confirm, confirmed) = oneshot::channel();
                    let _ = handed_tx.send((ids, confirm));
                    async move {
                        Ok(async move { confirmed.await.unwrap_or_else(|_| Err("test gone".into())) })
                    }
                })
                .await;
            }
        });
        (task, handed)
    }

    async fn next(handed: &mut mpsc::UnboundedReceiver<Handed>) -> Handed {
        tokio::time::timeout(Duration::from_secs(10), handed.recv())
            .await
            .expect("a batch within 10 s")
            .expect("the relay runs")
    }

    async fn pending_ids(store: &SqliteStore) -> Vec<String> {
        let pending = store.pending_outbox(10).await.unwrap();
        pending.into_iter().map(|m| m.id).collect()
    }

    /// Polls (bounded) until the outbox holds exactly `want`.
    async fn until_pending(store: &SqliteStore, want: &[&str]) {
        for _ in 0..1000 {
            if pending_ids(store).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(pending_ids(store).await, want);
    }

    #[tokio::test]
    async fn relay_publishes_in_id_order_marks_sent_and_retries_a_failed_batch() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .append_outbox(vec![message("b"), message("a")])
            .await
            .unwrap();
        let wake = Arc::new(Notify::new());
        let (task, mut handed) = spawn_relay(&store, &wake, 1);
        let (ids, confirm) = next(&mut handed).await;
        assert_eq!(ids, ["a", "b"], "id order");
        confirm.send(Err("broker down".into())).unwrap();
        let (ids, confirm) = next(&mut handed).await;
        assert_eq!(ids, ["a", "b"], "the failed batch again");
        confirm.send(Ok(())).unwrap();
        until_pending(&store, &[]).await;
        store.append_outbox(vec![message("c")]).await.unwrap();
        wake.notify_one();
        let (ids, confirm) = next(&mut handed).await;
        assert_eq!(ids, ["c"], "sent rows are not published again");
        confirm.send(Ok(())).unwrap();
        until_pending(&store, &[]).await;
        task.abort();
    }

    #[tokio::test]
    async fn rows_written_while_a_batch_is_confirmed_go_out_at_once_and_a_failed_one_goes_again() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.append_outbox(vec![message("a")]).await.unwrap();
        let wake = Arc::new(Notify::new());
        let (task, mut handed) = spawn_relay(&store, &wake, 2);
        let (ids, confirm_a) = next(&mut handed).await;
        assert_eq!(ids, ["a"]);

        // "a" is not confirmed yet: "b" is handed over anyway, after it.
        store.append_outbox(vec![message("b")]).await.unwrap();
        wake.notify_one();
        let (ids, confirm_b) = next(&mut handed).await;
        assert_eq!(ids, ["b"], "handed over while a waits");
        assert_eq!(
            pending_ids(&store).await,
            ["a", "b"],
            "nothing marked before its confirmation"
        );

        // Two in flight: "c" waits until "a" settles, and "a" is marked before "c" is read.
        store.append_outbox(vec![message("c")]).await.unwrap();
        wake.notify_one();
        confirm_a.send(Ok(())).unwrap();
        let (ids, confirm_c) = next(&mut handed).await;
        assert_eq!(ids, ["c"]);
        assert_eq!(
            pending_ids(&store).await,
            ["b", "c"],
            "a was confirmed and marked first"
        );

        // "b" fails after "c" was handed over: "c" settles (marked), then "b" goes again.
        confirm_b.send(Err("timed out".into())).unwrap();
        confirm_c.send(Ok(())).unwrap();
        let (ids, confirm_b) = next(&mut handed).await;
        assert_eq!(ids, ["b"], "only the failed batch again");
        assert_eq!(pending_ids(&store).await, ["b"]);
        confirm_b.send(Ok(())).unwrap();
        until_pending(&store, &[]).await;
        task.abort();
    }

    /// A bus that refuses its first `refusals` publishes and keeps what it took.
    #[derive(Default)]
    struct Keeping {
        refusals: AtomicUsize,
        took: Mutex<Vec<Event>>,
    }

    impl EventBus for Keeping {
        fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>> {
            let refused = self
                .refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !refused {
                self.took.lock().unwrap().extend(events);
            }
            Box::pin(async move {
                if refused {
                    Err(BusError::Unavailable("broker down".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test]
    async fn the_bus_relay_keeps_each_rows_region_and_trace_and_reports_every_batch() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let mut from_us = message("a");
        from_us.headers.insert("region".into(), "us".into());
        from_us
            .headers
            .insert("traceparent".into(), "00-abc-def-01".into());
        from_us.payload = b"paid".to_vec();
        store.append_outbox(vec![from_us, message("b")]).await.unwrap();
        let bus = Arc::new(Keeping {
            refusals: AtomicUsize::new(1),
            ..Keeping::default()
        });
        let (settled_tx, mut settled) = mpsc::unbounded_channel();
        let options = RelayOptions {
            retry_wait: Duration::from_millis(1),
            ..RelayOptions::default()
        };
        let task = tokio::spawn({
            let (store, bus) = (store.clone(), Arc::clone(&bus));
            async move {
                let wake = Notify::new();
                run_to_bus(&store, &wake, &options, &*bus, "eu", |events| {
                    let (count, settled_tx) = (events.len(), settled_tx.clone());
                    move |published| {
                        let _ = settled_tx.send((count, published));
                    }
                })
                .await;
            }
        });
        let mut reports = Vec::new();
        while reports.len() < 2 {
            let report = tokio::time::timeout(Duration::from_secs(10), settled.recv())
                .await
                .expect("a batch settles within 10 s")
                .expect("the relay runs");
            reports.push(report);
        }
        assert_eq!(
            reports,
            [(2, false), (2, true)],
            "the refused batch, then it again"
        );
        until_pending(&store, &[]).await;
        task.abort();

        let took = bus.took.lock().unwrap().clone();
        let ids: Vec<&str> = took.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(took[0].region, "us", "the region it was written in");
        assert_eq!(took[0].traceparent.as_deref(), Some("00-abc-def-01"));
        assert_eq!(took[0].payload, b"paid");
        assert_eq!((took[0].topic.as_str(), took[0].key.as_str()), ("t", "k"));
        assert_eq!(took[0].event_type, "x.y");
        assert_eq!(took[1].region, "eu", "no region header: the relay's");
        assert_eq!(took[1].traceparent, None);
    }
}
