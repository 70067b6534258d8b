//! Setting and adjusting stock, the stock fence, and reading a bucket's availability.

use fred::prelude::{Client, Value};
use holdfast_platform::redis::LuaScript;

use super::{
    ADJUST_STOCK, AVAILABILITY, Levels, SET_STOCK, STOCK_FENCE, bucket_keys4, int_at, protocol, run, s,
};
use crate::error::InventoryError;
use crate::keys::BucketKeys;

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
    bucket_level(&AVAILABILITY, &reply)
}

/// `{on_hand, reserved_live, sold, buckets, buckets_max}` as `availability.lua` answers it (and
/// `reservation_commit.lua` per line).
pub(super) fn bucket_level(script: &LuaScript, reply: &[Value]) -> Result<BucketLevel, InventoryError> {
    let count = |i| -> Result<u32, InventoryError> {
        u32::try_from(int_at(script, reply, i)?).map_err(|e| protocol(script, e.to_string()))
    };
    Ok(BucketLevel {
        levels: Levels {
            on_hand: int_at(script, reply, 0)?,
            reserved: int_at(script, reply, 1)?,
            sold: int_at(script, reply, 2)?,
        },
        buckets: count(3)?,
        buckets_max: count(4)?,
    })
}
