//! The inventory service's errors and their one mapping to gRPC statuses.

use holdfast_platform::status::failed_precondition;
use tonic::Status;

/// Everything that can go wrong in the inventory service. Out of stock is not here: it is
/// an answer (`INSUFFICIENT_STOCK`), not an error.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A field failed validation; the status carries `BadRequest` details.
    #[error("invalid request: {}", .0.message())]
    InvalidArgument(Status),
    /// No reservation with that id (never made, or its record aged out).
    #[error("reservation {0:?} not found")]
    NotFound(String),
    /// The operation does not fit the current state (expired, released, below held...).
    #[error("{reason}")]
    Precondition {
        /// Machine-readable kind, e.g. `RESERVATION_EXPIRED`.
        kind: &'static str,
        /// What it is about (a reservation id or SKU).
        subject: String,
        /// Lowercase human explanation.
        reason: String,
    },
    /// The id was used before with a different request.
    #[error("{0}")]
    Conflict(String),
    /// Another call is working on the same reservation right now; retry shortly.
    #[error("reservation {0:?} is being changed by another call; retry")]
    Busy(String),
    /// Redis failed or was unreachable.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// A script refused its arguments or failed in Lua: deterministic, so retrying cannot
    /// help. Every argument is validated before a script runs, so this is a bug, not bad input.
    #[error("script {script} refused the call: {detail}")]
    Script {
        /// The script's file name.
        script: &'static str,
        /// Redis's error reply.
        detail: String,
    },
    /// A bucket's outbox holds more unpublished events than it may (the bus is down): new
    /// work is refused until the relay catches up, so no event is ever trimmed unpublished.
    #[error("event backlog of {0} is full; retry")]
    Backpressure(String),
    /// Redis lost writes and this SKU is being rebuilt from the durable store right now:
    /// no grant until it is. `UNAVAILABLE` with a retry delay.
    #[error("stock of {0:?} is being rebuilt after the inventory cache lost writes; retry shortly")]
    Rebuilding(String),
    /// The durable store (inventory's truth) failed or was unreachable.
    #[error("durable store: {0}")]
    Store(String),
    /// Over the SKU's Reserve admission limit, decided in the Reserve's own script call:
    /// nothing held or recorded. `RESOURCE_EXHAUSTED` with `RetryInfo` and `QuotaFailure`, as
    /// the limiter's own refusal (docs/admission.md).
    #[error("reserve: too many calls for sku:{sku}; retry in {} ms", retry_after.as_millis())]
    Limited {
        /// The limited SKU.
        sku: String,
        /// When the next Reserve of it would be admitted.
        retry_after: std::time::Duration,
    },
    /// A script answered something this code does not understand (a deployment mismatch).
    #[error("unexpected reply from {script}: {detail}")]
    Protocol {
        /// The script's file name.
        script: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// The retry delay a caller refused during a rebuild is told to wait.
pub const REBUILD_RETRY_MS: u64 = 200;

impl InventoryError {
    /// A precondition failure.
    pub fn precondition(kind: &'static str, subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Precondition {
            kind,
            subject: subject.into(),
            reason: reason.into(),
        }
    }
}

impl From<InventoryError> for Status {
    fn from(error: InventoryError) -> Self {
        match error {
            InventoryError::InvalidArgument(status) => status,
            InventoryError::NotFound(_) => Status::not_found(error.to_string()),
            InventoryError::Precondition {
                kind,
                subject,
                reason,
            } => failed_precondition(kind, &subject, reason),
            InventoryError::Conflict(message) => Status::already_exists(message),
            InventoryError::Busy(_) => Status::aborted(error.to_string()),
            InventoryError::Redis(ref e) => {
                // Logged once here at the boundary; the caller only learns it may retry.
                tracing::warn!(error = %e, "redis call failed");
                Status::unavailable("inventory store unavailable; retry")
            }
            InventoryError::Script { .. } => {
                tracing::error!(%error, "script refused its arguments");
                Status::internal("internal error")
            }
            InventoryError::Backpressure(ref sku) => {
                crate::metrics::outbox_backpressure();
                // Alert-worthy: the bus has been unreachable long enough to fill a backlog.
                tracing::error!(%sku, "inventory outbox backlog full; refusing new work until the relay publishes");
                Status::unavailable("inventory event backlog full; retry later")
            }
            InventoryError::Rebuilding(ref sku) => {
                let mut details = tonic_types::ErrorDetails::new();
                details.set_retry_info(Some(std::time::Duration::from_millis(REBUILD_RETRY_MS)));
                tracing::info!(%sku, "grant refused while the SKU is rebuilt");
                <Status as tonic_types::StatusExt>::with_error_details(
                    tonic::Code::Unavailable,
                    format!("{error} (retry after {REBUILD_RETRY_MS} ms)"),
                    details,
                )
            }
            InventoryError::Limited { sku, retry_after } => {
                holdfast_platform::admission::exhausted("reserve", &format!("sku:{sku}"), retry_after)
            }
            InventoryError::Store(ref e) => {
                tracing::warn!(error = %e, "durable store call failed");
                Status::unavailable("inventory durable store unavailable; retry")
            }
            InventoryError::Protocol { .. } => {
                tracing::error!(%error, "script protocol mismatch");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_rebuild_refusal_is_unavailable_with_a_retry_delay() {
        let status = Status::from(InventoryError::Rebuilding("sku-1".into()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("being rebuilt"), "{}", status.message());
        let retry = status.get_details_retry_info().expect("retry info");
        assert_eq!(
            retry.retry_delay,
            Some(std::time::Duration::from_millis(REBUILD_RETRY_MS))
        );
        let store = Status::from(InventoryError::Store("down".into()));
        assert_eq!(store.code(), tonic::Code::Unavailable);
    }
}
