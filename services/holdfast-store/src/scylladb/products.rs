//! Products on ScyllaDB: `products` by SKU is the source of truth, with LWTs only where a
//! condition must hold (creates `IF NOT EXISTS`, updates `IF version = ?`), and
//! `products_by_category` is the listing index, written before the product and re-checked
//! on a category move (see `schema/scylla.cql`).

use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::outbox::Home;
use super::{READ_FAN_OUT, ScyllaStore, corrupt, lwt_outcome, prepare_statement, serial};
use crate::products::{PageRequest, Product, ProductPage, ProductStore, distinct_skus, validate_product};
use crate::{StoreError, now_ms};

const PRODUCT_COLUMNS: &str = "sku, title, description, price_minor, currency, category, brand, \
     attributes, active, version, created_at_ms, updated_at_ms";

/// A `products` row in `PRODUCT_COLUMNS` order.
type ProductRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    Option<std::collections::BTreeMap<String, String>>,
    bool,
    i64,
    i64,
    i64,
);

/// The bound values of a `products` insert, in `PRODUCT_COLUMNS` order.
type ProductValues<'a> = (
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a std::collections::BTreeMap<String, String>,
    bool,
    i64,
    i64,
    i64,
);

/// The product statements, prepared.
pub(super) struct ProductStatements {
    get_product: PreparedStatement,
    /// `get_product` at SERIAL consistency: sees every applied LWT.
    get_product_serial: PreparedStatement,
    insert_product: PreparedStatement,
    insert_product_if_absent: PreparedStatement,
    update_product_if_version: PreparedStatement,
    index_insert: PreparedStatement,
    index_delete: PreparedStatement,
    index_page: PreparedStatement,
    scan_first: PreparedStatement,
    scan_after: PreparedStatement,
}

