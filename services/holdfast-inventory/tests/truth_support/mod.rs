//! Helpers of the durable-truth tests: a redis-server this test owns (started without
//! persistence, killed by pid), a sale driven through the engine, and the verdict counted
//! from the store.

#![allow(dead_code)] // each test uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use holdfast_inventory::reservations::ReserveAnswer;
use holdfast_inventory::{InventoryError, InventoryOptions, RunningInventory};
use holdfast_platform::events::InProcessBus;
use holdfast_platform::process::{free_port, ping};
use holdfast_platform::{RedisUrl, redis};
use holdfast_store::{SqliteStore, StockTruthStore, Store};

/// A redis-server without AOF or automatic snapshots, on a fixed port, that the test kills
/// with SIGKILL by pid and restarts on the same port and directory.
pub struct OwnRedis {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl OwnRedis {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        std::fs::create_dir_all(dir).expect("redis dir");
        let mut redis = Self {
            child: None,
            port: free_port().expect("free port"),
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
            ])
            .args(["--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ping(self.port).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> RedisUrl {
        RedisUrl::Standalone(format!("redis://127.0.0.1:{}", self.port))
    }

    /// SIGKILL by pid: no shutdown save, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
            child.wait().expect("reaped");
        }
    }

    /// Starts it again on the same port and directory (loading `dump.rdb` if one is there).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn cli(&self, args: &[&str]) -> String {
        holdfast_testkit::redis_cli(self.port, args).expect("redis-cli")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An inventory over `url` guarded by an in-memory SQLite store.
pub async fn inventory(url: &RedisUrl, store: &Store) -> RunningInventory {
    inventory_watching(url, store, Duration::from_millis(50)).await
}

/// The same, its generation watch beating the marker every `generation_every` (and on
/// reconnects): a long one leaves the moment after a loss to the calls themselves.
pub async fn inventory_watching(
    url: &RedisUrl,
    store: &Store,
    generation_every: Duration,
) -> RunningInventory {
    let pool = redis::connect(url, 4).await.expect("connect");
    let options = InventoryOptions {
        sweep_every: Duration::from_millis(50),
        rebalance_every: Duration::from_millis(100),
        outbox_rescan_every: Duration::from_secs(1),
        generation_every,
        ..InventoryOptions::default()
    };
    holdfast_inventory::start_with_truth(
        pool,
        Arc::new(InProcessBus::new()),
        "test",
        options,
        Some(Arc::new(store.clone())),
    )
    .await
    .expect("inventory starts")
}

pub async fn sqlite() -> Store {
    Store::from(SqliteStore::open_in_memory().await.expect("sqlite"))
}

/// What the buyers saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Commits answered OK: units granted.
    pub granted: AtomicI64,
    /// Calls answered UNAVAILABLE (Redis down, rebuilding) and retried.
    pub unavailable: AtomicI64,
    /// Reservations that vanished or were released before their commit (the saga compensates).
    pub compensated: AtomicI64,
}

/// One buyer: reserve 1 unit and commit it, retrying with a fresh reservation id on anything
/// but a sale or a refusal, until sold (true) or told sold out (false); gives up at `deadline`.
pub async fn buy(inv: &RunningInventory, sku: &str, buyer: usize, tally: &Tally, deadline: Instant) -> bool {
    let lines = vec![(sku.to_string(), 1)];
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "buyer {buyer} never finished");
        let rid = format!("{sku}-b{buyer}-a{attempt}");
        match inv.stock.reserve(&rid, &lines, 60).await {
            Ok(ReserveAnswer::Insufficient(_)) => return false,
            Ok(ReserveAnswer::Reserved { .. }) => match inv.stock.commit(&rid, &[]).await {
                Ok(_) => {
                    tally.granted.fetch_add(1, Ordering::SeqCst);
                    return true;
                }
                Err(InventoryError::NotFound(_) | InventoryError::Precondition { .. }) => {
                    tally.compensated.fetch_add(1, Ordering::SeqCst);
                    let _ = inv.stock.release(&rid).await;
                }
                Err(error) => {
                    assert_eq!(tonic::Status::from(error).code(), tonic::Code::Unavailable);
                    tally.unavailable.fetch_add(1, Ordering::SeqCst);
                    // The saga compensates an unknown commit outcome by releasing.
                    let _ = inv.stock.release(&rid).await;
                }
            },
            Err(error) => {
                let status = tonic::Status::from(error);
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                tally.unavailable.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unreachable!()
}

/// GetStock's level of `sku`, retried while another call rebuilds it (UNAVAILABLE).
pub async fn level_now(inv: &RunningInventory, sku: &str) -> holdfast_inventory::stock::SkuLevel {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match inv.stock.level(sku).await {
            Ok(level) => return level,
            Err(InventoryError::Rebuilding(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("GetStock of {sku}: {error}"),
        }
    }
}

/// Units the store records as sold for `sku`.
pub async fn store_sold(store: &Store, sku: &str) -> i64 {
    store
        .get_stock_truth(sku)
        .await
        .expect("truth")
        .map_or(0, |t| t.sold)
}

/// Polls `condition` until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
