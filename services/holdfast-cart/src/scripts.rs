//! One typed wrapper per cart script in `lua/`: the only code that knows the order of each
//! script's KEYS and ARGV and the shape of its reply (see `docs/cart.md`).

use fred::prelude::{Client, Value};
use holdfast_platform::redis::LuaScript;
use holdfast_store::StoredCart;
use prost::Message;

use crate::error::CartError;
use crate::live::LiveCart;
use crate::view::Priced;

holdfast_platform::lua_scripts! {
    ADD => "cart_add.lua",
    ADD_VIEWED => "cart_add_viewed.lua",
    SET_QUANTITY => "cart_set_quantity.lua",
    REMOVE => "cart_remove.lua",
    CLEAR => "cart_clear.lua",
    MERGE => "cart_merge.lua",
    RESTORE => "cart_restore.lua",
    EVICT_STALE => "cart_evict_stale.lua",
    VIEW => "cart_view.lua",
}

/// Loads every script on every primary (before health says SERVING).
pub async fn load_all(client: &Client) -> Result<(), CartError> {
    Ok(holdfast_platform::redis::load_scripts(client, &all()).await?)
}

/// What an absent cart key means to a changing script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// Nobody has looked in the durable store yet: the script answers "cold" (the wrapper
    /// returns `None`) and writes nothing, so a cart lost from Redis is never shadowed by a
    /// fresh one.
    AskStore,
    /// The store was consulted (and any durable copy restored): an absent key is a new cart.
    NoCart,
}

impl Absent {
    fn arg(self) -> Value {
        Value::from(match self {
            Self::AskStore => "0",
            Self::NoCart => "1",
        })
    }
}

/// The limits every changing script enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most lines in one cart.
    pub max_lines: u32,
    /// Most units on one line.
    pub max_quantity: i64,
    /// Cart lifetime after a change, ms.
    pub ttl_ms: i64,
}

/// What a changing script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Applied, or nothing to do; the cart after the call.
    Done(LiveCart),
    /// `expected_version` differs from the cart's.
    VersionConflict {
        /// The cart's version.
        actual: u64,
    },
    /// A new line would exceed the line cap.
    LineCap,
    /// The line would exceed the quantity cap.
    QuantityCap {
        /// The line's quantity now.
        line_quantity: i64,
    },
    /// The line would hold more than inventory has available; the cart is unchanged.
    OutOfStock {
        /// The line's quantity now.
        line_quantity: i64,
        /// The cart, unchanged.
        cart: LiveCart,
    },
    /// UpdateItem with a quantity for a SKU not in the cart.
    Missing,
    /// UpdateItem raising a quantity while inventory could not be asked.
    StockUnknown,
}

/// Units of one SKU to add, with what the catalog and inventory said about it.
#[derive(Debug, Clone, Copy)]
pub struct Addition<'a> {
    /// The SKU.
    pub sku: &'a str,
    /// Units to add, >= 1.
    pub quantity: i64,
    /// The catalog price now (the snapshot of a new line), minor units.
    pub unit_price_minor: i64,
    /// Its ISO-4217 currency.
    pub currency: &'a str,
    /// Units inventory has available; the line may not end above it.
    pub available: i64,
}

/// `cart_add.lua`: add units to a line (AddItem). `None`: the key is cold (see [`Absent`]).
pub async fn add(
    client: &Client,
    key: &str,
    absent: Absent,
    expected_version: u64,
    addition: Addition<'_>,
    limits: Limits,
) -> Result<Option<Change>, CartError> {
    let args = vec![
        absent.arg(),
        s(expected_version),
        s(addition.sku),
        s(addition.quantity),
        s(addition.unit_price_minor),
        s(addition.currency),
        s(addition.available),
        s(limits.max_lines),
        s(limits.max_quantity),
        s(limits.ttl_ms),
    ];
    change(run(&ADD, client, key, args).await?)
}

/// What `cart_add_viewed.lua` did.
#[derive(Debug, Clone, PartialEq)]
pub enum AddViewed {
    /// The cache cannot answer for the SKU as the catalog and inventory would: nothing
    /// written; take the two-step path ([`view`], the services for what it could not answer,
    /// [`add`]).
    Ask,
    /// The catalog's cached product may not be sold; nothing written.
    NotSellable,
    /// [`add`]'s outcome, with [`view`]'s entries for the cart's SKUs after the call and the
    /// SKU's units available that the stock check used.
    Changed {
        /// What the change did.
        change: Change,
        /// The cart's SKUs as [`view`] reads them.
        seen: Vec<Seen>,
        /// Units of the SKU available.
        available: i64,
        /// The catalog's epoch when the script ran, as [`Viewed::epoch`].
        epoch: Option<String>,
    },
}

