//! Reservation records packed into shared generation hashes (the pool on standalone Redis, the
//! rid's per-slot shard on a cluster: `keys::record_shard`, docs/inventory-redis.md "Reservation
//! records"), and records the scripts
//! before them wrote (one key per reservation, `res:{rid}`; `tests/fixtures/v2_*.lua` are those
//! scripts as they shipped, assembled with their preludes): still answered, and moved into the
//! shard by their next write.

mod common;
mod layout_support;

use common::{Fixture, idle, reserved};
use fred::prelude::{Client, ClientLike, HashesInterface, KeysInterface, LuaInterface, Value};
use holdfast_inventory::background::{survey_legacy_records, survey_per_slot_records};
use holdfast_inventory::keys::{self, BucketKeys};
use holdfast_inventory::reservations::{RECORD_RETENTION, REJECTED_RETENTION, fingerprint};
use holdfast_inventory::scripts::{self, BatchItem, BatchMode};
use layout_support::{
    forget_legacy_survey, old_reserve_single, pack_path_mismatches, packed_id, record_at, record_field,
    set_record_field, v3_reserve_single,
};
use tonic::Code;

const V2_RESERVE_SINGLE: &str = include_str!("fixtures/v2_reserve_single.lua");
const V2_RESERVATION_CLAIM: &str = include_str!("fixtures/v2_reservation_claim.lua");

/// A one-line Reserve exactly as the service ran it before the record shards.
async fn v2_reserve_single(client: &Client, rid: &str, sku: &str, qty: i64) -> Vec<Value> {
    old_reserve_single(client, V2_RESERVE_SINGLE, rid, (sku, qty), 600).await
}

async fn legacy_exists(client: &Client, rid: &str) -> bool {
    let n: i64 = client
        .exists(keys::legacy_reservation(rid))
        .await
        .expect("exists");
    n == 1
}

/// Where the record is kept now: a generation hash of the layout this Redis uses (the pool on
/// standalone Redis, the rid's per-slot shard on a cluster), not its own key, not the old one.
async fn in_shard(client: &Client, rid: &str) -> bool {
    let hashes = if client.is_clustered() {
        format!("{}:", keys::reservation(rid))
    } else {
        "res:pool:".to_string()
    };
    match record_at(client, rid).await {
        Some((at, _)) => at.starts_with(&hashes) && !at.contains(":k:"),
        None => false,
    }
}

#[tokio::test]
async fn records_of_the_per_reservation_layout_answer_and_move_on_their_next_write() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("V2", 9, 1).await;
    let client = fx.redis();
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let rids = ["v2-commit", "v2-release", "v2-extend", uuid];
    let mut expiry = Vec::new();
    for rid in rids {
        let reply = v2_reserve_single(client, rid, "V2", 2).await;
        assert_eq!(reply[0].as_string().as_deref(), Some("reserved"), "{rid}");
        expiry.push(reply[1].as_i64().expect("expiry"));
        assert!(legacy_exists(client, rid).await, "{rid}: the old layout's key");
    }
    let refused = v2_reserve_single(client, "v2-refused", "V2", 5).await;
    assert_eq!(refused[0].as_string().as_deref(), Some("rejected"));

    // Replays answer from the old records: the first answer, no second hold; another request
    // under the id conflicts.
    let replay = fx.reserve(uuid, &[("V2", 2)], 600).await.expect("replay");
    assert!(reserved(&replay));
    assert_eq!(replay.expires_at_unix_ms, expiry[3]);
    let again = fx.reserve("v2-refused", &[("V2", 5)], 600).await.expect("replay");
    assert_eq!((reserved(&again), again.shortages.len()), (false, 1));
    let conflict = fx
        .reserve("v2-commit", &[("V2", 1)], 600)
        .await
        .expect_err("conflict");
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert_eq!(fx.level("V2").await.reserved, 8, "nothing held twice");

    // Commit, Release and Extend run on them, and each write moves the record into the shard.
    assert_eq!(fx.commit("v2-commit").await.expect("commit").levels[0].sold, 2);
    assert_eq!(fx.release("v2-release").await.expect("release").released_units, 2);
    let extended = fx
        .inventory
        .stock
        .extend("v2-extend", 1200)
        .await
        .expect("extend");
    assert!(extended > expiry[2]);
    for rid in ["v2-commit", "v2-release", "v2-extend"] {
        assert!(!legacy_exists(client, rid).await, "{rid}: the old key is gone");
        assert!(
            in_shard(client, rid).await,
            "{rid}: {:?}",
            record_at(client, rid).await
        );
    }
    assert_eq!(
        record_field(client, "v2-commit", "state").await.as_deref(),
        Some("committed")
    );
    assert_eq!(
        record_field(client, "v2-release", "state").await.as_deref(),
        Some("released")
    );
    assert_eq!(
        record_field(client, "v2-extend", "expires_at").await,
        Some(extended.to_string())
    );
    // Retried calls on moved records answer as before.
    assert_eq!(fx.commit("v2-commit").await.expect("again").levels[0].sold, 2);
    assert_eq!(fx.release("v2-release").await.expect("again").released_units, 0);
    // The untouched ones still live in the old layout until their next write (or their TTL).
    assert!(legacy_exists(client, uuid).await && legacy_exists(client, "v2-refused").await);
    assert_eq!(fx.release(uuid).await.expect("release").released_units, 2);
    assert!(!legacy_exists(client, uuid).await && in_shard(client, uuid).await);

    // A hold the old script stored under the id as sent (32 hex digits) is found, and extending
    // it stores it packed (17 bytes) without counting it twice.
    let hex = "00112233445566778899aabbccddeeff";
    let reply = v2_reserve_single(client, hex, "V2", 1).await;
    assert_eq!(reply[0].as_string().as_deref(), Some("reserved"));
    let bucket = BucketKeys::new("V2", 0);
    let raw: bool = client.hexists(bucket.hold_shard(0), hex).await.expect("hexists");
    assert!(raw, "the old script's field");
    fx.inventory.stock.extend(hex, 900).await.expect("extend");
    let raw: bool = client.hexists(bucket.hold_shard(0), hex).await.expect("hexists");
    assert!(!raw, "moved to the packed field");
    let count: Option<i64> = client.hget(bucket.counters(), "hn").await.expect("hn");
    assert_eq!(count, Some(2), "v2-extend and the hex hold, once each");
    assert_eq!(fx.commit(hex).await.expect("commit").levels[0].sold, 3);
    assert_eq!(fx.release("v2-extend").await.expect("release").released_units, 2);
    let left: i64 = client.exists(bucket.hold_shard(0)).await.expect("exists");
    assert_eq!(left, 0, "every hold gone, in either form");
}

