//! Opaque page tokens: where the previous page ended, bound to the query that issued it.
//!
//! A token is `s1.<fingerprint>.<key bits>.<sku hex>`: paging is by key (sort key, SKU),
//! so a deep page costs what the first does. The fingerprint covers the text, filters and
//! sort; a token presented with another query is refused.

use std::fmt::Write as _;

use sha1::{Digest, Sha1};

use crate::SearchError;
use crate::model::SearchQuery;

/// Fingerprint of what selects and orders results (not page size or facet settings).
pub fn fingerprint(query: &SearchQuery) -> String {
    let mut hasher = Sha1::new();
    let mut feed = |part: &str| {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    };
    feed(&query.text);
    feed(&format!("{:?}", query.sort));
    for category in &query.categories {
        feed(category);
    }
    feed("|");
    for brand in &query.brands {
        feed(brand);
    }
    feed(&format!("{:?}|{}", query.price, query.in_stock_only));
    let digest = hasher.finalize();
    digest[..8].iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The token for resuming `query` after (key, sku).
pub fn encode(query: &SearchQuery, key: f64, sku: &str) -> String {
    let sku_hex = sku.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    });
    format!("s1.{}.{:016x}.{sku_hex}", fingerprint(query), key.to_bits())
}

/// Where `token` resumes `query`; INVALID_ARGUMENT if it is not one of ours or was issued
/// for another query.
pub fn decode(query: &SearchQuery, token: &str) -> Result<(f64, String), SearchError> {
    let bad = || SearchError::InvalidArgument("page_token was not issued by Search".into());
    let mut parts = token.split('.');
    let (Some("s1"), Some(print), Some(key), Some(sku), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    if print != fingerprint(query) {
        return Err(SearchError::InvalidArgument(
            "page_token was issued for another query, filters or sort".into(),
        ));
    }
    let key = u64::from_str_radix(key, 16)
        .map(f64::from_bits)
        .map_err(|_| bad())?;
    if !sku.len().is_multiple_of(2) || sku.is_empty() {
        return Err(bad());
    }
    let bytes = (0..sku.len())
        .step_by(2)
        .map(|i| sku.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let sku = String::from_utf8(bytes).map_err(|_| bad())?;
    Ok((key, sku))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_queries_and_garbage() {
        let query = SearchQuery {
            text: "red shoe".into(),
            ..SearchQuery::default()
        };
        let token = encode(&query, -3.25, "SKU-é1");
        assert_eq!(decode(&query, &token).unwrap(), (-3.25, "SKU-é1".to_string()));
        let other = SearchQuery {
            text: "blue shoe".into(),
            ..SearchQuery::default()
        };
        assert!(decode(&other, &token).is_err());
        for garbage in ["", "s1", "s1.x.y.z", "s2.a.b.c", &format!("{token}.x")] {
            assert!(decode(&query, garbage).is_err(), "{garbage}");
        }
    }
}
