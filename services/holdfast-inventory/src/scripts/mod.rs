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
    RESERVE_BATCH => "reserve_batch.lua",
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
    RESERVATION_RESERVE => "reservation_reserve.lua",
    RESERVATION_EXTEND => "reservation_extend.lua",
    RESERVATION_COMMIT => "reservation_commit.lua",
    OUTBOX_ACK => "outbox_ack.lua",
    STOCK_FENCE => "stock_fence.lua",
    RESERVATION_RENEW => "reservation_renew.lua",
    RESERVATION_FORGET => "reservation_forget.lua",
    GENERATION => "generation.lua",
    TRUTH_SNAPSHOT => "truth_snapshot.lua",
    TRUTH_REBUILD => "truth_rebuild.lua",
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
/// (`OUTBOX_LIMIT` in the `bucket` prelude, `lua/lib/bucket.lua`).
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

mod batch;
mod hold;
mod records;
mod stock;
mod truth;

pub use batch::*;
pub use hold::*;
pub use records::*;
pub use stock::*;
pub use truth::*;

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
        let source = include_str!("../../../../lua/availability.lua");
        assert!(source.contains(&format!("local LAPSED_LIMIT = {AVAILABILITY_LAPSED_LIMIT}\n")));
    }

    #[test]
    fn outbox_limit_matches_the_bucket_prelude() {
        let source = include_str!("../../../../lua/lib/bucket.lua");
        assert!(source.contains(&format!("local OUTBOX_LIMIT = {OUTBOX_LIMIT}\n")));
    }
}
