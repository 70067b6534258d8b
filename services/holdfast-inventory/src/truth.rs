//! Durable truth: what Redis must never forget, kept in the store, and the guard that notices
//! a Redis that forgot it and rebuilds the counts before granting anything again.
//!
//! - The store holds per SKU `stocked` (on_hand + sold, versioned by bucket 0's sequence
//!   number) and every committed sale ([`holdfast_store::StockTruthStore`]). Commit records
//!   its sales in the store **before** the Redis commit (idempotent by reservation id), so
//!   every unit Redis ever counted as sold is in the store; a crash in between leaves a sale
//!   recorded whose hold may lapse unsold: a unit too few, never one too many. SetStock,
//!   AdjustStock and the reconciliation write the level **after** Redis, read back with its
//!   sequence number, and answer only once it is stored; a crash in between loses an
//!   unacknowledged change, which the caller's retry (or the redelivered event) re-applies.
//! - The generation marker (`inv:generation`, `generation.lua`) is beaten every
//!   `check_every`, on every reconnect and on every Commit: missing (FLUSHALL, a restart
//!   without persistence), replaced, or answering a lower beat than this process saw (a
//!   promoted replica that missed writes, a restart from an older snapshot) starts a new
//!   era. A SKU serves grants only once verified in the current era (an in-memory check on
//!   the hot path); the first call that touches it verifies it against the store (one read)
//!   and rebuilds it if Redis lost anything, while other calls for it answer UNAVAILABLE.
//!   A new era also starts a background pass that rebuilds every SKU the store knows.
//! - Rebuild: on_hand = stocked - sold (store), sold = the store's; holds the store records
//!   as sold are dropped (their units are in sold); other live holds are kept while they fit
//!   and released (latest expiry first) when they do not, so their Commit fails and the
//!   saga compensates. Holds that vanished with Redis vanished with their reservation record:
//!   Commit answers NOT_FOUND and the saga compensates (never re-reserved).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use fred::prelude::{EventInterface, ServerInterface, SortedSetsInterface};
use futures::stream::{self, StreamExt};
use holdfast_store::{SaleRecord, StockTruth, StockWrite, StoreError};

use crate::error::InventoryError;
use crate::guard::{Claim, REBUILD_CONCURRENCY, Truth};
use crate::keys::{self, BucketKeys};
use crate::reservations::Line;
use crate::scripts::{self, Marker, Snapshot};
use crate::stock::Stock;

pub use crate::guard::{CHECK_EVERY, TruthBackend};

fn store_error(error: StoreError) -> InventoryError {
    InventoryError::Store(error.to_string())
}

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Redis agrees with the store.
    Consistent,
    /// Redis knew a SKU the store did not: its level was adopted into the store.
    Adopted,
    /// Redis had lost writes: the SKU was rebuilt from the store.
    Rebuilt,
    /// Neither Redis nor the store knows the SKU (never stocked).
    Unknown,
}

/// How long [`Stock::ensure_truth`] waits for another call's verification of the same SKU
/// before answering UNAVAILABLE (a rebuild of a large SKU can take longer: retry).
const VERIFY_WAIT_TURN: std::time::Duration = std::time::Duration::from_millis(10);
const VERIFY_WAIT_TURNS: u32 = 200;

impl Stock {
    fn guard(&self) -> Option<&Arc<Truth>> {
        self.truth.as_ref()
    }

    /// The guard's current era (0 without a durable truth).
    pub(crate) fn era(&self) -> u64 {
        self.guard().map_or(0, |truth| truth.era())
    }

