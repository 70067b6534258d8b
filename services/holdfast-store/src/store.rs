//! The store a service holds: one backend chosen at startup, every trait by delegation.

use crate::carts::{CartStore, StoredCart};
use crate::products::{Product, ProductPage, ProductStore};
use crate::{ScyllaStore, SqliteStore, StoreError};

/// A durable store on one of the backends. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded default.
    Sqlite(SqliteStore),
    /// The production backend.
    Scylla(ScyllaStore),
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Self::Sqlite(store)
    }
}

impl From<ScyllaStore> for Store {
    fn from(store: ScyllaStore) -> Self {
        Self::Scylla(store)
    }
}

impl ProductStore for Store {
    async fn upsert_product(
        &self,
        product: Product,
        expected_version: Option<u64>,
    ) -> Result<Product, StoreError> {
        match self {
            Self::Sqlite(store) => store.upsert_product(product, expected_version).await,
            Self::Scylla(store) => store.upsert_product(product, expected_version).await,
        }
    }

    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_product(sku).await,
            Self::Scylla(store) => store.get_product(sku).await,
        }
    }

    async fn get_products(&self, skus: &[String]) -> Result<Vec<Product>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_products(skus).await,
            Self::Scylla(store) => store.get_products(skus).await,
        }
    }

    async fn list_products_by_category(
        &self,
        category: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        match self {
            Self::Sqlite(store) => store.list_products_by_category(category, cursor, limit).await,
            Self::Scylla(store) => store.list_products_by_category(category, cursor, limit).await,
        }
    }
}

impl CartStore for Store {
    async fn save_cart(&self, cart: StoredCart) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.save_cart(cart).await,
            Self::Scylla(store) => store.save_cart(cart).await,
        }
    }

    async fn load_cart(&self, owner: &str) -> Result<Option<StoredCart>, StoreError> {
        match self {
            Self::Sqlite(store) => store.load_cart(owner).await,
            Self::Scylla(store) => store.load_cart(owner).await,
        }
    }

    async fn delete_cart(&self, owner: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.delete_cart(owner).await,
            Self::Scylla(store) => store.delete_cart(owner).await,
        }
    }
}
