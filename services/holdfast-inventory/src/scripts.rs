//! One typed wrapper per Lua script in `lua/`: the only code that knows the order of each
//! script's KEYS and ARGV and the shape of its reply (see `docs/inventory-redis.md`).

use std::time::Instant;

use fred::prelude::{Client, Value};
use holdfast_platform::redis::LuaScript;

use crate::error::InventoryError;
use crate::keys::BucketKeys;
use crate::metrics;

holdfast_platform::lua_scripts! {
    RESERVE => "reserve.lua",
    RESERVE_SINGLE => "reserve_single.lua",
    COMMIT => "commit.lua",
    RELEASE => "release.lua",
    EXTEND => "extend.lua",
    SET_STOCK => "set_stock.lua",
    ADJUST_STOCK => "adjust_stock.lua",
    AVAILABILITY => "availability.lua",
    SWEEP => "sweep.lua",
    REBALANCE_TAKE => "rebalance_take.lua",
    REBALANCE_GIVE => "rebalance_give.lua",
    RESERVATION_CLAIM => "reservation_claim.lua",
    RESERVATION_TRANSITION => "reservation_transition.lua",
    OUTBOX_ACK => "outbox_ack.lua",
    STOCK_FENCE => "stock_fence.lua",
    RESERVATION_RENEW => "reservation_renew.lua",
}

/// Loads every script on every primary (before health says SERVING).
pub async fn load_all(client: &Client) -> Result<(), InventoryError> {
    Ok(holdfast_platform::redis::load_scripts(client, &all()).await?)
}

async fn run(
    script: &LuaScript,
    client: &Client,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<Vec<Value>, InventoryError> {
    let started = Instant::now();
    let subject = keys.first().cloned().unwrap_or_default();
    let reply: Value = script
        .run(client, keys, args)
        .await
        .map_err(|error| classify(script, &subject, error))?;
    metrics::observe_script(script.name, started.elapsed());
    match reply {
        Value::Array(values) => Ok(values),
        other => Err(protocol(script, format!("expected an array, got {other:?}"))),
    }
}

/// Unpublished entries a bucket's outbox may hold before new work on that bucket is refused
/// (`OUTBOX_LIMIT` in the shared Lua helpers).
pub const OUTBOX_LIMIT: i64 = 100_000;

/// The error reply a script gives when a bucket's outbox is full (see `outbox_full` in the
/// shared Lua helpers).
const OUTBOX_FULL: &str = "OUTBOX_FULL";

/// Sorts a failed script call: a full outbox asks for back-pressure, an `ERR` reply is the
/// script refusing its arguments or failing in Lua (deterministic: never worth a retry), and
/// anything else (connection, timeout, failover, `BUSY`, `OOM`...) is Redis being unavailable.
fn classify(script: &LuaScript, subject: &str, error: fred::error::Error) -> InventoryError {
    let reply = error.details();
    if reply.starts_with(OUTBOX_FULL) {
        return InventoryError::Backpressure(subject.to_string());
    }
    let deterministic = matches!(
        error.kind(),
        fred::error::ErrorKind::Unknown | fred::error::ErrorKind::InvalidArgument
    ) && reply.starts_with("ERR ")
        && !reply.starts_with("ERR max number of clients");
    if deterministic {
        return InventoryError::Script {
            script: script.name,
            detail: reply.to_string(),
        };
    }
    InventoryError::Redis(error)
}

fn protocol(script: &LuaScript, detail: impl Into<String>) -> InventoryError {
    InventoryError::Protocol {
        script: script.name,
        detail: detail.into(),
    }
}

fn int_at(script: &LuaScript, values: &[Value], i: usize) -> Result<i64, InventoryError> {
    values
        .get(i)
        .and_then(Value::as_i64)
        .ok_or_else(|| protocol(script, format!("element {i} of {values:?} is not an integer")))
}

fn string_at(script: &LuaScript, values: &[Value], i: usize) -> Result<String, InventoryError> {
    match values.get(i) {
        Some(Value::Null) | None => Ok(String::new()),
        Some(value) => value
            .as_string()
            .ok_or_else(|| protocol(script, format!("element {i} of {values:?} is not a string"))),
    }
}

fn bucket_keys4(keys: &BucketKeys) -> Vec<String> {
    vec![keys.counters(), keys.holds(), keys.held(), keys.events()]
}

fn s(value: impl ToString) -> Value {
    Value::from(value.to_string())
}

/// One bucket's counters after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Levels {
    /// Units in stock including held ones.
    pub on_hand: i64,
    /// Units held by live reservations.
    pub reserved: i64,
    /// Units sold.
    pub sold: i64,
}

