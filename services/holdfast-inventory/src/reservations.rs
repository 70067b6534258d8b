//! The reservation protocols: multi-line, all-or-nothing holds across SKUs that may live on
//! different Redis Cluster slots, built from single-slot scripts plus a reservation record
//! (`keys::reservation`) that makes every step idempotent and every crash recoverable.
//!
//! Reserve: claim the record (pending, under a lease) -> hold every line -> reserved, or
//! release what was held -> rejected. Commit: reserved -> preparing (extend every hold so
//! nothing can lapse mid-commit) -> committing -> commit every line -> committed.

use std::time::Duration;

use fred::prelude::{ClientLike, Expiration, KeysInterface, SetOptions, SortedSetsInterface};
use fred::types::sorted_sets::Ordering;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use holdfast_platform::admission::RateLimit;

use crate::error::InventoryError;
use crate::keys::{self, BucketKeys};
use crate::metrics;
use crate::scripts::{self, Claim, Hold, Record, Transition};
use crate::stock::Stock;

/// How long an expiring reservation record is kept after its hold TTL, so retries within a
/// day still get the first answer.
pub const RECORD_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a refused reservation's record is kept: long enough that a client's retries of the
/// same call (deadlines, backoff) get the same refusal, short enough that anonymous refused
/// calls cannot park keys in Redis for a day. A retry after it is a fresh attempt.
pub const REJECTED_RETENTION: Duration = Duration::from_secs(10 * 60);
/// How long a hot SKU's sold-out marker short-circuits reservations before it is re-checked.
pub const SOLD_OUT_MARKER: Duration = Duration::from_millis(500);

/// One summed line of a reservation and the bucket it is held in. Stored in the record as
/// a JSON tuple `["sku", qty, bucket]`: every live reservation carries it, so bytes count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, i64, u32)", into = "(String, i64, u32)")]
pub struct Line {
    /// SKU.
    pub sku: String,
    /// Units.
    pub qty: i64,
    /// Bucket holding them (0 for a plain SKU).
    pub bucket: u32,
}

impl Line {
    /// The keys of the bucket holding this line's units.
    pub fn keys(&self) -> BucketKeys {
        BucketKeys::new(&self.sku, self.bucket)
    }
}

/// A line that could not be held (stored as `["sku", requested, available]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, i64, i64)", into = "(String, i64, i64)")]
pub struct Shortage {
    /// SKU.
    pub sku: String,
    /// Units asked for.
    pub requested: i64,
    /// Units available when tried.
    pub available: i64,
}

impl From<(String, i64, u32)> for Line {
    fn from((sku, qty, bucket): (String, i64, u32)) -> Self {
        Self { sku, qty, bucket }
    }
}

impl From<Line> for (String, i64, u32) {
    fn from(line: Line) -> Self {
        (line.sku, line.qty, line.bucket)
    }
}

impl From<(String, i64, i64)> for Shortage {
    fn from((sku, requested, available): (String, i64, i64)) -> Self {
        Self {
            sku,
            requested,
            available,
        }
    }
}

impl From<Shortage> for (String, i64, i64) {
    fn from(s: Shortage) -> Self {
        (s.sku, s.requested, s.available)
    }
}

/// The answer to Reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveAnswer {
    /// Every line is held until `expires_at` (Unix ms, Redis clock).
    Reserved {
        /// Earliest expiry among the lines.
        expires_at: i64,
    },
    /// Nothing is held.
    Insufficient(Vec<Shortage>),
}

pub(crate) fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Decodes a record's JSON field; empty or unreadable is the default.
pub(crate) fn decode<T: for<'de> Deserialize<'de> + Default>(raw: &str) -> T {
    if raw.is_empty() {
        return T::default();
    }
    serde_json::from_str(raw).unwrap_or_default()
}

