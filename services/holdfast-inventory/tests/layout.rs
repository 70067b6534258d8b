//! The hold layout: holds in small listpack shards (`inv:{B}:h<n>`; a one-shard bucket's holds of
//! packed ids in the bucket hash itself), and holds written by the scripts of the layouts before
//! (a zset and a hash per bucket, `tests/fixtures/v1_*.lua`; every hold in a shard key,
//! `tests/fixtures/v3_reserve_single.lua`: those scripts as they shipped) still commit, release,
//! extend and expire correctly.

mod common;
mod layout_support;

use common::{Fixture, events, idle, next_event, reserved};
use fred::prelude::{
    Client, ClientLike, HashesInterface, KeysInterface, LuaInterface, SortedSetsInterface, Value,
};
use holdfast_inventory::keys::{self, BucketKeys};
use holdfast_inventory::scripts::{self, BatchItem, SingleReserve};
use holdfast_proto::events::v1::inventory_event::Event as Ev;
use layout_support::{hold_count, hold_of, holds_in_bucket_hash, old_reserve_single, v3_reserve_single};

const V1_RESERVE: &str = include_str!("fixtures/v1_reserve.lua");
const V1_RESERVE_SINGLE: &str = include_str!("fixtures/v1_reserve_single.lua");
const V2_RESERVE_SINGLE: &str = include_str!("fixtures/v2_reserve_single.lua");

/// A one-line Reserve exactly as the service ran it before this layout: record + old hold.
async fn v1_reserve_single(client: &Client, rid: &str, sku: &str, qty: i64, ttl_seconds: u32) -> String {
    let reply = old_reserve_single(client, V1_RESERVE_SINGLE, rid, (sku, qty), ttl_seconds).await;
    reply[0].as_string().expect("state")
}

/// One bucket's hold as the old `reserve.lua` wrote it.
async fn v1_reserve(client: &Client, bucket: &BucketKeys, rid: &str, qty: i64, ttl_ms: i64) -> i64 {
    let reply: Value = client
        .eval(
            V1_RESERVE,
            vec![bucket.counters(), bucket.holds(), bucket.held(), bucket.events()],
            vec![
                rid.to_string(),
                qty.to_string(),
                ttl_ms.to_string(),
                bucket.sku.clone(),
                bucket.index.to_string(),
            ],
        )
        .await
        .expect("v1 reserve");
    match reply {
        Value::Array(values) => values[1].as_i64().expect("expiry"),
        other => panic!("unexpected {other:?}"),
    }
}

async fn reserved_units(fx: &Fixture, sku: &str) -> i64 {
    let levels: Vec<Option<i64>> = fx
        .redis()
        .hmget(BucketKeys::new(sku, 0).counters(), vec!["reserved"])
        .await
        .expect("levels");
    levels[0].unwrap_or(0)
}

