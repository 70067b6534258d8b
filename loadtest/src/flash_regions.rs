//! `holdfast-load flash-sale --regions na,eu`: one global SKU sold in every region at once
//! (docs/regions.md). `SetGlobalStock` places `--units` in the first region, split over the
//! regions (`--region-split`, default even); `--buyers` are spread over the regions with a
//! skew (`--region-skew 15:1`) and shuffled in time. Every buyer reserves one unit in its
//! region and commits it; refused (its region's allocation ran out while another region still
//! has units, which transfers bring over), it tries again until it wins, its region sees the
//! world sold out, or `--patience` runs out.
//!
//! Against running regional stacks (`--target na=URL,eu=URL`) or a world this process starts
//! (`--local`: a Kafka broker and one `holdfast dev --region` per region, see
//! [`crate::region_world`]). The checks are the world's ([`crate::world_check`]); the figures:
//! throughput per region, transfer latency (debit to credit, from `GetReconciliation`) and
//! reconciliation lag (the age of each region's views of the others while the sale ran, and
//! the time from the last sale to zero drift everywhere).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use holdfast_platform::config::parse_duration;
use holdfast_proto::inventory::v1::{
    CommitRequest, RegionAllocation, ReservationStatus, ReserveLine, ReserveRequest, SetGlobalStockRequest,
};
use serde_json::json;
use tokio::time::Instant;

use crate::engine::{self, Sample};
use crate::region_figures::{Figures, RegionCounts};
use crate::region_world::{Tracker, Watch, World, availability};
use crate::report::{Check, RunReport};
use crate::scenario::{RunArgs, request, sample_list, shuffled_roles, splitmix, unix_ms, with_retries};
use crate::world_check::{self, RegionSale, WorldInputs};

/// The multi-region flags of `flash-sale`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegionArgs {
    /// Sell one global SKU across these regions (comma-separated, e.g. na,eu): --target is
    /// then REGION=URL,... and --local starts a Kafka broker and one `holdfast dev --region`
    /// per region. Every buyer reserves and commits (no checkout).
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with_all = ["pay", "cancel", "abandon", "reserve_limit", "checkout_limit", "drop", "warmup"]
    )]
    pub regions: Vec<String>,
    /// How buyers spread over the regions: weights in --regions order, e.g. 15:1
    /// [default: evenly].
    #[arg(long, value_name = "W:W:...", requires = "regions")]
    pub region_skew: Option<String>,
    /// How --units are allocated: units in --regions order summing to --units, e.g. 500:500
    /// [default: evenly, the remainder to the first].
    #[arg(long, value_name = "N:N:...", requires = "regions")]
    pub region_split: Option<String>,
    /// How long a buyer refused while its region does not see the world sold out keeps trying.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub patience: Duration,
}

/// What a multi-region sale runs on: `flash-sale`'s flags that apply to it.
#[derive(Debug, Clone)]
pub struct RegionSaleArgs {
    /// Target, load shape and output.
    pub run: RunArgs,
    /// The regions, skew, split and patience.
    pub regions: RegionArgs,
    /// The global SKU's world total (`--units`).
    pub units: i64,
    /// Buyers across every region (`--buyers`).
    pub buyers: u64,
    /// `--buckets` (1: a global SKU's allocation is one bucket).
    pub buckets: u32,
    /// `--hold-ttl` [default: 60 s].
    pub hold_ttl: Option<Duration>,
}

/// `a:b:c` as `n` non-negative numbers.
fn parse_parts(raw: &str, n: usize, flag: &str) -> anyhow::Result<Vec<i64>> {
    let parts: Vec<i64> = raw
        .split(':')
        .map(|p| p.trim().parse::<i64>().ok().filter(|v| *v >= 0))
        .collect::<Option<_>>()
        .with_context(|| format!("{flag} is non-negative numbers separated by ':', got {raw:?}"))?;
    anyhow::ensure!(
        parts.len() == n,
        "{flag} has {} parts for {n} regions",
        parts.len()
    );
    anyhow::ensure!(parts.iter().any(|p| *p > 0), "{flag} is all zero");
    Ok(parts)
}

