//! Reading and ageing one hold through the hold scripts' own layout helpers (the `base`,
//! `hold_index` and `bucket` preludes of `lua/lib/`), so tests never spell the layout themselves.

#![allow(dead_code)] // each test uses a different part

use fred::prelude::{Client, ClientLike, HashesInterface, LuaInterface, Value};
use holdfast_inventory::keys::{self, BucketKeys};
use holdfast_inventory::reservations::{RECORD_RETENTION, REJECTED_RETENTION, fingerprint};

/// The hold scripts' helpers, assembled as the services assemble a script naming them.
fn helpers() -> String {
    holdfast_platform::redis::prelude::assemble("layout_support", "--! prelude: base, hold_index, bucket\n")
        .expect("known preludes")
}

async fn eval(client: &Client, bucket: &BucketKeys, body: &str, args: Vec<String>) -> Value {
    let script = format!("{}\n{body}", helpers());
    client
        .eval(
            script,
            vec![bucket.counters(), bucket.holds(), bucket.held()],
            args,
        )
        .await
        .expect("eval")
}

/// `(units, expiry ms)` of `rid`'s hold in `bucket` (either layout), `None` without one.
pub async fn hold_of(client: &Client, bucket: &BucketKeys, rid: &str) -> Option<(i64, i64)> {
    let body =
        "local q, e = hold_get(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) if q then return {q, e} end return {}";
    match eval(client, bucket, body, vec![rid.to_string()]).await {
        Value::Array(values) if values.len() == 2 => Some((
            values[0].as_i64().expect("units"),
            values[1].as_i64().expect("expiry"),
        )),
        _ => None,
    }
}

/// Moves `rid`'s hold in `bucket` to an expiry long past (time passes for it alone).
pub async fn lapse_hold(client: &Client, bucket: &BucketKeys, rid: &str) {
    let body = "local q = hold_get(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if q then hold_put(KEYS[1], KEYS[2], KEYS[3], ARGV[1], q, 1) end
return {}";
    eval(client, bucket, body, vec![rid.to_string()]).await;
}

/// How many holds `bucket` keeps (either layout).
pub async fn hold_count(client: &Client, bucket: &BucketKeys) -> i64 {
    let body = "return {#hold_all(KEYS[1], KEYS[2], KEYS[3])}";
    match eval(client, bucket, body, Vec::new()).await {
        Value::Array(values) => values[0].as_i64().expect("count"),
        other => panic!("unexpected {other:?}"),
    }
}

/// One field of reservation `rid`'s record (read through `rec_get`), `None` if unset.
pub async fn record_field(client: &Client, rid: &str, field: &str) -> Option<String> {
    let script = format!(
        "{}\nlocal r = rec_get(KEYS[1], KEYS[2], ARGV[2], now_ms()) return {{r[ARGV[1]] or false}}",
        helpers()
    );
    let reply: Value = client
        .eval(
            script,
            keys::reservation_keys(rid, !client.is_clustered()),
            vec![field.to_string(), rid.to_string()],
        )
        .await
        .expect("eval");
    match reply {
        Value::Array(values) => values.first().and_then(Value::as_string),
        other => panic!("unexpected {other:?}"),
    }
}

