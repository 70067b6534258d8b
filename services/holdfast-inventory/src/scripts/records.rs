//! Upkeep and reservation records: sweep, rebalance between buckets, claim, renew and
//! transition a reservation record (alone, or with every hold's extension or commit on
//! standalone Redis), acknowledge published outbox entries.

use fred::prelude::{Client, ClientLike, Value};

use super::{
    BucketLevel, OUTBOX_ACK, REBALANCE_GIVE, REBALANCE_TAKE, RESERVATION_CLAIM, RESERVATION_COMMIT,
    RESERVATION_EXTEND, RESERVATION_FORGET, RESERVATION_RENEW, RESERVATION_TRANSITION, SWEEP, bucket_keys4,
    bucket_level, int_at, protocol, run, s, string_at,
};
use crate::error::InventoryError;
use crate::keys::{BucketKeys, expiry_index, reservation_keys};

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

/// The KEYS of a record script for `rid` on this Redis: pooled on standalone Redis, per-slot on a
/// cluster ([`reservation_keys`]).
fn record_keys(client: &Client, rid: &str) -> Vec<String> {
    reservation_keys(rid, !client.is_clustered())
}

/// `reservation_claim.lua`: `owner` is the claimer's token (renewals and the final transition
/// check it).
pub async fn reservation_claim(
    client: &Client,
    rid: &str,
    fingerprint: &str,
    lines: &str,
    (lease_ms, retention_ms): (i64, i64),
    owner: &str,
) -> Result<Claim, InventoryError> {
    let args = vec![
        s(fingerprint),
        s(lines),
        s(lease_ms),
        s(retention_ms),
        s(owner),
        s(rid),
    ];
    let reply = run(&RESERVATION_CLAIM, client, record_keys(client, rid), args).await?;
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
    rid: &str,
    owner: &str,
    lease_ms: i64,
) -> Result<bool, InventoryError> {
    let reply = run(
        &RESERVATION_RENEW,
        client,
        record_keys(client, rid),
        vec![s(owner), s(lease_ms), s(rid)],
    )
    .await?;
    Ok(int_at(&RESERVATION_RENEW, &reply, 0)? == 1)
}

/// `reservation_forget.lua`: deletes `rid`'s record wherever it is kept; whether there was one.
pub async fn reservation_forget(client: &Client, rid: &str) -> Result<bool, InventoryError> {
    let reply = run(
        &RESERVATION_FORGET,
        client,
        record_keys(client, rid),
        vec![s(rid)],
    )
    .await?;
    Ok(int_at(&RESERVATION_FORGET, &reply, 0)? == 1)
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
    rid: &str,
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
        s(rid),
    ];
    let reply = run(&RESERVATION_TRANSITION, client, record_keys(client, rid), args).await?;
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

/// What `reservation_extend.lua` is asked: extend every hold of a reservation to `ttl_ms` from
/// now and move its record `from` -> `to` in the same step (standalone Redis only: the record
/// and the lines' buckets must be on one node).
#[derive(Debug, Clone, Copy)]
pub struct ExtendAll<'a> {
    /// `reserved` (Extend) or `preparing` (Commit's lease).
    pub from: &'a str,
    /// `reserved` from `reserved`, `committing` from `preparing`.
    pub to: &'a str,
    /// Each hold's new lifetime from now (never shortened).
    pub ttl_ms: i64,
    /// Record retention from now, after the move.
    pub retention_ms: i64,
    /// Refuse unless the record's stored expiry is in the future.
    pub require_live: bool,
    /// The record's lines as read: the script refuses any other (its KEYS come from these).
    pub lines: &'a str,
    /// The buckets of those lines, in order.
    pub buckets: &'a [BucketKeys],
}

/// What `reservation_extend.lua` did; each carries the record as stored after the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// Every hold extended, the record moved; its expiry is the earliest hold's.
    Moved(Record),
    /// Nothing written: the record is not in `from` with these lines, or it lapsed.
    Refused(Record),
    /// A line has no live hold: the others were extended, the record is unchanged.
    HoldGone(Record),
}