/// `cart_add_viewed.lua`: AddItem in one round trip on a standalone Redis, the price and the
/// stock figure read in the script from the catalog's cache and inventory's counters.
/// `epoch`: as [`view`]'s. `None`: the key is cold (see [`Absent`]).
#[allow(clippy::too_many_arguments)]
pub async fn add_viewed(
    client: &Client,
    key: &str,
    absent: Absent,
    expected_version: u64,
    sku: &str,
    quantity: i64,
    limits: Limits,
    epoch: &str,
) -> Result<Option<AddViewed>, CartError> {
    let args = vec![
        absent.arg(),
        s(expected_version),
        s(sku),
        s(quantity),
        s(limits.max_lines),
        s(limits.max_quantity),
        s(limits.ttl_ms),
        s(epoch),
    ];
    let mut reply = run(&ADD_VIEWED, client, key, args).await?;
    match reply.status.as_str() {
        "ask" => return Ok(Some(AddViewed::Ask)),
        "not_sellable" => return Ok(Some(AddViewed::NotSellable)),
        "cold" => return Ok(None),
        _ => {}
    }
    if reply.rest.len() != 3 {
        return Err(protocol(
            &ADD_VIEWED,
            format!("{} parts after the cart, not 3", reply.rest.len()),
        ));
    }
    let available = reply.rest[1]
        .as_i64()
        .ok_or_else(|| protocol(&ADD_VIEWED, format!("available {:?}", reply.rest[1])))?;
    let epoch = decode_epoch(&ADD_VIEWED, reply.rest.swap_remove(2))?;
    let seen = decode_seen(&ADD_VIEWED, reply.rest.swap_remove(0))?;
    Ok(change(reply)?.map(|change| AddViewed::Changed {
        change,
        seen,
        available,
        epoch,
    }))
}

/// `cart_set_quantity.lua`: set a line's quantity, 0 removes (UpdateItem). `available` is
/// what inventory has, or `None` when it could not be asked (a raise then answers
/// [`Change::StockUnknown`]). `None`: the key is cold.
#[allow(clippy::too_many_arguments)]
pub async fn set_quantity(
    client: &Client,
    key: &str,
    absent: Absent,
    expected_version: u64,
    sku: &str,
    quantity: i64,
    available: Option<i64>,
    limits: Limits,
) -> Result<Option<Change>, CartError> {
    let args = vec![
        absent.arg(),
        s(expected_version),
        s(sku),
        s(quantity),
        s(available.unwrap_or(-1).max(-1)),
        s(limits.max_quantity),
        s(limits.ttl_ms),
    ];
    change(run(&SET_QUANTITY, client, key, args).await?)
}

/// `cart_remove.lua`: remove a line, a no-op if absent (RemoveItem). `None`: the key is cold.
pub async fn remove(
    client: &Client,
    key: &str,
    absent: Absent,
    expected_version: u64,
    sku: &str,
    limits: Limits,
) -> Result<Option<Change>, CartError> {
    let args = vec![absent.arg(), s(expected_version), s(sku), s(limits.ttl_ms)];
    change(run(&REMOVE, client, key, args).await?)
}

/// `cart_clear.lua`: remove every line, keeping the version (ClearCart, and the session cart
/// after a merge). `None`: the key is cold.
pub async fn clear(
    client: &Client,
    key: &str,
    absent: Absent,
    expected_version: u64,
    limits: Limits,
) -> Result<Option<Change>, CartError> {
    let args = vec![absent.arg(), s(expected_version), s(limits.ttl_ms)];
    change(run(&CLEAR, client, key, args).await?)
}

/// What `cart_merge.lua` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The customer's cart after the call.
    pub cart: LiveCart,
    /// False when this session cart version had been merged before (nothing written).
    pub applied: bool,
    /// SKUs whose summed quantity was capped.
    pub capped: Vec<String>,
    /// SKUs left out because the cart reached its line cap.
    pub dropped: Vec<String>,
}

/// `cart_merge.lua`: fold `session` (its lines and version) into the customer cart at
/// `key`, once per session cart version. `None`: the key is cold.
pub async fn merge(
    client: &Client,
    key: &str,
    absent: Absent,
    session_id: &str,
    session: &LiveCart,
    limits: Limits,
) -> Result<Option<Merged>, CartError> {
    let mut args = vec![
        absent.arg(),
        s(session_id),
        s(session.version),
        s(limits.max_lines),
        s(limits.max_quantity),
        s(limits.ttl_ms),
    ];
    for line in &session.lines {
        args.extend([
            s(&line.sku),
            s(line.quantity),
            s(line.unit_price_minor),
            s(&line.currency),
            s(line.added_at_ms),
        ]);
    }
    let reply = run(&MERGE, client, key, args).await?;
    let applied = match reply.status.as_str() {
        "cold" => return Ok(None),
        "ok" => true,
        "already_merged" => false,
        other => return Err(protocol(&MERGE, format!("status {other:?}"))),
    };
    let strings = |i: usize| -> Result<Vec<String>, CartError> {
        match reply.rest.get(i) {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| {
                    v.as_string()
                        .ok_or_else(|| protocol(&MERGE, format!("{v:?} is not a sku")))
                })
                .collect(),
            other => Err(protocol(
                &MERGE,
                format!("expected a list of skus, got {other:?}"),
            )),
        }
    };
    Ok(Some(Merged {
        capped: strings(0)?,
        dropped: strings(1)?,
        cart: reply.cart,
        applied,
    }))
}

