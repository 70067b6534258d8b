//! Request validation: every field checked, every violation reported at once.

use holdfast_platform::status::FieldViolations;
pub use holdfast_platform::validate::{id, sku};
use holdfast_proto::cart::v1::{CartOwner, cart_owner};

use crate::live::Owner;

/// Checks the `owner` field (exactly one of a customer or session id, each a valid id).
/// The returned owner is meaningful only when nothing was recorded.
pub fn owner(violations: &mut FieldViolations, field: &str, owner: Option<&CartOwner>) -> Owner {
    match owner.and_then(|o| o.owner.as_ref()) {
        None => {
            violations.add(field, "is required: set customer_id or session_id");
            Owner::Customer(String::new())
        }
        Some(cart_owner::Owner::CustomerId(customer)) => {
            id(violations, &format!("{field}.customer_id"), customer);
            Owner::Customer(customer.clone())
        }
        Some(cart_owner::Owner::SessionId(session)) => {
            id(violations, &format!("{field}.session_id"), session);
            Owner::Session(session.clone())
        }
    }
}

/// Checks that `quantity` lies in `min..=max`.
pub fn quantity(violations: &mut FieldViolations, field: &str, quantity: i64, min: i64, max: i64) {
    if !(min..=max).contains(&quantity) {
        violations.add(field, format!("must be {min}..{max}"));
    }
}

/// Highest version a cart can reach: versions live in Redis as Lua numbers (doubles),
/// exact only below 2^53 (and the scripts refuse anything larger).
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// Checks an `expected_version` (0 = any): beyond [`MAX_VERSION`] no cart can match it, and
/// the scripts could not even compare it.
pub fn expected_version(violations: &mut FieldViolations, field: &str, version: u64) {
    if version > MAX_VERSION {
        violations.add(field, format!("must be 0..{MAX_VERSION}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn fields(check: impl FnOnce(&mut FieldViolations)) -> Vec<String> {
        let mut violations = FieldViolations::new();
        check(&mut violations);
        match violations.into_result() {
            Ok(()) => vec![],
            Err(status) => status
                .get_details_bad_request()
                .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn expected_version_refuses_what_lua_cannot_compare() {
        assert!(fields(|v| expected_version(v, "expected_version", 0)).is_empty());
        assert!(fields(|v| expected_version(v, "expected_version", MAX_VERSION)).is_empty());
        for bad in [MAX_VERSION + 1, i64::MAX as u64, u64::MAX] {
            assert_eq!(
                fields(|v| expected_version(v, "expected_version", bad)),
                ["expected_version"]
            );
        }
    }

    fn customer(id: &str) -> CartOwner {
        Owner::Customer(id.into()).to_wire()
    }

    #[test]
    fn owner_names_the_bad_id_field() {
        assert!(
            fields(|v| {
                owner(v, "owner", Some(&customer("cust-1")));
            })
            .is_empty()
        );
        assert_eq!(
            fields(|v| {
                owner(v, "owner", None);
            }),
            ["owner"]
        );
        assert_eq!(
            fields(|v| {
                owner(v, "owner", Some(&CartOwner { owner: None }));
            }),
            ["owner"]
        );
        assert_eq!(
            fields(|v| {
                owner(v, "owner", Some(&customer("")));
            }),
            ["owner.customer_id"]
        );
        let session = Owner::Session("x{y}".into()).to_wire();
        assert_eq!(
            fields(|v| {
                owner(v, "owner", Some(&session));
            }),
            ["owner.session_id"]
        );
        assert_eq!(
            fields(|v| {
                owner(v, "owner", Some(&customer(&"x".repeat(129))));
            }),
            ["owner.customer_id"]
        );
    }

    #[test]
    fn quantity_checks_both_bounds() {
        assert!(fields(|v| quantity(v, "quantity", 1, 1, 99)).is_empty());
        assert!(fields(|v| quantity(v, "quantity", 99, 1, 99)).is_empty());
        assert_eq!(fields(|v| quantity(v, "quantity", 0, 1, 99)), ["quantity"]);
        assert_eq!(fields(|v| quantity(v, "quantity", 100, 1, 99)), ["quantity"]);
    }
}
