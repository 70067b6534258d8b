//! `holdfast-load bench inventory`: the Reserve RPC against its single-shard limit, measured
//! in the same run on the same redis-server.
//!
//! Baseline: `redis-benchmark` calling `reserve.lua` by EVALSHA, one unit per call with a
//! fresh reservation id each time, at the same concurrency. Ours: the `Reserve` RPC through
//! gRPC to `holdfast serve inventory` (a separate process), same SKU, same concurrency.
//! Sold out: a flash sale after its last unit, the same callers hammering the sold-out SKU,
//! first with one Reserve call per attempt, then each caller on a `ReserveStream` of its own.
//! Pinned apart: baseline and ours again, on a SKU of their own, with Redis and the server
//! on half of the cores and the load generator (`redis-benchmark`, this process) on the other
//! half (`taskset`; skipped on one core).
//! Memory: a fresh redis-server loaded with idle SKUs and live holds (spread over SKUs, then
//! all on one hot SKU), read from `INFO memory`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use fred::prelude::{ClientLike, Pool};
use futures::StreamExt;
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::{background, scripts, stock::Stock};
use holdfast_platform::events::InProcessBus;
use holdfast_platform::process::RedisProcess;
use holdfast_platform::{RedisUrl, redis};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{ReservationStatus, ReserveLine, ReserveRequest, SetStockRequest};
use serde::Serialize;

use crate::engine::{self, Arrival, Plan, Sample};
use crate::mesh::{Server, holdfast_bin, spawn_server};
use crate::pinning::{self, Split};
use crate::reserve_streams::{self, Expect};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct InventoryBench {
    /// Reservations per side (baseline and ours).
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Concurrent callers on each side.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// Idle SKUs loaded for the memory figure.
    #[arg(long, default_value_t = 1_000_000)]
    pub skus: u64,
    /// Live holds loaded for the memory figure.
    #[arg(long, default_value_t = 100_000)]
    pub holds: u64,
    /// Reserve attempts on the sold-out SKU (0 skips the phase).
    #[arg(long, default_value_t = 100_000)]
    pub soldout_requests: u64,
    /// The holdfast binary (default: next to this one).
    #[arg(long)]
    pub holdfast_bin: Option<PathBuf>,
}

const SKU: &str = "BENCH-SKU";
const SOLDOUT_SKU: &str = "BENCH-SOLDOUT";
const HOT_SKU: &str = "BENCH-HOT";
const PINNED_SKU: &str = "BENCH-PINNED";

/// Throughput and latency of one side.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Requests per second.
    pub rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms (not reported by redis-benchmark's CSV).
    pub p999_ms: Option<f64>,
}

