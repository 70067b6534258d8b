//! The records of one partition a consumer has in hand, in lanes by record key: the records
//! of one key are handled one after another in partition order, records of different keys at
//! the same time.
//!
//! What may be committed is the offset of the oldest unfinished record (every record before it
//! finished), or, once every record taken finished, the offset after the last one: an offset
//! is still only committed once its record and every earlier one of its partition finished.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Records one Kafka partition's worker (or one in-process consumer of a topic) has in hand at
/// most (running, or waiting behind an earlier record of their key); at that many it takes
/// nothing more from its queue until one finishes.
///
/// One record at a time per partition let one event a handler retries (its store briefly
/// down for that order) hold back every other key of the partition, and gave a handler's
/// store at most one write in flight per partition (the warehouse's group commit never saw
/// more than 3 routings, docs/performance.md "Events"). 16 fills a group commit and bounds
/// what a store outage has retrying at once.
pub(super) const IN_HAND: usize = 16;

/// A record's key; records without a key share one lane.
pub(super) type LaneKey = Option<Vec<u8>>;

/// One partition's records in hand, of one assignment (offsets only grow).
#[derive(Debug)]
pub(super) struct Lanes<T> {
    /// Every key with a record running: the records of that key waiting behind it, in order.
    busy: HashMap<LaneKey, VecDeque<T>>,
    /// Offsets taken and not finished (running or waiting).
    unfinished: BTreeSet<i64>,
    /// The offset after the last record taken.
    next: Option<i64>,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self {
            busy: HashMap::new(),
            unfinished: BTreeSet::new(),
            next: None,
        }
    }
}

impl<T> Lanes<T> {
    /// Records taken and not finished: running, or waiting behind an earlier one of their key.
    pub(super) fn in_hand(&self) -> usize {
        self.unfinished.len()
    }

    /// Takes `record`, at `offset` (past every offset taken before) with `key`: hands it back
    /// when it may start now, or keeps it until the record of its key before it finished.
    pub(super) fn take(&mut self, offset: i64, key: LaneKey, record: T) -> Option<T> {
        self.unfinished.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
        match self.busy.entry(key) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push_back(record);
                None
            }
            Entry::Vacant(lane) => {
                lane.insert(VecDeque::new());
                Some(record)
            }
        }
    }

    /// The running record at `offset` with `key` finished: hands back the next record of its
    /// key, which starts now (its lane stays busy), if one waits.
    pub(super) fn finish(&mut self, offset: i64, key: &LaneKey) -> Option<T> {
        self.unfinished.remove(&offset);
        let waiting = self.busy.get_mut(key)?;
        let next = waiting.pop_front();
        if next.is_none() {
            self.busy.remove(key);
        }
        next
    }

    /// The offset to commit: every record before it finished. `None` before any was taken.
    pub(super) fn done_up_to(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> LaneKey {
        Some(k.as_bytes().to_vec())
    }

    #[test]
    fn records_of_one_key_wait_for_each_other_and_other_keys_start_at_once() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.done_up_to(), None);
        assert_eq!(lanes.take(10, key("a"), "a1"), Some("a1"));
        assert_eq!(lanes.take(11, key("a"), "a2"), None, "behind a1");
        assert_eq!(lanes.take(12, key("b"), "b1"), Some("b1"), "another key");
        assert_eq!(lanes.take(13, None, "n1"), Some("n1"));
        assert_eq!(lanes.take(14, None, "n2"), None, "keyless records share a lane");
        assert_eq!(lanes.take(15, key("a"), "a3"), None);
        assert_eq!(lanes.in_hand(), 6);

        assert_eq!(lanes.finish(10, &key("a")), Some("a2"), "a's next starts");
        assert_eq!(lanes.finish(11, &key("a")), Some("a3"), "in partition order");
        assert_eq!(lanes.finish(15, &key("a")), None);
        assert_eq!(
            lanes.take(16, key("a"), "a4"),
            Some("a4"),
            "a's lane is free again"
        );
        assert_eq!(lanes.finish(13, &None), Some("n2"));
        assert_eq!(lanes.in_hand(), 3);
    }

    #[test]
    fn commits_up_to_the_oldest_unfinished_record_only() {
        let mut lanes = Lanes::default();
        for (offset, k) in [(3, "a"), (4, "b"), (5, "c")] {
            assert!(lanes.take(offset, key(k), ()).is_some());
        }
        assert_eq!(lanes.done_up_to(), Some(3), "nothing finished");
        lanes.finish(5, &key("c"));
        lanes.finish(4, &key("b"));
        assert_eq!(
            lanes.done_up_to(),
            Some(3),
            "later records finished, record 3 did not: nothing past it"
        );
        lanes.finish(3, &key("a"));
        assert_eq!(lanes.done_up_to(), Some(6), "all finished: after the last one");
        assert_eq!(lanes.in_hand(), 0);
    }
}
