//! The Kafka consumer: one dispatcher polling the group's consumer, one worker per assigned
//! partition handing its records to the handler (one key's records in partition order,
//! different keys and partitions in parallel, see [`Lanes`]), and a committer committing, in
//! the background, the offsets every worker has finished up to ([`Progress`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::handler::{EventHandler, Outcome, RETRY_INITIAL, RETRY_MAX, deliver, stopped, wait_or_stop};
use super::kafka::{DEFAULT_PARTITIONS, MESSAGE_TIMEOUT, decode, ensure_topics, producer_config};
use super::lanes::{IN_HAND, LaneKey, Lanes};
use super::offsets::{CommitBatch, FlowChange, PartitionKey, Progress};
use super::{BusError, DEAD_LETTERED, dlq_topic, headers};

/// Extra librdkafka `debug` contexts for consumers (e.g. `cgrp,fetch`), logged through
/// `tracing` at debug level under the `librdkafka` target.
pub const DEBUG_ENV: &str = "HOLDFAST_KAFKA_DEBUG";

/// Longest the dispatcher waits in one `recv` before polling the consumer again.
///
/// rdkafka's `StreamConsumer` wakes a waiting `recv` only when librdkafka's queue goes from
/// empty to non-empty, and otherwise every `max.poll.interval.ms / 2` (150 s). A defensive
/// bound on a wake-up that would be missed (rust-rdkafka #665); it was not the cause of
/// issue 18 (see [`run_consumer`]).
const POLL_TICK: Duration = Duration::from_millis(100);
/// How long the group coordinator keeps a member that stopped heartbeating (librdkafka
/// heartbeats from its own thread every 3 s, whatever the application does).
///
/// A process killed with SIGKILL cannot leave its groups: its member keeps its partitions
/// until this expires, and a rebalance started meanwhile (the restarted process joining)
/// completes only then, so nothing of those partitions is consumed for that long; a broker
/// restart starts the wait again. With librdkafka's default (45 s) a region whose process
/// was killed and restarted received no transfer for 45 s after the broker came back (issue
/// 15, measured in `services/holdfast/tests/regions.rs`). 10 s is the Kafka clients' default
/// before KIP-735 and comfortably above the heartbeat interval. The price: a broker outage
/// longer than this lapses every member's session, and its rejoin waits up to this long once
/// the broker is back. Static membership (`group.instance.id`) was tried and dropped: see
/// docs/events.md.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new consumer waits for its topics to show in the cluster's metadata before
/// it subscribes (see [`wait_until_visible`]).
const TOPICS_VISIBLE_WITHIN: Duration = Duration::from_secs(10);
/// How often librdkafka refreshes the metadata of the subscribed topics. A subscribed topic
/// missing from the metadata when the group assigned partitions gets none of its partitions
/// until a refresh shows it and triggers a rebalance; librdkafka's default is 5 minutes.
const METADATA_REFRESH: Duration = Duration::from_secs(10);
/// Fewest seconds between two warnings about consumer errors: while a broker is down
/// librdkafka reports every failed connection attempt, several a second.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// The dispatcher's log of consumer errors: a warning at most once per [`ERROR_LOG_EVERY`]
/// with how many errors were left out since, every error at debug level.
#[derive(Debug, Default)]
struct ErrorLog {
    last_warning: Option<Instant>,
    left_out: u64,
}

impl ErrorLog {
    fn report(&mut self, group: &str, error: &KafkaError) {
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|last| now.duration_since(last) < ERROR_LOG_EVERY)
        {
            self.left_out += 1;
            tracing::debug!(group, %error, "kafka consumer error");
            return;
        }
        self.last_warning = Some(now);
        let left_out = std::mem::take(&mut self.left_out);
        tracing::warn!(group, %error, left_out, "kafka consumer error (librdkafka retries by itself)");
    }
}

