//! The checkout's steps from reserve to notify, and compensate. Each takes the state and
//! returns the next [`Step`]; an `Err` is a transient failure (the engine retries the
//! step later), a business refusal is an outcome in the state.

use holdfast_proto::events::v1::{
    DispatchRequested, FulfillmentEvent, OrderConfirmed, OrderEvent, fulfillment_event, order_event,
};
use holdfast_proto::inventory::v1::{
    CommitRequest, ExtendRequest, ReleaseRequest, ReservationStatus, ReserveLine, ReserveRequest,
};
use holdfast_proto::orders::v1::{CheckoutRequest, Order, OrderStatus, checkout_request};
use holdfast_proto::payments::v1::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, PaymentStatus, VoidRequest, get_payment_request,
};
use holdfast_store::{JoinedWrite, OutboxMessage};
use prost::Message;
use tonic::Code;

use super::state::{CheckoutState, Outcome, ShortLine, Step};
use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
use crate::order::{self, Change, ORDERS_TOPIC, money};
use crate::risk;
use crate::saga::{cart_clear, sweep};
use crate::upstream::transient;

/// Topic of fulfillment dispatch.
pub const FULFILLMENT_TOPIC: &str = "holdfast.fulfillment.v1";

/// Reserve: a TTL hold on every line, all or nothing.
pub async fn reserve<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Step, OrdersError> {
    let response = match ctx
        .clients
        .inventory
        .clone()
        .reserve(ctx.clients.request(reserve_request(ctx, state)))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) if transient(&status) => return Err(OrdersError::upstream("inventory", &status)),
        Err(status) => {
            return Ok(state.refused_by("inventory", &status, "the stock could not be held"));
        }
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

/// The checkout's Reserve: every line, under the checkout's reservation id.
fn reserve_request<S>(ctx: &StepContext<S>, state: &CheckoutState) -> ReserveRequest {
    ReserveRequest {
        reservation_id: state.reservation_id.clone(),
        lines: state
            .lines
            .iter()
            .map(|line| ReserveLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
            })
            .collect(),
        ttl_seconds: ctx.options.hold_ttl_seconds(),
    }
}

/// Holds the lines again, under the same reservation id, after inventory answered NOT_FOUND
/// for the hold before the pivot: its Redis lost the reservation (a restart without the
/// append-only file, a failover, a FLUSHALL) and rebuilt the counts from the durable truth,
/// which gave the lost hold's units back. Whether the units are still there is the reserve
/// script's decision, as for any grant; `true` when every line is held again. (A hold that
/// merely lapsed is not NOT_FOUND: its record says expired, and a Reserve under its id
/// answers the first answer, so it is never held twice.)
async fn hold_again<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &CheckoutState,
) -> Result<bool, OrdersError> {
    match ctx
        .clients
        .inventory
        .clone()
        .reserve(ctx.clients.request(reserve_request(ctx, state)))
        .await
    {
        Ok(response) => {
            let held = response.into_inner().status == ReservationStatus::Reserved as i32;
            tracing::warn!(order = %state.order_id, reservation = %state.reservation_id, held,
                "the checkout's hold was gone or half-made (Redis lost it, or a Reserve was cut short); held it again");
            Ok(held)
        }
        Err(status) if transient(&status) => Err(OrdersError::upstream("inventory", &status)),
        Err(_) => Ok(false),
    }
}

/// Whether an Extend or Commit answer may mean the hold is gone or half-made, so that
/// [`hold_again`] is the way on: NOT_FOUND (no record: Redis lost it), or ABORTED (the record
/// is `pending`: a Reserve, e.g. an earlier `hold_again` cut short by a fault, still holds
/// its claim; the next Reserve of the id waits for its lease and takes it over). A Reserve
/// of a live or committing reservation answers its first answer, so this is safe whenever
/// it runs.
fn hold_may_be_lost(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::NotFound | Code::Aborted)
}

