//! Request validation: every field checked, every violation reported at once.

use std::collections::BTreeMap;

use holdfast_platform::status::FieldViolations;
pub use holdfast_platform::validate::{MAX_ID_LEN, MAX_SKU_LEN, id, sku};
use holdfast_proto::inventory::v1::ReserveLine;

use crate::keys::MAX_BUCKETS;

/// Most units on one line.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Most lines in one reservation (and SKUs in one availability read).
pub const MAX_LINES: usize = 100;
/// Hold lifetime bounds and default, seconds.
pub const MIN_TTL_SECONDS: u32 = 1;
/// See [`MIN_TTL_SECONDS`].
pub const MAX_TTL_SECONDS: u32 = 3600;
/// Used when a request says 0.
pub const DEFAULT_TTL_SECONDS: u32 = 600;
/// Largest on_hand one SKU may have (far below i64 and Lua's 2^53 integers).
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;

/// Whether `delta` is a usable stock change: non-zero and within ±[`MAX_ON_HAND`]. Checked
/// without `abs()`, which overflows (a panic in debug builds) on `i64::MIN`.
pub fn delta_in_range(delta: i64) -> bool {
    delta != 0 && delta.checked_abs().is_some_and(|size| size <= MAX_ON_HAND)
}

/// Resolves `ttl_seconds` (0 = default), checking bounds.
pub fn ttl(violations: &mut FieldViolations, field: &str, ttl_seconds: u32) -> u32 {
    match ttl_seconds {
        0 => DEFAULT_TTL_SECONDS,
        t if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&t) => t,
        _ => {
            violations.add(
                field,
                format!("must be {MIN_TTL_SECONDS}..{MAX_TTL_SECONDS} seconds (0 for {DEFAULT_TTL_SECONDS})"),
            );
            DEFAULT_TTL_SECONDS
        }
    }
}

/// Checks bucket count (0 and 1 both mean "not split").
pub fn buckets(violations: &mut FieldViolations, field: &str, buckets: u32) -> u32 {
    if buckets > MAX_BUCKETS {
        violations.add(field, format!("must be at most {MAX_BUCKETS}"));
    }
    buckets.clamp(1, MAX_BUCKETS)
}

/// Checks reservation lines and sums duplicate SKUs (sorted by SKU, so every replica and
/// every retry touches SKUs in the same order).
pub fn lines(violations: &mut FieldViolations, lines: &[ReserveLine]) -> Vec<(String, i64)> {
    if lines.is_empty() {
        violations.add("lines", "must have at least one line");
    } else if lines.len() > MAX_LINES {
        violations.add("lines", format!("must have at most {MAX_LINES} lines"));
    }
    let mut summed: BTreeMap<String, i64> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        sku(violations, &format!("lines[{i}].sku"), &line.sku);
        if line.quantity <= 0 || line.quantity > MAX_QUANTITY {
            violations.add(
                format!("lines[{i}].quantity"),
                format!("must be 1..{MAX_QUANTITY}"),
            );
            continue;
        }
        *summed.entry(line.sku.clone()).or_default() += line.quantity;
    }
    for (sku, total) in &summed {
        if *total > MAX_QUANTITY {
            violations.add(
                "lines",
                format!("{sku}: lines sum to {total}, more than {MAX_QUANTITY}"),
            );
        }
    }
    summed.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_in_range_refuses_zero_and_extremes_without_overflow() {
        assert!(delta_in_range(1) && delta_in_range(-MAX_ON_HAND) && delta_in_range(MAX_ON_HAND));
        for bad in [
            0,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            MAX_ON_HAND + 1,
            -MAX_ON_HAND - 1,
        ] {
            assert!(!delta_in_range(bad), "{bad}");
        }
    }

    fn line(sku: &str, quantity: i64) -> ReserveLine {
        ReserveLine {
            sku: sku.into(),
            quantity,
        }
    }

    fn fields(violations: FieldViolations) -> Vec<String> {
        use tonic_types::StatusExt;
        match violations.into_result() {
            Ok(()) => vec![],
            Err(status) => status
                .get_details_bad_request()
                .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn lines_sum_duplicate_skus_before_checking() {
        let mut v = FieldViolations::new();
        let summed = lines(&mut v, &[line("B", 2), line("A", 1), line("B", 3)]);
        assert!(v.is_empty());
        assert_eq!(summed, [("A".to_string(), 1), ("B".to_string(), 5)]);

        let mut v = FieldViolations::new();
        lines(&mut v, &[line("A", 600_000), line("A", 600_000)]);
        assert_eq!(
            fields(v),
            ["lines"],
            "the sum is over the cap though each line is not"
        );
    }

    #[test]
    fn lines_report_every_bad_field() {
        let mut v = FieldViolations::new();
        lines(
            &mut v,
            &[line("", 1), line("A", 0), line("B", -3), line("C", 1_000_001)],
        );
        assert_eq!(
            fields(v),
            [
                "lines[0].sku",
                "lines[1].quantity",
                "lines[2].quantity",
                "lines[3].quantity"
            ]
        );
        let mut v = FieldViolations::new();
        lines(&mut v, &[]);
        assert_eq!(fields(v), ["lines"]);
        let mut v = FieldViolations::new();
        lines(&mut v, &vec![line("A", 1); 101]);
        assert_eq!(fields(v), ["lines"]);
    }

    #[test]
    fn ttl_defaults_and_bounds() {
        let mut v = FieldViolations::new();
        assert_eq!(ttl(&mut v, "ttl_seconds", 0), 600);
        assert_eq!(ttl(&mut v, "ttl_seconds", 3600), 3600);
        assert!(v.is_empty());
        ttl(&mut v, "ttl_seconds", 3601);
        assert_eq!(fields(v), ["ttl_seconds"]);
    }
}
