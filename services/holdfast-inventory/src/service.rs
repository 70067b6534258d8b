//! The gRPC face of the inventory: validate every field, call the engine, map the answer.

use std::sync::Arc;

use holdfast_platform::drain::Draining;
use holdfast_platform::status::FieldViolations;
use holdfast_proto::inventory::v1::inventory_service_server::InventoryService;
use holdfast_proto::inventory::v1::{
    AdjustStockRequest, CommitRequest, CommitResponse, ExtendRequest, ExtendResponse,
    GetAdmissionLimitsRequest, GetAdmissionLimitsResponse, GetAvailabilityRequest, GetAvailabilityResponse,
    ReleaseRequest, ReleaseResponse, ReservationStatus, ReserveRequest, ReserveResponse,
    ReserveStreamRequest, SetAdmissionLimitsRequest, SetAdmissionLimitsResponse, SetStockRequest, Shortage,
    StockLevel,
};
use holdfast_proto::inventory::v1::{
    GetReconciliationRequest, GetReconciliationResponse, GetRegionalAvailabilityRequest,
    GetRegionalAvailabilityResponse, MoveRegionUnitsRequest, MoveRegionUnitsResponse, SetGlobalStockRequest,
    SetGlobalStockResponse,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::ReserveAdmission;
use crate::error::InventoryError;
use crate::reservations::ReserveAnswer;
use crate::reserve_stream;
use crate::stock::{SkuLevel, Stock};
use crate::validate::{self, MAX_LINES, MAX_ON_HAND};

/// `holdfast.inventory.v1.InventoryService` over a [`Stock`] engine.
#[derive(Clone)]
pub struct Inventory {
    stock: Stock,
    admission: Option<ReserveAdmission>,
    regions: Option<crate::regions::Regions>,
    draining: Draining,
}

impl Inventory {
    /// The service over `stock`, with no Reserve limit and no admission admin RPCs.
    pub fn new(stock: Stock) -> Self {
        Self {
            stock,
            admission: None,
            regions: None,
            draining: Draining::default(),
        }
    }

    /// Ends every `ReserveStream` once `draining` starts (the server's drain), instead of
    /// holding the connection until the drain timeout.
    pub fn with_draining(mut self, draining: Draining) -> Self {
        self.draining = draining;
        self
    }

    /// Rate-limits Reserve per SKU with `admission` and serves its admin RPCs.
    pub fn with_admission(mut self, admission: ReserveAdmission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Runs as one region of a multi-region deployment (docs/regions.md).
    pub fn with_regions(mut self, regions: crate::regions::Regions) -> Self {
        self.regions = Some(regions);
        self
    }

    /// One Reserve, for the unary call and for each request of a stream: `metadata` is the
    /// call's (its token for admission), `trusted` whether it may claim admission already.
    pub(crate) async fn reserve_one(
        &self,
        metadata: &MetadataMap,
        trusted: bool,
        request: ReserveRequest,
    ) -> Result<ReserveResponse, Status> {
        let mut violations = FieldViolations::new();
        validate::id(&mut violations, "reservation_id", &request.reservation_id);
        let ttl = validate::ttl(&mut violations, "ttl_seconds", request.ttl_seconds);
        let lines = validate::lines(&mut violations, &request.lines);
        checked(violations)?;
        if let Some(regions) = &self.regions {
            regions
                .check_home(&lines.iter().map(|(sku, _)| sku.as_str()).collect::<Vec<_>>())
                .await?;
        }
        // A SKU this process knows is sold out is refused without a Redis round trip of its
        // own (the refusal's record goes out in a batch): the limiter, which guards Redis and
        // the stock, has nothing to guard there, and its call would be the attempt's round trip.
        let sold_out = matches!(lines.as_slice(), [(sku, _)] if self.stock.locally_sold_out(sku));
        let counted = self
            .admission
            .as_ref()
            .filter(|_| !sold_out && ReserveAdmission::counts(metadata, trusted));
        // On the coalesced path the admission is decided in the Reserve's own script call (one
        // round trip, not two in turn); any other Reserve is admitted first.
        let inline = match counted {
            Some(admission) if self.stock.coalesces(&lines).await? => Some(admission.per_sku()),
            Some(admission) => {
                admission
                    .admit(metadata, trusted, lines.iter().map(|(sku, _)| sku.as_str()))
                    .await?;
                None
            }
            None => None,
        };
        let answer = self
            .stock
            .reserve_admitting(&request.reservation_id, &lines, ttl, inline)
            .await?;
        Ok(match answer {
            ReserveAnswer::Reserved { expires_at } => ReserveResponse {
                status: ReservationStatus::Reserved as i32,
                shortages: vec![],
                expires_at_unix_ms: expires_at,
            },
            ReserveAnswer::Insufficient(shortages) => ReserveResponse {
                status: {
                    if let Some(regions) = &self.regions {
                        regions.note_shortage(shortages.iter().map(|s| s.sku.as_str()));
                    }
                    ReservationStatus::InsufficientStock as i32
                },
                shortages: shortages
                    .into_iter()
                    .map(|s| Shortage {
                        sku: s.sku,
                        requested: s.requested,
                        available: s.available,
                    })
                    .collect(),
                expires_at_unix_ms: 0,
            },
        })
    }

    fn regions(&self) -> Result<&crate::regions::Regions, Status> {
        self.regions.as_ref().ok_or_else(|| {
            InventoryError::precondition(
                "REGIONS_OFF",
                "regions",
                "this server runs one region (no --regions)",
            )
            .into()
        })
    }

    fn admission(&self) -> Result<&ReserveAdmission, Status> {
        self.admission
            .as_ref()
            .ok_or_else(|| Status::unimplemented("admission limits are not enabled on this server"))
    }
}

/// Only an internal caller (or a mesh without auth) may claim its Reserve was admitted already.
fn trusted<T>(request: &Request<T>) -> bool {
    holdfast_platform::auth::Caller::of(request)
        .is_none_or(|caller| caller.role == holdfast_platform::auth::Role::Service)
}

fn checked(violations: FieldViolations) -> Result<(), InventoryError> {
    violations.into_result().map_err(InventoryError::InvalidArgument)
}

fn stock_level(sku: &str, level: SkuLevel) -> StockLevel {
    StockLevel {
        sku: sku.to_string(),
        on_hand: level.levels.on_hand,
        reserved: level.levels.reserved,
        available: level.levels.available(),
        sold: level.levels.sold,
        buckets: level.buckets,
    }
}

#[tonic::async_trait]
impl InventoryService for Inventory {
    async fn set_stock(&self, request: Request<SetStockRequest>) -> Result<Response<StockLevel>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        validate::sku(&mut violations, "sku", &request.sku);
        if !(0..=MAX_ON_HAND).contains(&request.on_hand) {
            violations.add("on_hand", format!("must be 0..{MAX_ON_HAND}"));
        }
        let buckets = validate::buckets(&mut violations, "buckets", request.buckets);
        checked(violations)?;
        if let Some(regions) = &self.regions {
            regions.claim_regional(&request.sku).await?;
        }
        let level = self
            .stock
            .set_stock(&request.sku, request.on_hand, buckets)
            .await?;
        Ok(Response::new(stock_level(&request.sku, level)))
    }

    async fn adjust_stock(
        &self,
        request: Request<AdjustStockRequest>,
    ) -> Result<Response<StockLevel>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        validate::sku(&mut violations, "sku", &request.sku);
        validate::id(&mut violations, "adjustment_id", &request.adjustment_id);
        if !validate::delta_in_range(request.delta) {
            violations.add("delta", format!("must be non-zero and within ±{MAX_ON_HAND}"));
        }
        checked(violations)?;
        let level = self
            .stock
            .adjust_stock(&request.sku, request.delta, &request.adjustment_id)
            .await?;
        Ok(Response::new(stock_level(&request.sku, level)))
    }

    async fn get_availability(
        &self,
        request: Request<GetAvailabilityRequest>,
    ) -> Result<Response<GetAvailabilityResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        if request.skus.is_empty() || request.skus.len() > MAX_LINES {
            violations.add("skus", format!("must name 1..{MAX_LINES} SKUs"));
        }
        for (i, sku) in request.skus.iter().enumerate() {
            validate::sku(&mut violations, &format!("skus[{i}]"), sku);
        }
        checked(violations)?;
        let levels = futures::future::try_join_all(request.skus.iter().map(|sku| self.stock.level(sku)))
            .await
            .map_err(Status::from)?;
        Ok(Response::new(GetAvailabilityResponse {
            levels: request
                .skus
                .iter()
                .zip(levels)
                .map(|(sku, level)| stock_level(sku, level))
                .collect(),
        }))
    }

    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<ReserveResponse>, Status> {
        let trusted = trusted(&request);
        let (metadata, _, request) = request.into_parts();
        Ok(Response::new(
            self.reserve_one(&metadata, trusted, request).await?,
        ))
    }

    async fn reserve_stream(
        &self,
        request: Request<Streaming<ReserveStreamRequest>>,
    ) -> Result<Response<reserve_stream::Answers>, Status> {
        let trusted = trusted(&request);
        let (metadata, _, requests) = request.into_parts();
        // The service and the stream's metadata, shared by its requests: one reference count
        // per request, not a clone of every handle the service holds.
        let shared = Arc::new((self.clone(), metadata));
        let drain = self.draining.started();
        Ok(Response::new(reserve_stream::answers(
            requests,
            drain,
            move |request| {
                let shared = Arc::clone(&shared);
                async move {
                    let (inventory, metadata) = &*shared;
                    inventory.reserve_one(metadata, trusted, request).await
                }
            },
        )))
    }

    async fn commit(&self, request: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        validate::id(&mut violations, "reservation_id", &request.reservation_id);
        if request.skus.len() > MAX_LINES {
            violations.add("skus", format!("must name at most {MAX_LINES} SKUs"));
        }
        for (i, sku) in request.skus.iter().enumerate() {
            validate::sku(&mut violations, &format!("skus[{i}]"), sku);
        }
        checked(violations)?;
        let (lines, levels) = self
            .stock
            .commit_with_levels(&request.reservation_id, &request.skus)
            .await?;
        let mut answer: Vec<StockLevel> = Vec::with_capacity(lines.len());
        for (line, level) in lines.iter().zip(levels) {
            // One level per SKU (Reserve summed the lines by SKU, sorted).
            if answer.last().is_none_or(|last| last.sku != line.sku) {
                answer.push(stock_level(&line.sku, level));
            }
        }
        Ok(Response::new(CommitResponse { levels: answer }))
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        validate::id(&mut violations, "reservation_id", &request.reservation_id);
        checked(violations)?;
        let released_units = self.stock.release(&request.reservation_id).await?;
        Ok(Response::new(ReleaseResponse { released_units }))
    }

    async fn extend(&self, request: Request<ExtendRequest>) -> Result<Response<ExtendResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        validate::id(&mut violations, "reservation_id", &request.reservation_id);
        let ttl = validate::ttl(&mut violations, "ttl_seconds", request.ttl_seconds);
        checked(violations)?;
        let expires_at_unix_ms = self.stock.extend(&request.reservation_id, ttl).await?;
        Ok(Response::new(ExtendResponse { expires_at_unix_ms }))
    }

    async fn set_admission_limits(
        &self,
        request: Request<SetAdmissionLimitsRequest>,
    ) -> Result<Response<SetAdmissionLimitsResponse>, Status> {
        let limits = self.admission()?.set(request.into_inner()).await?;
        Ok(Response::new(SetAdmissionLimitsResponse { limits: Some(limits) }))
    }

    async fn get_admission_limits(
        &self,
        request: Request<GetAdmissionLimitsRequest>,
    ) -> Result<Response<GetAdmissionLimitsResponse>, Status> {
        let limits = self.admission()?.get(request.into_inner()).await?;
        Ok(Response::new(GetAdmissionLimitsResponse { limits: Some(limits) }))
    }

    async fn set_global_stock(
        &self,
        request: Request<SetGlobalStockRequest>,
    ) -> Result<Response<SetGlobalStockResponse>, Status> {
        Ok(Response::new(
            self.regions()?.set_global_stock(request.into_inner()).await?,
        ))
    }

    async fn get_regional_availability(
        &self,
        request: Request<GetRegionalAvailabilityRequest>,
    ) -> Result<Response<GetRegionalAvailabilityResponse>, Status> {
        Ok(Response::new(
            self.regions()?
                .regional_availability(request.into_inner())
                .await?,
        ))
    }

    async fn get_reconciliation(
        &self,
        request: Request<GetReconciliationRequest>,
    ) -> Result<Response<GetReconciliationResponse>, Status> {
        Ok(Response::new(
            self.regions()?.get_reconciliation(request.into_inner()).await?,
        ))
    }

    async fn move_region_units(
        &self,
        request: Request<MoveRegionUnitsRequest>,
    ) -> Result<Response<MoveRegionUnitsResponse>, Status> {
        // The audit record names the admin token's subject.
        let operator = holdfast_platform::auth::Caller::of(&request)
            .and_then(|caller| caller.subject.clone())
            .unwrap_or_default();
        Ok(Response::new(
            self.regions()?
                .move_units(request.into_inner(), &operator)
                .await?,
        ))
    }
}
