//! The checkout saga's steps (the table in ARCHITECTURE.md), one function each.
//!
//! Every step reads the state, does its (idempotent) side effect, and returns the next
//! step. Before the pivot (commit) a business refusal goes to `compensate`, which undoes
//! whatever was done; after it, failures only retry forward. Stable ids make repeats
//! harmless: the reservation id and order id derive from the saga id, PSP keys from the
//! saga id and the action.

use std::collections::HashMap;

use holdfast_proto::cart::v1::{ClearCartRequest, GetCartRequest, cart_owner};
use holdfast_proto::catalog::v1::BatchGetProductsRequest;
use holdfast_proto::common::v1::Money;
use holdfast_proto::events::v1::{
    DispatchRequested, FulfillmentEvent, OrderConfirmed, OrderEvent, OrderLine as EventLine,
    fulfillment_event, order_event,
};
use holdfast_proto::inventory::v1::{
    CommitRequest, ExtendRequest, ReleaseRequest, ReservationStatus, ReserveLine, ReserveRequest, Shortage,
};
use holdfast_proto::orders::v1::{
    CheckoutOutcome, CheckoutResponse, Order, OrderStatus, RepricedLine as ProtoRepriced, checkout_request,
};
use holdfast_proto::payments::v1::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, PaymentStatus, VoidRequest, get_payment_request,
};
use holdfast_store::SagaRecord;
use prost::Message;
use tonic::{Code, Status};

use crate::engine::{Engine, StepResult, transient};
use crate::order::{self, money};
use crate::risk;
use crate::state::{CheckoutState, Outcome, PricedLine, RepricedLine, ShortLine, Step, StoredAnswer};
use crate::{OrdersStore, now_ms};

/// The saga kind of checkouts.
pub const KIND: &str = "checkout";
/// The idempotency scope of checkout keys.
pub const SCOPE: &str = "checkout";
/// Topic of order events.
pub const ORDERS_TOPIC: &str = "holdfast.orders.v1";
/// Topic of fulfillment dispatch.
pub const FULFILLMENT_TOPIC: &str = "holdfast.fulfillment.v1";

/// The first state of a checkout saga `saga_id` serving `request`. Everything derived from
/// the saga id, so two processes creating it at once create the same saga.
pub fn initial_state(saga_id: &str, request: &holdfast_proto::orders::v1::CheckoutRequest) -> CheckoutState {
    CheckoutState {
        key: request.idempotency_key.clone(),
        request: request.encode_to_vec(),
        order_id: format!("ord_{saga_id}"),
        reservation_id: format!("chk_{saga_id}"),
        started_at_ms: now_ms(),
        lines: Vec::new(),
        currency: String::new(),
        total_minor: 0,
        cart_version: None,
        reserved: false,
        manual_review: false,
        payment_id: None,
        order_created: false,
        committed: false,
        outcome: None,
    }
}

/// The PSP idempotency key of `action` for this checkout: derived from the checkout (its
/// saga, one per checkout key), so every retry of the action reuses it.
fn psp_key(state: &CheckoutState, action: &str) -> String {
    psp_key_for(&state.key, action)
}

/// `chk_<sha-1 of the checkout key>:<action>`: keyed by the checkout key itself (not the
/// saga), so even a saga the store lost (an OS crash under the embedded SQLite) cannot
/// charge twice when the client retries its key: the PSP answers the first authorization.
pub fn psp_key_for(checkout_key: &str, action: &str) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(checkout_key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("chk_{hex}:{action}")
}

