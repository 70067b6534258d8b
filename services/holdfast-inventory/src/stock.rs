//! Stock levels over a SKU's buckets: set, adjust, read, and moving idle units between
//! buckets of a hot SKU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::{Client, HashesInterface, KeysInterface, Pool, SetsInterface};
use futures::future::try_join_all;
use tokio::sync::mpsc;

use crate::error::InventoryError;
use crate::keys::{self, BucketKeys};
use crate::metrics;
use crate::scripts::{self, Adjustment, BucketLevel, Levels};

/// How long a SKU's bucket count is cached. A stale count never oversells: every bucket
/// enforces its own invariant, so staleness only shifts which bucket serves a call.
const LAYOUT_TTL: Duration = Duration::from_secs(1);
/// How long SetStock's fence stands if its caller dies before lowering it (transfers out of
/// the SKU's buckets wait that long at most).
const FENCE_LEASE: Duration = Duration::from_secs(5);

/// A SKU's bucket layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Buckets in use (1 for a plain SKU).
    pub buckets: u32,
    /// Widest layout ever used: read this many to sum `sold`.
    pub buckets_max: u32,
}

/// A SKU's level summed over its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SkuLevel {
    /// Summed counters (`reserved` counts live holds only).
    pub levels: Levels,
    /// Buckets in use.
    pub buckets: u32,
}

/// Tunables of the engine; the defaults suit production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSettings {
    /// How long an applied adjustment id is remembered. `None` (the default): for good, so a
    /// redelivered or replayed reconciliation event (a consumer-group reset re-reads the whole
    /// topic) can never apply twice; one small zset member per warehouse change. A retention,
    /// if set, must be at least the broker's retention of `holdfast.reconciliation.v1`.
    pub adjustment_retention: Option<Duration>,
    /// How long a Reserve claimer owns its pending record without renewing it. The claimer
    /// renews it every third of this while it works, so only a dead (or stalled for longer
    /// than this) claimer is taken over.
    pub claim_lease: Duration,
    /// Replicas that must acknowledge a commit's writes (`WAIT`) before Commit answers; 0
    /// (the default) does not wait. Fewer within `wait_timeout` is logged, not refused.
    pub wait_replicas: u32,
    /// How long Commit waits for `wait_replicas`.
    pub wait_timeout: Duration,
    /// Most one-line Reserves of one bucket coalesced into one `reserve_batch.lua` call
    /// (standalone Redis; [`crate::coalesce`]). 1 turns coalescing off: every Reserve is its
    /// own call. Default 64.
    pub reserve_batch: usize,
}

impl Default for StockSettings {
    fn default() -> Self {
        Self {
            adjustment_retention: None,
            claim_lease: Duration::from_secs(5),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            reserve_batch: scripts::MAX_BATCH,
        }
    }
}

/// The inventory engine: typed scripts over a Redis pool, plus the outbox relay's inbox.
#[derive(Clone)]
pub struct Stock {
    redis: Pool,
    relay: mpsc::UnboundedSender<BucketKeys>,
    layouts: Arc<Mutex<HashMap<String, (Layout, Instant)>>>,
    settings: Arc<StockSettings>,
    pub(crate) truth: Option<Arc<crate::guard::Truth>>,
    hot: Arc<crate::hot_path::HotPath>,
    hints: Arc<crate::line_hints::LineHints>,
}

impl Stock {
    /// An engine over `redis` with default settings; touched buckets are announced on `relay`.
    pub fn new(redis: Pool, relay: mpsc::UnboundedSender<BucketKeys>) -> Self {
        Self {
            redis,
            relay,
            layouts: Arc::default(),
            settings: Arc::default(),
            truth: None,
            hot: Arc::default(),
            hints: Arc::default(),
        }
    }

    /// The Reserve batcher and the local sold-out markers ([`crate::coalesce`]).
    pub fn hot_path(&self) -> &crate::hot_path::HotPath {
        &self.hot
    }