#[tokio::test]
async fn a_pending_claim_of_the_old_layout_keeps_others_out_until_its_lease_lapses() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("V2P", 5, 1).await;
    let client = fx.redis();
    let claim = |rid: &'static str, lease_ms: i64| {
        client.eval::<Value, _, _, _>(
            V2_RESERVATION_CLAIM,
            vec![keys::legacy_reservation(rid)],
            vec![
                fingerprint(&[("V2P".to_string(), 1)], 600),
                r#"[["V2P",1,0]]"#.to_string(),
                lease_ms.to_string(),
                "600000".to_string(),
                "old-owner".to_string(),
            ],
        )
    };
    // A live claim of the old layout: the id stays busy (ABORTED once the retries give up).
    claim("v2-live", 60_000).await.expect("v2 claim");
    forget_legacy_survey(client).await;
    let busy = fx.reserve("v2-live", &[("V2P", 1)], 600).await.expect_err("busy");
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    assert!(legacy_exists(client, "v2-live").await);
    // A lapsed one (its claimer died) is taken over by the next Reserve, which holds once and
    // writes the record into the shard.
    claim("v2-dead", 1).await.expect("v2 claim");
    forget_legacy_survey(client).await;
    let now = fx.redis_now_ms().await;
    fx.wait_redis_time_past(now + 5).await;
    let held = fx
        .reserve("v2-dead", &[("V2P", 1)], 600)
        .await
        .expect("taken over");
    assert!(reserved(&held));
    assert!(!legacy_exists(client, "v2-dead").await && in_shard(client, "v2-dead").await);
    assert_eq!(
        record_field(client, "v2-dead", "state").await.as_deref(),
        Some("reserved")
    );
    assert_eq!(fx.level("V2P").await.reserved, 1);
}

