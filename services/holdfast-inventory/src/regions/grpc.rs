//! The multi-region RPCs: every field validated (INVALID_ARGUMENT with BadRequest details),
//! then the engine.

use std::collections::HashSet;

use fred::prelude::{HashesInterface, SetsInterface};
use holdfast_platform::clock::now_ms;
use holdfast_platform::status::FieldViolations;
use holdfast_proto::inventory::v1::{
    GetReconciliationRequest, GetReconciliationResponse, GetRegionalAvailabilityRequest,
    GetRegionalAvailabilityResponse, RegionAllocation, RegionAvailability, RegionalAvailability,
    SetGlobalStockRequest, SetGlobalStockResponse, SkuPlacement, SkuScope,
};

use super::keys::{REGION_SKUS, RegionKeys};
use super::scripts::{self, Placed, Placement};
use super::{Regions, audit};
use crate::error::InventoryError;
use crate::validate::{self, MAX_LINES};

/// Most units a global SKU may have.
pub const MAX_GLOBAL_TOTAL: i64 = 1_000_000_000;

fn checked(violations: FieldViolations) -> Result<(), InventoryError> {
    violations.into_result().map_err(InventoryError::InvalidArgument)
}

fn skus_field(violations: &mut FieldViolations, skus: &[String], allow_empty: bool) {
    if (!allow_empty && skus.is_empty()) || skus.len() > MAX_LINES {
        violations.add(
            "skus",
            format!("must name {}..{MAX_LINES} SKUs", u8::from(!allow_empty)),
        );
    }
    for (i, sku) in skus.iter().enumerate() {
        validate::sku(violations, &format!("skus[{i}]"), sku);
    }
}

impl Regions {
    /// SetGlobalStock: validates, places the SKU here (this region becomes its home) with its
    /// allocation, and announces the placement through the region outbox.
    pub async fn set_global_stock(
        &self,
        request: SetGlobalStockRequest,
    ) -> Result<SetGlobalStockResponse, InventoryError> {
        let mut v = FieldViolations::new();
        validate::sku(&mut v, "sku", &request.sku);
        validate::id(&mut v, "placement_id", &request.placement_id);
        if !(1..=MAX_GLOBAL_TOTAL).contains(&request.total) {
            v.add("total", format!("must be 1..{MAX_GLOBAL_TOTAL}"));
        }
        let buckets = validate::buckets(&mut v, "buckets", request.buckets);
        let mut seen = HashSet::new();
        let mut sum: i64 = 0;
        for (i, a) in request.allocations.iter().enumerate() {
            if !self.config().regions.contains(&a.region) {
                v.add(
                    format!("allocations[{i}].region"),
                    format!(
                        "must be one of the deployment's regions {:?}",
                        self.config().regions
                    ),
                );
            } else if !seen.insert(a.region.as_str()) {
                v.add(format!("allocations[{i}].region"), "named twice");
            }
            if !(0..=MAX_GLOBAL_TOTAL).contains(&a.units) {
                v.add(
                    format!("allocations[{i}].units"),
                    format!("must be 0..{MAX_GLOBAL_TOTAL}"),
                );
            }
            sum = sum.saturating_add(a.units);
        }
        if request.allocations.is_empty() {
            v.add("allocations", "must split the total across at least one region");
        } else if sum != request.total {
            v.add(
                "allocations",
                format!("sum to {sum}, not the total {}", request.total),
            );
        }
        checked(v)?;

        let sku = request.sku.as_str();
        let keys = RegionKeys::new(sku);
        let client = self.stock().client();
        let mine = request
            .allocations
            .iter()
            .find(|a| a.region == self.region())
            .map_or(0, |a| a.units);
        let split: Vec<String> = request
            .allocations
            .iter()
            .map(|a| format!("{}={}", a.region, a.units))
            .collect();
        let split = split.join(",");
        if buckets > 1 {
            let placed: Option<String> = client.hget(keys.placement(), "scope").await?;
            let level = self.stock().level(sku).await?;
            if placed.is_none() && level.levels.on_hand == 0 && level.levels.sold == 0 {
                // The layout first, empty: the allocation then lands on bucket 0 and the
                // rebalancer spreads it.
                self.stock().set_stock(sku, 0, buckets).await?;
            }
        }
        let outcome = scripts::place(
            client,
            &keys,
            &Placement::Global {
                home: self.region(),
                placement_id: &request.placement_id,
                allocation: mine,
                total: request.total,
                announce: Some(&split),
            },
        )
        .await?;
        match outcome {
            Placed::Now(_) | Placed::Already(_) => {}
            Placed::Otherwise(scope, home) => {
                return Err(InventoryError::precondition(
                    "ALREADY_PLACED",
                    sku,
                    format!(
                        "{sku} is already placed as a {scope} SKU by region {home}; a global SKU is placed once, and then moved by transfers"
                    ),
                ));
            }
        }
        let _: i64 = client.sadd(REGION_SKUS, sku).await?;
        self.stock().record_truth(sku).await?;
        self.wake_relay();
        let snapshot = self.take_snapshot(sku).await?;
        let stale = self.stale_ms();
        Ok(SetGlobalStockResponse {
            placement: Some(SkuPlacement {
                sku: sku.to_string(),
                scope: SkuScope::Global as i32,
                home_region: snapshot.home_region.clone(),
                global_total: snapshot.global_total,
                allocations: request.allocations.clone(),
                placement_id: snapshot.placement_id.clone(),
            }),
            local: Some(audit::region_figures(&snapshot, now_ms(), stale)),
        })
    }