/// Runs the saga's current step.
pub async fn step<S: OrdersStore>(engine: &Engine<S>, saga: &SagaRecord) -> Result<StepResult, Status> {
    let mut state = CheckoutState::decode(&saga.state)?;
    let step = Step::parse(&saga.step)
        .ok_or_else(|| Status::internal(format!("unknown checkout step {:?}", saga.step)))?;
    // A checkout stuck before the pivot for longer than the abandon window (an outage the
    // client gave up on) is compensated rather than charged long after.
    if step.before_pivot()
        && step != Step::Validate
        && state.outcome.is_none()
        && now_ms() - state.started_at_ms > engine.options.abandon_after.as_millis() as i64
    {
        state.outcome = Some(Outcome::Refused {
            code: Code::Aborted as i32,
            message: "checkout abandoned after an outage; nothing was charged; retry with a new key".into(),
        });
        return Ok(next(Step::Compensate, &state, Vec::new()));
    }
    let to = match step {
        Step::Validate => validate(engine, &mut state).await?,
        Step::Reserve => reserve(engine, &mut state).await?,
        Step::Screen => {
            let request = state.request()?;
            match risk::screen(engine, &request.customer_id, state.total_minor).await? {
                Some(reason) => {
                    tracing::info!(order = %state.order_id, %reason, "checkout held for manual review");
                    state.manual_review = true;
                    Step::CreateOrder
                }
                None => Step::Authorize,
            }
        }
        Step::Authorize => authorize(engine, &mut state).await?,
        Step::CreateOrder => {
            create_order(engine, &state).await?;
            state.order_created = true;
            Step::Commit
        }
        Step::Commit => commit(engine, &mut state).await?,
        Step::Capture => capture(engine, &mut state).await?,
        Step::Dispatch => {
            dispatch(engine, &state).await?;
            Step::Notify
        }
        Step::Notify => {
            notify(engine, &state).await;
            if state.outcome.is_none() {
                state.outcome = Some(if state.manual_review {
                    Outcome::ManualReview
                } else {
                    Outcome::Placed
                });
            }
            Step::Finish
        }
        Step::Compensate => {
            compensate(engine, &mut state).await?;
            Step::Finish
        }
        Step::Finish => {
            finish(engine, &state).await?;
            Step::Done
        }
        Step::Done => return Err(Status::internal("a finished checkout was asked to run")),
    };
    Ok(next(to, &state, Vec::new()))
}

fn next(step: Step, state: &CheckoutState, outbox: Vec<holdfast_store::OutboxMessage>) -> StepResult {
    StepResult {
        next: step.as_str(),
        state: state.encode(),
        finished: step == Step::Done,
        outbox,
    }
}

/// Ends the checkout with `outcome` and nothing to undo.
fn refuse(state: &mut CheckoutState, code: Code, message: impl Into<String>) -> Step {
    state.outcome = Some(Outcome::Refused {
        code: code as i32,
        message: message.into(),
    });
    Step::Finish
}

