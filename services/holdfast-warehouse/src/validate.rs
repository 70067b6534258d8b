//! Field checks of the warehouse API. SKUs and client-made ids use the platform's rules,
//! so they mean the same as in inventory and orders.

use holdfast_platform::status::FieldViolations;
use holdfast_platform::validate;
use holdfast_proto::common::v1::{GeoPoint, PageRequest};
use holdfast_proto::warehouse::v1::{ShippingOption, ShippingSpeed, Warehouse};

/// Longest warehouse id.
pub const MAX_WAREHOUSE_ID: usize = 64;
/// Longest region name (as the `--region` flag).
pub const MAX_REGION: usize = 32;
/// Longest warehouse display name.
pub const MAX_NAME: usize = 200;
/// Most lines in a goods receipt, and SKUs in a stock read.
pub const MAX_LINES: usize = 100;
/// Most units of one line of a goods receipt.
pub const MAX_RECEIPT_UNITS: i64 = 1_000_000;
/// Largest physical count a stock take may set.
pub const MAX_PHYSICAL: i64 = 1_000_000_000;
/// Longest promise, days.
pub const MAX_DAYS: u32 = 60;
/// Longest carrier name.
pub const MAX_CARRIER: usize = 64;
/// Longest tracking number.
pub const MAX_TRACKING: usize = 128;
/// Longest shrinkage note, characters.
pub const MAX_NOTE: usize = 1000;
/// Default and largest page size.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE: u32 = 500;

/// A warehouse id: 1..64 characters of `[a-z0-9-]`.
pub fn warehouse_id(v: &mut FieldViolations, field: &str, id: &str) {
    slug(v, field, id, MAX_WAREHOUSE_ID);
}

/// A region: 1..32 characters of `[a-z0-9-]`, as the services' `--region`.
pub fn region(v: &mut FieldViolations, field: &str, region: &str) {
    slug(v, field, region, MAX_REGION);
}

fn slug(v: &mut FieldViolations, field: &str, value: &str, max: usize) {
    if value.is_empty() || value.len() > max {
        v.add(field, format!("must be 1..{max} characters"));
    } else if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        v.add(field, "must contain only a-z, 0-9 and '-'");
    }
}

/// A SKU, as everywhere.
pub fn sku(v: &mut FieldViolations, field: &str, sku: &str) {
    validate::sku(v, field, sku);
}

/// A client-made id (receipt, shrinkage, shipment...), as everywhere.
pub fn id(v: &mut FieldViolations, field: &str, id: &str) {
    validate::id(v, field, id);
}

/// A required point with latitude -90..90 and longitude -180..180.
pub fn location(v: &mut FieldViolations, field: &str, location: Option<&GeoPoint>) {
    let Some(point) = location else {
        v.add(field, "is required");
        return;
    };
    if !(-90.0..=90.0).contains(&point.latitude) {
        v.add(format!("{field}.latitude"), "must be -90..90");
    }
    if !(-180.0..=180.0).contains(&point.longitude) {
        v.add(format!("{field}.longitude"), "must be -180..180");
    }
}

/// A speed a request names: any known value (unspecified means standard).
pub fn speed(v: &mut FieldViolations, field: &str, speed: i32) {
    if ShippingSpeed::try_from(speed).is_err() {
        v.add(field, "unknown shipping speed");
    }
}

/// The options of a warehouse: at least one, one per speed, each a known speed with
/// `max_days` 0..60.
pub fn shipping_options(v: &mut FieldViolations, field: &str, options: &[ShippingOption]) {
    if options.is_empty() {
        v.add(field, "must offer at least one shipping option");
    }
    let mut seen = Vec::new();
    for (i, option) in options.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match ShippingSpeed::try_from(option.speed) {
            Ok(ShippingSpeed::Unspecified) | Err(_) => {
                v.add(format!("{at}.speed"), "must be STANDARD, EXPRESS or SAME_DAY");
            }
            Ok(_) if seen.contains(&option.speed) => {
                v.add(format!("{at}.speed"), "at most one option per speed");
            }
            Ok(_) => seen.push(option.speed),
        }
        if option.max_days > MAX_DAYS {
            v.add(format!("{at}.max_days"), format!("must be 0..{MAX_DAYS}"));
        }
    }
}