/// Screen: the risk rules; high risk creates the order for manual review, uncharged.
pub async fn screen<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Step, OrdersError> {
    let request = state.request()?;
    Ok(
        match risk::screen(ctx, &request.customer_id, &state.order_id, state.total_minor).await? {
            Some(reason) => {
                tracing::info!(order = %state.order_id, %reason, "checkout held for manual review");
                state.manual_review = true;
                Step::CreateOrder
            }
            None => Step::Authorize,
        },
    )
}

/// Authorize: extend the hold to cover the payment (unless the Reserve's own TTL still
/// covers it: [`crate::OrdersOptions::hold_covers`]), then authorize with a key derived from the
/// checkout. A timeout is an unknown outcome: look it up, and give up on it (void).
pub async fn authorize<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Step, OrdersError> {
    let request = state.request()?;
    let since_start = ctx.now_ms().saturating_sub(state.started_at_ms);
    if !ctx.options.hold_covers(since_start)
        && let Some(lapsed) = extend_hold(ctx, state).await?
    {
        return Ok(lapsed);
    }
    let authorize = AuthorizeRequest {
        idempotency_key: state.psp_key("authorize"),
        amount: Some(money(state.total_minor, &state.currency)),
        payment_method: request.payment_method.clone(),
        customer_id: request.customer_id.clone(),
        order_reference: state.order_id.clone(),
    };
    let mut payments = ctx.clients.payments.clone();
    let mut last_error = None;
    for attempt in 0..ctx.options.payment_attempts {
        match payments
            .authorize(ctx.clients.payment_request(authorize.clone()))
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
                tokio::time::sleep(ctx.options.retry_after / 4 * (attempt + 1)).await;
            }
            Err(status) => {
                tracing::info!(order = %state.order_id, code = ?status.code(), detail = %status.message(),
                    "authorization refused");
                state.outcome = Some(Outcome::Refused {
                    code: Code::FailedPrecondition as i32,
                    message: "payment refused by the payment provider".into(),
                });
                return Ok(Step::Compensate);
            }
        }
    }
    Err(match last_error {
        Some(status) => OrdersError::upstream("payments", &status),
        None => OrdersError::Unavailable {
            dependency: "payments",
            detail: "no authorization attempt configured".into(),
        },
    })
}

/// Extends the hold to a whole TTL from now; `Some(compensate)` when nothing is held any
/// more (it lapsed or was released, and could not be held again).
async fn extend_hold<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Option<Step>, OrdersError> {
    match ctx
        .clients
        .inventory
        .clone()
        .extend(ctx.clients.request(ExtendRequest {
            reservation_id: state.reservation_id.clone(),
            ttl_seconds: ctx.options.hold_ttl_seconds(),
        }))
        .await
    {
        Ok(_) => Ok(None),
        Err(status) if hold_may_be_lost(&status) && hold_again(ctx, state).await? => Ok(None),
        Err(status) if transient(&status) => Err(OrdersError::upstream("inventory", &status)),
        Err(_) => {
            state.reserved = false;
            state.outcome = Some(hold_lapsed(state));
            Ok(Some(Step::Compensate))
        }
    }
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

/// The order as checkout creates it: PLACED, or MANUAL_REVIEW when risk held it.
fn new_order(state: &CheckoutState, request: &CheckoutRequest, now: i64) -> Order {
    let mut created = Order {
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
    let (to, reason) = if state.manual_review {
        (OrderStatus::ManualReview, "held by risk screening")
    } else {
        (OrderStatus::Placed, "")
    };
    order::transition(&mut created, &[OrderStatus::Unspecified], to, now, reason);
    created
}

/// Create order: the order record (create-if-absent, written with the transition), then
/// commit.
pub async fn create_order<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
    joined: &mut Vec<JoinedWrite>,
) -> Result<Step, OrdersError> {
    let request = state.request()?;
    joined.push(JoinedWrite::CreateOrder(order::to_stored(
        &new_order(state, &request, ctx.now_ms()),
        1,
    )));
    state.order_created = true;
    Ok(Step::Commit)
}

/// Commit: the pivot.
pub async fn commit<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Step, OrdersError> {
    let mut answer = send_commit(ctx, state).await;
    if let Err(status) = &answer
        && hold_may_be_lost(status)
        && hold_again(ctx, state).await?
    {
        answer = send_commit(ctx, state).await;
    }
    match answer {
        Ok(()) => {
            state.committed = true;
            Ok(if state.manual_review {
                Step::Notify
            } else {
                Step::Capture
            })
        }
        Err(status) if transient(&status) => Err(OrdersError::upstream("inventory", &status)),
        Err(_) => {
            // The hold lapsed before the pivot: undo the order and the authorization.
            state.reserved = false;
            state.outcome = Some(hold_lapsed(state));
            Ok(Step::Compensate)
        }
    }
}

async fn send_commit<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &CheckoutState,
) -> Result<(), tonic::Status> {
    ctx.clients
        .inventory
        .clone()
        .commit(ctx.clients.request(CommitRequest {
            reservation_id: state.reservation_id.clone(),
            // Lets inventory confirm a commit whose Redis record it lost after the sale
            // was recorded durably (a retry after a Redis restart without its AOF).
            skus: state.lines.iter().map(|l| l.sku.clone()).collect(),
        }))
        .await
        .map(|_| ())
}