/// Validate: the lines (from the cart or the request), re-priced from the catalog.
async fn validate<S: OrdersStore>(engine: &Engine<S>, state: &mut CheckoutState) -> Result<Step, Status> {
    let request = state.request()?;
    // (sku, quantity, expected price), first-seen order, duplicates summed.
    let mut wanted: Vec<(String, i64, Option<Money>)> = Vec::new();
    let mut push = |sku: &str, quantity: i64, expected: Option<Money>| {
        if let Some(line) = wanted.iter_mut().find(|(s, _, _)| s == sku) {
            line.1 = line.1.saturating_add(quantity);
            if line.2.is_none() {
                line.2 = expected;
            }
        } else {
            wanted.push((sku.to_string(), quantity, expected));
        }
    };
    match &request.source {
        Some(checkout_request::Source::Cart(owner)) => {
            if let Some(cart_owner::Owner::CustomerId(id)) = &owner.owner
                && id != &request.customer_id
            {
                return Ok(refuse(
                    state,
                    Code::FailedPrecondition,
                    "the cart belongs to another customer",
                ));
            }
            let cart = match engine
                .clients
                .cart
                .clone()
                .get_cart(engine.clients.request(GetCartRequest {
                    owner: Some(owner.clone()),
                }))
                .await
            {
                Ok(response) => response.into_inner().cart.unwrap_or_default(),
                Err(status) if transient(&status) => return Err(status),
                Err(status) => return Ok(refuse(state, Code::FailedPrecondition, status.message())),
            };
            if cart.lines.is_empty() {
                return Ok(refuse(state, Code::FailedPrecondition, "the cart is empty"));
            }
            state.cart_version = Some(cart.version);
            for line in &cart.lines {
                push(&line.sku, line.quantity, line.snapshot_unit_price.clone());
            }
        }
        Some(checkout_request::Source::Lines(lines)) => {
            for line in &lines.lines {
                push(&line.sku, line.quantity, line.expected_unit_price.clone());
            }
        }
        None => {
            return Ok(refuse(
                state,
                Code::InvalidArgument,
                "source: a cart or lines is required",
            ));
        }
    }
    let skus: Vec<String> = wanted.iter().map(|(sku, _, _)| sku.clone()).collect();
    let products = match engine
        .clients
        .catalog
        .clone()
        .batch_get_products(engine.clients.request(BatchGetProductsRequest { skus }))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) if transient(&status) => return Err(status),
        Err(status) => return Ok(refuse(state, Code::FailedPrecondition, status.message())),
    };
    if !products.missing_skus.is_empty() {
        return Ok(refuse(
            state,
            Code::FailedPrecondition,
            format!("unknown SKU: {}", products.missing_skus.join(", ")),
        ));
    }
    let by_sku: HashMap<&str, _> = products.products.iter().map(|p| (p.sku.as_str(), p)).collect();
    let mut lines = Vec::with_capacity(wanted.len());
    let mut repriced = Vec::new();
    let mut currency: Option<String> = None;
    let mut total: i64 = 0;
    for (sku, quantity, expected) in &wanted {
        let Some(product) = by_sku.get(sku.as_str()) else {
            return Ok(refuse(
                state,
                Code::FailedPrecondition,
                format!("unknown SKU: {sku}"),
            ));
        };
        if !product.active {
            return Ok(refuse(
                state,
                Code::FailedPrecondition,
                format!("SKU {sku} is not for sale"),
            ));
        }
        let price = product.price.clone().unwrap_or_default();
        match &currency {
            None => currency = Some(price.currency.clone()),
            Some(c) if c != &price.currency => {
                return Ok(refuse(
                    state,
                    Code::FailedPrecondition,
                    format!(
                        "lines are priced in different currencies ({c} and {})",
                        price.currency
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(expected) = expected
            && (expected.amount_minor != price.amount_minor || expected.currency != price.currency)
        {
            repriced.push(RepricedLine {
                sku: sku.clone(),
                expected_minor: expected.amount_minor,
                expected_currency: expected.currency.clone(),
                current_minor: price.amount_minor,
                current_currency: price.currency.clone(),
            });
        }
        let Some(line_total) = price.amount_minor.checked_mul(*quantity) else {
            return Ok(refuse(
                state,
                Code::FailedPrecondition,
                "order total is too large",
            ));
        };
        let Some(sum) = total.checked_add(line_total) else {
            return Ok(refuse(
                state,
                Code::FailedPrecondition,
                "order total is too large",
            ));
        };
        total = sum;
        lines.push(PricedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price_minor: price.amount_minor,
            title: product.title.clone(),
        });
    }
    if !repriced.is_empty() && !request.accept_price_changes {
        state.outcome = Some(Outcome::PriceChanged { lines: repriced });
        return Ok(Step::Finish);
    }
    state.lines = lines;
    state.currency = currency.unwrap_or_default();
    state.total_minor = total;
    Ok(Step::Reserve)
}

/// Reserve: a TTL hold on every line, all or nothing.
async fn reserve<S: OrdersStore>(engine: &Engine<S>, state: &mut CheckoutState) -> Result<Step, Status> {
    let request = ReserveRequest {
        reservation_id: state.reservation_id.clone(),
        lines: state
            .lines
            .iter()
            .map(|line| ReserveLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
            })
            .collect(),
        ttl_seconds: engine.options.hold_ttl.as_secs().max(1) as u32,
    };
    let response = match engine
        .clients
        .inventory
        .clone()
        .reserve(engine.clients.request(request))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) if transient(&status) => return Err(status),
        Err(status) => return Ok(refuse(state, Code::FailedPrecondition, status.message())),
    };
    if response.status == ReservationStatus::Reserved as i32 {
        state.reserved = true;
        return Ok(Step::Screen);
    }
    state.outcome = Some(Outcome::OutOfStock {
        shortages: response
            .shortages
            .iter()
            .map(|s| ShortLine {
                sku: s.sku.clone(),
                requested: s.requested,
                available: s.available,
            })
            .collect(),
    });
    Ok(Step::Finish)
}

