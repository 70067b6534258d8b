//! What a Kafka consumer has finished, per assigned partition, and what it may commit.
//!
//! "Finished" is one number per partition: the offset before which every record's handler
//! returned (or the record was dead-lettered), which the partition's worker keeps (records
//! of different keys finish out of order, see `events/lanes.rs`). That offset is committed in
//! the background ([`Progress::to_commit`]), so an offset is only ever committed once its
//! record and every earlier one in its partition were finished: at least once, without a
//! round trip to the broker per record.
//!
//! An assignment starts an epoch per partition; work of an older epoch (records fetched
//! before a rebalance took the partition away) is neither finished nor committed here, the
//! partition's next owner gets those records again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use super::CONSUMED;

/// A partition: topic and partition number.
pub(super) type PartitionKey = (String, i32);

/// Records queued for one partition's worker past which the partition is paused (no more
/// fetching), and back under which it is resumed.
const PAUSE_ABOVE: usize = 2_000;
const RESUME_AT: usize = 500;

#[derive(Debug, Default)]
struct Partition {
    /// Changes with every assignment of the partition to this consumer.
    epoch: u64,
    /// The offset before which every record finished, once one finished.
    finished: Option<i64>,
    /// The last offset committed (or handed to a commit that is running).
    committing: Option<i64>,
    /// Records handled (not dead-lettered) and not yet counted as consumed.
    uncounted: u64,
}

/// Records waiting in a worker's queue, and whether that made us pause the partition.
#[derive(Debug, Default)]
struct Flow {
    queued: usize,
    paused: bool,
}

/// What to do with fetching after a queue change.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FlowChange {
    None,
    Pause,
    Resume,
}

/// Offsets handed to one commit, with the records each covers for the consumed metric.
#[derive(Debug)]
pub(super) struct CommitBatch {
    pub(super) offsets: TopicPartitionList,
    counts: Vec<(PartitionKey, i64, u64)>,
}

impl CommitBatch {
    /// A batch of nothing.
    pub(super) fn empty() -> Self {
        Self {
            offsets: TopicPartitionList::new(),
            counts: Vec::new(),
        }
    }
}

