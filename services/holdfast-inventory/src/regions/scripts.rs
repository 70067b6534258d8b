//! One typed wrapper per region script in `lua/` (`region_*.lua`): the only code that knows
//! their KEYS and ARGV order and reply shapes.

use fred::prelude::{Client, Value};
use holdfast_platform::redis::LuaScript;

use super::keys::RegionKeys;
use crate::error::InventoryError;

holdfast_platform::lua_scripts! {
    REGION_PLACE => "region_place.lua",
    REGION_TRANSFER_OUT => "region_transfer_out.lua",
    REGION_TRANSFER_IN => "region_transfer_in.lua",
    REGION_SNAPSHOT => "region_snapshot.lua",
    REGION_MOVE_IN => "region_move_in.lua",
    REGION_MOVE_OUT => "region_move_out.lua",
}

/// Loads the region scripts.
pub async fn load_all(client: &Client) -> Result<(), InventoryError> {
    Ok(holdfast_platform::redis::load_scripts(client, &all()).await?)
}

async fn run(
    script: &LuaScript,
    client: &Client,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<Vec<Value>, InventoryError> {
    let reply: Value = script.run(client, keys, args).await.map_err(|error| {
        let detail = error.details().to_string();
        if detail.starts_with("OUTBOX_FULL") {
            InventoryError::Backpressure(script.name.to_string())
        } else if detail.starts_with("ERR ") {
            InventoryError::Script {
                script: script.name,
                detail,
            }
        } else {
            InventoryError::Redis(error)
        }
    })?;
    match reply {
        Value::Array(values) => Ok(values),
        other => Err(protocol(script, format!("expected an array, got {other:?}"))),
    }
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

fn string_at(values: &[Value], i: usize) -> String {
    values.get(i).and_then(Value::as_string).unwrap_or_default()
}

fn s(value: impl ToString) -> Value {
    Value::from(value.to_string())
}

/// What `region_place.lua` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Placed now; bucket 0's on_hand after.
    Now(i64),
    /// Already placed so; nothing changed.
    Already(i64),
    /// Placed otherwise already: (scope, home).
    Otherwise(String, String),
}

/// A placement to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement<'a> {
    /// A regional SKU of `home`.
    Regional {
        /// Its home region.
        home: &'a str,
    },
    /// A global SKU: this region's share of it.
    Global {
        /// The home region.
        home: &'a str,
        /// The placement's id.
        placement_id: &'a str,
        /// This region's allocation.
        allocation: i64,
        /// The world total.
        total: i64,
        /// Append the `placed` outbox entry (the home region) with this split.
        announce: Option<&'a str>,
    },
}

/// `region_place.lua`.
pub async fn place(
    client: &Client,
    keys: &RegionKeys,
    placement: &Placement<'_>,
) -> Result<Placed, InventoryError> {
    let args = match placement {
        Placement::Regional { home } => vec![s("regional"), s(home), s(""), s(0), s(0), s("0"), s("")],
        Placement::Global {
            home,
            placement_id,
            allocation,
            total,
            announce,
        } => vec![
            s("global"),
            s(home),
            s(placement_id),
            s(allocation),
            s(total),
            s(if announce.is_some() { "1" } else { "0" }),
            s(announce.unwrap_or("")),
        ],
    };
    let key_list = vec![keys.bucket().counters(), keys.placement(), keys.outbox()];
    let reply = run(&REGION_PLACE, client, key_list, args).await?;
    match int_at(&REGION_PLACE, &reply, 0)? {
        1 => Ok(Placed::Now(int_at(&REGION_PLACE, &reply, 1)?)),
        2 => Ok(Placed::Already(int_at(&REGION_PLACE, &reply, 1)?)),
        _ => Ok(Placed::Otherwise(string_at(&reply, 1), string_at(&reply, 2))),
    }
}