    /// The lines of the reservations this process made ([`crate::line_hints`]).
    pub fn line_hints(&self) -> &crate::line_hints::LineHints {
        &self.hints
    }

    /// The same engine guarded by the durable truth in `truth` (see [`crate::truth`]).
    #[must_use]
    pub fn with_truth(mut self, truth: crate::guard::Truth) -> Self {
        self.truth = Some(Arc::new(truth));
        self
    }

    /// The durable-truth guard, if the engine has one.
    pub fn truth(&self) -> Option<&crate::guard::Truth> {
        self.truth.as_deref()
    }

    /// The Redis pool.
    pub fn pool(&self) -> &Pool {
        &self.redis
    }

    /// The same engine with `settings`.
    #[must_use]
    pub fn with_settings(mut self, settings: StockSettings) -> Self {
        self.hot = Arc::new(crate::hot_path::HotPath::new(settings.reserve_batch));
        self.settings = Arc::new(settings);
        self
    }

    /// The engine's settings.
    pub fn settings(&self) -> &StockSettings {
        &self.settings
    }

    /// The next client of the pool.
    pub fn client(&self) -> &Client {
        self.redis.next()
    }

    /// Tells the relay these buckets have new outbox entries.
    pub fn touched(&self, buckets: impl IntoIterator<Item = BucketKeys>) {
        for bucket in buckets {
            let _ = self.relay.send(bucket);
        }
    }

    /// The SKU's layout, cached for a second.
    pub async fn layout(&self, sku: &str) -> Result<Layout, InventoryError> {
        if let Some((layout, at)) = self.cached_layout(sku)
            && at.elapsed() < LAYOUT_TTL
        {
            return Ok(layout);
        }
        let level = scripts::availability(self.client(), &BucketKeys::new(sku, 0)).await?;
        Ok(self.remember_layout(sku, &level))
    }

    fn cached_layout(&self, sku: &str) -> Option<(Layout, Instant)> {
        let layouts = self
            .layouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        layouts.get(sku).copied()
    }

    fn remember_layout(&self, sku: &str, bucket0: &BucketLevel) -> Layout {
        let layout = Layout {
            buckets: bucket0.buckets.max(1),
            buckets_max: bucket0.buckets_max.max(bucket0.buckets).max(1),
        };
        let mut layouts = self
            .layouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if layouts.len() > 100_000 {
            // Bounded: a catalog scan must not grow this without limit.
            layouts.clear();
        }
        layouts.insert(sku.to_string(), (layout, Instant::now()));
        layout
    }

    /// Every bucket's level, bucket 0 first (its layout decides how many follow).
    pub async fn bucket_levels(&self, sku: &str) -> Result<Vec<BucketLevel>, InventoryError> {
        let client = self.client();
        let first = scripts::availability(client, &BucketKeys::new(sku, 0)).await?;
        let layout = self.remember_layout(sku, &first);
        let rest = try_join_all(
            (1..layout.buckets_max)
                .map(|i| BucketKeys::new(sku, i))
                .map(|keys| async move { scripts::availability(client, &keys).await }),
        )
        .await?;
        let levels: Vec<BucketLevel> = std::iter::once(first).chain(rest).collect();
        if levels.iter().any(|b| b.levels.available() > 0) {
            // Free units seen (a hold lapsed, another process restocked): the local sold-out
            // marker must not refuse them.
            self.forget_sold_out(sku);
        }
        Ok(levels)
    }

    /// The SKU's level summed over its buckets (GetStock, GetAvailability, Commit's answer),
    /// behind the durable-truth guard: a SKU not verified in this era is verified (and rebuilt
    /// if Redis lost it) before it is read, and an all-zero read, which is what an empty Redis
    /// answers before the generation watch notices, beats the marker and reads again once
    /// rebuilt. `UNAVAILABLE` while another call is rebuilding the SKU (retry).
    pub async fn level(&self, sku: &str) -> Result<SkuLevel, InventoryError> {
        self.ensure_truth(&[sku]).await?;
        let era = self.era();
        let level = self.read_level(sku).await?;
        if level.levels == Levels::default() && self.recheck_empty(sku, era).await? {
            return self.read_level(sku).await;
        }
        Ok(level)
    }