#[tokio::test]
async fn reservations_made_by_the_old_scripts_still_commit_release_extend_and_expire() {
    let fx = Fixture::standalone_with(idle()).await;
    let mut rx = events(&fx.bus);
    fx.set_stock("OLD", 20, 1).await;
    let client = fx.redis();
    for rid in ["old-commit", "old-release", "old-extend", "old-live"] {
        assert_eq!(v1_reserve_single(client, rid, "OLD", 2, 600).await, "reserved");
    }
    let bucket = BucketKeys::new("OLD", 0);
    let lapsing = v1_reserve(client, &bucket, "old-lapse", 3, 1).await;
    assert_eq!(reserved_units(&fx, "OLD").await, 11);
    assert_eq!(hold_count(client, &bucket).await, 5, "every old hold is read");

    // The full service path on records and holds the old scripts wrote.
    let committed = fx.commit("old-commit").await.expect("commit");
    assert_eq!(committed.levels[0].sold, 2);
    assert_eq!(
        fx.release("old-release").await.expect("release").released_units,
        2
    );
    let (_, before) = hold_of(client, &bucket, "old-extend").await.expect("held");
    let extended = scripts::extend(client, &bucket, "old-extend", 3_600_000)
        .await
        .expect("extend")
        .expect("live");
    assert!(extended > before);
    assert_eq!(hold_of(client, &bucket, "old-extend").await, Some((2, extended)));
    let old_layout: Vec<String> = client
        .zrange(bucket.holds(), 0, -1, None, false, None, false)
        .await
        .expect("old");
    assert!(
        !old_layout.contains(&"old-extend".to_string()),
        "an extended hold moved to the new layout"
    );

    // The old lapsed hold is expired (by the sweeper, or by any script's purge before it), its
    // units given back.
    fx.wait_redis_time_past(lapsing).await;
    scripts::sweep(client, &bucket, 100).await.expect("sweep");
    assert_eq!(hold_of(client, &bucket, "old-lapse").await, None);
    assert_eq!(reserved_units(&fx, "OLD").await, 4, "old-extend and old-live");
    let level = scripts::availability(client, &bucket)
        .await
        .expect("availability");
    assert_eq!(
        (level.levels.on_hand, level.levels.reserved, level.levels.sold),
        (18, 4, 2)
    );
    let snapshot = scripts::snapshot(client, &bucket).await.expect("snapshot");
    let mut live: Vec<(String, i64)> = snapshot.holds.clone();
    live.sort();
    assert_eq!(
        live,
        vec![("old-extend".to_string(), 2), ("old-live".to_string(), 2)]
    );

    // A new hold next to the old ones, then everything released: no key of either layout is left.
    assert!(reserved(
        &fx.reserve("new-1", &[("OLD", 1)], 600).await.expect("reserve")
    ));
    let expired = next_event(
        &mut rx,
        |e| matches!(e, Ev::Expired(x) if x.reservation_id == "old-lapse"),
    )
    .await;
    let Ev::Expired(expired) = expired else {
        unreachable!()
    };
    assert_eq!(expired.quantity, 3);
    for rid in ["old-extend", "old-live", "new-1"] {
        assert!(
            fx.release(rid).await.expect("release").released_units > 0,
            "{rid}"
        );
    }
    assert_eq!(reserved_units(&fx, "OLD").await, 0);
    let left: i64 = client
        .exists(vec![
            bucket.holds(),
            bucket.held(),
            bucket.hold_index(),
            bucket.hold_shard(0),
        ])
        .await
        .expect("exists");
    assert_eq!(left, 0, "both layouts drained");
    let fields: Vec<Option<i64>> = client
        .hmget(bucket.counters(), vec!["hs", "hn", "hx"])
        .await
        .expect("fields");
    assert_eq!(
        fields,
        vec![None, None, None],
        "an idle bucket keeps no layout fields"
    );
}

#[tokio::test]
async fn a_hot_bucket_keeps_every_shard_a_listpack_and_finds_every_hold() {
    let fx = Fixture::standalone().await;
    fx.set_stock("HOT", 10_000, 1).await;
    let bucket = BucketKeys::new("HOT", 0);
    for i in 0..HOT_HOLDS {
        let hold = scripts::reserve(fx.redis(), &bucket, &format!("hot-{i}"), hot_units(i), 600_000)
            .await
            .expect("reserve");
        assert!(matches!(hold, scripts::Hold::Held { .. }), "{hold:?}");
    }
    hot_bucket_holds_every_hold_in_listpacks(&fx, &bucket).await;
}