/// `total` split in proportion to `weights` (largest remainders, the first region first on a
/// tie): the parts sum to `total`.
pub fn spread(total: u64, weights: &[i64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| *w.max(&0) as u128).sum::<u128>().max(1);
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|w| {
            let scaled = total as u128 * (*w.max(&0) as u128);
            ((scaled / sum) as u64, scaled % sum)
        })
        .collect();
    let mut parts: Vec<u64> = exact.iter().map(|(q, _)| *q).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| exact[*b].1.cmp(&exact[*a].1).then(a.cmp(b)));
    let short = total - parts.iter().sum::<u64>();
    for i in order.into_iter().take(short as usize) {
        parts[i] += 1;
    }
    parts
}

/// What a buyer came away with.
#[derive(Debug, Clone)]
enum Got {
    Won,
    SoldOut,
    GaveUp,
    Failed(String),
}

/// One region's counters while the sale runs.
struct RegionRun {
    name: String,
    /// The engine's operation name for this region's buyers (`Buy@na`).
    op: &'static str,
    mesh: Arc<crate::mesh::Mesh>,
    /// Set by the region's watcher once it sees the world sold out.
    sold_out: Arc<AtomicBool>,
    reserve_answers: AtomicU64,
    commit_answers: AtomicU64,
    won: AtomicI64,
    /// Microseconds from the start of the sale to the send of this region's last
    /// successful Commit.
    last_win_us: AtomicU64,
    reserve_latency: Mutex<Histogram<u64>>,
}

/// What every buyer shares.
struct Sale {
    run_id: String,
    sku: String,
    regions: Vec<RegionRun>,
    /// The region of buyer `i`.
    region_of: Vec<usize>,
    got: Vec<OnceLock<Got>>,
    won: Arc<AtomicI64>,
    started: Instant,
    ttl_seconds: u32,
    timeout: Duration,
    retries: u32,
    patience: Duration,
}

