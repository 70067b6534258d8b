//! Request validation: every field checked, every violation reported at once as
//! `INVALID_ARGUMENT` with `google.rpc.BadRequest` details.

use holdfast_platform::status::FieldViolations;
pub use holdfast_platform::validate::currency;
use holdfast_platform::validate::{max_chars, page_size, required_text};
use holdfast_proto::common::v1::Money;
use holdfast_proto::payments::v1::get_payment_request::Lookup;
use holdfast_proto::payments::v1::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, LedgerEntryKind, ListLedgerEntriesRequest,
    RefundRequest, VoidRequest,
};
use uuid::Uuid;

use crate::error::PaymentsError;

/// Longest idempotency key, customer id or order reference, in characters.
pub const MAX_KEY_LEN: usize = 128;
/// Longest refund reason, in characters.
pub const MAX_REASON_LEN: usize = 500;
/// Page size when the request leaves it 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Prefix of payment ids.
pub const PAYMENT_ID_PREFIX: &str = "pay_";
/// Prefix of refund ids.
pub const REFUND_ID_PREFIX: &str = "re_";

/// The test payment methods of the proto's service comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMethod {
    /// `pm_card_visa`: authorizes.
    Visa,
    /// `pm_card_declined`: declines with `card_declined`.
    Declined,
    /// `pm_card_insufficient_funds`: declines with `insufficient_funds`.
    InsufficientFunds,
    /// `pm_card_timeout`: authorizes, but never answers before the caller's deadline.
    Timeout,
    /// `pm_card_flaky`: the first Authorize of each key is UNAVAILABLE; retries authorize.
    Flaky,
}

impl TestMethod {
    /// Every method, for messages and tests.
    pub const ALL: [TestMethod; 5] = [
        Self::Visa,
        Self::Declined,
        Self::InsufficientFunds,
        Self::Timeout,
        Self::Flaky,
    ];

    /// The wire name, e.g. `pm_card_visa`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Visa => "pm_card_visa",
            Self::Declined => "pm_card_declined",
            Self::InsufficientFunds => "pm_card_insufficient_funds",
            Self::Timeout => "pm_card_timeout",
            Self::Flaky => "pm_card_flaky",
        }
    }

    /// The method called `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Why the card declines, or `None` when it authorizes.
    pub fn decline_code(self) -> Option<&'static str> {
        match self {
            Self::Declined => Some("card_declined"),
            Self::InsufficientFunds => Some("insufficient_funds"),
            Self::Visa | Self::Timeout | Self::Flaky => None,
        }
    }
}

fn checked(violations: FieldViolations) -> Result<(), PaymentsError> {
    violations.into_result().map_err(PaymentsError::InvalidArgument)
}

/// A client-made idempotency key: 1..128 characters.
pub fn idempotency_key(violations: &mut FieldViolations, field: &str, key: &str) {
    bounded_text(violations, field, key, MAX_KEY_LEN);
}

/// Required text of 1..`max` characters without control characters.
fn bounded_text(violations: &mut FieldViolations, field: &str, text: &str, max: usize) {
    required_text(violations, field, text, max);
    if text.chars().any(char::is_control) {
        violations.add(field, "must not contain control characters");
    }
}

/// A positive amount with a currency, at `field` (`amount`).
pub fn money(violations: &mut FieldViolations, field: &str, money: &Money) {
    if money.amount_minor <= 0 {
        violations.add(format!("{field}.amount_minor"), "must be greater than 0");
    }
    currency(violations, &format!("{field}.currency"), &money.currency);
}

/// Whether `id` is `<prefix>` followed by a hyphenated UUID.
fn prefixed_uuid(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 36 && Uuid::try_parse(rest).is_ok())
}

/// A server-made payment id: `pay_` and a UUID.
pub fn payment_id(violations: &mut FieldViolations, field: &str, id: &str) {
    if id.is_empty() {
        violations.add(field, "is required");
    } else if !prefixed_uuid(id, PAYMENT_ID_PREFIX) {
        violations.add(
            field,
            "must be a payment id as returned by Authorize: \"pay_\" and a UUID",
        );
    }
}