/// What `cart_restore.lua` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// Restored with its lines.
    Restored,
    /// Restored empty at its version: the copy had outlived the cart TTL.
    Expired,
    /// The key was already there (a concurrent restore or change); nothing written.
    Exists,
}

/// `cart_restore.lua`: re-warm the cart at `key` from its durable copy unless the key exists.
/// Answers the cart now in Redis.
pub async fn restore(
    client: &Client,
    key: &str,
    stored: &StoredCart,
    ttl_ms: i64,
) -> Result<(Restore, LiveCart), CartError> {
    let mut args = vec![s(stored.version), s(stored.updated_at_ms), s(ttl_ms)];
    for line in &stored.lines {
        args.extend([
            s(&line.sku),
            s(line.quantity),
            s(line.unit_price_minor),
            s(&line.currency),
            s(line.added_at_ms),
        ]);
    }
    let reply = run(&RESTORE, client, key, args).await?;
    let outcome = match reply.status.as_str() {
        "ok" => Restore::Restored,
        "expired" => Restore::Expired,
        "exists" => Restore::Exists,
        other => return Err(protocol(&RESTORE, format!("status {other:?}"))),
    };
    Ok((outcome, reply.cart))
}

/// `cart_evict_stale.lua`: after `version` (>= 1) of the cart at `key` was saved to the store,
/// drop the live copy if it is older (Redis lost writes). True when it was dropped.
pub async fn evict_stale(client: &Client, key: &str, version: u64) -> Result<bool, CartError> {
    let reply = run(&EVICT_STALE, client, key, vec![s(version)]).await?;
    match reply.status.as_str() {
        "evicted" => Ok(true),
        "current" => Ok(false),
        other => Err(protocol(&EVICT_STALE, format!("status {other:?}"))),
    }
}

/// What a view script answered about a SKU's product.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// Read from the catalog's cache.
    Read(Priced),
    /// Not in the cache (a miss, a tombstone, an undecodable entry): ask the catalog.
    Miss,
    /// Not read: the epoch the caller named is the catalog's, so its copy is current.
    Current,
}

/// What `cart_view.lua` read about one SKU.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The SKU.
    pub sku: String,
    /// The product as the catalog's cache holds it, or what to do instead.
    pub product: Cached,
    /// Units available as inventory would answer; `None`: ask inventory.
    pub available: Option<i64>,
}

/// What `cart_view.lua` read.
#[derive(Debug, Clone, PartialEq)]
pub struct Viewed {
    /// The live cart; `None` when its key is absent.
    pub cart: Option<LiveCart>,
    /// Its SKUs (and the extra one), in no particular order.
    pub seen: Vec<Seen>,
    /// The catalog's epoch when the script ran (`cat:epoch`); `None` when there is none.
    pub epoch: Option<String>,
}

/// `cart_view.lua`: the cart at `key` with the catalog's cached product and inventory's units
/// available for each of its SKUs and `extra` ('' for none), in one round trip. Standalone
/// Redis only (it reads keys of other slots). `epoch`: the catalog epoch whose products the
/// caller keeps ('' for none); when it is the catalog's, no product is read
/// ([`Cached::Current`]).
pub async fn view(client: &Client, key: &str, extra: &str, epoch: &str) -> Result<Viewed, CartError> {
    let reply: Value = VIEW
        .run(client, vec![key.to_string()], vec![s(extra), s(epoch)])
        .await?;
    let Value::Array(mut values) = reply else {
        return Err(protocol(&VIEW, format!("expected an array, got {reply:?}")));
    };
    if values.len() != 3 {
        return Err(protocol(
            &VIEW,
            format!("expected three parts, got {}", values.len()),
        ));
    }
    let epoch = decode_epoch(&VIEW, values.swap_remove(2))?;
    let seen = decode_seen(&VIEW, values.swap_remove(1))?;
    let cart = decode_cart(&VIEW, values.swap_remove(0))?;
    Ok(Viewed { cart, seen, epoch })
}

/// The catalog's epoch in a view script's reply: a string, or nil for none.
fn decode_epoch(script: &LuaScript, epoch: Value) -> Result<Option<String>, CartError> {
    match epoch {
        Value::Null => Ok(None),
        other => other
            .into_string()
            .map(Some)
            .ok_or_else(|| protocol(script, "the epoch is not a string")),
    }
}

