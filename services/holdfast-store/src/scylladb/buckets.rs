//! Index tables spread over a fixed number of partitions ("buckets"), read back in one
//! global order.
//!
//! The store-wide listings (pending outbox events by id, stalled sagas by lease end) cannot
//! live in one partition without making it a hot spot, so their index rows go to
//! `fnv1a(id) % BUCKETS`. A listing reads every bucket from a cursor and merges them: a
//! k-way merge that reads a bucket again only when its buffered rows ran out, so the
//! merged order is exact however the rows are spread.

use std::collections::VecDeque;

use crate::cursor::fnv1a;

/// Partitions of each bucketed index. Fixed forever: a row's bucket derives from it.
pub(super) const BUCKETS: usize = 16;

/// The bucket of the index row for `id`.
pub(super) fn bucket_of(id: &str) -> i32 {
    // BUCKETS is far below i32::MAX, so the remainder always fits.
    (fnv1a(id) % BUCKETS as u32) as i32
}

/// Rows to read from one bucket at a time for a listing of `limit`: enough that a listing
/// spread evenly needs one read per bucket, never so few that a skewed one crawls.
pub(super) fn chunk_for(limit: usize) -> usize {
    (limit.div_ceil(BUCKETS) * 2).max(8)
}

/// What the merge needs next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step<K, R> {
    /// The next row in key order.
    Row(R),
    /// Read these buckets, each strictly after its key, and hand the rows to
    /// [`BucketMerge::refill`] before asking again.
    Read(Vec<(usize, K)>),
    /// Every bucket is read to its end.
    Done,
}

/// A k-way merge over bucket partitions read in key order.
pub(super) struct BucketMerge<K, R> {
    buckets: Vec<Bucket<K, R>>,
    key: fn(&R) -> K,
}

struct Bucket<K, R> {
    buffered: VecDeque<R>,
    /// The last key read from this bucket (the start key before the first read).
    after: K,
    exhausted: bool,
}

impl<K: Ord + Clone, R> BucketMerge<K, R> {
    /// A merge over `count` buckets, each read from just after `start`.
    pub(super) fn new(count: usize, start: K, key: fn(&R) -> K) -> Self {
        Self {
            buckets: (0..count)
                .map(|_| Bucket {
                    buffered: VecDeque::new(),
                    after: start.clone(),
                    exhausted: false,
                })
                .collect(),
            key,
        }
    }

    /// The next step. A bucket with nothing buffered that may hold more must be read
    /// first: its next row could be the smallest.
    pub(super) fn next(&mut self) -> Step<K, R> {
        let starved: Vec<(usize, K)> = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, bucket)| bucket.buffered.is_empty() && !bucket.exhausted)
            .map(|(index, bucket)| (index, bucket.after.clone()))
            .collect();
        if !starved.is_empty() {
            return Step::Read(starved);
        }
        let smallest = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(index, bucket)| bucket.buffered.front().map(|row| (index, (self.key)(row))))
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(index, _)| index);
        match smallest.and_then(|index| self.buckets[index].buffered.pop_front()) {
            Some(row) => Step::Row(row),
            None => Step::Done,
        }
    }

    /// Hands over the rows read for `bucket` (in key order, after its last key). Fewer
    /// than `asked` rows means the bucket has no more.
    pub(super) fn refill(&mut self, bucket: usize, rows: Vec<R>, asked: usize) {
        let Some(state) = self.buckets.get_mut(bucket) else {
            return;
        };
        state.exhausted = rows.len() < asked;
        if let Some(last) = rows.last() {
            state.after = (self.key)(last);
        }
        state.buffered.extend(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drives a merge over in-memory buckets the way the store drives it over ScyllaDB,
    /// returning the merged rows and how many reads it took.
    fn merge_all(buckets: &[Vec<u32>], chunk: usize) -> (Vec<u32>, usize) {
        let mut sorted: Vec<Vec<u32>> = buckets.to_vec();
        for bucket in &mut sorted {
            bucket.sort_unstable();
            bucket.dedup();
        }
        let mut merge = BucketMerge::new(sorted.len(), None, |row: &u32| Some(*row));
        let (mut out, mut reads) = (Vec::new(), 0);
        loop {
            match merge.next() {
                Step::Row(row) => out.push(row),
                Step::Done => return (out, reads),
                Step::Read(wanted) => {
                    for (bucket, after) in wanted {
                        reads += 1;
                        let rows: Vec<u32> = sorted[bucket]
                            .iter()
                            .copied()
                            .filter(|row| after.is_none_or(|after| Some(*row) > Some(after)))
                            .take(chunk)
                            .collect();
                        merge.refill(bucket, rows, chunk);
                    }
                }
            }
        }
    }

    #[test]
    fn merge_interleaves_buckets_in_key_order() {
        let (out, _) = merge_all(&[vec![1, 4, 9, 10, 11], vec![], vec![2, 3, 12], vec![5]], 2);
        assert_eq!(out, [1, 2, 3, 4, 5, 9, 10, 11, 12]);
    }

    #[test]
    fn merge_reads_a_bucket_again_only_when_its_buffer_ran_out() {
        // Two buckets of 4 rows, chunk 4: each is read once, then once more to learn
        // that it ended (a full chunk may be followed by more).
        let (out, reads) = merge_all(&[vec![1, 3, 5, 7], vec![2, 4, 6, 8]], 4);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(reads, 4);
        let (_, reads) = merge_all(&[vec![1, 3, 5], vec![2, 4, 6]], 4);
        assert_eq!(reads, 2, "a short chunk ends its bucket");
    }

    #[test]
    fn bucket_of_is_stable_and_in_range() {
        assert_eq!(bucket_of("a"), (0xe40c_292c_u32 % 16) as i32);
        for id in ["", "a", "évènement", "0190a1b2-0000-7000-8000-000000000000"] {
            assert!((0..BUCKETS as i32).contains(&bucket_of(id)));
        }
        assert_eq!(chunk_for(1), 8);
        assert_eq!(chunk_for(1000), 126);
    }

    proptest! {
        #[test]
        fn merge_equals_sorting_everything(
            buckets in proptest::collection::vec(proptest::collection::vec(0_u32..500, 0..40), 1..20),
            chunk in 1_usize..10,
        ) {
            let (out, _) = merge_all(&buckets, chunk);
            let mut expected: Vec<u32> = buckets.iter().flat_map(|b| {
                let mut b = b.clone();
                b.sort_unstable();
                b.dedup();
                b
            }).collect();
            expected.sort_unstable();
            prop_assert_eq!(out, expected);
        }
    }
}
