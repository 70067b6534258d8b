//! The PSP's one metric: money calls by kind and outcome.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, register_int_counter_vec};

use crate::db::{Answer, Scope};
use crate::error::PaymentsError;

#[allow(clippy::expect_used)] // registering a static metric can only fail on a duplicate name, a programming error.
static MONEY_MOVEMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_payments_money_movements_total",
        "Authorize, Capture, Void and Refund calls past validation, by kind (the RPC) and \
         outcome: moved (ledger entries posted), declined, unchanged (already captured or \
         voided), replayed (idempotent repeat), refused (not found or failed precondition), \
         failed (unavailable or internal).",
        &["kind", "outcome"]
    )
    .expect("metric registers once")
});

/// How a money call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ledger entries were posted.
    Moved,
    /// The card declined; nothing was held.
    Declined,
    /// A first use of the key that found nothing to do (capture of a captured payment,
    /// void of a voided one).
    Unchanged,
    /// A repeat of the key: the stored answer.
    Replayed,
    /// NOT_FOUND or FAILED_PRECONDITION.
    Refused,
    /// UNAVAILABLE or INTERNAL, simulated or real.
    Failed,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moved => "moved",
            Self::Declined => "declined",
            Self::Unchanged => "unchanged",
            Self::Replayed => "replayed",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }

    /// The outcome of `result`; `declined` tells a decline from an answer that found
    /// nothing to do.
    pub fn of<R>(result: &Result<Answer<R>, PaymentsError>, declined: fn(&R) -> bool) -> Self {
        match result {
            Ok(Answer::Fresh { moved: true, .. }) => Self::Moved,
            Ok(Answer::Fresh { response, .. }) if declined(response) => Self::Declined,
            Ok(Answer::Fresh { .. }) => Self::Unchanged,
            Ok(Answer::Replayed(_)) => Self::Replayed,
            Err(
                PaymentsError::NotFound(_)
                | PaymentsError::FailedPrecondition { .. }
                | PaymentsError::InvalidArgument(_),
            ) => Self::Refused,
            Err(
                PaymentsError::SimulatedOutage
                | PaymentsError::SimulatedTimeout
                | PaymentsError::Database(_)
                | PaymentsError::Corrupt(_),
            ) => Self::Failed,
        }
    }
}

/// Counts one money call.
pub fn record(kind: Scope, outcome: Outcome) {
    MONEY_MOVEMENTS
        .with_label_values(&[kind.as_str(), outcome.as_str()])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_by_kind_and_outcome() {
        record(Scope::Refund, Outcome::Moved);
        record(Scope::Refund, Outcome::Moved);
        let text = holdfast_platform::metrics::render();
        assert!(
            text.contains(r#"holdfast_payments_money_movements_total{kind="refund",outcome="moved"} 2"#),
            "{text}"
        );
    }
}