/// Authorize: extend the hold to cover the payment, then authorize with a key derived from
/// the checkout. A timeout is an unknown outcome: look it up, and give up on it (void).
async fn authorize<S: OrdersStore>(engine: &Engine<S>, state: &mut CheckoutState) -> Result<Step, Status> {
    let request = state.request()?;
    match engine
        .clients
        .inventory
        .clone()
        .extend(engine.clients.request(ExtendRequest {
            reservation_id: state.reservation_id.clone(),
            ttl_seconds: engine.options.hold_ttl.as_secs().max(1) as u32,
        }))
        .await
    {
        Ok(_) => {}
        Err(status) if transient(&status) => return Err(status),
        Err(_) => {
            // The hold lapsed (or was released): nothing is held any more.
            state.reserved = false;
            state.outcome = Some(hold_lapsed(state));
            return Ok(Step::Compensate);
        }
    }
    let authorize = AuthorizeRequest {
        idempotency_key: psp_key(state, "authorize"),
        amount: Some(money(state.total_minor, &state.currency)),
        payment_method: request.payment_method.clone(),
        customer_id: request.customer_id.clone(),
        order_reference: state.order_id.clone(),
    };
    let mut payments = engine.clients.payments.clone();
    let mut last_error = None;
    for attempt in 0..engine.options.payment_attempts {
        match payments
            .authorize(engine.clients.payment_request(authorize.clone()))
            .await
        {
            Ok(response) => {
                let response = response.into_inner();
                if response.status == PaymentStatus::Authorized as i32 {
                    state.payment_id = Some(response.payment_id);
                    return Ok(Step::CreateOrder);
                }
                state.outcome = Some(Outcome::Declined {
                    decline_code: response.decline_code,
                });
                return Ok(Step::Compensate);
            }
            // Our deadline passed (tonic's client reports its own deadline as CANCELLED
            // "Timeout expired"): the outcome is unknown. Compensation looks the key up
            // and voids whatever the PSP recorded.
            Err(status) if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                state.outcome = Some(Outcome::Declined {
                    decline_code: "processor_timeout".into(),
                });
                return Ok(Step::Compensate);
            }
            Err(status) if transient(&status) => {
                last_error = Some(status);
                tokio::time::sleep(engine.options.retry_after / 4 * (attempt + 1)).await;
            }
            Err(status) => {
                state.outcome = Some(Outcome::Refused {
                    code: Code::FailedPrecondition as i32,
                    message: format!("payment refused: {}", status.message()),
                });
                return Ok(Step::Compensate);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Status::unavailable("payment provider unavailable")))
}

fn hold_lapsed(state: &CheckoutState) -> Outcome {
    Outcome::OutOfStock {
        shortages: state
            .lines
            .iter()
            .map(|line| ShortLine {
                sku: line.sku.clone(),
                requested: line.quantity,
                available: 0,
            })
            .collect(),
    }
}

/// The order as checkout creates it.
fn new_order(state: &CheckoutState, request: &holdfast_proto::orders::v1::CheckoutRequest) -> Order {
    let now = now_ms();
    let mut order = Order {
        id: state.order_id.clone(),
        customer_id: request.customer_id.clone(),
        lines: state
            .lines
            .iter()
            .map(|l| order::line(&l.sku, l.quantity, l.unit_price_minor, &state.currency, &l.title))
            .collect(),
        total: Some(money(state.total_minor, &state.currency)),
        shipping_address: request.shipping_address.clone(),
        payment_id: state.payment_id.clone().unwrap_or_default(),
        reservation_id: state.reservation_id.clone(),
        created_at_unix_ms: now,
        shipping_speed: request.shipping_speed,
        idempotency_key: state.key.clone(),
        ..Order::default()
    };
    if state.manual_review {
        order::set_status(
            &mut order,
            OrderStatus::ManualReview,
            now,
            "held by risk screening",
        );
    } else {
        order::set_status(&mut order, OrderStatus::Placed, now, "");
    }
    order
}

async fn create_order<S: OrdersStore>(engine: &Engine<S>, state: &CheckoutState) -> Result<(), Status> {
    let request = state.request()?;
    let order = new_order(state, &request);
    engine
        .store
        .create_order(order::to_stored(&order, 1))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(())
}

