//! The gRPC face of the warehouse: validate every field, call the engine, map the answer.

use std::sync::Arc;

use holdfast_platform::status::FieldViolations;
use holdfast_proto::common::v1::{Address, GeoPoint, PageResponse};
use holdfast_proto::warehouse::v1::warehouse_service_server::WarehouseService;
use holdfast_proto::warehouse::v1::{
    CancelOrderShipmentsRequest, CancelOrderShipmentsResponse, GetWarehouseStockRequest,
    GetWarehouseStockResponse, ListShipmentsRequest, ListShipmentsResponse, ListWarehousesRequest,
    ListWarehousesResponse, MarkDeliveredRequest, MarkDeliveredResponse, MarkShippedRequest,
    MarkShippedResponse, ReceiveStockRequest, ReceiveStockResponse, RecordShrinkageRequest,
    RecordShrinkageResponse, SetWarehouseStockRequest, SetWarehouseStockResponse, Shipment, ShipmentLine,
    ShipmentStatus, ShippingOption, ShrinkageReason, StartPickingRequest, StartPickingResponse,
    UpsertWarehouseRequest, UpsertWarehouseResponse, Warehouse, WarehouseStock, list_shipments_request,
};
use holdfast_store::{ShippingOptionRecord, StockRow, StoreError, StoredShipment, StoredWarehouse};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, Shrinkage, WarehouseBackend};
use crate::error::WarehouseError;
use crate::{now_ms, validate};

/// `holdfast.warehouse.v1.WarehouseService` over an [`Engine`].
pub struct Warehouses<S> {
    engine: Arc<Engine<S>>,
}

impl<S> Clone for Warehouses<S> {
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
        }
    }
}

impl<S: WarehouseBackend> Warehouses<S> {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine<S>>) -> Self {
        Self { engine }
    }
}

fn checked(violations: FieldViolations) -> Result<(), Status> {
    violations.into_result()
}

/// A store refusal of a page cursor as a field violation.
fn cursor_error(field: &str, error: StoreError) -> Status {
    match error {
        StoreError::InvalidArgument(_) => {
            let mut v = FieldViolations::new();
            v.add(field, "is not a cursor of this listing");
            v.into_result()
                .err()
                .unwrap_or_else(|| Status::invalid_argument(field.to_string()))
        }
        other => WarehouseError::Store(other).into(),
    }
}

/// The proto of a stored warehouse.
pub fn warehouse_proto(w: StoredWarehouse) -> Warehouse {
    Warehouse {
        id: w.id,
        name: w.name,
        region: w.region,
        location: Some(GeoPoint {
            latitude: w.latitude,
            longitude: w.longitude,
        }),
        shipping_options: w
            .shipping_options
            .into_iter()
            .map(|o| ShippingOption {
                speed: o.speed,
                max_days: o.max_days,
                max_distance_km: o.max_distance_km,
            })
            .collect(),
        active: w.active,
        created_at_unix_ms: w.created_at_ms,
        updated_at_unix_ms: w.updated_at_ms,
    }
}

/// The proto of a stock row.
pub fn stock_proto(row: StockRow) -> WarehouseStock {
    WarehouseStock {
        sku: row.sku,
        warehouse_id: row.warehouse_id,
        physical: row.physical,
        allocatable: row.allocatable,
        updated_at_unix_ms: row.updated_at_ms,
    }
}

