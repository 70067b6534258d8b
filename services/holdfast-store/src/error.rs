//! The store's one error type, shared by every aggregate and backend.

/// Everything a store call can fail with. Backend errors are flattened into strings so
/// callers never depend on rusqlite or the ScyllaDB driver; "not there" on a plain read is
/// an `Ok(None)`, not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A conditional write named something that does not exist (e.g. a product update with
    /// `expected_version = Some(3)` for an unknown SKU).
    #[error("{0} not found")]
    NotFound(String),
    /// An optimistic write lost: the stored version is not the one the caller expected.
    /// `actual` is 0 when nothing is stored.
    #[error("version conflict: expected version {expected}, found {actual}")]
    VersionConflict {
        /// The version the caller based its write on.
        expected: u64,
        /// The version stored when the write was refused.
        actual: u64,
    },
    /// The request itself is unusable (empty key, unknown cursor, page size 0...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend could not be reached or refused the call; retrying may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with data this code cannot read (bad schema, bad encoding).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A stored signed integer that must be a version (never negative).
    pub(crate) fn version_from_i64(stored: i64) -> Result<u64, StoreError> {
        u64::try_from(stored).map_err(|_| StoreError::Corrupt(format!("negative version {stored}")))
    }

    /// A version as the backends store it (a signed 64-bit integer).
    pub(crate) fn version_to_i64(version: u64) -> Result<i64, StoreError> {
        i64::try_from(version)
            .map_err(|_| StoreError::InvalidArgument(format!("version {version} exceeds {}", i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_conversion_refuses_out_of_range() {
        assert_eq!(StoreError::version_from_i64(7), Ok(7));
        assert!(matches!(
            StoreError::version_from_i64(-1),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(StoreError::version_to_i64(7), Ok(7));
        assert!(matches!(
            StoreError::version_to_i64(u64::MAX),
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[test]
    fn error_messages_are_lowercase() {
        let errors = [
            StoreError::NotFound("product \"a\"".into()),
            StoreError::VersionConflict {
                expected: 1,
                actual: 2,
            },
            StoreError::InvalidArgument("x".into()),
            StoreError::Unavailable("x".into()),
            StoreError::Corrupt("x".into()),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.starts_with(char::is_lowercase), "{message}");
        }
    }
}