    pub(crate) fn stale_ms(&self) -> i64 {
        i64::try_from(self.config().stale_after.as_millis()).unwrap_or(i64::MAX)
    }

    /// GetRegionalAvailability.
    pub async fn regional_availability(
        &self,
        request: GetRegionalAvailabilityRequest,
    ) -> Result<GetRegionalAvailabilityResponse, InventoryError> {
        let mut v = FieldViolations::new();
        skus_field(&mut v, &request.skus, false);
        checked(v)?;
        let mut answer = GetRegionalAvailabilityResponse::default();
        let now = now_ms();
        for sku in &request.skus {
            let level = self.stock().level(sku).await?;
            let views = self.views(sku).await?;
            let (scope, home): (Option<String>, Option<String>) = self
                .stock()
                .client()
                .hmget(RegionKeys::new(sku).placement(), vec!["scope", "home"])
                .await?;
            let report = audit::reconcile(sku, &self.config().regions, &views, now, self.stale_ms());
            let local = RegionAvailability {
                region: self.region().to_string(),
                on_hand: level.levels.on_hand,
                reserved: level.levels.reserved,
                available: level.levels.available(),
                sold: level.levels.sold,
                age_ms: 0,
                stale: false,
                allocation: views.get(self.region()).map_or(0, |s| s.allocation),
                transferred_in: views
                    .get(self.region())
                    .map_or(0, |s| s.transfers_in.iter().map(|t| t.units).sum()),
                transferred_out: views
                    .get(self.region())
                    .map_or(0, |s| s.transfers_out.iter().map(|t| t.units).sum()),
            };
            let mut regions: Vec<RegionAvailability> = report
                .regions
                .into_iter()
                .filter(|r| r.region != self.region())
                .collect();
            regions.push(local.clone());
            regions.sort_by(|a, b| a.region.cmp(&b.region));
            let scope = match scope.as_deref() {
                Some("global") => SkuScope::Global,
                Some("regional") => SkuScope::Regional,
                _ => SkuScope::Unspecified,
            };
            let home = home.unwrap_or_default();
            answer.skus.push(RegionalAvailability {
                sku: sku.clone(),
                scope: scope as i32,
                sells_here: !(scope == SkuScope::Regional && home != self.region()),
                home_region: home,
                world_available: regions.iter().map(|r| r.available).sum(),
                in_flight: report.in_flight,
                local: Some(local),
                regions,
            });
        }
        Ok(answer)
    }

    /// GetReconciliation.
    pub async fn get_reconciliation(
        &self,
        request: GetReconciliationRequest,
    ) -> Result<GetReconciliationResponse, InventoryError> {
        let mut v = FieldViolations::new();
        skus_field(&mut v, &request.skus, true);
        checked(v)?;
        self.reconciliation(&request.skus).await
    }
}

/// `RegionAllocation`s from `region=units` pairs (the CLI's and tests' shorthand).
pub fn allocations(pairs: &[(&str, i64)]) -> Vec<RegionAllocation> {
    pairs
        .iter()
        .map(|(region, units)| RegionAllocation {
            region: (*region).to_string(),
            units: *units,
        })
        .collect()
}
