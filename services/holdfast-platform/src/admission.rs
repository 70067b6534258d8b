//! Flash-sale admission at the edge: per-SKU and per-customer rate limits that every replica
//! shares through Redis (docs/admission.md).
//!
//! One GCRA decision is one Lua script (`lua/admission_take.lua`, wrapped once in
//! [`Limiter::take_many`]) on two keys with one hash tag per subject (`admission:{sku:S}:…`,
//! `admission:{customer:C}:…`), so it works on Redis Cluster. On standalone Redis a call naming
//! several subjects is decided in one script for all of them (`lua/admission_take_all.lua`,
//! [`Limiter::admit`]): admitted only if every subject admits it, charged only then. A SKU's limits live in Redis
//! (`admission:{sku:S}:limits`), so a change through [`set_sku_limits`] is seen by every
//! replica at its next call; a subject without limits there gets the service's flag
//! defaults ([`Defaults`]).
//!
//! A refused call is `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` carrying the GCRA's
//! delay ([`exhausted`]). The limiter fails open: when Redis cannot answer, the call is
//! admitted (logged, counted), because a limiter outage must not become a sale outage.

use std::sync::LazyLock;
use std::time::Duration;

use fred::prelude::*;
use prometheus::{IntCounterVec, register_int_counter_vec};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The admission scripts (one per atomic operation).
pub mod scripts {
    crate::lua_scripts! {
        ADMISSION_TAKE => "admission_take.lua",
        ADMISSION_TAKE_ALL => "admission_take_all.lua",
    }
}

/// The metadata header the orders saga sets on its own Reserve calls: those were admitted
/// by the Checkout limit already and are not counted again against the Reserve limit.
pub const ADMITTED_HEADER: &str = "x-holdfast-admitted";

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_admission_decisions_total",
        "Admission decisions at the edge, by operation, subject kind (sku, customer) and decision (admitted, limited, failed_open).",
        &["operation", "subject", "decision"]
    )
    .expect("metric registers once")
});

/// An operation with limits of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// InventoryService.Reserve.
    Reserve,
    /// OrderService.Checkout.
    Checkout,
}

impl Operation {
    /// The name in keys, hash fields and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Checkout => "checkout",
        }
    }
}

/// Who a limit counts calls of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// Calls naming this SKU.
    Sku(&'a str),
    /// Calls of this customer.
    Customer(&'a str),
}

impl Subject<'_> {
    fn kind(self) -> &'static str {
        match self {
            Self::Sku(_) => "sku",
            Self::Customer(_) => "customer",
        }
    }

    /// `admission:{<kind>:<id>}`: the hash tag keeps a subject's keys on one cluster slot.
    fn prefix(self) -> String {
        match self {
            Self::Sku(sku) => format!("admission:{{sku:{sku}}}"),
            Self::Customer(customer) => format!("admission:{{customer:{customer}}}"),
        }
    }

    /// The subject's theoretical-arrival-time key for `op`.
    pub fn tat_key(self, op: Operation) -> String {
        format!("{}:{}:tat", self.prefix(), op.as_str())
    }

    /// The subject's runtime limits (a hash).
    pub fn limits_key(self) -> String {
        format!("{}:limits", self.prefix())
    }
}

/// A rate: `per_second` calls a second on average, `burst` of them at once on an idle
/// subject. `per_second` of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Average calls per second; 0 (or less): unlimited.
    pub per_second: f64,
    /// Calls admitted back to back on an idle subject, at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const UNLIMITED: RateLimit = RateLimit {
        per_second: 0.0,
        burst: 1,
    };

    /// Whether this limits anything.
    pub fn is_limited(&self) -> bool {
        self.per_second > 0.0
    }
}

/// The limits of one operation when Redis holds none for a subject (the service's flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Per SKU named in a call.
    pub per_sku: RateLimit,
    /// Per customer calling; unused for operations without a customer.
    pub per_customer: RateLimit,
}

