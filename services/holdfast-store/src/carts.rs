//! The cart aggregate: the durable copy of the live Redis carts.
//!
//! The cart service writes whole carts behind its Redis writes, so saves may arrive late
//! and out of order. Versions settle it: a save lands only if its version is greater than
//! anything stored for that owner, and a delete leaves its version behind as a tombstone,
//! so a late save of an older cart cannot bring a deleted cart back. Versions must
//! therefore grow over an owner's whole life, deletions included (resume from the loaded
//! cart's version, or derive them from a clock); one version always means one content.

use std::future::Future;

use crate::StoreError;

/// How long a stored cart outlives its last change: the cart service's cart TTL (a live cart
/// expires from Redis this long after its last change). SQLite's purge deletes carts older
/// than it; ScyllaDB writes cart rows with what is left of it as their TTL.
pub const DEFAULT_CART_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A cart as stored for one owner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredCart {
    /// A customer id or an anonymous session id.
    pub owner: String,
    /// The lines, in the order the cart shows them.
    pub lines: Vec<StoredCartLine>,
    /// The live cart's version when this copy was taken.
    pub version: u64,
    /// When the live cart last changed (Unix ms).
    pub updated_at_ms: i64,
}

/// One line of a stored cart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredCartLine {
    /// The product.
    pub sku: String,
    /// Units wanted.
    pub quantity: i64,
    /// Price snapshot at add time, in minor units of `currency`.
    pub unit_price_minor: i64,
    /// ISO-4217 code of the snapshot price.
    pub currency: String,
    /// When the line was added (Unix ms).
    pub added_at_ms: i64,
}

/// Durable storage of carts, last writer wins by version.
pub trait CartStore: Send + Sync {
    /// Stores `cart` for `cart.owner` unless a version at least as new is stored (or was
    /// deleted); an ignored save is not an error.
    fn save_cart(&self, cart: StoredCart) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The owner's cart, if one is stored and not deleted.
    fn load_cart(&self, owner: &str) -> impl Future<Output = Result<Option<StoredCart>, StoreError>> + Send;

    /// Deletes the owner's cart (idempotent). Saves with versions up to the deleted one
    /// stay ignored afterwards; newer ones create the cart again.
    fn delete_cart(&self, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Refuses carts no backend can key or version.
pub(crate) fn validate_cart(cart: &StoredCart) -> Result<i64, StoreError> {
    validate_owner(&cart.owner)?;
    StoreError::version_to_i64(cart.version)
}

/// Refuses an empty owner key.
pub(crate) fn validate_owner(owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() {
        return Err(StoreError::InvalidArgument("cart owner is empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_cart_refuses_empty_owner_and_huge_version() {
        let cart = StoredCart {
            owner: "c-1".into(),
            version: 3,
            ..StoredCart::default()
        };
        assert_eq!(validate_cart(&cart), Ok(3));
        assert!(
            validate_cart(&StoredCart {
                owner: String::new(),
                ..cart.clone()
            })
            .is_err()
        );
        assert!(
            validate_cart(&StoredCart {
                version: u64::MAX,
                ..cart
            })
            .is_err()
        );
    }
}