/// Moves the order from `from` to `to` with the step's transition (a joined write);
/// nothing if it is elsewhere already.
async fn move_order_joined<S: OrdersStore>(
    ctx: &StepContext<S>,
    order_id: &str,
    (from, to): (&[OrderStatus], OrderStatus),
    reason: &str,
    joined: &mut Vec<JoinedWrite>,
) -> Result<(), OrdersError> {
    let now = ctx.now_ms();
    joined.extend(
        order::change_joined(ctx, order_id, |current| {
            Ok(if order::transition(current, from, to, now, reason) {
                Change::Write(Vec::new())
            } else {
                Change::Keep
            })
        })
        .await?,
    );
    Ok(())
}

/// Capture: after the pivot, only forward. A captured payment goes on to dispatch, which
/// runs with this step's transition and moves the order (PAID, then FULFILLING) in it. A
/// refused capture (the authorization is gone) leaves a committed order without money: it
/// goes to manual review, named, the order's move written with the transition.
pub async fn capture<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
    joined: &mut Vec<JoinedWrite>,
) -> Result<Step, OrdersError> {
    let payment_id = state.payment_id.clone().unwrap_or_default();
    match ctx
        .clients
        .payments
        .clone()
        .capture(ctx.clients.payment_request(CaptureRequest {
            idempotency_key: state.psp_key("capture"),
            payment_id,
            amount: None,
        }))
        .await
    {
        // No write of its own, so dispatch rides with this transition (`Engine::steps`).
        Ok(_) => Ok(Step::Dispatch),
        Err(status) if transient(&status) => Err(OrdersError::upstream("payments", &status)),
        Err(status) => {
            tracing::warn!(order = %state.order_id, code = ?status.code(), detail = %status.message(),
                "capture refused after the pivot; the order goes to manual review");
            move_order_joined(
                ctx,
                &state.order_id,
                (&[OrderStatus::Placed], OrderStatus::ManualReview),
                "capture refused by the payment provider",
                joined,
            )
            .await?;
            state.manual_review = true;
            state.outcome = Some(Outcome::ManualReview);
            Ok(Step::Notify)
        }
    }
}

