//! Request validation: every field checked, every violation reported at once, before
//! anything is claimed, held or written. Each RPC has one function here; the handlers in
//! [`crate::service`] call it first.

use holdfast_platform::status::FieldViolations;
use holdfast_proto::cart::v1::cart_owner;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CheckoutRequest, GetCheckoutRequest, InspectionResult, ListOrdersRequest,
    MarkReturnLostRequest, OrderStatus, ReceiveReturnRequest, RequestReturnRequest, checkout_request,
};
use holdfast_proto::warehouse::v1::ShippingSpeed;

use crate::error::OrdersError;

/// Test payment methods the simulated PSP knows (see holdfast.payments.v1).
pub const PAYMENT_METHODS: [&str; 5] = [
    "pm_card_visa",
    "pm_card_declined",
    "pm_card_insufficient_funds",
    "pm_card_timeout",
    "pm_card_flaky",
];
/// Most lines of an explicit checkout.
pub const MAX_LINES: usize = 100;
/// Most units per line.
pub const MAX_QUANTITY: i64 = 999;
/// Longest id (keys, customers, orders, returns, warehouses).
pub const MAX_ID: usize = 128;
/// Longest reason.
pub const MAX_REASON: usize = 500;
/// Longest inspection note.
pub const MAX_NOTE: usize = 1000;
/// Longest address field.
pub const MAX_ADDRESS_FIELD: usize = 200;
/// Page size when the request names none.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page.
pub const MAX_PAGE: u32 = 500;

fn into_result(v: FieldViolations) -> Result<(), OrdersError> {
    v.into_result().map_err(OrdersError::InvalidArgument)
}

/// A required text field: not empty, at most `max` characters, no control characters.
fn required(v: &mut FieldViolations, field: &str, value: &str, max: usize) {
    if value.is_empty() {
        v.add(field, "must not be empty");
    } else if value.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

/// An optional text field: at most `max` characters, no control characters.
fn optional(v: &mut FieldViolations, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

fn currency(v: &mut FieldViolations, field: &str, currency: &str) {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        v.add(field, "must be a 3-letter upper-case ISO-4217 code");
    }
}

/// GetCheckout's key.
pub fn get_checkout(request: &GetCheckoutRequest) -> Result<(), OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "idempotency_key", &request.idempotency_key, MAX_ID);
    into_result(v)
}

/// Every field of a checkout.
pub fn checkout(request: &CheckoutRequest) -> Result<(), OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "idempotency_key", &request.idempotency_key, MAX_ID);
    required(&mut v, "customer_id", &request.customer_id, MAX_ID);
    match &request.source {
        None => {
            v.add("source", "exactly one of cart or lines is required");
        }
        Some(checkout_request::Source::Cart(owner)) => match &owner.owner {
            None => {
                v.add("cart.owner", "customer_id or session_id is required");
            }
            Some(cart_owner::Owner::CustomerId(id)) => required(&mut v, "cart.customer_id", id, MAX_ID),
            Some(cart_owner::Owner::SessionId(id)) => required(&mut v, "cart.session_id", id, MAX_ID),
        },
        Some(checkout_request::Source::Lines(lines)) => {
            if lines.lines.is_empty() {
                v.add("lines.lines", "at least one line is required");
            } else if lines.lines.len() > MAX_LINES {
                v.add("lines.lines", format!("at most {MAX_LINES} lines"));
            }
            for (i, line) in lines.lines.iter().enumerate().take(MAX_LINES) {
                holdfast_platform::validate::sku(&mut v, &format!("lines.lines[{i}].sku"), &line.sku);
                if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                    v.add(
                        format!("lines.lines[{i}].quantity"),
                        format!("must be 1..{MAX_QUANTITY}"),
                    );
                }
                if let Some(price) = &line.expected_unit_price {
                    if price.amount_minor < 0 {
                        v.add(
                            format!("lines.lines[{i}].expected_unit_price.amount_minor"),
                            "must not be negative",
                        );
                    }
                    currency(
                        &mut v,
                        &format!("lines.lines[{i}].expected_unit_price.currency"),
                        &price.currency,
                    );
                }
            }
        }
    }
    match &request.shipping_address {
        None => {
            v.add("shipping_address", "is required");
        }
        Some(address) => {
            for (field, value) in [
                ("name", &address.name),
                ("line1", &address.line1),
                ("city", &address.city),
                ("postal_code", &address.postal_code),
            ] {
                required(
                    &mut v,
                    &format!("shipping_address.{field}"),
                    value,
                    MAX_ADDRESS_FIELD,
                );
            }
            optional(
                &mut v,
                "shipping_address.line2",
                &address.line2,
                MAX_ADDRESS_FIELD,
            );
            optional(
                &mut v,
                "shipping_address.region",
                &address.region,
                MAX_ADDRESS_FIELD,
            );
            if address.country.len() != 2 || !address.country.bytes().all(|b| b.is_ascii_uppercase()) {
                v.add(
                    "shipping_address.country",
                    "must be an upper-case ISO-3166-1 alpha-2 code",
                );
            }
            match &address.location {
                None => {
                    v.add("shipping_address.location", "is required (routing needs it)");
                }
                Some(point) => {
                    if !(-90.0..=90.0).contains(&point.latitude) {
                        v.add("shipping_address.location.latitude", "must be -90..90");
                    }
                    if !(-180.0..=180.0).contains(&point.longitude) {
                        v.add("shipping_address.location.longitude", "must be -180..180");
                    }
                }
            }
        }
    }
    if request.payment_method.is_empty() {
        v.add("payment_method", "must not be empty");
    } else if !PAYMENT_METHODS.contains(&request.payment_method.as_str()) {
        v.add(
            "payment_method",
            format!("unknown payment method; one of {}", PAYMENT_METHODS.join(", ")),
        );
    }
    if ShippingSpeed::try_from(request.shipping_speed).is_err() {
        v.add("shipping_speed", "unknown shipping speed");
    }
    into_result(v)
}

