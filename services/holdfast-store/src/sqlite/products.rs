//! Products on SQLite: one row per SKU, listed by category in SKU order.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::products::{
    PageRequest, Product, ProductPage, ProductStore, check_expected_version, distinct_skus, validate_product,
};
use crate::{StoreError, now_ms};

use super::{SqliteStore, sqlite_error};

const PRODUCT_COLUMNS: &str = "sku, title, description, price_minor, currency, category, brand, \
     attributes, active, version, created_at_ms, updated_at_ms";

fn read_product(row: &Row<'_>) -> rusqlite::Result<Product> {
    let attributes: String = row.get(7)?;
    let attributes = serde_json::from_str(&attributes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, e.into()))?;
    let version: i64 = row.get(9)?;
    Ok(Product {
        sku: row.get(0)?,
        title: row.get(1)?,
        description: row.get(2)?,
        price_minor: row.get(3)?,
        currency: row.get(4)?,
        category: row.get(5)?,
        brand: row.get(6)?,
        attributes,
        active: row.get(8)?,
        version: u64::try_from(version).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(9, version))?,
        created_at_ms: row.get(10)?,
        updated_at_ms: row.get(11)?,
    })
}

fn select_product(conn: &Connection, sku: &str) -> Result<Option<Product>, StoreError> {
    conn.prepare_cached(&format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = ?1"))
        .and_then(|mut statement| statement.query_row([sku], read_product).optional())
        .map_err(sqlite_error)
}

impl ProductStore for SqliteStore {
    async fn upsert_product_announced(
        &self,
        product: Product,
        expected_version: Option<u64>,
        outbox: Vec<crate::OutboxMessage>,
    ) -> Result<Product, StoreError> {
        validate_product(&product)?;
        let outbox = crate::outbox::distinct_messages(outbox)?;
        self.write(move |conn| {
            let tx = conn;
            let current = tx
                .query_row(
                    "SELECT version, created_at_ms FROM products WHERE sku = ?1",
                    [&product.sku],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(sqlite_error)?;
            let current_version = current
                .map(|(version, _)| StoreError::version_from_i64(version))
                .transpose()?;
            check_expected_version(&product.sku, expected_version, current_version)?;

            let now = now_ms();
            let stored = Product {
                version: current_version.unwrap_or(0) + 1,
                created_at_ms: current.map_or(now, |(_, created)| created),
                updated_at_ms: now,
                ..product
            };
            let version = StoreError::version_to_i64(stored.version)?;
            let attributes = serde_json::to_string(&stored.attributes)
                .map_err(|e| StoreError::InvalidArgument(format!("attributes: {e}")))?;
            tx.prepare_cached(&format!(
                "INSERT INTO products ({PRODUCT_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (sku) DO UPDATE SET
                     title = excluded.title, description = excluded.description,
                     price_minor = excluded.price_minor, currency = excluded.currency,
                     category = excluded.category, brand = excluded.brand,
                     attributes = excluded.attributes, active = excluded.active,
                     version = excluded.version, updated_at_ms = excluded.updated_at_ms"
            ))
            .and_then(|mut statement| {
                statement.execute(params![
                    stored.sku,
                    stored.title,
                    stored.description,
                    stored.price_minor,
                    stored.currency,
                    stored.category,
                    stored.brand,
                    attributes,
                    stored.active,
                    version,
                    stored.created_at_ms,
                    stored.updated_at_ms,
                ])
            })
            .map_err(sqlite_error)?;
            super::outbox::insert_messages(tx, &outbox)?;
            Ok(stored)
        })
        .await
    }

    async fn scan_products(&self, after_sku: Option<&str>, limit: u32) -> Result<Vec<Product>, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidArgument("page size must be at least 1".into()));
        }
        let after = after_sku.unwrap_or_default().to_string();
        let limit = limit.min(crate::products::MAX_PAGE_SIZE);
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {PRODUCT_COLUMNS} FROM products WHERE sku > ?1 ORDER BY sku LIMIT ?2"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map(params![after, limit], read_product)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sqlite_error)
        })
        .await
    }

    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        let sku = sku.to_string();
        self.lookup(move |conn| select_product(conn, &sku)).await
    }

    async fn get_products(&self, skus: &[String]) -> Result<Vec<Product>, StoreError> {
        let skus: Vec<String> = distinct_skus(skus)?.into_iter().map(String::from).collect();
        self.read(move |conn| {
            let mut found = Vec::with_capacity(skus.len());
            for sku in &skus {
                found.extend(select_product(conn, sku)?);
            }
            Ok(found)
        })
        .await
    }

    async fn list_products_by_category(
        &self,
        category: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        let request = PageRequest::new(category, cursor, limit)?;
        let category = category.to_string();
        self.read(move |conn| {
            let fetch = i64::try_from(request.fetch()).unwrap_or(i64::MAX);
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {PRODUCT_COLUMNS} FROM products
                     WHERE category = ?1 AND sku > ?2 ORDER BY sku LIMIT ?3"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(params![category, request.after_sku, fetch], read_product)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            Ok(request.page(&category, rows))
        })
        .await
    }
}
