//! The order service's errors and their one mapping to gRPC statuses.
//!
//! Business outcomes of a checkout (declined, out of stock, prices moved) are not here: they
//! are answers stored on the idempotency key. What is here is why a request (or a saga
//! step) could not go on. Store and upstream failures keep their detail for the log, which
//! `From<OrdersError> for Status` writes once; the
//! caller only learns whether to retry.

use holdfast_platform::status::failed_precondition;
use holdfast_store::StoreError;
use tonic::Status;

/// `PreconditionFailure` kind: the order's status refuses the change.
pub const ORDER_STATUS: &str = "ORDER_STATUS";
/// `PreconditionFailure` kind: the operation's saga kept failing and is parked for review.
pub const SAGA_PARKED: &str = "SAGA_PARKED";
/// `PreconditionFailure` kind: the idempotency key was used with another payload.
pub const KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
/// `PreconditionFailure` kind: a return line names a SKU or quantity the order lacks.
pub const RETURN_LINE: &str = "RETURN_LINE";
/// `PreconditionFailure` kind: the return id is not the order's return.
pub const RETURN_ID: &str = "RETURN_ID";

/// Everything that can stop an order request or a saga step.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrdersError {
    /// A field failed validation; the status carries `BadRequest` details.
    #[error("invalid request: {}", .0.message())]
    InvalidArgument(Status),
    /// The named thing (an order) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The order (or the key) is in a state that refuses the request.
    #[error("{message}")]
    Precondition {
        /// Machine-readable kind, one of the constants in this module.
        kind: &'static str,
        /// What it is about (an order, a SKU, a key).
        subject: String,
        /// Lowercase human explanation.
        message: String,
    },
    /// Another worker moved the saga or the order first; the caller may retry.
    #[error("{0}")]
    Conflict(&'static str),
    /// The work is in progress elsewhere (another process's saga, the order's checkout);
    /// the caller may retry shortly.
    #[error("{0}")]
    Busy(&'static str),
    /// Waited for a saga another process runs for longer than `wait_for_running`.
    #[error("{0}")]
    TimedOut(&'static str),
    /// The store or an upstream service failed or did not answer in time.
    #[error("{dependency}: {detail}")]
    Unavailable {
        /// `store`, `catalog`, `inventory`, `cart` or `payments`.
        dependency: &'static str,
        /// What went wrong, for the log only.
        detail: String,
    },
    /// Something this code does not understand (corrupt saga state, a saga of an unknown
    /// kind, a refund the PSP refused): a bug or a hand-edited record.
    #[error("internal: {0}")]
    Internal(String),
}

impl OrdersError {
    /// A precondition failure.
    pub fn precondition(kind: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Precondition {
            kind,
            subject: subject.into(),
            message: message.into(),
        }
    }

    /// The order's status refuses the change.
    pub fn order_status(order_id: &str, message: impl Into<String>) -> Self {
        Self::precondition(ORDER_STATUS, format!("order {order_id}"), message)
    }

    /// A failed or late call to `dependency`.
    pub fn upstream(dependency: &'static str, status: &Status) -> Self {
        Self::Unavailable {
            dependency,
            detail: format!("{:?}: {}", status.code(), status.message()),
        }
    }

    /// The order `order_id` does not exist.
    pub fn order_not_found(order_id: &str) -> Self {
        Self::NotFound(format!("order {order_id}"))
    }
}

/// The one mapping of store failures.
impl From<StoreError> for OrdersError {
    fn from(error: StoreError) -> Self {
        match error {
            // Every id is validated before it reaches the store; what it still refuses is
            // the caller's opaque page token.
            StoreError::InvalidArgument(why) => Self::InvalidArgument(Status::invalid_argument(why)),
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::VersionConflict { .. } => Self::Conflict("the record changed meanwhile; retry"),
            StoreError::Corrupt(detail) => Self::Internal(format!("store: {detail}")),
            StoreError::Unavailable(detail) => Self::Unavailable {
                dependency: "store",
                detail,
            },
        }
    }
}

impl From<OrdersError> for Status {
    fn from(error: OrdersError) -> Self {
        match error {
            OrdersError::InvalidArgument(status) => status,
            OrdersError::NotFound(_) => Status::not_found(error.to_string()),
            OrdersError::Precondition {
                kind,
                subject,
                message,
            } => failed_precondition(kind, &subject, message),
            OrdersError::Conflict(message) => Status::aborted(message),
            OrdersError::Busy(message) => Status::unavailable(message),
            OrdersError::TimedOut(message) => Status::deadline_exceeded(message),
            OrdersError::Unavailable { dependency, detail } => {
                // Logged once here at the boundary; the caller only learns it may retry.
                tracing::warn!(dependency, %detail, "orders dependency failed");
                Status::unavailable(format!("orders: {dependency} unavailable; retry"))
            }
            OrdersError::Internal(detail) => {
                tracing::error!(%detail, "orders internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn status_codes_follow_the_contract() {
        let refused = Status::from(OrdersError::order_status("ord_1", "order is SHIPPED"));
        assert_eq!(refused.code(), Code::FailedPrecondition);
        let detail = refused.get_details_precondition_failure().expect("detail");
        assert_eq!(detail.violations[0].r#type, ORDER_STATUS);
        assert_eq!(
            Status::from(OrdersError::order_not_found("ord_1")).code(),
            Code::NotFound
        );
        assert_eq!(Status::from(OrdersError::Conflict("moved")).code(), Code::Aborted);
        assert_eq!(
            Status::from(OrdersError::Busy("elsewhere")).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(OrdersError::TimedOut("still running")).code(),
            Code::DeadlineExceeded
        );
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let store = Status::from(OrdersError::from(StoreError::Unavailable(
            "disk on fire at /var/lib/holdfast".into(),
        )));
        assert_eq!(store.code(), Code::Unavailable);
        assert!(!store.message().contains("/var/lib"), "{}", store.message());
        let upstream = Status::from(OrdersError::upstream(
            "payments",
            &Status::unavailable("psp node 10.0.0.7 down"),
        ));
        assert_eq!(upstream.code(), Code::Unavailable);
        assert!(!upstream.message().contains("10.0.0.7"), "{}", upstream.message());
        let corrupt = Status::from(OrdersError::from(StoreError::Corrupt("row 7: bad json".into())));
        assert_eq!(corrupt.code(), Code::Internal);
        assert!(!corrupt.message().contains("row 7"), "{}", corrupt.message());
    }

    #[test]
    fn error_messages_are_lowercase() {
        let errors = [
            OrdersError::order_not_found("ord_1"),
            OrdersError::Conflict("the order kept changing; retry"),
            OrdersError::Busy("this checkout is running elsewhere; retry"),
            OrdersError::upstream("catalog", &Status::unavailable("down")),
            OrdersError::Internal("bad state".into()),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.starts_with(char::is_lowercase), "{message}");
        }
    }
}