    /// A one-bucket SKU's level as a script that changed it just read it (bucket 0): the layout
    /// cache and the sold-out marker learn from it as from a read.
    pub(crate) fn seen_level(&self, sku: &str, bucket: &BucketLevel) -> SkuLevel {
        self.remember_layout(sku, bucket);
        if bucket.levels.available() > 0 {
            self.forget_sold_out(sku);
        }
        sum(std::slice::from_ref(bucket))
    }

    /// The SKU's level as Redis has it now, unguarded (callers that verified the SKU already).
    pub async fn read_level(&self, sku: &str) -> Result<SkuLevel, InventoryError> {
        let buckets = self.bucket_levels(sku).await?;
        Ok(sum(&buckets))
    }

    /// Sets absolute on_hand (summed over buckets) and the bucket count.
    ///
    /// Transfer-aware: every bucket of the old and new layout is fenced first (no transfer
    /// may take units out while the plan is made and written), transfers already in flight are
    /// finished (their units land before the plan reads the buckets, so a late give is a
    /// no-op), and each bucket is written only under this call's live fence. Bucket 0, which
    /// carries the layout, is written last and only if every other bucket took its level. Any
    /// refusal or lost fence plans again from a fresh read.
    pub async fn set_stock(&self, sku: &str, on_hand: i64, buckets: u32) -> Result<SkuLevel, InventoryError> {
        self.ensure_truth(&[sku]).await?;
        for _attempt in 0..3 {
            let token = uuid::Uuid::now_v7().to_string();
            let first = scripts::availability(self.client(), &BucketKeys::new(sku, 0)).await?;
            let width = first.buckets_max.max(first.buckets).max(buckets).max(1);
            let fenced: Vec<BucketKeys> = (0..width).map(|i| BucketKeys::new(sku, i)).collect();
            try_join_all(
                fenced
                    .iter()
                    .map(|keys| scripts::raise_fence(self.client(), keys, &token, ms(FENCE_LEASE))),
            )
            .await?;
            let written = self.set_stock_fenced(sku, on_hand, buckets, width, &token).await;
            // Lowered whatever happened; a fence lost meanwhile means the plan may be stale.
            let lowered = try_join_all(
                fenced
                    .iter()
                    .map(|keys| scripts::lower_fence(self.client(), keys, &token)),
            )
            .await?;
            let level = match written? {
                Some(level) if lowered.iter().all(|live| *live) => level,
                _ => continue,
            };
            let client = self.client();
            if buckets > 1 || width > 1 {
                // Once split, the rebalancer keeps visiting the SKU (stray units beyond the
                // layout are brought back).
                let _: i64 = client.sadd(keys::HOT_SKUS, sku).await?;
            } else {
                let _: i64 = client.srem(keys::HOT_SKUS, sku).await?;
            }
            let _: i64 = client.del(keys::sold_out(sku)).await?;
            self.forget_sold_out(sku);
            // Answered only once durable: a crash before this loses an unacknowledged set.
            self.record_truth(sku).await?;
            return Ok(level);
        }
        Err(InventoryError::Busy(sku.to_string()))
    }

