//! The OrderService RPCs: validation, idempotency, and handing work to the saga engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_platform::status::{FieldViolations, failed_precondition};
use holdfast_proto::cart::v1::cart_owner;
use holdfast_proto::common::v1::PageResponse;
use holdfast_proto::orders::v1::order_service_server::OrderService;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CancelOrderResponse, CheckoutRequest, CheckoutResponse, GetOrderRequest,
    GetOrderResponse, InspectionResult, ListOrdersRequest, ListOrdersResponse, MarkReturnLostRequest,
    MarkReturnLostResponse, Order, OrderLine, OrderReturn, OrderStatus, ReceiveReturnRequest,
    ReceiveReturnResponse, RequestReturnRequest, RequestReturnResponse, checkout_request,
};
use holdfast_proto::warehouse::v1::ShippingSpeed;
use holdfast_store::{IDEMPOTENCY_TTL_MS, IdempotencyRecord, KeyClaim, SagaRecord, StoreError};
use tonic::{Code, Request, Response, Status};

use crate::checkout::{self, SCOPE};
use crate::engine::Engine;
use crate::lifecycle::{self, CancelState, ReturnState};
use crate::order;
use crate::state::{StoredAnswer, fingerprint};
use crate::{OrdersStore, now_ms};

/// Test payment methods the simulated PSP knows (see holdfast.payments.v1).
pub const PAYMENT_METHODS: [&str; 5] = [
    "pm_card_visa",
    "pm_card_declined",
    "pm_card_insufficient_funds",
    "pm_card_timeout",
    "pm_card_flaky",
];
/// Most lines of an explicit checkout.
pub const MAX_LINES: usize = 100;
/// Most units per line.
pub const MAX_QUANTITY: i64 = 999;
const MAX_ID: usize = 128;
const MAX_REASON: usize = 500;
const MAX_NOTE: usize = 1000;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The OrderService implementation.
pub struct Orders<S> {
    engine: Arc<Engine<S>>,
}

impl<S> Orders<S> {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine<S>>) -> Self {
        Self { engine }
    }
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::InvalidArgument(message) => Status::invalid_argument(message),
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        other => Status::unavailable(other.to_string()),
    }
}

fn check_len(v: &mut FieldViolations, field: &str, value: &str, max: usize) {
    if value.is_empty() {
        v.add(field, "must not be empty");
    } else if value.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

fn check_max(v: &mut FieldViolations, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
    }
}

fn check_currency(v: &mut FieldViolations, field: &str, currency: &str) {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        v.add(field, "must be a 3-letter upper-case ISO-4217 code");
    }
}

/// Every field of a checkout, before anything is claimed or held.
pub fn validate_checkout(request: &CheckoutRequest) -> Result<(), Status> {
    let mut v = FieldViolations::new();
    check_len(&mut v, "idempotency_key", &request.idempotency_key, MAX_ID);
    check_len(&mut v, "customer_id", &request.customer_id, MAX_ID);
    match &request.source {
        None => {
            v.add("source", "exactly one of cart or lines is required");
        }
        Some(checkout_request::Source::Cart(owner)) => match &owner.owner {
            None => {
                v.add("cart.owner", "customer_id or session_id is required");
            }
            Some(cart_owner::Owner::CustomerId(id)) => check_len(&mut v, "cart.customer_id", id, MAX_ID),
            Some(cart_owner::Owner::SessionId(id)) => check_len(&mut v, "cart.session_id", id, MAX_ID),
        },
        Some(checkout_request::Source::Lines(lines)) => {
            if lines.lines.is_empty() {
                v.add("lines.lines", "at least one line is required");
            } else if lines.lines.len() > MAX_LINES {
                v.add("lines.lines", format!("at most {MAX_LINES} lines"));
            }
            for (i, line) in lines.lines.iter().enumerate().take(MAX_LINES) {
                holdfast_platform::validate::sku(&mut v, &format!("lines.lines[{i}].sku"), &line.sku);
                if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                    v.add(
                        format!("lines.lines[{i}].quantity"),
                        format!("must be 1..{MAX_QUANTITY}"),
                    );
                }
                if let Some(price) = &line.expected_unit_price {
                    if price.amount_minor < 0 {
                        v.add(
                            format!("lines.lines[{i}].expected_unit_price.amount_minor"),
                            "must not be negative",
                        );
                    }
                    check_currency(
                        &mut v,
                        &format!("lines.lines[{i}].expected_unit_price.currency"),
                        &price.currency,
                    );
                }
            }
        }
    }
    match &request.shipping_address {
        None => {
            v.add("shipping_address", "is required");
        }
        Some(address) => {
            for (field, value) in [
                ("name", &address.name),
                ("line1", &address.line1),
                ("city", &address.city),
                ("postal_code", &address.postal_code),
            ] {
                check_len(&mut v, &format!("shipping_address.{field}"), value, 200);
            }
            check_max(&mut v, "shipping_address.line2", &address.line2, 200);
            check_max(&mut v, "shipping_address.region", &address.region, 200);
            if address.country.len() != 2 || !address.country.bytes().all(|b| b.is_ascii_uppercase()) {
                v.add(
                    "shipping_address.country",
                    "must be an upper-case ISO-3166-1 alpha-2 code",
                );
            }
            match &address.location {
                None => {
                    v.add("shipping_address.location", "is required (routing needs it)");
                }
                Some(point) => {
                    if !(-90.0..=90.0).contains(&point.latitude) {
                        v.add("shipping_address.location.latitude", "must be -90..90");
                    }
                    if !(-180.0..=180.0).contains(&point.longitude) {
                        v.add("shipping_address.location.longitude", "must be -180..180");
                    }
                }
            }
        }
    }
    if request.payment_method.is_empty() {
        v.add("payment_method", "must not be empty");
    } else if !PAYMENT_METHODS.contains(&request.payment_method.as_str()) {
        v.add(
            "payment_method",
            format!("unknown payment method; one of {}", PAYMENT_METHODS.join(", ")),
        );
    }
    if ShippingSpeed::try_from(request.shipping_speed).is_err() {
        v.add("shipping_speed", "unknown shipping speed");
    }
    v.into_result()
}