/// The consumer's librdkafka callbacks: its log and errors into `tracing`, and the
/// rebalance hooks that keep [`Progress`] in step with the assignment.
pub(super) struct GroupContext {
    progress: Arc<Progress>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let group = self.progress.group();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", group, fac, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", group, fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", group, fac, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", group, fac, "{message}"),
        }
    }

    /// Every error event also reaches the dispatcher, which warns about it (rate-limited).
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", group = self.progress.group(), %error, reason, "kafka client error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let group = self.progress.group();
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(group, partitions = partitions.count(), "partitions assigned");
                self.progress.assigned(partitions);
            }
            Rebalance::Revoke(partitions) => {
                // Lost rather than handed over: the group already moved them (this member's
                // session lapsed, e.g. while no broker answered). A commit now would only
                // block this callback until a broker answers, and be refused.
                let lost = consumer.assignment_lost();
                tracing::info!(group, partitions = partitions.count(), lost, "partitions revoked");
                // Commit what was finished before the partitions go; what is still in hand
                // goes to their next owner again.
                if let Some(batch) = self.progress.revoked(partitions) {
                    if lost {
                        tracing::warn!(
                            group,
                            "assignment lost: finished records not committed; the next owner gets them again"
                        );
                        return;
                    }
                    match consumer.commit(&batch.offsets, CommitMode::Sync) {
                        Ok(()) => self.progress.committed(&batch),
                        Err(error) => tracing::warn!(
                            group, %error, "commit on revocation failed; the next owner gets those records again"
                        ),
                    }
                }
            }
            Rebalance::Error(error) => tracing::warn!(group, %error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            // A partition we paused before it was taken away is fetched again from here on.
            if let Err(error) = consumer.resume(partitions) {
                tracing::debug!(group = self.progress.group(), %error, "resume after assignment");
            }
        }
    }
}

type GroupStream = StreamConsumer<GroupContext>;

/// A consumer of one group, subscribed, with the producer it dead-letters through.
pub(super) struct GroupConsumer {
    consumer: Arc<GroupStream>,
    dlq: FutureProducer,
    progress: Arc<Progress>,
}

/// Creates the topics and their dead-letter topics if missing, and subscribes.
pub(super) async fn start_consumer(
    brokers: &str,
    group: &str,
    topics: &[&str],
) -> Result<GroupConsumer, BusError> {
    let dlqs: Vec<String> = topics.iter().map(|t| dlq_topic(t)).collect();
    let mut all: Vec<&str> = topics.to_vec();
    all.extend(dlqs.iter().map(String::as_str));
    ensure_topics(brokers, &all, DEFAULT_PARTITIONS).await?;

    let progress = Arc::new(Progress::new(group));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("client.id", format!("holdfast-{group}"))
        // Offsets are committed by hand, once the handler's effect is stored.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A new group starts at the oldest retained event, not at "now": nothing published
        // before the first consumer joined is skipped.
        .set("auto.offset.reset", "earliest")
        // See SESSION_TIMEOUT: a crashed process's member is dropped after this long.
        .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string())
        .set(
            "topic.metadata.refresh.interval.ms",
            METADATA_REFRESH.as_millis().to_string(),
        );
    if let Some(debug) = std::env::var(DEBUG_ENV).ok().filter(|d| !d.is_empty()) {
        config.set("debug", debug);
    }
    let consumer: Arc<GroupStream> = Arc::new(
        config
            .create_with_context(GroupContext {
                progress: progress.clone(),
            })
            .map_err(|e| BusError::Config(format!("kafka consumer: {e}")))?,
    );
    let waiting = Arc::clone(&consumer);
    let wanted: Vec<String> = topics.iter().map(|t| (*t).to_string()).collect();
    let missing = tokio::task::spawn_blocking(move || wait_until_visible(&waiting, &wanted))
        .await
        .map_err(|e| BusError::Unavailable(format!("waiting for topic metadata: {e}")))?;
    if !missing.is_empty() {
        tracing::warn!(
            group,
            ?missing,
            within = ?TOPICS_VISIBLE_WITHIN,
            "topics not in the metadata yet; subscribing anyway (their partitions are \
             assigned once a metadata refresh shows them)"
        );
    }
    consumer
        .subscribe(topics)
        .map_err(|e| BusError::Unavailable(format!("subscribe {topics:?}: {e}")))?;
    let dlq = producer_config(brokers)
        .create()
        .map_err(|e| BusError::Config(format!("kafka dead-letter producer: {e}")))?;
    Ok(GroupConsumer {
        consumer,
        dlq,
        progress,
    })
}