impl Levels {
    /// Units a reservation can still take: `on_hand - reserved`.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// What `reserve.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held (now, or already by an earlier call with the same id).
    Held {
        /// Expiry, Unix ms, Redis clock.
        expires_at: i64,
    },
    /// Not enough stock in this bucket.
    Short {
        /// What the bucket had available.
        available: i64,
    },
}

/// `reserve.lua`: hold `qty` units of one bucket for `rid`.
pub async fn reserve(
    client: &Client,
    keys: &BucketKeys,
    rid: &str,
    qty: i64,
    ttl_ms: i64,
) -> Result<Hold, InventoryError> {
    let args = vec![s(rid), s(qty), s(ttl_ms), s(&keys.sku), s(keys.index)];
    let reply = run(&RESERVE, client, bucket_keys4(keys), args).await?;
    match int_at(&RESERVE, &reply, 0)? {
        1 => Ok(Hold::Held {
            expires_at: int_at(&RESERVE, &reply, 1)?,
        }),
        0 => Ok(Hold::Short {
            available: int_at(&RESERVE, &reply, 1)?,
        }),
        other => Err(protocol(&RESERVE, format!("status {other}"))),
    }
}

/// What `reserve_single.lua` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SingleReserve {
    /// Held now until `expires_at`.
    Reserved(i64),
    /// Refused now for stock; the shortages JSON.
    Rejected(String),
    /// The id exists with another request.
    Conflict,
    /// The id is pending under a multi-step Reserve.
    Busy,
    /// The id exists: its first answer.
    Existing(Record),
}

/// `reserve_single.lua`: a one-line, one-bucket Reserve in one step (all keys on one server).
/// `retention_ms` is (kept after the hold's TTL when reserved, kept when rejected).
#[allow(clippy::too_many_arguments)]
pub async fn reserve_single(
    client: &Client,
    record_key: String,
    keys: &BucketKeys,
    rid: &str,
    qty: i64,
    ttl_ms: i64,
    fingerprint: &str,
    lines: &str,
    retention_ms: (i64, i64),
) -> Result<SingleReserve, InventoryError> {
    let key_list = vec![
        record_key,
        keys.counters(),
        keys.holds(),
        keys.held(),
        keys.events(),
        crate::keys::EXPIRY_INDEX.to_string(),
    ];
    let args = vec![
        s(rid),
        s(qty),
        s(ttl_ms),
        s(&keys.sku),
        s(keys.index),
        s(fingerprint),
        s(lines),
        s(retention_ms.0),
        s(&keys.tag),
        s(retention_ms.1),
    ];
    let reply = run(&RESERVE_SINGLE, client, key_list, args).await?;
    let first = string_at(&RESERVE_SINGLE, &reply, 0)?;
    Ok(match first.as_str() {
        "reserved" if reply.len() == 2 => SingleReserve::Reserved(int_at(&RESERVE_SINGLE, &reply, 1)?),
        "rejected" if reply.len() == 3 => SingleReserve::Rejected(string_at(&RESERVE_SINGLE, &reply, 2)?),
        "conflict" => SingleReserve::Conflict,
        "busy" => SingleReserve::Busy,
        _ => SingleReserve::Existing(Record {
            state: first,
            expires_at: int_at(&RESERVE_SINGLE, &reply, 1)?,
            shortages: string_at(&RESERVE_SINGLE, &reply, 2)?,
            lines: String::new(),
        }),
    })
}

