//! Holding stock: reserve (many buckets or one), commit, release, extend.

use fred::prelude::Client;

use super::{
    COMMIT, EXTEND, Levels, RELEASE, RESERVE, RESERVE_SINGLE, Record, bucket_keys4, int_at, protocol, run, s,
    string_at,
};
use crate::error::InventoryError;
use crate::keys::BucketKeys;

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
    if reply.len() == 1 && int_at(&RESERVE_SINGLE, &reply, 0).ok() == Some(-1) {
        return Ok(SingleReserve::Missing);
    }
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