/// The flat `{sku, product, available, ...}` entries of `lib/cart_view.lua`'s `view_seen`.
fn decode_seen(script: &LuaScript, entries: Value) -> Result<Vec<Seen>, CartError> {
    let entries = match entries {
        Value::Array(entries) => entries,
        // An empty Lua table comes back as an empty array, or nil through some paths.
        Value::Null => Vec::new(),
        _ => return Err(protocol(script, "the skus are not an array")),
    };
    if entries.len() % 3 != 0 {
        return Err(protocol(
            script,
            format!("{} sku entries, not three per SKU", entries.len()),
        ));
    }
    let mut seen = Vec::with_capacity(entries.len() / 3);
    let mut entries = entries.into_iter();
    while let (Some(sku), Some(product), Some(available)) = (entries.next(), entries.next(), entries.next()) {
        let available = available
            .as_i64()
            .ok_or_else(|| protocol(script, format!("available {available:?}")))?;
        // fred hands back valid UTF-8 as a string and anything else as bytes: take either.
        // An undecodable entry is a miss, as the catalog itself takes it. 1: not read.
        let product = match product {
            Value::Integer(1) => Cached::Current,
            product => product
                .as_bytes()
                .and_then(|payload| Priced::decode(payload).ok())
                .map_or(Cached::Miss, Cached::Read),
        };
        let sku = sku
            .into_string()
            .ok_or_else(|| protocol(script, "a sku is not a string"))?;
        seen.push(Seen {
            sku,
            product,
            available: (available >= 0).then_some(available),
        });
    }
    Ok(seen)
}

/// A flat HGETALL reply decoded; `None` when the key is absent.
fn decode_cart(script: &LuaScript, flat: Value) -> Result<Option<LiveCart>, CartError> {
    let flat = match flat {
        Value::Array(flat) => flat,
        // An empty Lua table comes back as an empty array, or nil through some paths.
        Value::Null => Vec::new(),
        _ => return Err(protocol(script, "the cart is not an array")),
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.iter();
    while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
        // Borrowed from the reply: no copy per field.
        match (field.as_str(), value.as_str()) {
            (Some(field), Some(value)) => fields.push((field, value)),
            _ => return Err(protocol(script, "a cart field is not a string")),
        }
    }
    LiveCart::from_hash(fields).map_err(|detail| protocol(script, detail))
}

/// A script reply: `{status, n, {HGETALL...}, rest...}`.
struct Reply {
    status: String,
    n: i64,
    cart: LiveCart,
    rest: Vec<Value>,
}

async fn run(script: &LuaScript, client: &Client, key: &str, args: Vec<Value>) -> Result<Reply, CartError> {
    let reply: Value = script.run(client, vec![key.to_string()], args).await?;
    let Value::Array(mut values) = reply else {
        return Err(protocol(script, format!("expected an array, got {reply:?}")));
    };
    if values.len() < 3 {
        return Err(protocol(script, format!("too short: {values:?}")));
    }
    let rest = values.split_off(3);
    let status = values[0]
        .as_string()
        .ok_or_else(|| protocol(script, format!("status {:?}", values[0])))?;
    let n = values[1]
        .as_i64()
        .ok_or_else(|| protocol(script, format!("count {:?}", values[1])))?;
    let Value::Array(_) = &values[2] else {
        return Err(protocol(script, "the cart is not an array"));
    };
    let cart = decode_cart(script, values.swap_remove(2))?.unwrap_or_default();
    Ok(Reply {
        status,
        n,
        cart,
        rest,
    })
}

/// The replies the four line-changing scripts share.
fn change(reply: Reply) -> Result<Option<Change>, CartError> {
    let Reply { status, n, cart, .. } = reply;
    Ok(Some(match status.as_str() {
        "cold" => return Ok(None),
        "ok" => Change::Done(cart),
        "version_conflict" => Change::VersionConflict {
            actual: u64::try_from(n).unwrap_or_default(),
        },
        "line_cap" => Change::LineCap,
        "quantity_cap" => Change::QuantityCap { line_quantity: n },
        "out_of_stock" => Change::OutOfStock {
            line_quantity: n,
            cart,
        },
        "missing" => Change::Missing,
        "stock_unknown" => Change::StockUnknown,
        other => {
            return Err(CartError::Protocol {
                what: "cart script",
                detail: format!("status {other:?}"),
            });
        }
    }))
}

fn protocol(script: &LuaScript, detail: impl Into<String>) -> CartError {
    CartError::Protocol {
        what: script.name,
        detail: detail.into(),
    }
}

fn s(value: impl ToString) -> Value {
    Value::from(value.to_string())
}