impl Side {
    /// The figures of a closed-loop phase.
    pub fn of(result: &engine::LoadResult) -> Self {
        let ms = |q: f64| result.all.value_at_quantile(q) as f64 / 1000.0;
        Self {
            rate: result.throughput(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: Some(ms(0.999)),
        }
    }
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryReport {
    /// Requests per side.
    pub requests: u64,
    /// Concurrent callers per side.
    pub concurrency: u64,
    /// redis-benchmark running reserve.lua by EVALSHA.
    pub baseline_evalsha: Side,
    /// The Reserve RPC through gRPC.
    pub reserve_rpc: Side,
    /// reserve_rpc.rate / baseline_evalsha.rate.
    pub ratio: f64,
    /// The same Reserves over `ReserveStream`, each caller on a stream of its own.
    pub reserve_stream: Side,
    /// reserve_stream.rate / baseline_evalsha.rate.
    pub stream_ratio: f64,
    /// Redis bytes per idle SKU.
    pub bytes_per_idle_sku: f64,
    /// Baseline and Reserve RPC again with the load generator on cores of its own; `None` on
    /// one core.
    pub pinned: Option<Pinned>,
    /// Sold-out answers (INSUFFICIENT_STOCK) on one sold-out SKU, same callers, one Reserve
    /// call per attempt; `None` if skipped.
    pub soldout: Option<Side>,
    /// The same, each caller on a `ReserveStream` of its own (one attempt in flight each).
    pub soldout_stream: Option<Side>,
    /// Redis bytes per live hold (hold, reservation record, expiry index share), holds spread
    /// 10 per SKU.
    pub bytes_per_live_hold: f64,
    /// Redis bytes per live hold with every hold on one SKU; `None` with no holds.
    pub bytes_per_live_hold_hot_sku: Option<f64>,
    /// Idle SKUs loaded.
    pub skus: u64,
    /// Live holds loaded.
    pub holds: u64,
}

/// The Reserve RPC against its baseline with the load generator pinned apart from the servers.
#[derive(Debug, Clone, Serialize)]
pub struct Pinned {
    /// `taskset -c` cores of redis-server and holdfast.
    pub server_cpus: String,
    /// `taskset -c` cores of redis-benchmark and the RPC callers.
    pub load_cpus: String,
    /// redis-benchmark running reserve.lua by EVALSHA.
    pub baseline_evalsha: Side,
    /// The Reserve RPC through gRPC.
    pub reserve_rpc: Side,
    /// reserve_rpc.rate / baseline_evalsha.rate.
    pub ratio: f64,
}

/// What the throughput phases measured.
struct Throughput {
    baseline: Side,
    ours: Side,
    ours_stream: Side,
    soldout: Option<SoldOut>,
    pinned: Option<Pinned>,
}

/// Runs the benchmark and prints the report.
pub async fn run(args: &InventoryBench) -> anyhow::Result<InventoryReport> {
    let scratch = std::env::temp_dir().join(format!("holdfast-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let throughput = throughput(args, &scratch.join("throughput")).await?;
    let memory = memory(args, &scratch.join("memory")).await?;
    let _ = std::fs::remove_dir_all(&scratch);
    let Throughput {
        baseline,
        ours,
        ours_stream,
        soldout,
        pinned,
    } = throughput;
    let (soldout, soldout_stream) = soldout.map_or((None, None), |s| (Some(s.calls), Some(s.streams)));
    let report = InventoryReport {
        requests: args.requests,
        concurrency: args.concurrency,
        ratio: ours.rate / baseline.rate,
        stream_ratio: ours_stream.rate / baseline.rate,
        baseline_evalsha: baseline,
        reserve_rpc: ours,
        reserve_stream: ours_stream,
        pinned,
        soldout,
        soldout_stream,
        bytes_per_idle_sku: memory.per_idle_sku,
        bytes_per_live_hold: memory.per_hold,
        bytes_per_live_hold_hot_sku: memory.per_hold_hot_sku,
        skus: args.skus,
        holds: args.holds,
    };
    print(&report);
    Ok(report)
}

fn print(r: &InventoryReport) {
    let row = |name: &str, s: &Side| {
        let p999 = s.p999_ms.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{name:<38} {:>10.0} {:>8.2} {:>8.2} {:>8}",
            s.rate, s.p50_ms, s.p99_ms, p999
        );
    };
    println!();
    println!(
        "inventory reserve, {} requests, {} concurrent callers, one SKU",
        r.requests, r.concurrency
    );
    println!(
        "{:<38} {:>10} {:>8} {:>8} {:>8}",
        "", "req/s", "p50 ms", "p99 ms", "p999 ms"
    );
    row("baseline: redis-benchmark EVALSHA", &r.baseline_evalsha);
    row("holdfast Reserve RPC (gRPC)", &r.reserve_rpc);
    println!("ratio (RPC / baseline): {:.3}   target >= 1.0", r.ratio);
    row("holdfast Reserve over ReserveStream", &r.reserve_stream);
    println!("ratio (ReserveStream / baseline): {:.3}", r.stream_ratio);
    println!(
        "p99 at {} callers: {:.2} ms   target <= 5 ms",
        r.concurrency, r.reserve_rpc.p99_ms
    );
    if let Some(p) = &r.pinned {
        println!(
            "pinned apart: redis-server and holdfast on cores {}, load generator on cores {}",
            p.server_cpus, p.load_cpus
        );
        row("baseline, pinned apart", &p.baseline_evalsha);
        row("holdfast Reserve RPC, pinned apart", &p.reserve_rpc);
        println!(
            "ratio pinned apart (RPC / baseline): {:.3}   target >= 1.0",
            p.ratio
        );
    }
    if let Some(s) = &r.soldout {
        row("sold-out SKU: Reserve answers", s);
    }
    if let Some(s) = &r.soldout_stream {
        row("sold-out SKU: answers on ReserveStream", s);
    }
    println!(
        "redis memory: {:.0} bytes per idle SKU ({} SKUs, target <= 200), {:.0} bytes per live hold ({} holds, target <= 100)",
        r.bytes_per_idle_sku, r.skus, r.bytes_per_live_hold, r.holds
    );
    if let Some(hot) = r.bytes_per_live_hold_hot_sku {
        println!(
            "redis memory: {hot:.0} bytes per live hold, {} holds on one SKU (target <= 150)",
            r.holds
        );
    }
}

fn start_inventory(bin: &Path, redis_url: &str) -> anyhow::Result<Server> {
    let mut command = Command::new(bin);
    command
        .args([
            "serve",
            "inventory",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--redis-url", redis_url, "--concurrency-limit", "100000"])
        // The benchmark's baseline calls carry no token (auth's cost is not measured yet).
        .arg("--insecure-no-auth");
    spawn_server(command, None)
}

async fn throughput(args: &InventoryBench, dir: &Path) -> anyhow::Result<Throughput> {
    let redis_server = RedisProcess::start(dir, &[])?;
    let mesh = start_inventory(&holdfast_bin(args.holdfast_bin.as_ref())?, &redis_server.url())?;
    let channels: Vec<_> = {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(
                tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.addr))?
                    .connect()
                    .await?,
            );
        }
        channels
    };
    let mut admin = InventoryServiceClient::new(channels[0].clone());
    admin
        .set_stock(SetStockRequest {
            sku: SKU.into(),
            on_hand: 1_000_000_000,
            buckets: 1,
        })
        .await?;

    // Warm both paths: connections, script cache, allocator.
    drive_rpc(&channels, args.concurrency, 5_000, "warm", SKU).await?;
    let baseline = redis_benchmark(redis_server.port(), args.concurrency, args.requests, SKU, None)?;
    let ours = drive_rpc(&channels, args.concurrency, args.requests, "run", SKU).await?;
    let ours_stream = Side::of(
        &reserve_streams::run(
            &channels,
            args.concurrency,
            args.requests,
            "stream",
            SKU,
            Expect::Reserved,
        )
        .await?,
    );
    let soldout = if args.soldout_requests > 0 {
        Some(soldout(&channels, args.concurrency, args.soldout_requests).await?)
    } else {
        None
    };
    let pinned = match pinning::split() {
        Some(split) => Some(pinned(args, &split, &redis_server, &mesh, &channels).await?),
        None => None,
    };
    drop(mesh);
    Ok(Throughput {
        baseline,
        ours,
        ours_stream,
        soldout,
        pinned,
    })
}

/// Baseline and Reserve RPC again, on a fresh SKU, with Redis and the server on the servers'
/// cores and the callers on the others.
async fn pinned(
    args: &InventoryBench,
    split: &Split,
    redis_server: &RedisProcess,
    server: &Server,
    channels: &[tonic::transport::Channel],
) -> anyhow::Result<Pinned> {
    pinning::pin(redis_server.pid(), &split.servers)?;
    pinning::pin(server.pid(), &split.servers)?;
    let _me = pinning::SelfPinned::new(split)?;
    InventoryServiceClient::new(channels[0].clone())
        .set_stock(SetStockRequest {
            sku: PINNED_SKU.into(),
            on_hand: 1_000_000_000,
            buckets: 1,
        })
        .await?;
    drive_rpc(channels, args.concurrency, 5_000, "pinned-warm", PINNED_SKU).await?;
    let baseline = redis_benchmark(
        redis_server.port(),
        args.concurrency,
        args.requests,
        PINNED_SKU,
        Some(split),
    )?;
    let ours = drive_rpc(channels, args.concurrency, args.requests, "pinned", PINNED_SKU).await?;
    Ok(Pinned {
        server_cpus: split.servers.clone(),
        load_cpus: split.load.clone(),
        ratio: ours.rate / baseline.rate,
        baseline_evalsha: baseline,
        reserve_rpc: ours,
    })
}

/// `bench flash-sale-soldout`: only the sold-out phases, on their own redis-server and server.
pub async fn run_soldout(args: &InventoryBench) -> anyhow::Result<SoldOut> {
    let dir = std::env::temp_dir().join(format!("holdfast-bench-soldout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let redis_server = RedisProcess::start(&dir, &[])?;
    let server = start_inventory(&holdfast_bin(args.holdfast_bin.as_ref())?, &redis_server.url())?;
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))?
                .connect()
                .await?,
        );
    }
    let side = soldout(&channels, args.concurrency, args.soldout_requests.max(1)).await?;
    drop(server);
    drop(redis_server);
    let _ = std::fs::remove_dir_all(&dir);
    for (how, side) in [("one call each", &side.calls), ("on streams", &side.streams)] {
        println!(
            "sold-out SKU, {} callers, {how}: {:.0} answers/s, p50 {:.2} ms, p99 {:.2} ms   target >= 50,000/s",
            args.concurrency, side.rate, side.p50_ms, side.p99_ms
        );
    }
    Ok(side)
}

