//! Settling a reservation: Commit (reserved -> preparing -> committing -> committed; on
//! standalone Redis with the lines known, reserved -> committing -> committed), Release and
//! Extend, each driving the record's state machine by compare-and-set so concurrent and
//! retried callers agree (states: `docs/inventory-redis.md`).

use std::time::Duration;

use fred::prelude::{ClientLike, KeysInterface};
use futures::future::try_join_all;

use crate::error::InventoryError;
use crate::keys::{self, BucketKeys};
use crate::metrics;
use crate::reservations::{Line, RECORD_RETENTION, decode, expired, ms};
use crate::scripts::{self, BucketLevel, Committed, ExtendAll, Extended, Record, Transition};
use crate::stock::{SkuLevel, Stock};

/// Hold lifetime while a commit is under way (holds are never shortened by it: a longer TTL is
/// kept). Minutes, not a day: a client that gives up on an interrupted Commit locks the units
/// at most this long, and can Release them at once while nothing was sold yet (`preparing`).
/// Once `committing`, a retry within the lease finishes the commit; after it, a missing hold
/// may have lapsed rather than committed, so the retry answers `COMMIT_LEASE_LAPSED` instead
/// of claiming a sale it cannot prove.
pub const COMMIT_LEASE: Duration = Duration::from_secs(10 * 60);

impl Stock {
    /// Turns a reservation's holds into sales. Idempotent, and safe with concurrent callers:
    /// each drives the record's state machine forward from wherever it finds it.
    /// `FAILED_PRECONDITION` once it expired, was released or refused. With no record in
    /// Redis, a sale of `rid` recorded durably for every one of `skus_hint` (the caller's)
    /// answers it committed: the first attempt got that far before Redis lost the record.
    pub async fn commit(&self, rid: &str, skus_hint: &[String]) -> Result<Vec<Line>, InventoryError> {
        Ok(self.commit_reading(rid, skus_hint).await?.0)
    }

    /// [`Stock::commit`], and each committed SKU's level right after it (Commit's answer), in
    /// line order. On standalone Redis the commit's own script reads a one-bucket SKU's level
    /// (no call of its own); any other SKU, or a commit finished by an earlier call, is read
    /// as [`Stock::level`] reads it.
    pub async fn commit_with_levels(
        &self,
        rid: &str,
        skus_hint: &[String],
    ) -> Result<(Vec<Line>, Vec<SkuLevel>), InventoryError> {
        let (lines, read) = self.commit_reading(rid, skus_hint).await?;
        let levels = try_join_all(lines.iter().enumerate().map(|(i, line)| {
            let read = read.get(i);
            async move {
                match read {
                    Some(bucket) if line.bucket == 0 && bucket.buckets_max <= 1 => {
                        Ok(self.seen_level(&line.sku, bucket))
                    }
                    _ => self.level(&line.sku).await,
                }
            }
        }))
        .await?;
        Ok((lines, levels))
    }