/// The same through `reserve_batch.lua`, which reads and writes the shard counts once per call
/// and splits shards in the middle of a call.
#[tokio::test]
async fn a_hot_bucket_filled_by_batches_keeps_every_shard_a_listpack_and_finds_every_hold() {
    let fx = Fixture::standalone().await;
    fx.set_stock("HOT", 10_000, 1).await;
    let bucket = BucketKeys::new("HOT", 0);
    let items: Vec<BatchItem> = (0..HOT_HOLDS)
        .map(|i| BatchItem {
            rid: format!("hot-{i}"),
            qty: hot_units(i),
            ttl_ms: 600_000,
            fingerprint: format!("fp-{i}"),
            lines: format!(r#"[["HOT",{},0]]"#, hot_units(i)),
            admit: None,
        })
        .collect();
    let live = scripts::BatchMode::Live {
        missing_is_empty: false,
    };
    for chunk in items.chunks(scripts::MAX_BATCH) {
        let reply = scripts::reserve_batch(fx.redis(), &bucket, chunk, (86_400_000, 600_000), live)
            .await
            .expect("batch");
        assert!(
            reply
                .outcomes
                .iter()
                .all(|o| matches!(o, SingleReserve::Reserved(_))),
            "{:?}",
            reply.outcomes
        );
    }
    hot_bucket_holds_every_hold_in_listpacks(&fx, &bucket).await;
}

const HOT_HOLDS: i64 = 3_000;

fn hot_units(i: i64) -> i64 {
    1 + i % 3
}

/// After HOT_HOLDS holds `hot-<i>` of hot_units(i): the counts are right, every shard is a
/// listpack, every hold is found with its units and releases them, and the bucket then keeps
/// no hold key or count.
async fn hot_bucket_holds_every_hold_in_listpacks(fx: &Fixture, bucket: &BucketKeys) {
    let client = fx.redis();
    let n = HOT_HOLDS;
    let fields: Vec<Option<i64>> = client
        .hmget(bucket.counters(), vec!["hs", "hn", "reserved"])
        .await
        .expect("fields");
    let shards = fields[0].expect("hs");
    assert_eq!(fields[1], Some(n));
    assert_eq!(fields[2], Some((0..n).map(hot_units).sum::<i64>()));
    assert!(shards >= n / 32, "{shards} shards for {n} holds");
    let shard_count = u32::try_from(shards).expect("shards");
    for shard in 0..shard_count {
        assert_eq!(
            encoding(client, &bucket.hold_shard(shard)).await,
            "listpack",
            "shard {shard}"
        );
    }
    // Every hold is found where the scripts look for it, with its units.
    for i in 0..n {
        assert_eq!(
            hold_of(client, bucket, &format!("hot-{i}")).await.map(|h| h.0),
            Some(hot_units(i)),
            "hot-{i}"
        );
    }
    for i in 0..n {
        let units = scripts::release(client, bucket, &format!("hot-{i}"))
            .await
            .expect("release");
        assert_eq!(units, hot_units(i));
    }
    let fields: Vec<Option<i64>> = client
        .hmget(bucket.counters(), vec!["hs", "hn", "hx", "reserved"])
        .await
        .expect("fields");
    assert_eq!(fields, vec![None, None, None, Some(0)]);
    let left: i64 = client
        .exists(vec![bucket.hold_index(), bucket.hold_shard(0)])
        .await
        .expect("exists");
    assert_eq!(left, 0);
}

/// The layout fields of a bucket: `hs`, `hn`, `hx` (shards, holds, shard 0's expiry bound). `hs`
/// is stored from two shards on: a missing one means one shard.
async fn layout_fields(client: &Client, bucket: &BucketKeys) -> Vec<Option<i64>> {
    client
        .hmget(bucket.counters(), vec!["hs", "hn", "hx"])
        .await
        .expect("fields")
}

/// Units the bucket counts as reserved by its live holds (`availability.lua`).
async fn live_reserved(client: &Client, bucket: &BucketKeys) -> i64 {
    scripts::availability(client, bucket)
        .await
        .expect("availability")
        .levels
        .reserved
}

/// Holds `qty` of `bucket` for `rid` (it must be held) -> its expiry.
async fn hold(client: &Client, bucket: &BucketKeys, rid: &str, qty: i64, ttl_ms: i64) -> i64 {
    match scripts::reserve(client, bucket, rid, qty, ttl_ms)
        .await
        .expect("reserve")
    {
        scripts::Hold::Held { expires_at } => expires_at,
        other => panic!("{rid} not held: {other:?}"),
    }
}

/// How many of the bucket's index key and first `shards` hold shards exist.
async fn layout_keys(client: &Client, bucket: &BucketKeys, shards: u32) -> i64 {
    let mut keys = vec![bucket.hold_index()];
    keys.extend((0..shards).map(|n| bucket.hold_shard(n)));
    client.exists(keys).await.expect("exists")
}

async fn index_of(client: &Client, bucket: &BucketKeys) -> Vec<(String, f64)> {
    client
        .zrange(bucket.hold_index(), 0, -1, None, false, None, true)
        .await
        .expect("zrange")
}

/// A bucket with one shard keeps shard 0's expiry bound in its own hash (no index key): the
/// purge, the sweeper and the split read and move it; from two shards on the zset indexes.
#[tokio::test]
async fn a_bucket_with_one_shard_keeps_its_expiry_bound_in_its_own_hash() {
    let fx = Fixture::standalone_with(idle()).await;
    let client = fx.redis();
    fx.set_stock("ONE", 1_000, 1).await;
    let bucket = BucketKeys::new("ONE", 0);
    let mut expiries = Vec::new();
    for i in 0..32 {
        expiries.push(hold(client, &bucket, &format!("one-{i}"), 1, 600_000 + i).await);
    }
    assert_eq!(
        layout_fields(client, &bucket).await,
        vec![None, Some(32), Some(expiries[0])]
    );
    assert_eq!(
        layout_keys(client, &bucket, 0).await,
        0,
        "no index key while one shard holds everything"
    );

    // A lapsed hold is found through the field: the sweep expires it and re-scores the bound.
    layout_support::lapse_hold(client, &bucket, "one-0").await;
    assert_eq!(layout_fields(client, &bucket).await[2], Some(1));
    assert_eq!(live_reserved(client, &bucket).await, 31);
    let (expired, next) = scripts::sweep(client, &bucket, 100).await.expect("sweep");
    assert_eq!((expired, next), (1, Some(expiries[1])));
    assert_eq!(layout_fields(client, &bucket).await[2], Some(expiries[1]));

    // The split to two shards hands the bound to the zset, which then indexes both shards.
    for i in 32..40 {
        scripts::reserve(client, &bucket, &format!("one-{i}"), 1, 700_000)
            .await
            .expect("reserve");
    }
    let fields = layout_fields(client, &bucket).await;
    assert_eq!((fields[0], fields[2]), (Some(2), None), "{fields:?}");
    let index = index_of(client, &bucket).await;
    assert_eq!(
        index.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vec!["0", "1"],
        "{index:?}"
    );
    assert_eq!(hold_count(client, &bucket).await, 39);
    let (expired, next) = scripts::sweep(client, &bucket, 100).await.expect("sweep");
    assert_eq!((expired, next), (0, Some(expiries[1])));
    for i in 1..40 {
        assert_eq!(
            scripts::release(client, &bucket, &format!("one-{i}"))
                .await
                .expect("release"),
            1
        );
    }
    assert_eq!(layout_fields(client, &bucket).await, vec![None, None, None]);
    assert_eq!(layout_keys(client, &bucket, 2).await, 0);
}

/// A one-shard bucket indexed by the zset of the build before (`tests/fixtures/v2_*.lua`): read
/// while the field is absent, folded into the field by the next hold, and purged either way.
#[tokio::test]
async fn a_one_shard_index_of_the_build_before_is_read_and_folded_into_the_field() {
    let fx = Fixture::standalone_with(idle()).await;
    let client = fx.redis();
    fx.set_stock("OLDX", 10, 1).await;
    let bucket = BucketKeys::new("OLDX", 0);
    let short = old_reserve_single(client, V2_RESERVE_SINGLE, "v2-short", ("OLDX", 1), 1).await;
    let short_expiry = short[1].as_i64().expect("expiry");
    let long = old_reserve_single(client, V2_RESERVE_SINGLE, "v2-long", ("OLDX", 2), 600).await;
    assert_eq!(index_of(client, &bucket).await.len(), 1, "the old build's zset");
    assert_eq!(layout_fields(client, &bucket).await[2], None);
    // Read through the zset: the next expiry, and the lapsed hold purged by the sweep.
    fx.wait_redis_time_past(short_expiry).await;
    assert_eq!(live_reserved(client, &bucket).await, 2);
    let (expired, next) = scripts::sweep(client, &bucket, 100).await.expect("sweep");
    assert_eq!((expired, next), (1, long[1].as_i64()));
    // The next hold folds the zset's bound into the field and deletes the zset.
    hold(client, &bucket, "new-1", 3, 900_000).await;
    assert_eq!(layout_keys(client, &bucket, 0).await, 0);
    assert_eq!(layout_fields(client, &bucket).await[2], long[1].as_i64());
    for (rid, units) in [("v2-long", 2), ("new-1", 3)] {
        assert_eq!(
            scripts::release(client, &bucket, rid).await.expect("release"),
            units
        );
    }
    assert_eq!(layout_fields(client, &bucket).await, vec![None, None, None]);
}

/// While a build before this layout still runs (a rolling upgrade), a hold it adds to a
/// one-shard bucket that has the field is indexed in a zset beside it: the sweeper is not woken
/// for that zset's bound over and over (it reads the index the purge reads), the hold is still
/// found and released, and the stray zset is cleared by the next pass once the bucket is empty.
#[tokio::test]
async fn a_zset_an_older_build_writes_beside_the_field_does_not_wake_the_sweeper() {
    let fx = Fixture::standalone_with(idle()).await;
    let client = fx.redis();
    fx.set_stock("MIX", 10, 1).await;
    let bucket = BucketKeys::new("MIX", 0);
    let expires_at = hold(client, &bucket, "new-1", 1, 600_000).await;
    let old = old_reserve_single(client, V2_RESERVE_SINGLE, "v2-mixed", ("MIX", 1), 1).await;
    assert_eq!(index_of(client, &bucket).await.len(), 1, "the old build's zset");
    fx.wait_redis_time_past(old[1].as_i64().expect("expiry")).await;
    let (expired, next) = scripts::sweep(client, &bucket, 100).await.expect("sweep");
    assert_eq!(
        (expired, next),
        (0, Some(expires_at)),
        "woken at the field's bound"
    );
    for rid in ["v2-mixed", "new-1"] {
        assert_eq!(scripts::release(client, &bucket, rid).await.expect("release"), 1);
    }
    let (expired, next) = scripts::sweep(client, &bucket, 100).await.expect("sweep");
    assert_eq!((expired, next), (0, None));
    assert_eq!(layout_fields(client, &bucket).await, vec![None, None, None]);
    assert_eq!(layout_keys(client, &bucket, 1).await, 0);
}

/// Whether the bucket's shard 0 key exists.
async fn shard_zero_exists(client: &Client, bucket: &BucketKeys) -> bool {
    let n: i64 = client.exists(bucket.hold_shard(0)).await.expect("exists");
    n == 1
}

/// A one-shard bucket keeps the holds of packed ids (the services' own id shapes) as fields of
/// its own hash, and an id kept as sent in the shard key: both are found, lapse, are swept and
/// released; the split to two shards moves every hold out of the bucket hash into the keys, and
/// an emptied bucket keeps no hold field, count or key.
#[tokio::test]
async fn a_one_shard_bucket_keeps_packed_holds_in_its_own_hash_and_the_split_moves_them_out() {
    let fx = Fixture::standalone_with(idle()).await;
    let client = fx.redis();
    fx.set_stock("HASH", 1_000, 1).await;
    let bucket = BucketKeys::new("HASH", 0);
    let uuid = "6f1c2a9e-0b7d-4c3e-9a21-5d4f8e7b6a10";
    let mut rids: Vec<String> = (0..9).map(|i| format!("{i:032x}")).collect();
    rids.push(uuid.to_string());
    let mut expiries = Vec::new();
    for (i, rid) in rids.iter().enumerate() {
        expiries.push(hold(client, &bucket, rid, 2, 600_000 + i as i64).await);
    }
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 10);
    assert!(!shard_zero_exists(client, &bucket).await, "no key for them");
    hold(client, &bucket, "as-sent-1", 3, 900_000).await;
    assert!(shard_zero_exists(client, &bucket).await, "an id kept as sent");
    assert_eq!(
        layout_fields(client, &bucket).await,
        vec![None, Some(11), Some(expiries[0])]
    );
    assert_eq!(hold_count(client, &bucket).await, 11);
    for rid in &rids {
        assert_eq!(hold_of(client, &bucket, rid).await.map(|h| h.0), Some(2), "{rid}");
    }

    // One lapses: no longer counted, then swept out of the bucket hash with its `expired` event.
    layout_support::lapse_hold(client, &bucket, &rids[3]).await;
    assert_eq!(live_reserved(client, &bucket).await, 21);
    let (expired, _) = scripts::sweep(client, &bucket, 100).await.expect("sweep");
    assert_eq!(expired, 1);
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 9);
    assert_eq!(fx.level("HASH").await.reserved, 21);
    // Extended in place, not doubled.
    let extended = scripts::extend(client, &bucket, &rids[4], 1_200_000)
        .await
        .expect("extend")
        .expect("live");
    assert_eq!(hold_of(client, &bucket, &rids[4]).await, Some((2, extended)));
    assert_eq!(layout_fields(client, &bucket).await[1], Some(10));

    // Up to the split: every hold leaves the bucket hash for the two shard keys.
    let more: Vec<String> = (100..123).map(|i| format!("{i:032x}")).collect();
    for rid in &more {
        hold(client, &bucket, rid, 1, 600_000).await;
    }
    assert_eq!(layout_fields(client, &bucket).await[..2], [Some(2), Some(33)]);
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 0);
    assert_eq!(hold_count(client, &bucket).await, 33);
    let index = index_of(client, &bucket).await;
    assert_eq!(index.len(), 2, "{index:?}");
    let live: Vec<&String> = rids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, rid)| rid)
        .collect();
    for rid in &live {
        assert_eq!(hold_of(client, &bucket, rid).await.map(|h| h.0), Some(2), "{rid}");
    }
    for rid in &more {
        assert_eq!(hold_of(client, &bucket, rid).await.map(|h| h.0), Some(1), "{rid}");
    }
    let mut released = 0;
    for rid in live
        .iter()
        .copied()
        .chain(&more)
        .map(String::as_str)
        .chain(["as-sent-1"])
    {
        released += scripts::release(client, &bucket, rid).await.expect("release");
    }
    assert_eq!(released, 18 + 23 + 3);
    assert_eq!(layout_fields(client, &bucket).await, vec![None, None, None]);
    assert_eq!(layout_keys(client, &bucket, 2).await, 0);
    assert_eq!(fx.level("HASH").await.reserved, 0);

    // Empty again: the next packed hold starts over in the bucket hash, and releasing the last
    // one leaves no field behind.
    hold(client, &bucket, &rids[0], 1, 600_000).await;
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 1);
    assert_eq!(
        scripts::release(client, &bucket, &rids[0])
            .await
            .expect("release"),
        1
    );
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 0);
    assert_eq!(layout_fields(client, &bucket).await, vec![None, None, None]);
}