/// The sold-out phases: the same callers, one Reserve call per attempt, then on streams.
#[derive(Debug, Clone, Serialize)]
pub struct SoldOut {
    /// One `Reserve` call per attempt.
    pub calls: Side,
    /// Each caller on a `ReserveStream` of its own.
    pub streams: Side,
}

/// A flash sale after its last unit: sells out one SKU, then `concurrency` callers send
/// `requests` Reserves for it. Every answer must be INSUFFICIENT_STOCK (a grant is an oversell).
async fn soldout(
    channels: &[tonic::transport::Channel],
    concurrency: u64,
    requests: u64,
) -> anyhow::Result<SoldOut> {
    const UNITS: i64 = 1_000;
    let mut admin = InventoryServiceClient::new(channels[0].clone());
    admin
        .set_stock(SetStockRequest {
            sku: SOLDOUT_SKU.into(),
            on_hand: UNITS,
            buckets: 1,
        })
        .await?;
    let sell_out = admin
        .reserve(ReserveRequest {
            reservation_id: "soldout-all".into(),
            lines: vec![ReserveLine {
                sku: SOLDOUT_SKU.into(),
                quantity: UNITS,
            }],
            ttl_seconds: 3600,
        })
        .await?;
    if sell_out.get_ref().status != ReservationStatus::Reserved as i32 {
        bail!("could not hold the last {UNITS} units of {SOLDOUT_SKU}");
    }
    let callers = channels.to_vec();
    let plan = Plan {
        arrival: Arrival::Closed {
            concurrency: concurrency as usize,
        },
        attempts: Some(requests),
        duration: None,
        label: "reserve (sold out)".into(),
        progress: true,
    };
    let result = engine::run(&plan, move |i| {
        let mut client = InventoryServiceClient::new(callers[i as usize % callers.len()].clone());
        async move {
            let answer = client
                .reserve(ReserveRequest {
                    reservation_id: format!("soldout-{i}"),
                    lines: vec![ReserveLine {
                        sku: SOLDOUT_SKU.into(),
                        quantity: 1,
                    }],
                    ttl_seconds: 600,
                })
                .await;
            match answer {
                Ok(reply) if reply.get_ref().status == ReservationStatus::InsufficientStock as i32 => {
                    Sample::answer("Reserve", "sold out")
                }
                Ok(_) => Sample::wrong("Reserve", "granted after sell-out"),
                Err(status) => Sample::error("Reserve", &status),
            }
        }
    })
    .await;
    if result.errors > 0 {
        bail!(
            "{} of {requests} sold-out Reserves were not answered INSUFFICIENT_STOCK: {:?}",
            result.errors,
            result.ops.get("Reserve").map(|o| &o.errors)
        );
    }
    let streams = reserve_streams::run(
        channels,
        concurrency,
        requests,
        "soldout-stream",
        SOLDOUT_SKU,
        Expect::SoldOut,
    )
    .await?;
    Ok(SoldOut {
        calls: Side::of(&result),
        streams: Side::of(&streams),
    })
}

