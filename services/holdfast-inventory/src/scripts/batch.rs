//! `reserve_batch.lua`: the one-line Reserves queued for one bucket, in one atomic call.

use fred::prelude::{Client, Value};
use holdfast_platform::admission::{Operation, RateLimit, Subject};

use super::{RESERVE_BATCH, SingleReserve, bucket_keys4, int_at, protocol, run, s, whole_reserve};
use crate::error::InventoryError;
use crate::keys::{self, BucketKeys};

/// Most items one call carries (`MAX_ITEMS` in the script).
pub const MAX_BATCH: usize = 64;

/// One whole one-line Reserve in a batch (its record is written by the script).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// Reservation id.
    pub rid: String,
    /// Units, >= 1.
    pub qty: i64,
    /// Hold lifetime, ms.
    pub ttl_ms: i64,
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The record's lines (JSON).
    pub lines: String,
    /// Counted against the SKU's Reserve admission limit in the same call, with these flag
    /// defaults where Redis holds no runtime limit (docs/admission.md); `None`: not counted
    /// (admission off, decided already, or an admitted checkout's own Reserve).
    pub admit: Option<RateLimit>,
}

/// How the call treats the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    /// Read the bucket: hold or refuse each item. A bucket without `on_hand` answers
    /// [`SingleReserve::Missing`] when `missing_is_empty` is false (the durable truth decides),
    /// else refuses (the SKU was never stocked).
    Live {
        /// A missing bucket reads as empty.
        missing_is_empty: bool,
    },
    /// The local sold-out marker stands: the bucket is not read; first answers stand and
    /// every other item is refused (available 0) and recorded. Never grants.
    SoldOut,
}

/// What one `reserve_batch.lua` call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReply {
    /// One per item, in order (as `reserve_single.lua` answers).
    pub outcomes: Vec<SingleReserve>,
    /// The bucket's available units after the call; `None` when not read (sold-out mode, or
    /// the bucket is missing).
    pub available: Option<i64>,
    /// When the bucket ended the call empty: ms until its earliest live hold lapses; `None`
    /// without holds (or when not empty, or not read).
    pub lapse_in_ms: Option<i64>,
}

/// `reserve_batch.lua`: runs `items` in order on one bucket (standalone Redis: the records
/// and the bucket on one server). `retention_ms` is (kept after the hold's TTL when
/// reserved, kept when rejected).
pub async fn reserve_batch(
    client: &Client,
    keys: &BucketKeys,
    items: &[BatchItem],
    retention_ms: (i64, i64),
    mode: BatchMode,
) -> Result<BatchReply, InventoryError> {
    let script = &*RESERVE_BATCH;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(protocol(script, format!("{} items", items.len())));
    }
    let mut key_list = bucket_keys4(keys);
    key_list.push(keys::expiry_index(&keys.tag));
    key_list.extend(items.iter().map(|item| keys::record_shard(&item.rid, true)));
    key_list.extend(items.iter().map(|item| keys::legacy_reservation(&item.rid)));
    let (mode_arg, if_missing) = match mode {
        BatchMode::Live { missing_is_empty } => ("live", if missing_is_empty { "empty" } else { "lost" }),
        BatchMode::SoldOut => ("sold_out", "lost"),
    };
    let mut args = Vec::with_capacity(8 + 5 * items.len());
    args.extend([
        s(&keys.sku),
        s(keys.index),
        s(&keys.tag),
        s(retention_ms.0),
        s(retention_ms.1),
        s(items.len()),
        s(mode_arg),
    ]);
    for item in items {
        args.extend([
            s(&item.rid),
            s(item.qty),
            s(item.ttl_ms),
            s(&item.fingerprint),
            s(&item.lines),
        ]);
    }
    args.push(s(if_missing));
    // The defaults are the process's flags: every counted item carries the same.
    if let Some(defaults) = items.iter().find_map(|item| item.admit) {
        let subject = Subject::Sku(&keys.sku);
        key_list.extend([subject.tat_key(Operation::Reserve), subject.limits_key()]);
        let counted: String = items
            .iter()
            .map(|item| if item.admit.is_some() { '1' } else { '0' })
            .collect();
        args.extend([
            s(counted),
            s(defaults.per_second.to_string()),
            s(defaults.burst.max(1)),
        ]);
    }
    let mut reply = run(script, client, key_list, args).await?;
    if reply.len() != items.len() + 1 {
        return Err(protocol(
            script,
            format!("{} answers for {} items", reply.len(), items.len()),
        ));
    }
    let (available, lapse_in) = match reply.pop() {
        Some(Value::Array(tail)) => (int_at(script, &tail, 0)?, int_at(script, &tail, 1)?),
        other => return Err(protocol(script, format!("tail {other:?}"))),
    };
    let outcomes = reply
        .into_iter()
        .map(|answer| match answer {
            Value::Array(values) => whole_reserve(&RESERVE_BATCH, &values),
            other => Err(protocol(script, format!("item answer {other:?}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BatchReply {
        outcomes,
        available: (available >= 0).then_some(available),
        lapse_in_ms: (lapse_in >= 0).then_some(lapse_in),
    })
}
