//! Holding stock: reserve (many buckets or one, one line or a whole reservation), commit,
//! release, extend.

use fred::prelude::{Client, Value};
use holdfast_platform::redis::LuaScript;

use super::{
    COMMIT, EXTEND, Levels, RELEASE, RESERVATION_RESERVE, RESERVE, RESERVE_SINGLE, Record, bucket_keys4,
    int_at, protocol, run, s, string_at,
};
use crate::error::InventoryError;
use crate::keys::BucketKeys;
use crate::keys::{expiry_index, reservation_keys};

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
    /// The bucket has no `on_hand` (`{-1}`): Redis lost it, or the SKU was never stocked.
    /// Nothing was written; ask the durable truth ([`crate::stock::Stock::recheck_missing`]).
    Missing,
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
        -1 => Ok(Hold::Missing),
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
    /// The bucket has no `on_hand` (`{-1}`): nothing written, no record (see [`Hold::Missing`]).
    Missing,
    /// Over the SKU's Reserve admission limit, retry in this many ms: nothing read or written.
    /// Only `reserve_batch.lua` answers it, for an item it was asked to count.
    Limited(i64),
}

/// `reserve_single.lua`: a one-line, one-bucket Reserve in one step (all keys on one server).
/// `retention_ms` is (kept after the hold's TTL when reserved, kept when rejected).
#[allow(clippy::too_many_arguments)]
pub async fn reserve_single(
    client: &Client,
    keys: &BucketKeys,
    rid: &str,
    qty: i64,
    ttl_ms: i64,
    fingerprint: &str,
    lines: &str,
    retention_ms: (i64, i64),
) -> Result<SingleReserve, InventoryError> {
    let key_list = vec![
        crate::keys::record_shard(rid, true),
        keys.counters(),
        keys.holds(),
        keys.held(),
        keys.events(),
        crate::keys::expiry_index(&keys.tag),
        crate::keys::legacy_reservation(rid),
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
    whole_reserve(&RESERVE_SINGLE, &reply)
}

/// The request of a `reservation_reserve.lua` call: a reservation of several lines, each on a
/// one-bucket SKU.
#[derive(Debug, Clone, Copy)]
pub struct WholeReserve<'a> {
    /// Reservation id.
    pub rid: &'a str,
    /// The lines (each SKU once) and their buckets: bucket 0 of each SKU.
    pub lines: &'a [(BucketKeys, i64)],
    /// Hold lifetime, ms.
    pub ttl_ms: i64,
    /// The request's fingerprint.
    pub fingerprint: &'a str,
    /// The record's lines (JSON), in line order.
    pub record_lines: &'a str,
    /// (kept after the holds' TTL when reserved, kept when rejected), ms.
    pub retention_ms: (i64, i64),
}

/// `reservation_reserve.lua`: a multi-line Reserve in one step (standalone Redis: the record
/// and every bucket on one server). Answers as `reserve_single.lua`; `Missing` when a line's
/// bucket has no `on_hand` (nothing written).
pub async fn reservation_reserve(
    client: &Client,
    r: WholeReserve<'_>,
) -> Result<SingleReserve, InventoryError> {
    let mut key_list = reservation_keys(r.rid, true);
    let mut args = vec![
        s(r.rid),
        s(r.ttl_ms),
        s(r.fingerprint),
        s(r.retention_ms.0),
        s(r.retention_ms.1),
        s(r.record_lines),
    ];
    for (keys, qty) in r.lines {
        key_list.extend(bucket_keys4(keys));
        key_list.push(expiry_index(&keys.tag));
        args.extend([s(&keys.sku), s(qty), s(&keys.tag)]);
    }
    let reply = run(&RESERVATION_RESERVE, client, key_list, args).await?;
    whole_reserve(&RESERVATION_RESERVE, &reply)
}

/// The answer of a script that does a whole Reserve (`reserve_single.lua`,
/// `reservation_reserve.lua`, each item of `reserve_batch.lua`).
pub(super) fn whole_reserve(script: &LuaScript, reply: &[Value]) -> Result<SingleReserve, InventoryError> {
    if int_at(script, reply, 0).ok() == Some(-1) {
        return Ok(SingleReserve::Missing);
    }
    let first = string_at(script, reply, 0)?;
    Ok(match first.as_str() {
        "reserved" if reply.len() == 2 => SingleReserve::Reserved(int_at(script, reply, 1)?),
        "rejected" if reply.len() == 3 => SingleReserve::Rejected(string_at(script, reply, 2)?),
        "conflict" => SingleReserve::Conflict,
        "busy" => SingleReserve::Busy,
        "limited" if reply.len() == 2 => SingleReserve::Limited(int_at(script, reply, 1)?),
        _ => SingleReserve::Existing(Record {
            state: first,
            expires_at: int_at(script, reply, 1)?,
            shortages: string_at(script, reply, 2)?,
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
