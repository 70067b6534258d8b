//! Background work of the inventory service. Every task is safe to run on many replicas at
//! once: each step is an idempotent script on one bucket.
//!
//! - the outbox relay publishes each bucket's `inv:{B}:events` stream to the event bus;
//! - the sweeper frees lapsed holds, visiting only buckets the expiry index says are due;
//! - the rebalancer re-drives half-done transfers and moves idle units to dry hot buckets;
//! - on standalone Redis, the sweeper also surveys for record shards of the per-slot layout
//!   until none is left, so the scripts stop reading them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{
    Client, ClientLike, HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface, StreamsInterface,
    Value,
};
use fred::types::scan::ScanType;
use fred::types::sorted_sets::Ordering;
use futures::StreamExt;
use holdfast_platform::clock::now_ms;
use holdfast_platform::events::{Event, EventBus};
use tokio::sync::mpsc;

use crate::error::InventoryError;
use crate::keys::{self, BucketKeys};
use crate::metrics;
use crate::outbox;
use crate::scripts;
use crate::stock::Stock;

pub use crate::outbox::TOPIC;
/// Outbox entries read per round trip.
const RELAY_BATCH: u64 = 500;
/// Due buckets the sweeper takes per pass.
const SWEEP_BATCH: i64 = 200;
/// The rebalancer leaves a hot SKU alone below this many available units per bucket.
const MIN_UNITS_PER_BUCKET_TO_REBALANCE: i64 = 4;
/// Holds one sweep call frees at most (the rest wait for the next pass).
const SWEEP_MAX_HOLDS: u32 = 1000;

/// Publishes outbox entries of the buckets it is told about, then (at start and every
/// `rescan`) of every bucket with leftovers, so a crash between a script and its publish
/// loses nothing: the entry waits in Redis until the bus has it.
pub async fn run_relay(
    stock: Stock,
    bus: Arc<dyn EventBus>,
    region: String,
    mut touched: mpsc::UnboundedReceiver<BucketKeys>,
    rescan: Duration,
) {
    let mut interval = tokio::time::interval(rescan);
    loop {
        let mut due: HashSet<BucketKeys> = HashSet::new();
        tokio::select! {
            Some(first) = touched.recv() => {
                due.insert(first);
                // Coalesce a burst: one drain per bucket however many calls touched it.
                while let Ok(more) = touched.try_recv() {
                    due.insert(more);
                }
            }
            _ = interval.tick() => match leftover_streams(stock.client()).await {
                Ok(found) => due.extend(found),
                Err(error) => tracing::warn!(%error, "outbox rescan failed"),
            },
        }
        for bucket in due {
            match drain(&stock, bus.as_ref(), &region, &bucket).await {
                Ok(()) => metrics::set_outbox_backlog(0),
                Err(error) => {
                    tracing::warn!(%error, sku = %bucket.sku, "outbox drain failed; retried on next rescan");
                    report_backlog(&stock, &bucket).await;
                }
            }
        }
    }
}

/// After a failed drain: how much waits unpublished in `bucket`, as a gauge, and an error log
/// once half the limit is reached (at the limit new work on the bucket is refused).
async fn report_backlog(stock: &Stock, bucket: &BucketKeys) {
    let Ok(waiting) = stock.client().xlen::<i64, _>(bucket.events()).await else {
        return;
    };
    metrics::set_outbox_backlog(waiting);
    if waiting >= scripts::OUTBOX_LIMIT / 2 {
        tracing::error!(
            sku = %bucket.sku, bucket = bucket.index, waiting, limit = scripts::OUTBOX_LIMIT,
            "inventory outbox backlog growing while the bus is unreachable; new work on this bucket is refused at the limit"
        );
    }
}

async fn leftover_streams(client: &Client) -> Result<Vec<BucketKeys>, InventoryError> {
    let mut keys = if client.is_clustered() {
        client
            .scan_cluster_buffered(keys::EVENTS_PATTERN, Some(1000), None)
            .boxed()
    } else {
        client
            .scan_buffered(keys::EVENTS_PATTERN, Some(1000), None)
            .boxed()
    };
    let mut found = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key?;
        if let Some(name) = key.as_str() {
            found.push(BucketKeys::from_tag(keys::hash_tag(name)));
        }
    }
    Ok(found)
}

