//! Redis losing writes in the middle of a flash sale never oversells: a FLUSHALL, and a
//! kill -9 of a redis-server without AOF that restarts from an older snapshot. The units
//! granted are counted from the durable store; the counts are rebuilt from it; the sale goes
//! on until sold out.

mod truth_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use holdfast_store::Store;
use truth_support::{OwnRedis, Tally, buy, eventually, inventory, sqlite, store_sold};

const STOCK: i64 = 40;
const BUYERS: usize = 60;
const AT_ONCE: usize = 6;

/// A fault injected once `at` units are granted.
type Fault = (i64, Box<dyn FnOnce() + Send>);

/// Runs the sale, injecting each fault once its number of units is granted; returns the
/// tally and how many were granted before the last fault.
async fn sale_with_faults(
    inv: &Arc<holdfast_inventory::RunningInventory>,
    sku: &str,
    faults: Vec<Fault>,
) -> (Arc<Tally>, i64) {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(120);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut buyers = tokio::task::JoinSet::new();
    for _ in 0..AT_ONCE {
        let (inv, tally, next, sku) = (
            Arc::clone(inv),
            Arc::clone(&tally),
            Arc::clone(&next),
            sku.to_string(),
        );
        buyers.spawn(async move {
            loop {
                let buyer = next.fetch_add(1, Ordering::SeqCst);
                if buyer >= BUYERS {
                    return;
                }
                buy(&inv, &sku, buyer, &tally, deadline).await;
            }
        });
    }
    let mut before = 0;
    for (at, fault) in faults {
        let watcher = Arc::clone(&tally);
        eventually(Duration::from_secs(60), "enough sales before the fault", || {
            let watcher = Arc::clone(&watcher);
            async move { watcher.granted.load(Ordering::SeqCst) >= at }
        })
        .await;
        before = tally.granted.load(Ordering::SeqCst);
        fault();
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
    let (tally, before) = sale_with_faults(&inv, "flash", vec![flush]).await;
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
        16,
        Box::new(move || {
            let mut redis = killer.lock().expect("redis");
            redis.kill9();
            redis.restart();
        }),
    );
    let (tally, before) = sale_with_faults(&inv, "flash", vec![save, kill]).await;
    verdict(&inv, &store, "flash", &tally, before).await;
}