/// Where reservation `rid`'s record is kept (through `rec_get`) and that key's PTTL, or `None`.
pub async fn record_at(client: &Client, rid: &str) -> Option<(String, i64)> {
    let script = format!(
        "{}\nlocal _, h = rec_get(KEYS[1], KEYS[2], ARGV[1], now_ms()) \
         if not h.at then return {{}} end return {{h.at, redis.call('PTTL', h.at)}}",
        helpers()
    );
    let reply: Value = client
        .eval(
            script,
            keys::reservation_keys(rid, !client.is_clustered()),
            vec![rid.to_string()],
        )
        .await
        .expect("eval");
    match reply {
        Value::Array(values) if values.len() == 2 => Some((values[0].as_string()?, values[1].as_i64()?)),
        Value::Array(_) => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// Sets one field of reservation `rid`'s record (through `rec_put`, kept as long as it was).
pub async fn set_record_field(client: &Client, rid: &str, field: &str, value: &str) {
    let script = format!(
        "{}\nlocal r, h = rec_get(KEYS[1], KEYS[2], ARGV[3], now_ms()) r[ARGV[1]] = ARGV[2] rec_put(h, r, nil) \
         return {{}}",
        helpers()
    );
    let _: Value = client
        .eval(
            script,
            keys::reservation_keys(rid, !client.is_clustered()),
            vec![field.to_string(), value.to_string(), rid.to_string()],
        )
        .await
        .expect("eval");
}

/// `tests/fixtures/pack_paths.lua` run on the record helpers: (cases, the mismatches between
/// the records the Reserve scripts pack straight from their values and the general packing).
pub async fn pack_path_mismatches(client: &Client) -> (i64, Vec<String>) {
    let script = format!("{}\n{}", helpers(), include_str!("../fixtures/pack_paths.lua"));
    let reply: Value = client
        .eval(script, Vec::<String>::new(), Vec::<String>::new())
        .await
        .expect("eval");
    let Value::Array(values) = reply else {
        panic!("unexpected {reply:?}")
    };
    let cases = values[0].as_i64().expect("cases");
    let bad = values[2..]
        .iter()
        .map(|v| v.as_string().expect("mismatch"))
        .collect();
    (cases, bad)
}

/// `rid` as the scripts store it (`rec_field`: the hash field of its record and its hold), and
/// the id the scripts read back from that field (`rec_rid`).
pub async fn packed_id(client: &Client, rid: &str) -> (Vec<u8>, String) {
    let script = format!(
        "{}\nlocal f = rec_field(ARGV[1]) return {{f, rec_rid(f)}}",
        helpers()
    );
    let reply: Value = client
        .eval(script, Vec::<String>::new(), vec![rid.to_string()])
        .await
        .expect("eval");
    match reply {
        Value::Array(values) if values.len() == 2 => (
            values[0].as_bytes().expect("field").to_vec(),
            values[1].as_string().expect("rid"),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// A one-line Reserve exactly as an earlier build ran it: `script` is that build's
/// `reserve_single.lua` with its preludes (`tests/fixtures/v1_` and `v2_reserve_single.lua`; each
/// kept the record at `res:{rid}` and took the same keys and arguments). The reply as sent.
/// Upgrading from such a build needs the Reserve traffic drained, so its records predate the
/// service's survey for them: this forgets a survey that ran before ([`forget_legacy_survey`]).
pub async fn old_reserve_single(
    client: &Client,
    script: &str,
    rid: &str,
    (sku, qty): (&str, i64),
    ttl_seconds: u32,
) -> Vec<Value> {
    let bucket = BucketKeys::new(sku, 0);
    let keys = vec![
        keys::legacy_reservation(rid),
        bucket.counters(),
        bucket.holds(),
        bucket.held(),
        bucket.events(),
        keys::LEGACY_EXPIRY_INDEX.to_string(),
    ];
    let ttl_ms = i64::from(ttl_seconds) * 1000;
    let reply = reserve_single_as_shipped(client, script, keys, rid, (sku, qty), (ttl_ms, ttl_seconds)).await;
    forget_legacy_survey(client).await;
    reply
}

/// Forgets the service's survey for records of the per-reservation layout
/// (`background::survey_legacy_records`, which the sweeper's first pass runs), as a test that
/// writes such a record after the service started needs: the survey could not have seen it.
/// After the write, so a survey running meanwhile either sees the record or is forgotten.
pub async fn forget_legacy_survey(client: &Client) {
    let _: i64 = client.hdel(keys::RECORD_POOL, "legacy").await.expect("hdel");
}

/// `reserve_single.lua` as shipped at 7e674ff (`tests/fixtures/v3_reserve_single.lua`): every
/// hold in the shard keys `inv:{B}:h<n>`, records packed with the fingerprint as its 16
/// characters.
pub const V3_RESERVE_SINGLE: &str = include_str!("../fixtures/v3_reserve_single.lua");

/// A one-line Reserve of bucket 0 exactly as the build at 7e674ff ran it (the keys and arguments
/// the service passes today), held `ttl_ms` (the fingerprint is a 600 s request's). The reply as
/// sent. Its record goes to the per-slot layout; upgrading from that build needs the Reserve
/// traffic drained, so such records predate the service's survey for them
/// (`background::survey_per_slot_records`, which the sweeper's first pass runs): this forgets a
/// survey that ran before, as it could not have seen the record.
pub async fn v3_reserve_single(
    client: &Client,
    rid: &str,
    (sku, qty): (&str, i64),
    ttl_ms: i64,
) -> Vec<Value> {
    let _: i64 = client.hdel(keys::RECORD_POOL, "per_slot").await.expect("hdel");
    let bucket = BucketKeys::new(sku, 0);
    let keys = vec![
        keys::reservation(rid),
        bucket.counters(),
        bucket.holds(),
        bucket.held(),
        bucket.events(),
        keys::LEGACY_EXPIRY_INDEX.to_string(),
        keys::legacy_reservation(rid),
    ];
    reserve_single_as_shipped(client, V3_RESERVE_SINGLE, keys, rid, (sku, qty), (ttl_ms, 600)).await
}

/// Runs a shipped `reserve_single.lua` with the arguments every build took: held `ttl_ms`, the
/// fingerprint of a request of `fp_ttl_seconds`.
async fn reserve_single_as_shipped(
    client: &Client,
    script: &str,
    keys: Vec<String>,
    rid: &str,
    (sku, qty): (&str, i64),
    (ttl_ms, fp_ttl_seconds): (i64, u32),
) -> Vec<Value> {
    let reply: Value = client
        .eval(
            script,
            keys,
            vec![
                rid.to_string(),
                qty.to_string(),
                ttl_ms.to_string(),
                sku.to_string(),
                "0".to_string(),
                fingerprint(&[(sku.to_string(), qty)], fp_ttl_seconds),
                format!(r#"[["{sku}",{qty},0]]"#),
                RECORD_RETENTION.as_millis().to_string(),
                sku.to_string(),
                REJECTED_RETENTION.as_millis().to_string(),
            ],
        )
        .await
        .expect("a shipped reserve_single");
    match reply {
        Value::Array(values) => values,
        other => panic!("unexpected {other:?}"),
    }
}

/// How many of the bucket hash's fields are holds (packed ids: a control byte first).
pub async fn holds_in_bucket_hash(client: &Client, bucket: &BucketKeys) -> usize {
    let fields: Vec<Vec<u8>> = client.hkeys(bucket.counters()).await.expect("hkeys");
    fields
        .iter()
        .filter(|f| f.first().is_some_and(|b| *b < 32))
        .count()
}

/// The id of the `n`-th reservation a test makes under `name`: every even one shaped as the
/// services' own ids (32 lowercase hex digits, stored packed: a one-shard bucket keeps its hold
/// in the bucket hash), every odd one kept as sent (its hold in the shard key), so a test walks
/// both homes of a hold. Distinct for distinct `(name, n)`.
pub fn rid(name: &str, n: usize) -> String {
    if n % 2 == 1 {
        return format!("{name}-r{n}");
    }
    // Two FNV-1a 64 hashes of the name with different seeds, then n: 128 bits as hex.
    let fnv = |seed: u64| {
        name.bytes()
            .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    };
    let high = fnv(0xcbf2_9ce4_8422_2325);
    let low = fnv(0x8422_2325_cbf2_9ce4) ^ (n as u64);
    format!("{high:016x}{low:016x}")
}