/// Checks an Authorize request; answers its test payment method.
pub fn authorize(request: &AuthorizeRequest) -> Result<TestMethod, PaymentsError> {
    let mut violations = FieldViolations::new();
    idempotency_key(&mut violations, "idempotency_key", &request.idempotency_key);
    match &request.amount {
        None => {
            violations.add("amount", "is required");
        }
        Some(amount) => money(&mut violations, "amount", amount),
    }
    let method = TestMethod::parse(&request.payment_method);
    if method.is_none() {
        let known: Vec<_> = TestMethod::ALL.iter().map(|m| m.name()).collect();
        violations.add(
            "payment_method",
            format!("must be a test payment method: {}", known.join(", ")),
        );
    }
    required_text(&mut violations, "customer_id", &request.customer_id, MAX_KEY_LEN);
    required_text(
        &mut violations,
        "order_reference",
        &request.order_reference,
        MAX_KEY_LEN,
    );
    checked(violations)?;
    method.ok_or_else(|| PaymentsError::InvalidArgument(tonic::Status::invalid_argument("payment_method")))
}

/// Checks a Capture request.
pub fn capture(request: &CaptureRequest) -> Result<(), PaymentsError> {
    let mut violations = FieldViolations::new();
    idempotency_key(&mut violations, "idempotency_key", &request.idempotency_key);
    payment_id(&mut violations, "payment_id", &request.payment_id);
    if let Some(amount) = &request.amount {
        money(&mut violations, "amount", amount);
    }
    checked(violations)
}

/// Checks a Void request.
pub fn void(request: &VoidRequest) -> Result<(), PaymentsError> {
    let mut violations = FieldViolations::new();
    idempotency_key(&mut violations, "idempotency_key", &request.idempotency_key);
    payment_id(&mut violations, "payment_id", &request.payment_id);
    checked(violations)
}

/// Checks a Refund request.
pub fn refund(request: &RefundRequest) -> Result<(), PaymentsError> {
    let mut violations = FieldViolations::new();
    idempotency_key(&mut violations, "idempotency_key", &request.idempotency_key);
    payment_id(&mut violations, "payment_id", &request.payment_id);
    if let Some(amount) = &request.amount {
        money(&mut violations, "amount", amount);
    }
    max_chars(&mut violations, "reason", &request.reason, MAX_REASON_LEN);
    checked(violations)
}

/// Checks a GetPayment request; answers its lookup.
pub fn get_payment(request: &GetPaymentRequest) -> Result<&Lookup, PaymentsError> {
    let mut violations = FieldViolations::new();
    match &request.lookup {
        None => {
            violations.add(
                "lookup",
                "set exactly one of payment_id or authorize_idempotency_key",
            );
        }
        Some(Lookup::PaymentId(id)) => payment_id(&mut violations, "payment_id", id),
        Some(Lookup::AuthorizeIdempotencyKey(key)) => {
            idempotency_key(&mut violations, "authorize_idempotency_key", key);
        }
    }
    checked(violations)?;
    request
        .lookup
        .as_ref()
        .ok_or_else(|| PaymentsError::InvalidArgument(tonic::Status::invalid_argument("lookup")))
}

/// A checked ListLedgerEntries request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerQuery {
    /// Only this payment's entries, if set.
    pub payment_id: Option<String>,
    /// Only entries with this order reference, if set.
    pub order_reference: Option<String>,
    /// Only this kind, if set.
    pub kind: Option<LedgerEntryKind>,
    /// Only entries posted at or after this time, Unix ms (0 = all).
    pub since_unix_ms: i64,
    /// Only entries with a larger id (the page token).
    pub after_entry_id: Option<String>,
    /// Most entries to return.
    pub limit: u32,
}