/// Dispatch (after a capture): PAID, then FULFILLING with order.confirmed and
/// fulfillment.dispatch_requested, in one atomic write joined to the step's transition.
/// An order found PAID already (a saga stored at this step by a build whose capture moved
/// it) only moves on to FULFILLING; one elsewhere (a cancel got there first) is kept.
pub async fn dispatch<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &CheckoutState,
    joined: &mut Vec<JoinedWrite>,
) -> Result<Step, OrdersError> {
    let now = ctx.now_ms();
    let write = order::change_joined(ctx, &state.order_id, |current| {
        let paid = order::transition(
            current,
            &[OrderStatus::Placed],
            OrderStatus::Paid,
            now,
            "payment captured",
        );
        let fulfilling = order::transition(
            current,
            &[OrderStatus::Paid],
            OrderStatus::Fulfilling,
            now,
            "dispatched to fulfillment",
        );
        Ok(match (paid, fulfilling) {
            (_, true) => Change::Write(confirmed_events(ctx, current, now)),
            (true, false) => Change::Write(Vec::new()),
            (false, false) => Change::Keep,
        })
    })
    .await?;
    joined.extend(write);
    Ok(Step::Notify)
}

fn confirmed_events<S>(ctx: &StepContext<S>, order: &Order, now: i64) -> Vec<OutboxMessage> {
    let mut confirmed = ctx.event(ORDERS_TOPIC, &order.id, "order.confirmed", Vec::new());
    confirmed.payload = OrderEvent {
        event_id: confirmed.id.clone(),
        event: Some(order_event::Event::Confirmed(OrderConfirmed {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            lines: order::event_lines(&order.lines),
            ship_to: order.shipping_address.clone(),
            total: order.total.clone(),
            shipping_speed: order.shipping_speed,
            payment_id: order.payment_id.clone(),
            reservation_id: order.reservation_id.clone(),
            occurred_at_unix_ms: now,
        })),
    }
    .encode_to_vec();
    let mut dispatch = ctx.event(
        FULFILLMENT_TOPIC,
        &order.id,
        "fulfillment.dispatch_requested",
        Vec::new(),
    );
    dispatch.payload = FulfillmentEvent {
        event_id: dispatch.id.clone(),
        event: Some(fulfillment_event::Event::DispatchRequested(DispatchRequested {
            order_id: order.id.clone(),
            lines: order::event_lines(&order.lines),
            ship_to: order.shipping_address.clone(),
            shipping_speed: order.shipping_speed,
            region: ctx.region.clone(),
            occurred_at_unix_ms: now,
        })),
    }
    .encode_to_vec();
    vec![confirmed, dispatch]
}

/// Notify: clear exactly the cart that was checked out (a cart changed since is kept), and
/// name the outcome; always on to finish: a clear that cannot be done now is left to its
/// follow-up ([`cart_clear`]), so the answer never waits for the cart.
pub async fn notify<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Step, OrdersError> {
    clear_cart(ctx, state).await?;
    if state.outcome.is_none() {
        state.outcome = Some(if state.manual_review {
            Outcome::ManualReview
        } else {
            Outcome::Placed
        });
    }
    Ok(Step::Finish)
}

async fn clear_cart<S: OrdersStore>(ctx: &StepContext<S>, state: &CheckoutState) -> Result<(), OrdersError> {
    let Ok(request) = state.request() else {
        return Ok(());
    };
    let (Some(checkout_request::Source::Cart(owner)), Some(version)) = (&request.source, state.cart_version)
    else {
        return Ok(());
    };
    let Some(clear) = cart_clear::ClearState::new(owner, version, &state.order_id, ctx.now_ms()) else {
        return Ok(());
    };
    if cart_clear::attempt(ctx, &clear).await == cart_clear::Attempt::Later {
        tracing::info!(order = %state.order_id, owner = %clear.owner, "cart not cleared now; its follow-up will");
        cart_clear::schedule(ctx, &clear).await?;
    }
    Ok(())
}