fn order_id_field(order_id: &str) -> Result<(), Status> {
    let mut v = FieldViolations::new();
    check_len(&mut v, "order_id", order_id, MAX_ID);
    v.into_result()
}

impl<S: OrdersStore> Orders<S> {
    async fn load(&self, order_id: &str) -> Result<(Order, u64), Status> {
        let stored = self
            .engine
            .store
            .get_order(order_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("order {order_id} not found")))?;
        Ok((order::from_stored(&stored)?, stored.version))
    }

    /// Runs (or joins, or waits for) the saga and returns once it finished, or the error
    /// that stopped it. A saga another process runs is polled until it ends or `deadline`.
    async fn run_to_end(&self, saga: SagaRecord, deadline: Instant) -> Result<(), Status> {
        let mut saga = saga;
        loop {
            match self.engine.run(saga.clone()).await {
                Ok(()) => return Ok(()),
                Err((Code::Unavailable, message)) if message.contains("running elsewhere") => {}
                Err((code, message)) => return Err(Status::new(code, message)),
            }
            if Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(
                    "still running elsewhere; retry with the same key or id",
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            saga = self
                .engine
                .store
                .get_saga(&saga.id)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::internal("saga vanished"))?;
            if saga.finished {
                return Ok(());
            }
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.engine.options.wait_for_running
    }

    /// Creates (or finds) a lifecycle saga and runs it to its end.
    async fn run_lifecycle(
        &self,
        id: String,
        kind: &str,
        first_step: &str,
        state: Vec<u8>,
    ) -> Result<SagaRecord, Status> {
        let now = now_ms();
        let saga = self
            .engine
            .store
            .create_saga(SagaRecord {
                id: id.clone(),
                kind: kind.to_string(),
                step: first_step.to_string(),
                state,
                lease_owner: self.engine.owner.clone(),
                lease_until_ms: now + self.engine.options.saga_lease.as_millis() as i64,
                created_at_ms: now,
                ..SagaRecord::default()
            })
            .await
            .map_err(store_status)?;
        self.run_to_end(saga, self.deadline()).await?;
        self.engine
            .store
            .get_saga(&id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::internal("saga vanished"))
    }
}

