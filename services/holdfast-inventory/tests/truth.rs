//! Redis losing writes in the middle of a flash sale never oversells: a FLUSHALL, and a
//! kill -9 of a redis-server without AOF that restarts from an older snapshot. The units
//! granted are counted from the durable store; the counts are rebuilt from it (GetStock right
//! after an empty restart or a FLUSHALL already shows them); the sale goes on until sold out.

mod truth_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use holdfast_store::Store;
use truth_support::{OwnRedis, Tally, buy, eventually, inventory, level_now, sqlite, store_sold};

const STOCK: i64 = 40;
const BUYERS: usize = 60;
const AT_ONCE: usize = 6;

/// A fault injected once this many more units are granted than at the previous fault.
type Fault = (i64, Box<dyn FnOnce() + Send>);

/// Runs the sale, injecting each fault once its number of units more were granted since the
/// previous one (so sales happen between faults); returns the tally and how many were granted
/// before the last fault. With `probe`, GetStock right after each fault (Redis empty, the
/// watch not necessarily beaten yet) must show the rebuilt counts, never the empty Redis.
async fn sale_with_faults(
    inv: &Arc<holdfast_inventory::RunningInventory>,
    sku: &str,
    faults: Vec<Fault>,
    probe: bool,
) -> (Arc<Tally>, i64) {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(120);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Buyers start no new purchase once this many units are granted, until the fault is
    // injected: the sale cannot run past a fault's point (by more than those in flight).
    let gate = Arc::new(AtomicI64::new(faults.first().map_or(i64::MAX, |(more, _)| *more)));
    let mut buyers = tokio::task::JoinSet::new();
    for _ in 0..AT_ONCE {
        let (inv, tally, next, gate, sku) = (
            Arc::clone(inv),
            Arc::clone(&tally),
            Arc::clone(&next),
            Arc::clone(&gate),
            sku.to_string(),
        );
        buyers.spawn(async move {
            loop {
                while tally.granted.load(Ordering::SeqCst) >= gate.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "the gate never opened");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let buyer = next.fetch_add(1, Ordering::SeqCst);
                if buyer >= BUYERS {
                    return;
                }
                buy(&inv, &sku, buyer, &tally, deadline).await;
            }
        });
    }
    let mut before = 0;
    let mut faults = faults.into_iter().peekable();
    while let Some((more, fault)) = faults.next() {
        let at = before + more;
        gate.store(at, Ordering::SeqCst);
        let watcher = Arc::clone(&tally);
        eventually(Duration::from_secs(60), "enough sales before the fault", || {
            let watcher = Arc::clone(&watcher);
            async move { watcher.granted.load(Ordering::SeqCst) >= at }
        })
        .await;
        before = tally.granted.load(Ordering::SeqCst);
        fault();
        if probe {
            // Units move from on_hand to sold (commit) or back (rebuild), never out of the sum;
            // every sale answered before the fault is in the store, so in the rebuilt count.
            let level = level_now(inv, sku).await;
            println!("GetStock right after the fault: {level:?}");
            assert_eq!(
                level.levels.on_hand + level.levels.sold,
                STOCK,
                "GetStock right after the loss: {level:?}"
            );
            assert!(
                level.levels.sold >= before,
                "GetStock right after the loss counts the {before} sold before it: {level:?}"
            );
        }
        let reopen = faults.peek().map_or(i64::MAX, |(more, _)| before + more);
        gate.store(reopen, Ordering::SeqCst);
    }
    while let Some(done) = buyers.join_next().await {
        done.expect("buyer");
    }
    (tally, before)
}

