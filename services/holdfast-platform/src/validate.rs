//! Field checks every service shares, so a SKU or an id means the same everywhere.

use crate::status::FieldViolations;

/// Longest SKU.
pub const MAX_SKU_LEN: usize = 64;
/// Longest reservation or adjustment id.
pub const MAX_ID_LEN: usize = 128;
/// Checks a SKU: 1..64 characters, none of `{` `}` `~` (they would change the key's hash
/// slot or collide with bucket keys), whitespace or control characters.
pub fn sku(violations: &mut FieldViolations, field: &str, sku: &str) {
    if sku.is_empty() {
        violations.add(field, "must not be empty");
    } else if sku.chars().count() > MAX_SKU_LEN {
        violations.add(field, format!("must be at most {MAX_SKU_LEN} characters"));
    } else if let Some(bad) = sku
        .chars()
        .find(|c| matches!(c, '{' | '}' | '~') || c.is_whitespace() || c.is_control())
    {
        violations.add(
            field,
            format!("must not contain {bad:?} (braces, '~', whitespace and control characters are reserved)"),
        );
    }
}

/// Checks a client-made id (reservation or adjustment).
pub fn id(violations: &mut FieldViolations, field: &str, id: &str) {
    if id.is_empty() {
        violations.add(field, "must not be empty");
    } else if id.len() > MAX_ID_LEN {
        violations.add(field, format!("must be at most {MAX_ID_LEN} bytes"));
    } else if id.chars().any(|c| matches!(c, '{' | '}') || c.is_control()) {
        violations.add(field, "must not contain braces or control characters");
    }
}

/// Checks an ISO-4217 alphabetic currency code: three upper-case ASCII letters.
pub fn currency(violations: &mut FieldViolations, field: &str, code: &str) {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        violations.add(
            field,
            "must be an ISO-4217 code, three upper-case letters like \"USD\"",
        );
    }
}

/// Whether `text` is at most `max` characters long (characters, not bytes).
pub fn within_chars(text: &str, max: usize) -> bool {
    text.chars().nth(max).is_none()
}

/// Checks optional text of at most `max` characters.
pub fn max_chars(violations: &mut FieldViolations, field: &str, text: &str, max: usize) {
    if !within_chars(text, max) {
        violations.add(field, format!("must be at most {max} characters"));
    }
}

/// Checks required text of 1..`max` characters.
pub fn required_text(violations: &mut FieldViolations, field: &str, text: &str, max: usize) {
    if text.is_empty() {
        violations.add(field, "is required");
    } else {
        max_chars(violations, field, text, max);
    }
}

/// Checks text of 1..`max` characters without control characters.
pub fn text(violations: &mut FieldViolations, field: &str, text: &str, max: usize) {
    if text.is_empty() || !within_chars(text, max) {
        violations.add(field, format!("must be 1..{max} characters"));
    } else if text.chars().any(char::is_control) {
        violations.add(field, "must not contain control characters");
    }
}

/// The page size to use for a requested `size`: `default` when unset (0), `size` up to
/// `max`; a larger one is a violation at `field` (and `max` is answered).
pub fn page_size(violations: &mut FieldViolations, field: &str, size: u32, default: u32, max: u32) -> u32 {
    match size {
        0 => default,
        size if size > max => {
            violations.add(field, format!("must be at most {max}"));
            max
        }
        size => size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(check: impl Fn(&mut FieldViolations)) -> bool {
        let mut v = FieldViolations::new();
        check(&mut v);
        !v.is_empty()
    }

    #[test]
    fn sku_rejects_hash_breaking_characters() {
        for bad_sku in ["", "a{b", "a}b", "a b", "a\tb", "a\u{7}b", "a~1", &"x".repeat(65)] {
            assert!(bad(|v| sku(v, "sku", bad_sku)), "{bad_sku:?}");
        }
        assert!(!bad(|v| sku(v, "sku", "TSHIRT-M/blue.2024:α")));
    }

    #[test]
    fn id_rejects_empty_long_and_braces() {
        assert!(bad(|v| id(v, "id", "")));
        assert!(bad(|v| id(v, "id", &"x".repeat(129))));
        assert!(bad(|v| id(v, "id", "a{b}")));
        assert!(!bad(|v| id(v, "id", "0193a5c4-7e2b-7c1d-9a3f-2b8c4d5e6f70")));
    }

    #[test]
    fn currency_accepts_three_upper_case_letters_only() {
        for bad_code in ["", "usd", "US", "USDT", "U$D", "ÜSD"] {
            assert!(bad(|v| currency(v, "currency", bad_code)), "{bad_code:?}");
        }
        assert!(!bad(|v| currency(v, "currency", "EUR")));
    }

    #[test]
    fn text_lengths_count_characters_not_bytes() {
        assert!(within_chars("ééé", 3));
        assert!(!within_chars("éééé", 3));
        assert!(!bad(|v| max_chars(v, "note", "", 3)));
        assert!(bad(|v| max_chars(v, "note", "abcd", 3)));
        assert!(bad(|v| required_text(v, "key", "", 3)));
        assert!(!bad(|v| required_text(v, "key", "ééé", 3)));
        assert!(bad(|v| text(v, "carrier", "", 3)));
        assert!(bad(|v| text(v, "carrier", "a\u{7}", 3)));
        assert!(!bad(|v| text(v, "carrier", "DHL", 3)));
    }

    #[test]
    fn page_size_defaults_zero_and_refuses_above_max() {
        let mut v = FieldViolations::new();
        assert_eq!(page_size(&mut v, "page.page_size", 0, 50, 500), 50);
        assert_eq!(page_size(&mut v, "page.page_size", 500, 50, 500), 500);
        assert!(v.is_empty());
        assert_eq!(page_size(&mut v, "page.page_size", 501, 50, 500), 500);
        assert!(!v.is_empty());
    }
}