/// `commit.lua`: the units committed now with the bucket's levels, or `None` if `rid`
/// holds nothing there (already committed, or never held).
pub async fn commit(
    client: &Client,
    keys: &BucketKeys,
    rid: &str,
) -> Result<Option<(i64, Levels)>, InventoryError> {
    let reply = run(
        &COMMIT,
        client,
        bucket_keys4(keys),
        vec![s(rid), s(&keys.sku), s(keys.index)],
    )
    .await?;
    if int_at(&COMMIT, &reply, 0)? == 0 {
        return Ok(None);
    }
    Ok(Some((
        int_at(&COMMIT, &reply, 1)?,
        Levels {
            on_hand: int_at(&COMMIT, &reply, 2)?,
            reserved: int_at(&COMMIT, &reply, 3)?,
            sold: int_at(&COMMIT, &reply, 4)?,
        },
    )))
}

/// `release.lua`: units given back now (0 if nothing was held).
pub async fn release(client: &Client, keys: &BucketKeys, rid: &str) -> Result<i64, InventoryError> {
    let reply = run(
        &RELEASE,
        client,
        bucket_keys4(keys),
        vec![s(rid), s(&keys.sku), s(keys.index)],
    )
    .await?;
    match int_at(&RELEASE, &reply, 0)? {
        1 => int_at(&RELEASE, &reply, 1),
        _ => Ok(0),
    }
}

/// `extend.lua`: the new expiry, or `None` if `rid` has no live hold there.
pub async fn extend(
    client: &Client,
    keys: &BucketKeys,
    rid: &str,
    ttl_ms: i64,
) -> Result<Option<i64>, InventoryError> {
    let args = vec![s(rid), s(ttl_ms), s(&keys.sku), s(keys.index)];
    let reply = run(&EXTEND, client, bucket_keys4(keys), args).await?;
    match int_at(&EXTEND, &reply, 0)? {
        1 => Ok(Some(int_at(&EXTEND, &reply, 1)?)),
        _ => Ok(None),
    }
}

/// What `set_stock.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockSet {
    /// Set; the bucket's levels now.
    Set(Levels),
    /// Refused: live holds exceed the new on_hand (the units held now).
    BelowHeld(i64),
    /// Refused: the caller's fence is gone (lapsed or replaced); plan again.
    FenceLost,
}

/// `set_stock.lua`: set one bucket's absolute on_hand (and on bucket 0 the bucket count), under
/// the caller's `fence` token (empty: no fence required).
pub async fn set_stock(
    client: &Client,
    keys: &BucketKeys,
    on_hand: i64,
    buckets: u32,
    fence: &str,
) -> Result<StockSet, InventoryError> {
    let args = vec![s(on_hand), s(buckets), s(&keys.sku), s(keys.index), s(fence)];
    let reply = run(&SET_STOCK, client, bucket_keys4(keys), args).await?;
    match int_at(&SET_STOCK, &reply, 0)? {
        1 => Ok(StockSet::Set(Levels {
            on_hand: int_at(&SET_STOCK, &reply, 1)?,
            reserved: int_at(&SET_STOCK, &reply, 2)?,
            sold: int_at(&SET_STOCK, &reply, 3)?,
        })),
        0 => Ok(StockSet::BelowHeld(int_at(&SET_STOCK, &reply, 1)?)),
        _ => Ok(StockSet::FenceLost),
    }
}