/// The progress of one consumer: shared by its dispatcher, workers, committer and the
/// rebalance callbacks.
#[derive(Debug)]
pub(super) struct Progress {
    group: String,
    partitions: Mutex<HashMap<PartitionKey, Partition>>,
    flow: Mutex<HashMap<PartitionKey, Flow>>,
    epochs: AtomicU64,
    /// Notified when a record finished: there may be something to commit.
    pub(super) dirty: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Progress {
    pub(super) fn new(group: &str) -> Self {
        Self {
            group: group.to_string(),
            partitions: Mutex::default(),
            flow: Mutex::default(),
            epochs: AtomicU64::new(1),
            dirty: Notify::new(),
        }
    }

    /// The consumer group.
    pub(super) fn group(&self) -> &str {
        &self.group
    }

    /// `partitions` were assigned to this consumer: a new epoch for each, nothing finished,
    /// and none paused by us.
    pub(super) fn assigned(&self, partitions: &TopicPartitionList) {
        let mut states = lock(&self.partitions);
        let mut flow = lock(&self.flow);
        for element in partitions.elements() {
            let key = (element.topic().to_string(), element.partition());
            let epoch = self.epochs.fetch_add(1, Ordering::Relaxed);
            states.insert(
                key.clone(),
                Partition {
                    epoch,
                    ..Partition::default()
                },
            );
            flow.entry(key).or_default().paused = false;
        }
    }

    /// `partitions` are being taken away: forgets them and returns what was finished and not
    /// yet committed, to commit before they go.
    pub(super) fn revoked(&self, partitions: &TopicPartitionList) -> Option<CommitBatch> {
        let mut states = lock(&self.partitions);
        let gone = partitions
            .elements()
            .iter()
            .filter_map(|e| {
                let key = (e.topic().to_string(), e.partition());
                let mut state = states.remove(&key)?;
                uncommitted(key, &mut state)
            })
            .collect();
        batch(gone)
    }

    /// The current epoch of a partition, `None` when it is not assigned to us.
    pub(super) fn epoch(&self, key: &PartitionKey) -> Option<u64> {
        lock(&self.partitions).get(key).map(|p| p.epoch)
    }

    /// A record of `key`, fetched in `epoch`, was handled (`handled`) or dead-lettered, and
    /// every record of the partition before `up_to` is finished (`up_to` never goes back).
    pub(super) fn finished(&self, key: &PartitionKey, epoch: u64, up_to: i64, handled: bool) {
        let mut states = lock(&self.partitions);
        if let Some(state) = states.get_mut(key).filter(|s| s.epoch == epoch) {
            state.finished = Some(up_to);
            state.uncounted += u64::from(handled);
            drop(states);
            self.dirty.notify_one();
        }
    }

    /// Everything finished and not yet committed, marked as being committed.
    pub(super) fn to_commit(&self) -> Option<CommitBatch> {
        let mut states = lock(&self.partitions);
        let pending = states
            .iter_mut()
            .filter_map(|(key, state)| uncommitted(key.clone(), state))
            .collect();
        batch(pending)
    }

    /// A commit of `batch` failed: its records count again as not committed.
    pub(super) fn commit_failed(&self, batch: CommitBatch) {
        let mut states = lock(&self.partitions);
        for (key, offset, count) in batch.counts {
            if let Some(state) = states.get_mut(&key) {
                if state.committing == Some(offset) {
                    state.committing = None;
                }
                state.uncounted += count;
            }
        }
        drop(states);
        self.dirty.notify_one();
    }

    /// A commit of `batch` succeeded: counts its handled records as consumed.
    pub(super) fn committed(&self, batch: &CommitBatch) {
        for ((topic, _), _, count) in &batch.counts {
            if *count > 0 {
                CONSUMED
                    .with_label_values(&[topic.as_str(), self.group.as_str()])
                    .inc_by(*count);
            }
        }
    }

    /// One more record queued for `key`'s worker.
    pub(super) fn enqueued(&self, key: &PartitionKey) -> FlowChange {
        let mut flow = lock(&self.flow);
        let flow = flow.entry(key.clone()).or_default();
        flow.queued += 1;
        if flow.queued > PAUSE_ABOVE && !flow.paused {
            flow.paused = true;
            return FlowChange::Pause;
        }
        FlowChange::None
    }

    /// `key`'s worker took a record from its queue.
    pub(super) fn dequeued(&self, key: &PartitionKey) -> FlowChange {
        let mut flow = lock(&self.flow);
        let Some(flow) = flow.get_mut(key) else {
            return FlowChange::None;
        };
        flow.queued = flow.queued.saturating_sub(1);
        if flow.paused && flow.queued <= RESUME_AT {
            flow.paused = false;
            return FlowChange::Resume;
        }
        FlowChange::None
    }
}

/// What `state` finished past its last commit, marked as being committed.
fn uncommitted(key: PartitionKey, state: &mut Partition) -> Option<(PartitionKey, i64, u64)> {
    let finished = state.finished?;
    if state.committing.is_some_and(|c| c >= finished) {
        return None;
    }
    state.committing = Some(finished);
    Some((key, finished, std::mem::take(&mut state.uncounted)))
}

/// A commit of `pending` (partition, offset, records handled), `None` when empty.
fn batch(pending: Vec<(PartitionKey, i64, u64)>) -> Option<CommitBatch> {
    if pending.is_empty() {
        return None;
    }
    let mut offsets = TopicPartitionList::with_capacity(pending.len());
    for ((topic, partition), offset, _) in &pending {
        // Only fails for an offset that is not a number, which these are not.
        let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    Some(CommitBatch {
        offsets,
        counts: pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(partitions: &[(&str, i32)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        list
    }

    fn key(topic: &str, partition: i32) -> PartitionKey {
        (topic.to_string(), partition)
    }

    fn offsets(batch: &CommitBatch) -> Vec<(String, i32, Offset)> {
        let mut out: Vec<_> = batch
            .offsets
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), e.offset()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    #[test]
    fn commits_the_offset_before_which_every_record_finished_once() {
        let progress = Progress::new("g");
        progress.assigned(&list(&[("t", 0), ("t", 1)]));
        assert!(progress.to_commit().is_none(), "nothing finished yet");
        let (p0, p1) = (key("t", 0), key("t", 1));
        let (e0, e1) = (progress.epoch(&p0).unwrap(), progress.epoch(&p1).unwrap());
        assert_ne!(e0, e1);
        progress.finished(&p0, e0, 5, true);
        progress.finished(&p0, e0, 6, false);
        progress.finished(&p1, e1, 10, true);
        let batch = progress.to_commit().expect("something to commit");
        assert_eq!(
            offsets(&batch),
            [
                ("t".into(), 0, Offset::Offset(6)),
                ("t".into(), 1, Offset::Offset(10))
            ]
        );
        assert!(progress.to_commit().is_none(), "handed to a commit already");
        progress.finished(&p0, e0, 7, true);
        assert_eq!(
            offsets(&progress.to_commit().unwrap()),
            [("t".into(), 0, Offset::Offset(7))]
        );
    }

    #[test]
    fn records_finished_behind_an_unfinished_one_wait_for_it_to_be_committed_and_counted() {
        let progress = Progress::new("g");
        progress.assigned(&list(&[("t", 0)]));
        let p0 = key("t", 0);
        let epoch = progress.epoch(&p0).unwrap();
        progress.finished(&p0, epoch, 3, true);
        let first = progress.to_commit().unwrap();
        assert_eq!(offsets(&first), [("t".into(), 0, Offset::Offset(3))]);
        assert_eq!(first.counts[0].2, 1);
        // Records 4 and 5 finished while record 3 still runs: nothing past 3 is committed.
        progress.finished(&p0, epoch, 3, true);
        progress.finished(&p0, epoch, 3, false);
        assert!(progress.to_commit().is_none(), "record 3 is not finished");
        progress.finished(&p0, epoch, 6, true);
        let second = progress.to_commit().unwrap();
        assert_eq!(offsets(&second), [("t".into(), 0, Offset::Offset(6))]);
        assert_eq!(second.counts[0].2, 2, "records 3 and 4 handled, 5 dead-lettered");
    }

    #[test]
    fn a_failed_commit_is_committed_again_with_what_finished_since() {
        let progress = Progress::new("g");
        progress.assigned(&list(&[("t", 0)]));
        let p0 = key("t", 0);
        let epoch = progress.epoch(&p0).unwrap();
        progress.finished(&p0, epoch, 2, true);
        let batch = progress.to_commit().unwrap();
        progress.finished(&p0, epoch, 3, true);
        progress.commit_failed(batch);
        let again = progress.to_commit().unwrap();
        assert_eq!(offsets(&again), [("t".into(), 0, Offset::Offset(3))]);
        assert_eq!(again.counts[0].2, 2, "both handled records counted once");
    }

    #[test]
    fn revoked_partitions_hand_back_what_they_finished_and_ignore_older_epochs() {
        let progress = Progress::new("g");
        progress.assigned(&list(&[("t", 0), ("t", 1)]));
        let (p0, p1) = (key("t", 0), key("t", 1));
        let old = progress.epoch(&p0).unwrap();
        progress.finished(&p0, old, 4, true);
        let batch = progress.revoked(&list(&[("t", 0)])).expect("p0 finished records");
        assert_eq!(offsets(&batch), [("t".into(), 0, Offset::Offset(4))]);
        assert_eq!(progress.epoch(&p0), None, "no longer ours");
        assert!(progress.epoch(&p1).is_some());
        // A record of the old assignment that finishes after the revocation commits nothing,
        // even once the partition is ours again.
        progress.assigned(&list(&[("t", 0)]));
        assert_ne!(progress.epoch(&p0), Some(old));
        progress.finished(&p0, old, 8, true);
        assert!(progress.to_commit().is_none());
        assert!(
            progress.revoked(&list(&[("t", 1)])).is_none(),
            "p1 finished nothing"
        );
    }

    #[test]
    fn a_long_queue_pauses_its_partition_until_it_drains() {
        let progress = Progress::new("g");
        let p0 = key("t", 0);
        for _ in 0..PAUSE_ABOVE {
            assert_eq!(progress.enqueued(&p0), FlowChange::None);
        }
        assert_eq!(progress.enqueued(&p0), FlowChange::Pause);
        assert_eq!(progress.enqueued(&p0), FlowChange::None, "paused once");
        let mut resumed = 0;
        for _ in 0..PAUSE_ABOVE + 2 {
            if progress.dequeued(&p0) == FlowChange::Resume {
                resumed += 1;
            }
        }
        assert_eq!(resumed, 1);
        // A new assignment starts unpaused: the consumer resumes its partitions then.
        for _ in 0..=PAUSE_ABOVE {
            progress.enqueued(&p0);
        }
        progress.assigned(&list(&[("t", 0)]));
        assert_eq!(progress.enqueued(&p0), FlowChange::Pause);
    }
}
