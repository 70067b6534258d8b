//! The cart service's errors and their one mapping to gRPC statuses. Out of stock is not
//! here: it is an answer (`ITEM_OUTCOME_OUT_OF_STOCK`), not an error.

use holdfast_platform::status::failed_precondition;
use holdfast_store::StoreError;
use tonic::Status;

/// `PreconditionFailure` kind: the cart already holds the most lines it may.
pub const LINE_LIMIT: &str = "CART_LINE_LIMIT";
/// `PreconditionFailure` kind: the line would hold more units than it may.
pub const QUANTITY_LIMIT: &str = "CART_QUANTITY_LIMIT";
/// `PreconditionFailure` kind: the catalog has no product with that SKU.
pub const SKU_UNKNOWN: &str = "SKU_UNKNOWN";
/// `PreconditionFailure` kind: the product exists but is not sold (inactive).
pub const SKU_INACTIVE: &str = "SKU_INACTIVE";

/// Everything that can go wrong in the cart service.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    /// A field failed validation; the status carries `BadRequest` details.
    #[error("invalid request: {}", .0.message())]
    InvalidArgument(Status),
    /// `expected_version` did not match the cart.
    #[error("cart of {owner} is at version {actual}, not {expected}")]
    VersionConflict {
        /// The owner key (`c:<customer>` or `s:<session>`).
        owner: String,
        /// What the caller expected.
        expected: u64,
        /// What the cart is at.
        actual: u64,
    },
    /// The change does not fit the cart or the catalog (a cap, an unknown or inactive SKU).
    #[error("{reason}")]
    Precondition {
        /// Machine-readable kind, one of the constants in this module.
        kind: &'static str,
        /// What it is about (a SKU or an owner).
        subject: String,
        /// Lowercase human explanation.
        reason: String,
    },
    /// UpdateItem named a SKU that is not in the cart.
    #[error("sku {sku:?} is not in the cart")]
    LineNotFound {
        /// The SKU.
        sku: String,
    },
    /// Redis, the store, the catalog or inventory failed or did not answer in time.
    #[error("{dependency}: {detail}")]
    Unavailable {
        /// `redis`, `store`, `catalog` or `inventory`.
        dependency: &'static str,
        /// What went wrong, for the log only.
        detail: String,
    },
    /// A script or the cart hash held something this code does not understand (a deployment
    /// mismatch or a hand-edited key).
    #[error("unexpected data from {what}: {detail}")]
    Protocol {
        /// The script's file name, or `cart hash`.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl CartError {
    /// A precondition failure.
    pub fn precondition(kind: &'static str, subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Precondition {
            kind,
            subject: subject.into(),
            reason: reason.into(),
        }
    }

    /// A failed or late call to another service.
    pub fn upstream(dependency: &'static str, status: &Status) -> Self {
        Self::Unavailable {
            dependency,
            detail: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

impl From<fred::error::Error> for CartError {
    fn from(error: fred::error::Error) -> Self {
        Self::Unavailable {
            dependency: "redis",
            detail: error.to_string(),
        }
    }
}

impl From<StoreError> for CartError {
    fn from(error: StoreError) -> Self {
        Self::Unavailable {
            dependency: "store",
            detail: error.to_string(),
        }
    }
}

impl From<CartError> for Status {
    fn from(error: CartError) -> Self {
        match error {
            CartError::InvalidArgument(status) => status,
            CartError::VersionConflict { .. } => Status::aborted(error.to_string()),
            CartError::Precondition {
                kind,
                subject,
                reason,
            } => failed_precondition(kind, &subject, reason),
            CartError::LineNotFound { .. } => Status::not_found(error.to_string()),
            CartError::Unavailable { dependency, detail } => {
                // Logged once here at the boundary; the caller only learns it may retry.
                tracing::warn!(dependency, %detail, "cart dependency failed");
                Status::unavailable(format!("cart {dependency} unavailable; retry"))
            }
            CartError::Protocol { .. } => {
                tracing::error!(%error, "cart protocol mismatch");
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
        let conflict = CartError::VersionConflict {
            owner: "c:a".into(),
            expected: 1,
            actual: 2,
        };
        assert_eq!(Status::from(conflict).code(), Code::Aborted);
        let cap = Status::from(CartError::precondition(LINE_LIMIT, "c:a", "cart is full"));
        assert_eq!(cap.code(), Code::FailedPrecondition);
        let detail = cap.get_details_precondition_failure().expect("detail");
        assert_eq!(detail.violations[0].r#type, LINE_LIMIT);
        assert_eq!(
            Status::from(CartError::LineNotFound { sku: "A".into() }).code(),
            Code::NotFound
        );
        let down = Status::from(CartError::Unavailable {
            dependency: "store",
            detail: "disk on fire at /var/lib".into(),
        });
        assert_eq!(down.code(), Code::Unavailable);
        assert!(!down.message().contains("/var/lib"), "details stay in the log");
    }

    #[test]
    fn error_messages_are_lowercase() {
        let errors = [
            CartError::VersionConflict {
                owner: "c:a".into(),
                expected: 1,
                actual: 2,
            },
            CartError::LineNotFound { sku: "A".into() },
            CartError::Protocol {
                what: "cart_add.lua",
                detail: "x".into(),
            },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.starts_with(char::is_lowercase), "{message}");
        }
    }
}
