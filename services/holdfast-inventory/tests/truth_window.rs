//! The moment after Redis loses data and before the generation watch beats the marker: reads
//! and grants in it see the durable truth, not the empty Redis. The watch here beats once an
//! hour (and on reconnects), so the calls themselves must notice.

mod truth_support;

use std::time::Duration;

use holdfast_inventory::RunningInventory;
use holdfast_inventory::reservations::ReserveAnswer;
use holdfast_store::{StockTruthStore, Store};
use truth_support::{OwnRedis, inventory_watching, level_now, sqlite, store_sold};

const HOUR: Duration = Duration::from_secs(3600);

async fn sell(inv: &RunningInventory, sku: &str, rid: &str) {
    let answer = inv
        .stock
        .reserve(rid, &[(sku.to_string(), 1)], 60)
        .await
        .expect("reserve");
    assert!(
        matches!(answer, ReserveAnswer::Reserved { .. }),
        "{rid}: {answer:?}"
    );
    inv.stock.commit(rid, &[]).await.expect("commit");
}

async fn guarded(redis: &OwnRedis, store: &Store) -> RunningInventory {
    let inv = inventory_watching(&redis.url(), store, HOUR).await;
    inv.stock.set_stock("mug", 10, 1).await.expect("stock");
    for i in 0..3 {
        sell(&inv, "mug", &format!("before-{i}")).await;
    }
    inv
}

/// After the loss: GetStock first (no Commit has beaten the marker yet), then the sale goes on.
async fn read_then_sell(inv: &RunningInventory, store: &Store) {
    let level = level_now(inv, "mug").await;
    assert_eq!(
        (level.levels.on_hand, level.levels.reserved, level.levels.sold),
        (7, 0, 3),
        "GetStock right after the loss shows the rebuilt counts: {level:?}"
    );
    // Those counts can only come from a rebuild. It may be the one the reconnect started, whose
    // count is bumped just after its last Redis write: allow it that moment (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while inv.stock.truth().expect("guarded").rebuilt() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuilt counts were read, yet no rebuild was counted"
        );
        tokio::task::yield_now().await;
    }
    sell(inv, "mug", "after-0").await;
    let level = level_now(inv, "mug").await;
    assert_eq!((level.levels.on_hand, level.levels.sold), (6, 4), "{level:?}");
    assert_eq!(store_sold(store, "mug").await, 4);
}

#[tokio::test]
async fn get_stock_right_after_a_flushall_shows_the_rebuilt_counts() {
    let dir = holdfast_testkit::TempDir::new("window-flush").expect("dir");
    let redis = OwnRedis::start(dir.path(), &[]);
    let store = sqlite().await;
    let inv = guarded(&redis, &store).await;
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    read_then_sell(&inv, &store).await;
}

#[tokio::test]
async fn get_stock_right_after_a_kill9_without_aof_shows_the_rebuilt_counts() {
    let dir = holdfast_testkit::TempDir::new("window-kill").expect("dir");
    let mut redis = OwnRedis::start(dir.path(), &[]);
    let store = sqlite().await;
    let inv = guarded(&redis, &store).await;
    redis.kill9();
    redis.restart();
    read_then_sell(&inv, &store).await;
}

#[tokio::test]
async fn a_reserve_right_after_a_flushall_is_granted_from_the_rebuilt_counts() {
    let dir = holdfast_testkit::TempDir::new("window-reserve").expect("dir");
    let redis = OwnRedis::start(dir.path(), &[]);
    let store = sqlite().await;
    let inv = guarded(&redis, &store).await;
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    sell(&inv, "mug", "after-flush").await;
    let level = level_now(&inv, "mug").await;
    assert_eq!((level.levels.on_hand, level.levels.sold), (6, 4), "{level:?}");
}

