//! `google.rpc` rich error details for `INVALID_ARGUMENT` and friends (tonic-types).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Most violations listed in one `BadRequest`; the rest are summed up in a last entry. Every
/// violation costs ~100 bytes of `grpc-status-details-bin`, and hyper clients refuse a header
/// block over 16 KiB (grpc-java over 8 KiB), so an uncapped list turns INVALID_ARGUMENT into a
/// transport error.
pub const MAX_VIOLATIONS: usize = 50;
/// Longest field path or description kept, in bytes: both may echo client input.
pub const MAX_VIOLATION_TEXT: usize = 256;
/// Bytes of listed violations (fields plus descriptions) before the rest are only counted:
/// with [`MAX_VIOLATION_TEXT`] this keeps the header block far below 16 KiB.
pub const MAX_DETAIL_BYTES: usize = 4096;

/// `text` cut to at most `max` bytes at a character boundary, marked with "…" when cut.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Collects field violations while a request is validated; empty means valid.
#[derive(Debug, Default)]
pub struct FieldViolations {
    details: ErrorDetails,
    count: usize,
    listed: usize,
    listed_bytes: usize,
    first: Option<String>,
}

impl FieldViolations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a proto path like `lines[2].quantity`) is invalid because of `why`.
    pub fn add(&mut self, field: impl Into<String>, why: impl Into<String>) -> &mut Self {
        let field = bounded(field.into(), MAX_VIOLATION_TEXT);
        let why = bounded(why.into(), MAX_VIOLATION_TEXT);
        if self.first.is_none() {
            self.first = Some(format!("{field}: {why}"));
        }
        let size = field.len() + why.len();
        if self.listed < MAX_VIOLATIONS && self.listed_bytes + size <= MAX_DETAIL_BYTES {
            self.details.add_bad_request_violation(field, why);
            self.listed += 1;
            self.listed_bytes += size;
        }
        self.count += 1;
        self
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `Ok(())` when valid, else `INVALID_ARGUMENT` with a `BadRequest` listing every violation.
    pub fn into_result(self) -> Result<(), Status> {
        if self.count == 0 {
            return Ok(());
        }
        let mut message = self.first.unwrap_or_default();
        if self.count > 1 {
            message.push_str(&format!(" (and {} more)", self.count - 1));
        }
        let mut details = self.details;
        if self.count > self.listed {
            details.add_bad_request_violation(
                "...",
                format!("and {} more violations not listed", self.count - self.listed),
            );
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            details,
        ))
    }
}

/// `FAILED_PRECONDITION` with a `PreconditionFailure` detail of one violation.
pub fn failed_precondition(kind: &str, subject: &str, why: impl Into<String>) -> Status {
    let why = why.into();
    let mut details = ErrorDetails::new();
    details.add_precondition_failure_violation(kind, subject, why.clone());
    Status::with_error_details(Code::FailedPrecondition, why, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_violations_become_bad_request_details() {
        let mut violations = FieldViolations::new();
        violations
            .add("sku", "must not be empty")
            .add("quantity", "must be positive");
        let status = violations.into_result().expect_err("two violations");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "sku: must not be empty (and 1 more)");
        let bad = status.get_details_bad_request().expect("bad request detail");
        let fields: Vec<_> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["sku", "quantity"]);
    }

    #[test]
    fn field_violations_are_capped_with_a_count_of_the_rest() {
        let mut violations = FieldViolations::new();
        for i in 0..500 {
            violations.add(format!("lines[{i}].sku"), "must not be empty");
        }
        let status = violations.into_result().expect_err("500 violations");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "lines[0].sku: must not be empty (and 499 more)");
        let bad = status.get_details_bad_request().expect("bad request detail");
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS + 1);
        assert_eq!(bad.field_violations[MAX_VIOLATIONS - 1].field, "lines[49].sku");
        let last = &bad.field_violations[MAX_VIOLATIONS];
        assert_eq!(last.description, "and 450 more violations not listed");
        assert!(
            status.details().len() < 8 * 1024,
            "{} bytes",
            status.details().len()
        );
    }

    #[test]
    fn field_violations_bound_echoed_input_and_total_size() {
        let mut violations = FieldViolations::new();
        for i in 0..40 {
            violations.add(format!("tokens[{i}]"), format!("bad token {}", "😀".repeat(4000)));
        }
        let status = violations.into_result().expect_err("40 violations");
        let bad = status.get_details_bad_request().expect("bad request detail");
        assert!(
            bad.field_violations
                .iter()
                .all(|v| v.description.len() <= MAX_VIOLATION_TEXT)
        );
        assert!(bad.field_violations.len() < 40, "{}", bad.field_violations.len());
        assert!(
            bad.field_violations
                .last()
                .expect("last")
                .description
                .contains("more violations")
        );
        assert!(
            status.message().len() <= 2 * MAX_VIOLATION_TEXT + 32,
            "{}",
            status.message().len()
        );
        assert!(
            status.details().len() < 8 * 1024,
            "{} bytes",
            status.details().len()
        );
    }

    #[test]
    fn field_violations_empty_is_ok() {
        assert!(FieldViolations::new().into_result().is_ok());
    }
}