/// Waits (at most [`TOPICS_VISIBLE_WITHIN`]) until every one of `topics` shows in the
/// metadata `consumer` reads, each partition with a leader; answers the topics still missing.
///
/// A topic just created (`ensure_topics`) can be missing from a broker's metadata for a
/// moment (KRaft brokers apply the controller's records asynchronously). A group that
/// assigns partitions in that moment gets none of that topic's, and only the next metadata
/// refresh brings them: a warehouse consumer of two topics once joined with the orders topic
/// unknown and read no order for the whole 30 s of an end-to-end test.
fn wait_until_visible(consumer: &GroupStream, topics: &[String]) -> Vec<String> {
    const PROBE_EVERY: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + TOPICS_VISIBLE_WITHIN;
    let mut missing: Vec<String> = topics.to_vec();
    loop {
        missing.retain(|topic| !visible(consumer, topic));
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        std::thread::sleep(PROBE_EVERY);
    }
}

/// Whether `topic` is in the metadata with partitions, every one with a leader.
fn visible(consumer: &GroupStream, topic: &str) -> bool {
    consumer
        .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(1)))
        .is_ok_and(|metadata| {
            metadata.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none())
            })
        })
}

/// A record and the epoch of its partition's assignment when it was fetched.
type Queued = (OwnedMessage, u64);

/// What every worker of one consumer shares.
#[derive(Clone)]
struct Shared {
    consumer: Arc<GroupStream>,
    dlq: FutureProducer,
    progress: Arc<Progress>,
    handler: Arc<dyn EventHandler>,
    group: Arc<str>,
}

/// The dispatcher: polls the consumer (which also serves rebalances) and queues each record
/// for its partition's worker, until asked to stop; then lets the workers finish the record
/// in hand, commits what was finished and leaves the group.
///
/// It never waits after a consumer error (issue 18). librdkafka hands errors, its log lines,
/// rebalances and records to the application through one queue, in order, and its consumer
/// errors are reports, not failures: it reconnects and rejoins by itself. While a broker is
/// down it queues an error for every failed connection attempt (several a second), so a
/// dispatcher that paused after each error (it did, up to 1 s) fell far behind: after
/// the broker came back, the group's assignment and the records waited behind a hundred
/// stale errors drained one a second (89 s in the test), and the consumer looked stalled.
pub(super) async fn run_consumer(
    GroupConsumer {
        consumer,
        dlq,
        progress,
    }: GroupConsumer,
    group: String,
    handler: Arc<dyn EventHandler>,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Shared {
        consumer,
        dlq,
        progress,
        handler,
        group: group.as_str().into(),
    };
    // Dropped (and so aborted) with this future: an aborted consumer leaves nothing running.
    let mut workers = JoinSet::new();
    let mut committer = JoinSet::new();
    committer.spawn(commit_loop(shared.clone(), stop.clone()));
    let mut queues: HashMap<PartitionKey, mpsc::UnboundedSender<Queued>> = HashMap::new();
    let mut errors = ErrorLog::default();
    loop {
        let received = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            received = tokio::time::timeout(POLL_TICK, shared.consumer.recv()) => match received {
                Ok(received) => received.map(|m| m.detach()),
                // Nothing woke us: poll again (see POLL_TICK).
                Err(_) => continue,
            },
        };
        let message = match received {
            Ok(message) => message,
            // What is queued behind it is polled at once.
            Err(error) => {
                errors.report(&group, &error);
                continue;
            }
        };
        let key = (message.topic().to_string(), message.partition());
        // A record of a partition no longer ours: its next owner gets it.
        let Some(epoch) = shared.progress.epoch(&key) else {
            continue;
        };
        let queue = queues.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            workers.spawn(partition_worker(key.clone(), rx, shared.clone(), stop.clone()));
            tx
        });
        flow(&shared, &key, shared.progress.enqueued(&key));
        // Fails only once the worker stopped, which it does only when asked to.
        let _ = queue.send((message, epoch));
    }
    drop(queues);
    while workers.join_next().await.is_some() {}
    committer.abort_all();
    while committer.join_next().await.is_some() {}
    if let Some(batch) = shared.progress.to_commit() {
        match commit(&shared.consumer, batch).await {
            Ok(batch) => shared.progress.committed(&batch),
            Err((_, error)) => tracing::warn!(
                %group, %error, "final offset commit failed; the group gets those records again"
            ),
        }
    }
    // Closing leaves the group and blocks until it has: off the async threads.
    let Shared { consumer, .. } = shared;
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
}