/// Commit: the pivot.
async fn commit<S: OrdersStore>(engine: &Engine<S>, state: &mut CheckoutState) -> Result<Step, Status> {
    match engine
        .clients
        .inventory
        .clone()
        .commit(engine.clients.request(CommitRequest {
            reservation_id: state.reservation_id.clone(),
        }))
        .await
    {
        Ok(_) => {
            state.committed = true;
            Ok(if state.manual_review {
                Step::Notify
            } else {
                Step::Capture
            })
        }
        Err(status) if transient(&status) => Err(status),
        Err(_) => {
            // The hold lapsed before the pivot: undo the order and the authorization.
            state.reserved = false;
            state.outcome = Some(hold_lapsed(state));
            Ok(Step::Compensate)
        }
    }
}

/// Loads the order and applies `change` if `applies` says so, retrying on version races.
pub async fn change_order<S: OrdersStore>(
    engine: &Engine<S>,
    order_id: &str,
    outbox: impl Fn(&Order) -> Vec<holdfast_store::OutboxMessage>,
    change: impl Fn(&mut Order) -> bool,
) -> Result<Order, Status> {
    for _ in 0..8 {
        let stored = engine
            .store
            .get_order(order_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("order {order_id} not found")))?;
        let mut current = order::from_stored(&stored)?;
        if !change(&mut current) {
            return Ok(current);
        }
        let events = outbox(&current);
        match engine
            .store
            .update_order(order::to_stored(&current, stored.version), stored.version, events)
            .await
        {
            Ok(_) => {
                engine.outbox_written.notify_one();
                return Ok(current);
            }
            Err(holdfast_store::StoreError::VersionConflict { .. }) => continue,
            Err(e) => return Err(Status::unavailable(e.to_string())),
        }
    }
    Err(Status::aborted("the order kept changing; retry"))
}

/// Capture: after the pivot, only forward. A refused capture (the authorization is gone)
/// leaves a committed order without money: it goes to manual review, named.
async fn capture<S: OrdersStore>(engine: &Engine<S>, state: &mut CheckoutState) -> Result<Step, Status> {
    let payment_id = state.payment_id.clone().unwrap_or_default();
    match engine
        .clients
        .payments
        .clone()
        .capture(engine.clients.payment_request(CaptureRequest {
            idempotency_key: psp_key(state, "capture"),
            payment_id,
            amount: None,
        }))
        .await
    {
        Ok(_) => {
            change_order(
                engine,
                &state.order_id,
                |_| Vec::new(),
                |order| {
                    if order::status(order) == OrderStatus::Placed {
                        order::set_status(order, OrderStatus::Paid, now_ms(), "payment captured");
                        true
                    } else {
                        false
                    }
                },
            )
            .await?;
            Ok(Step::Dispatch)
        }
        Err(status) if transient(&status) => Err(status),
        Err(status) => {
            let reason = format!("capture refused: {}", status.message());
            change_order(
                engine,
                &state.order_id,
                |_| Vec::new(),
                |order| {
                    if order::status(order) == OrderStatus::Placed {
                        order::set_status(order, OrderStatus::ManualReview, now_ms(), &reason);
                        true
                    } else {
                        false
                    }
                },
            )
            .await?;
            state.manual_review = true;
            state.outcome = Some(Outcome::ManualReview);
            Ok(Step::Notify)
        }
    }
}

/// Dispatch: FULFILLING, with order.confirmed and fulfillment.dispatch_requested in the
/// same atomic write.
async fn dispatch<S: OrdersStore>(engine: &Engine<S>, state: &CheckoutState) -> Result<(), Status> {
    let region = engine.region.clone();
    change_order(
        engine,
        &state.order_id,
        |order| confirmed_events(engine, order, &region),
        |order| {
            if order::status(order) == OrderStatus::Paid {
                order::set_status(
                    order,
                    OrderStatus::Fulfilling,
                    now_ms(),
                    "dispatched to fulfillment",
                );
                true
            } else {
                false
            }
        },
    )
    .await?;
    Ok(())
}

fn event_lines(order: &Order) -> Vec<EventLine> {
    order
        .lines
        .iter()
        .map(|l| EventLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price.clone(),
        })
        .collect()
}

