//! Measures the durable truth's two costs (figures in `docs/inventory-redis.md`):
//!
//! - `rebuild`: the time from a FLUSHALL to every SKU rebuilt from the store, for
//!   `--skus N` (default 1,000,000) SKUs in a SQLite file;
//! - `wait`: Commit latency with and without `WAIT 1` against a real local replica
//!   (`redis-server --replicaof` on loopback), `--commits N` (default 2,000) each.
//!
//! `cargo run --release -p holdfast-inventory --example truth_bench -- [rebuild|wait|all] [--skus N] [--commits N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_inventory::InventoryOptions;
use holdfast_inventory::reservations::ReserveAnswer;
use holdfast_platform::events::InProcessBus;
use holdfast_platform::process::RedisProcess;
use holdfast_platform::{RedisUrl, redis};
use holdfast_store::{SqliteStore, StockTruthStore, StockWrite, Store};
use holdfast_testkit::{TempDir, redis_cli};

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start(
    url: &RedisUrl,
    store: &Store,
    options: InventoryOptions,
) -> holdfast_inventory::RunningInventory {
    let pool = redis::connect(url, 8).await.expect("connect");
    holdfast_inventory::start_with_truth(
        pool,
        Arc::new(InProcessBus::new()),
        "bench",
        options,
        Some(Arc::new(store.clone())),
    )
    .await
    .expect("inventory")
}

fn url_of(port: u16) -> RedisUrl {
    RedisUrl::Standalone(format!("redis://127.0.0.1:{port}"))
}

async fn rebuild(skus: u64) {
    let dir = TempDir::new("truth-bench").expect("dir");
    let redis = RedisProcess::start(&dir.path().join("redis"), &["--appendonly", "no"]).expect("redis");
    let store = Store::from(
        SqliteStore::open(dir.path().join("truth.db"))
            .await
            .expect("sqlite"),
    );
    let options = InventoryOptions {
        generation_every: Duration::from_millis(50),
        ..InventoryOptions::default()
    };
    let inv = start(&url_of(redis.port()), &store, options).await;
    let loaded = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..skus {
        batch.push(StockWrite {
            sku: format!("sku-{i:08}"),
            stocked: 100 + (i % 50) as i64,
            version: 1,
        });
        if batch.len() == 10_000 {
            store
                .record_stock(std::mem::take(&mut batch))
                .await
                .expect("load");
        }
    }
    store.record_stock(batch).await.expect("load");
    println!("loaded {skus} SKUs into the store in {:.1?}", loaded.elapsed());

    let truth = inv.stock.truth().expect("guarded");
    let rebuilt_before = truth.rebuilt();
    let started = Instant::now();
    assert_eq!(
        redis_cli(redis.port(), &["FLUSHALL"]).expect("flush").trim(),
        "OK"
    );
    while truth.rebuilt() - rebuilt_before < skus {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "rebuild never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "rebuild: {skus} SKUs rebuilt {:.1?} after FLUSHALL ({:.0} SKUs/s)",
        elapsed,
        skus as f64 / elapsed.as_secs_f64()
    );
    let level = inv.stock.level("sku-00000007").await.expect("level");
    assert_eq!(level.levels.on_hand, 107, "{level:?}");
}

async fn commits(url: &RedisUrl, store: &Store, wait_replicas: u32, n: u64, tag: &str) -> Vec<Duration> {
    let mut options = InventoryOptions::default();
    options.stock.wait_replicas = wait_replicas;
    options.stock.wait_timeout = Duration::from_millis(1000);
    let inv = start(url, store, options).await;
    let sku = format!("wait-{tag}");
    inv.stock
        .set_stock(&sku, i64::try_from(n).expect("n") + 10, 1)
        .await
        .expect("stock");
    let mut took = Vec::with_capacity(n as usize);
    for i in 0..n {
        let rid = format!("{tag}-{i}");
        let answer = inv
            .stock
            .reserve(&rid, &[(sku.clone(), 1)], 60)
            .await
            .expect("reserve");
        assert!(matches!(answer, ReserveAnswer::Reserved { .. }));
        let started = Instant::now();
        inv.stock.commit(&rid, &[]).await.expect("commit");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

fn summary(label: &str, took: &[Duration]) {
    let mean = took.iter().sum::<Duration>() / u32::try_from(took.len()).unwrap_or(1);
    let p = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!(
        "{label}: commits {} mean {mean:.2?} p50 {:.2?} p99 {:.2?}",
        took.len(),
        p(0.5),
        p(0.99)
    );
}

async fn wait(n: u64) {
    let dir = TempDir::new("truth-wait").expect("dir");
    let primary = RedisProcess::start(&dir.path().join("primary"), &[]).expect("primary");
    let port = primary.port().to_string();
    let _replica = RedisProcess::start(&dir.path().join("replica"), &["--replicaof", "127.0.0.1", &port])
        .expect("replica");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !redis_cli(primary.port(), &["INFO", "replication"])
        .expect("info")
        .contains("connected_slaves:1")
    {
        assert!(Instant::now() < deadline, "replica never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = Store::from(
        SqliteStore::open(dir.path().join("truth.db"))
            .await
            .expect("sqlite"),
    );
    let url = url_of(primary.port());
    summary("no WAIT", &commits(&url, &store, 0, n, "plain").await);
    summary("WAIT 1 ", &commits(&url, &store, 1, n, "wait1").await);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("all", String::as_str);
    if matches!(what, "wait" | "all") {
        wait(flag(&args, "--commits", 2_000)).await;
    }
    if matches!(what, "rebuild" | "all") {
        rebuild(flag(&args, "--skus", 1_000_000)).await;
    }
}