/// What the limiter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None`: admitted; `Some(d)`: refused, the next call would be admitted in `d`.
    pub retry_after: Option<Duration>,
    /// With a refusal: the subject whose limit refused it, e.g. "sku:S1", "customer:c1".
    pub limited_by: Option<String>,
    /// A SKU of the call is flagged as a drop (its checkouts go to the waiting room).
    pub drop: bool,
}

impl Decision {
    /// Admitted, no drop.
    pub const ADMITTED: Decision = Decision {
        retry_after: None,
        limited_by: None,
        drop: false,
    };
}

impl std::fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sku(sku) => write!(f, "sku:{sku}"),
            Self::Customer(customer) => write!(f, "customer:{customer}"),
        }
    }
}

/// A SKU's limits as stored in Redis; `None` fields fall back to the flag defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkuLimits {
    /// Reserve calls naming the SKU.
    pub reserve: Option<RateLimit>,
    /// Checkout calls naming the SKU.
    pub checkout: Option<RateLimit>,
    /// Every checkout of the SKU goes through the waiting room.
    pub drop: bool,
}

/// The limiter of one operation over a Redis pool. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    redis: Pool,
    op: Operation,
    defaults: Defaults,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("op", &self.op)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// The limiter of `op` with the flag `defaults`. Load [`scripts::all`] at start-up.
    pub fn new(redis: Pool, op: Operation, defaults: Defaults) -> Self {
        Self { redis, op, defaults }
    }

    /// Loads the admission scripts on every primary.
    pub async fn load_scripts(&self) -> Result<(), fred::error::Error> {
        crate::redis::load_scripts(self.redis.next(), &scripts::all()).await
    }

    /// The flag defaults this limiter applies where Redis holds no runtime limit.
    pub fn defaults(&self) -> Defaults {
        self.defaults
    }

    /// The flag default of `subject`'s kind.
    fn default_of(&self, subject: Subject<'_>) -> RateLimit {
        match subject {
            Subject::Sku(_) => self.defaults.per_sku,
            Subject::Customer(_) => self.defaults.per_customer,
        }
    }

    /// One GCRA decision for `subject`.
    pub async fn take(&self, subject: Subject<'_>) -> Result<Decision, fred::error::Error> {
        Ok(self.take_many(subject, 1).await?.1)
    }

    /// GCRA decisions for `calls` calls of `subject` arriving together, in one script call: the
    /// only caller of `admission_take.lua`. Returns how many are admitted (always the first
    /// ones) and the decision of the others (that of the last admitted one if all are).
    pub async fn take_many(
        &self,
        subject: Subject<'_>,
        calls: u32,
    ) -> Result<(u32, Decision), fred::error::Error> {
        let default = self.default_of(subject);
        let (admitted, retry_ms, _milli, drop): (i64, i64, i64, i64) = scripts::ADMISSION_TAKE
            .run(
                self.redis.next(),
                vec![subject.tat_key(self.op), subject.limits_key()],
                vec![
                    self.op.as_str().into(),
                    default.per_second.to_string().into(),
                    i64::from(default.burst.max(1)).into(),
                    i64::from(calls.max(1)).into(),
                ],
            )
            .await?;
        let admitted = u32::try_from(admitted.clamp(0, i64::from(calls))).unwrap_or(0);
        let limited = admitted < calls.max(1);
        Ok((
            admitted,
            Decision {
                retry_after: limited.then(|| Duration::from_millis(retry_ms.max(1) as u64)),
                limited_by: limited.then(|| subject.to_string()),
                drop: drop == 1,
            },
        ))
    }

    /// Admits `calls` calls naming only `sku`, arriving together (the inventory's coalesced
    /// one-line Reserves), in one script call: the first ones up to the limit, in order; each
    /// answer is that call's retry delay (`None`: admitted). Fails open like [`Self::admit`].
    pub async fn admit_many(&self, sku: &str, calls: usize) -> Vec<Option<Duration>> {
        let subject = Subject::Sku(sku);
        // More than the script takes (1000) is an error reply, and fails open like one.
        let asked = u32::try_from(calls).unwrap_or(u32::MAX);
        match self.take_many(subject, asked).await {
            Ok((admitted, decision)) => {
                let admitted = admitted as usize;
                self.count(subject, "admitted", admitted);
                self.count(subject, "limited", calls - admitted);
                (0..calls)
                    .map(|i| if i < admitted { None } else { decision.retry_after })
                    .collect()
            }
            Err(error) => {
                self.failed_open(subject, &error, calls);
                vec![None; calls]
            }
        }
    }

    fn count(&self, subject: Subject<'_>, decision: &str, calls: usize) {
        count(self.op, subject, decision, calls);
    }

    fn failed_open(&self, subject: Subject<'_>, error: &fred::error::Error, calls: usize) {
        tracing::warn!(op = self.op.as_str(), subject = ?subject, %error, "admission limiter unavailable; admitting");
        self.count(subject, "failed_open", calls);
    }

    /// Admits a call naming `skus` (each once) by `customer`, the customer's limit first, then
    /// each SKU's. On standalone Redis every subject decides in one script call, all or
    /// nothing: a refused call costs no subject anything. On a cluster (the subjects' keys on
    /// different slots) they decide one by one, stopping at the first refusal, so a refused call
    /// costs the subjects after it nothing. Fails open on a Redis error.
    pub async fn admit(&self, skus: &[&str], customer: Option<&str>) -> Decision {
        let mut decision = Decision::ADMITTED;
        let subjects: Vec<Subject<'_>> = customer
            .filter(|_| self.defaults.per_customer.is_limited())
            .map(Subject::Customer)
            .into_iter()
            .chain(skus.iter().map(|sku| Subject::Sku(sku)))
            .collect();
        let client = self.redis.next();
        if subjects.len() > 1 && !client.is_clustered() {
            return self.admit_all(client, &subjects).await;
        }
        for subject in subjects {
            match self.take(subject).await {
                Ok(taken) => {
                    decision.drop |= taken.drop;
                    if taken.retry_after.is_some() {
                        decision.retry_after = taken.retry_after;
                        decision.limited_by = taken.limited_by;
                        self.count(subject, "limited", 1);
                        return decision;
                    }
                    self.count(subject, "admitted", 1);
                }
                Err(error) => self.failed_open(subject, &error, 1),
            }
        }
        decision
    }
}