/// Checks a ListLedgerEntries request and turns it into a query.
pub fn list_ledger_entries(request: &ListLedgerEntriesRequest) -> Result<LedgerQuery, PaymentsError> {
    let mut violations = FieldViolations::new();
    if !request.payment_id.is_empty() {
        payment_id(&mut violations, "payment_id", &request.payment_id);
    }
    if request.order_reference.chars().count() > MAX_KEY_LEN
        || request.order_reference.chars().any(char::is_control)
    {
        violations.add(
            "order_reference",
            format!("must be at most {MAX_KEY_LEN} characters, no control characters"),
        );
    }
    let kind = match LedgerEntryKind::try_from(request.kind) {
        Ok(LedgerEntryKind::Unspecified) => None,
        Ok(kind) => Some(kind),
        Err(_) => {
            violations.add("kind", "must be a LedgerEntryKind value");
            None
        }
    };
    if request.since_unix_ms < 0 {
        violations.add("since_unix_ms", "must not be negative");
    }
    let page = request.page.clone().unwrap_or_default();
    let limit = page_size(
        &mut violations,
        "page.page_size",
        page.page_size,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    );
    // The token is the last entry id of the previous page, compared as stored (hyphenated).
    let after_entry_id = if page.page_token.is_empty() {
        None
    } else {
        match Uuid::try_parse(&page.page_token) {
            Ok(id) => Some(id.hyphenated().to_string()),
            Err(_) => {
                violations.add(
                    "page.page_token",
                    "must be a next_page_token from an earlier response",
                );
                None
            }
        }
    };
    checked(violations)?;
    Ok(LedgerQuery {
        payment_id: (!request.payment_id.is_empty()).then(|| request.payment_id.clone()),
        order_reference: (!request.order_reference.is_empty()).then(|| request.order_reference.clone()),
        kind,
        since_unix_ms: request.since_unix_ms,
        after_entry_id,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::common::v1::PageRequest;
    use tonic_types::StatusExt;

    fn fields<T>(result: Result<T, PaymentsError>) -> Vec<String> {
        match result {
            Err(PaymentsError::InvalidArgument(status)) => status
                .get_details_bad_request()
                .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
                .unwrap_or_default(),
            _ => vec![],
        }
    }

    fn good_authorize() -> AuthorizeRequest {
        AuthorizeRequest {
            idempotency_key: "k1".into(),
            amount: Some(Money {
                amount_minor: 1299,
                currency: "EUR".into(),
            }),
            payment_method: "pm_card_visa".into(),
            customer_id: "cus_1".into(),
            order_reference: "ord_1".into(),
        }
    }

    #[test]
    fn authorize_accepts_every_test_method() {
        for method in TestMethod::ALL {
            let request = AuthorizeRequest {
                payment_method: method.name().into(),
                ..good_authorize()
            };
            assert_eq!(authorize(&request).ok(), Some(method));
        }
    }

    #[test]
    fn authorize_reports_every_bad_field() {
        let request = AuthorizeRequest {
            idempotency_key: "x".repeat(129),
            amount: Some(Money {
                amount_minor: 0,
                currency: "eur".into(),
            }),
            payment_method: "pm_card_amex".into(),
            customer_id: String::new(),
            order_reference: "é".repeat(129),
        };
        assert_eq!(
            fields(authorize(&request)),
            [
                "idempotency_key",
                "amount.amount_minor",
                "amount.currency",
                "payment_method",
                "customer_id",
                "order_reference"
            ]
        );
        assert_eq!(
            fields(authorize(&AuthorizeRequest {
                amount: None,
                idempotency_key: String::new(),
                ..good_authorize()
            })),
            ["idempotency_key", "amount"]
        );
    }

    #[test]
    fn idempotency_key_counts_characters_not_bytes() {
        let request = AuthorizeRequest {
            idempotency_key: "é".repeat(128),
            ..good_authorize()
        };
        assert!(authorize(&request).is_ok());
    }

    #[test]
    fn payment_id_must_be_pay_and_a_uuid() {
        let ok = format!("pay_{}", Uuid::now_v7());
        for bad in [
            "",
            "pay_",
            "pay_xyz",
            "re_0193a5c4-7e2b-7c1d-9a3f-2b8c4d5e6f70",
            "0193a5c4-7e2b-7c1d-9a3f-2b8c4d5e6f70",
        ] {
            let mut v = FieldViolations::new();
            payment_id(&mut v, "payment_id", bad);
            assert!(!v.is_empty(), "{bad:?}");
        }
        let mut v = FieldViolations::new();
        payment_id(&mut v, "payment_id", &ok);
        assert!(v.is_empty());
    }

    #[test]
    fn refund_limits_the_reason() {
        let request = RefundRequest {
            idempotency_key: "r".into(),
            payment_id: format!("pay_{}", Uuid::now_v7()),
            amount: None,
            reason: "x".repeat(501),
        };
        assert_eq!(fields(refund(&request)), ["reason"]);
    }

    #[test]
    fn list_ledger_entries_defaults_and_limits_the_page() {
        let query = list_ledger_entries(&ListLedgerEntriesRequest::default()).expect("valid");
        assert_eq!(query.limit, DEFAULT_PAGE_SIZE);
        let bad = ListLedgerEntriesRequest {
            payment_id: "nope".into(),
            kind: 99,
            since_unix_ms: -1,
            page: Some(PageRequest {
                page_size: 501,
                page_token: "garbage".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(list_ledger_entries(&bad)),
            [
                "payment_id",
                "kind",
                "since_unix_ms",
                "page.page_size",
                "page.page_token"
            ]
        );
    }

    #[test]
    fn get_payment_requires_a_lookup() {
        assert_eq!(
            fields(get_payment(&GetPaymentRequest { lookup: None })),
            ["lookup"]
        );
    }
}