fn confirmed_events<S: OrdersStore>(
    engine: &Engine<S>,
    order: &Order,
    region: &str,
) -> Vec<holdfast_store::OutboxMessage> {
    let now = now_ms();
    let mut confirmed = engine.event(ORDERS_TOPIC, &order.id, "order.confirmed", Vec::new());
    confirmed.payload = OrderEvent {
        event_id: confirmed.id.clone(),
        event: Some(order_event::Event::Confirmed(OrderConfirmed {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            lines: event_lines(order),
            ship_to: order.shipping_address.clone(),
            total: order.total.clone(),
            shipping_speed: order.shipping_speed,
            payment_id: order.payment_id.clone(),
            reservation_id: order.reservation_id.clone(),
            occurred_at_unix_ms: now,
        })),
    }
    .encode_to_vec();
    let mut dispatch = engine.event(
        FULFILLMENT_TOPIC,
        &order.id,
        "fulfillment.dispatch_requested",
        Vec::new(),
    );
    dispatch.payload = FulfillmentEvent {
        event_id: dispatch.id.clone(),
        event: Some(fulfillment_event::Event::DispatchRequested(DispatchRequested {
            order_id: order.id.clone(),
            lines: event_lines(order),
            ship_to: order.shipping_address.clone(),
            shipping_speed: order.shipping_speed,
            region: region.to_string(),
            occurred_at_unix_ms: now,
        })),
    }
    .encode_to_vec();
    vec![confirmed, dispatch]
}

/// Notify: clear exactly the cart that was checked out (a cart changed since is kept).
async fn notify<S: OrdersStore>(engine: &Engine<S>, state: &CheckoutState) {
    let Ok(request) = state.request() else { return };
    let (Some(checkout_request::Source::Cart(owner)), Some(version)) = (&request.source, state.cart_version)
    else {
        return;
    };
    if let Err(status) = engine
        .clients
        .cart
        .clone()
        .clear_cart(engine.clients.request(ClearCartRequest {
            owner: Some(owner.clone()),
            expected_version: version,
        }))
        .await
    {
        tracing::info!(order = %state.order_id, code = ?status.code(), "cart not cleared: {}", status.message());
    }
}

/// Compensate: cancel the order, void the authorization (looked up by key if its answer
/// never came), release the hold. Each part is idempotent, so a crash here repeats them.
async fn compensate<S: OrdersStore>(engine: &Engine<S>, state: &mut CheckoutState) -> Result<(), Status> {
    if state.order_created {
        let reason = match &state.outcome {
            Some(Outcome::OutOfStock { .. }) => "the stock hold lapsed before commit".to_string(),
            Some(Outcome::Declined { decline_code }) => format!("payment failed: {decline_code}"),
            _ => "checkout compensated".to_string(),
        };
        change_order(
            engine,
            &state.order_id,
            |_| Vec::new(),
            |order| {
                if order::status(order) == OrderStatus::Cancelled {
                    false
                } else {
                    order::set_status(order, OrderStatus::Cancelled, now_ms(), &reason);
                    true
                }
            },
        )
        .await?;
    }
    let mut payments = engine.clients.payments.clone();
    if state.payment_id.is_none() && state.reserved {
        match payments
            .get_payment(engine.clients.request(GetPaymentRequest {
                lookup: Some(get_payment_request::Lookup::AuthorizeIdempotencyKey(psp_key(
                    state,
                    "authorize",
                ))),
            }))
            .await
        {
            Ok(found) => {
                if let Some(payment) = found.into_inner().payment
                    && payment.status == PaymentStatus::Authorized as i32
                {
                    state.payment_id = Some(payment.payment_id);
                }
            }
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return Err(status),
        }
    }
    if let Some(payment_id) = state.payment_id.clone() {
        match payments
            .void(engine.clients.payment_request(VoidRequest {
                idempotency_key: psp_key(state, "void"),
                payment_id,
            }))
            .await
        {
            Ok(_) => {}
            Err(status) if transient(&status) => return Err(status),
            // Declined or already voided: nothing is held.
            Err(status) => tracing::info!(order = %state.order_id, "void not needed: {}", status.message()),
        }
    }
    if state.reserved && !state.committed {
        match engine
            .clients
            .inventory
            .clone()
            .release(engine.clients.request(ReleaseRequest {
                reservation_id: state.reservation_id.clone(),
            }))
            .await
        {
            Ok(_) => state.reserved = false,
            Err(status) if transient(&status) => return Err(status),
            Err(status) => tracing::warn!(order = %state.order_id, "release refused: {}", status.message()),
        }
    }
    Ok(())
}

