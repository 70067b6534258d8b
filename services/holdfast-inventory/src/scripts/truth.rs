//! The durable-truth scripts: the generation marker, a bucket's snapshot, a bucket's rebuild.

use fred::prelude::Client;

use super::{GENERATION, TRUTH_REBUILD, TRUTH_SNAPSHOT, int_at, protocol, run, s, string_at};
use crate::error::InventoryError;
use crate::keys::BucketKeys;

/// The generation marker's key (one key: cluster-safe).
pub const GENERATION_KEY: &str = "inv:generation";

/// The marker as `generation.lua` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// The marker is missing: Redis lost it (FLUSHALL, a restart without persistence), or it
    /// was never created.
    Missing,
    /// Generation `id`, at `beat` after this call's increment.
    Beat {
        /// The generation's id.
        id: String,
        /// The counter after this beat.
        beat: i64,
    },
}

/// `generation.lua beat`: one more beat of the marker.
pub async fn beat(client: &Client) -> Result<Marker, InventoryError> {
    let reply = run(&GENERATION, client, vec![GENERATION_KEY.into()], vec![s("beat")]).await?;
    marker(&reply)
}

/// `generation.lua create`: starts generation `id` (beat 1).
pub async fn create_generation(client: &Client, id: &str) -> Result<Marker, InventoryError> {
    let reply = run(
        &GENERATION,
        client,
        vec![GENERATION_KEY.into()],
        vec![s("create"), s(id)],
    )
    .await?;
    marker(&reply)
}

fn marker(reply: &[fred::prelude::Value]) -> Result<Marker, InventoryError> {
    Ok(match int_at(&GENERATION, reply, 0)? {
        0 => Marker::Missing,
        _ => Marker::Beat {
            id: string_at(&GENERATION, reply, 1)?,
            beat: int_at(&GENERATION, reply, 2)?,
        },
    })
}

/// One bucket as `truth_snapshot.lua` read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The bucket hash exists.
    pub exists: bool,
    /// Units in stock, held ones included.
    pub on_hand: i64,
    /// Units sold.
    pub sold: i64,
    /// The bucket's sequence number.
    pub seq: i64,
    /// Buckets in use (bucket 0's layout).
    pub buckets: u32,
    /// Widest layout ever used.
    pub buckets_max: u32,
    /// Live holds: (reservation id, units).
    pub holds: Vec<(String, i64)>,
    /// Pending transfers out: (transfer id, target bucket, units).
    pub transfers: Vec<(String, u32, i64)>,
}

/// `truth_snapshot.lua`: one bucket's counters, live holds and pending transfers (read only).
pub async fn snapshot(client: &Client, keys: &BucketKeys) -> Result<Snapshot, InventoryError> {
    let key_list = vec![keys.counters(), keys.holds(), keys.held(), keys.transfers_out()];
    let reply = run(&TRUTH_SNAPSHOT, client, key_list, vec![]).await?;
    let int = |i| int_at(&TRUTH_SNAPSHOT, &reply, i);
    let small = |i| u32::try_from(int(i)?).map_err(|e| protocol(&TRUTH_SNAPSHOT, e.to_string()));
    let n = usize::try_from(int(6)?).map_err(|e| protocol(&TRUTH_SNAPSHOT, e.to_string()))?;
    let mut holds = Vec::with_capacity(n);
    for h in 0..n {
        holds.push((string_at(&TRUTH_SNAPSHOT, &reply, 7 + 2 * h)?, int(8 + 2 * h)?));
    }
    let mut transfers = Vec::new();
    let mut at = 7 + 2 * n;
    while at + 1 < reply.len() {
        let id = string_at(&TRUTH_SNAPSHOT, &reply, at)?;
        let recorded = string_at(&TRUTH_SNAPSHOT, &reply, at + 1)?;
        let mut parts = recorded.split(':');
        let to = parts.next().and_then(|p| p.parse().ok());
        let units = parts.next().and_then(|p| p.parse().ok());
        match (to, units) {
            (Some(to), Some(units)) => transfers.push((id, to, units)),
            _ => {
                return Err(protocol(
                    &TRUTH_SNAPSHOT,
                    format!("unreadable transfer {recorded:?}"),
                ));
            }
        }
        at += 2;
    }
    Ok(Snapshot {
        exists: int(0)? == 1,
        on_hand: int(1)?,
        sold: int(2)?,
        seq: int(3)?,
        buckets: small(4)?,
        buckets_max: small(5)?,
        holds,
        transfers,
    })
}

/// What `truth_rebuild.lua` left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rebuilt {
    /// The bucket's on_hand now.
    pub on_hand: i64,
    /// Units its live holds keep.
    pub reserved: i64,
    /// Its sold count now.
    pub sold: i64,
    /// Reservations whose holds did not fit and were released.
    pub released: Vec<String>,
}

/// `truth_rebuild.lua`: rewrites one bucket. `on_hand` `None` keeps exactly its live holds.
pub async fn rebuild(
    client: &Client,
    keys: &BucketKeys,
    on_hand: Option<i64>,
    sold: i64,
    seq_min: i64,
    sold_rids: &[String],
) -> Result<Rebuilt, InventoryError> {
    let key_list = vec![
        keys.counters(),
        keys.holds(),
        keys.held(),
        keys.events(),
        keys.transfers_out(),
    ];
    let mut args = vec![
        s(on_hand.unwrap_or(-1)),
        s(sold),
        s(seq_min),
        s(&keys.sku),
        s(keys.index),
    ];
    args.extend(sold_rids.iter().map(s));
    let reply = run(&TRUTH_REBUILD, client, key_list, args).await?;
    let mut released = Vec::new();
    for i in 3..reply.len() {
        released.push(string_at(&TRUTH_REBUILD, &reply, i)?);
    }
    Ok(Rebuilt {
        on_hand: int_at(&TRUTH_REBUILD, &reply, 0)?,
        reserved: int_at(&TRUTH_REBUILD, &reply, 1)?,
        sold: int_at(&TRUTH_REBUILD, &reply, 2)?,
        released,
    })
}