/// Publishes every entry of one bucket's outbox, then deletes what the bus accepted.
pub async fn drain(
    stock: &Stock,
    bus: &dyn EventBus,
    region: &str,
    bucket: &BucketKeys,
) -> Result<(), InventoryError> {
    let client = stock.client();
    loop {
        let entries: Value = client
            .xrange(bucket.events(), "-", "+", Some(RELAY_BATCH))
            .await?;
        let entries = outbox::entries(&entries);
        // The oldest entries, in id order: acknowledged as the prefix ending at the last.
        let Some(last) = entries.last().map(|entry| entry.id.to_string()) else {
            return Ok(());
        };
        // Units freed here (by this process or another): the local sold-out marker must not
        // refuse them.
        if entries
            .iter()
            .any(|entry| entry.get("type").is_some_and(crate::hot_path::frees_units))
        {
            stock.forget_sold_out(&bucket.sku);
        }
        let mut events: Vec<Event> = Vec::with_capacity(entries.len());
        for entry in &entries {
            outbox::push_events(bucket, entry, region, &mut events);
        }
        let count = events.len();
        bus.publish(events).await.map_err(|e| InventoryError::Protocol {
            script: "relay",
            detail: e.to_string(),
        })?;
        metrics::events_published(count);
        let remaining = scripts::outbox_ack(client, bucket, &last).await?;
        if remaining == 0 {
            return Ok(());
        }
    }
}

/// One sweeper pass: frees lapsed holds in buckets whose earliest hold is due. Work is
/// proportional to what expired, never to the catalog. Returns the holds freed.
pub async fn sweep_once(stock: &Stock) -> Result<i64, InventoryError> {
    let client = stock.client();
    let mut freed = 0;
    for (index, tag) in due_buckets(client, now_ms()).await? {
        let bucket = BucketKeys::from_tag(&tag);
        // Remove before sweeping: a hold added meanwhile re-indexes itself (ZADD LT), so the
        // entry we write back below can only be earlier, never lost. Written back to the
        // bucket's shard of the index, wherever it was found (a build before's single zset
        // drains into the shards).
        let _: i64 = client.zrem(index.as_str(), &tag).await?;
        let (expired, next) = scripts::sweep(client, &bucket, SWEEP_MAX_HOLDS).await?;
        if let Some(next) = next {
            let _: i64 = client
                .zadd(
                    keys::expiry_index(&tag),
                    None,
                    Some(Ordering::LessThan),
                    false,
                    false,
                    (next as f64, tag.as_str()),
                )
                .await?;
        }
        if expired > 0 {
            freed += expired;
            stock.touched([bucket.clone()]);
            // Units came back: a hot SKU's sold-out marker may be stale now.
            let _: i64 = client.del(keys::sold_out(&bucket.sku)).await?;
            stock.forget_sold_out(&bucket.sku);
        }
    }
    if freed > 0 {
        metrics::holds_expired(freed as u64);
    }
    Ok(freed)
}

/// The buckets due at `now` (earliest first, at most SWEEP_BATCH), each with the index key it
/// was found in: every shard of the expiry index and the single zset of builds before, read in
/// one pipeline (one round trip on standalone Redis; one per node on a cluster).
async fn due_buckets(client: &Client, now: i64) -> Result<Vec<(String, String)>, InventoryError> {
    let pipeline = client.pipeline();
    let indexes: Vec<String> = keys::expiry_indexes().collect();
    for index in &indexes {
        let _: () = pipeline
            .zrangebyscore(
                index.as_str(),
                f64::NEG_INFINITY,
                now as f64,
                true,
                Some((0, SWEEP_BATCH)),
            )
            .await?;
    }
    let replies: Vec<Value> = pipeline.all().await?;
    let mut due: Vec<(f64, String, String)> = Vec::new();
    for (index, reply) in indexes.into_iter().zip(replies) {
        let entries: Vec<(String, f64)> = reply.convert()?;
        due.extend(entries.into_iter().map(|(tag, at)| (at, index.clone(), tag)));
    }
    due.sort_by(|a, b| a.0.total_cmp(&b.0));
    due.truncate(usize::try_from(SWEEP_BATCH).unwrap_or(usize::MAX));
    Ok(due.into_iter().map(|(_, index, tag)| (index, tag)).collect())
}