/// The client-facing answer of a checkout that reached its outcome.
async fn answer<S: OrdersStore>(engine: &Engine<S>, state: &CheckoutState) -> Result<StoredAnswer, Status> {
    let mut response = CheckoutResponse::default();
    match state.outcome.clone().unwrap_or(Outcome::Refused {
        code: Code::Internal as i32,
        message: "checkout ended without an outcome".into(),
    }) {
        Outcome::Placed | Outcome::ManualReview => {
            let stored = engine
                .store
                .get_order(&state.order_id)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
                .ok_or_else(|| Status::internal("the order of a placed checkout is missing"))?;
            let order = order::from_stored(&stored)?;
            response.outcome = if order::status(&order) == OrderStatus::ManualReview {
                CheckoutOutcome::ManualReview as i32
            } else {
                CheckoutOutcome::Placed as i32
            };
            response.order = Some(order);
        }
        Outcome::Declined { decline_code } => {
            response.outcome = CheckoutOutcome::PaymentDeclined as i32;
            response.decline_code = decline_code;
        }
        Outcome::OutOfStock { shortages } => {
            response.outcome = CheckoutOutcome::OutOfStock as i32;
            response.shortages = shortages
                .into_iter()
                .map(|s| Shortage {
                    sku: s.sku,
                    requested: s.requested,
                    available: s.available,
                })
                .collect();
        }
        Outcome::PriceChanged { lines } => return Ok(price_changed(&lines)),
        Outcome::Refused { code, message } => {
            return Ok(StoredAnswer::Error(Code::from_i32(code), message, Vec::new()));
        }
    }
    Ok(StoredAnswer::Response(Box::new(response)))
}

/// A price change answers FAILED_PRECONDITION with the new prices: one
/// `google.rpc.PreconditionFailure` violation per moved line (type PRICE_CHANGED, subject
/// the SKU) for generic clients, and the typed lines as a `holdfast.orders.v1.CheckoutResponse`
/// (outcome PRICE_CHANGED, `repriced_lines`) packed in the same status details.
fn price_changed(lines: &[RepricedLine]) -> StoredAnswer {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut details = ErrorDetails::new();
    let mut moved = Vec::with_capacity(lines.len());
    for line in lines {
        let change = format!(
            "{} now costs {} {} (was {} {})",
            line.sku, line.current_minor, line.current_currency, line.expected_minor, line.expected_currency
        );
        details.add_precondition_failure_violation("PRICE_CHANGED", &line.sku, &change);
        moved.push(change);
    }
    let message = format!(
        "prices changed since the cart snapshot: {}; check out again with a new key and the new prices or accept_price_changes",
        moved.join(", ")
    );
    let status = Status::with_error_details(Code::FailedPrecondition, message.clone(), details);
    let mut rpc_status = tonic_types::Status::decode(status.details()).unwrap_or_default();
    let typed = CheckoutResponse {
        outcome: CheckoutOutcome::PriceChanged as i32,
        repriced_lines: lines
            .iter()
            .map(|l| ProtoRepriced {
                sku: l.sku.clone(),
                expected_unit_price: Some(money(l.expected_minor, &l.expected_currency)),
                current_unit_price: Some(money(l.current_minor, &l.current_currency)),
            })
            .collect(),
        ..CheckoutResponse::default()
    };
    rpc_status.details.push(prost_types::Any {
        type_url: "type.googleapis.com/holdfast.orders.v1.CheckoutResponse".into(),
        value: typed.encode_to_vec(),
    });
    StoredAnswer::Error(Code::FailedPrecondition, message, rpc_status.encode_to_vec())
}

/// Finish: store the answer on the key (a repeat of the key gets it from now on).
async fn finish<S: OrdersStore>(engine: &Engine<S>, state: &CheckoutState) -> Result<(), Status> {
    let answer = answer(engine, state).await?;
    crate::record_outcome(state.outcome.as_ref());
    match engine
        .store
        .complete_key(SCOPE, &state.key, answer.encode())
        .await
    {
        // A key that expired under a saga older than 24 h has nobody left to answer.
        Ok(()) | Err(holdfast_store::StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(Status::unavailable(e.to_string())),
    }
}
