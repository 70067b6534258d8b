//! `flash-sale` against admission (docs/admission.md): buyers answered PENDING wait for
//! their turn by polling GetCheckout, and the run tallies admitted / queued / rate-limited /
//! sold-out buyers.

use std::time::Duration;

use holdfast_proto::orders::v1::{CheckoutOutcome, CheckoutResponse, GetCheckoutRequest};
use tokio::time::Instant;

use crate::mesh::Mesh;
use crate::scenario::{request, retryable};

/// How long a queued buyer waits for its checkout to run before giving up.
const QUEUE_PATIENCE: Duration = Duration::from_secs(300);

/// Polls GetCheckout for `key` until it is no longer PENDING (or `QUEUE_PATIENCE`
/// passes: the last PENDING is answered, and counts as no answer).
pub async fn wait_for_turn(
    mesh: &Mesh,
    i: u64,
    key: &str,
    timeout: Duration,
) -> Result<CheckoutResponse, tonic::Status> {
    let deadline = Instant::now() + QUEUE_PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        let reply = mesh
            .orders(i)
            .get_checkout(request(
                GetCheckoutRequest {
                    idempotency_key: key.to_string(),
                },
                timeout,
            ))
            .await;
        match reply {
            Ok(reply) => {
                let checkout = reply.into_inner().checkout.unwrap_or_default();
                if checkout.outcome != CheckoutOutcome::Pending as i32 {
                    return Ok(checkout);
                }
                // Wait about as long as the service estimates, within reason.
                let wait = u64::try_from(checkout.estimated_wait_ms)
                    .unwrap_or(0)
                    .clamp(50, 1000);
                last = Some(checkout);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Err(status) if retryable(&status) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status),
        }
    }
    Err(tonic::Status::deadline_exceeded(format!(
        "still pending after {QUEUE_PATIENCE:?}: {last:?}"
    )))
}

/// What one buyer saw of admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Answered RESOURCE_EXHAUSTED.
    RateLimited,
    /// Let in; `queued` through the waiting room; `sold_out` refused for lack of stock.
    Admitted {
        /// Went through the waiting room.
        queued: bool,
        /// Answered OUT_OF_STOCK / INSUFFICIENT_STOCK.
        sold_out: bool,
    },
}

/// What the buyers came away with, as admission saw them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tally {
    /// Buyers the limits let in (directly or through the waiting room).
    pub admitted: u64,
    /// Of those, checkouts that went through the waiting room.
    pub queued: u64,
    /// Buyers answered RESOURCE_EXHAUSTED (rate limit or full waiting room).
    pub rate_limited: u64,
    /// Admitted buyers refused for lack of stock (OUT_OF_STOCK, INSUFFICIENT_STOCK).
    pub sold_out: u64,
    /// p99 of the admitted calls answered directly (`Reserve` and `Checkout`), ms.
    pub admitted_p99_ms: Option<f64>,
    /// p99 of the refusals (`RateLimited`), ms.
    pub refused_p99_ms: Option<f64>,
}

impl Tally {
    /// Counts what each buyer saw.
    pub fn of(seen: impl Iterator<Item = Seen>) -> Self {
        let mut tally = Tally::default();
        for seen in seen {
            match seen {
                Seen::RateLimited => tally.rate_limited += 1,
                Seen::Admitted { queued, sold_out } => {
                    tally.admitted += 1;
                    tally.queued += u64::from(queued);
                    tally.sold_out += u64::from(sold_out);
                }
            }
        }
        tally
    }

    /// Adds the p99 latencies of `admitted` ops (merged) and of `refused` from a run.
    pub fn with_latencies(
        mut self,
        result: &crate::engine::LoadResult,
        admitted: &[&str],
        refused: &str,
    ) -> Self {
        let p99 = |ops: &[&str]| {
            let mut merged = crate::engine::histogram();
            for op in ops {
                if let Some(tally) = result.ops.get(op) {
                    merged.add(&tally.latency).ok()?;
                }
            }
            (!merged.is_empty()).then(|| merged.value_at_quantile(0.99) as f64 / 1000.0)
        };
        self.admitted_p99_ms = p99(admitted);
        self.refused_p99_ms = p99(&[refused]);
        self
    }

    /// One line for the console.
    pub fn line(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        format!(
            "admission: {} admitted ({} through the waiting room), {} rate-limited, {} sold out; p99 admitted {}, rate-limited {}",
            self.admitted,
            self.queued,
            self.rate_limited,
            self.sold_out,
            ms(self.admitted_p99_ms),
            ms(self.refused_p99_ms)
        )
    }

    /// The report's `admission` object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "admitted": self.admitted,
            "queued": self.queued,
            "rate_limited": self.rate_limited,
            "sold_out": self.sold_out,
            "admitted_p99_ms": self.admitted_p99_ms,
            "rate_limited_p99_ms": self.refused_p99_ms,
        })
    }
}

/// Every checkout that went through the waiting room was answered, and answered once:
/// asked again by its key now, `GetCheckout` tells the same outcome and order as the
/// buyer saw.
pub async fn drained_check(
    mesh: &Mesh,
    queued: &[(String, crate::audit::CheckoutAnswer)],
    timeout: Duration,
) -> crate::report::Check {
    use crate::audit::CheckoutAnswer;
    let mut wrong = Vec::new();
    for (i, (key, seen)) in queued.iter().enumerate() {
        if let CheckoutAnswer::Unknown(e) = seen {
            wrong.push(format!("{key}: no final answer ({e})"));
            continue;
        }
        let again = crate::scenario::with_retries(3, |_| {
            let mut client = mesh.orders(i as u64);
            let key = key.clone();
            async move {
                client
                    .get_checkout(request(GetCheckoutRequest { idempotency_key: key }, timeout))
                    .await
            }
        })
        .await
        .0;
        match again {
            Ok(reply) => {
                let now = CheckoutAnswer::of(&reply.into_inner().checkout.unwrap_or_default());
                if now.label() != seen.label() || now.order_id() != seen.order_id() {
                    wrong.push(format!("{key}: answered {seen:?}, now {now:?}"));
                }
            }
            Err(status) => wrong.push(format!("{key}: GetCheckout {}", status.message())),
        }
    }
    crate::report::Check::new(
        "waiting-room",
        "every checkout through the waiting room got one final answer, the same when asked again",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!("{} queued checkouts answered once each", queued.len())
        } else {
            format!(
                "{} of {} queued checkouts wrong: {}",
                wrong.len(),
                queued.len(),
                crate::scenario::sample_list(&wrong, 3)
            )
        },
    )
}