/// Holds the build before kept in the shard key of a one-shard bucket
/// (`tests/fixtures/v3_reserve_single.lua`, packed ids) beside new ones in the bucket hash: each
/// is counted once, found, purged when it lapses, moved into the bucket hash by an Extend,
/// committed and released through the service; a split moves both kinds into the shard keys.
#[tokio::test]
async fn holds_the_build_before_kept_in_the_shard_key_are_read_moved_and_split_with_new_ones() {
    let fx = Fixture::standalone_with(idle()).await;
    let client = fx.redis();
    fx.set_stock("V3H", 100, 1).await;
    let bucket = BucketKeys::new("V3H", 0);
    let old: Vec<String> = (0..3).map(|i| format!("{:032x}", 0xa0 + i)).collect();
    for rid in &old {
        let reply = v3_reserve_single(client, rid, ("V3H", 2), 600_000).await;
        assert_eq!(reply[0].as_string().as_deref(), Some("reserved"), "{reply:?}");
    }
    let short = v3_reserve_single(client, &format!("{:032x}", 0xaf), ("V3H", 1), 1).await;
    assert!(shard_zero_exists(client, &bucket).await);
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 0);
    assert_eq!(layout_fields(client, &bucket).await[1], Some(4));
    // The short one lapses in the shard key: no longer counted, and purged from there by the
    // next Reserve, whose hold goes to the bucket hash.
    fx.wait_redis_time_past(short[1].as_i64().expect("expiry")).await;
    assert_eq!(live_reserved(client, &bucket).await, 6);
    let new_rid = format!("{:032x}", 0xb0);
    let new = fx.reserve(&new_rid, &[("V3H", 5)], 600).await.expect("reserve");
    assert!(reserved(&new));
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 1);
    assert_eq!(layout_fields(client, &bucket).await[1], Some(4));
    assert_eq!(hold_count(client, &bucket).await, 4);
    assert_eq!(fx.level("V3H").await.reserved, 11);
    // An Extend moves an old hold into the bucket hash without counting it twice.
    fx.inventory.stock.extend(&old[0], 1_200).await.expect("extend");
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 2);
    assert_eq!(layout_fields(client, &bucket).await[1], Some(4));
    assert_eq!(hold_of(client, &bucket, &old[0]).await.map(|h| h.0), Some(2));
    // Commit and Release find them wherever they are.
    assert_eq!(fx.commit(&old[1]).await.expect("commit").levels[0].sold, 2);
    assert_eq!(fx.release(&old[0]).await.expect("release").released_units, 2);
    assert_eq!(fx.level("V3H").await.reserved, 7);

    // Old and new holds up to the split: all found in the shard keys after it.
    let old_more: Vec<String> = (0..14).map(|i| format!("{:032x}", 0xc0 + i)).collect();
    let new_more: Vec<String> = (0..17).map(|i| format!("{:032x}", 0xe0 + i)).collect();
    for rid in &old_more {
        v3_reserve_single(client, rid, ("V3H", 1), 600_000).await;
    }
    for rid in &new_more {
        assert!(reserved(
            &fx.reserve(rid, &[("V3H", 1)], 600).await.expect("reserve")
        ));
    }
    assert_eq!(layout_fields(client, &bucket).await[..2], [Some(2), Some(33)]);
    assert_eq!(holds_in_bucket_hash(client, &bucket).await, 0);
    for rid in old_more.iter().chain(&new_more).chain([&old[2], &new_rid]) {
        assert!(hold_of(client, &bucket, rid).await.is_some(), "{rid}");
    }
    for rid in old_more.iter().chain(&new_more).chain([&old[2], &new_rid]) {
        fx.release(rid).await.expect("release");
    }
    assert_eq!(fx.level("V3H").await.reserved, 0);
    assert_eq!(layout_fields(client, &bucket).await, vec![None, None, None]);
    assert_eq!(layout_keys(client, &bucket, 2).await, 0);
}