/// Runs the multi-region sale; answers its report (printed by the caller).
pub async fn run_report(args: RegionSaleArgs) -> anyhow::Result<RunReport> {
    crate::scenario::check_rate(&args.run)?;
    let names = args.regions.regions.clone();
    let n = names.len();
    anyhow::ensure!(n >= 2, "--regions needs two regions or more");
    anyhow::ensure!(
        names.iter().all(|r| !r.is_empty()) && (1..n).all(|i| !names[..i].contains(&names[i])),
        "--regions names each region once"
    );
    anyhow::ensure!(args.units > 0, "--units must be positive");
    anyhow::ensure!(args.buyers > 0, "--buyers must be positive");
    anyhow::ensure!(args.buckets == 1, "--buckets is 1 with --regions");
    let weights = match &args.regions.region_skew {
        Some(raw) => parse_parts(raw, n, "--region-skew")?,
        None => vec![1; n],
    };
    let split: Vec<i64> = match &args.regions.region_split {
        Some(raw) => parse_parts(raw, n, "--region-split")?,
        None => spread(args.units as u64, &vec![1; n])
            .into_iter()
            .map(|u| u as i64)
            .collect(),
    };
    anyhow::ensure!(
        split.iter().sum::<i64>() == args.units,
        "--region-split sums to {}, --units is {}",
        split.iter().sum::<i64>(),
        args.units
    );
    let buyers = spread(args.buyers, &weights);
    let ttl_seconds = args.hold_ttl.map_or(60, |t| t.as_secs().clamp(1, 3600) as u32);

    let world = World::connect(&args.run.target, &names).await?;
    let run_id = args.run.run_id();
    let started_ms = unix_ms();
    let sku = format!("{run_id}-DROP");
    let total = args.units;
    println!(
        "flash-sale --regions {run_id}: {total} units of {sku} split {}, {} buyers ({}), holds {ttl_seconds} s, against {}{}",
        split.iter().map(i64::to_string).collect::<Vec<_>>().join("/"),
        args.buyers,
        names
            .iter()
            .zip(&buyers)
            .map(|(r, b)| format!("{r} {b}"))
            .collect::<Vec<_>>()
            .join(", "),
        world.target,
        world
            .broker
            .as_ref()
            .map_or(String::new(), |b| format!(" (Kafka {})", b.bootstrap())),
    );
    // A target wired to the wrong region would place the SKU there: ask each first.
    for region in &world.regions {
        let serves = availability(&region.mesh, &sku)
            .await?
            .local
            .unwrap_or_default()
            .region;
        anyhow::ensure!(
            serves == region.name,
            "the target named {} serves region {serves:?}",
            region.name
        );
    }
    place(&world, &sku, total, &split).await?;
    ready(&world, &sku, &split, Instant::now() + args.run.settle_timeout).await?;

    let won = Arc::new(AtomicI64::new(0));
    let tracker = Tracker::start(
        world
            .regions
            .iter()
            .map(|r| (r.name.clone(), r.mesh.clone()))
            .collect(),
        sku.clone(),
        won.clone(),
    );
    let region_of: Vec<usize> = shuffled_roles(&buyers, args.run.seed);
    let watches: Vec<Watch> = world
        .regions
        .iter()
        .map(|r| Watch::start(r.mesh.clone(), sku.clone(), n))
        .collect();
    let sale = Arc::new(Sale {
        run_id: run_id.clone(),
        sku: sku.clone(),
        regions: world
            .regions
            .iter()
            .zip(&watches)
            .map(|(r, watch)| RegionRun {
                name: r.name.clone(),
                op: Box::leak(format!("Buy@{}", r.name).into_boxed_str()),
                mesh: r.mesh.clone(),
                sold_out: watch.sold_out(),
                reserve_answers: AtomicU64::new(0),
                commit_answers: AtomicU64::new(0),
                won: AtomicI64::new(0),
                last_win_us: AtomicU64::new(0),
                reserve_latency: Mutex::new(engine::histogram()),
            })
            .collect(),
        got: region_of.iter().map(|_| OnceLock::new()).collect(),
        region_of,
        won: won.clone(),
        started: Instant::now(),
        ttl_seconds,
        timeout: args.run.timeout,
        retries: args.run.retries,
        patience: args.regions.patience,
    });

    let plan = args
        .run
        .plan("flash-sale --regions", Some(args.buyers), None, 1_000.0);
    args.run.began("flash-sale");
    let result = {
        let sale = sale.clone();
        engine::run(&plan, move |i| {
            let sale = sale.clone();
            async move { buyer(&sale, i).await }
        })
        .await
    };
    let contest_s = result.elapsed.as_secs_f64();
    let tracked = tracker.finish(Instant::now() + args.run.settle_timeout).await;
    let mut watched = Vec::new();
    for (r, watch) in sale.regions.iter().zip(watches) {
        watched.push((r.name.clone(), watch.stop().await));
    }
    let regions = &sale.regions;

    let outcomes: Vec<(usize, Got)> = sale
        .region_of
        .iter()
        .zip(&sale.got)
        .map(|(r, g)| (*r, g.get().cloned().unwrap_or(Got::Failed("never ran".into()))))
        .collect();
    let unresolved: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, (_, g))| match g {
            Got::Failed(e) => Some(format!("buyer {i}: {e}")),
            _ => None,
        })
        .collect();
    let count = |region: usize, f: fn(&Got) -> bool| {
        outcomes.iter().filter(|(r, g)| *r == region && f(g)).count() as u64
    };
    let last_win = sale.started
        + Duration::from_micros(
            regions
                .iter()
                .map(|r| r.last_win_us.load(Ordering::Acquire))
                .max()
                .unwrap_or(0),
        );
    let settle_s = match tracked.settled_at {
        Some(at) => at.saturating_duration_since(last_win).as_secs_f64(),
        None => last_win.elapsed().as_secs_f64(),
    };
    let sales: Vec<RegionSale> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| RegionSale {
            region: r.name.clone(),
            buyers: buyers[i],
            winners: r.won.load(Ordering::Acquire),
        })
        .collect();

    let mut checks: Vec<Check> = world_check::world_checks(&WorldInputs {
        total,
        sales: &sales,
        unresolved: &unresolved,
        reports: &tracked.last,
        settled: tracked.settled_at.is_some(),
        settle_s,
    });
    checks.push(world_check::during_check(&watched, &tracked));
    let gave_up: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, (_, g))| matches!(g, Got::GaveUp))
        .map(|(i, (r, _))| format!("buyer {i} in {}", names[*r]))
        .collect();
    checks.push(Check::new(
        "patience",
        "no buyer gave up while its region did not see the world sold out",
        gave_up.is_empty(),
        if gave_up.is_empty() {
            format!(
                "every refused buyer stopped on a sold-out world (patience {:?})",
                sale.patience
            )
        } else {
            format!(
                "{} gave up after {:?}: {}",
                gave_up.len(),
                sale.patience,
                sample_list(&gave_up, 3)
            )
        },
    ));

    // The figures.
    let counts: Vec<RegionCounts> = regions
        .iter()
        .zip(sales)
        .enumerate()
        .map(|(i, (r, sale))| RegionCounts {
            sale,
            sold_out: count(i, |g| matches!(g, Got::SoldOut)),
            gave_up: count(i, |g| matches!(g, Got::GaveUp)),
            reserve_answers: r.reserve_answers.load(Ordering::Acquire),
            commit_answers: r.commit_answers.load(Ordering::Acquire),
            last_win_s: r.last_win_us.load(Ordering::Acquire) as f64 / 1e6,
            reserve_latency: r
                .reserve_latency
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| engine::histogram()),
            view_ages_ms: std::mem::take(&mut watched[i].1.view_ages_ms),
        })
        .collect();
    let figures = Figures::of(&counts, &tracked, settle_s, contest_s);
    figures.print(contest_s);

    Ok(RunReport::new(
        "flash-sale-regions",
        run_id,
        world.target.clone(),
        args.run.target.local,
        started_ms,
        json!({
            "sku": sku,
            "units": total,
            "split": names.iter().zip(&split).map(|(r, u)| json!({"region": r, "units": u})).collect::<Vec<_>>(),
            "buyers": args.buyers,
            "hold_ttl_s": ttl_seconds,
            "patience_s": sale.patience.as_secs_f64(),
            "regions": figures.regions,
            "transfers": figures.transfers,
            "reconciliation_lag": figures.lag,
            "final_reconciliation": tracked.last.iter().map(|(r, rec)| json!({
                "seen_from": r, "drift": rec.drift, "in_flight": rec.in_flight, "sold": rec.sold,
                "on_hand": rec.on_hand, "problems": rec.problems,
            })).collect::<Vec<_>>(),
        }),
        &result,
        checks,
        &args.run.slos,
        settle_s,
    ))
}

