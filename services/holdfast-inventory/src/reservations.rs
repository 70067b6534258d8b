//! The reservation protocols: multi-line, all-or-nothing holds across SKUs that may live on
//! different Redis Cluster slots, built from single-slot scripts plus a reservation record
//! (`res:{rid}`) that makes every step idempotent and every crash recoverable.
//!
//! Reserve: claim the record (pending, under a lease) -> hold every line -> reserved, or
//! release what was held -> rejected. Commit: reserved -> preparing (extend every hold so
//! nothing can lapse mid-commit) -> committing -> commit every line -> committed.

use std::time::Duration;

use fred::prelude::{ClientLike, Expiration, KeysInterface, SetOptions, SortedSetsInterface};
use fred::types::sorted_sets::Ordering;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::error::InventoryError;
use crate::keys::{self, BucketKeys};
use crate::metrics;
use crate::scripts::{self, Claim, Hold, Record, SingleReserve, Transition};
use crate::stock::Stock;

/// How long an expiring reservation record is kept after its hold TTL, so retries within a
/// day still get the first answer.
pub const RECORD_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a refused reservation's record is kept: long enough that a client's retries of the
/// same call (deadlines, backoff) get the same refusal, short enough that anonymous refused
/// calls cannot park keys in Redis for a day. A retry after it is a fresh attempt.
pub const REJECTED_RETENTION: Duration = Duration::from_secs(10 * 60);
/// How long a claimer owns a pending record before another caller may take over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(5);
/// Hold lifetime while a commit is under way: long enough that a crashed committer's holds
/// outlive any retry, so a missing hold in `committing` can only mean "already committed".
pub const COMMIT_LEASE: Duration = Duration::from_secs(24 * 3600);
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

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de> + Default>(raw: &str) -> T {
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

fn answer_from(record: &Record) -> ReserveAnswer {
    if record.state == "rejected" {
        ReserveAnswer::Insufficient(decode(&record.shortages))
    } else {
        ReserveAnswer::Reserved {
            expires_at: record.expires_at,
        }
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Stock {
    /// Holds every line (summed by SKU, sorted) for `ttl_seconds`, all or nothing, idempotent
    /// by `rid`.
    pub async fn reserve(
        &self,
        rid: &str,
        lines: &[(String, i64)],
        ttl_seconds: u32,
    ) -> Result<ReserveAnswer, InventoryError> {
        let client = self.client();
        let ttl_ms = i64::from(ttl_seconds) * 1000;
        let retention = ttl_ms + ms(RECORD_RETENTION);
        let record_key = keys::reservation(rid);
        let requested: Vec<Line> = lines
            .iter()
            .map(|(sku, qty)| Line {
                sku: sku.clone(),
                qty: *qty,
                bucket: 0,
            })
            .collect();
        let fp = fingerprint(lines, ttl_seconds);

        // The flash-sale shape on a single server: one script does it all, no crash window.
        if let [(sku, qty)] = lines
            && !client.is_clustered()
            && self.layout(sku).await?.buckets <= 1
        {
            let keys = BucketKeys::new(sku, 0);
            let single = [Line {
                sku: sku.clone(),
                qty: *qty,
                bucket: 0,
            }];
            let outcome = scripts::reserve_single(
                client,
                record_key.clone(),
                &keys,
                rid,
                *qty,
                ttl_ms,
                &fp,
                &encode(&single),
                (ms(RECORD_RETENTION), ms(REJECTED_RETENTION)),
            )
            .await?;
            match outcome {
                SingleReserve::Reserved(expires_at) => {
                    self.touched([keys]);
                    metrics::holds_created(1);
                    return Ok(ReserveAnswer::Reserved { expires_at });
                }
                SingleReserve::Rejected(shortages) => {
                    metrics::reservation_rejected();
                    return Ok(ReserveAnswer::Insufficient(decode(&shortages)));
                }
                SingleReserve::Existing(record) => return Ok(answer_from(&record)),
                SingleReserve::Conflict => return Err(conflict(rid)),
                // A multi-step Reserve of this id is mid-flight: take the path below, which waits.
                SingleReserve::Busy => {}
            }
        }

        let mut backoff = Duration::from_millis(5);
        let taken_over = loop {
            match scripts::reservation_claim(
                client,
                record_key.clone(),
                &fp,
                &encode(&requested),
                ms(CLAIM_LEASE),
                retention,
            )
            .await?
            {
                Claim::Claimed(prior) => break prior.is_some(),
                Claim::Conflict => return Err(conflict(rid)),
                Claim::Existing(record) => return Ok(answer_from(&record)),
                Claim::Busy if backoff < CLAIM_LEASE => {
                    // Another call with this id is mid-flight; its answer is ours in a moment.
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Claim::Busy => return Err(InventoryError::Busy(rid.to_string())),
            }
        };
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
                    record_key,
                    Transition {
                        from: "pending",
                        to: "reserved",
                        expires_at: Some(expires_at),
                        retention_ms: retention,
                        lines: &encoded,
                        ..Default::default()
                    },
                ),
                futures::future::join_all(index),
            );
            let (moved, record) = transition?;
            self.touched(held_lines.iter().map(|l| BucketKeys::new(&l.sku, l.bucket)));
            metrics::holds_created(held_lines.len());
            return Ok(if moved {
                ReserveAnswer::Reserved { expires_at }
            } else {
                answer_from(&record)
            });
        }

        metrics::reservation_rejected();
        for (line, _) in &held {
            scripts::release(client, &BucketKeys::new(&line.sku, line.bucket), rid).await?;
        }
        self.touched(held.iter().map(|(l, _)| BucketKeys::new(&l.sku, l.bucket)));
        let (moved, record) = scripts::reservation_transition(
            client,
            record_key,
            Transition {
                from: "pending",
                to: "rejected",
                shortages: &encode(&shortages),
                retention_ms: ms(REJECTED_RETENTION),
                ..Default::default()
            },
        )
        .await?;
        Ok(if moved {
            ReserveAnswer::Insufficient(shortages)
        } else {
            answer_from(&record)
        })
    }

    async fn index_expiry(&self, line: &Line, expires_at: i64) {
        let tag = BucketKeys::new(&line.sku, line.bucket).tag;
        // Keep the earliest expiry per bucket: the sweeper wakes for the first lapse.
        let result: Result<i64, _> = self
            .client()
            .zadd(
                keys::EXPIRY_INDEX,
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
            let keys = BucketKeys::new(sku, 0);
            return Ok(match scripts::reserve(client, &keys, rid, qty, ttl_ms).await? {
                Hold::Held { expires_at } => LineOutcome::Held {
                    bucket: 0,
                    expires_at,
                },
                Hold::Short { available } => LineOutcome::Short { available },
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

    /// Turns a reservation's holds into sales. Idempotent, and safe with concurrent callers:
    /// each drives the record's state machine forward from wherever it finds it.
    /// `FAILED_PRECONDITION` once it expired, was released or refused.
    pub async fn commit(&self, rid: &str) -> Result<Vec<Line>, InventoryError> {
        let client = self.client();
        let record_key = keys::reservation(rid);
        let retention = ms(RECORD_RETENTION);
        let (moved, record) = self
            .transition(rid, "reserved", "preparing", true, retention + ms(COMMIT_LEASE))
            .await?;
        let lines: Vec<Line> = decode(&record.lines);
        let mut state = match (moved, record.state.as_str()) {
            (true, _) => "preparing".to_string(),
            // Still `reserved` although the move was refused: it lapsed.
            (false, "reserved") => "lapsed".to_string(),
            (false, other) => other.to_string(),
        };
        // Each pass moves the record at least one edge forward; four edges reach the end.
        for _ in 0..5 {
            state = match state.as_str() {
                "committed" => return Ok(lines),
                "lapsed" => match self.expire(rid, "reserved", &lines).await? {
                    None => return Err(expired(rid)),
                    Some(now) => now,
                },
                "preparing" => {
                    // Extend every hold first: once all are extended none can lapse, so the
                    // commit below cannot half-succeed.
                    let extended = try_join_all(lines.iter().map(|line| {
                        let keys = BucketKeys::new(&line.sku, line.bucket);
                        async move { scripts::extend(client, &keys, rid, ms(COMMIT_LEASE)).await }
                    }))
                    .await?;
                    if extended.iter().all(Option::is_some) {
                        let (moved, record) = self
                            .transition(
                                rid,
                                "preparing",
                                "committing",
                                false,
                                retention + ms(COMMIT_LEASE),
                            )
                            .await?;
                        if moved {
                            "committing".to_string()
                        } else {
                            record.state
                        }
                    } else {
                        // A hold is gone: it lapsed, or a faster caller already committed it.
                        match self.expire(rid, "preparing", &lines).await? {
                            None => return Err(expired(rid)),
                            Some(now) => now,
                        }
                    }
                }
                "committing" => {
                    // Holds were extended by a day, so a missing one was committed already.
                    let committed = try_join_all(
                        lines
                            .iter()
                            .map(|line| BucketKeys::new(&line.sku, line.bucket))
                            .map(|keys| async move { scripts::commit(client, &keys, rid).await }),
                    )
                    .await?;
                    metrics::holds_committed(committed.iter().filter(|c| c.is_some()).count());
                    self.touched(lines.iter().map(|l| BucketKeys::new(&l.sku, l.bucket)));
                    scripts::reservation_transition(
                        client,
                        record_key.clone(),
                        Transition {
                            from: "committing",
                            to: "committed",
                            retention_ms: retention,
                            ..Default::default()
                        },
                    )
                    .await?;
                    "committed".to_string()
                }
                "" => return Err(InventoryError::NotFound(rid.to_string())),
                "pending" => return Err(InventoryError::Busy(rid.to_string())),
                "rejected" => {
                    return Err(InventoryError::precondition(
                        "RESERVATION_REJECTED",
                        rid,
                        "reservation was refused for insufficient stock; nothing to commit",
                    ));
                }
                "released" => {
                    return Err(InventoryError::precondition(
                        "RESERVATION_RELEASED",
                        rid,
                        "reservation was released",
                    ));
                }
                _ => return Err(expired(rid)),
            };
        }
        Err(InventoryError::Busy(rid.to_string()))
    }

    async fn transition(
        &self,
        rid: &str,
        from: &str,
        to: &str,
        require_live: bool,
        retention_ms: i64,
    ) -> Result<(bool, Record), InventoryError> {
        scripts::reservation_transition(
            self.client(),
            keys::reservation(rid),
            Transition {
                from,
                to,
                require_live,
                retention_ms,
                ..Default::default()
            },
        )
        .await
    }

    /// Units came back to these lines' SKUs: a hot SKU's sold-out marker is stale now.
    async fn clear_sold_out(&self, lines: &[Line]) -> Result<(), InventoryError> {
        for line in lines {
            if self.layout(&line.sku).await?.buckets > 1 {
                let _: i64 = self.client().del(keys::sold_out(&line.sku)).await?;
            }
        }
        Ok(())
    }

    /// Moves the record from `from` to `expired` and, only if this call made the move,
    /// releases its holds. `Some(state)` when another caller moved it first.
    async fn expire(&self, rid: &str, from: &str, lines: &[Line]) -> Result<Option<String>, InventoryError> {
        let (moved, record) = self
            .transition(rid, from, "expired", false, ms(RECORD_RETENTION))
            .await?;
        if !moved {
            return Ok(Some(record.state));
        }
        for line in lines {
            let keys = BucketKeys::new(&line.sku, line.bucket);
            scripts::release(self.client(), &keys, rid).await?;
            self.touched([keys]);
        }
        self.clear_sold_out(lines).await?;
        Ok(None)
    }

    /// Gives a reservation's units back. Idempotent; a no-op for refused or expired ones.
    pub async fn release(&self, rid: &str) -> Result<i64, InventoryError> {
        let (moved, record) = scripts::reservation_transition(
            self.client(),
            keys::reservation(rid),
            Transition {
                from: "reserved",
                to: "released",
                retention_ms: ms(RECORD_RETENTION),
                ..Default::default()
            },
        )
        .await?;
        if !moved {
            return match record.state.as_str() {
                "" | "released" | "rejected" | "expired" => Ok(0),
                "pending" => Err(InventoryError::Busy(rid.to_string())),
                _ => Err(InventoryError::precondition(
                    "RESERVATION_COMMITTED",
                    rid,
                    "reservation is committed (or being committed); nothing to release",
                )),
            };
        }
        let lines: Vec<Line> = decode(&record.lines);
        let mut released = 0;
        for line in &lines {
            let keys = BucketKeys::new(&line.sku, line.bucket);
            released += scripts::release(self.client(), &keys, rid).await?;
            self.touched([keys]);
        }
        metrics::holds_released(lines.len());
        self.clear_sold_out(&lines).await?;
        Ok(released)
    }

    /// Moves a live reservation's expiry to `ttl_seconds` from now.
    pub async fn extend(&self, rid: &str, ttl_seconds: u32) -> Result<i64, InventoryError> {
        let client = self.client();
        let ttl_ms = i64::from(ttl_seconds) * 1000;
        let record_key = keys::reservation(rid);
        let check = Transition {
            from: "reserved",
            to: "reserved",
            require_live: true,
            retention_ms: ttl_ms + ms(RECORD_RETENTION),
            ..Default::default()
        };
        let (live, record) =
            scripts::reservation_transition(client, record_key.clone(), check.clone()).await?;
        if !live {
            return Err(match record.state.as_str() {
                "" => InventoryError::NotFound(rid.to_string()),
                "reserved" | "expired" => expired(rid),
                state => InventoryError::precondition(
                    "RESERVATION_NOT_LIVE",
                    rid,
                    format!("reservation is {state}; only a live reservation can be extended"),
                ),
            });
        }
        let lines: Vec<Line> = decode(&record.lines);
        let extended = try_join_all(
            lines
                .iter()
                .map(|line| BucketKeys::new(&line.sku, line.bucket))
                .map(|keys| async move { scripts::extend(client, &keys, rid, ttl_ms).await }),
        )
        .await?;
        let Some(expires_at) = extended
            .iter()
            .copied()
            .collect::<Option<Vec<i64>>>()
            .and_then(|e| e.into_iter().min())
        else {
            return Err(expired(rid));
        };
        for line in &lines {
            self.index_expiry(line, expires_at).await;
        }
        scripts::reservation_transition(
            client,
            record_key,
            Transition {
                expires_at: Some(expires_at),
                ..check
            },
        )
        .await?;
        Ok(expires_at)
    }
}

fn conflict(rid: &str) -> InventoryError {
    InventoryError::Conflict(format!(
        "reservation_id {rid:?} was already used with different lines or ttl"
    ))
}

fn expired(rid: &str) -> InventoryError {
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