    /// Commit; the levels are each line's bucket after the one-script commit (empty when the
    /// commit ran otherwise).
    async fn commit_reading(
        &self,
        rid: &str,
        skus_hint: &[String],
    ) -> Result<(Vec<Line>, Vec<BucketLevel>), InventoryError> {
        let client = self.client();
        let retention = ms(RECORD_RETENTION);
        // A Redis that lost writes is noticed here at the latest (one marker beat), before a
        // sale is recorded against it.
        self.check_generation().await?;
        let lease = (ms(COMMIT_LEASE), retention + ms(COMMIT_LEASE));
        // With the lines known, `reserved -> committing` and every hold's lease are one call;
        // else (or refused: the record decides) `reserved -> preparing` first.
        let (moved, record) = match self.extend_hinted(rid, "committing", lease).await? {
            Some(Extended::Moved(now)) => (true, now),
            _ => {
                self.transition(rid, "reserved", "preparing", true, lease.1)
                    .await?
            }
        };
        let lines: Vec<Line> = decode(&record.lines);
        let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
        self.ensure_truth(&skus).await?;
        // In `committing` the record's expiry is the commit lease's end (Redis clock).
        let mut deadline = record.expires_at;
        let mut read = Vec::new();
        let mut state = match (moved, record.state.as_str()) {
            // `preparing`, or `committing` with the lease taken.
            (true, now) => now.to_string(),
            // Still `reserved` although the move was refused: it lapsed.
            (false, "reserved") => "lapsed".to_string(),
            (false, other) => other.to_string(),
        };
        // Each pass moves the record at least one edge forward; four edges reach the end.
        for _ in 0..5 {
            state = match state.as_str() {
                "committed" => {
                    self.line_hints().forget(rid);
                    return Ok((lines, read));
                }
                "lapsed" => match self.expire(rid, "reserved", &lines).await? {
                    None => return Err(expired(rid)),
                    Some(now) => now,
                },
                // Standalone Redis: the holds' extension and the move in one script.
                "preparing" if !client.is_clustered() && !lines.is_empty() => {
                    let buckets: Vec<BucketKeys> = lines.iter().map(Line::keys).collect();
                    let lease = ExtendAll {
                        from: "preparing",
                        to: "committing",
                        ttl_ms: ms(COMMIT_LEASE),
                        retention_ms: retention + ms(COMMIT_LEASE),
                        require_live: false,
                        lines: &record.lines,
                        buckets: &buckets,
                    };
                    match scripts::reservation_extend(client, rid, lease).await? {
                        Extended::Moved(now) => {
                            deadline = now.expires_at;
                            now.state
                        }
                        Extended::Refused(now) => now.state,
                        // A hold is gone: it lapsed, or a faster caller already committed it.
                        Extended::HoldGone(_) => match self.expire(rid, "preparing", &lines).await? {
                            None => return Err(expired(rid)),
                            Some(now) => now,
                        },
                    }
                }
                "preparing" => {
                    // Extend every hold first: once all are extended none can lapse, so the
                    // commit below cannot half-succeed.
                    let extended = try_join_all(lines.iter().map(|line| {
                        let keys = line.keys();
                        async move { scripts::extend(client, &keys, rid, ms(COMMIT_LEASE)).await }
                    }))
                    .await?;
                    if let Some(until) = extended.iter().copied().collect::<Option<Vec<i64>>>() {
                        // The earliest hold's end: every line commits before it, or the retry
                        // after it cannot tell a lapse from a commit.
                        let lease_end = until.into_iter().min().unwrap_or_default();
                        let (moved, record) = scripts::reservation_transition(
                            client,
                            rid,
                            Transition {
                                from: "preparing",
                                to: "committing",
                                expires_at: Some(lease_end),
                                retention_ms: retention + ms(COMMIT_LEASE),
                                ..Default::default()
                            },
                        )
                        .await?;
                        deadline = record.expires_at;
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
                    // Holds were extended to the commit lease, so within it a missing hold was
                    // committed already; after it, it may have lapsed: refuse to claim a sale.
                    // The store first: every unit Redis counts as sold is in the durable truth.
                    let sales: Vec<(&str, i64)> = lines.iter().map(|l| (l.sku.as_str(), l.qty)).collect();
                    self.record_sales(rid, &sales).await?;
                    let buckets: Vec<BucketKeys> = lines.iter().map(Line::keys).collect();
                    let settings = self.settings();
                    if !client.is_clustered() && !buckets.is_empty() && settings.wait_replicas == 0 {
                        // Standalone Redis: every line's commit and the record's last move in one
                        // script.
                        match scripts::reservation_commit(client, rid, &record.lines, &buckets, retention)
                            .await?
                        {
                            Committed::Moved { holds, levels } => {
                                metrics::holds_committed(holds);
                                read = levels;
                                self.touched(buckets);
                                "committed".to_string()
                            }
                            Committed::LeaseLapsed { holds } => {
                                metrics::holds_committed(holds);
                                return Err(lease_lapsed(rid, deadline));
                            }
                            Committed::Refused(now) => now.state,
                        }
                    } else {
                        let committed = try_join_all(
                            buckets
                                .iter()
                                .map(|keys| async move { scripts::commit(client, keys, rid).await }),
                        )
                        .await?;
                        metrics::holds_committed(committed.iter().filter(|c| c.is_some()).count());
                        if committed.iter().any(Option::is_none) && redis_now_ms(self).await? > deadline {
                            return Err(lease_lapsed(rid, deadline));
                        }
                        if settings.wait_replicas > 0 {
                            // Same connection as the commit scripts: WAIT covers their writes.
                            crate::truth::wait_replicas(
                                client,
                                settings.wait_replicas,
                                settings.wait_timeout,
                            )
                            .await?;
                        }
                        self.touched(buckets);
                        scripts::reservation_transition(
                            client,
                            rid,
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
                }
                "" => {
                    return match self.durable_sale(rid, skus_hint).await? {
                        Some(lines) => Ok((lines, Vec::new())),
                        None => Err(InventoryError::NotFound(rid.to_string())),
                    };
                }
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
            rid,
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
            self.forget_sold_out(&line.sku);
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
            let keys = line.keys();
            scripts::release(self.client(), &keys, rid).await?;
            self.touched([keys]);
        }
        self.clear_sold_out(lines).await?;
        Ok(None)
    }

    /// Gives a reservation's units back. Idempotent; a no-op for refused or expired ones.
    pub async fn release(&self, rid: &str) -> Result<i64, InventoryError> {
        self.line_hints().forget(rid);
        let (moved, record) = scripts::reservation_transition(
            self.client(),
            rid,
            Transition {
                from: "reserved",
                to: "released",
                retention_ms: ms(RECORD_RETENTION),
                ..Default::default()
            },
        )
        .await?;
        // A commit interrupted before it sold anything (`preparing`) is unwound too, so a
        // client that gives up on Commit does not lock the units for the commit lease.
        let (moved, record) = if !moved && record.state == "preparing" {
            scripts::reservation_transition(
                self.client(),
                rid,
                Transition {
                    from: "preparing",
                    to: "released",
                    retention_ms: ms(RECORD_RETENTION),
                    ..Default::default()
                },
            )
            .await?
        } else {
            (moved, record)
        };
        if !moved {
            return match record.state.as_str() {
                "" | "released" | "rejected" | "expired" => Ok(0),
                "pending" => Err(InventoryError::Busy(rid.to_string())),
                _ => Err(InventoryError::precondition(
                    "RESERVATION_COMMITTED",
                    rid,
                    "reservation is committed (or committing); nothing to release",
                )),
            };
        }
        let lines: Vec<Line> = decode(&record.lines);
        let mut released = 0;
        for line in &lines {
            let keys = line.keys();
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
        match self
            .extend_hinted(rid, "reserved", (ttl_ms, ttl_ms + ms(RECORD_RETENTION)))
            .await?
        {
            Some(Extended::Moved(now)) => return Ok(now.expires_at),
            Some(Extended::HoldGone(_)) => return Err(expired(rid)),
            // Not known here, or refused (another state, lapsed, a stale hint): the record says.
            Some(Extended::Refused(_)) | None => {}
        }
        let check = Transition {
            from: "reserved",
            to: "reserved",
            require_live: true,
            retention_ms: ttl_ms + ms(RECORD_RETENTION),
            ..Default::default()
        };
        let (live, record) = scripts::reservation_transition(client, rid, check.clone()).await?;
        if !live {
            return Err(not_extendable(rid, &record.state));
        }
        let lines: Vec<Line> = decode(&record.lines);
        if !client.is_clustered() && !lines.is_empty() {
            // Standalone Redis: every hold's extension, its index entry and the record's new
            // expiry in one script.
            let buckets: Vec<BucketKeys> = lines.iter().map(Line::keys).collect();
            let all = ExtendAll {
                from: "reserved",
                to: "reserved",
                ttl_ms,
                retention_ms: check.retention_ms,
                require_live: true,
                lines: &record.lines,
                buckets: &buckets,
            };
            return match scripts::reservation_extend(client, rid, all).await? {
                Extended::Moved(now) => Ok(now.expires_at),
                Extended::HoldGone(_) => Err(expired(rid)),
                // Settled (or lapsed) since the check above.
                Extended::Refused(now) => Err(not_extendable(rid, &now.state)),
            };
        }
        let extended = try_join_all(
            lines
                .iter()
                .map(Line::keys)
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
            rid,
            Transition {
                expires_at: Some(expires_at),
                ..check
            },
        )
        .await?;
        Ok(expires_at)
    }

    /// Standalone Redis, with the lines this process's Reserve wrote ([`crate::line_hints`]):
    /// every hold extended to `ttl_ms` from now and the record moved `reserved -> to` (kept
    /// `retention_ms`) in one `reservation_extend.lua` call, without reading the record first.
    /// `None` without a hint (a cluster, another replica's reservation).
    async fn extend_hinted(
        &self,
        rid: &str,
        to: &str,
        (ttl_ms, retention_ms): (i64, i64),
    ) -> Result<Option<Extended>, InventoryError> {
        let client = self.client();
        if client.is_clustered() {
            return Ok(None);
        }
        let Some(hint) = self.line_hints().get(rid) else {
            return Ok(None);
        };
        let buckets: Vec<BucketKeys> = decode::<Vec<Line>>(&hint).iter().map(Line::keys).collect();
        if buckets.is_empty() {
            return Ok(None);
        }
        let all = ExtendAll {
            from: "reserved",
            to,
            ttl_ms,
            retention_ms,
            require_live: true,
            lines: &hint,
            buckets: &buckets,
        };
        Ok(Some(scripts::reservation_extend(client, rid, all).await?))
    }
}

/// Redis's clock, ms (the clock every hold and record expiry is on).
async fn redis_now_ms(stock: &Stock) -> Result<i64, InventoryError> {
    let (secs, micros): (String, String) = stock
        .client()
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await?;
    let parse = |v: &str| {
        v.parse::<i64>().map_err(|e| InventoryError::Protocol {
            script: "TIME",
            detail: e.to_string(),
        })
    };
    Ok(parse(&secs)? * 1000 + parse(&micros)? / 1000)
}

/// Why Extend refuses a reservation that is not live in `state`.
fn not_extendable(rid: &str, state: &str) -> InventoryError {
    match state {
        "" => InventoryError::NotFound(rid.to_string()),
        "reserved" | "expired" => expired(rid),
        // A Reserve is still holding its lines (or died mid-way; the next Reserve of the id
        // takes its claim over once the lease lapses), as Commit answers.
        "pending" => InventoryError::Busy(rid.to_string()),
        state => InventoryError::precondition(
            "RESERVATION_NOT_LIVE",
            rid,
            format!("reservation is {state}; only a live reservation can be extended"),
        ),
    }
}

/// A commit retried after its lease found a hold missing: it may have lapsed (its units sold on)
/// rather than committed, so the sale is not claimed.
fn lease_lapsed(rid: &str, deadline: i64) -> InventoryError {
    tracing::error!(
        %rid, deadline,
        "commit retried after its lease: some holds are gone and may have lapsed, not sold; reconcile by hand"
    );
    InventoryError::precondition(
        "COMMIT_LEASE_LAPSED",
        rid,
        "the commit was interrupted and retried after its lease; some lines may not be sold",
    )
}