#[tokio::test]
async fn records_share_small_listpack_hashes_and_big_ones_get_a_key_of_their_own() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("PACK", 1_000, 1).await;
    let client = fx.redis();
    for i in 0..300 {
        let answer = fx
            .reserve(&format!("{i:032x}"), &[("PACK", 1)], 600)
            .await
            .expect("reserve");
        assert!(reserved(&answer));
    }
    // A refusal lives in a short generation, a long id in a key of its own.
    let refused = fx
        .reserve("refused-1", &[("PACK", 5_000)], 600)
        .await
        .expect("refusal");
    assert!(!reserved(&refused));
    let long_id = "L".repeat(100);
    assert!(reserved(
        &fx.reserve(&long_id, &[("PACK", 1)], 600).await.expect("reserve")
    ));
    let (short, _) = record_at(client, "refused-1").await.expect("refusal record");
    assert!(short.starts_with("res:pool:s"), "{short}");
    let (own, _) = record_at(client, &long_id).await.expect("long id record");
    assert_eq!(own, format!("{}:k:{long_id}", keys::reservation(&long_id)));
    let mut hashes = std::collections::BTreeSet::new();
    for i in 0..300 {
        let rid = format!("{i:032x}");
        let (at, ttl) = record_at(client, &rid).await.expect("record");
        assert!(in_shard(client, &rid).await, "{rid}: {at}");
        // Kept the hold's TTL + 24 h, at most one 12 h generation longer.
        let kept = 600_000 + i64::try_from(RECORD_RETENTION.as_millis()).expect("fits");
        assert!(
            ttl > kept - 60_000 && ttl <= kept + 12 * 3600 * 1000,
            "{rid}: {ttl}"
        );
        hashes.insert(at);
    }
    for at in &hashes {
        let encoding: String = client
            .custom(fred::cmd!("OBJECT"), vec!["ENCODING".to_string(), at.clone()])
            .await
            .expect("encoding");
        assert_eq!(encoding, "listpack", "{at}");
    }
    // Every record answers: the first answer on a replay, nothing held twice.
    for i in (0..300).step_by(7) {
        let again = fx
            .reserve(&format!("{i:032x}"), &[("PACK", 1)], 600)
            .await
            .expect("replay");
        assert!(reserved(&again));
    }
    assert_eq!(fx.level("PACK").await.reserved, 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_records_live_in_the_slot_of_their_id_and_old_ones_are_moved() {
    let fx = Fixture::cluster().await;
    fx.set_stock("CA", 10, 1).await;
    fx.set_stock("CB", 10, 1).await;
    let client = fx.redis();
    // A claim of the old layout whose claimer died: taken over, held once, moved to the shard.
    let old: Value = client
        .eval(
            V2_RESERVATION_CLAIM,
            vec![keys::legacy_reservation("c-old")],
            vec![
                fingerprint(&[("CA".to_string(), 1)], 600),
                r#"[["CA",1,0]]"#.to_string(),
                "1".to_string(),
                "600000".to_string(),
                "dead".to_string(),
            ],
        )
        .await
        .expect("v2 claim");
    assert!(
        matches!(&old, Value::Array(v) if v[0].as_string().as_deref() == Some("claimed")),
        "{old:?}"
    );
    let now = fx.redis_now_ms().await;
    fx.wait_redis_time_past(now + 5).await;
    let first = fx.reserve("c-old", &[("CA", 1)], 600).await.expect("taken over");
    assert!(reserved(&first));
    assert!(!legacy_exists(client, "c-old").await && in_shard(client, "c-old").await);
    // New reservations (multi-step on a cluster, lines on two slots): replay, commit, release.
    let two = fx
        .reserve("c-two", &[("CA", 2), ("CB", 3)], 600)
        .await
        .expect("reserve");
    assert!(reserved(&two));
    let again = fx
        .reserve("c-two", &[("CA", 2), ("CB", 3)], 600)
        .await
        .expect("replay");
    assert_eq!(again.expires_at_unix_ms, two.expires_at_unix_ms);
    assert!(in_shard(client, "c-two").await);
    assert_eq!(fx.release("c-two").await.expect("release").released_units, 5);
    assert_eq!(fx.commit("c-old").await.expect("commit").levels[0].sold, 1);
    assert_eq!(
        record_field(client, "c-old", "state").await.as_deref(),
        Some("committed")
    );
    assert_eq!(
        (fx.level("CA").await.reserved, fx.level("CB").await.reserved),
        (0, 0)
    );
}

/// Each pooled generation's shard count, record count and hashes (`res:pool`, `res:pool:<gen>:<i>`):
/// (gen, shards, counted, entries over its hashes, largest hash, every hash a listpack).
async fn pool_generations(client: &Client) -> Vec<(String, i64, i64, i64, i64, bool)> {
    let script = "local out = {} local meta = redis.call('HGETALL', 'res:pool') \
        local m = {} for i = 1, #meta, 2 do m[meta[i]] = meta[i + 1] end \
        for gen, n in pairs(m) do if string.match(gen, '^s?%d+$') then \
          local sum, most, lp = 0, 0, 1 \
          for i = 0, tonumber(n) - 1 do local k = 'res:pool:' .. gen .. ':' .. i \
            local len = redis.call('HLEN', k) sum = sum + len if len > most then most = len end \
            if len > 0 and redis.call('OBJECT', 'ENCODING', k) ~= 'listpack' then lp = 0 end end \
          out[#out + 1] = {gen, tonumber(n), tonumber(m['#' .. gen] or 0), sum, most, lp} end end \
        return out";
    let reply: Value = client
        .eval(script, Vec::<String>::new(), Vec::<String>::new())
        .await
        .expect("eval");
    let Value::Array(gens) = reply else {
        panic!("unexpected {reply:?}")
    };
    gens.into_iter()
        .map(|g| {
            let Value::Array(v) = g else {
                panic!("unexpected {g:?}")
            };
            let n = |i: usize| v[i].as_i64().expect("integer");
            (v[0].as_string().expect("gen"), n(1), n(2), n(3), n(4), n(5) == 1)
        })
        .collect()
}

/// Every pooled generation of [`pool_generations`]: its count is what its hashes hold, at most
/// 40 records a hash on average, and every hash a listpack of at most 128 entries.
fn assert_generations_sound(gens: &[(String, i64, i64, i64, i64, bool)]) {
    for (generation, n, counted, entries, most, listpack) in gens {
        assert_eq!(
            counted, entries,
            "{generation}: the count is what its hashes hold"
        );
        assert!(
            *entries <= 40 * n,
            "{generation}: {entries} records in {n} hashes"
        );
        assert!(
            *most <= 128 && *listpack,
            "{generation}: a hash of {most} entries, listpack {listpack}"
        );
    }
}

/// On standalone Redis records of every shape share the pool: a generation grows by linear
/// hashing past 40 records a hash, so its hashes stay small listpacks, its count matches what
/// they hold through commits and releases (which move a record between generations), and every
/// record is still found after the splits.
#[tokio::test]
async fn on_standalone_redis_records_pool_into_hashes_that_split_as_a_generation_fills() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("POOL", 5_000, 1).await;
    let client = fx.redis();
    // Even ids packed (the services' shape), odd ones kept as sent.
    let rid = |i: usize| {
        if i.is_multiple_of(2) {
            format!("{i:032x}")
        } else {
            format!("pool-{i}")
        }
    };
    for i in 0..1_200 {
        assert!(reserved(
            &fx.reserve(&rid(i), &[("POOL", 1)], 600).await.expect("reserve")
        ));
    }
    for i in (0..1_200).step_by(12) {
        fx.commit(&rid(i)).await.expect("commit");
        fx.release(&rid(i + 6)).await.expect("release");
    }
    let gens = pool_generations(client).await;
    assert_generations_sound(&gens);
    let records: i64 = gens.iter().map(|g| g.3).sum();
    let shards: i64 = gens.iter().map(|g| g.1).sum();
    assert_eq!(records, 1_200, "{gens:?}");
    assert!(shards >= 30, "{gens:?}");
    for i in 0..1_200 {
        let want = match i % 12 {
            0 => "committed",
            6 => "released",
            _ => "reserved",
        };
        assert!(in_shard(client, &rid(i)).await, "{}", rid(i));
        assert_eq!(
            record_field(client, &rid(i), "state").await.as_deref(),
            Some(want),
            "{}",
            rid(i)
        );
    }
    // Replays get their first answer: nothing is held twice.
    for i in (1..1_200).step_by(5).filter(|i| i % 6 != 0) {
        assert!(reserved(
            &fx.reserve(&rid(i), &[("POOL", 1)], 600).await.expect("replay")
        ));
    }
    let level = fx.level("POOL").await;
    assert_eq!((level.reserved, level.sold), (1_000, 100));
}

