//! The PSP's errors and their one mapping to gRPC statuses.
//!
//! A declined card is not here: it is an answer (`PAYMENT_STATUS_DECLINED`), not an error.

use tonic::Status;

/// Everything that can go wrong in the payments service.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// A field failed validation; the status carries `BadRequest` details naming it.
    #[error("invalid request: {}", .0.message())]
    InvalidArgument(Status),
    /// No payment with that id (or authorize idempotency key).
    #[error("payment {0:?} not found")]
    NotFound(String),
    /// The payment's state, or an earlier use of the idempotency key, forbids the call.
    #[error("{why}")]
    FailedPrecondition {
        /// The `PreconditionFailure` violation type, e.g. `PAYMENT_STATUS`.
        kind: &'static str,
        /// What it is about: a payment id or `<rpc>:<idempotency key>`.
        subject: String,
        /// Why, for the caller.
        why: String,
    },
    /// `pm_card_flaky`'s first attempt: the simulated provider was unreachable.
    #[error("payment provider unavailable (simulated by pm_card_flaky); retry with the same key")]
    SimulatedOutage,
    /// `pm_card_timeout`: the simulated provider never answered in time.
    #[error("payment provider did not answer before the deadline (simulated by pm_card_timeout)")]
    SimulatedTimeout,
    /// The PSP's database could not be reached or written.
    #[error("database: {0}")]
    Database(String),
    /// The database holds something this build cannot read.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl PaymentsError {
    /// `FAILED_PRECONDITION` because of the payment's status or amounts.
    pub fn payment_state(payment_id: &str, why: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            kind: "PAYMENT_STATE",
            subject: payment_id.to_string(),
            why: why.into(),
        }
    }

    /// `FAILED_PRECONDITION` because the key was used with a different payload.
    pub fn key_reused(scope: &str, key: &str) -> Self {
        Self::FailedPrecondition {
            kind: "IDEMPOTENCY_KEY",
            subject: format!("{scope}:{key}"),
            why: format!("idempotency key {key:?} was already used for a different {scope} request"),
        }
    }
}

impl From<rusqlite::Error> for PaymentsError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                Self::Corrupt(format!("sqlite: {error}"))
            }
            Some(_) => Self::Database(format!("sqlite: {error}")),
            // Not a failure of the engine: a row this code could not read.
            None => Self::Corrupt(format!("sqlite: {error}")),
        }
    }
}

impl From<PaymentsError> for Status {
    fn from(error: PaymentsError) -> Self {
        match error {
            PaymentsError::InvalidArgument(status) => status,
            PaymentsError::NotFound(_) => Status::not_found(error.to_string()),
            PaymentsError::FailedPrecondition {
                kind,
                ref subject,
                ref why,
            } => holdfast_platform::status::failed_precondition(kind, subject, why.clone()),
            PaymentsError::SimulatedOutage => Status::unavailable(error.to_string()),
            PaymentsError::SimulatedTimeout => Status::deadline_exceeded(error.to_string()),
            PaymentsError::Database(ref e) => {
                // Logged once here at the boundary; the caller only learns it may retry.
                tracing::warn!(error = %e, "payments database call failed");
                Status::unavailable("payments database unavailable; retry with the same key")
            }
            PaymentsError::Corrupt(ref e) => {
                tracing::error!(error = %e, "payments database holds unreadable data");
                Status::internal("internal error")
            }
        }
    }
}
