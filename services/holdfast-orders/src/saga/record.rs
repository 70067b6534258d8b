//! What the engine reads and writes about a saga, whatever its kind: the kinds, a step's
//! result, a saga to create, and the JSON codec of the lifecycle sagas' states. A leaf: the
//! kinds' modules and the engine import it, it imports none of them.

use holdfast_store::{JoinedWrite, OutboxMessage, SagaRecord};
use serde::{Deserialize, Serialize};

use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;

/// The step name a finished saga stores, whatever its kind.
pub const DONE: &str = "done";

/// The prefix of a parked saga's step (`parked:<step it failed at>`): a cancel or return
/// that kept failing past `park_after`, left for a human; nothing resumes it.
pub const PARKED: &str = "parked:";

/// The kinds of saga, by the name their records store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaKind {
    /// A checkout (`checkout`).
    Checkout,
    /// A cancellation (`cancel`).
    Cancel,
    /// A passed return's receipt and refund (`return`).
    Return,
    /// The void sweep of a checkout that ended without an order (`void_sweep`).
    VoidSweep,
    /// The follow-up clear of a placed checkout's cart (`cart_clear`).
    CartClear,
}

impl SagaKind {
    /// Every kind.
    pub const ALL: [SagaKind; 5] = [
        SagaKind::Checkout,
        SagaKind::Cancel,
        SagaKind::Return,
        SagaKind::VoidSweep,
        SagaKind::CartClear,
    ];

    /// The name stored in the saga record.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaKind::Checkout => "checkout",
            SagaKind::Cancel => "cancel",
            SagaKind::Return => "return",
            SagaKind::VoidSweep => "void_sweep",
            SagaKind::CartClear => "cart_clear",
        }
    }

    /// Whether a saga of this kind that keeps failing is parked for review after
    /// `park_after` rather than retried forever: cancels and returns (a checkout has its
    /// abandon rule; a void sweep and a cart clear end with their windows).
    pub fn parks(self) -> bool {
        matches!(self, SagaKind::Cancel | SagaKind::Return)
    }

    /// The kind stored under `name`.
    pub fn parse(name: &str) -> Option<SagaKind> {
        SagaKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether the fault hook's `point` names `step` of this kind: `<kind>:<step>`, or the
    /// bare step name for checkouts.
    pub fn is_crash_point(self, point: &str, step: &str) -> bool {
        point.split_once(':') == Some((self.as_str(), step)) || (self == SagaKind::Checkout && point == step)
    }
}

/// What a step decided (the engine writes it as one conditional saga transition).
#[derive(Debug)]
pub enum StepResult {
    /// Go on with `step`, carrying `state`, writing `outbox` with the transition.
    Next {
        /// The next step's stored name.
        step: &'static str,
        /// The new state.
        state: Vec<u8>,
        /// Events written with the transition.
        outbox: Vec<OutboxMessage>,
        /// Order and key writes of the step, made with the transition (one atomic write on
        /// SQLite: [`holdfast_store::JoinedWriteStore`]).
        joined: Vec<JoinedWrite>,
    },
    /// Go on with `step` carrying `state`, but not before `at_ms` (Unix ms): the saga is
    /// let go until then, and the recovery worker resumes it after.
    Later {
        /// The next step's stored name.
        step: &'static str,
        /// The new state.
        state: Vec<u8>,
        /// When to run it.
        at_ms: i64,
    },
    /// The saga ends (its step becomes [`DONE`]) with `state`.
    Finished {
        /// The final state.
        state: Vec<u8>,
        /// Order and key writes made with the last transition.
        joined: Vec<JoinedWrite>,
    },
}

impl StepResult {
    /// The step name the transition stores.
    pub fn step_name(&self) -> &'static str {
        match self {
            StepResult::Next { step, .. } | StepResult::Later { step, .. } => step,
            StepResult::Finished { .. } => DONE,
        }
    }

    /// The next step and its state, when this result goes on at once and writes nothing but
    /// the saga's state (no events, no order or key writes): the only result a step may
    /// leave to run the next one with it, or to run before the saga is created.
    pub fn state_only(&self) -> Option<(&'static str, &[u8])> {
        match self {
            StepResult::Next {
                step,
                state,
                outbox,
                joined,
            } if outbox.is_empty() && joined.is_empty() => Some((step, state)),
            _ => None,
        }
    }
}

/// A saga to create (create-if-absent: its id is derived, so a repeat finds the first).
#[derive(Debug, Clone)]
pub struct NewSaga {
    /// The saga id.
    pub id: String,
    /// Its kind.
    pub kind: SagaKind,
    /// The first step's stored name.
    pub step: &'static str,
    /// The first state.
    pub state: Vec<u8>,
}

impl NewSaga {
    /// Creates this saga (create-if-absent) held by nobody until `start_at_ms`, when the
    /// recovery worker finds it and runs it: how follow-ups (the void sweep, the cart clear)
    /// are scheduled.
    pub async fn schedule<S: OrdersStore>(
        self,
        ctx: &StepContext<S>,
        start_at_ms: i64,
    ) -> Result<(), OrdersError> {
        ctx.store
            .create_saga(SagaRecord {
                id: self.id,
                kind: self.kind.as_str().to_string(),
                step: self.step.to_string(),
                state: self.state,
                lease_owner: String::new(),
                lease_until_ms: start_at_ms,
                created_at_ms: ctx.now_ms(),
                ..SagaRecord::default()
            })
            .await?;
        Ok(())
    }
}

/// A lifecycle saga's state as stored (JSON, readable in a `sqlite3` shell).
pub fn encode_state<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// Reads what [`encode_state`] wrote.
pub fn decode_state<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, OrdersError> {
    serde_json::from_slice(bytes)
        .map_err(|e| OrdersError::Internal(format!("stored saga state is corrupt: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in SagaKind::ALL {
            assert_eq!(SagaKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(SagaKind::parse("refund"), None);
    }

    #[test]
    fn crash_points_name_a_kind_and_a_step() {
        assert!(SagaKind::Checkout.is_crash_point("commit", "commit"));
        assert!(SagaKind::Checkout.is_crash_point("checkout:commit", "commit"));
        assert!(SagaKind::Cancel.is_crash_point("cancel:mark", "mark"));
        assert!(!SagaKind::Cancel.is_crash_point("mark", "mark"));
        assert!(!SagaKind::Return.is_crash_point("cancel:refund", "refund"));
    }
}
