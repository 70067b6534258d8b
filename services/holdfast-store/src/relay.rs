//! The outbox relay every service with an outbox runs: publish pending events in id
//! order, and mark them sent only once the publisher (the event bus) took them.
//!
//! The store knows nothing of the bus, so the caller hands in `publish` (turning outbox
//! rows into bus events and publishing them). A crash between a publish and its mark
//! publishes the same events again on the next run: duplicates are possible and harmless,
//! since consumers dedupe by event id; nothing is ever lost, since a row leaves the outbox
//! only after a successful publish.
//!
//! One relay per outbox is enough: it publishes every service's rows, whoever wrote them.
//! Two relays over one outbox (two processes on one store) are safe but publish some
//! events twice while both are busy.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;

use crate::{OutboxMessage, OutboxStore};

/// Batch size and waits.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Most events read and published at once.
    pub batch: u32,
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
            idle_wait: Duration::from_millis(500),
            retry_wait: Duration::from_millis(500),
        }
    }
}

/// Runs the relay over `store` forever (abort the task to stop it). `wake` is notified by
/// writers after they commit events, so they go out at once. `publish` gets each batch in
/// id order and answers `Ok` only once every event in it is published.
pub async fn run<S, P, F>(store: &S, wake: &Notify, options: &RelayOptions, mut publish: P)
where
    S: OutboxStore,
    P: FnMut(Vec<OutboxMessage>) -> F,
    F: Future<Output = Result<(), String>>,
{
    loop {
        let pending = match store.pending_outbox(options.batch).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, "reading the outbox failed");
                tokio::time::sleep(options.retry_wait).await;
                continue;
            }
        };
        if pending.is_empty() {
            // A wake-up that came while we were busy is kept by `Notify` and ends this at once.
            let _ = tokio::time::timeout(options.idle_wait, wake.notified()).await;
            continue;
        }
        let ids: Vec<String> = pending.iter().map(|m| m.id.clone()).collect();
        match publish(pending).await {
            Ok(()) => {
                if let Err(error) = store.mark_outbox_sent(&ids).await {
                    tracing::warn!(%error, "marking events sent failed; they will be published again");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "publishing events failed; retrying");
                tokio::time::sleep(options.retry_wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

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

    #[tokio::test]
    async fn relay_publishes_in_id_order_marks_sent_and_retries_a_failed_batch() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .append_outbox(vec![message("b"), message("a")])
            .await
            .unwrap();
        let published = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let options = RelayOptions {
            retry_wait: Duration::from_millis(1),
            ..RelayOptions::default()
        };
        let task = tokio::spawn({
            let (store, wake, published) = (store.clone(), wake.clone(), published.clone());
            async move {
                let mut attempts = 0;
                run(&store, &wake, &options, |batch| {
                    attempts += 1;
                    let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
                    published.lock().unwrap().push(ids.clone());
                    let _ = done_tx.send(ids);
                    let failed = attempts == 1;
                    async move {
                        if failed {
                            Err("broker down".to_string())
                        } else {
                            Ok(())
                        }
                    }
                })
                .await;
            }
        });
        assert_eq!(done.recv().await.unwrap(), ["a", "b"], "first attempt fails");
        assert_eq!(done.recv().await.unwrap(), ["a", "b"], "the same batch again");
        store.append_outbox(vec![message("c")]).await.unwrap();
        wake.notify_one();
        assert_eq!(
            done.recv().await.unwrap(),
            ["c"],
            "sent rows are not published again"
        );
        // "c" is marked once its publish returned: poll the store, bounded.
        for _ in 0..1000 {
            if store.pending_outbox(10).await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(store.pending_outbox(10).await.unwrap(), vec![]);
        task.abort();
        assert_eq!(published.lock().unwrap().len(), 3);
    }
}