/// `OBJECT ENCODING` of `key`.
async fn encoding(client: &Client, key: &str) -> String {
    client
        .custom(
            fred::cmd!("OBJECT"),
            vec!["ENCODING".to_string(), key.to_string()],
        )
        .await
        .expect("encoding")
}

/// The sweeper's index is spread over small zsets that stay listpacks, and buckets a build
/// before indexed in its single zset (`tests/fixtures/v3_reserve_single.lua`) are still swept
/// and counted by the live-holds gauge, then indexed in their shard while they keep a hold.
#[tokio::test]
async fn the_sweeper_reads_every_index_shard_and_drains_the_single_index_of_the_build_before() {
    let fx = Fixture::standalone_with(idle()).await;
    let client = fx.redis();
    let skus: Vec<String> = (0..300).map(|i| format!("IDX-{i:04}")).collect();
    for (i, sku) in skus.iter().enumerate() {
        fx.set_stock(sku, 5, 1).await;
        let held = fx
            .reserve(&format!("{i:032x}"), &[(sku, 1)], 600)
            .await
            .expect("reserve");
        assert!(reserved(&held));
    }
    let mut indexed = 0;
    for key in keys::expiry_indexes() {
        let count: i64 = client.zcard(key.as_str()).await.expect("zcard");
        if count > 0 {
            assert_eq!(encoding(client, &key).await, "listpack", "{key}");
        }
        indexed += count;
    }
    assert_eq!(indexed, 300, "every bucket with a hold, once");
    let legacy: i64 = client.exists(keys::LEGACY_EXPIRY_INDEX).await.expect("exists");
    assert_eq!(legacy, 0, "nothing written to the single zset");

    // A hold of this build and two of the build before lapse; the old build's bucket keeps a
    // longer hold too.
    fx.set_stock("NEW-SHORT", 5, 1).await;
    let new_short = scripts::reserve_single(
        client,
        &BucketKeys::new("NEW-SHORT", 0),
        "new-short",
        1,
        1,
        "0123456789abcdef",
        r#"[["NEW-SHORT",1,0]]"#,
        (86_400_000, 600_000),
    )
    .await
    .expect("reserve_single");
    let SingleReserve::Reserved(new_expiry) = new_short else {
        panic!("{new_short:?}")
    };
    fx.set_stock("OLD-MIX", 5, 1).await;
    let old_long = v3_reserve_single(client, "old-long", ("OLD-MIX", 2), 600_000).await;
    let old_short = v3_reserve_single(client, "old-short", ("OLD-MIX", 1), 1).await;
    let old_long_expiry = old_long[1].as_i64().expect("expiry");
    let old_expiry = old_short[1].as_i64().expect("expiry");
    let score: Option<f64> = client
        .zscore(keys::LEGACY_EXPIRY_INDEX, "OLD-MIX")
        .await
        .expect("zscore");
    assert_eq!(score, Some(old_expiry as f64), "the build before's index");
    // The gauge counts the holds of every bucket either index names.
    let stock = &fx.inventory.stock;
    let live = holdfast_inventory::background::count_live_holds(stock).await;
    assert_eq!(live.expect("count"), 300 + 1 + 2);
    fx.wait_redis_time_past(new_expiry.max(old_expiry)).await;

    let freed = holdfast_inventory::background::sweep_once(&fx.inventory.stock)
        .await
        .expect("sweep");
    assert_eq!(freed, 2);
    assert_eq!(fx.level("NEW-SHORT").await.reserved, 0);
    assert_eq!(fx.level("OLD-MIX").await.reserved, 2);
    let legacy: Option<f64> = client
        .zscore(keys::LEGACY_EXPIRY_INDEX, "OLD-MIX")
        .await
        .expect("zscore");
    assert_eq!(legacy, None, "drained");
    let shard: Option<f64> = client
        .zscore(keys::expiry_index("OLD-MIX"), "OLD-MIX")
        .await
        .expect("zscore");
    assert_eq!(shard, Some(old_long_expiry as f64), "indexed in its shard");
    let again = holdfast_inventory::background::sweep_once(&fx.inventory.stock)
        .await
        .expect("sweep");
    assert_eq!(again, 0, "nothing else is due");
    let live = holdfast_inventory::background::count_live_holds(stock).await;
    assert_eq!(live.expect("count"), 300 + 1);
}