/// `region_transfer_out.lua`: debit up to `units` idle units for `to`; (moved, debited_at).
pub async fn transfer_out(
    client: &Client,
    keys: &RegionKeys,
    transfer_id: &str,
    units: i64,
    to: &str,
) -> Result<(i64, i64), InventoryError> {
    let key_list = vec![
        keys.bucket().counters(),
        keys.placement(),
        keys.transfers_out(),
        keys.outbox(),
    ];
    let reply = run(
        &REGION_TRANSFER_OUT,
        client,
        key_list,
        vec![s(transfer_id), s(units), s(to)],
    )
    .await?;
    Ok((
        int_at(&REGION_TRANSFER_OUT, &reply, 0)?,
        int_at(&REGION_TRANSFER_OUT, &reply, 1)?,
    ))
}

/// `region_transfer_in.lua`: credit once per id; (credited now, on_hand after).
pub async fn transfer_in(
    client: &Client,
    keys: &RegionKeys,
    transfer_id: &str,
    units: i64,
    from: &str,
    debited_at: i64,
) -> Result<(bool, i64), InventoryError> {
    let key_list = vec![
        keys.bucket().counters(),
        keys.placement(),
        keys.transfers_in(),
        keys.outbox(),
    ];
    let reply = run(
        &REGION_TRANSFER_IN,
        client,
        key_list,
        vec![s(transfer_id), s(units), s(from), s(debited_at.max(0))],
    )
    .await?;
    Ok((
        int_at(&REGION_TRANSFER_IN, &reply, 0)? == 1,
        int_at(&REGION_TRANSFER_IN, &reply, 1)?,
    ))
}

/// What `region_move_in.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveIn {
    /// Credited now.
    Now,
    /// Credited before with the same source and units: nothing changed.
    Repeat,
    /// The id was used with another source or units: nothing changed.
    Conflict,
    /// The SKU is not global here: nothing changed.
    NotGlobal,
}

/// `region_move_in.lua`'s answer: what it did, the recorded units and time, on_hand after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedIn {
    /// What it did.
    pub outcome: MoveIn,
    /// Units recorded under the id.
    pub units: i64,
    /// When they were credited (this region's Redis clock).
    pub moved_at: i64,
    /// Bucket 0's on_hand after.
    pub on_hand: i64,
}

/// `region_move_in.lua`: credit an operator move once per id, with its outbox entry.
pub async fn move_in(
    client: &Client,
    keys: &RegionKeys,
    transfer_id: &str,
    units: i64,
    from: &str,
    operator: &str,
    reason: &str,
) -> Result<MovedIn, InventoryError> {
    let key_list = vec![
        keys.bucket().counters(),
        keys.placement(),
        keys.transfers_in(),
        keys.outbox(),
    ];
    let reply = run(
        &REGION_MOVE_IN,
        client,
        key_list,
        vec![s(transfer_id), s(units), s(from), s(operator), s(reason)],
    )
    .await?;
    let outcome = match int_at(&REGION_MOVE_IN, &reply, 0)? {
        1 => MoveIn::Now,
        0 => MoveIn::Repeat,
        2 => MoveIn::Conflict,
        _ => MoveIn::NotGlobal,
    };
    Ok(MovedIn {
        outcome,
        units: int_at(&REGION_MOVE_IN, &reply, 1)?,
        moved_at: int_at(&REGION_MOVE_IN, &reply, 2)?,
        on_hand: int_at(&REGION_MOVE_IN, &reply, 3)?,
    })
}

/// What `region_move_out.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOut {
    /// Debited now; on_hand after (possibly negative).
    Now(i64),
    /// Debited before: nothing changed.
    Repeat,
    /// The SKU is not global here: nothing changed.
    NotGlobal,
}

/// `region_move_out.lua`: the forced debit of an operator move, once per id.
pub async fn move_out(
    client: &Client,
    keys: &RegionKeys,
    transfer_id: &str,
    units: i64,
    to: &str,
    moved_at: i64,
) -> Result<MoveOut, InventoryError> {
    let key_list = vec![
        keys.bucket().counters(),
        keys.placement(),
        keys.transfers_out(),
        keys.acknowledged(),
    ];
    let reply = run(
        &REGION_MOVE_OUT,
        client,
        key_list,
        vec![s(transfer_id), s(units), s(to), s(moved_at.max(0))],
    )
    .await?;
    Ok(match int_at(&REGION_MOVE_OUT, &reply, 0)? {
        1 => MoveOut::Now(int_at(&REGION_MOVE_OUT, &reply, 1)?),
        0 => MoveOut::Repeat,
        _ => MoveOut::NotGlobal,
    })
}