impl Limiter {
    /// One `admission_take_all.lua` call for a call naming `subjects` (standalone Redis).
    async fn admit_all(&self, client: &Client, subjects: &[Subject<'_>]) -> Decision {
        let mut keys = Vec::with_capacity(2 * subjects.len());
        let mut args: Vec<Value> = Vec::with_capacity(1 + 2 * subjects.len());
        args.push(self.op.as_str().into());
        for subject in subjects {
            let default = self.default_of(*subject);
            keys.extend([subject.tat_key(self.op), subject.limits_key()]);
            args.extend([
                default.per_second.to_string().into(),
                i64::from(default.burst.max(1)).into(),
            ]);
        }
        let reply: Result<(i64, i64, i64, i64), _> =
            scripts::ADMISSION_TAKE_ALL.run(client, keys, args).await;
        match reply {
            Ok((1, _, _, drop)) => {
                for subject in subjects {
                    self.count(*subject, "admitted", 1);
                }
                Decision {
                    drop: drop == 1,
                    ..Decision::ADMITTED
                }
            }
            Ok((_, retry_ms, limited_by, drop)) => {
                let by = usize::try_from(limited_by - 1).ok().and_then(|i| subjects.get(i));
                if let Some(subject) = by {
                    self.count(*subject, "limited", 1);
                }
                Decision {
                    retry_after: Some(Duration::from_millis(retry_ms.max(1).unsigned_abs())),
                    limited_by: by.map(ToString::to_string),
                    drop: drop == 1,
                }
            }
            Err(error) => {
                for subject in subjects {
                    self.failed_open(*subject, &error, 1);
                }
                Decision::ADMITTED
            }
        }
    }
}

/// Counts `calls` decisions (`admitted`, `limited`, `failed_open`) of `op` for `subject` in
/// `holdfast_admission_decisions_total`: the limiter's own, and those a script deciding
/// admission together with the operation made (inventory's `reserve_batch.lua`).
pub fn count(op: Operation, subject: Subject<'_>, decision: &str, calls: usize) {
    DECISIONS
        .with_label_values(&[op.as_str(), subject.kind(), decision])
        .inc_by(calls as u64);
}

/// `RESOURCE_EXHAUSTED` for a call refused by the limiter: a `google.rpc.RetryInfo` with
/// `retry_after` and a `google.rpc.QuotaFailure` naming `subject` (e.g. "sku:S1").
pub fn exhausted(what: &str, subject: &str, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.add_quota_failure_violation(subject, format!("{what} rate limit reached"));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "{what}: too many calls for {subject}; retry in {} ms",
            retry_after.as_millis()
        ),
        details,
    )
}