/// `stock_fence.lua` raise: `token` fences the bucket against transfers for `lease_ms`.
pub async fn raise_fence(
    client: &Client,
    keys: &BucketKeys,
    token: &str,
    lease_ms: i64,
) -> Result<(), InventoryError> {
    run(
        &STOCK_FENCE,
        client,
        vec![keys.counters()],
        vec![s("raise"), s(token), s(lease_ms)],
    )
    .await?;
    Ok(())
}

/// `stock_fence.lua` lower: whether the fence was still `token`'s and live (false: plan again).
pub async fn lower_fence(client: &Client, keys: &BucketKeys, token: &str) -> Result<bool, InventoryError> {
    let reply = run(
        &STOCK_FENCE,
        client,
        vec![keys.counters()],
        vec![s("lower"), s(token), s(0)],
    )
    .await?;
    Ok(int_at(&STOCK_FENCE, &reply, 0)? == 1)
}

/// What `adjust_stock.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Applied now.
    Applied(Levels),
    /// This id was applied before; nothing changed.
    Repeated(Levels),
    /// Would leave on_hand below what is held; nothing changed.
    BelowHeld {
        /// Current on_hand.
        on_hand: i64,
        /// Currently held.
        reserved: i64,
    },
}

/// `adjust_stock.lua`: add `delta` units, once per `adjustment_id` (remembered for
/// `retention_ms`, or for good when 0).
pub async fn adjust_stock(
    client: &Client,
    keys: &BucketKeys,
    adjustment_id: &str,
    delta: i64,
    retention_ms: i64,
) -> Result<Adjustment, InventoryError> {
    let mut key_list = bucket_keys4(keys);
    key_list.push(keys.adjustments());
    let args = vec![
        s(adjustment_id),
        s(delta),
        s(&keys.sku),
        s(keys.index),
        s(retention_ms),
    ];
    let reply = run(&ADJUST_STOCK, client, key_list, args).await?;
    let levels = |reply: &[Value]| -> Result<Levels, InventoryError> {
        Ok(Levels {
            on_hand: int_at(&ADJUST_STOCK, reply, 1)?,
            reserved: int_at(&ADJUST_STOCK, reply, 2)?,
            sold: int_at(&ADJUST_STOCK, reply, 3)?,
        })
    };
    match int_at(&ADJUST_STOCK, &reply, 0)? {
        1 => Ok(Adjustment::Applied(levels(&reply)?)),
        2 => Ok(Adjustment::Repeated(levels(&reply)?)),
        _ => Ok(Adjustment::BelowHeld {
            on_hand: int_at(&ADJUST_STOCK, &reply, 1)?,
            reserved: int_at(&ADJUST_STOCK, &reply, 2)?,
        }),
    }
}

/// Lapsed, unpurged holds one `availability.lua` call subtracts at most (the rest still count as
/// held until a purge or the sweeper frees them: a conservative read, never an oversell).
pub const AVAILABILITY_LAPSED_LIMIT: i64 = 1000;

/// One bucket's levels as `availability.lua` reads them (expired holds excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketLevel {
    /// Counters, with `reserved` counting live holds only.
    pub levels: Levels,
    /// The SKU's bucket count (meaningful on bucket 0).
    pub buckets: u32,
    /// The widest layout the SKU ever had (meaningful on bucket 0).
    pub buckets_max: u32,
}

/// `availability.lua`: read one bucket without writing.
pub async fn availability(client: &Client, keys: &BucketKeys) -> Result<BucketLevel, InventoryError> {
    let reply = run(
        &AVAILABILITY,
        client,
        vec![keys.counters(), keys.holds(), keys.held()],
        vec![],
    )
    .await?;
    let count = |i| -> Result<u32, InventoryError> {
        u32::try_from(int_at(&AVAILABILITY, &reply, i)?).map_err(|e| protocol(&AVAILABILITY, e.to_string()))
    };
    Ok(BucketLevel {
        levels: Levels {
            on_hand: int_at(&AVAILABILITY, &reply, 0)?,
            reserved: int_at(&AVAILABILITY, &reply, 1)?,
            sold: int_at(&AVAILABILITY, &reply, 2)?,
        },
        buckets: count(3)?,
        buckets_max: count(4)?,
    })
}

