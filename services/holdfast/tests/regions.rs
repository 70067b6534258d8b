//! Two regions as two `holdfast dev --region ...` processes, each with its own embedded
//! redis-server and data dir, over one real Apache Kafka broker: a global SKU of 1,000 units
//! split 500/500, 1,500 buyers in `na` and 100 in `eu`. `na` sells past its allocation through
//! transfers; exactly 1,000 sell; `na` is killed with SIGKILL mid-transfers and restarted,
//! and the broker is stopped mid-sale and restarted; the reconciliation ends at zero drift,
//! every debited transfer credited, and `holdfast reconcile` agrees. A regional SKU reserved
//! in the wrong region is refused naming its home.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::*;
use holdfast_testkit::BearerChannel as Channel;
use holdfast_testkit::{KafkaBroker, TempDir};
use tokio::sync::RwLock;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const SKU: &str = "DROP-E2E";
/// A second global SKU nobody buys but the test, to show both regions sell locally while
/// the broker is down.
const PROBE: &str = "PROBE-E2E";

struct Region {
    name: &'static str,
    port: u16,
    data: TempDir,
    brokers: String,
    child: std::sync::Mutex<Option<Child>>,
    client: RwLock<Option<InventoryServiceClient<Channel>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn dev(name: &str, port: u16, data: &Path, brokers: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "dev",
            "--region",
            name,
            "--regions",
            "na,eu",
            "--region-snapshot-ms",
            "200",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--admin-listen", "127.0.0.1:0", "--kafka-brokers", brokers])
        .arg("--data-dir")
        .arg(data)
        // The regions' log level: `HOLDFAST_E2E_LOG=holdfast_inventory=debug` to diagnose.
        .env(
            "RUST_LOG",
            std::env::var("HOLDFAST_E2E_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env_remove("HOLDFAST_REDIS_URL");
    command
}

impl Region {
    async fn start(name: &'static str, brokers: &str) -> Region {
        let region = Region {
            name,
            port: free_port(),
            data: TempDir::new(name).expect("data dir"),
            brokers: brokers.to_string(),
            child: std::sync::Mutex::new(None),
            client: RwLock::new(None),
        };
        region.launch().await;
        region
    }

    async fn launch(&self) {
        // The region's log, kept next to its data (printed when the test fails).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log file");
        let command = dev(self.name, self.port, self.data.path(), &self.brokers);
        let (child, channel) = common::spawn_dev_logged(command, self.data.path(), log).await;
        *self.child.lock().expect("child") = Some(child);
        *self.client.write().await = Some(InventoryServiceClient::new(channel));
    }

    fn kill9(&self) {
        let child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    fn log(&self) -> std::path::PathBuf {
        self.data.path().join("holdfast.log")
    }

    async fn client(&self) -> Option<InventoryServiceClient<Channel>> {
        self.client.read().await.clone()
    }

    async fn availability(&self) -> Option<RegionalAvailability> {
        self.availability_of(SKU).await
    }

    async fn availability_of(&self, sku: &str) -> Option<RegionalAvailability> {
        let mut client = self.client().await?;
        client
            .get_regional_availability(GetRegionalAvailabilityRequest {
                skus: vec![sku.into()],
            })
            .await
            .ok()
            .map(|r| r.into_inner().skus.remove(0))
    }

    async fn reconciliation(&self) -> Option<GetReconciliationResponse> {
        let mut client = self.client().await?;
        client
            .get_reconciliation(GetReconciliationRequest {
                skus: vec![SKU.into(), PROBE.into()],
            })
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// Reserves and commits one unit of `sku` right now (no retry: it must be local).
    async fn buy_now(&self, rid: &str, sku: &str) -> bool {
        let mut client = self.client().await.expect("client");
        let held = client
            .reserve(ReserveRequest {
                reservation_id: rid.into(),
                lines: vec![ReserveLine {
                    sku: sku.into(),
                    quantity: 1,
                }],
                ttl_seconds: 30,
            })
            .await
            .expect("reserve")
            .into_inner();
        if held.status != ReservationStatus::Reserved as i32 {
            return false;
        }
        client
            .commit(CommitRequest {
                reservation_id: rid.into(),
                ..Default::default()
            })
            .await
            .is_ok()
    }

    async fn sold(&self) -> i64 {
        self.availability()
            .await
            .and_then(|a| a.local)
            .map_or(0, |l| l.sold)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- {} log (last 60 lines, newest first) ----\n{}",
                self.name,
                tail.join("\n")
            );
        }
        self.kill9();
    }
}

async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        if Instant::now() >= deadline {
            for name in ["na", "eu"] {
                let prefix = format!("holdfast-{name}-{}-", std::process::id());
                let logs = std::fs::read_dir(std::env::temp_dir())
                    .into_iter()
                    .flatten()
                    .flatten();
                for dir in logs.filter(|d| d.file_name().to_string_lossy().starts_with(&prefix)) {
                    let log = std::fs::read_to_string(dir.path().join("holdfast.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    eprintln!("---- {} ----\n{}", dir.path().display(), tail.join("\n"));
                }
            }
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One buyer: new reservation id per attempt; a hold whose commit cannot be confirmed is
/// retried (Commit is idempotent) until it commits or expired. Gives up once the world is
/// sold out (no region shows a unit, none in flight, twice 600 ms apart).
async fn buy(region: &Region, who: String) -> bool {
    let mut zero_seen = 0;
    for attempt in 0.. {
        let rid = format!("{who}-{attempt}");
        let Some(mut client) = region.client().await else {
            continue;
        };
        let answer = client
            .reserve(ReserveRequest {
                reservation_id: rid.clone(),
                lines: vec![ReserveLine {
                    sku: SKU.into(),
                    quantity: 1,
                }],
                ttl_seconds: 5,
            })
            .await;
        match answer {
            Ok(answer) if answer.get_ref().status == ReservationStatus::Reserved as i32 => loop {
                let Some(mut client) = region.client().await else {
                    continue;
                };
                match client
                    .commit(CommitRequest {
                        reservation_id: rid.clone(),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => return true,
                    Err(status) if status.code() == tonic::Code::FailedPrecondition => break,
                    Err(status) if status.code() == tonic::Code::NotFound => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            },
            Ok(_) => {}
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        match region.availability().await {
            Some(world) if world.world_available == 0 && world.in_flight == 0 && world.regions.len() == 2 => {
                zero_seen += 1;
                if zero_seen >= 2 {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            _ => {
                zero_seen = 0;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_regions_over_kafka_sell_exactly_the_world_total_through_a_crash_and_a_broker_outage() {
    let mut broker = KafkaBroker::start().expect("kafka (make deps installs it)");
    let brokers = broker.bootstrap();
    let na = Arc::new(Region::start("na", &brokers).await);
    let eu = Arc::new(Region::start("eu", &brokers).await);

    // A regional SKU of na, reserved in eu: refused, naming na.
    let mut na_client = na.client().await.expect("na");
    na_client
        .set_stock(SetStockRequest {
            sku: "BOOT-NA".into(),
            on_hand: 5,
            buckets: 0,
        })
        .await
        .expect("regional stock");
    eventually(Duration::from_secs(30), "eu to learn BOOT-NA's home", || async {
        let mut client = eu.client().await.expect("eu");
        let refused = client
            .reserve(ReserveRequest {
                reservation_id: format!("boot-{}", uuid_like()),
                lines: vec![ReserveLine {
                    sku: "BOOT-NA".into(),
                    quantity: 1,
                }],
                ttl_seconds: 5,
            })
            .await;
        matches!(refused, Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message().contains("region na"))
    })
    .await;

    // The global drop, and the probe.
    for (sku, total) in [(SKU, 1000), (PROBE, 100)] {
        na_client
            .set_global_stock(SetGlobalStockRequest {
                sku: sku.into(),
                total,
                allocations: vec![
                    RegionAllocation {
                        region: "na".into(),
                        units: total / 2,
                    },
                    RegionAllocation {
                        region: "eu".into(),
                        units: total / 2,
                    },
                ],
                placement_id: format!("{sku}-placement"),
                buckets: 0,
            })
            .await
            .expect("placed");
        eventually(Duration::from_secs(30), "eu's allocation", || async {
            eu.availability_of(sku)
                .await
                .and_then(|a| a.local)
                .is_some_and(|l| l.on_hand == total / 2)
        })
        .await;
    }

    let na_buyers = {
        let na = na.clone();
        tokio::spawn(async move {
            let na = &na;
            futures::stream::iter(0..1500)
                .map(|i| async move { buy(na, format!("na-{i}")).await })
                .buffer_unordered(32)
                .filter(|won| futures::future::ready(*won))
                .count()
                .await
        })
    };
    let eu_buyers = {
        let eu = eu.clone();
        tokio::spawn(async move {
            let eu = &eu;
            futures::stream::iter(0..100)
                .map(|i| async move { buy(eu, format!("eu-{i}")).await })
                .buffer_unordered(4)
                .filter(|won| futures::future::ready(*won))
                .count()
                .await
        })
    };

    // Mid-transfers: na sold past its allocation, so units are moving. Kill -9 and restart.
    eventually(
        Duration::from_secs(120),
        "na selling transferred units",
        || async { na.sold().await > 550 },
    )
    .await;
    na.kill9();
    na.launch().await;
    // How long the restarted region takes to hear eu again: its consumer's rejoin.
    let back = Instant::now();
    eventually(Duration::from_secs(60), "na hearing eu again", || async {
        na.availability().await.is_some_and(|a| {
            a.regions
                .iter()
                .any(|r| r.region == "eu" && !r.stale && r.age_ms < 1_000)
        })
    })
    .await;
    eprintln!(
        "na heard eu again {:.1} s after its restart",
        back.elapsed().as_secs_f64()
    );
    // Mid-sale again: stop the broker; both regions keep selling what they hold.
    eventually(
        Duration::from_secs(120),
        "na selling again after its restart",
        || async { na.sold().await > 600 },
    )
    .await;
    broker.kill();
    for i in 0..5 {
        assert!(
            na.buy_now(&format!("probe-na-{i}"), PROBE).await,
            "na sells locally without the broker"
        );
        assert!(
            eu.buy_now(&format!("probe-eu-{i}"), PROBE).await,
            "eu sells locally without the broker"
        );
    }
    broker.restart().expect("broker back");

    // Bounded: a region that never hears the other again (its consumer dead) must fail the
    // test, not hang it.
    let (na_won, eu_won) = tokio::time::timeout(Duration::from_secs(180), async {
        (
            na_buyers.await.expect("na buyers"),
            eu_buyers.await.expect("eu buyers"),
        )
    })
    .await
    .expect("every buyer answered within 180 s of the broker's return");
    assert_eq!(
        na_won + eu_won,
        1000,
        "winners = min(stock, buyers): na {na_won}, eu {eu_won}"
    );
    assert!(na_won > 500, "na sold past its allocation: {na_won}");

    eventually(
        Duration::from_secs(60),
        "a settled, consistent reconciliation",
        || async {
            // Both regions, each with a fresh view of the other: a stale view can be
            // consistent and still miss the other region's last sales.
            for region in [&na, &eu] {
                let Some(report) = region.reconciliation().await else {
                    return false;
                };
                let settled = report.consistent
                    && report.skus.iter().all(|s| {
                        s.in_flight == 0 && s.regions.len() == 2 && s.regions.iter().all(|r| !r.stale)
                    });
                if !settled {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for report in [na.reconciliation().await, eu.reconciliation().await] {
        let report = report.expect("reconciliation");
        assert!(report.consistent, "{report:?}");
        let probe = &report.skus[1];
        assert_eq!((probe.sold, probe.drift), (10, 0), "{probe:?}");
        let sku = &report.skus[0];
        assert_eq!(report.drift_units, 0, "{sku:?}");
        assert!(sku.problems.is_empty(), "{:?}", sku.problems);
        assert_eq!(sku.sold, 1000, "{sku:?}");
        assert_eq!(sku.on_hand + sku.sold + sku.in_flight, 1000, "conservation");
        assert!(
            sku.in_flight_transfers.is_empty(),
            "every debited transfer credited"
        );
    }

    // The operator's command agrees.
    let region = &na;
    let output = Command::new(BIN)
        .args([
            "reconcile",
            "--target",
            &format!("http://127.0.0.1:{}", region.port),
            "--sku",
            SKU,
        ])
        .arg("--data-dir")
        .arg(region.data.path())
        .output()
        .expect("holdfast reconcile");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "reconcile exited {:?}: {stdout}",
        output.status
    );
    assert!(stdout.contains("drift 0 units: consistent"), "{stdout}");
    assert!(stdout.contains("\"drift_units\":0"), "{stdout}");
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
