//! Opaque page cursors for listings ordered by key.
//!
//! A cursor names the last key a page returned; the next page starts strictly after it, so
//! rows written between pages neither repeat nor shift the listing. It also carries a hash
//! of the partition it was made for (the category), so a cursor replayed against another
//! listing is refused instead of silently skipping rows. Callers treat it as opaque text.
//!
//! Newest-first listings (a customer's orders) resume after a position, (created_at_ms,
//! id), rather than a single key: [`encode_position`] writes it as the key
//! `<created_at_ms>:<id>`, which the decimal integer keeps unambiguous whatever the id holds.

use crate::StoreError;

/// Version tag: lets the format change without misreading old cursors.
const TAG: &str = "c1";
/// Hex digits of the partition hash.
const HASH_DIGITS: usize = 8;

/// The cursor that resumes `partition`'s listing after `last_key`.
pub(crate) fn encode(partition: &str, last_key: &str) -> String {
    let mut cursor = String::with_capacity(TAG.len() + HASH_DIGITS + 2 * last_key.len());
    cursor.push_str(TAG);
    cursor.push_str(&format!("{:08x}", fnv1a(partition)));
    for byte in last_key.bytes() {
        cursor.push_str(&format!("{byte:02x}"));
    }
    cursor
}

/// The key to resume after; refuses cursors that are malformed or made for another partition.
pub(crate) fn decode(partition: &str, cursor: &str) -> Result<String, StoreError> {
    // Not echoed: a client-sized token in grpc-message could overflow the header limit.
    let invalid = || StoreError::InvalidArgument("page cursor is not valid here".to_string());
    let rest = cursor.strip_prefix(TAG).ok_or_else(invalid)?;
    if !rest.is_ascii() || rest.len() < HASH_DIGITS {
        return Err(invalid());
    }
    let (hash, key_hex) = rest.split_at(HASH_DIGITS);
    if u32::from_str_radix(hash, 16).ok() != Some(fnv1a(partition)) {
        return Err(invalid());
    }
    if key_hex.is_empty() || key_hex.len() % 2 != 0 {
        return Err(invalid());
    }
    let bytes = (0..key_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).map_err(|_| invalid()))
        .collect::<Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// The cursor that resumes `partition`'s listing after the row at (`created_at_ms`, `id`).
pub(crate) fn encode_position(partition: &str, created_at_ms: i64, id: &str) -> String {
    encode(partition, &format!("{created_at_ms}:{id}"))
}

/// The (created_at_ms, id) to resume after; refuses cursors that are malformed, made for
/// another partition, or made by [`encode`] for a plain key.
pub(crate) fn decode_position(partition: &str, cursor: &str) -> Result<(i64, String), StoreError> {
    // Not echoed: a client-sized token in grpc-message could overflow the header limit.
    let invalid = || StoreError::InvalidArgument("page cursor is not valid here".to_string());
    let key = decode(partition, cursor)?;
    let (created_at_ms, id) = key.split_once(':').ok_or_else(invalid)?;
    // `i64::from_str` takes a leading '+', which `encode_position` never writes.
    if id.is_empty() || created_at_ms.starts_with('+') {
        return Err(invalid());
    }
    let created_at_ms = created_at_ms.parse::<i64>().map_err(|_| invalid())?;
    Ok((created_at_ms, id.to_string()))
}

/// 32-bit FNV-1a: stable across builds and platforms, unlike `std`'s hasher. Also spreads
/// keys over the ScyllaDB index buckets.
pub(crate) fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursor_round_trips_unicode_keys() {
        let cursor = encode("téléviseurs", "ЖК-📺-42");
        assert_eq!(decode("téléviseurs", &cursor), Ok("ЖК-📺-42".to_string()));
        assert!(cursor.is_ascii(), "cursors travel in URLs and headers: {cursor}");
    }

    #[test]
    fn cursor_from_another_category_is_refused() {
        let cursor = encode("shoes", "sku-1");
        assert!(matches!(
            decode("hats", &cursor),
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[test]
    fn cursor_garbage_is_refused() {
        let good = encode("shoes", "sku-1");
        for bad in [
            "",
            "c1",
            "sku-1",
            "c2deadbeef00",
            &good[..good.len() - 1],
            &format!("{}zz", &good[..good.len() - 2]),
            // Valid hex, not UTF-8.
            &format!("{}ff", &good[..TAG.len() + HASH_DIGITS]),
            // No key at all.
            &good[..TAG.len() + HASH_DIGITS],
            "c1ééééééééé",
        ] {
            assert!(
                matches!(decode("shoes", bad), Err(StoreError::InvalidArgument(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        assert_eq!(fnv1a("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn position_cursor_round_trips_extremes_and_colons() {
        for (created_at_ms, id) in [
            (0, "ord_1"),
            (-1, "a:b:c"),
            (i64::MIN, ":"),
            (i64::MAX, "ord_01J-ünïcode-📦"),
        ] {
            let cursor = encode_position("cust", created_at_ms, id);
            assert_eq!(
                decode_position("cust", &cursor),
                Ok((created_at_ms, id.to_string()))
            );
        }
    }

    #[test]
    fn position_cursor_refuses_plain_keys_other_partitions_and_bad_numbers() {
        let good = encode_position("cust-1", 1_700_000_000_000, "ord_1");
        assert!(decode_position("cust-2", &good).is_err(), "another customer");
        for key in [
            "sku-1",
            "12",
            "12:",
            ":ord_1",
            "+12:ord_1",
            "1.5:ord_1",
            "99999999999999999999:ord_1",
        ] {
            assert!(
                matches!(
                    decode_position("cust-1", &encode("cust-1", key)),
                    Err(StoreError::InvalidArgument(_))
                ),
                "{key:?} accepted"
            );
        }
    }

    proptest! {
        #[test]
        fn position_cursor_round_trips_any_position(
            partition in ".*",
            created_at_ms in any::<i64>(),
            id in ".+",
        ) {
            prop_assert_eq!(
                decode_position(&partition, &encode_position(&partition, created_at_ms, &id)),
                Ok((created_at_ms, id))
            );
        }

        #[test]
        fn cursor_round_trips_any_key(partition in ".*", key in ".+") {
            prop_assert_eq!(decode(&partition, &encode(&partition, &key)), Ok(key));
        }

        #[test]
        fn cursor_decode_never_panics_on_garbage(partition in ".*", garbage in ".*") {
            // Never panics, whatever it is fed.
            let _ = decode(&partition, &garbage);
        }
    }
}
