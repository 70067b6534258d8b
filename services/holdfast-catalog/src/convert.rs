//! Products between the store's domain type and the wire type.

use holdfast_proto::catalog::v1::Product as WireProduct;
use holdfast_proto::common::v1::Money;
use holdfast_store::Product;

/// Store -> wire.
pub fn to_wire(product: &Product) -> WireProduct {
    WireProduct {
        sku: product.sku.clone(),
        title: product.title.clone(),
        description: product.description.clone(),
        price: Some(Money {
            amount_minor: product.price_minor,
            currency: product.currency.clone(),
        }),
        category: product.category.clone(),
        brand: product.brand.clone(),
        attributes: product.attributes.clone().into_iter().collect(),
        active: product.active,
        created_at_unix_ms: product.created_at_ms,
        updated_at_unix_ms: product.updated_at_ms,
        version: product.version,
    }
}

/// Wire -> store (after validation). Version and timestamps are the store's to set.
pub fn from_wire(product: WireProduct) -> Product {
    let price = product.price.unwrap_or_default();
    Product {
        sku: product.sku,
        title: product.title,
        description: product.description,
        price_minor: price.amount_minor,
        currency: price.currency,
        category: product.category,
        brand: product.brand,
        attributes: product.attributes.into_iter().collect(),
        active: product.active,
        version: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// Whether an upsert of `incoming` would change nothing a caller can set.
pub fn same_content(stored: &Product, incoming: &Product) -> bool {
    stored.title == incoming.title
        && stored.description == incoming.description
        && stored.price_minor == incoming.price_minor
        && stored.currency == incoming.currency
        && stored.category == incoming.category
        && stored.brand == incoming.brand
        && stored.attributes == incoming.attributes
        && stored.active == incoming.active
}

/// Wire -> store for a cached entry, keeping the version and timestamps it was cached with.
pub fn from_wire_cached(product: WireProduct) -> Product {
    let (version, created, updated) = (
        product.version,
        product.created_at_unix_ms,
        product.updated_at_unix_ms,
    );
    Product {
        version,
        created_at_ms: created,
        updated_at_ms: updated,
        ..from_wire(product)
    }
}