/// The pool drops the counts of generations that ended when a new one starts, and reads the
/// per-slot shards a build before wrote (a rolling upgrade) for the window after its first write,
/// moving a record found there into the pool on its next write. Past the window, when every
/// generation such a build could have written has ended, or once the service's survey finds no
/// per-slot shard left, those shards are no longer probed.
#[tokio::test]
async fn the_pool_forgets_ended_generations_and_reads_the_per_slot_shards_within_its_window() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("WIN", 20, 1).await;
    let client = fx.redis();
    let _: i64 = client
        .hset(
            "res:pool",
            vec![("1", "3"), ("#1", "90"), ("s7", "1"), ("#s7", "2")],
        )
        .await
        .expect("hset");
    let before = v3_reserve_single(client, "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", ("WIN", 1), 600_000).await;
    assert_eq!(before[0].as_string().as_deref(), Some("reserved"));
    assert!(reserved(
        &fx.reserve("b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2", &[("WIN", 1)], 600)
            .await
            .expect("reserve")
    ));
    let meta: std::collections::HashMap<String, String> = client.hgetall("res:pool").await.expect("hgetall");
    for ended in ["1", "#1", "s7", "#s7"] {
        assert!(!meta.contains_key(ended), "{ended}: {meta:?}");
    }
    let since: i64 = meta["since"].parse().expect("since");
    // A build before, still running, writes to its per-slot shard: found and moved on Commit.
    let late = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    let _ = v3_reserve_single(client, late, ("WIN", 1), 600_000).await;
    let (per_slot, _) = record_at(client, late).await.expect("per-slot record");
    assert!(
        per_slot.starts_with(&format!("{}:", keys::reservation(late))),
        "{per_slot}"
    );
    let committed = fx.commit(late).await.expect("commit");
    assert_eq!(committed.levels[0].sold, 1);
    assert!(in_shard(client, late).await);
    assert_eq!(
        record_field(client, late, "state").await.as_deref(),
        Some("committed")
    );
    // The first write was 48 h ago (36 h of the longest retention and one 12 h generation).
    let window = (36 + 12) * 3600 * 1000;
    let _: i64 = client
        .hset("res:pool", ("since", since - window - 1))
        .await
        .expect("hset");
    let past = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";
    let _ = v3_reserve_single(client, past, ("WIN", 1), 600_000).await;
    assert!(record_at(client, past).await.is_none());
    let _: i64 = client.hset("res:pool", ("since", since)).await.expect("hset");
    assert!(record_at(client, past).await.is_some());

    // The service's survey ends the window once no per-slot shard is left: not while one is.
    assert!(!survey_per_slot_records(client).await.expect("survey"));
    for rid in ["a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", past] {
        assert!(fx.commit(rid).await.expect("commit").levels[0].sold > 0);
        assert!(in_shard(client, rid).await, "{rid}");
    }
    assert!(survey_per_slot_records(client).await.expect("survey"));
    let settled: Option<String> = client.hget("res:pool", "per_slot").await.expect("hget");
    assert_eq!(settled.as_deref(), Some("0"));
    // A record of that layout written now (which the upgrade rule excludes) is no longer probed.
    let after = "e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5";
    let _ = v3_reserve_single(client, after, ("WIN", 1), 600_000).await;
    let _: i64 = client.hset("res:pool", ("per_slot", 0)).await.expect("hset");
    assert!(record_at(client, after).await.is_none(), "no longer probed");
}

