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
}