/// At most this many baseline calls between two drops of the bucket's outbox: reserve.lua
/// refuses new holds once 100,000 entries wait unpublished, and no bus reads the baseline's.
const BASELINE_CHUNK: u64 = 50_000;

/// `redis-benchmark` running reserve.lua on `sku`, on the load generator's cores if `pinned`:
/// in chunks of [`BASELINE_CHUNK`] calls, the bucket's outbox dropped after each (standing in
/// for the bus the service has and the baseline has not, outside the timed calls). The rate is
/// all calls over the chunks' summed time; p50 is the chunks' median p50, p99 their worst p99.
fn redis_benchmark(
    port: u16,
    concurrency: u64,
    requests: u64,
    sku: &str,
    pinned: Option<&Split>,
) -> anyhow::Result<Side> {
    let keys = BucketKeys::new(sku, 0);
    let script = scripts::all()
        .into_iter()
        .find(|s| s.name == "reserve.lua")
        .context("reserve.lua registered")?;
    let sha = script.sha1().to_string();
    // The service runs its scripts as Redis functions; the baseline is the script as EVALSHA
    // runs it, the preludes included, so its body goes into the script cache first.
    let loaded = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SCRIPT", "LOAD", script.body()])
        .output()
        .context("running redis-cli")?;
    if !loaded.status.success() || String::from_utf8_lossy(&loaded.stdout).trim() != sha {
        bail!(
            "redis-cli SCRIPT LOAD reserve.lua: {}{}",
            String::from_utf8_lossy(&loaded.stdout),
            String::from_utf8_lossy(&loaded.stderr)
        );
    }
    let mut chunks = Vec::new();
    let mut left = requests.max(1);
    while left > 0 {
        let n = left.min(BASELINE_CHUNK);
        chunks.push((
            n,
            redis_benchmark_chunk(port, concurrency, n, (&sha, &keys), pinned)?,
        ));
        left -= n;
        let dropped = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "DEL", &keys.events()])
            .output()
            .context("running redis-cli")?;
        if !dropped.status.success() {
            bail!("redis-cli DEL: {}", String::from_utf8_lossy(&dropped.stderr));
        }
    }
    let seconds: f64 = chunks.iter().map(|(n, side)| *n as f64 / side.rate).sum();
    let mut p50s: Vec<f64> = chunks.iter().map(|(_, side)| side.p50_ms).collect();
    p50s.sort_by(f64::total_cmp);
    Ok(Side {
        rate: requests.max(1) as f64 / seconds,
        p50_ms: p50s[p50s.len() / 2],
        p99_ms: chunks.iter().map(|(_, side)| side.p99_ms).fold(0.0, f64::max),
        p999_ms: None,
    })
}