/// Counts holds in Redis for the `live_holds` gauge (buckets in the expiry index only, at most
/// 10,000 of them): the bucket's `hn` plus holds of the old layout not yet drained. Pipelined:
/// one round trip for the index, one per 500 buckets for their counts.
pub async fn count_live_holds(stock: &Stock) -> Result<i64, InventoryError> {
    const MAX_BUCKETS: usize = 10_000;
    const PER_ROUND_TRIP: usize = 500;
    let client = stock.client();
    let pipeline = client.pipeline();
    for index in keys::expiry_indexes() {
        let _: () = pipeline
            .zrange(index, 0, MAX_BUCKETS as i64 - 1, None, false, None, false)
            .await?;
    }
    let replies: Vec<Value> = pipeline.all().await?;
    let mut tags = HashSet::new();
    for reply in replies {
        let found: Vec<String> = reply.convert()?;
        tags.extend(found);
    }
    let tags: Vec<String> = tags.into_iter().take(MAX_BUCKETS).collect();
    let mut total = 0;
    for chunk in tags.chunks(PER_ROUND_TRIP) {
        let pipeline = client.pipeline();
        for tag in chunk {
            let bucket = BucketKeys::from_tag(tag);
            let _: () = pipeline.hget(bucket.counters(), "hn").await?;
            let _: () = pipeline.zcard(bucket.holds()).await?;
        }
        let counts: Vec<Option<i64>> = pipeline.all().await?;
        total += counts.into_iter().map(|n| n.unwrap_or(0).max(0)).sum::<i64>();
    }
    Ok(total)
}

/// Surveys a standalone Redis for record shards of the per-slot layout (generation hashes
/// `res:{T}:<g>` a build before wrote): when there is none, sets `per_slot` = `0` in
/// [`keys::RECORD_POOL`], and the scripts stop probing them for every new reservation id (one
/// `EXISTS` of eight keys, ~3 µs of Redis time a record read). Whether that is settled now (also
/// on a cluster, which keeps the per-slot layout and has nothing to survey). Safe because only
/// a build before writes the per-slot layout on standalone Redis, and upgrading from it needs
/// the Reserve traffic drained (docs/inventory-redis.md): no new one appears after a scan that
/// found none.
pub async fn survey_per_slot_records(client: &Client) -> Result<bool, InventoryError> {
    survey(
        client,
        "per_slot",
        keys::PER_SLOT_RECORDS_PATTERN,
        Some(ScanType::Hash),
    )
    .await
}

/// Surveys a standalone Redis for records of the per-reservation layout (`res:{rid}`, written
/// by builds before the record shards): when there is none, sets `legacy` = `0` in
/// [`keys::RECORD_POOL`], and the scripts stop reading `res:{rid}` for every new reservation id
/// (a `GET`, ~2 µs of Redis time a record read). Whether that is settled now. Safe as
/// [`survey_per_slot_records`] is: no build since writes that layout.
pub async fn survey_legacy_records(client: &Client) -> Result<bool, InventoryError> {
    survey(client, "legacy", keys::LEGACY_RECORDS_PATTERN, None).await
}

/// Sets `field` = `0` in [`keys::RECORD_POOL`] when no key matches `pattern` (of `kind`):
/// whether that is settled now (always on a cluster, which reads every layout).
async fn survey(
    client: &Client,
    field: &str,
    pattern: &str,
    kind: Option<ScanType>,
) -> Result<bool, InventoryError> {
    if client.is_clustered() {
        return Ok(true);
    }
    let settled: Option<String> = client.hget(keys::RECORD_POOL, field).await?;
    if settled.as_deref() == Some("0") {
        return Ok(true);
    }
    let mut found = client.scan_buffered(pattern, Some(1000), kind);
    if let Some(key) = found.next().await {
        key?;
        return Ok(false);
    }
    let _: i64 = client.hset(keys::RECORD_POOL, (field, 0)).await?;
    Ok(true)
}

/// Sweeper passes between two record surveys while per-slot records remain (an hour at the
/// default 250 ms).
const SURVEY_EVERY: u64 = 14_400;

/// Runs the sweeper every `every` until the task is aborted.
pub async fn run_sweeper(stock: Stock, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes: u64 = 0;
    let mut surveyed = false;
    loop {
        interval.tick().await;
        if let Err(error) = sweep_once(&stock).await {
            tracing::warn!(%error, "sweep failed");
        }
        if !surveyed && passes.is_multiple_of(SURVEY_EVERY) {
            let client = stock.client();
            match (
                survey_per_slot_records(client).await,
                survey_legacy_records(client).await,
            ) {
                (Ok(per_slot), Ok(legacy)) => surveyed = per_slot && legacy,
                (Err(error), _) | (_, Err(error)) => tracing::warn!(%error, "record survey failed"),
            }
        }
        passes += 1;
        if passes.is_multiple_of(25)
            && let Ok(live) = count_live_holds(&stock).await
        {
            metrics::set_live_holds(live);
        }
    }
}