/// Places the global SKU in the first region with its split.
async fn place(world: &World, sku: &str, total: i64, split: &[i64]) -> anyhow::Result<()> {
    let home = &world.regions[0];
    home.mesh
        .inventory(0)
        .set_global_stock(SetGlobalStockRequest {
            sku: sku.to_string(),
            total,
            allocations: world
                .regions
                .iter()
                .zip(split)
                .map(|(r, units)| RegionAllocation {
                    region: r.name.clone(),
                    units: *units,
                })
                .collect(),
            placement_id: format!("{sku}-placement"),
            buckets: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!("SetGlobalStock {sku} in {}: {s}", home.name))?;
    Ok(())
}

/// Waits (polling, until `deadline`) for every region to hold its allocation and see every
/// other region fresh.
async fn ready(world: &World, sku: &str, split: &[i64], deadline: Instant) -> anyhow::Result<()> {
    for (region, units) in world.regions.iter().zip(split) {
        loop {
            let seen = availability(&region.mesh, sku).await;
            if let Ok(seen) = &seen {
                let local = seen.local.clone().unwrap_or_default();
                let fresh =
                    seen.regions.len() == world.regions.len() && seen.regions.iter().all(|r| !r.stale);
                if local.on_hand == *units && fresh {
                    break;
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "region {} not ready (its allocation of {units} and every region's view fresh): {seen:?}",
                region.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// One buyer: reserve and commit one unit in its region, again while refused and the world
/// not sold out.
async fn buyer(sale: &Sale, i: u64) -> Sample {
    let region = &sale.regions[sale.region_of[i as usize]];
    let got = buy(sale, region, i).await;
    let sample = match &got {
        Got::Won => Sample::answer(region.op, "won"),
        Got::SoldOut => Sample::answer(region.op, "sold_out"),
        Got::GaveUp => Sample::answer(region.op, "gave_up"),
        Got::Failed(e) => Sample::wrong(region.op, e),
    };
    let _ = sale.got[i as usize].set(got);
    sample
}

async fn buy(sale: &Sale, region: &RegionRun, i: u64) -> Got {
    let started = Instant::now();
    for attempt in 0u32.. {
        if started.elapsed() > sale.patience {
            return Got::GaveUp;
        }
        let rid = format!("{}-{}-{i}-{attempt}", sale.run_id, region.name);
        let message = ReserveRequest {
            reservation_id: rid.clone(),
            lines: vec![ReserveLine {
                sku: sale.sku.clone(),
                quantity: 1,
            }],
            ttl_seconds: sale.ttl_seconds,
        };
        let sent = Instant::now();
        let (result, _) = with_retries(sale.retries, |_| {
            let mut client = region.mesh.inventory(i);
            let message = message.clone();
            async move { client.reserve(request(message, sale.timeout)).await }
        })
        .await;
        let status = match result {
            Ok(reply) => {
                region.reserve_answers.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut h) = region.reserve_latency.lock() {
                    let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                }
                reply.into_inner().status
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                ReservationStatus::InsufficientStock as i32
            }
            Err(status) => return Got::Failed(format!("Reserve: {}", engine::code_name(status.code()))),
        };
        if status == ReservationStatus::Reserved as i32 {
            // The sale lands between the Commit's send and its answer: the send is the
            // earliest moment it can be seen, so the settle time measured from it is an
            // upper bound.
            let committing = sale.started.elapsed().as_micros() as u64;
            match commit(sale, region, i, rid).await {
                Ok(true) => {
                    region.won.fetch_add(1, Ordering::AcqRel);
                    sale.won.fetch_add(1, Ordering::AcqRel);
                    region.last_win_us.fetch_max(committing, Ordering::AcqRel);
                    return Got::Won;
                }
                // The hold was lost (it lapsed): try again.
                Ok(false) => continue,
                Err(e) => return Got::Failed(e),
            }
        }
        if status != ReservationStatus::InsufficientStock as i32 {
            return Got::Failed(format!("Reserve answered status {status}"));
        }
        if region.sold_out.load(Ordering::Acquire) {
            return Got::SoldOut;
        }
        // Refused while units may still come: back off 50 ms .. 400 ms, with jitter.
        let jitter = splitmix(i ^ (u64::from(attempt) << 32)) % 50;
        tokio::time::sleep(Duration::from_millis((50u64 << attempt.min(3)) + jitter)).await;
    }
    Got::GaveUp
}

/// Commits the hold `rid`: Ok(true) committed, Ok(false) the hold is gone.
async fn commit(sale: &Sale, region: &RegionRun, i: u64, rid: String) -> Result<bool, String> {
    let (result, _) = with_retries(sale.retries, |_| {
        let mut client = region.mesh.inventory(i);
        let message = CommitRequest {
            reservation_id: rid.clone(),
            ..Default::default()
        };
        async move { client.commit(request(message, sale.timeout)).await }
    })
    .await;
    match result {
        Ok(_) => {
            region.commit_answers.fetch_add(1, Ordering::Relaxed);
            Ok(true)
        }
        Err(s) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {
            region.commit_answers.fetch_add(1, Ordering::Relaxed);
            Ok(false)
        }
        Err(s) => Err(format!("Commit: {} {}", engine::code_name(s.code()), s.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keeps_the_total_and_the_skew() {
        assert_eq!(spread(1600, &[15, 1]), vec![1500, 100]);
        assert_eq!(spread(1000, &[1, 1]), vec![500, 500]);
        assert_eq!(
            spread(1001, &[1, 1]),
            vec![501, 500],
            "the remainder to the first"
        );
        assert_eq!(spread(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(spread(5, &[0, 1]), vec![0, 5]);
        assert_eq!(spread(7, &[2, 5]).iter().sum::<u64>(), 7);
    }

    #[test]
    fn parts_are_validated() {
        assert_eq!(parse_parts("15:1", 2, "--region-skew").unwrap(), vec![15, 1]);
        assert!(parse_parts("15", 2, "--region-skew").is_err(), "too few");
        assert!(parse_parts("1:-1", 2, "--region-skew").is_err(), "negative");
        assert!(parse_parts("0:0", 2, "--region-skew").is_err(), "all zero");
        assert!(parse_parts("a:1", 2, "--region-skew").is_err(), "not a number");
    }
}