/// The proto of a stored shipment.
pub fn shipment_proto(s: StoredShipment) -> Shipment {
    Shipment {
        ship_to: Address::decode(s.ship_to.as_slice()).ok(),
        id: s.id,
        order_id: s.order_id,
        warehouse_id: s.warehouse_id,
        lines: s
            .lines
            .into_iter()
            .map(|l| ShipmentLine {
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect(),
        status: s.status,
        carrier: s.carrier,
        tracking_number: s.tracking_number,
        shipping_speed: s.shipping_speed,
        promised_by_unix_ms: s.promised_by_ms,
        created_at_unix_ms: s.created_at_ms,
        shipped_at_unix_ms: s.shipped_at_ms,
        delivered_at_unix_ms: s.delivered_at_ms,
        updated_at_unix_ms: s.updated_at_ms,
    }
}

fn shipment_id(request_id: &str) -> Result<(), Status> {
    let mut v = FieldViolations::new();
    validate::id(&mut v, "shipment_id", request_id);
    checked(v)
}

#[tonic::async_trait]
impl<S: WarehouseBackend> WarehouseService for Warehouses<S> {
    async fn upsert_warehouse(
        &self,
        request: Request<UpsertWarehouseRequest>,
    ) -> Result<Response<UpsertWarehouseResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        validate::warehouse(&mut v, request.warehouse.as_ref());
        checked(v)?;
        let Some(w) = request.warehouse else {
            return Err(Status::invalid_argument("warehouse is required"));
        };
        let location = w.location.unwrap_or_default();
        let stored = StoredWarehouse {
            id: w.id,
            name: w.name,
            region: w.region,
            latitude: location.latitude,
            longitude: location.longitude,
            shipping_options: w
                .shipping_options
                .into_iter()
                .map(|o| ShippingOptionRecord {
                    speed: o.speed,
                    max_days: o.max_days,
                    max_distance_km: o.max_distance_km,
                })
                .collect(),
            active: w.active,
            ..StoredWarehouse::default()
        };
        let (stored, created) = self
            .engine
            .store
            .upsert_warehouse(stored)
            .await
            .map_err(WarehouseError::from)?;
        Ok(Response::new(UpsertWarehouseResponse {
            warehouse: Some(warehouse_proto(stored)),
            created,
        }))
    }

    async fn list_warehouses(
        &self,
        request: Request<ListWarehousesRequest>,
    ) -> Result<Response<ListWarehousesResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        if !request.region.is_empty() {
            validate::region(&mut v, "region", &request.region);
        }
        let (size, token) = validate::page(&mut v, "page", request.page.as_ref());
        checked(v)?;
        let region = (!request.region.is_empty()).then_some(request.region.as_str());
        let page = self
            .engine
            .store
            .list_warehouses(region, request.include_inactive, token.as_deref(), size)
            .await
            .map_err(|e| cursor_error("page.page_token", e))?;
        Ok(Response::new(ListWarehousesResponse {
            warehouses: page.warehouses.into_iter().map(warehouse_proto).collect(),
            page: Some(PageResponse {
                next_page_token: page.next_cursor.unwrap_or_default(),
            }),
        }))
    }

    async fn set_warehouse_stock(
        &self,
        request: Request<SetWarehouseStockRequest>,
    ) -> Result<Response<SetWarehouseStockResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        validate::warehouse_id(&mut v, "warehouse_id", &request.warehouse_id);
        validate::sku(&mut v, "sku", &request.sku);
        if !(0..=validate::MAX_PHYSICAL).contains(&request.physical) {
            v.add("physical", format!("must be 0..{}", validate::MAX_PHYSICAL));
        }
        checked(v)?;
        let (row, delta) = self
            .engine
            .set_stock(&request.warehouse_id, &request.sku, request.physical)
            .await?;
        Ok(Response::new(SetWarehouseStockResponse {
            stock: Some(stock_proto(row)),
            delta,
        }))
    }

    async fn receive_stock(
        &self,
        request: Request<ReceiveStockRequest>,
    ) -> Result<Response<ReceiveStockResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        validate::id(&mut v, "receipt_id", &request.receipt_id);
        validate::warehouse_id(&mut v, "warehouse_id", &request.warehouse_id);
        if request.lines.is_empty() || request.lines.len() > validate::MAX_LINES {
            v.add("lines", format!("must have 1..{} lines", validate::MAX_LINES));
        }
        for (i, line) in request.lines.iter().enumerate() {
            validate::sku(&mut v, &format!("lines[{i}].sku"), &line.sku);
            if !(1..=validate::MAX_RECEIPT_UNITS).contains(&line.quantity) {
                v.add(
                    format!("lines[{i}].quantity"),
                    format!("must be 1..{}", validate::MAX_RECEIPT_UNITS),
                );
            }
        }
        checked(v)?;
        let lines: Vec<(String, i64)> = request.lines.into_iter().map(|l| (l.sku, l.quantity)).collect();
        let (stocks, duplicate) = self
            .engine
            .receive(&request.receipt_id, &request.warehouse_id, &lines)
            .await?;
        Ok(Response::new(ReceiveStockResponse {
            stocks: stocks.into_iter().map(stock_proto).collect(),
            duplicate,
        }))
    }

    async fn record_shrinkage(
        &self,
        request: Request<RecordShrinkageRequest>,
    ) -> Result<Response<RecordShrinkageResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        validate::id(&mut v, "shrinkage_id", &request.shrinkage_id);
        validate::warehouse_id(&mut v, "warehouse_id", &request.warehouse_id);
        validate::sku(&mut v, "sku", &request.sku);
        if !(1..=validate::MAX_PHYSICAL).contains(&request.quantity) {
            v.add("quantity", format!("must be 1..{}", validate::MAX_PHYSICAL));
        }
        match ShrinkageReason::try_from(request.reason) {
            Ok(ShrinkageReason::Unspecified) | Err(_) => {
                v.add("reason", "must be a known reason other than UNSPECIFIED");
            }
            Ok(_) => {}
        }
        holdfast_platform::validate::max_chars(&mut v, "note", &request.note, validate::MAX_NOTE);
        checked(v)?;
        let (row, duplicate) = self
            .engine
            .shrink(&Shrinkage {
                id: request.shrinkage_id,
                warehouse_id: request.warehouse_id,
                sku: request.sku,
                quantity: request.quantity,
                reason: request.reason,
                note: request.note,
            })
            .await?;
        Ok(Response::new(RecordShrinkageResponse {
            stock: Some(stock_proto(row)),
            duplicate,
        }))
    }

    async fn get_warehouse_stock(
        &self,
        request: Request<GetWarehouseStockRequest>,
    ) -> Result<Response<GetWarehouseStockResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        if request.skus.is_empty() || request.skus.len() > validate::MAX_LINES {
            v.add("skus", format!("must name 1..{} SKUs", validate::MAX_LINES));
        }
        for (i, sku) in request.skus.iter().enumerate() {
            validate::sku(&mut v, &format!("skus[{i}]"), sku);
        }
        if !request.warehouse_id.is_empty() {
            validate::warehouse_id(&mut v, "warehouse_id", &request.warehouse_id);
        }
        checked(v)?;
        let warehouse = (!request.warehouse_id.is_empty()).then_some(request.warehouse_id.as_str());
        let rows = self
            .engine
            .store
            .get_stock(&request.skus, warehouse)
            .await
            .map_err(WarehouseError::from)?;
        Ok(Response::new(GetWarehouseStockResponse {
            stocks: rows.into_iter().map(stock_proto).collect(),
        }))
    }

    async fn list_shipments(
        &self,
        request: Request<ListShipmentsRequest>,
    ) -> Result<Response<ListShipmentsResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        for (i, status) in request.statuses.iter().enumerate() {
            match ShipmentStatus::try_from(*status) {
                Ok(ShipmentStatus::Unspecified) | Err(_) => {
                    v.add(
                        format!("statuses[{i}]"),
                        "must be a known status other than UNSPECIFIED",
                    );
                }
                Ok(_) => {}
            }
        }
        let (size, token) = validate::page(&mut v, "page", request.page.as_ref());
        match &request.filter {
            None => {
                v.add("filter", "set order_id or warehouse_id");
            }
            Some(list_shipments_request::Filter::OrderId(order_id)) => {
                validate::id(&mut v, "order_id", order_id);
                if !request.statuses.is_empty() {
                    v.add("statuses", "filters only a warehouse's shipments");
                }
                if token.is_some() {
                    v.add("page.page_token", "an order's shipments come in one page");
                }
            }
            Some(list_shipments_request::Filter::WarehouseId(warehouse_id)) => {
                validate::warehouse_id(&mut v, "warehouse_id", warehouse_id);
            }
        }
        checked(v)?;
        let (shipments, next) = match request.filter {
            Some(list_shipments_request::Filter::OrderId(order_id)) => (
                self.engine
                    .store
                    .list_shipments_by_order(&order_id)
                    .await
                    .map_err(WarehouseError::from)?,
                None,
            ),
            Some(list_shipments_request::Filter::WarehouseId(warehouse_id)) => {
                let page = self
                    .engine
                    .store
                    .list_shipments_by_warehouse(&warehouse_id, &request.statuses, token.as_deref(), size)
                    .await
                    .map_err(|e| cursor_error("page.page_token", e))?;
                (page.shipments, page.next_cursor)
            }
            None => (Vec::new(), None),
        };
        Ok(Response::new(ListShipmentsResponse {
            shipments: shipments.into_iter().map(shipment_proto).collect(),
            page: Some(PageResponse {
                next_page_token: next.unwrap_or_default(),
            }),
        }))
    }

    async fn start_picking(
        &self,
        request: Request<StartPickingRequest>,
    ) -> Result<Response<StartPickingResponse>, Status> {
        let request = request.into_inner();
        shipment_id(&request.shipment_id)?;
        let shipment = self.engine.start_picking(&request.shipment_id).await?;
        Ok(Response::new(StartPickingResponse {
            shipment: Some(shipment_proto(shipment)),
        }))
    }

    async fn mark_shipped(
        &self,
        request: Request<MarkShippedRequest>,
    ) -> Result<Response<MarkShippedResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        validate::id(&mut v, "shipment_id", &request.shipment_id);
        validate::text(&mut v, "carrier", &request.carrier, validate::MAX_CARRIER);
        validate::text(
            &mut v,
            "tracking_number",
            &request.tracking_number,
            validate::MAX_TRACKING,
        );
        checked(v)?;
        let shipment = self
            .engine
            .mark_shipped(&request.shipment_id, &request.carrier, &request.tracking_number)
            .await?;
        Ok(Response::new(MarkShippedResponse {
            shipment: Some(shipment_proto(shipment)),
        }))
    }

    async fn mark_delivered(
        &self,
        request: Request<MarkDeliveredRequest>,
    ) -> Result<Response<MarkDeliveredResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        validate::id(&mut v, "shipment_id", &request.shipment_id);
        if request.delivered_at_unix_ms < 0 {
            v.add("delivered_at_unix_ms", "must not be negative (0 means now)");
        } else if request.delivered_at_unix_ms > now_ms() {
            v.add("delivered_at_unix_ms", "must not be in the future");
        }
        checked(v)?;
        let shipment = self
            .engine
            .mark_delivered(&request.shipment_id, request.delivered_at_unix_ms)
            .await?;
        Ok(Response::new(MarkDeliveredResponse {
            shipment: Some(shipment_proto(shipment)),
        }))
    }

    async fn cancel_order_shipments(
        &self,
        request: Request<CancelOrderShipmentsRequest>,
    ) -> Result<Response<CancelOrderShipmentsResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        validate::id(&mut v, "order_id", &request.order_id);
        if !request.reason.is_empty() {
            validate::text(&mut v, "reason", &request.reason, MAX_CANCEL_REASON);
        }
        checked(v)?;
        let cancelled = self
            .engine
            .cancel_unshipped(&request.order_id, &request.reason)
            .await?;
        Ok(Response::new(CancelOrderShipmentsResponse {
            shipments: cancelled.shipments.into_iter().map(shipment_proto).collect(),
            shipped: cancelled
                .shipped
                .into_iter()
                .map(|l| ShipmentLine {
                    sku: l.sku,
                    quantity: l.quantity,
                })
                .collect(),
            routed: cancelled.routed,
        }))
    }
}

/// Longest cancellation reason, in characters.
const MAX_CANCEL_REASON: usize = 500;