#[tonic::async_trait]
impl<S: OrdersStore> OrderService for Orders<S> {
    async fn checkout(
        &self,
        request: Request<CheckoutRequest>,
    ) -> Result<Response<CheckoutResponse>, Status> {
        let request = request.into_inner();
        validate_checkout(&request)?;
        let store = &self.engine.store;
        let fingerprint = fingerprint(&request);
        let saga_id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let record = match store
            .claim_key(IdempotencyRecord {
                scope: SCOPE.into(),
                key: request.idempotency_key.clone(),
                fingerprint: fingerprint.clone(),
                resource_id: saga_id,
                response: None,
                created_at_ms: now,
                expires_at_ms: now + IDEMPOTENCY_TTL_MS,
            })
            .await
            .map_err(store_status)?
        {
            KeyClaim::Claimed(record) | KeyClaim::Existing(record) => record,
        };
        if record.fingerprint != fingerprint {
            return Err(failed_precondition(
                "IDEMPOTENCY_KEY_REUSED",
                &format!("idempotency_key {}", request.idempotency_key),
                "this idempotency_key was used with a different request; use a new key",
            ));
        }
        if let Some(answer) = &record.response {
            return StoredAnswer::decode(answer)?.into_result().map(Response::new);
        }
        let saga = match store.get_saga(&record.resource_id).await.map_err(store_status)? {
            Some(saga) => saga,
            None => {
                let state = checkout::initial_state(&record.resource_id, &request);
                store
                    .create_saga(SagaRecord {
                        id: record.resource_id.clone(),
                        kind: checkout::KIND.into(),
                        step: crate::state::Step::Validate.as_str().into(),
                        state: state.encode(),
                        lease_owner: self.engine.owner.clone(),
                        lease_until_ms: now + self.engine.options.saga_lease.as_millis() as i64,
                        created_at_ms: now,
                        ..SagaRecord::default()
                    })
                    .await
                    .map_err(store_status)?
            }
        };
        self.run_to_end(saga, self.deadline()).await?;
        let record = store
            .get_key(SCOPE, &request.idempotency_key)
            .await
            .map_err(store_status)?
            .and_then(|r| r.response)
            .ok_or_else(|| Status::internal("checkout finished without an answer"))?;
        StoredAnswer::decode(&record)?.into_result().map(Response::new)
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let request = request.into_inner();
        order_id_field(&request.order_id)?;
        let (order, _) = self.load(&request.order_id).await?;
        Ok(Response::new(GetOrderResponse { order: Some(order) }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        check_len(&mut v, "customer_id", &request.customer_id, MAX_ID);
        for (i, status) in request.statuses.iter().enumerate() {
            if !matches!(OrderStatus::try_from(*status), Ok(s) if s != OrderStatus::Unspecified) {
                v.add(format!("statuses[{i}]"), "unknown order status");
            }
        }
        let page = request.page.unwrap_or_default();
        if page.page_size > MAX_PAGE {
            v.add("page.page_size", format!("must be at most {MAX_PAGE}"));
        }
        v.into_result()?;
        let limit = if page.page_size == 0 {
            DEFAULT_PAGE
        } else {
            page.page_size
        };
        let cursor = (!page.page_token.is_empty()).then_some(page.page_token.as_str());
        let listed = self
            .engine
            .store
            .list_orders_by_customer(&request.customer_id, &request.statuses, cursor, limit)
            .await
            .map_err(|e| match e {
                StoreError::InvalidArgument(why) => {
                    let mut v = FieldViolations::new();
                    v.add("page.page_token", why);
                    v.into_result()
                        .err()
                        .unwrap_or_else(|| Status::invalid_argument("bad page token"))
                }
                other => store_status(other),
            })?;
        let orders = listed
            .orders
            .iter()
            .map(order::from_stored)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(ListOrdersResponse {
            orders,
            page: Some(PageResponse {
                next_page_token: listed.next_cursor.unwrap_or_default(),
            }),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        check_len(&mut v, "order_id", &request.order_id, MAX_ID);
        check_max(&mut v, "reason", &request.reason, MAX_REASON);
        v.into_result()?;
        let (order, _) = self.load(&request.order_id).await?;
        let saga_id = lifecycle::cancel_saga_id(&order.id);
        let existing = self.engine.store.get_saga(&saga_id).await.map_err(store_status)?;
        if existing.is_none() {
            if order::status(&order) == OrderStatus::Cancelled {
                return Ok(Response::new(CancelOrderResponse { order: Some(order) }));
            }
            if !lifecycle::cancellable(&order) {
                return Err(failed_precondition(
                    "ORDER_STATUS",
                    &format!("order {}", order.id),
                    format!(
                        "order is {} and can no longer be cancelled",
                        order::status(&order).as_str_name()
                    ),
                ));
            }
            // The checkout that made the order must have ended (it may still be capturing).
            if let Some(checkout_id) = order.id.strip_prefix("ord_")
                && let Some(checkout) = self
                    .engine
                    .store
                    .get_saga(checkout_id)
                    .await
                    .map_err(store_status)?
                && !checkout.finished
            {
                return Err(Status::unavailable(
                    "the order's checkout is still finishing; retry in a moment",
                ));
            }
        }
        let state = CancelState {
            order_id: order.id.clone(),
            reason: if request.reason.is_empty() {
                "cancelled by request".into()
            } else {
                request.reason.clone()
            },
            refused: None,
        };
        let saga = self
            .run_lifecycle(
                saga_id,
                lifecycle::CANCEL_KIND,
                "mark",
                serde_json::to_vec(&state).unwrap_or_default(),
            )
            .await?;
        let ended: CancelState = serde_json::from_slice(&saga.state)
            .map_err(|e| Status::internal(format!("corrupt cancel saga: {e}")))?;
        if let Some(why) = ended.refused {
            return Err(failed_precondition(
                "ORDER_STATUS",
                &format!("order {}", order.id),
                why,
            ));
        }
        let (order, _) = self.load(&order.id).await?;
        Ok(Response::new(CancelOrderResponse { order: Some(order) }))
    }

    async fn request_return(
        &self,
        request: Request<RequestReturnRequest>,
    ) -> Result<Response<RequestReturnResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        check_len(&mut v, "order_id", &request.order_id, MAX_ID);
        check_max(&mut v, "reason", &request.reason, MAX_REASON);
        for (i, line) in request.lines.iter().enumerate() {
            holdfast_platform::validate::sku(&mut v, &format!("lines[{i}].sku"), &line.sku);
            if line.quantity < 1 {
                v.add(format!("lines[{i}].quantity"), "must be at least 1");
            }
        }
        v.into_result()?;
        let (order, _) = self.load(&request.order_id).await?;
        // The lines to return, priced as sold; empty means everything.
        let mut lines: Vec<OrderLine> = Vec::new();
        if request.lines.is_empty() {
            lines = order.lines.clone();
        } else {
            for wanted in &request.lines {
                let Some(sold) = order.lines.iter().find(|l| l.sku == wanted.sku) else {
                    return Err(failed_precondition(
                        "RETURN_LINE",
                        &wanted.sku,
                        format!("SKU {} is not in order {}", wanted.sku, order.id),
                    ));
                };
                let already = lines
                    .iter()
                    .find(|l| l.sku == wanted.sku)
                    .map_or(0, |l| l.quantity);
                let quantity = already + wanted.quantity;
                if quantity > sold.quantity {
                    return Err(failed_precondition(
                        "RETURN_LINE",
                        &wanted.sku,
                        format!("only {} units of {} were ordered", sold.quantity, wanted.sku),
                    ));
                }
                let unit = sold.unit_price.clone().unwrap_or_default();
                let line = order::line(
                    &sold.sku,
                    quantity,
                    unit.amount_minor,
                    &unit.currency,
                    &sold.title,
                );
                lines.retain(|l| l.sku != wanted.sku);
                lines.push(line);
            }
        }
        let same_lines = |ret: &OrderReturn| {
            let key = |ls: &[OrderLine]| {
                let mut k: Vec<(String, i64)> = ls.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
                k.sort();
                k
            };
            key(&ret.lines) == key(&lines)
        };
        let refused = std::sync::Mutex::new(None);
        let reason = request.reason.clone();
        let updated = checkout::change_order(
            &self.engine,
            &order.id,
            |_| Vec::new(),
            |current| {
                let mut refused = refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *refused = None;
                match order::status(current) {
                    OrderStatus::Delivered => {
                        let now = now_ms();
                        current.order_return = Some(OrderReturn {
                            return_id: format!("rma_{}", uuid::Uuid::now_v7()),
                            lines: lines.clone(),
                            reason: reason.clone(),
                            requested_at_unix_ms: now,
                            ..OrderReturn::default()
                        });
                        order::set_status(current, OrderStatus::ReturnRequested, now, &reason);
                        true
                    }
                    OrderStatus::ReturnRequested if current.order_return.as_ref().is_some_and(same_lines) => {
                        false
                    }
                    other => {
                        *refused = Some(format!(
                            "order is {} ; only DELIVERED orders can be returned",
                            other.as_str_name()
                        ));
                        false
                    }
                }
            },
        )
        .await?;
        if let Some(why) = refused
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(failed_precondition(
                "ORDER_STATUS",
                &format!("order {}", order.id),
                why,
            ));
        }
        Ok(Response::new(RequestReturnResponse { order: Some(updated) }))
    }

    async fn receive_return(
        &self,
        request: Request<ReceiveReturnRequest>,
    ) -> Result<Response<ReceiveReturnResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        check_len(&mut v, "order_id", &request.order_id, MAX_ID);
        check_len(&mut v, "return_id", &request.return_id, MAX_ID);
        check_max(&mut v, "inspection_note", &request.inspection_note, MAX_NOTE);
        check_max(&mut v, "warehouse_id", &request.warehouse_id, MAX_ID);
        let inspection =
            InspectionResult::try_from(request.inspection).unwrap_or(InspectionResult::Unspecified);
        if inspection == InspectionResult::Unspecified {
            v.add("inspection", "must be PASSED or FAILED");
        }
        v.into_result()?;
        let (order, _) = self.load(&request.order_id).await?;
        let Some(ret) = order.order_return.clone() else {
            return Err(failed_precondition(
                "ORDER_STATUS",
                &format!("order {}", order.id),
                "no return was requested for this order",
            ));
        };
        if ret.return_id != request.return_id {
            return Err(failed_precondition(
                "RETURN_ID",
                &request.return_id,
                format!("return id does not match order {}'s return", order.id),
            ));
        }
        let status = order::status(&order);
        let recorded = InspectionResult::try_from(ret.inspection).unwrap_or(InspectionResult::Unspecified);
        let open = matches!(status, OrderStatus::ReturnRequested | OrderStatus::ReturnLost);
        if !open && recorded != inspection {
            return Err(failed_precondition(
                "ORDER_STATUS",
                &format!("order {}", order.id),
                format!(
                    "order is {}; the return was already inspected differently",
                    status.as_str_name()
                ),
            ));
        }
        match inspection {
            InspectionResult::Failed => {
                let note = request.inspection_note.clone();
                let updated = checkout::change_order(
                    &self.engine,
                    &order.id,
                    |_| Vec::new(),
                    |current| {
                        if !matches!(
                            order::status(current),
                            OrderStatus::ReturnRequested | OrderStatus::ReturnLost
                        ) {
                            return false;
                        }
                        let now = now_ms();
                        if let Some(ret) = current.order_return.as_mut() {
                            ret.inspection = InspectionResult::Failed as i32;
                            ret.inspection_note = note.clone();
                            ret.received_at_unix_ms = now;
                        }
                        order::set_status(
                            current,
                            OrderStatus::ReturnRejected,
                            now,
                            "returned parcel failed inspection",
                        );
                        true
                    },
                )
                .await?;
                if order::status(&updated) != OrderStatus::ReturnRejected {
                    return Err(failed_precondition(
                        "ORDER_STATUS",
                        &format!("order {}", order.id),
                        format!("order is {}", order::status(&updated).as_str_name()),
                    ));
                }
                Ok(Response::new(ReceiveReturnResponse { order: Some(updated) }))
            }
            _ => {
                let state = ReturnState {
                    order_id: order.id.clone(),
                    return_id: ret.return_id.clone(),
                    inspection_note: request.inspection_note.clone(),
                    warehouse_id: request.warehouse_id.clone(),
                    refund_id: None,
                    refund_minor: 0,
                };
                let outcome = self
                    .run_lifecycle(
                        lifecycle::return_saga_id(&order.id),
                        lifecycle::RETURN_KIND,
                        "receive",
                        serde_json::to_vec(&state).unwrap_or_default(),
                    )
                    .await;
                let (order, _) = self.load(&order.id).await?;
                match outcome {
                    Ok(_) => Ok(Response::new(ReceiveReturnResponse { order: Some(order) })),
                    // Received but the refund is being retried: RETURN_RECEIVED, as the proto says.
                    Err(_) if order::status(&order) == OrderStatus::ReturnReceived => {
                        Ok(Response::new(ReceiveReturnResponse { order: Some(order) }))
                    }
                    Err(status) => Err(status),
                }
            }
        }
    }

    async fn mark_return_lost(
        &self,
        request: Request<MarkReturnLostRequest>,
    ) -> Result<Response<MarkReturnLostResponse>, Status> {
        let request = request.into_inner();
        let mut v = FieldViolations::new();
        check_len(&mut v, "order_id", &request.order_id, MAX_ID);
        check_max(&mut v, "reason", &request.reason, MAX_REASON);
        v.into_result()?;
        let (order, _) = self.load(&request.order_id).await?;
        let reason = request.reason.clone();
        let updated = checkout::change_order(
            &self.engine,
            &order.id,
            |_| Vec::new(),
            |current| {
                if order::status(current) != OrderStatus::ReturnRequested {
                    return false;
                }
                order::set_status(current, OrderStatus::ReturnLost, now_ms(), &reason);
                true
            },
        )
        .await?;
        if order::status(&updated) != OrderStatus::ReturnLost {
            return Err(failed_precondition(
                "ORDER_STATUS",
                &format!("order {}", order.id),
                format!(
                    "order is {}; only RETURN_REQUESTED returns can be marked lost",
                    order::status(&updated).as_str_name()
                ),
            ));
        }
        Ok(Response::new(MarkReturnLostResponse { order: Some(updated) }))
    }
}
