//! The Reserve admission hook and the admin RPCs of SKU admission limits
//! (docs/admission.md). The limiter itself is `holdfast_platform::admission`, shared with
//! the orders service; the limits live in Redis so every replica of both sees them.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::Pool;
use holdfast_platform::admission::{self, Defaults, Limiter, Operation, RateLimit, SkuLimits};
use holdfast_platform::status::FieldViolations;
use holdfast_proto::inventory::v1::{self as pb, AdmissionLimits};
use tonic::Status;

use crate::batcher::Batcher;
use crate::error::InventoryError;
use crate::validate;

/// Most one-line Reserves of one SKU whose admission is decided in one script call.
const ADMIT_BATCH: usize = 64;

/// Highest burst an admin may set.
pub const MAX_BURST: u32 = 100_000;

/// Reserve's limiter and the Redis its limits live in.
#[derive(Clone, Debug)]
pub struct ReserveAdmission {
    limiter: Limiter,
    redis: Pool,
    /// One-line Reserves of a SKU arriving while its admission call is in flight are decided
    /// together in the next (leader/follower, as the Reserves themselves: crate::batcher).
    lanes: Arc<Batcher<(), Option<Duration>>>,
}

impl ReserveAdmission {
    /// The Reserve limiter over `redis` with the flag default per SKU.
    pub fn new(redis: Pool, per_sku: RateLimit) -> Self {
        let defaults = Defaults {
            per_sku,
            per_customer: RateLimit::UNLIMITED,
        };
        Self {
            limiter: Limiter::new(redis.clone(), Operation::Reserve, defaults),
            redis,
            lanes: Arc::new(Batcher::new(ADMIT_BATCH, |_| {})),
        }
    }

    /// Loads the admission scripts.
    pub async fn load(&self) -> Result<(), fred::error::Error> {
        self.limiter.load_scripts().await
    }

    /// Whether a Reserve with this `metadata` counts against the limits: all do but those
    /// carrying [`admission::ADMITTED_HEADER`] from a `trusted` caller.
    pub fn counts(metadata: &tonic::metadata::MetadataMap, trusted: bool) -> bool {
        !(trusted && metadata.contains_key(admission::ADMITTED_HEADER))
    }

    /// The per-SKU Reserve limit where Redis holds no runtime limit (the flags).
    pub fn per_sku(&self) -> RateLimit {
        self.limiter.defaults().per_sku
    }

    /// Admits a Reserve of `skus` or answers RESOURCE_EXHAUSTED with RetryInfo. Reserves
    /// carrying [`admission::ADMITTED_HEADER`] from a `trusted` caller (the orders saga's
    /// `service` token, admitted at Checkout) pass uncounted; from anyone else the header
    /// is ignored.
    pub async fn admit<'a>(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        trusted: bool,
        skus: impl Iterator<Item = &'a str>,
    ) -> Result<(), Status> {
        if !Self::counts(metadata, trusted) {
            return Ok(());
        }
        let mut skus: Vec<&str> = skus.collect();
        skus.sort_unstable();
        skus.dedup();
        if let [sku] = skus.as_slice() {
            // One SKU: decided with the other calls of that SKU in flight, in arrival order.
            let limiter = &self.limiter;
            let decided = self
                .lanes
                .submit(sku, (), |calls| async move {
                    Ok(limiter.admit_many(sku, calls.len()).await)
                })
                .await;
            // An interrupted call fails open, as the limiter does when Redis cannot answer.
            return match decided {
                Ok(Some(retry_after)) => Err(admission::exhausted(
                    "reserve",
                    &format!("sku:{sku}"),
                    retry_after,
                )),
                Ok(None) | Err(_) => Ok(()),
            };
        }
        for sku in skus {
            if let Some(retry_after) = self.limiter.admit(&[sku], None).await.retry_after {
                return Err(admission::exhausted(
                    "reserve",
                    &format!("sku:{sku}"),
                    retry_after,
                ));
            }
        }
        Ok(())
    }

    /// SetAdmissionLimits: validates and stores the SKU's limits.
    pub async fn set(
        &self,
        request: pb::SetAdmissionLimitsRequest,
    ) -> Result<AdmissionLimits, InventoryError> {
        let limits = request.limits.unwrap_or_default();
        let mut violations = FieldViolations::new();
        validate::sku(&mut violations, "limits.sku", &limits.sku);
        let reserve = rate(&mut violations, "limits.reserve", limits.reserve.as_ref());
        let checkout = rate(&mut violations, "limits.checkout", limits.checkout.as_ref());
        violations
            .into_result()
            .map_err(InventoryError::InvalidArgument)?;
        let stored = SkuLimits {
            reserve,
            checkout,
            drop: limits.drop,
        };
        admission::set_sku_limits(&self.redis, &limits.sku, &stored)
            .await
            .map_err(InventoryError::from)?;
        Ok(to_proto(&limits.sku, &stored))
    }

    /// GetAdmissionLimits: the SKU's stored limits.
    pub async fn get(
        &self,
        request: pb::GetAdmissionLimitsRequest,
    ) -> Result<AdmissionLimits, InventoryError> {
        let mut violations = FieldViolations::new();
        validate::sku(&mut violations, "sku", &request.sku);
        violations
            .into_result()
            .map_err(InventoryError::InvalidArgument)?;
        let stored = admission::sku_limits(&self.redis, &request.sku)
            .await
            .map_err(InventoryError::from)?;
        Ok(to_proto(&request.sku, &stored))
    }
}

fn rate(violations: &mut FieldViolations, field: &str, limit: Option<&pb::RateLimit>) -> Option<RateLimit> {
    let limit = limit?;
    if !limit.per_second.is_finite() || limit.per_second < 0.0 {
        violations.add(format!("{field}.per_second"), "must be a finite rate >= 0");
    }
    if limit.burst > MAX_BURST {
        violations.add(format!("{field}.burst"), format!("must be 0..{MAX_BURST}"));
    }
    Some(RateLimit {
        per_second: limit.per_second,
        burst: limit.burst.max(1),
    })
}

fn to_proto(sku: &str, limits: &SkuLimits) -> AdmissionLimits {
    let rate = |limit: Option<RateLimit>| {
        limit.map(|l| pb::RateLimit {
            per_second: l.per_second,
            burst: l.burst,
        })
    };
    AdmissionLimits {
        sku: sku.to_string(),
        reserve: rate(limits.reserve),
        checkout: rate(limits.checkout),
        drop: limits.drop,
    }
}