/// An order id.
pub fn order_id(order_id: &str) -> Result<(), OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "order_id", order_id, MAX_ID);
    into_result(v)
}

/// ListOrders: the customer, known statuses, the page size; returns the page size to use.
pub fn list_orders(request: &ListOrdersRequest) -> Result<u32, OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "customer_id", &request.customer_id, MAX_ID);
    for (i, status) in request.statuses.iter().enumerate() {
        if !matches!(OrderStatus::try_from(*status), Ok(s) if s != OrderStatus::Unspecified) {
            v.add(format!("statuses[{i}]"), "unknown order status");
        }
    }
    let page_size = request.page.as_ref().map_or(0, |p| p.page_size);
    if page_size > MAX_PAGE {
        v.add("page.page_size", format!("must be at most {MAX_PAGE}"));
    }
    into_result(v)?;
    Ok(if page_size == 0 { DEFAULT_PAGE } else { page_size })
}

/// CancelOrder.
pub fn cancel_order(request: &CancelOrderRequest) -> Result<(), OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "order_id", &request.order_id, MAX_ID);
    optional(&mut v, "reason", &request.reason, MAX_REASON);
    into_result(v)
}

/// RequestReturn.
pub fn request_return(request: &RequestReturnRequest) -> Result<(), OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "order_id", &request.order_id, MAX_ID);
    optional(&mut v, "reason", &request.reason, MAX_REASON);
    // Units per SKU, summed with checked arithmetic: lines of one SKU add up.
    let mut units: Vec<(&str, i64)> = Vec::new();
    for (i, line) in request.lines.iter().enumerate() {
        holdfast_platform::validate::sku(&mut v, &format!("lines[{i}].sku"), &line.sku);
        if line.quantity < 1 {
            v.add(format!("lines[{i}].quantity"), "must be at least 1");
            continue;
        }
        match units.iter_mut().find(|(sku, _)| *sku == line.sku) {
            None => units.push((&line.sku, line.quantity)),
            Some((_, total)) => match total.checked_add(line.quantity) {
                Some(sum) => *total = sum,
                None => {
                    v.add(
                        format!("lines[{i}].quantity"),
                        "the quantities of this SKU add up past any order",
                    );
                }
            },
        }
    }
    into_result(v)
}

/// ReceiveReturn; returns the inspection result (PASSED or FAILED).
pub fn receive_return(request: &ReceiveReturnRequest) -> Result<InspectionResult, OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "order_id", &request.order_id, MAX_ID);
    required(&mut v, "return_id", &request.return_id, MAX_ID);
    optional(&mut v, "inspection_note", &request.inspection_note, MAX_NOTE);
    optional(&mut v, "warehouse_id", &request.warehouse_id, MAX_ID);
    let inspection = InspectionResult::try_from(request.inspection).unwrap_or(InspectionResult::Unspecified);
    if inspection == InspectionResult::Unspecified {
        v.add("inspection", "must be PASSED or FAILED");
    }
    into_result(v)?;
    Ok(inspection)
}