/// `sweep.lua`: (holds expired now, expiry of the next hold or `None`).
pub async fn sweep(
    client: &Client,
    keys: &BucketKeys,
    max_holds: u32,
) -> Result<(i64, Option<i64>), InventoryError> {
    let args = vec![s(max_holds), s(&keys.sku), s(keys.index)];
    let reply = run(&SWEEP, client, bucket_keys4(keys), args).await?;
    let next = int_at(&SWEEP, &reply, 1)?;
    Ok((int_at(&SWEEP, &reply, 0)?, (next >= 0).then_some(next)))
}

/// `rebalance_take.lua`: units moved out of `from` toward bucket `to` under `transfer_id`.
pub async fn rebalance_take(
    client: &Client,
    from: &BucketKeys,
    transfer_id: &str,
    units: i64,
    to: u32,
) -> Result<i64, InventoryError> {
    let mut key_list = bucket_keys4(from);
    key_list.push(from.transfers_out());
    let args = vec![s(transfer_id), s(units), s(to), s(&from.sku), s(from.index)];
    let reply = run(&REBALANCE_TAKE, client, key_list, args).await?;
    int_at(&REBALANCE_TAKE, &reply, 0)
}

/// What `rebalance_give.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Give {
    /// The units were added now.
    Given,
    /// This transfer was received before; nothing changed.
    Repeated,
    /// Older than the received-id window: refused (an earlier give may be forgotten).
    Stale,
}

/// `rebalance_give.lua`: adds a transfer's units to bucket `to`, once per `transfer_id`.
/// `taken_at_ms` is the take time recorded in the source's xfer (0 if unknown).
pub async fn rebalance_give(
    client: &Client,
    to: &BucketKeys,
    transfer_id: &str,
    units: i64,
    taken_at_ms: i64,
) -> Result<Give, InventoryError> {
    let key_list = vec![to.counters(), to.events(), to.transfers_in()];
    let args = vec![s(transfer_id), s(units), s(&to.sku), s(to.index), s(taken_at_ms)];
    let reply = run(&REBALANCE_GIVE, client, key_list, args).await?;
    Ok(match int_at(&REBALANCE_GIVE, &reply, 0)? {
        1 => Give::Given,
        0 => Give::Repeated,
        _ => Give::Stale,
    })
}

/// A reservation record as the record scripts report it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// `pending`, `reserved`, `rejected`, `preparing`, `committing`, `committed`,
    /// `released`, `expired`; empty when there is no record.
    pub state: String,
    /// Unix ms, Redis clock; 0 when unset.
    pub expires_at: i64,
    /// `sku:requested:available;...`
    pub shortages: String,
    /// `sku:qty:bucket;...`
    pub lines: String,
}

/// What `reservation_claim.lua` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the pending record. `Some(lines)` when it took over a lapsed lease:
    /// those lines may be partly held already.
    Claimed(Option<String>),
    /// The id exists with a different request.
    Conflict,
    /// Another caller is working on it.
    Busy,
    /// The reservation exists in another state: its first answer.
    Existing(Record),
}

/// `reservation_claim.lua`: `owner` is the claimer's token (renewals and the final transition
/// check it).
pub async fn reservation_claim(
    client: &Client,
    record_key: String,
    fingerprint: &str,
    lines: &str,
    (lease_ms, retention_ms): (i64, i64),
    owner: &str,
) -> Result<Claim, InventoryError> {
    let args = vec![s(fingerprint), s(lines), s(lease_ms), s(retention_ms), s(owner)];
    let reply = run(&RESERVATION_CLAIM, client, vec![record_key], args).await?;
    let first = string_at(&RESERVATION_CLAIM, &reply, 0)?;
    Ok(match first.as_str() {
        "claimed" if reply.len() == 1 => Claim::Claimed(None),
        "claimed" => Claim::Claimed(Some(string_at(&RESERVATION_CLAIM, &reply, 1)?)),
        "conflict" => Claim::Conflict,
        "busy" => Claim::Busy,
        _ => Claim::Existing(Record {
            state: first,
            expires_at: int_at(&RESERVATION_CLAIM, &reply, 1)?,
            shortages: string_at(&RESERVATION_CLAIM, &reply, 2)?,
            lines: string_at(&RESERVATION_CLAIM, &reply, 3)?,
        }),
    })
}