/// Pauses or resumes fetching one partition.
fn flow(shared: &Shared, (topic, partition): &PartitionKey, change: FlowChange) {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, *partition);
    let result = match change {
        FlowChange::None => return,
        FlowChange::Pause => shared.consumer.pause(&list),
        FlowChange::Resume => shared.consumer.resume(&list),
    };
    // A partition no longer assigned: nothing to pause or resume.
    if let Err(error) = result {
        tracing::debug!(group = %shared.group, topic, partition, %error, "pause/resume");
    }
}

/// What became of one record a worker started.
struct Done {
    offset: i64,
    key: LaneKey,
    /// `Some(true)` handled, `Some(false)` dead-lettered, `None` given up because the consumer
    /// is stopping (not finished: its offset is not committed).
    handled: Option<bool>,
}

/// Hands one partition's records to the handler, those of one key in partition order and
/// different keys at once (at most [`IN_HAND`] in hand), dead-letters poison
/// ones, and marks finished what every record before it finished. Once asked to stop it takes
/// no more records and lets the running ones finish.
async fn partition_worker(
    key: PartitionKey,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    shared: Shared,
    stop: watch::Receiver<bool>,
) {
    let mut lanes: Lanes<OwnedMessage> = Lanes::default();
    let mut lanes_epoch = None;
    let mut running: JoinSet<Done> = JoinSet::new();
    let mut taking = true;
    loop {
        tokio::select! {
            biased;
            Some(joined) = running.join_next() => {
                let done = finished_task(joined);
                let Some(handled) = done.handled else {
                    taking = false;
                    continue;
                };
                if let Some(next) = lanes.finish(done.offset, &done.key).filter(|_| taking) {
                    running.spawn(handle_record(shared.clone(), next, stop.clone()));
                }
                if let (Some(epoch), Some(up_to)) = (lanes_epoch, lanes.done_up_to()) {
                    shared.progress.finished(&key, epoch, up_to, handled);
                }
            }
            received = queue.recv(), if taking && lanes.in_hand() < IN_HAND => {
                let Some((message, epoch)) = received else {
                    taking = false;
                    continue;
                };
                flow(&shared, &key, shared.progress.dequeued(&key));
                if *stop.borrow() {
                    taking = false;
                    continue;
                }
                // Fetched before a rebalance took the partition away (and maybe gave it back).
                if shared.progress.epoch(&key) != Some(epoch) {
                    continue;
                }
                if lanes_epoch != Some(epoch) {
                    // A new assignment: what the old one still runs finishes first (its offsets
                    // are no longer ours to commit; its waiting records go to their next owner).
                    while let Some(joined) = running.join_next().await {
                        finished_task(joined);
                    }
                    lanes = Lanes::default();
                    lanes_epoch = Some(epoch);
                }
                let record_key = message.key().map(<[u8]>::to_vec);
                if let Some(start) = lanes.take(message.offset(), record_key, message) {
                    running.spawn(handle_record(shared.clone(), start, stop.clone()));
                }
            }
            else => return,
        }
    }
}