/// The 17-byte form of an id is pinned: records and holds written by earlier builds are found
/// only if every build packs an id to the same bytes, and the expiry sweep and hold splits read
/// the id back from them.
#[tokio::test]
async fn ids_pack_to_a_marker_and_sixteen_raw_bytes_and_read_back_unchanged() {
    let fx = Fixture::standalone_with(idle()).await;
    let client = fx.redis();
    let hex = "00ff0a9b7c3e5d1f2a4b6c8d0e1f2031";
    let mut want = vec![1u8];
    want.extend((0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")));
    assert_eq!(packed_id(client, hex).await, (want.clone(), hex.to_string()));
    let uuid = "00ff0a9b-7c3e-5d1f-2a4b-6c8d0e1f2031";
    want[0] = 2;
    assert_eq!(packed_id(client, uuid).await, (want, uuid.to_string()));
    // Anything else is kept as sent: upper case, near misses in length or shape, long ids.
    for rid in [
        "00FF0A9B7C3E5D1F2A4B6C8D0E1F2031",
        "00FF0A9B-7C3E-5D1F-2A4B-6C8D0E1F2031",
        "00ff0a9b7c3e5d1f2a4b6c8d0e1f203",
        "00ff0a9b7c3e5d1f2a4b6c8d0e1f2031a",
        "00ff0a9b-7c3e-5d1f-2a4b6c8d0e1f-2031",
        "00ff0a9b7c3e5d1f2a4b6c8d0e1f203g",
        "order-42/line-1",
        &"x".repeat(100),
    ] {
        assert_eq!(
            packed_id(client, rid).await,
            (rid.as_bytes().to_vec(), rid.to_string()),
            "{rid}"
        );
    }
    // Every byte value survives the round trip, in both forms.
    for b in 0..=255u8 {
        let hex = format!("{b:02x}").repeat(16);
        let (field, back) = packed_id(client, &hex).await;
        assert_eq!((field.len(), field[16], back), (17, b, hex.clone()));
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        assert_eq!(packed_id(client, &uuid).await.1, uuid);
    }
}

/// The raw value of `rid`'s record in its generation hash.
async fn raw_record(client: &Client, rid: &str) -> Vec<u8> {
    let (at, _) = record_at(client, rid).await.expect("a record");
    let (field, _) = packed_id(client, rid).await;
    let value: Option<Vec<u8>> = client
        .hget(at.as_str(), fred::types::Key::from(field.as_slice()))
        .await
        .expect("hget");
    value.expect("the record's field")
}

/// Overwrites `rid`'s record, where it is kept, with `value` as a build before wrote it.
async fn put_raw_record(client: &Client, rid: &str, value: Vec<u8>) {
    let (at, _) = record_at(client, rid).await.expect("record");
    let (field, _) = packed_id(client, rid).await;
    let _: i64 = client
        .hset(
            at.as_str(),
            (
                fred::types::Key::from(field.as_slice()),
                fred::types::Value::Bytes(value.into()),
            ),
        )
        .await
        .expect("hset");
}

/// A replay of the 2-unit Reserve of `SKU-00000001` under `rid` gets its first answer (`expiry`)
/// and holds nothing more.
async fn replay_answers_once(fx: &Fixture, rid: &str, expiry: i64) {
    let replay = fx
        .reserve(rid, &[("SKU-00000001", 2)], 600)
        .await
        .expect("replay");
    assert_eq!(replay.expires_at_unix_ms, expiry);
    assert_eq!(fx.level("SKU-00000001").await.reserved, 2, "held once");
}

/// A hold's and a refusal's records are packed: a hold as one byte for its state, the
/// fingerprint as 8 raw bytes, the expiry as 6, the units and the bucket as a byte each and the
/// SKU; a refusal as a marker byte, the state letter, the fingerprint's 8 bytes and its shortage as
/// `a,b,sku`. Every field reads back as it was written; a hold the bytes do not take (units or
/// bucket from 256) keeps `qty,bucket,sku`; and records the builds before wrote (as text, and with
/// `qty,bucket,sku` after marker 5) are still answered and packed by their next write.
#[tokio::test]
async fn one_line_records_pack_tight_and_text_records_of_the_build_before_still_answer() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("SKU-00000001", 3, 1).await;
    let client = fx.redis();
    let rid = format!("{:032x}", 7);
    let held = fx
        .reserve(&rid, &[("SKU-00000001", 2)], 600)
        .await
        .expect("reserve");
    assert!(reserved(&held));
    let fp = fingerprint(&[("SKU-00000001".to_string(), 2)], 600);
    let raw = raw_record(client, &rid).await;
    let fp_bytes = u64::from_str_radix(&fp, 16).expect("hex").to_be_bytes();
    let expiry_bytes = &held.expires_at_unix_ms.to_be_bytes()[2..];
    // 16 + the index of `r` in "prjPcClx".
    let mut want = vec![17u8];
    want.extend(fp_bytes);
    want.extend(expiry_bytes);
    want.extend([2u8, 0u8]);
    want.extend(b"SKU-00000001");
    assert_eq!(raw, want, "29 bytes, not the 55 of the text form");
    for (field, value) in [
        ("state", "reserved".to_string()),
        ("fp", fp.clone()),
        ("expires_at", held.expires_at_unix_ms.to_string()),
        ("lines", r#"[["SKU-00000001",2,0]]"#.to_string()),
    ] {
        assert_eq!(record_field(client, &rid, field).await, Some(value), "{field}");
    }

    let refused = fx
        .reserve("refused-7", &[("SKU-00000001", 5)], 600)
        .await
        .expect("refusal");
    assert!(!reserved(&refused));
    let raw = raw_record(client, "refused-7").await;
    assert_eq!(&raw[..2], &[6u8, b'j'][..]);
    assert_eq!(raw.len(), 2 + 8 + "5,1,SKU-00000001".len(), "{raw:?}");
    assert!(raw.ends_with(b"5,1,SKU-00000001"), "{raw:?}");
    assert_eq!(
        record_field(client, "refused-7", "shortages").await.as_deref(),
        Some(r#"[["SKU-00000001",5,1]]"#)
    );

    // Expiries whose bytes include a newline, the largest 6-byte one, and values the packing
    // does not take (7 bytes, a leading zero) all read back exactly.
    for expiry in [
        "1",
        "11053325011466",
        "281474976710655",
        "281474976710656",
        "0123",
    ] {
        set_record_field(client, &rid, "expires_at", expiry).await;
        assert_eq!(
            record_field(client, &rid, "expires_at").await.as_deref(),
            Some(expiry)
        );
        assert_eq!(
            record_field(client, &rid, "lines").await.as_deref(),
            Some(r#"[["SKU-00000001",2,0]]"#)
        );
    }
    // Lines the packing does not take (two lines, an escaped character) are kept as text; units
    // or a bucket the bytes do not take keep `qty,bucket,sku` after marker 5.
    for lines in [r#"[["A",1,0],["B",2,1]]"#, r#"[["a\/b",1,0]]"#] {
        set_record_field(client, &rid, "lines", lines).await;
        assert_eq!(record_field(client, &rid, "lines").await.as_deref(), Some(lines));
    }
    let expiry = held.expires_at_unix_ms.to_string();
    set_record_field(client, &rid, "expires_at", &expiry).await;
    for lines in [
        r#"[["SKU-00000001",300,0]]"#,
        r#"[["SKU-00000001",2,256]]"#,
        r#"[["SKU-00000001",02,0]]"#,
    ] {
        set_record_field(client, &rid, "lines", lines).await;
        assert_eq!(record_field(client, &rid, "lines").await.as_deref(), Some(lines));
        assert_eq!(raw_record(client, &rid).await[..2], [5u8, b'r'][..], "{lines}");
    }
    set_record_field(client, &rid, "lines", r#"[["SKU-00000001",255,255]]"#).await;
    assert_eq!(raw_record(client, &rid).await[0], 17);
    assert_eq!(
        record_field(client, &rid, "lines").await.as_deref(),
        Some(r#"[["SKU-00000001",255,255]]"#)
    );
    set_record_field(client, &rid, "lines", r#"[["SKU-00000001",2,0]]"#).await;

    // Marker 5 as the build before wrote it (`qty,bucket,sku` as text): answered, nothing held
    // twice, every field as written.
    let mut five = vec![5u8, b'r'];
    five.extend(fp_bytes);
    five.extend(expiry_bytes);
    five.extend(b"2,0,SKU-00000001");
    put_raw_record(client, &rid, five).await;
    replay_answers_once(&fx, &rid, held.expires_at_unix_ms).await;
    assert_eq!(
        record_field(client, &rid, "lines").await.as_deref(),
        Some(r#"[["SKU-00000001",2,0]]"#)
    );

    // The text form the build before wrote: answered, and packed when it next changes.
    let old = format!("r\n{fp}\n{}\n[[\"SKU-00000001\",2,0]]", held.expires_at_unix_ms);
    put_raw_record(client, &rid, old.into_bytes()).await;
    replay_answers_once(&fx, &rid, held.expires_at_unix_ms).await;
    assert_eq!(fx.commit(&rid).await.expect("commit").levels[0].sold, 2);
    let raw = raw_record(client, &rid).await;
    // 16 + the index of `C` in "prjPcClx".
    assert_eq!(raw[0], 21, "{raw:?}");
    assert_eq!(
        record_field(client, &rid, "state").await.as_deref(),
        Some("committed")
    );
}

/// Records the build before packed with the fingerprint as its 16 characters (markers 3 and 4,
/// `tests/fixtures/v3_reserve_single.lua` as shipped) answer their replays, conflict with another
/// request, commit, and are packed with the 8-byte fingerprint by their next write; a
/// fingerprint that is not 16 lowercase hex digits is still packed as its characters.
#[tokio::test]
async fn records_packed_with_the_fingerprint_as_text_still_answer_and_repack() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("SKU-V3", 2, 1).await;
    let client = fx.redis();
    let rid = format!("{:032x}", 0x5eed);
    let first = v3_reserve_single(client, &rid, ("SKU-V3", 2), 600_000).await;
    assert_eq!(first[0].as_string().as_deref(), Some("reserved"), "{first:?}");
    assert_eq!(raw_record(client, &rid).await[0], 3, "the build before's marker");
    let refused = v3_reserve_single(client, "v3-refused", ("SKU-V3", 1), 600_000).await;
    assert_eq!(refused[0].as_string().as_deref(), Some("rejected"), "{refused:?}");
    assert_eq!(raw_record(client, "v3-refused").await[0], 4);

    let replay = fx.reserve(&rid, &[("SKU-V3", 2)], 600).await.expect("replay");
    assert_eq!(Some(replay.expires_at_unix_ms), first[1].as_i64());
    assert_eq!(fx.level("SKU-V3").await.reserved, 2, "held once");
    let again = fx
        .reserve("v3-refused", &[("SKU-V3", 1)], 600)
        .await
        .expect("refusal replay");
    assert!(!reserved(&again));
    assert_eq!(
        again.shortages.iter().map(|s| s.available).collect::<Vec<_>>(),
        vec![0],
        "the first answer, as recorded"
    );
    let conflict = fx.reserve(&rid, &[("SKU-V3", 1)], 600).await;
    assert_eq!(conflict.expect_err("another request").code(), Code::AlreadyExists);
    assert_eq!(fx.commit(&rid).await.expect("commit").levels[0].sold, 2);
    let raw = raw_record(client, &rid).await;
    // 16 + the index of `C` in "prjPcClx": the units and bucket as bytes.
    assert_eq!(raw[0], 21, "repacked by its next write: {raw:?}");
    assert_eq!(
        record_field(client, &rid, "fp").await,
        Some(fingerprint(&[("SKU-V3".to_string(), 2)], 600))
    );

    // Not 16 lowercase hex digits: its characters, marker 3.
    for fp in ["0123456789ABCDEF", "fp-not-hex-12345"] {
        set_record_field(client, &rid, "fp", fp).await;
        assert_eq!(raw_record(client, &rid).await[0], 3, "{fp}");
        assert_eq!(record_field(client, &rid, "fp").await.as_deref(), Some(fp));
        assert_eq!(
            record_field(client, &rid, "state").await.as_deref(),
            Some("committed")
        );
    }
}

/// `reserve_batch.lua` writes up to 64 records a call and counts them once per generation at
/// the end: the counts still equal what the hashes hold, the generations split as they fill
/// (also in the middle of a call), every hash stays a listpack, and every record (holds in the
/// kept generations, refusals in the short ones, refusals of the sold-out mode) answers its id
/// with its first answer.
#[tokio::test]
async fn records_written_by_the_batch_are_counted_once_a_call_and_split_as_they_fill() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("BPOOL", 1_000, 1).await;
    let client = fx.redis();
    let bucket = BucketKeys::new("BPOOL", 0);
    let fp = fingerprint(&[("BPOOL".to_string(), 1)], 600);
    let item = |i: usize| BatchItem {
        rid: format!("{i:032x}"),
        qty: 1,
        ttl_ms: 600_000,
        fingerprint: fp.clone(),
        lines: r#"[["BPOOL",1,0]]"#.to_string(),
        admit: None,
    };
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).expect("ms");
    let retention = (ms(RECORD_RETENTION), ms(REJECTED_RETENTION));
    // 1,000 holds, then 600 refusals of the emptied bucket, then 640 of the sold-out mode.
    let calls = [
        (
            0..1_600,
            BatchMode::Live {
                missing_is_empty: false,
            },
        ),
        (1_600..2_240, BatchMode::SoldOut),
    ];
    for (range, mode) in calls {
        let ids: Vec<usize> = range.collect();
        for chunk in ids.chunks(64) {
            let items: Vec<BatchItem> = chunk.iter().map(|&i| item(i)).collect();
            let reply = scripts::reserve_batch(client, &bucket, &items, retention, mode)
                .await
                .expect("batch");
            assert_eq!(reply.outcomes.len(), items.len());
        }
    }
    let gens = pool_generations(client).await;
    assert_generations_sound(&gens);
    let records: i64 = gens.iter().map(|g| g.3).sum();
    let short: i64 = gens.iter().filter(|g| g.0.starts_with('s')).map(|g| g.3).sum();
    assert_eq!((records, short), (2_240, 1_240), "{gens:?}");
    for i in (0..2_240).step_by(37) {
        let want = if i < 1_000 { "reserved" } else { "rejected" };
        assert_eq!(
            record_field(client, &format!("{i:032x}"), "state")
                .await
                .as_deref(),
            Some(want),
            "{i}"
        );
        let again = fx
            .reserve(&format!("{i:032x}"), &[("BPOOL", 1)], 600)
            .await
            .expect("replay");
        assert_eq!(reserved(&again), i < 1_000, "{i}: the first answer");
    }
    assert_eq!(fx.level("BPOOL").await.reserved, 1_000, "nothing held twice");
}

/// The records of the per-reservation layout (`res:{rid}`) are read until the service's survey
/// finds none left: not settled while one is, settled once the last moved; a record of that
/// layout written after (which the upgrade rule excludes) is then no longer read.
#[tokio::test]
async fn records_of_the_per_reservation_layout_are_read_until_the_survey_finds_none() {
    let fx = Fixture::standalone_with(idle()).await;
    fx.set_stock("LEG", 10, 1).await;
    let client = fx.redis();
    let first = v2_reserve_single(client, "v2-old", "LEG", 2).await;
    assert_eq!(first[0].as_string().as_deref(), Some("reserved"));
    assert!(
        !survey_legacy_records(client).await.expect("survey"),
        "one is left"
    );
    let replay = fx.reserve("v2-old", &[("LEG", 2)], 600).await.expect("replay");
    assert_eq!(replay.expires_at_unix_ms, first[1].as_i64().expect("expiry"));
    assert_eq!(fx.release("v2-old").await.expect("release").released_units, 2);
    assert!(!legacy_exists(client, "v2-old").await, "moved by the release");
    assert!(survey_legacy_records(client).await.expect("survey"));
    let settled: Option<String> = client.hget("res:pool", "legacy").await.expect("hget");
    assert_eq!(settled.as_deref(), Some("0"));
    // The moved record still answers; one of the old layout written now is not read.
    assert_eq!(fx.release("v2-old").await.expect("again").released_units, 0);
    let _ = v2_reserve_single(client, "v2-late", "LEG", 1).await;
    let _: i64 = client.hset("res:pool", ("legacy", 0)).await.expect("hset");
    assert!(reserved(
        &fx.reserve("v2-late", &[("LEG", 1)], 600).await.expect("reserve")
    ));
    assert_eq!(
        fx.level("LEG").await.reserved,
        2,
        "held anew: its old record was not read"
    );
}

/// The Reserve scripts pack a hold's and a refusal's record straight from their values
/// (`rec_hold`, `rec_refusal`): byte for byte what the general packing writes for the same
/// fields, on both sides of every condition of the shortcut (SKUs JSON escapes, fingerprints
/// not of 16 lowercase hex digits, units and buckets past a byte, expiries past 6 bytes, lines
/// other than the one line of the values), so records read the same whichever path wrote them.
#[tokio::test]
async fn records_packed_straight_from_their_values_are_the_bytes_the_general_packing_writes() {
    let fx = Fixture::standalone_with(idle()).await;
    let (cases, bad) = pack_path_mismatches(fx.redis()).await;
    assert!(cases > 9_000, "{cases} cases");
    assert!(bad.is_empty(), "{bad:?}");
}