    /// One SetStock plan under `token`'s fences on buckets `0..width`: `Some(level)` written
    /// (read back while still fenced, so no transfer skews the sum), `None` refused by a
    /// bucket (plan again).
    async fn set_stock_fenced(
        &self,
        sku: &str,
        on_hand: i64,
        buckets: u32,
        width: u32,
        token: &str,
    ) -> Result<Option<SkuLevel>, InventoryError> {
        let client = self.client();
        // Units in flight land now; any give still on its way later finds them received.
        self.redrive_transfers(sku, width, true).await?;
        let current = self.bucket_levels(sku).await?;
        let old = current[0].buckets.max(1);
        let reserved: Vec<i64> = current.iter().map(|b| b.levels.reserved).collect();
        let held: i64 = reserved.iter().sum();
        if buckets != old && held > 0 {
            return Err(InventoryError::precondition(
                "BUCKETS_CHANGE_WITH_HOLDS",
                sku,
                format!(
                    "cannot change buckets from {old} to {buckets} while {held} units are held; retry after they commit, release or expire"
                ),
            ));
        }
        if on_hand < held {
            return Err(below_held(sku, on_hand, held));
        }
        // Each bucket keeps what it holds plus an even share of the free units.
        let width = (width as usize).max(current.len());
        let free = on_hand - held;
        let n = i64::from(buckets);
        let targets: Vec<i64> = (0..width)
            .map(|i| {
                let i64i = i as i64;
                if i64i >= n {
                    0
                } else {
                    reserved.get(i).copied().unwrap_or(0) + free / n + i64::from(i64i < free % n)
                }
            })
            .collect();
        // Bucket 0 last, and only once every other bucket took its level: it carries the new
        // layout, so readers never see a layout whose buckets are not yet filled, and a refusal
        // (a hold that landed since the read) leaves the old layout in force.
        for i in (0..width).rev() {
            let keys = BucketKeys::new(sku, i as u32);
            match scripts::set_stock(client, &keys, targets[i], buckets, token).await? {
                scripts::StockSet::Set(_) => self.touched([keys]),
                scripts::StockSet::BelowHeld(_) | scripts::StockSet::FenceLost => return Ok(None),
            }
        }
        Ok(Some(self.read_level(sku).await?))
    }