/// One `redis-benchmark` run of `requests` EVALSHA calls of reserve.lua (`sha`) on `keys`.
fn redis_benchmark_chunk(
    port: u16,
    concurrency: u64,
    requests: u64,
    (sha, keys): (&str, &BucketKeys),
    pinned: Option<&Split>,
) -> anyhow::Result<Side> {
    let mut command = match pinned {
        Some(split) => pinning::on_load_cores(split, "redis-benchmark"),
        None => Command::new("redis-benchmark"),
    };
    let output = command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-c",
            &concurrency.to_string(),
            "-n",
            &requests.to_string(),
            "-r",
            "1000000000",
            "--csv",
        ])
        .args([
            "EVALSHA",
            sha,
            "4",
            &keys.counters(),
            &keys.holds(),
            &keys.held(),
            &keys.events(),
        ])
        .args(["bench:__rand_int__", "1", "600000", &keys.sku, "0"])
        .output()
        .context("running redis-benchmark (install redis-tools)")?;
    if !output.status.success() {
        bail!("redis-benchmark: {}", String::from_utf8_lossy(&output.stderr));
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let csv = String::from_utf8_lossy(&output.stdout);
    let row = csv.lines().last().context("redis-benchmark printed nothing")?;
    let cols: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse::<f64>().unwrap_or(f64::NAN))
        .collect();
    if cols.len() < 6 {
        bail!("unexpected redis-benchmark CSV: {csv}");
    }
    Ok(Side {
        rate: cols[0],
        p50_ms: cols[3],
        p99_ms: cols[5],
        p999_ms: None,
    })
}

async fn drive_rpc(
    channels: &[tonic::transport::Channel],
    concurrency: u64,
    requests: u64,
    label: &str,
    sku: &str,
) -> anyhow::Result<Side> {
    let channels = channels.to_vec();
    let label = label.to_string();
    let sku = sku.to_string();
    let plan = Plan {
        arrival: Arrival::Closed {
            concurrency: concurrency as usize,
        },
        attempts: Some(requests),
        duration: None,
        label: format!("reserve ({label})"),
        progress: true,
    };
    let result = engine::run(&plan, move |i| {
        let mut client = InventoryServiceClient::new(channels[i as usize % channels.len()].clone());
        let reservation_id = format!("{label}-{i}");
        let sku = sku.clone();
        async move {
            let answer = client
                .reserve(ReserveRequest {
                    reservation_id,
                    lines: vec![ReserveLine { sku, quantity: 1 }],
                    ttl_seconds: 600,
                })
                .await;
            match answer {
                Ok(reply) if reply.get_ref().status == ReservationStatus::Reserved as i32 => {
                    Sample::answer("Reserve", "reserved")
                }
                Ok(_) => Sample::wrong("Reserve", "not held"),
                Err(status) => Sample::error("Reserve", &status),
            }
        }
    })
    .await;
    if result.errors > 0 {
        bail!(
            "{} of {requests} reservations were not held: {:?}",
            result.errors,
            result.ops.get("Reserve").map(|o| &o.errors)
        );
    }
    Ok(Side::of(&result))
}