/// FNV-1a 64 of the canonical request: stable across processes and versions, so a retry on
/// another replica is recognised as the same request.
pub fn fingerprint(lines: &[(String, i64)], ttl_seconds: u32) -> String {
    let canonical = encode(&(lines, ttl_seconds));
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

pub(crate) fn answer_from(record: &Record) -> ReserveAnswer {
    if record.state == "rejected" {
        ReserveAnswer::Insufficient(decode(&record.shortages))
    } else {
        ReserveAnswer::Reserved {
            expires_at: record.expires_at,
        }
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Stock {
    /// Holds every line (summed by SKU, sorted) for `ttl_seconds`, all or nothing, idempotent
    /// by `rid`.
    ///
    /// With a durable truth, a bucket Redis does not have (the reserve scripts answer `{-1}`
    /// for a bucket without `on_hand`, writing nothing) is never read as 0 units: the SKU is
    /// verified against the store ([`Stock::recheck_missing`]), rebuilt if the store knows it,
    /// and held once more; a SKU the store never saw stays short. A refusal is double-checked
    /// too: one beat of the generation marker (refusals only, so grants pay nothing). If Redis
    /// lost writes meanwhile, the refusal is dropped, the SKUs are rebuilt and the reservation
    /// is tried once more.
    pub async fn reserve(
        &self,
        rid: &str,
        lines: &[(String, i64)],
        ttl_seconds: u32,
    ) -> Result<ReserveAnswer, InventoryError> {
        self.reserve_admitting(rid, lines, ttl_seconds, None).await
    }

    /// Whether a Reserve of `lines` takes the coalesced path (one line of a one-bucket SKU on
    /// standalone Redis: `reserve_batch.lua`), where its admission can be decided in the same
    /// script call ([`Stock::reserve_admitting`]).
    pub async fn coalesces(&self, lines: &[(String, i64)]) -> Result<bool, InventoryError> {
        Ok(match lines {
            [(sku, _)] => !self.client().is_clustered() && self.layout(sku).await?.buckets <= 1,
            _ => false,
        })
    }

    /// [`Stock::reserve`], counted against the SKU's Reserve admission limit in its own script
    /// call when `admit` is set (with these flag defaults): a Reserve over the limit answers
    /// [`InventoryError::Limited`] and holds and records nothing. Only for Reserves that
    /// [`Stock::coalesces`]; any other takes its admission decision before.
    pub async fn reserve_admitting(
        &self,
        rid: &str,
        lines: &[(String, i64)],
        ttl_seconds: u32,
        admit: Option<RateLimit>,
    ) -> Result<ReserveAnswer, InventoryError> {
        let skus: Vec<&str> = lines.iter().map(|(sku, _)| sku.as_str()).collect();
        let era = self.truth().map(crate::guard::Truth::era);
        // In memory once the SKUs are verified in this era: no store round trip per Reserve.
        self.ensure_truth(&skus).await?;
        let (answer, from_marker) = self.reserve_once(rid, lines, ttl_seconds, admit).await?;
        let Some(era) = era else {
            return Ok(answer);
        };
        // A refusal of the local sold-out marker was checked when the marker was set (it
        // belongs to that era): no beat per attempt.
        if from_marker || !matches!(answer, ReserveAnswer::Insufficient(_)) {
            return Ok(answer);
        }
        self.check_generation().await?;
        if self.truth().map(crate::guard::Truth::era) == Some(era) {
            return Ok(answer);
        }
        // The refusal was read from a Redis that had lost writes: forget it and try again
        // on the rebuilt counts.
        scripts::reservation_forget(self.client(), rid).await?;
        self.ensure_truth(&skus).await?;
        // Admitted (or not counted) in the first pass: not counted again.
        Ok(self.reserve_once(rid, lines, ttl_seconds, None).await?.0)
    }

    async fn reserve_once(
        &self,
        rid: &str,
        lines: &[(String, i64)],
        ttl_seconds: u32,
        admit: Option<RateLimit>,
    ) -> Result<(ReserveAnswer, bool), InventoryError> {
        let client = self.client();
        let ttl_ms = i64::from(ttl_seconds) * 1000;
        let retention = ttl_ms + ms(RECORD_RETENTION);
        let requested: Vec<Line> = lines
            .iter()
            .map(|(sku, qty)| Line {
                sku: sku.clone(),
                qty: *qty,
                bucket: 0,
            })
            .collect();
        let fp = fingerprint(lines, ttl_seconds);

        // The flash-sale shape on a single server: one script does it all, no crash window,
        // coalesced with the other Reserves of the bucket (crate::coalesce).
        // With `admit`, the item is counted in that script call; a fallback below (a
        // multi-step Reserve of this id in flight) finds it admitted already.
        let coalesced = self.coalesces(lines).await?;
        if admit.is_some() && !coalesced {
            // The SKU's layout changed since the caller asked (restocked into several
            // buckets): its admission was left to a call this Reserve no longer makes. Nothing
            // is written; the retry is admitted before it runs.
            return Err(InventoryError::Busy(rid.to_string()));
        }
        if let [(sku, qty)] = lines
            && coalesced
            && let Some(answer) = self.reserve_whole(rid, sku, *qty, ttl_ms, &fp, admit).await?
        {
            return Ok(answer);
        }
        // Several lines on a single server: one script too (crate::reserve_lines).
        if let Some(answer) = self.reserve_lines(rid, lines, &requested, ttl_ms, &fp).await? {
            return Ok((answer, false));
        }

        let lease = self.settings().claim_lease;
        let owner = uuid::Uuid::now_v7().to_string();
        let mut backoff = Duration::from_millis(5);
        let taken_over = loop {
            match scripts::reservation_claim(
                client,
                rid,
                &fp,
                &encode(&requested),
                (ms(lease), retention),
                &owner,
            )
            .await?
            {
                Claim::Claimed(prior) => break prior.is_some(),
                Claim::Conflict => return Err(conflict(rid)),
                Claim::Existing(record) => return Ok((answer_from(&record), false)),
                Claim::Busy if backoff < lease => {
                    // Another call with this id is mid-flight; its answer is ours in a moment.
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Claim::Busy => return Err(InventoryError::Busy(rid.to_string())),
            }
        };
        // Renewed while this call works, so no retry takes over (and holds again) while it lives;
        // stops when this call returns or is dropped.
        let _heartbeat = Heartbeat::start(self.clone(), rid.to_string(), owner.clone(), lease);
        if taken_over {
            // The previous claimer died mid-way: give back whatever it held in any bucket,
            // then start over, so a retry can never hold twice.
            self.release_everywhere(rid, lines).await?;
        }

        let outcomes = try_join_all(
            lines
                .iter()
                .map(|(sku, qty)| self.hold_line(rid, sku, *qty, ttl_ms)),
        )
        .await;
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(error) => {
                // Redis failed mid-way: free what we can now; the rest lapses with its TTL and
                // the pending record lets a retry take over after the lease.
                let _ = self.release_everywhere(rid, lines).await;
                return Err(error);
            }
        };

        let mut held = Vec::new();
        let mut shortages = Vec::new();
        for ((sku, qty), outcome) in lines.iter().zip(outcomes) {
            match outcome {
                LineOutcome::Held { bucket, expires_at } => held.push((
                    Line {
                        sku: sku.clone(),
                        qty: *qty,
                        bucket,
                    },
                    expires_at,
                )),
                LineOutcome::Short { available } => shortages.push(Shortage {
                    sku: sku.clone(),
                    requested: *qty,
                    available,
                }),
            }
        }

        if shortages.is_empty() {
            let expires_at = held.iter().map(|(_, e)| *e).min().unwrap_or_default();
            let held_lines: Vec<Line> = held.iter().map(|(l, _)| l.clone()).collect();
            let encoded = encode(&held_lines);
            let index = held.iter().map(|(line, expiry)| self.index_expiry(line, *expiry));
            let (transition, _) = futures::join!(
                scripts::reservation_transition(
                    client,
                    rid,
                    Transition {
                        from: "pending",
                        to: "reserved",
                        expires_at: Some(expires_at),
                        retention_ms: retention,
                        lines: &encoded,
                        owner: &owner,
                        ..Default::default()
                    },
                ),
                futures::future::join_all(index),
            );
            let (moved, record) = transition?;
            if !moved && record.state == "pending" {
                // Taken over after all (this call stalled past its lease): the taker answers.
                return Err(InventoryError::Busy(rid.to_string()));
            }
            self.touched(held_lines.iter().map(Line::keys));
            metrics::holds_created(held_lines.len());
            if moved {
                self.line_hints().remember(rid, &encoded);
            }
            return Ok((
                if moved {
                    ReserveAnswer::Reserved { expires_at }
                } else {
                    answer_from(&record)
                },
                false,
            ));
        }

        metrics::reservation_rejected();
        for (line, _) in &held {
            scripts::release(client, &BucketKeys::new(&line.sku, line.bucket), rid).await?;
        }
        self.touched(held.iter().map(|(l, _)| BucketKeys::new(&l.sku, l.bucket)));
        let (moved, record) = scripts::reservation_transition(
            client,
            rid,
            Transition {
                from: "pending",
                to: "rejected",
                shortages: &encode(&shortages),
                retention_ms: ms(REJECTED_RETENTION),
                owner: &owner,
                ..Default::default()
            },
        )
        .await?;
        if !moved && record.state == "pending" {
            return Err(InventoryError::Busy(rid.to_string()));
        }
        Ok((
            if moved {
                ReserveAnswer::Insufficient(shortages)
            } else {
                answer_from(&record)
            },
            false,
        ))
    }

    pub(crate) async fn index_expiry(&self, line: &Line, expires_at: i64) {
        let tag = BucketKeys::new(&line.sku, line.bucket).tag;
        // Keep the earliest expiry per bucket: the sweeper wakes for the first lapse.
        let result: Result<i64, _> = self
            .client()
            .zadd(
                keys::expiry_index(&tag),
                None,
                Some(Ordering::LessThan),
                false,
                false,
                (expires_at as f64, tag),
            )
            .await;
        if let Err(error) = result {
            // Lazy expiry still frees the units; only the sweeper's promptness suffers.
            tracing::warn!(%error, "could not index hold expiry");
        }
    }

    async fn hold_line(
        &self,
        rid: &str,
        sku: &str,
        qty: i64,
        ttl_ms: i64,
    ) -> Result<LineOutcome, InventoryError> {
        self.hold_line_scan(rid, sku, qty, ttl_ms, true).await
    }

    async fn hold_line_scan(
        &self,
        rid: &str,
        sku: &str,
        qty: i64,
        ttl_ms: i64,
        may_rescan: bool,
    ) -> Result<LineOutcome, InventoryError> {
        let client = self.client();
        let layout = self.layout(sku).await?;
        if layout.buckets <= 1 {
            if self.locally_sold_out(sku) {
                // This call owns its record: the marker's refusal needs no round trip.
                metrics::sold_out_short_circuit();
                return Ok(LineOutcome::Short { available: 0 });
            }
            let keys = BucketKeys::new(sku, 0);
            return Ok(match scripts::reserve(client, &keys, rid, qty, ttl_ms).await? {
                Hold::Held { expires_at } => LineOutcome::Held {
                    bucket: 0,
                    expires_at,
                },
                Hold::Short { available } => LineOutcome::Short { available },
                // No bucket in Redis: rebuilt from the durable truth if it knows the SKU, then
                // tried once more; never stocked: short, as ever.
                Hold::Missing if may_rescan && self.recheck_missing(sku).await? => {
                    return Box::pin(self.hold_line_scan(rid, sku, qty, ttl_ms, false)).await;
                }
                Hold::Missing => LineOutcome::Short { available: 0 },
            });
        }

        // Hot SKU: the sold-out marker answers at once when every bucket was found empty.
        let marker: Option<String> = client.get(keys::sold_out(sku)).await?;
        if marker.is_some() {
            metrics::sold_out_short_circuit();
            return Ok(LineOutcome::Short { available: 0 });
        }
        let n = layout.buckets;
        let home = home_bucket(rid, n);
        let mut total_available = 0;
        let mut availability = vec![0i64; n as usize];
        for step in 0..n {
            let bucket = (home + step) % n;
            match scripts::reserve(client, &BucketKeys::new(sku, bucket), rid, qty, ttl_ms).await? {
                Hold::Held { expires_at } => return Ok(LineOutcome::Held { bucket, expires_at }),
                Hold::Short { available } => {
                    availability[bucket as usize] = available;
                    total_available += available;
                }
                Hold::Missing if may_rescan && self.recheck_missing(sku).await? => {
                    return Box::pin(self.hold_line_scan(rid, sku, qty, ttl_ms, false)).await;
                }
                Hold::Missing => {}
            }
        }
        if total_available == 0 {
            // Before telling every buyer "sold out", read all buckets once more: a transfer in
            // flight during our scan may have landed in a bucket we had already passed.
            let recheck: i64 = self
                .bucket_levels(sku)
                .await?
                .iter()
                .take(n as usize)
                .map(|b| b.levels.available())
                .sum();
            if recheck > 0 && may_rescan {
                return Box::pin(self.hold_line_scan(rid, sku, qty, ttl_ms, false)).await;
            }
            if recheck > 0 {
                return Ok(LineOutcome::Short { available: recheck });
            }
            let _: Option<String> = client
                .set(
                    keys::sold_out(sku),
                    "1",
                    Some(Expiration::PX(ms(SOLD_OUT_MARKER))),
                    None::<SetOptions>,
                    false,
                )
                .await?;
            return Ok(LineOutcome::Short { available: 0 });
        }
        if total_available < qty {
            return Ok(LineOutcome::Short {
                available: total_available,
            });
        }
        // Enough stock, but spread thin: gather it into the home bucket and try once more.
        self.gather(sku, home, qty - availability[home as usize], &availability)
            .await?;
        Ok(
            match scripts::reserve(client, &BucketKeys::new(sku, home), rid, qty, ttl_ms).await? {
                Hold::Held { expires_at } => LineOutcome::Held {
                    bucket: home,
                    expires_at,
                },
                Hold::Short { available } => LineOutcome::Short { available },
                Hold::Missing => LineOutcome::Short { available: 0 },
            },
        )
    }

    /// Releases `rid` in every bucket of every SKU in `lines` (recovery after a takeover).
    async fn release_everywhere(&self, rid: &str, lines: &[(String, i64)]) -> Result<(), InventoryError> {
        for (sku, _) in lines {
            let layout = self.layout(sku).await?;
            for bucket in 0..layout.buckets_max.max(1) {
                let keys = BucketKeys::new(sku, bucket);
                scripts::release(self.client(), &keys, rid).await?;
                self.touched([keys]);
            }
        }
        Ok(())
    }
}

/// Renews a running Reserve's claim lease every third of the lease until dropped (or until
/// the claim is no longer this caller's).
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    /// Starts renewing `owner`'s claim on the record of `rid`.
    pub fn start(stock: Stock, rid: String, owner: String, lease: Duration) -> Self {
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval((lease / 3).max(Duration::from_millis(1)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await; // the claim was just taken
            loop {
                every.tick().await;
                match scripts::reservation_renew(stock.client(), &rid, &owner, ms(lease)).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    // The next tick tries again; a lease outliving a Redis blip is the point.
                    Err(error) => tracing::warn!(%error, "claim renewal failed"),
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn conflict(rid: &str) -> InventoryError {
    InventoryError::Conflict(format!(
        "reservation_id {rid:?} was already used with different lines or ttl"
    ))
}

/// The precondition failure of a lapsed reservation.
pub(crate) fn expired(rid: &str) -> InventoryError {
    InventoryError::precondition(
        "RESERVATION_EXPIRED",
        rid,
        "reservation expired; its units went back to stock",
    )
}

/// Where a line's hold landed.
#[derive(Debug, Clone, Copy)]
enum LineOutcome {
    Held { bucket: u32, expires_at: i64 },
    Short { available: i64 },
}

/// The bucket a reservation tries first: spread by id, so concurrent buyers of one hot SKU
/// start on different shards.
pub fn home_bucket(rid: &str, buckets: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in rid.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % buckets.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = fingerprint(&[("A".into(), 1)], 600);
        assert_eq!(a, fingerprint(&[("A".into(), 1)], 600));
        assert_ne!(a, fingerprint(&[("A".into(), 2)], 600));
        assert_ne!(a, fingerprint(&[("A".into(), 1)], 60));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn home_bucket_spreads_ids() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            seen.insert(home_bucket(&format!("r{i}"), 8));
        }
        assert_eq!(seen.len(), 8);
        assert_eq!(home_bucket("x", 1), 0);
    }

    #[test]
    fn records_decode_what_they_encode() {
        let lines = vec![Line {
            sku: "A:b;c".into(),
            qty: 3,
            bucket: 2,
        }];
        assert_eq!(encode(&lines), r#"[["A:b;c",3,2]]"#, "compact tuples");
        assert_eq!(decode::<Vec<Line>>(&encode(&lines)), lines);
        assert!(decode::<Vec<Line>>("").is_empty());
    }
}