/// One rebalancer pass over every hot SKU: finish half-done transfers, then move idle units
/// from the richest buckets into dry ones, and keep the sold-out marker honest.
pub async fn rebalance_once(stock: &Stock) -> Result<i64, InventoryError> {
    let hot: Vec<String> = stock.client().smembers(keys::HOT_SKUS).await?;
    let mut moved = 0;
    for sku in hot {
        let layout = stock.layout(&sku).await?;
        stock.redrive_transfers(&sku, layout.buckets_max, false).await?;
        let levels = stock.bucket_levels(&sku).await?;
        let n = layout.buckets as usize;
        // Free units beyond the layout (moved there on a layout cached before a shrink) are
        // counted by readers but out of Reserve's reach: bring them home to bucket 0.
        for (i, bucket) in levels.iter().enumerate().skip(n) {
            let stray = bucket.levels.available();
            if stray > 0 {
                moved += stock.transfer(&sku, i as u32, 0, stray).await?;
            }
        }
        let mut available: Vec<i64> = levels.iter().take(n).map(|b| b.levels.available()).collect();
        let total: i64 = available.iter().sum();
        if total == 0 {
            continue;
        }
        let _: i64 = stock.client().del(keys::sold_out(&sku)).await?;
        stock.forget_sold_out(&sku);
        // Spreading pays while there is plenty to spread. Near sell-out every buyer scans all
        // buckets anyway, and a transfer's units are briefly in no bucket: moving them then
        // could only make a buyer see "sold out" while units remain.
        if total < MIN_UNITS_PER_BUCKET_TO_REBALANCE * n as i64 {
            continue;
        }
        for (dry, plan) in plan_rebalance(&available) {
            moved += stock.transfer(&sku, plan.0, dry, plan.1).await?;
            available[plan.0 as usize] -= plan.1;
        }
    }
    Ok(moved)
}

/// Re-drives every pending transfer in Redis, found by scanning for `inv:{B}:xfer` keys (a key
/// exists only while a transfer out of its bucket is pending): also the SKUs no longer in
/// `inv:hot`, whose transfers the hot-SKU pass would miss. Returns the transfers finished.
pub async fn redrive_everywhere(stock: &Stock) -> Result<usize, InventoryError> {
    let client = stock.client();
    let mut keys = if client.is_clustered() {
        client
            .scan_cluster_buffered(keys::TRANSFERS_PATTERN, Some(1000), None)
            .boxed()
    } else {
        client
            .scan_buffered(keys::TRANSFERS_PATTERN, Some(1000), None)
            .boxed()
    };
    let mut skus = HashSet::new();
    while let Some(key) = keys.next().await {
        if let Some(name) = key?.as_str() {
            skus.insert(BucketKeys::from_tag(keys::hash_tag(name)).sku);
        }
    }
    let mut redriven = 0;
    for sku in skus {
        let layout = stock.layout(&sku).await?;
        redriven += stock
            .redrive_transfers(&sku, layout.buckets_max.max(keys::MAX_BUCKETS), false)
            .await?;
    }
    Ok(redriven)
}

/// For each dry bucket (nothing available), a move of half the richest bucket's surplus:
/// `(dry bucket, (from bucket, units))`.
pub fn plan_rebalance(available: &[i64]) -> Vec<(u32, (u32, i64))> {
    let mut available = available.to_vec();
    let mut plan = Vec::new();
    for dry in 0..available.len() {
        if available[dry] > 0 {
            continue;
        }
        let Some((rich, &most)) = available.iter().enumerate().max_by_key(|(_, a)| **a) else {
            break;
        };
        if most < 2 {
            break;
        }
        let units = most / 2;
        available[rich] -= units;
        available[dry] += units;
        plan.push((dry as u32, (rich as u32, units)));
    }
    plan
}

/// Rebalancer passes between two scans for pending transfers of any SKU.
const REDRIVE_SCAN_EVERY: u64 = 20;

/// Runs the rebalancer every `every` until the task is aborted; every
/// [`REDRIVE_SCAN_EVERY`] passes (and at the first) it also re-drives pending transfers of
/// every SKU, hot or not.
pub async fn run_rebalancer(stock: Stock, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes: u64 = 0;
    loop {
        interval.tick().await;
        if passes.is_multiple_of(REDRIVE_SCAN_EVERY)
            && let Err(error) = redrive_everywhere(&stock).await
        {
            tracing::warn!(%error, "transfer re-drive scan failed");
        }
        passes += 1;
        if let Err(error) = rebalance_once(&stock).await {
            tracing::warn!(%error, "rebalance failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_rebalance_fills_dry_buckets_from_the_richest() {
        assert_eq!(plan_rebalance(&[10, 0, 4, 0]), vec![(1, (0, 5)), (3, (1, 2))]);
        assert!(
            plan_rebalance(&[1, 0, 0]).is_empty(),
            "one unit is not worth splitting"
        );
        assert!(plan_rebalance(&[3, 3]).is_empty());
    }
}