async fn used_memory(pool: &Pool) -> anyhow::Result<f64> {
    let info: String = pool.next().info(Some(fred::types::InfoKind::Memory)).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("used_memory in INFO memory")
}

/// Redis bytes per idle SKU and per live hold.
struct Memory {
    per_idle_sku: f64,
    per_hold: f64,
    per_hold_hot_sku: Option<f64>,
}

async fn memory(args: &InventoryBench, dir: &Path) -> anyhow::Result<Memory> {
    // No append-only file: its rewrite buffers would count as data.
    let redis_server = RedisProcess::start(dir, &["--appendonly", "no"])?;
    let pool = redis::connect(&RedisUrl::Standalone(redis_server.url()), 8).await?;
    scripts::load_all(pool.next()).await?;
    let (relay, _) = tokio::sync::mpsc::unbounded_channel();
    let stock = Stock::new(pool.clone(), relay);
    let bus = InProcessBus::new();

    let before = used_memory(&pool).await?;
    // Idle SKUs exactly as the service leaves them: counters set, outbox published and gone.
    futures::stream::iter(0..args.skus)
        .map(|i| {
            let (stock, bus) = (&stock, &bus);
            async move {
                let bucket = BucketKeys::new(&format!("SKU-{i:08}"), 0);
                let set = scripts::set_stock(stock.client(), &bucket, 1_000, 1, "").await?;
                anyhow::ensure!(
                    matches!(set, scripts::StockSet::Set(_)),
                    "set_stock refused: {set:?}"
                );
                background::drain(stock, bus, "bench", &bucket).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let with_skus = used_memory(&pool).await?;
    let per_sku = (with_skus - before) / args.skus as f64;

    // Live holds through the full Reserve protocol (record, hold, expiry index), spread over
    // 10 holds per SKU, outboxes published.
    let skus_with_holds = args.holds.div_ceil(10).min(args.skus).max(1);
    futures::stream::iter(0..args.holds)
        .map(|i| {
            let (stock, bus) = (&stock, &bus);
            async move {
                let sku = format!("SKU-{:08}", i % skus_with_holds);
                let rid = format!("{:032x}", i);
                stock.reserve(&rid, &[(sku.clone(), 1)], 3600).await?;
                background::drain(stock, bus, "bench", &BucketKeys::new(&sku, 0)).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let with_holds = used_memory(&pool).await?;
    let per_hold = (with_holds - with_skus) / args.holds as f64;

    // The same number of holds, all on one hot SKU.
    let per_hold_hot_sku = if args.holds > 0 {
        let hot = BucketKeys::new(HOT_SKU, 0);
        let on_hand = i64::try_from(args.holds)?.saturating_mul(2);
        let set = scripts::set_stock(stock.client(), &hot, on_hand, 1, "").await?;
        anyhow::ensure!(
            matches!(set, scripts::StockSet::Set(_)),
            "set_stock refused: {set:?}"
        );
        background::drain(&stock, &bus, "bench", &hot).await?;
        let before_hot = used_memory(&pool).await?;
        futures::stream::iter(0..args.holds)
            .map(|i| {
                let (stock, bus, hot) = (&stock, &bus, &hot);
                async move {
                    let rid = format!("{:032x}", u64::MAX - i);
                    stock.reserve(&rid, &[(HOT_SKU.to_string(), 1)], 3600).await?;
                    if i % 256 == 0 {
                        background::drain(stock, bus, "bench", hot).await?;
                    }
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(256)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        background::drain(&stock, &bus, "bench", &hot).await?;
        Some((used_memory(&pool).await? - before_hot) / args.holds as f64)
    } else {
        None
    };
    let _ = pool.quit().await;
    drop(redis_server);
    Ok(Memory {
        per_idle_sku: per_sku,
        per_hold,
        per_hold_hot_sku,
    })
}