/// `reservation_renew.lua`: whether `owner` still holds the pending claim (now renewed).
pub async fn reservation_renew(
    client: &Client,
    record_key: String,
    owner: &str,
    lease_ms: i64,
) -> Result<bool, InventoryError> {
    let reply = run(
        &RESERVATION_RENEW,
        client,
        vec![record_key],
        vec![s(owner), s(lease_ms)],
    )
    .await?;
    Ok(int_at(&RESERVATION_RENEW, &reply, 0)? == 1)
}

/// A state change for `reservation_transition.lua`.
#[derive(Debug, Clone, Default)]
pub struct Transition<'a> {
    /// Expected current state.
    pub from: &'a str,
    /// New state.
    pub to: &'a str,
    /// New expiry (`None` keeps it).
    pub expires_at: Option<i64>,
    /// New shortages (empty keeps them).
    pub shortages: &'a str,
    /// Refuse unless the stored expiry is in the future.
    pub require_live: bool,
    /// Record retention from now.
    pub retention_ms: i64,
    /// New lines (empty keeps them).
    pub lines: &'a str,
    /// The claimer's token the record must carry (empty: no check).
    pub owner: &'a str,
}

/// `reservation_transition.lua`: (moved, the record as stored after the call).
pub async fn reservation_transition(
    client: &Client,
    record_key: String,
    t: Transition<'_>,
) -> Result<(bool, Record), InventoryError> {
    let args = vec![
        s(t.from),
        s(t.to),
        s(t.expires_at.unwrap_or(-1)),
        s(t.shortages),
        s(u8::from(t.require_live)),
        s(t.retention_ms),
        s(t.lines),
        s(t.owner),
    ];
    let reply = run(&RESERVATION_TRANSITION, client, vec![record_key], args).await?;
    Ok((
        int_at(&RESERVATION_TRANSITION, &reply, 0)? == 1,
        Record {
            state: string_at(&RESERVATION_TRANSITION, &reply, 1)?,
            expires_at: int_at(&RESERVATION_TRANSITION, &reply, 2)?,
            shortages: String::new(),
            lines: string_at(&RESERVATION_TRANSITION, &reply, 3)?,
        },
    ))
}

/// `outbox_ack.lua`: deletes published entries; returns entries still in the stream.
pub async fn outbox_ack(client: &Client, keys: &BucketKeys, ids: Vec<String>) -> Result<i64, InventoryError> {
    let reply = run(
        &OUTBOX_ACK,
        client,
        vec![keys.events()],
        ids.into_iter().map(Value::from).collect(),
    )
    .await?;
    int_at(&OUTBOX_ACK, &reply, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_documents_keys_and_reply() {
        for script in all() {
            let source = std::fs::read_to_string(format!(
                "{}/../../lua/{}",
                env!("CARGO_MANIFEST_DIR"),
                script.name
            ))
            .expect("readable");
            assert!(source.contains("KEYS[1]"), "{} names its KEYS", script.name);
            assert!(source.contains("Reply"), "{} documents its reply", script.name);
        }
    }

    #[test]
    fn availability_limit_matches_the_script() {
        let source = include_str!("../../../lua/availability.lua");
        assert!(source.contains(&format!("local LAPSED_LIMIT = {AVAILABILITY_LAPSED_LIMIT}\n")));
    }
}