    /// Succeeds once each of `skus` is verified in the current era (an in-memory check when it
    /// is); otherwise verifies it now, rebuilding it if Redis lost writes. `UNAVAILABLE`
    /// (`InventoryError::Rebuilding`) while another call is rebuilding it.
    pub async fn ensure_truth(&self, skus: &[&str]) -> Result<(), InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(());
        };
        for &sku in skus {
            // Another call verifying the same SKU (two first calls on it at once) is waited
            // for, briefly, rather than answered UNAVAILABLE: its verdict is ours too.
            let mut waited = 0;
            loop {
                let era = truth.era();
                if truth.is_verified(sku, era) {
                    break;
                }
                match self.verify_sku(sku, None).await {
                    Ok(_) => break,
                    Err(InventoryError::Rebuilding(_)) if waited < VERIFY_WAIT_TURNS => {
                        waited += 1;
                        tokio::time::sleep(VERIFY_WAIT_TURN).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Verifies one SKU against the store (`known`: its truth, when the caller read it
    /// already; used only if the SKU's bucket 0 is gone) and rebuilds it if Redis lost
    /// writes; marks it verified in the era it started in.
    pub async fn verify_sku(&self, sku: &str, known: Option<StockTruth>) -> Result<Verdict, InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(Verdict::Consistent);
        };
        let era = truth.era();
        {
            let mut rebuilding = truth.rebuilding.lock().unwrap_or_else(PoisonError::into_inner);
            if !rebuilding.insert(sku.to_string()) {
                return Err(InventoryError::Rebuilding(sku.to_string()));
            }
        }
        let _claim = Claim(truth, sku.to_string());
        let snaps = self.snapshots(sku).await?;
        // The store is read after Redis, so every sale Redis counted is in what we read. A
        // truth the caller read earlier (the rebuild pass's scan) is only good when the bucket
        // is gone: nothing can have been granted, so nothing sold, since it vanished.
        let stored = match known {
            Some(known) if !snaps[0].exists => Some(known),
            _ => truth.store.get(sku).await.map_err(store_error)?,
        };
        let verdict = match stored {
            None if !snaps[0].exists => Verdict::Unknown,
            None => {
                // A SKU stocked before the store kept truth: adopt what Redis has.
                let write = StockWrite {
                    sku: sku.to_string(),
                    stocked: self.stocked_of(sku, &snaps).await?,
                    version: snaps[0].seq,
                };
                truth.store.record_stock(vec![write]).await.map_err(store_error)?;
                Verdict::Adopted
            }
            Some(stored) => {
                let held: Vec<String> = snaps
                    .iter()
                    .flat_map(|s| s.holds.iter().map(|(rid, _)| rid.clone()))
                    .collect();
                let mut sold_rids = HashSet::new();
                for chunk in held.chunks(holdfast_store::stock_truth::MAX_SALES_LOOKUP) {
                    let sales = truth.store.sales_of(sku, chunk).await.map_err(store_error)?;
                    sold_rids.extend(sales.into_iter().map(|s| s.reservation_id));
                }
                let pending: i64 = snaps
                    .iter()
                    .flat_map(|s| s.holds.iter())
                    .filter(|(rid, _)| sold_rids.contains(rid))
                    .map(|(_, qty)| qty)
                    .sum();
                let redis_sold: i64 = snaps.iter().map(|s| s.sold).sum();
                let lost =
                    !snaps[0].exists || snaps[0].seq < stored.version || redis_sold + pending < stored.sold;
                if lost {
                    tracing::warn!(
                        %sku, exists = snaps[0].exists, redis_seq = snaps[0].seq, store_version = stored.version,
                        redis_sold, pending, store_sold = stored.sold,
                        "redis lost inventory writes; rebuilding the SKU from the durable store"
                    );
                    self.rebuild_sku(sku, &stored, &snaps, &sold_rids).await?;
                    truth.rebuilt.fetch_add(1, Ordering::Relaxed);
                    Verdict::Rebuilt
                } else {
                    Verdict::Consistent
                }
            }
        };
        truth.mark_verified(sku, era);
        Ok(verdict)
    }

    /// Every bucket's snapshot, bucket 0 first (its layout decides how many follow).
    async fn snapshots(&self, sku: &str) -> Result<Vec<Snapshot>, InventoryError> {
        let client = self.client();
        let first = scripts::snapshot(client, &BucketKeys::new(sku, 0)).await?;
        let mut all = vec![first];
        for i in 1..all[0].buckets_max.max(1) {
            all.push(scripts::snapshot(client, &BucketKeys::new(sku, i)).await?);
        }
        Ok(all)
    }

    /// on_hand + sold over the buckets, plus units taken out by a transfer and not given yet.
    async fn stocked_of(&self, sku: &str, snaps: &[Snapshot]) -> Result<i64, InventoryError> {
        let mut stocked: i64 = snaps.iter().map(|s| s.on_hand + s.sold).sum();
        for (id, to, units) in snaps.iter().flat_map(|s| s.transfers.iter()) {
            let received: Option<f64> = self
                .client()
                .zscore(BucketKeys::new(sku, *to).transfers_in(), id)
                .await?;
            if received.is_none() {
                stocked += units;
            }
        }
        Ok(stocked)
    }

    async fn rebuild_sku(
        &self,
        sku: &str,
        stored: &StockTruth,
        snaps: &[Snapshot],
        sold_rids: &HashSet<String>,
    ) -> Result<(), InventoryError> {
        let client = self.client();
        let total = (stored.stocked - stored.sold).max(0);
        let drop: Vec<String> = sold_rids.iter().cloned().collect();
        let held_elsewhere: i64 = snaps[1..]
            .iter()
            .flat_map(|s| s.holds.iter())
            .filter(|(rid, _)| !sold_rids.contains(rid))
            .map(|(_, qty)| qty)
            .sum();
        let keep_elsewhere = held_elsewhere <= total;
        let mut kept = 0;
        let mut released = Vec::new();
        for i in 1..snaps.len() {
            let keys = BucketKeys::new(sku, i as u32);
            let on_hand = if keep_elsewhere { None } else { Some(0) };
            let done = scripts::rebuild(client, &keys, on_hand, 0, 0, &drop).await?;
            kept += done.reserved;
            released.extend(done.released);
            self.touched([keys]);
        }
        let keys = BucketKeys::new(sku, 0);
        let done = scripts::rebuild(
            client,
            &keys,
            Some(total - kept),
            stored.sold,
            stored.version,
            &drop,
        )
        .await?;
        released.extend(done.released);
        self.touched([keys]);
        let _: i64 = fred::prelude::KeysInterface::del(client, keys::sold_out(sku)).await?;
        self.forget_sold_out(sku);
        if !released.is_empty() {
            tracing::warn!(%sku, ?released, "holds that no longer fit the rebuilt stock were released; their commits will fail");
        }
        Ok(())
    }

    /// Writes the SKU's current level (read back from Redis with bucket 0's sequence number)
    /// to the store. After SetStock, AdjustStock and the reconciliation.
    pub async fn record_truth(&self, sku: &str) -> Result<(), InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(());
        };
        let snaps = self.snapshots(sku).await?;
        let write = StockWrite {
            sku: sku.to_string(),
            stocked: self.stocked_of(sku, &snaps).await?,
            version: snaps[0].seq,
        };
        truth.store.record_stock(vec![write]).await.map_err(store_error)?;
        truth.set_absent(sku, None);
        Ok(())
    }

    /// A reserve script found `sku`'s bucket without `on_hand` (`{-1}`, nothing written): Redis
    /// lost it (a restart without AOF, a FLUSHALL, an eviction) or the SKU was never stocked.
    /// Beats the generation marker (a loss starts a new era and the rebuild pass), then
    /// verifies the SKU against the store even if it counts as verified, rebuilding it when
    /// the store knows it. `true`: the store knows the SKU and Redis has it again: reserve
    /// once more. `false`: never stocked (or no durable truth): answer short, as ever.
    /// `UNAVAILABLE` while another call rebuilds it.
    pub async fn recheck_missing(&self, sku: &str) -> Result<bool, InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(false);
        };
        if truth.is_absent(sku, truth.era()) {
            // Known unknown in this era: no store read per reserve of a made-up SKU.
            return Ok(false);
        }
        self.check_generation().await?;
        let era = truth.era();
        match self.verify_sku(sku, None).await? {
            Verdict::Unknown => {
                truth.set_absent(sku, Some(era));
                Ok(false)
            }
            Verdict::Consistent | Verdict::Adopted | Verdict::Rebuilt => Ok(true),
        }
    }

    /// A read found `sku` all zero (`GetStock` of an empty Redis reads so): beats the
    /// generation marker and, if Redis lost data since the SKU was verified (the watch had not
    /// noticed yet), verifies it now, rebuilding it from the store. `true` when it did: read
    /// again. One marker beat per read of an all-zero SKU; no store read unless Redis lost data.
    ///
    /// `read_era` is the era the read was made in: when another call started a new era and
    /// verified the SKU in it since, the read came from before the rebuild, so read again.
    pub async fn recheck_empty(&self, sku: &str, read_era: u64) -> Result<bool, InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(false);
        };
        self.check_generation().await?;
        if truth.is_verified(sku, truth.era()) {
            return Ok(truth.era() != read_era);
        }
        self.ensure_truth(&[sku]).await?;
        Ok(true)
    }

    /// The lines of `rid`'s sale as the store recorded them, when it recorded one for every
    /// SKU of `skus`; `None` when it recorded none (or there is no durable truth, or no SKU
    /// was named). Commit's answer for a reservation Redis no longer has: `record_sales` runs
    /// before Redis commits, so a sale in the store is a commit that got past its pivot.
    /// Recorded for some SKUs only (the process died between the writes, then Redis lost the
    /// record): refused, logged for a hand reconciliation, since the missing lines' holds are
    /// gone and selling them now could oversell.
    pub async fn durable_sale(
        &self,
        rid: &str,
        skus: &[String],
    ) -> Result<Option<Vec<Line>>, InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(None);
        };
        let mut skus: Vec<&str> = skus.iter().map(String::as_str).collect();
        skus.sort_unstable();
        skus.dedup();
        if skus.is_empty() {
            return Ok(None);
        }
        let rids = [rid.to_string()];
        let found = futures::future::try_join_all(skus.iter().map(|sku| truth.store.sales_of(sku, &rids)))
            .await
            .map_err(store_error)?;
        let lines: Vec<Line> = found
            .into_iter()
            .flatten()
            .map(|sale| Line {
                sku: sale.sku,
                qty: sale.qty,
                bucket: 0,
            })
            .collect();
        if lines.is_empty() {
            return Ok(None);
        }
        if lines.len() < skus.len() {
            tracing::error!(%rid, recorded = lines.len(), named = skus.len(),
                "commit retried after redis lost the reservation: its sale is recorded for some SKUs only; reconcile by hand");
            return Err(InventoryError::precondition(
                "COMMIT_PARTIAL",
                rid,
                "the reservation was lost from the inventory cache with its sale recorded for some lines only",
            ));
        }
        tracing::warn!(%rid, "commit confirmed from the durable sales: redis lost the reservation after its sale was recorded");
        Ok(Some(lines))
    }

    /// Records a reservation's sales, (SKU, units) per line, in the store before Redis
    /// commits them.
    pub async fn record_sales(&self, rid: &str, lines: &[(&str, i64)]) -> Result<(), InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(());
        };
        let at_ms = holdfast_platform::clock::now_ms();
        let sales = lines
            .iter()
            .map(|(sku, qty)| SaleRecord {
                sku: (*sku).to_string(),
                reservation_id: rid.to_string(),
                qty: *qty,
                at_ms,
            })
            .collect();
        // One store write for every line (one SQLite writer job).
        truth.store.record_sales(sales).await.map_err(store_error)
    }

    /// Beats the generation marker and compares: a lost marker, a new generation or a beat
    /// lower than seen starts a new era (and a new generation, so every other process notices
    /// too). `true` when this call started one.
    pub async fn check_generation(&self) -> Result<bool, InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(false);
        };
        // What this process knew before the beat: a healthy Redis answers a higher beat
        // than any seen before the call was issued.
        let (known, before) = {
            let generation = truth.generation.lock().unwrap_or_else(PoisonError::into_inner);
            (generation.clone(), truth.last_beat.load(Ordering::SeqCst))
        };
        let marker = scripts::beat(self.client()).await?;
        let current = truth
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let lost = match (&marker, &current) {
            (Marker::Missing, None) => {
                // First look: a fresh Redis is fine only if the store knows no stock yet.
                let any = truth.store.scan(None, 1).await.map_err(store_error)?;
                !any.is_empty()
            }
            (Marker::Missing, Some(_)) => true,
            (Marker::Beat { id, beat }, None) => {
                self.adopt_generation(id, *beat);
                return Ok(false);
            }
            (Marker::Beat { id, beat }, Some(current)) => {
                if id != current || (known.as_ref() == Some(id) && *beat <= before) {
                    true
                } else {
                    truth.last_beat.fetch_max(*beat, Ordering::SeqCst);
                    return Ok(false);
                }
            }
        };
        if !lost {
            let id = uuid::Uuid::now_v7().to_string();
            if let Marker::Beat { id, beat } = scripts::create_generation(self.client(), &id).await? {
                self.adopt_generation(&id, beat);
            }
            return Ok(false);
        }
        let era = truth.era.fetch_add(1, Ordering::SeqCst) + 1;
        match &marker {
            // Another process noticed first and started a generation: follow it (starting
            // yet another would make the processes replace each other's forever).
            Marker::Beat { id, beat } if current.as_ref() != Some(id) => self.adopt_generation(id, *beat),
            _ => {
                let id = uuid::Uuid::now_v7().to_string();
                if let Marker::Beat { id, beat } = scripts::create_generation(self.client(), &id).await? {
                    self.adopt_generation(&id, beat);
                }
            }
        }
        tracing::error!(
            era, ?marker, previous = ?known,
            "redis lost inventory writes (marker missing, replaced or behind); refusing grants per SKU until rebuilt from the durable store"
        );
        let stock = self.clone();
        tokio::spawn(async move {
            match stock.rebuild_all().await {
                Ok(report) => tracing::info!(?report, "inventory rebuild pass finished"),
                Err(error) => {
                    tracing::error!(%error, "inventory rebuild pass failed; SKUs rebuild on first use")
                }
            }
        });
        Ok(true)
    }

    fn adopt_generation(&self, id: &str, beat: i64) {
        if let Some(truth) = self.guard() {
            let mut generation = truth.generation.lock().unwrap_or_else(PoisonError::into_inner);
            if generation.as_deref() != Some(id) {
                truth.last_beat.store(beat, Ordering::SeqCst);
            } else {
                truth.last_beat.fetch_max(beat, Ordering::SeqCst);
            }
            *generation = Some(id.to_string());
        }
    }

    /// Verifies (and rebuilds where needed) every SKU the store knows, `REBUILD_CONCURRENCY`
    /// at a time. A SKU some call is verifying right now is left to it.
    pub async fn rebuild_all(&self) -> Result<RebuildReport, InventoryError> {
        let Some(truth) = self.guard() else {
            return Ok(RebuildReport::default());
        };
        let started = Instant::now();
        let era = truth.era();
        let mut report = RebuildReport::default();
        let mut after: Option<String> = None;
        loop {
            let page = truth
                .store
                .scan(after.as_deref(), 1000)
                .await
                .map_err(store_error)?;
            let full = page.len() == 1000;
            after = page.last().map(|t| t.sku.clone());
            let verdicts: Vec<Result<Verdict, InventoryError>> = stream::iter(page)
                .filter(|t| futures::future::ready(!truth.is_verified(&t.sku, era)))
                .map(|t| async move {
                    let sku = t.sku.clone();
                    self.verify_sku(&sku, Some(t)).await
                })
                .buffer_unordered(REBUILD_CONCURRENCY)
                .collect()
                .await;
            for verdict in verdicts {
                report.skus += 1;
                match verdict {
                    Ok(Verdict::Rebuilt) => report.rebuilt += 1,
                    Ok(_) => {}
                    Err(InventoryError::Rebuilding(_)) => {}
                    Err(error) => return Err(error),
                }
            }
            if !full {
                break;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// What a rebuild pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// SKUs looked at.
    pub skus: u64,
    /// SKUs rebuilt.
    pub rebuilt: u64,
    /// How long the pass took.
    pub elapsed: Duration,
}

/// Beats the generation marker every `every` and whenever a Redis connection comes back.
pub async fn run_generation_watch(stock: Stock, every: Duration) {
    let wake = Arc::new(tokio::sync::Notify::new());
    for client in stock.pool().clients() {
        let mut reconnects = client.reconnect_rx();
        let wake = Arc::clone(&wake);
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                wake.notify_one();
            }
        });
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = wake.notified() => {}
        }
        if let Err(error) = stock.check_generation().await {
            tracing::warn!(%error, "generation check failed; retrying");
        }
    }
}

/// `WAIT replicas timeout` on `client` after a commit: how many replicas acknowledged its
/// writes. Fewer than asked is logged, not refused (the sale is in the store already).
pub async fn wait_replicas(
    client: &fred::prelude::Client,
    replicas: u32,
    timeout: Duration,
) -> Result<i64, InventoryError> {
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1);
    let acked: i64 = client.wait(i64::from(replicas), timeout_ms).await?;
    if acked < i64::from(replicas) {
        tracing::warn!(
            acked,
            replicas,
            "commit acknowledged by fewer replicas than asked within the timeout"
        );
    }
    Ok(acked)
}