/// Compensate: undo what actually happened before the pivot, checked rather than taken
/// from the state (a step's side effect may have happened without its transition being
/// recorded: a crash in between, or an abandoned saga):
///
/// 1. Release the hold first, by its id: inventory decides the pivot atomically (a
///    released hold can no longer be committed). A hold that turns out committed means
///    commit ran and its transition was lost: the pivot passed, so the saga goes forward
///    (capture, or notify under manual review) instead of undoing anything.
/// 2. Void the payment: the one the state knows, else whatever the PSP recorded under the
///    checkout's authorize key.
/// 3. Cancel the order row if it exists, whether or not its creation was recorded.
/// 4. Schedule the void sweep ([`crate::saga::sweep`]) for an authorization that lands
///    after step 2 looked.
///
/// Each part is idempotent, so a crash here repeats them.
pub async fn compensate<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Step, OrdersError> {
    if !state.committed {
        match ctx
            .clients
            .inventory
            .clone()
            .release(ctx.clients.request(ReleaseRequest {
                reservation_id: state.reservation_id.clone(),
            }))
            .await
        {
            Ok(_) => state.reserved = false,
            // Release refuses only a committed (or committing) hold.
            Err(status) if status.code() == Code::FailedPrecondition => {
                tracing::warn!(order = %state.order_id, "the hold was committed before the saga recorded it; the pivot passed, going forward");
                state.reserved = false;
                state.committed = true;
                state.outcome = None;
                return Ok(if state.manual_review {
                    Step::Notify
                } else {
                    Step::Capture
                });
            }
            Err(status) if transient(&status) => return Err(OrdersError::upstream("inventory", &status)),
            Err(status) => tracing::warn!(order = %state.order_id, "release refused: {}", status.message()),
        }
    }
    let mut payments = ctx.clients.payments.clone();
    if state.payment_id.is_none() {
        match payments
            .get_payment(ctx.clients.request(GetPaymentRequest {
                lookup: Some(get_payment_request::Lookup::AuthorizeIdempotencyKey(
                    state.psp_key("authorize"),
                )),
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
            Err(status) => return Err(OrdersError::upstream("payments", &status)),
        }
    }
    if let Some(payment_id) = state.payment_id.clone() {
        match payments
            .void(ctx.clients.payment_request(VoidRequest {
                idempotency_key: state.psp_key("void"),
                payment_id,
            }))
            .await
        {
            Ok(_) => {}
            Err(status) if transient(&status) => return Err(OrdersError::upstream("payments", &status)),
            // Declined or already voided: nothing is held.
            Err(status) => tracing::info!(order = %state.order_id, "void not needed: {}", status.message()),
        }
    }
    let reason = match &state.outcome {
        Some(Outcome::OutOfStock { .. }) => "the stock hold lapsed before commit".to_string(),
        Some(Outcome::Declined { decline_code }) => format!("payment failed: {decline_code}"),
        _ => "checkout compensated".to_string(),
    };
    // The order row, if create_order made it, is cancelled with its `order.cancelled` in the
    // same write: every order that reaches CANCELLED says so downstream.
    let now = ctx.now_ms();
    match order::change(ctx, &state.order_id, |current| {
        Ok(
            if order::transition(
                current,
                &[OrderStatus::Placed, OrderStatus::ManualReview],
                OrderStatus::Cancelled,
                now,
                &reason,
            ) {
                let lines = current.lines.clone();
                Change::Write(vec![order::cancelled_event(
                    ctx, current, &lines, &reason, false, now,
                )])
            } else {
                Change::Keep
            },
        )
    })
    .await
    {
        // No order row: create_order never ran.
        Ok(_) | Err(OrdersError::NotFound(_)) => {}
        Err(error) => return Err(error),
    }
    // An authorization still in flight may land after the look-up above: the void sweep
    // looks again later and voids it (audit H9). A manual review never authorized.
    if !state.manual_review {
        sweep::schedule(
            ctx,
            &state.psp_key("authorize"),
            &state.psp_key("void"),
            &state.order_id,
        )
        .await?;
    }
    Ok(Step::Finish)
}
