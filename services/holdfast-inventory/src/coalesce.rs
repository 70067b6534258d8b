//! The Reserve hot path on one plain bucket (one line, standalone Redis): coalesced into
//! `reserve_batch.lua` calls ([`crate::batcher`]), with a local sold-out marker in front.
//!
//! The sold-out marker is local to the process and only ever refuses: a grant always goes
//! through the script. It is set when a script call finds the bucket empty, lives
//! [`crate::hot_path::LOCAL_SOLD_OUT`] at most and never past the moment the bucket's first live hold lapses
//! (timed from before the call was sent, so Redis's clock is never behind it), belongs to the
//! truth era it was set in (a new era voids it), and is dropped at once by every change this
//! process makes or sees that can free units: Release, the expiry sweep, SetStock,
//! AdjustStock, a region transfer or move in, a truth rebuild, the rebalancer, a level read or
//! a script answer that finds free units, and every outbox entry the relay publishes other
//! than a hold, a sale or a debit. Another process's restock reaches this one through its
//! outbox (relayed by whichever process touched the bucket) or, at worst, the marker's expiry.
//! While it stands, the SKU's Reserves queue in a lane of their own (always coalesced, up to
//! [`crate::scripts::MAX_BATCH`] per call, never behind a live call of the bucket) and the call, if the
//! marker still stands when it is sent, runs `reserve_batch.lua` in `sold_out` mode: the
//! bucket is not read (no TIME, purge, counters); a repeated id gets its first answer and
//! every other item is refused and recorded as usual (a refusal stays the answer to its id);
//! one round trip per batch.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use holdfast_platform::admission::{self, RateLimit};

use crate::error::InventoryError;
use crate::hot_path::{LOCAL_SOLD_OUT, Queued};
use crate::keys::BucketKeys;
use crate::metrics;
use crate::reservations::{
    Line, RECORD_RETENTION, REJECTED_RETENTION, ReserveAnswer, answer_from, conflict, decode, encode, ms,
};
use crate::scripts::{self, BatchItem, BatchMode, SingleReserve};
use crate::stock::Stock;

impl Stock {
    fn era_now(&self) -> u64 {
        self.truth().map_or(0, crate::guard::Truth::era)
    }

    /// Whether `sku` is marked sold out locally (in the current era).
    pub fn locally_sold_out(&self, sku: &str) -> bool {
        self.hot_path().is_sold_out(sku, self.era_now())
    }

    /// Drops `sku`'s local sold-out marker (units may be free again).
    pub fn forget_sold_out(&self, sku: &str) {
        self.hot_path().clear_sold_out(sku);
    }

    /// The one-line, one-bucket Reserve on standalone Redis: one item of a `reserve_batch.lua`
    /// call (claim, purge, hold, record and index in one atomic step, as `reserve_single.lua`),
    /// coalesced with the other Reserves of the bucket. `None`: a multi-step Reserve of this
    /// id is mid-flight, take the path that waits for it. The flag is true for a refusal of
    /// the local sold-out marker.
    pub(crate) async fn reserve_whole(
        &self,
        rid: &str,
        sku: &str,
        qty: i64,
        ttl_ms: i64,
        fp: &str,
        admit: Option<RateLimit>,
    ) -> Result<Option<(ReserveAnswer, bool)>, InventoryError> {
        let single = [Line {
            sku: sku.to_string(),
            qty,
            bucket: 0,
        }];
        let mut item = BatchItem {
            rid: rid.to_string(),
            qty,
            ttl_ms,
            fingerprint: fp.to_string(),
            lines: encode(&single),
            admit,
        };
        let mut missing_is_empty = false;
        let mut rechecked = false;
        loop {
            let (outcome, from_marker) = self.reserve_item(sku, &item, missing_is_empty).await?;
            // Counted once: a second pass over a missing bucket was admitted by the first.
            item.admit = None;
            return Ok(match outcome {
                SingleReserve::Reserved(expires_at) => {
                    metrics::holds_created(1);
                    self.line_hints().remember(rid, &item.lines);
                    Some((ReserveAnswer::Reserved { expires_at }, false))
                }
                SingleReserve::Rejected(shortages) => {
                    metrics::reservation_rejected();
                    Some((ReserveAnswer::Insufficient(decode(&shortages)), from_marker))
                }
                SingleReserve::Existing(record) => Some((answer_from(&record), false)),
                SingleReserve::Conflict => return Err(conflict(rid)),
                SingleReserve::Busy => None,
                SingleReserve::Limited(retry_ms) => {
                    return Err(InventoryError::Limited {
                        sku: sku.to_string(),
                        retry_after: Duration::from_millis(retry_ms.max(1).unsigned_abs()),
                    });
                }
                // No bucket in Redis: lost (rebuilt now from the durable truth: once more) or
                // never stocked (refused and recorded, as the multi-step path would).
                SingleReserve::Missing => {
                    // The bucket is gone: a marker set before the loss says nothing now.
                    self.hot_path().clear_sold_out(sku);
                    if !rechecked && self.recheck_missing(sku).await? {
                        rechecked = true;
                    } else {
                        missing_is_empty = true;
                    }
                    continue;
                }
            });
        }
    }