    /// Adds `delta` units once per `adjustment_id`. Adjustments land on bucket 0 (the
    /// rebalancer spreads them); removing more than bucket 0 has free first gathers units there.
    pub async fn adjust_stock(
        &self,
        sku: &str,
        delta: i64,
        adjustment_id: &str,
    ) -> Result<SkuLevel, InventoryError> {
        self.ensure_truth(&[sku]).await?;
        let client = self.client();
        let keys = BucketKeys::new(sku, 0);
        let layout = self.layout(sku).await?;
        if delta < 0 && layout.buckets > 1 {
            let levels = self.bucket_levels(sku).await?;
            let available: Vec<i64> = levels.iter().map(|b| b.levels.available()).collect();
            let short = -delta - available[0];
            if short > 0 && available.iter().sum::<i64>() >= -delta {
                self.gather(sku, 0, short, &available).await?;
            }
        }
        let retention_ms = self
            .settings
            .adjustment_retention
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1));
        match scripts::adjust_stock(client, &keys, adjustment_id, delta, retention_ms).await? {
            Adjustment::Applied(_) => {
                self.touched([keys]);
                self.forget_sold_out(sku);
                if delta > 0 {
                    let _: i64 = client.del(keys::sold_out(sku)).await?;
                }
            }
            // A repeat may be the retry of a call that died before its store write.
            Adjustment::Repeated(_) => {}
            Adjustment::BelowHeld { on_hand, reserved } => {
                return Err(InventoryError::precondition(
                    "BELOW_HELD",
                    sku,
                    format!(
                        "removing {} units would leave fewer than the {reserved} held (on_hand {on_hand})",
                        -delta
                    ),
                ));
            }
        }
        self.record_truth(sku).await?;
        self.read_level(sku).await
    }

    /// Moves up to `need` free units from other buckets into bucket `to`, richest first.
    /// Each move is take-then-give under a transfer id, re-driven by the rebalancer if we die
    /// in between, so units are never created or lost.
    pub async fn gather(
        &self,
        sku: &str,
        to: u32,
        need: i64,
        available: &[i64],
    ) -> Result<i64, InventoryError> {
        let mut donors: Vec<(u32, i64)> = available
            .iter()
            .enumerate()
            .filter(|(i, a)| *i as u32 != to && **a > 0)
            .map(|(i, a)| (i as u32, *a))
            .collect();
        donors.sort_by_key(|(_, a)| -a);
        let mut moved_total = 0;
        for (from, free) in donors {
            if moved_total >= need {
                break;
            }
            moved_total += self.transfer(sku, from, to, free.min(need - moved_total)).await?;
        }
        Ok(moved_total)
    }

    /// One transfer of `units` from bucket `from` to bucket `to` (0 moved while SetStock
    /// fences the source).
    pub async fn transfer(&self, sku: &str, from: u32, to: u32, units: i64) -> Result<i64, InventoryError> {
        let client = self.client();
        let id = uuid::Uuid::now_v7().to_string();
        let source = BucketKeys::new(sku, from);
        let moved = scripts::rebalance_take(client, &source, &id, units, to).await?;
        if moved > 0 {
            let target = BucketKeys::new(sku, to);
            // Just taken: well inside the received-id window.
            scripts::rebalance_give(client, &target, &id, moved, 0).await?;
            let _: i64 = client.hdel(source.transfers_out(), &id).await?;
            self.touched([source, target]);
        }
        Ok(moved)
    }

    /// Finishes transfers a crashed process left half-done (taken, not yet given) out of
    /// buckets `0..buckets_max`. A transfer older than the received-id window is never given
    /// (an earlier give may have been forgotten): it is reported as stranded, and dropped if
    /// `drop_stranded` (SetStock, which re-establishes the absolute level anyway).
    pub async fn redrive_transfers(
        &self,
        sku: &str,
        buckets_max: u32,
        drop_stranded: bool,
    ) -> Result<usize, InventoryError> {
        let client = self.client();
        let mut redriven = 0;
        for from in 0..buckets_max {
            let source = BucketKeys::new(sku, from);
            let pending: HashMap<String, String> = client.hgetall(source.transfers_out()).await?;
            for (id, recorded) in pending {
                let Some((to, units, taken_at)) = parse_transfer(&recorded) else {
                    tracing::error!(%sku, %id, %recorded, "unreadable pending transfer left alone");
                    continue;
                };
                let target = BucketKeys::new(sku, to);
                match scripts::rebalance_give(client, &target, &id, units, taken_at).await? {
                    scripts::Give::Given | scripts::Give::Repeated => {}
                    scripts::Give::Stale => {
                        metrics::transfer_stranded();
                        tracing::error!(
                            %sku, %id, from, to, units,
                            "transfer older than the received-id window: not re-driven (it could give twice); reconcile with SetStock"
                        );
                        if !drop_stranded {
                            continue;
                        }
                    }
                }
                let _: i64 = client.hdel(source.transfers_out(), &id).await?;
                self.touched([target]);
                redriven += 1;
            }
        }
        Ok(redriven)
    }
}

/// A pending transfer as `rebalance_take.lua` records it: `to:units:taken_at_ms` (older
/// records have no take time: 0).
fn parse_transfer(recorded: &str) -> Option<(u32, i64, i64)> {
    let mut parts = recorded.split(':');
    let to = parts.next()?.parse().ok()?;
    let units = parts.next()?.parse().ok()?;
    let taken_at = match parts.next() {
        Some(at) => at.parse().ok()?,
        None => 0,
    };
    Some((to, units, taken_at))
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
fn below_held(sku: &str, on_hand: i64, held: i64) -> InventoryError {
    InventoryError::precondition(
        "BELOW_HELD",
        sku,
        format!("on_hand {on_hand} is below the {held} units currently held"),
    )
}

/// Sums bucket levels.
pub fn sum(buckets: &[BucketLevel]) -> SkuLevel {
    let mut total = SkuLevel {
        buckets: buckets.first().map_or(1, |b| b.buckets.max(1)),
        ..SkuLevel::default()
    };
    for bucket in buckets {
        total.levels.on_hand += bucket.levels.on_hand;
        total.levels.reserved += bucket.levels.reserved;
        total.levels.sold += bucket.levels.sold;
    }
    total
}