impl ProductStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        let get_product = prepare(
            format!("SELECT {PRODUCT_COLUMNS} FROM {ks}.products WHERE sku = ?"),
            true,
        )
        .await?;
        let get_product_serial = serial(&get_product);
        Ok(Self {
            get_product,
            get_product_serial,
            insert_product: prepare(
                format!(
                    "INSERT INTO {ks}.products ({PRODUCT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                false,
            )
            .await?,
            insert_product_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.products ({PRODUCT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            update_product_if_version: prepare(
                format!(
                    "UPDATE {ks}.products SET title = ?, description = ?, price_minor = ?, currency = ?, \
                     category = ?, brand = ?, attributes = ?, active = ?, version = ?, updated_at_ms = ? \
                     WHERE sku = ? IF version = ?"
                ),
                false,
            )
            .await?,
            index_insert: prepare(
                format!("INSERT INTO {ks}.products_by_category (category, sku) VALUES (?, ?)"),
                true,
            )
            .await?,
            index_delete: prepare(
                format!("DELETE FROM {ks}.products_by_category WHERE category = ? AND sku = ?"),
                true,
            )
            .await?,
            index_page: prepare(
                format!("SELECT sku FROM {ks}.products_by_category WHERE category = ? AND sku > ? LIMIT ?"),
                true,
            )
            .await?,
            scan_first: prepare(format!("SELECT {PRODUCT_COLUMNS} FROM {ks}.products LIMIT ?"), true).await?,
            scan_after: prepare(
                format!("SELECT {PRODUCT_COLUMNS} FROM {ks}.products WHERE token(sku) > token(?) LIMIT ?"),
                true,
            )
            .await?,
        })
    }
}

impl ScyllaStore {
    async fn product_statements(&self) -> Result<&ProductStatements, StoreError> {
        Ok(&self.statements().await?.products)
    }

    async fn read_product(
        &self,
        statement: &PreparedStatement,
        sku: &str,
    ) -> Result<Option<Product>, StoreError> {
        let rows = self
            .run(statement, (sku,))
            .await?
            .into_rows_result()
            .map_err(corrupt)?;
        rows.maybe_first_row::<ProductRow>()
            .map_err(corrupt)?
            .map(product_from_row)
            .transpose()
    }

    /// The products among `skus`, in that order, read concurrently.
    async fn read_products(
        &self,
        statements: &ProductStatements,
        skus: Vec<String>,
    ) -> Result<Vec<Product>, StoreError> {
        // Owned SKUs: closures over borrowed ones trip the compiler's higher-ranked `Send`
        // inference ("implementation of `FnOnce` is not general enough").
        let found: Vec<Option<Product>> = futures::stream::iter(skus)
            .map(|sku| async move { self.read_product(&statements.get_product, &sku).await })
            .buffered(READ_FAN_OUT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// After `sku` moved out of `old_category`: drops the old index row, then re-reads the
    /// product linearizably and re-writes the row for wherever it is now. A concurrent move
    /// back therefore cannot end up unlisted; a stale row left behind is skipped on listing.
    async fn reindex_after_move(
        &self,
        statements: &ProductStatements,
        old_category: &str,
        sku: &str,
    ) -> Result<(), StoreError> {
        self.run(&statements.index_delete, (old_category, sku)).await?;
        if let Some(current) = self.read_product(&statements.get_product_serial, sku).await? {
            self.run(&statements.index_insert, (&current.category, sku))
                .await?;
        }
        Ok(())
    }
}

impl ScyllaStore {
    /// The product write of an upsert (already validated), without its announcements.
    async fn write_product(
        &self,
        product: Product,
        expected_version: Option<u64>,
    ) -> Result<Product, StoreError> {
        let statements = self.product_statements().await?;
        let previous = self.read_product(&statements.get_product, &product.sku).await?;
        // The index row goes first: a crash after the product write must not hide it. If
        // the write is refused, the row is stale and skipped on listing.
        self.run(&statements.index_insert, (&product.category, &product.sku))
            .await?;
        let now = now_ms();
        let stored = match expected_version {
            None => {
                let stored = Product {
                    version: previous.as_ref().map_or(0, |p| p.version) + 1,
                    created_at_ms: previous.as_ref().map_or(now, |p| p.created_at_ms),
                    updated_at_ms: now,
                    ..product
                };
                self.run(&statements.insert_product, product_values(&stored)?)
                    .await?;
                stored
            }
            Some(0) => {
                let stored = Product {
                    version: 1,
                    created_at_ms: now,
                    updated_at_ms: now,
                    ..product
                };
                let result = self
                    .run(&statements.insert_product_if_absent, product_values(&stored)?)
                    .await?;
                let (applied, actual) = lwt_outcome(result)?;
                if !applied {
                    let actual = actual.map_or(Ok(0), StoreError::version_from_i64)?;
                    return Err(StoreError::VersionConflict { expected: 0, actual });
                }
                stored
            }
            Some(expected) => {
                let version = expected
                    .checked_add(1)
                    .ok_or_else(|| StoreError::InvalidArgument(format!("version {expected} cannot grow")))?;
                let result = self
                    .run(
                        &statements.update_product_if_version,
                        (
                            &product.title,
                            &product.description,
                            product.price_minor,
                            &product.currency,
                            &product.category,
                            &product.brand,
                            &product.attributes,
                            product.active,
                            StoreError::version_to_i64(version)?,
                            now,
                            &product.sku,
                            StoreError::version_to_i64(expected)?,
                        ),
                    )
                    .await?;
                match lwt_outcome(result)? {
                    (true, _) => {}
                    (false, None) => {
                        return Err(StoreError::NotFound(format!(
                            "product {:?} (expected version {expected})",
                            product.sku
                        )));
                    }
                    (false, Some(actual)) => {
                        let actual = StoreError::version_from_i64(actual)?;
                        return Err(StoreError::VersionConflict { expected, actual });
                    }
                }
                let created_at_ms = match &previous {
                    Some(previous) => previous.created_at_ms,
                    // The first read missed a product the LWT found: read it properly.
                    None => self
                        .read_product(&statements.get_product_serial, &product.sku)
                        .await?
                        .map_or(now, |p| p.created_at_ms),
                };
                Product {
                    version,
                    created_at_ms,
                    updated_at_ms: now,
                    ..product
                }
            }
        };
        if let Some(previous) = previous
            && previous.category != stored.category
        {
            self.reindex_after_move(statements, &previous.category, &stored.sku)
                .await?;
        }
        Ok(stored)
    }
}

impl ProductStore for ScyllaStore {
    async fn upsert_product_announced(
        &self,
        product: Product,
        expected_version: Option<u64>,
        outbox: Vec<crate::OutboxMessage>,
    ) -> Result<Product, StoreError> {
        validate_product(&product)?;
        let outbox = crate::outbox::distinct_messages(outbox)?;
        if outbox.is_empty() {
            return self.write_product(product, expected_version).await;
        }
        // No transaction spans the outbox and the product. The announcements go first,
        // marked as announcing a write under way (listings skip them), so a crash after the
        // product write cannot lose them; once the product is written they are rewritten
        // plain and listed. A consumer re-reading the SKU on one therefore finds this write
        // (see `outbox.rs`). Announcing plainly before the write let the search indexer
        // re-read the SKU too early, find nothing, and never index it.
        self.index_pending(Some(Home::ProductWrite), &product.sku, 0, &outbox)
            .await?;
        match self.write_product(product, expected_version).await {
            Ok(stored) => {
                self.index_pending(None, "", 0, &outbox).await?;
                Ok(stored)
            }
            Err(
                refused @ (StoreError::VersionConflict { .. }
                | StoreError::NotFound(_)
                | StoreError::InvalidArgument(_)),
            ) => {
                // Refused: nothing was written, so nothing to announce. Should this delete
                // fail too, the announcements go out after the grace period: harmless.
                let ids: Vec<String> = outbox.into_iter().map(|m| m.id).collect();
                if let Err(error) = crate::OutboxStore::mark_outbox_sent(self, &ids).await {
                    tracing::warn!(%error, "dropping the announcements of a refused product write failed");
                }
                Err(refused)
            }
            // Anything else (a timeout) may have written the product: the announcements
            // stay and go out after the grace period.
            Err(error) => Err(error),
        }
    }

    async fn scan_products(&self, after_sku: Option<&str>, limit: u32) -> Result<Vec<Product>, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidArgument("page size must be at least 1".into()));
        }
        let limit = i32::try_from(limit.min(crate::products::MAX_PAGE_SIZE)).unwrap_or(i32::MAX);
        let statements = self.product_statements().await?;
        let rows: Vec<ProductRow> = match after_sku {
            None => self.rows(&statements.scan_first, (limit,)).await?,
            Some(after) => self.rows(&statements.scan_after, (after, limit)).await?,
        };
        rows.into_iter().map(product_from_row).collect()
    }

    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        let statements = self.product_statements().await?;
        self.read_product(&statements.get_product, sku).await
    }

    async fn get_products(&self, skus: &[String]) -> Result<Vec<Product>, StoreError> {
        let skus = distinct_skus(skus)?.into_iter().map(String::from).collect();
        let statements = self.product_statements().await?;
        self.read_products(statements, skus).await
    }

    async fn list_products_by_category(
        &self,
        category: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        let request = PageRequest::new(category, cursor, limit)?;
        let statements = self.product_statements().await?;
        let fetch = i32::try_from(request.fetch()).unwrap_or(i32::MAX);
        let mut after = request.after_sku.clone();
        let mut found = Vec::with_capacity(request.fetch());
        // Index rows of products that moved to another category are skipped, so one index
        // page may yield fewer products than asked: read on until the page is full.
        loop {
            let rows = self
                .run(&statements.index_page, (category, &after, fetch))
                .await?
                .into_rows_result()
                .map_err(corrupt)?;
            let skus = rows
                .rows::<(String,)>()
                .map_err(corrupt)?
                .map(|row| row.map(|(sku,)| sku))
                .collect::<Result<Vec<String>, _>>()
                .map_err(corrupt)?;
            let exhausted = skus.len() < request.fetch();
            let Some(last) = skus.last() else { break };
            after.clone_from(last);
            let products = self.read_products(statements, skus).await?;
            found.extend(products.into_iter().filter(|p| p.category == category));
            if found.len() >= request.fetch() || exhausted {
                break;
            }
        }
        found.truncate(request.fetch());
        Ok(request.page(category, found))
    }
}

/// The bound values of `insert_product*` for `product`, in `PRODUCT_COLUMNS` order.
fn product_values(product: &Product) -> Result<ProductValues<'_>, StoreError> {
    Ok((
        &product.sku,
        &product.title,
        &product.description,
        product.price_minor,
        &product.currency,
        &product.category,
        &product.brand,
        &product.attributes,
        product.active,
        StoreError::version_to_i64(product.version)?,
        product.created_at_ms,
        product.updated_at_ms,
    ))
}

fn product_from_row(row: ProductRow) -> Result<Product, StoreError> {
    let (
        sku,
        title,
        description,
        price_minor,
        currency,
        category,
        brand,
        attributes,
        active,
        version,
        created_at_ms,
        updated_at_ms,
    ) = row;
    Ok(Product {
        sku,
        title,
        description,
        price_minor,
        currency,
        category,
        brand,
        attributes: attributes.unwrap_or_default(),
        active,
        version: StoreError::version_from_i64(version)?,
        created_at_ms,
        updated_at_ms,
    })
}