    async fn reserve_item(
        &self,
        sku: &str,
        item: &BatchItem,
        missing_is_empty: bool,
    ) -> Result<Queued, InventoryError> {
        let keys = BucketKeys::new(sku, 0);
        let era = self.era_now();
        let hot = self.hot_path();
        // The rare second pass over a missing bucket runs alone: a batch has one mode.
        let lane = if missing_is_empty {
            None
        } else if hot.is_sold_out(sku, era) {
            Some(&hot.refusals)
        } else {
            hot.batcher.as_ref()
        };
        match lane {
            Some(batcher) => {
                let tag = keys.tag.clone();
                batcher
                    .submit(&tag, item.clone(), |items| async move {
                        self.run_batch(&keys, era, items, false).await
                    })
                    .await
            }
            None => {
                let mut answers = self
                    .run_batch(&keys, era, vec![item.clone()], missing_is_empty)
                    .await?;
                answers.pop().ok_or_else(|| InventoryError::Protocol {
                    script: "reserve_batch.lua",
                    detail: "no answer".into(),
                })
            }
        }
    }

    async fn run_batch(
        &self,
        keys: &BucketKeys,
        era: u64,
        items: Vec<BatchItem>,
        missing_is_empty: bool,
    ) -> Result<Vec<Queued>, InventoryError> {
        let hot = self.hot_path();
        let sold_out = !missing_is_empty && hot.is_sold_out(&keys.sku, era);
        let clears_seen = hot.clears.load(Ordering::SeqCst);
        // Before the call is sent: a marker timed from here never outlives a hold lapsing on
        // the Redis clock (the reply's delay only shortens it).
        let sent = Instant::now();
        let mode = if sold_out {
            BatchMode::SoldOut
        } else {
            BatchMode::Live { missing_is_empty }
        };
        let reply = scripts::reserve_batch(
            self.client(),
            keys,
            &items,
            (ms(RECORD_RETENTION), ms(REJECTED_RETENTION)),
            mode,
        )
        .await?;
        count_admission(&keys.sku, &items, &reply.outcomes);
        if sold_out {
            for _ in &items {
                metrics::sold_out_short_circuit();
            }
            return Ok(reply.outcomes.into_iter().map(|o| (o, true)).collect());
        }
        match reply.available {
            Some(0) => {
                let lapse = reply.lapse_in_ms.map_or(LOCAL_SOLD_OUT, |lapse| {
                    Duration::from_millis(lapse.unsigned_abs())
                });
                hot.mark_sold_out(&keys.sku, era, clears_seen, sent + lapse.min(LOCAL_SOLD_OUT));
            }
            Some(_) => hot.clear_sold_out(&keys.sku),
            None => {}
        }
        if reply
            .outcomes
            .iter()
            .any(|o| matches!(o, SingleReserve::Reserved(_)))
        {
            self.touched([keys.clone()]);
        }
        Ok(reply.outcomes.into_iter().map(|o| (o, false)).collect())
    }
}

/// The admission decisions a call made for its counted items, in the limiter's metric.
fn count_admission(sku: &str, items: &[BatchItem], outcomes: &[SingleReserve]) {
    let counted = items.iter().filter(|item| item.admit.is_some()).count();
    if counted == 0 {
        return;
    }
    let limited = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, SingleReserve::Limited(_)))
        .count();
    let subject = admission::Subject::Sku(sku);
    admission::count(
        admission::Operation::Reserve,
        subject,
        "admitted",
        counted - limited,
    );
    admission::count(admission::Operation::Reserve, subject, "limited", limited);
}