/// The outcome of a record's task; a handler's panic goes on up (as it did when the worker
/// called the handler itself).
fn finished_task(joined: Result<Done, tokio::task::JoinError>) -> Done {
    match joined {
        Ok(done) => done,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only when the runtime shuts down: nothing of the record was finished.
        Err(_) => Done {
            offset: -1,
            key: None,
            handled: None,
        },
    }
}

/// Hands one record to the handler (dead-lettering it when poison).
async fn handle_record(shared: Shared, message: OwnedMessage, mut stop: watch::Receiver<bool>) -> Done {
    let outcome = match decode(&message) {
        Ok(event) => deliver(&*shared.handler, &event, &shared.group, &mut stop).await,
        Err(reason) => Outcome::Poison(reason),
    };
    let handled = match outcome {
        Outcome::Handled => Some(true),
        Outcome::Poison(reason) => dead_letter(&shared.dlq, &message, &reason, &shared.group, &mut stop)
            .await
            .then_some(false),
        Outcome::Stopped => None,
    };
    Done {
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        handled,
    }
}

/// Commits what the workers finished whenever one finishes a record; a commit covers
/// everything finished while the previous one was on its way.
async fn commit_loop(shared: Shared, mut stop: watch::Receiver<bool>) {
    let mut backoff = RETRY_INITIAL;
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = shared.progress.dirty.notified() => {}
        }
        let Some(batch) = shared.progress.to_commit() else {
            continue;
        };
        match commit(&shared.consumer, batch).await {
            Ok(batch) => {
                shared.progress.committed(&batch);
                backoff = RETRY_INITIAL;
            }
            Err((batch, error)) => {
                tracing::warn!(group = %shared.group, %error, "offset commit failed; retrying");
                shared.progress.commit_failed(batch);
                if wait_or_stop(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Commits `batch`, waiting for the broker's answer (off the async threads).
async fn commit(
    consumer: &Arc<GroupStream>,
    batch: CommitBatch,
) -> Result<CommitBatch, (CommitBatch, KafkaError)> {
    let consumer = consumer.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let result = consumer.commit(&batch.offsets, CommitMode::Sync);
        (batch, result)
    })
    .await;
    match joined {
        Ok((batch, Ok(()))) => Ok(batch),
        Ok((batch, Err(error))) => Err((batch, error)),
        // Only when the runtime shuts down under us; the batch is gone with it.
        Err(_) => Err((CommitBatch::empty(), KafkaError::Canceled)),
    }
}

/// Writes `message` to `<topic>.dlq` with its key, payload and headers plus why and where
/// from, retrying until the broker takes it. `false` when asked to stop first.
async fn dead_letter(
    dlq: &FutureProducer,
    message: &OwnedMessage,
    reason: &str,
    group: &str,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let topic = dlq_topic(message.topic());
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let mut backoff = RETRY_INITIAL;
    loop {
        let mut out = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                out = out.insert(header);
            }
        }
        let out = out
            .insert(Header {
                key: headers::REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: headers::ORIGINAL_TOPIC,
                value: Some(message.topic()),
            })
            .insert(Header {
                key: headers::ORIGINAL_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: headers::ORIGINAL_OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: headers::CONSUMER_GROUP,
                value: Some(group),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(out);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        match dlq.send(record, Timeout::After(MESSAGE_TIMEOUT)).await {
            Ok(_) => {
                tracing::warn!(
                    topic = message.topic(),
                    group,
                    partition = message.partition(),
                    offset = message.offset(),
                    reason,
                    "poison event dead-lettered"
                );
                DEAD_LETTERED.with_label_values(&[message.topic(), group]).inc();
                return true;
            }
            Err((e, _)) => {
                tracing::error!(%topic, group, error = %e, "dead-letter write failed; retrying");
                if wait_or_stop(backoff, stop).await {
                    return false;
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}