/// One transfer as a ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTransfer {
    /// The transfer id.
    pub id: String,
    /// The other region.
    pub region: String,
    /// Units.
    pub units: i64,
    /// When the source debited it.
    pub debited_at: i64,
    /// Transfers in: when this region credited it (0 for transfers out).
    pub credited_at: i64,
}

/// A region's ledger of one SKU, as `region_snapshot.lua` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ledger {
    /// Bucket 0's on_hand.
    pub on_hand: i64,
    /// Bucket 0's stored reserved.
    pub reserved: i64,
    /// Bucket 0's sold.
    pub sold: i64,
    /// `global`, `regional` or empty.
    pub scope: String,
    /// The home region (empty: unplaced).
    pub home: String,
    /// This region's allocation.
    pub allocation: i64,
    /// The world total.
    pub global_total: i64,
    /// The placement id.
    pub placement_id: String,
    /// The snapshot's sequence number.
    pub sequence: u64,
    /// Redis's clock when read.
    pub taken_at: i64,
    /// Transfers out.
    pub out: Vec<LedgerTransfer>,
    /// Transfers in.
    pub inn: Vec<LedgerTransfer>,
}

/// `region_snapshot.lua`.
pub async fn snapshot(client: &Client, keys: &RegionKeys) -> Result<Ledger, InventoryError> {
    let key_list = vec![
        keys.bucket().counters(),
        keys.placement(),
        keys.transfers_out(),
        keys.transfers_in(),
    ];
    let reply = run(&REGION_SNAPSHOT, client, key_list, vec![]).await?;
    let i = |n| int_at(&REGION_SNAPSHOT, &reply, n);
    let pairs = |n: usize| -> Vec<(String, String)> {
        match reply.get(n) {
            Some(Value::Array(flat)) => flat
                .chunks(2)
                .filter_map(|kv| Some((kv.first()?.as_string()?, kv.get(1)?.as_string()?)))
                .collect(),
            _ => vec![],
        }
    };
    Ok(Ledger {
        on_hand: i(0)?,
        reserved: i(1)?,
        sold: i(2)?,
        scope: string_at(&reply, 3),
        home: string_at(&reply, 4),
        allocation: i(5)?,
        global_total: i(6)?,
        placement_id: string_at(&reply, 7),
        sequence: u64::try_from(i(8)?).unwrap_or(0),
        taken_at: i(9)?,
        out: pairs(10)
            .into_iter()
            .filter_map(|(id, v)| parse_out(&id, &v))
            .collect(),
        inn: pairs(11)
            .into_iter()
            .filter_map(|(id, v)| parse_in(&id, &v))
            .collect(),
    })
}

/// `to:units:debited_at` (as `region_transfer_out.lua` records it).
pub fn parse_out(id: &str, recorded: &str) -> Option<LedgerTransfer> {
    let mut parts = recorded.split(':');
    Some(LedgerTransfer {
        id: id.to_string(),
        region: parts.next()?.to_string(),
        units: parts.next()?.parse().ok()?,
        debited_at: parts.next()?.parse().ok()?,
        credited_at: 0,
    })
}

/// `from:units:debited_at:credited_at` (as `region_transfer_in.lua` records it).
pub fn parse_in(id: &str, recorded: &str) -> Option<LedgerTransfer> {
    let mut parts = recorded.split(':');
    Some(LedgerTransfer {
        id: id.to_string(),
        region: parts.next()?.to_string(),
        units: parts.next()?.parse().ok()?,
        debited_at: parts.next()?.parse().ok()?,
        credited_at: parts.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_records_parse_as_the_scripts_write_them() {
        let out = parse_out("t1", "eu:12:1700").expect("parses");
        assert_eq!((out.region.as_str(), out.units, out.debited_at), ("eu", 12, 1700));
        let inn = parse_in("t1", "na:12:1700:1800").expect("parses");
        assert_eq!(
            (inn.region.as_str(), inn.units, inn.debited_at, inn.credited_at),
            ("na", 12, 1700, 1800)
        );
        assert!(parse_out("t2", "garbage").is_none());
    }
}