/// MarkReturnLost.
pub fn mark_return_lost(request: &MarkReturnLostRequest) -> Result<(), OrdersError> {
    let mut v = FieldViolations::new();
    required(&mut v, "order_id", &request.order_id, MAX_ID);
    optional(&mut v, "reason", &request.reason, MAX_REASON);
    into_result(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::common::v1::{Address, GeoPoint};
    use holdfast_proto::orders::v1::{CheckoutLine, CheckoutLines, ReturnLine};
    use tonic::Code;
    use tonic_types::StatusExt;

    /// The fields a validation refused, or none.
    fn refused(result: Result<(), OrdersError>) -> Vec<String> {
        match result {
            Ok(()) => Vec::new(),
            Err(OrdersError::InvalidArgument(status)) => {
                assert_eq!(status.code(), Code::InvalidArgument);
                status
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default()
            }
            Err(other) => panic!("not an invalid argument: {other:?}"),
        }
    }

    fn good_checkout() -> CheckoutRequest {
        CheckoutRequest {
            idempotency_key: "k".into(),
            customer_id: "c".into(),
            source: Some(checkout_request::Source::Lines(CheckoutLines {
                lines: vec![CheckoutLine {
                    sku: "mug".into(),
                    quantity: 1,
                    expected_unit_price: None,
                }],
            })),
            shipping_address: Some(Address {
                name: "Ada".into(),
                line1: "1 Way".into(),
                city: "London".into(),
                postal_code: "N1".into(),
                country: "GB".into(),
                location: Some(GeoPoint {
                    latitude: 51.5,
                    longitude: -0.1,
                }),
                ..Address::default()
            }),
            payment_method: "pm_card_visa".into(),
            ..CheckoutRequest::default()
        }
    }

    #[test]
    fn request_return_quantities_summing_past_i64_are_invalid_not_a_panic() {
        let request = RequestReturnRequest {
            order_id: "ord_1".into(),
            lines: vec![
                ReturnLine {
                    sku: "mug".into(),
                    quantity: 1,
                },
                ReturnLine {
                    sku: "mug".into(),
                    quantity: i64::MAX,
                },
            ],
            reason: String::new(),
        };
        assert_eq!(refused(request_return(&request)), ["lines[1].quantity"]);
        let apart = RequestReturnRequest {
            lines: vec![
                ReturnLine {
                    sku: "mug".into(),
                    quantity: i64::MAX,
                },
                ReturnLine {
                    sku: "bowl".into(),
                    quantity: i64::MAX,
                },
            ],
            ..request
        };
        assert!(
            refused(request_return(&apart)).is_empty(),
            "different SKUs do not add up"
        );
    }

    #[test]
    fn optional_text_fields_refuse_control_characters() {
        assert!(refused(checkout(&good_checkout())).is_empty());
        let mut request = good_checkout();
        let address = request.shipping_address.as_mut().expect("address");
        address.line2 = "flat\u{0}2".into();
        address.region = "greater\nlondon".into();
        assert_eq!(
            refused(checkout(&request)),
            ["shipping_address.line2", "shipping_address.region"]
        );
        let cancel = CancelOrderRequest {
            order_id: "ord_1".into(),
            reason: "changed\u{7}mind".into(),
        };
        assert_eq!(refused(cancel_order(&cancel)), ["reason"]);
        let ret = RequestReturnRequest {
            order_id: "ord_1".into(),
            lines: Vec::new(),
            reason: "too\rsmall".into(),
        };
        assert_eq!(refused(request_return(&ret)), ["reason"]);
        let lost = MarkReturnLostRequest {
            order_id: "ord_1".into(),
            reason: "gone\u{1b}[31m".into(),
        };
        assert_eq!(refused(mark_return_lost(&lost)), ["reason"]);
        let receive = ReceiveReturnRequest {
            order_id: "ord_1".into(),
            return_id: "rma_1".into(),
            inspection: InspectionResult::Passed as i32,
            inspection_note: "ok\u{0}".into(),
            warehouse_id: "w\t1".into(),
        };
        assert_eq!(
            refused(receive_return(&receive).map(|_| ())),
            ["inspection_note", "warehouse_id"]
        );
    }
}