/// A whole warehouse of an upsert.
pub fn warehouse(v: &mut FieldViolations, warehouse: Option<&Warehouse>) {
    let Some(w) = warehouse else {
        v.add("warehouse", "is required");
        return;
    };
    warehouse_id(v, "warehouse.id", &w.id);
    validate::max_chars(v, "warehouse.name", &w.name, MAX_NAME);
    if w.name.chars().any(char::is_control) {
        v.add("warehouse.name", "must not contain control characters");
    }
    region(v, "warehouse.region", &w.region);
    location(v, "warehouse.location", w.location.as_ref());
    shipping_options(v, "warehouse.shipping_options", &w.shipping_options);
}

/// A page request: its size (default 50, at most 500) and cursor.
pub fn page(v: &mut FieldViolations, field: &str, page: Option<&PageRequest>) -> (u32, Option<String>) {
    let Some(page) = page else {
        return (DEFAULT_PAGE, None);
    };
    let size = validate::page_size(
        v,
        &format!("{field}.page_size"),
        page.page_size,
        DEFAULT_PAGE,
        MAX_PAGE,
    );
    let token = (!page.page_token.is_empty()).then(|| page.page_token.clone());
    (size, token)
}

/// Text of 1..`max` characters without control characters.
pub use holdfast_platform::validate::text;

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(check: impl Fn(&mut FieldViolations)) -> bool {
        let mut v = FieldViolations::new();
        check(&mut v);
        !v.is_empty()
    }

    fn option(speed: ShippingSpeed, max_days: u32) -> ShippingOption {
        ShippingOption {
            speed: speed as i32,
            max_days,
            max_distance_km: 0,
        }
    }

    #[test]
    fn warehouse_ids_and_regions_are_lowercase_slugs() {
        assert!(!bad(|v| warehouse_id(v, "id", "fra-1")));
        for wrong in ["", "FRA-1", "fra_1", "fra 1", &"x".repeat(65)] {
            assert!(bad(|v| warehouse_id(v, "id", wrong)), "{wrong:?}");
        }
        assert!(!bad(|v| region(v, "region", "eu-central")));
        assert!(bad(|v| region(v, "region", &"r".repeat(33))));
    }

    #[test]
    fn shipping_options_need_one_known_speed_each() {
        assert!(!bad(|v| shipping_options(
            v,
            "o",
            &[
                option(ShippingSpeed::Standard, 5),
                option(ShippingSpeed::SameDay, 0)
            ]
        )));
        assert!(bad(|v| shipping_options(v, "o", &[])));
        assert!(bad(|v| shipping_options(
            v,
            "o",
            &[
                option(ShippingSpeed::Standard, 5),
                option(ShippingSpeed::Standard, 3)
            ]
        )));
        assert!(bad(|v| shipping_options(
            v,
            "o",
            &[option(ShippingSpeed::Unspecified, 5)]
        )));
        assert!(bad(|v| shipping_options(
            v,
            "o",
            &[option(ShippingSpeed::Express, 61)]
        )));
        assert!(bad(|v| shipping_options(
            v,
            "o",
            &[ShippingOption {
                speed: 42,
                ..option(ShippingSpeed::Express, 1)
            }]
        )));
    }

    #[test]
    fn locations_are_required_and_on_the_globe() {
        assert!(bad(|v| location(v, "l", None)));
        for (latitude, longitude) in [(91.0, 0.0), (0.0, -181.0), (f64::NAN, 0.0), (0.0, f64::INFINITY)] {
            let point = GeoPoint { latitude, longitude };
            assert!(bad(|v| location(v, "l", Some(&point))), "{latitude},{longitude}");
        }
        let ok = GeoPoint {
            latitude: -33.9,
            longitude: 151.2,
        };
        assert!(!bad(|v| location(v, "l", Some(&ok))));
    }

    #[test]
    fn pages_default_to_50_and_refuse_more_than_500() {
        let mut v = FieldViolations::new();
        assert_eq!(page(&mut v, "page", None), (50, None));
        let asked = PageRequest {
            page_size: 7,
            page_token: "c".into(),
        };
        assert_eq!(page(&mut v, "page", Some(&asked)), (7, Some("c".into())));
        assert!(v.is_empty());
        let huge = PageRequest {
            page_size: 501,
            page_token: String::new(),
        };
        page(&mut v, "page", Some(&huge));
        assert!(!v.is_empty());
    }
}
