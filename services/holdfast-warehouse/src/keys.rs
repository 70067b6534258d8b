//! Claim scopes, payload fingerprints and derived ids: the names that make a warehouse
//! change happen once.

use sha1::{Digest, Sha1};

/// Claim scope of an order's routing (key: the order id). Taken by the change that
/// routes the order, or by a cancellation that arrives first, so an order is routed once.
pub const ROUTE: &str = "route";
/// Claim scope of a goods receipt (key: the receipt id).
pub const RECEIPT: &str = "receipt";
/// Claim scope of a shrinkage (key: the shrinkage id).
pub const SHRINKAGE: &str = "shrinkage";
/// Claim scope of a restocked return (key: the return id).
pub const RETURN: &str = "return";
/// Claim scope of a shipment leaving with a carrier (key: the shipment id).
pub const SHIP: &str = "ship";
/// Claim scope of a delivery (key: the shipment id).
pub const DELIVER: &str = "deliver";
/// Claim scope of an order's cancellation closing its routing (key: the order id): taken
/// with [`ROUTE`] in one change, so holding it means the order was never routed.
pub const CANCEL: &str = "cancel";
/// Claim scope of one shipment's cancellation (key: the shipment id).
pub const CANCEL_SHIPMENT: &str = "cancel_shipment";
/// The fingerprint of a [`ROUTE`] claim taken by routing.
pub const ROUTED: &str = "routed";
/// The fingerprint of a [`ROUTE`] claim taken by a cancellation (never routed).
pub const CANCELLED: &str = "cancelled";

/// Claim scope of the events a consumer group processed (key: the event id).
pub fn processed(group: &str) -> String {
    format!("event:{group}")
}

/// A digest of `parts` (each length-prefixed, so no two lists share one), as hex.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize())
}

/// The change id of a warehouse stock change that inventory applies as an adjustment:
/// `<cause>:<id>:<sku>`, derived from the receipt, shrinkage, return or stock-take id and
/// the SKU, so it is the same however often the event is delivered. Ids longer than the
/// 128 bytes an adjustment id may have are shortened to a digest of id and SKU.
pub fn change_id(cause: &str, id: &str, sku: &str) -> String {
    let readable = format!("{cause}:{id}:{sku}");
    if readable.len() <= holdfast_platform::validate::MAX_ID_LEN {
        readable
    } else {
        format!("{cause}:sha1:{}", fingerprint([id, sku]))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_sees_part_boundaries() {
        assert_eq!(fingerprint(["a", "b"]), fingerprint(["a", "b"]));
        assert_ne!(fingerprint(["ab", ""]), fingerprint(["a", "b"]));
        assert_eq!(fingerprint(["x"]).len(), 40);
    }

    #[test]
    fn change_ids_are_readable_and_fit_an_adjustment_id() {
        assert_eq!(change_id("receipt", "DN-1", "SKU-1"), "receipt:DN-1:SKU-1");
        let long = change_id("receipt", &"r".repeat(128), "SKU-1");
        assert!(long.len() <= 128 && long.starts_with("receipt:sha1:"), "{long}");
        assert_ne!(long, change_id("receipt", &"r".repeat(128), "SKU-2"));
    }
}
