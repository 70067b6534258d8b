//! The warehouse service's errors and their one mapping to gRPC statuses.

use holdfast_platform::status::failed_precondition;
use holdfast_store::StoreError;
use tonic::Status;

/// Everything that can go wrong in the warehouse service. Short stock is not here: routing
/// answers it with a backorder, not an error.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// A field failed validation; the status carries `BadRequest` details.
    #[error("invalid request: {}", .0.message())]
    InvalidArgument(Status),
    /// No such warehouse or shipment.
    #[error("{0} not found")]
    NotFound(String),
    /// The request does not fit the current state (a shipment already delivered, a
    /// receipt id reused with another payload, more shrinkage than stock...).
    #[error("{reason}")]
    Precondition {
        /// Machine-readable kind, e.g. `SHIPMENT_DELIVERED`.
        kind: &'static str,
        /// What it is about (a shipment, receipt or SKU).
        subject: String,
        /// Lowercase human explanation.
        reason: String,
    },
    /// The same rows kept changing under the request; retrying shortly may help.
    #[error("{0} kept changing; retry")]
    Busy(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl WarehouseError {
    /// A precondition failure.
    pub fn precondition(kind: &'static str, subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Precondition {
            kind,
            subject: subject.into(),
            reason: reason.into(),
        }
    }

    /// Whether trying the same thing again later may succeed (the store or a race).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Busy(_) | Self::Store(StoreError::Unavailable(_) | StoreError::VersionConflict { .. })
        )
    }
}

impl From<WarehouseError> for Status {
    fn from(error: WarehouseError) -> Self {
        match error {
            WarehouseError::InvalidArgument(status) => status,
            WarehouseError::NotFound(_) => Status::not_found(error.to_string()),
            WarehouseError::Precondition {
                kind,
                subject,
                reason,
            } => failed_precondition(kind, &subject, reason),
            WarehouseError::Busy(_) => Status::aborted(error.to_string()),
            WarehouseError::Store(StoreError::InvalidArgument(message)) => Status::invalid_argument(message),
            WarehouseError::Store(
                ref e @ (StoreError::Unavailable(_) | StoreError::VersionConflict { .. }),
            ) => {
                // Logged once here at the boundary; the caller only learns it may retry.
                tracing::warn!(error = %e, "store call failed");
                Status::unavailable("warehouse store unavailable; retry")
            }
            WarehouseError::Store(ref e) => {
                tracing::error!(error = %e, "store answered something unexpected");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn errors_map_to_codes_without_leaking_internals() {
        let cases = [
            (WarehouseError::NotFound("shipment \"s\"".into()), Code::NotFound),
            (
                WarehouseError::precondition("SHIPMENT_CANCELLED", "s", "shipment s is cancelled"),
                Code::FailedPrecondition,
            ),
            (WarehouseError::Busy("stock of a".into()), Code::Aborted),
            (
                WarehouseError::Store(StoreError::Unavailable("sqlite: disk I/O error".into())),
                Code::Unavailable,
            ),
            (
                WarehouseError::Store(StoreError::Corrupt("bad json".into())),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("sqlite") && !status.message().contains("json"));
        }
        assert!(WarehouseError::Busy("x".into()).is_transient());
        assert!(!WarehouseError::NotFound("x".into()).is_transient());
    }
}