/// `reservation_extend.lua`: one call for what `extend.lua` per line and a
/// `reservation_transition.lua` do on a cluster.
pub async fn reservation_extend(
    client: &Client,
    rid: &str,
    e: ExtendAll<'_>,
) -> Result<Extended, InventoryError> {
    let mut key_list = record_keys(client, rid);
    let mut args = vec![
        s(rid),
        s(e.from),
        s(e.to),
        s(e.ttl_ms),
        s(e.retention_ms),
        s(u8::from(e.require_live)),
        s(e.lines),
    ];
    for bucket in e.buckets {
        key_list.extend(bucket_keys4(bucket));
        key_list.push(expiry_index(&bucket.tag));
        args.extend([s(&bucket.sku), s(bucket.index), s(&bucket.tag)]);
    }
    let reply = run(&RESERVATION_EXTEND, client, key_list, args).await?;
    let record = Record {
        state: string_at(&RESERVATION_EXTEND, &reply, 1)?,
        expires_at: int_at(&RESERVATION_EXTEND, &reply, 2)?,
        shortages: String::new(),
        lines: string_at(&RESERVATION_EXTEND, &reply, 3)?,
    };
    Ok(match int_at(&RESERVATION_EXTEND, &reply, 0)? {
        1 => Extended::Moved(record),
        2 => Extended::HoldGone(record),
        _ => Extended::Refused(record),
    })
}

/// What `reservation_commit.lua` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Every hold committed (`holds` by this call; a missing one was committed before, within
    /// the lease) and the record moved to `committed`.
    Moved {
        /// Holds this call committed.
        holds: usize,
        /// Each line's bucket after the commit, in line order (purged, so `reserved` counts
        /// live holds, as `availability.lua` reads it).
        levels: Vec<BucketLevel>,
    },
    /// Nothing written: the record is not `committing` with these lines.
    Refused(Record),
    /// A hold is missing after the lease ran out (it may have lapsed, not committed): the found
    /// ones (`holds`) were committed, the record stays `committing`.
    LeaseLapsed {
        /// Holds this call committed.
        holds: usize,
    },
}

/// `reservation_commit.lua`: one call for what `commit.lua` per line and the record's last
/// `reservation_transition.lua` do on a cluster (standalone Redis only). `buckets` are the
/// buckets of `lines`, in order; `retention_ms` the committed record's.
pub async fn reservation_commit(
    client: &Client,
    rid: &str,
    lines: &str,
    buckets: &[BucketKeys],
    retention_ms: i64,
) -> Result<Committed, InventoryError> {
    let mut key_list = record_keys(client, rid);
    let mut args = vec![s(rid), s(retention_ms), s(lines)];
    for bucket in buckets {
        key_list.extend(bucket_keys4(bucket));
        args.extend([s(&bucket.sku), s(bucket.index)]);
    }
    let reply = run(&RESERVATION_COMMIT, client, key_list, args).await?;
    let holds = usize::try_from(int_at(&RESERVATION_COMMIT, &reply, 4)?).unwrap_or_default();
    Ok(match int_at(&RESERVATION_COMMIT, &reply, 0)? {
        1 => Committed::Moved {
            holds,
            levels: match reply.get(5) {
                Some(Value::Array(lines)) if lines.len() == buckets.len() => lines
                    .iter()
                    .map(|line| match line {
                        Value::Array(values) => bucket_level(&RESERVATION_COMMIT, values),
                        other => Err(protocol(&RESERVATION_COMMIT, format!("level {other:?}"))),
                    })
                    .collect::<Result<_, _>>()?,
                other => return Err(protocol(&RESERVATION_COMMIT, format!("levels {other:?}"))),
            },
        },
        2 => Committed::LeaseLapsed { holds },
        _ => Committed::Refused(Record {
            state: string_at(&RESERVATION_COMMIT, &reply, 1)?,
            expires_at: int_at(&RESERVATION_COMMIT, &reply, 2)?,
            shortages: String::new(),
            lines: string_at(&RESERVATION_COMMIT, &reply, 3)?,
        }),
    })
}

/// `outbox_ack.lua`: deletes the published entries, every one up to and including `last` (the
/// relay publishes the stream's oldest entries, in id order); returns entries still in the
/// stream.
pub async fn outbox_ack(client: &Client, keys: &BucketKeys, last: &str) -> Result<i64, InventoryError> {
    let reply = run(&OUTBOX_ACK, client, vec![keys.events()], vec![Value::from(last)]).await?;
    int_at(&OUTBOX_ACK, &reply, 1)
}