async fn verdict(
    inv: &holdfast_inventory::RunningInventory,
    store: &Store,
    sku: &str,
    tally: &Tally,
    before: i64,
) {
    let granted = tally.granted.load(Ordering::SeqCst);
    let sold = store_sold(store, sku).await;
    println!(
        "granted {granted} (before the fault {before}), store sold {sold}, unavailable {}, compensated {}, rebuilt {}",
        tally.unavailable.load(Ordering::SeqCst),
        tally.compensated.load(Ordering::SeqCst),
        inv.stock.truth().expect("guarded").rebuilt()
    );
    assert!(sold <= STOCK, "oversold: {sold} units recorded sold of {STOCK}");
    assert!(
        granted <= sold,
        "every granted unit is in the store ({granted} > {sold})"
    );
    assert!(granted > before, "the sale went on after the fault");
    assert!(
        granted >= STOCK - AT_ONCE as i64,
        "the sale went on until (nearly) sold out: {granted} of {STOCK}"
    );
    assert!(
        inv.stock.truth().expect("guarded").rebuilt() >= 1,
        "the SKU was rebuilt"
    );
    // Redis agrees with the store: nothing left to sell, sold counted from the truth.
    let level = inv.stock.level(sku).await.expect("level");
    assert_eq!(level.levels.available(), 0, "{level:?}");
    assert_eq!(level.levels.on_hand + level.levels.sold, STOCK, "{level:?}");
    assert_eq!(
        level.levels.sold, sold,
        "Redis sold rebuilt from the store: {level:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flushall_mid_sale_never_oversells_and_the_sale_goes_on() {
    let dir = holdfast_testkit::TempDir::new("truth-flush").expect("dir");
    let redis = OwnRedis::start(dir.path(), &[]);
    let store = sqlite().await;
    let inv = Arc::new(inventory(&redis.url(), &store).await);
    inv.stock.set_stock("flash", STOCK, 1).await.expect("stock");
    let port = redis.port;
    let flush: Fault = (
        12,
        Box::new(move || {
            let answer = holdfast_testkit::redis_cli(port, &["FLUSHALL"]).expect("flushall");
            assert_eq!(answer.trim(), "OK");
        }),
    );
    let (tally, before) = sale_with_faults(&inv, "flash", vec![flush], true).await;
    verdict(&inv, &store, "flash", &tally, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_redis_without_aof_mid_sale_never_oversells_and_the_sale_goes_on() {
    // No AOF, no automatic snapshots; one SAVE early in the sale, then kill -9 later: the
    // restart comes back with the marker behind and fewer sales than the store knows (the
    // harder case than an empty restart, which reads like the FLUSHALL above).
    let dir = holdfast_testkit::TempDir::new("truth-kill").expect("dir");
    let redis = Arc::new(std::sync::Mutex::new(OwnRedis::start(dir.path(), &[])));
    let url = redis.lock().expect("redis").url();
    let store = sqlite().await;
    let inv = Arc::new(inventory(&url, &store).await);
    inv.stock.set_stock("flash", STOCK, 1).await.expect("stock");
    let saver = Arc::clone(&redis);
    let save: Fault = (
        4,
        Box::new(move || {
            assert_eq!(saver.lock().expect("redis").cli(&["SAVE"]).trim(), "OK");
        }),
    );
    let killer = Arc::clone(&redis);
    let kill: Fault = (
        8,
        Box::new(move || {
            let mut redis = killer.lock().expect("redis");
            redis.kill9();
            redis.restart();
        }),
    );
    let (tally, before) = sale_with_faults(&inv, "flash", vec![save, kill], false).await;
    verdict(&inv, &store, "flash", &tally, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_redis_without_aof_restarting_empty_mid_sale_never_oversells_and_get_stock_is_rebuilt() {
    // No AOF, no snapshot at all: the restart is an empty Redis (what `holdfast-load chaos
    // --kinds redis-no-aof` does). Twice, with sales in between.
    let dir = holdfast_testkit::TempDir::new("truth-empty").expect("dir");
    let redis = Arc::new(std::sync::Mutex::new(OwnRedis::start(dir.path(), &[])));
    let url = redis.lock().expect("redis").url();
    let store = sqlite().await;
    let inv = Arc::new(inventory(&url, &store).await);
    inv.stock.set_stock("flash", STOCK, 1).await.expect("stock");
    let kills: Vec<Fault> = [6, 10]
        .into_iter()
        .map(|more| {
            let killer = Arc::clone(&redis);
            let kill: Fault = (
                more,
                Box::new(move || {
                    let mut redis = killer.lock().expect("redis");
                    redis.kill9();
                    assert!(!redis.dir.join("dump.rdb").exists(), "nothing to restart from");
                    redis.restart();
                }),
            );
            kill
        })
        .collect();
    let (tally, before) = sale_with_faults(&inv, "flash", kills, true).await;
    verdict(&inv, &store, "flash", &tally, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_to_a_replica_that_missed_writes_never_oversells() {
    // A real replica (`--replicaof` on loopback) stops following the primary mid-sale (so it
    // misses the later sales), then takes over behind the primary's address, as behind a
    // virtual IP or a sentinel-managed proxy: the primary is killed -9 and its port is served
    // from the replica's data (the replica's snapshot, loaded by a server on that port).
    let dir = holdfast_testkit::TempDir::new("truth-replica").expect("dir");
    let primary = Arc::new(std::sync::Mutex::new(OwnRedis::start(
        &dir.path().join("primary"),
        &[],
    )));
    let primary_port = primary.lock().expect("primary").port.to_string();
    let replica = Arc::new(OwnRedis::start(
        &dir.path().join("replica"),
        &["--replicaof", "127.0.0.1", &primary_port],
    ));
    eventually(Duration::from_secs(20), "the replica follows", || {
        let replica = Arc::clone(&replica);
        async move {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        }
    })
    .await;
    let url = primary.lock().expect("primary").url();
    let store = sqlite().await;
    let inv = Arc::new(inventory(&url, &store).await);
    inv.stock.set_stock("flash", STOCK, 1).await.expect("stock");

    let detached = Arc::clone(&replica);
    let detach: Fault = (
        6,
        Box::new(move || {
            assert_eq!(detached.cli(&["REPLICAOF", "NO", "ONE"]).trim(), "OK");
        }),
    );
    let (promoted, killer) = (Arc::clone(&replica), Arc::clone(&primary));
    let failover: Fault = (
        10,
        Box::new(move || {
            assert_eq!(promoted.cli(&["SAVE"]).trim(), "OK");
            let mut primary = killer.lock().expect("primary");
            println!(
                "failover: replica sold {} seq {} beat {}; primary sold {} seq {} beat {}",
                promoted.cli(&["HGET", "inv:{flash}", "sold"]).trim(),
                promoted.cli(&["HGET", "inv:{flash}", "seq"]).trim(),
                promoted.cli(&["HGET", "inv:generation", "beat"]).trim(),
                primary.cli(&["HGET", "inv:{flash}", "sold"]).trim(),
                primary.cli(&["HGET", "inv:{flash}", "seq"]).trim(),
                primary.cli(&["HGET", "inv:generation", "beat"]).trim(),
            );
            primary.kill9();
            std::fs::copy(promoted.dir.join("dump.rdb"), primary.dir.join("dump.rdb"))
                .expect("replica's data");
            primary.restart();
        }),
    );
    let (tally, before) = sale_with_faults(&inv, "flash", vec![detach, failover], false).await;
    verdict(&inv, &store, "flash", &tally, before).await;
}
