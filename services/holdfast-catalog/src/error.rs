//! The catalog's errors and their one mapping to gRPC statuses.

use holdfast_store::StoreError;
use tonic::Status;

/// Everything that can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A field failed validation; the status carries `BadRequest` details.
    #[error("invalid request: {}", .0.message())]
    InvalidArgument(Status),
    /// No product with that SKU.
    #[error("product {0:?} not found")]
    NotFound(String),
    /// `expected_version` did not match the stored product.
    #[error("product {sku:?} is at version {actual}, not {expected}")]
    VersionConflict {
        /// The SKU.
        sku: String,
        /// What the caller expected.
        expected: u64,
        /// What is stored.
        actual: u64,
    },
    /// The durable store failed.
    #[error("store: {0}")]
    Store(StoreError),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
}

impl From<StoreError> for CatalogError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidArgument(message) => {
                let mut violations = holdfast_platform::status::FieldViolations::new();
                violations.add("page.page_token", message);
                Self::InvalidArgument(
                    violations
                        .into_result()
                        .err()
                        .unwrap_or_else(|| Status::invalid_argument("")),
                )
            }
            other => Self::Store(other),
        }
    }
}

impl From<CatalogError> for Status {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::InvalidArgument(status) => status,
            CatalogError::NotFound(_) => Status::not_found(error.to_string()),
            CatalogError::VersionConflict { .. } => Status::aborted(error.to_string()),
            CatalogError::Store(ref e) => {
                // Logged once here at the boundary; the caller only learns it may retry.
                tracing::warn!(error = %e, "store call failed");
                Status::unavailable("catalog store unavailable; retry")
            }
            CatalogError::Redis(ref e) => {
                tracing::warn!(error = %e, "redis call failed");
                Status::unavailable("catalog cache unavailable; retry")
            }
        }
    }
}
