//! The checkout saga (the table in ARCHITECTURE.md and docs/checkout.md): one typed
//! [`Step`] per row, run by [`step`].
//!
//! Every step reads the state, does its (idempotent) side effect, and returns the next
//! step. Before the pivot (commit) a business refusal goes to `compensate`, which undoes
//! whatever was done; after it, failures only retry forward. Stable ids make repeats
//! harmless: the reservation id and order id derive from the saga id, PSP keys from the
//! checkout key and the action.
//!
//! Files: [`state`] (what the saga persists and the answer a key stores), `wire` (the
//! state's stored form), [`reprice`]
//! (the validate step), [`steps`] (reserve to notify, and compensate), [`answer`] (finish:
//! the answer stored on the key). This file: the key claim, the dispatch, the abandon rule.

pub mod answer;
pub mod reprice;
pub mod state;
pub mod steps;
mod wire;

use holdfast_proto::orders::v1::CheckoutRequest;
use holdfast_store::{IDEMPOTENCY_TTL_MS, IdempotencyRecord, JoinedWrite, KeyClaim, SagaRecord};
use prost::Message;
use tonic::Code;

use crate::context::{OrdersStore, StepContext, now_ms};
use crate::error::{KEY_REUSED, OrdersError};
use crate::saga::record::{NewSaga, SagaKind, StepResult};
pub use state::{CheckoutState, Outcome, Step, StoredAnswer, fingerprint};

pub use answer::SCOPE;
pub use state::psp_key_for;
pub use steps::FULFILLMENT_TOPIC;

/// The first state of a checkout saga `saga_id` serving `request`. Everything derived from
/// the saga id, so two processes creating it at once create the same saga.
pub fn initial_state(saga_id: &str, request: &CheckoutRequest) -> CheckoutState {
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

/// What a (validated) checkout request's key says before anything runs.
#[derive(Debug)]
pub enum Claim {
    /// The key's checkout already ended: replay its answer.
    Answered(StoredAnswer),
    /// Run (or join) the key's saga; created if absent.
    Run(NewSaga),
}

/// Claims the request's idempotency key (insert-if-absent, with a fingerprint of the
/// payload and a new saga id). A key used with another payload is refused.
pub async fn claim<S: OrdersStore>(
    ctx: &StepContext<S>,
    request: &CheckoutRequest,
) -> Result<Claim, OrdersError> {
    let fingerprint = fingerprint(request);
    let now = now_ms();
    let record = match ctx
        .store
        .claim_key(IdempotencyRecord {
            scope: SCOPE.into(),
            key: request.idempotency_key.clone(),
            fingerprint: fingerprint.clone(),
            resource_id: uuid::Uuid::now_v7().to_string(),
            response: None,
            created_at_ms: now,
            expires_at_ms: now + IDEMPOTENCY_TTL_MS,
        })
        .await?
    {
        KeyClaim::Claimed(record) | KeyClaim::Existing(record) => record,
    };
    if record.fingerprint != fingerprint {
        return Err(OrdersError::precondition(
            KEY_REUSED,
            format!("idempotency_key {}", request.idempotency_key),
            "this idempotency_key was used with a different request; use a new key",
        ));
    }
    if let Some(answer) = &record.response {
        return Ok(Claim::Answered(StoredAnswer::decode(answer)?));
    }
    Ok(Claim::Run(NewSaga {
        state: initial_state(&record.resource_id, request).encode(),
        id: record.resource_id,
        kind: SagaKind::Checkout,
        step: Step::Validate.as_str(),
    }))
}

/// The answer the finished checkout of `key` stored.
pub async fn stored_answer<S: OrdersStore>(
    ctx: &StepContext<S>,
    key: &str,
) -> Result<StoredAnswer, OrdersError> {
    let answer = ctx
        .store
        .get_key(SCOPE, key)
        .await?
        .and_then(|r| r.response)
        .ok_or_else(|| OrdersError::Internal("checkout finished without an answer".into()))?;
    StoredAnswer::decode(&answer)
}

/// Whether the step stored as `name` runs with the transition of the step before it
/// ([`Step::runs_with_previous`]).
pub fn runs_with_previous(name: &str) -> bool {
    Step::parse(name).is_some_and(Step::runs_with_previous)
}

/// Whether the step stored as `name` runs before the saga is first written
/// ([`Step::runs_before_create`]).
pub fn runs_before_create(name: &str) -> bool {
    Step::parse(name).is_some_and(Step::runs_before_create)
}

/// Runs the saga's current step.
pub async fn step<S: OrdersStore>(
    ctx: &StepContext<S>,
    saga: &SagaRecord,
) -> Result<StepResult, OrdersError> {
    let mut state = CheckoutState::decode(&saga.state)?;
    let step = Step::parse(&saga.step)
        .ok_or_else(|| OrdersError::Internal(format!("unknown checkout step {:?}", saga.step)))?;
    // A checkout stuck before the pivot for longer than the abandon window (an outage the
    // client gave up on) is compensated rather than charged long after.
    if step.before_pivot()
        && step != Step::Validate
        && state.outcome.is_none()
        && ctx.now_ms() - state.started_at_ms > ctx.options.abandon_after.as_millis() as i64
    {
        state.outcome = Some(Outcome::Refused {
            code: Code::Aborted as i32,
            message: "checkout abandoned after an outage; nothing was charged; retry with a new key".into(),
        });
        return Ok(next(Step::Compensate, &state));
    }
    // The order and key writes of the step, written with its transition.
    let mut joined = Vec::new();
    let to = match step {
        Step::Validate => reprice::validate(ctx, &mut state).await?,
        Step::Reserve => steps::reserve(ctx, &mut state).await?,
        Step::Screen => steps::screen(ctx, &mut state).await?,
        Step::Authorize => steps::authorize(ctx, &mut state).await?,
        Step::CreateOrder => steps::create_order(ctx, &mut state, &mut joined).await?,
        Step::Commit => steps::commit(ctx, &mut state).await?,
        Step::Capture => steps::capture(ctx, &mut state, &mut joined).await?,
        Step::Dispatch => steps::dispatch(ctx, &state, &mut joined).await?,
        Step::Notify => steps::notify(ctx, &mut state).await?,
        Step::Compensate => steps::compensate(ctx, &mut state).await?,
        Step::Finish => answer::finish(ctx, &state, &mut joined).await?,
        Step::Done => {
            return Err(OrdersError::Internal(
                "a finished checkout was asked to run".into(),
            ));
        }
    };
    Ok(next_joined(to, &state, joined))
}

fn next(step: Step, state: &CheckoutState) -> StepResult {
    next_joined(step, state, Vec::new())
}

fn next_joined(step: Step, state: &CheckoutState, joined: Vec<JoinedWrite>) -> StepResult {
    if step == Step::Done {
        StepResult::Finished {
            state: state.encode(),
            joined,
        }
    } else {
        StepResult::Next {
            step: step.as_str(),
            state: state.encode(),
            outbox: Vec::new(),
            joined,
        }
    }
}