const FIELDS: [&str; 5] = [
    "reserve:per_second",
    "reserve:burst",
    "checkout:per_second",
    "checkout:burst",
    "drop",
];

/// Stores `limits` as the SKU's runtime limits (replacing what was there; `None` fields
/// go back to the defaults) and restarts its limiters' clocks, so the change holds from
/// the next call of every replica.
pub async fn set_sku_limits(redis: &Pool, sku: &str, limits: &SkuLimits) -> Result<(), fred::error::Error> {
    let subject = Subject::Sku(sku);
    let key = subject.limits_key();
    let client = redis.next();
    let _: i64 = client.del(key.clone()).await?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for (op, limit) in [("reserve", limits.reserve), ("checkout", limits.checkout)] {
        if let Some(limit) = limit {
            fields.push((format!("{op}:per_second"), limit.per_second.to_string()));
            fields.push((format!("{op}:burst"), limit.burst.max(1).to_string()));
        }
    }
    if limits.drop {
        fields.push(("drop".into(), "1".into()));
    }
    if !fields.is_empty() {
        let _: i64 = client.hset(key, fields).await?;
    }
    for op in [Operation::Reserve, Operation::Checkout] {
        let _: i64 = client.del(subject.tat_key(op)).await?;
    }
    Ok(())
}

/// The SKU's runtime limits (all `None` and no drop when none are stored).
pub async fn sku_limits(redis: &Pool, sku: &str) -> Result<SkuLimits, fred::error::Error> {
    let values: Vec<Option<String>> = redis
        .next()
        .hmget(Subject::Sku(sku).limits_key(), FIELDS.to_vec())
        .await?;
    let get = |i: usize| values.get(i).cloned().flatten();
    let limit = |rate: Option<String>, burst: Option<String>| {
        rate.and_then(|r| r.parse::<f64>().ok())
            .map(|per_second| RateLimit {
                per_second,
                burst: burst.and_then(|b| b.parse().ok()).unwrap_or(1),
            })
    };
    Ok(SkuLimits {
        reserve: limit(get(0), get(1)),
        checkout: limit(get(2), get(3)),
        drop: get(4).as_deref() == Some("1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_keys_share_one_hash_tag() {
        let sku = Subject::Sku("S1");
        assert_eq!(
            sku.tat_key(Operation::Checkout),
            "admission:{sku:S1}:checkout:tat"
        );
        assert_eq!(sku.limits_key(), "admission:{sku:S1}:limits");
        let customer = Subject::Customer("c1");
        assert_eq!(
            customer.tat_key(Operation::Reserve),
            "admission:{customer:c1}:reserve:tat"
        );
    }

    #[test]
    fn exhausted_carries_retry_info() {
        let status = exhausted("checkout", "sku:S1", Duration::from_millis(250));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(250))
        );
        assert!(details.quota_failure().is_some());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        assert!(!RateLimit::UNLIMITED.is_limited());
        assert!(
            RateLimit {
                per_second: 0.5,
                burst: 1
            }
            .is_limited()
        );
    }
}