#[tokio::test]
async fn a_bucket_lost_while_the_marker_survives_is_rebuilt_by_the_next_reserve() {
    // An eviction or a partial loss: the generation marker is intact, so no beat can tell;
    // the reserve scripts answer -1 for a bucket without on_hand and the guard asks the store.
    let dir = holdfast_testkit::TempDir::new("window-evict").expect("dir");
    let redis = OwnRedis::start(dir.path(), &[]);
    let store = sqlite().await;
    let inv = guarded(&redis, &store).await;
    inv.stock.set_stock("cup", 5, 1).await.expect("stock");
    let era = inv.stock.truth().expect("guarded").era();

    assert_eq!(redis.cli(&["DEL", "inv:{mug}"]).trim(), "1");
    // One line on a standalone Redis: reserve_single.lua.
    sell(&inv, "mug", "single").await;
    assert_eq!(
        inv.stock.truth().expect("guarded").era(),
        era,
        "no loss of the marker was seen: the SKU alone was verified"
    );

    assert_eq!(redis.cli(&["DEL", "inv:{mug}", "inv:{cup}"]).trim(), "2");
    // Two lines: reservation_claim + reserve.lua per line.
    let lines = vec![("mug".to_string(), 2), ("cup".to_string(), 1)];
    let answer = inv.stock.reserve("multi", &lines, 60).await.expect("reserve");
    assert!(matches!(answer, ReserveAnswer::Reserved { .. }), "{answer:?}");
    inv.stock.commit("multi", &[]).await.expect("commit");

    let mug = level_now(&inv, "mug").await;
    assert_eq!((mug.levels.on_hand, mug.levels.sold), (4, 6), "{mug:?}");
    let cup = level_now(&inv, "cup").await;
    assert_eq!((cup.levels.on_hand, cup.levels.sold), (4, 1), "{cup:?}");
    assert_eq!(store_sold(&store, "mug").await, 6);
}

#[tokio::test]
async fn a_sku_never_stocked_stays_out_of_stock() {
    let dir = holdfast_testkit::TempDir::new("window-ghost").expect("dir");
    let redis = OwnRedis::start(dir.path(), &[]);
    let store = sqlite().await;
    let inv = guarded(&redis, &store).await;
    for rid in ["ghost-1", "ghost-2"] {
        let answer = inv
            .stock
            .reserve(rid, &[("ghost".to_string(), 1)], 60)
            .await
            .expect("reserve");
        let ReserveAnswer::Insufficient(short) = answer else {
            panic!("{rid}: {answer:?}");
        };
        assert_eq!((short[0].sku.as_str(), short[0].available), ("ghost", 0));
    }
    let lines = vec![("mug".to_string(), 1), ("ghost".to_string(), 1)];
    let answer = inv.stock.reserve("ghost-3", &lines, 60).await.expect("reserve");
    assert!(matches!(answer, ReserveAnswer::Insufficient(_)), "{answer:?}");
    // Nothing was written for the ghost, nothing held of the mug, the store never heard of it.
    assert_eq!(redis.cli(&["EXISTS", "inv:{ghost}"]).trim(), "0");
    let mug = level_now(&inv, "mug").await;
    assert_eq!((mug.levels.on_hand, mug.levels.reserved), (7, 0), "{mug:?}");
    let ghost = level_now(&inv, "ghost").await;
    assert_eq!(ghost.levels, Default::default());
    assert!(store.get_stock_truth("ghost").await.expect("truth").is_none());
}

/// A Commit retried after Redis lost the reservation (the first attempt recorded the sale,
/// then redis-server restarted empty before the caller saw the answer): with the SKUs named it
/// is confirmed from the durable sales, once, and the unit stays sold; without them, or for a
/// reservation that never sold, NOT_FOUND as before (the caller compensates).
#[tokio::test]
async fn a_commit_retried_after_a_flushall_is_confirmed_from_the_durable_sale() {
    let dir = holdfast_testkit::TempDir::new("window-commit").expect("dir");
    let redis = OwnRedis::start(dir.path(), &[]);
    let store = sqlite().await;
    let inv = guarded(&redis, &store).await;
    let held = inv
        .stock
        .reserve("held", &[("mug".to_string(), 1)], 60)
        .await
        .expect("reserve");
    assert!(matches!(held, ReserveAnswer::Reserved { .. }), "{held:?}");
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");

    let mug = ["mug".to_string()];
    let lines = inv
        .stock
        .commit("before-2", &mug)
        .await
        .expect("a recorded sale is confirmed");
    assert_eq!(
        lines.iter().map(|l| (l.sku.as_str(), l.qty)).collect::<Vec<_>>(),
        [("mug", 1)]
    );
    let again = inv.stock.commit("before-2", &mug).await.expect("and again");
    assert_eq!(again.len(), 1);
    assert!(
        matches!(
            inv.stock.commit("before-1", &[]).await,
            Err(holdfast_inventory::error::InventoryError::NotFound(_))
        ),
        "without the SKUs there is nothing to look the sale up by"
    );
    assert!(
        matches!(
            inv.stock.commit("held", &mug).await,
            Err(holdfast_inventory::error::InventoryError::NotFound(_))
        ),
        "a hold lost with Redis was never sold: NOT_FOUND, the caller compensates"
    );
    let level = level_now(&inv, "mug").await;
    assert_eq!(
        (level.levels.on_hand, level.levels.reserved, level.levels.sold),
        (7, 0, 3),
        "confirming sells nothing twice: {level:?}"
    );
    assert_eq!(store_sold(&store, "mug").await, 3);
}
