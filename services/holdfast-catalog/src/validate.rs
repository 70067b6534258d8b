//! Product validation: every field checked, every violation reported at once.

use holdfast_platform::status::FieldViolations;
pub use holdfast_platform::validate::currency;
use holdfast_platform::validate::sku;
use holdfast_proto::catalog::v1::Product;

/// Longest title.
pub const MAX_TITLE: usize = 200;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 10_000;
/// Longest category or brand.
pub const MAX_LABEL: usize = 64;
/// Most attributes on one product.
pub const MAX_ATTRIBUTES: usize = 50;
/// Lowest price in minor units. Payments authorize only positive amounts, so a free product
/// could be listed and carted but never checked out: it is refused here instead.
pub const MIN_PRICE_MINOR: i64 = 1;
/// Highest price in minor units (10 billion major units).
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;
/// Most SKUs in one BatchGetProducts.
pub const MAX_BATCH: usize = 100;

fn no_control(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// Checks every caller-settable field of `product`.
pub fn product(violations: &mut FieldViolations, product: Option<&Product>) {
    let Some(p) = product else {
        violations.add("product", "is required");
        return;
    };
    sku(violations, "product.sku", &p.sku);
    let title = p.title.trim();
    if title.is_empty() || p.title.chars().count() > MAX_TITLE || !no_control(&p.title) {
        violations.add(
            "product.title",
            format!("must be 1..{MAX_TITLE} characters of text"),
        );
    }
    if p.description.chars().count() > MAX_DESCRIPTION || !no_control(&p.description) {
        violations.add(
            "product.description",
            format!("must be at most {MAX_DESCRIPTION} characters of text"),
        );
    }
    match &p.price {
        None => {
            violations.add("product.price", "is required");
        }
        Some(price) => {
            if !(MIN_PRICE_MINOR..=MAX_PRICE_MINOR).contains(&price.amount_minor) {
                violations.add(
                    "product.price.amount_minor",
                    format!("must be {MIN_PRICE_MINOR}..{MAX_PRICE_MINOR} minor units (free products are not sold)"),
                );
            }
            currency(violations, "product.price.currency", &price.currency);
        }
    }
    if p.category.is_empty() || p.category.chars().count() > MAX_LABEL || !no_control(&p.category) {
        violations.add("product.category", format!("must be 1..{MAX_LABEL} characters"));
    }
    if p.brand.chars().count() > MAX_LABEL || !no_control(&p.brand) {
        violations.add("product.brand", format!("must be at most {MAX_LABEL} characters"));
    }
    if p.attributes.len() > MAX_ATTRIBUTES {
        violations.add(
            "product.attributes",
            format!("at most {MAX_ATTRIBUTES} attributes"),
        );
    }
    for (key, value) in &p.attributes {
        if key.is_empty()
            || key.len() > MAX_LABEL
            || value.len() > 256
            || !no_control(key)
            || !no_control(value)
        {
            violations.add(
                format!("product.attributes[{key:?}]"),
                format!("keys are 1..{MAX_LABEL} bytes and values at most 256 bytes of text"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::common::v1::Money;

    fn good() -> Product {
        Product {
            sku: "MUG-1".into(),
            title: "Mug".into(),
            price: Some(Money {
                amount_minor: 1299,
                currency: "EUR".into(),
            }),
            category: "kitchen".into(),
            ..Default::default()
        }
    }

    fn fields(p: Option<&Product>) -> Vec<String> {
        use tonic_types::StatusExt;
        let mut v = FieldViolations::new();
        product(&mut v, p);
        match v.into_result() {
            Ok(()) => vec![],
            Err(status) => status
                .get_details_bad_request()
                .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn product_accepts_a_plain_product() {
        assert!(fields(Some(&good())).is_empty());
    }

    #[test]
    fn product_refuses_a_zero_price_payments_could_not_charge() {
        let mut p = good();
        p.price = Some(Money {
            amount_minor: 0,
            currency: "EUR".into(),
        });
        assert_eq!(fields(Some(&p)), ["product.price.amount_minor"]);
        p.price = Some(Money {
            amount_minor: MIN_PRICE_MINOR,
            currency: "EUR".into(),
        });
        assert!(fields(Some(&p)).is_empty());
    }

    #[test]
    fn product_reports_every_bad_field() {
        let mut p = good();
        p.sku = "a b".into();
        p.title = "  ".into();
        p.price = Some(Money {
            amount_minor: -1,
            currency: "eur".into(),
        });
        p.category = String::new();
        assert_eq!(
            fields(Some(&p)),
            [
                "product.sku",
                "product.title",
                "product.price.amount_minor",
                "product.price.currency",
                "product.category"
            ]
        );
        assert_eq!(fields(None), ["product"]);
    }
}
