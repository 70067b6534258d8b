//! The production backend: ScyllaDB through the `scylla` driver.
//!
//! Schema in `schema/scylla.cql`, applied by [`ScyllaStore::migrate`] (`holdfast migrate`).
//! Every query is a prepared statement, prepared once per store on first use (so a store
//! can be connected before the schema exists and migrate it). Lightweight transactions are
//! used only where a condition must hold: product creates (`IF NOT EXISTS`) and updates
//! against an expected version (`IF version = ?`). Carts need none: their cell timestamps
//! are the cart versions (`USING TIMESTAMP`), so ScyllaDB's own last-write-wins does it.
//!
//! Orders, sagas, idempotency keys and the outbox live in submodules. LWTs there: key
//! claims (`IF NOT EXISTS ... USING TTL`), order creates and conditional updates, saga
//! creates and transitions (`IF version = ?`), each conditional batch confined to one
//! partition of one table as ScyllaDB requires. What that makes atomic, and what is only
//! ordered so that a crash leaves harmless leftovers, is written down in
//! `schema/scylla.cql` next to each table. Warehouses, stock and shipments (submodule
//! `warehouse`) change through intent-logged sequences of LWTs, documented there too.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::Consistency;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::sync::OnceCell;

use crate::carts::{CartStore, StoredCart, StoredCartLine, validate_cart, validate_owner};
use crate::products::{PageRequest, Product, ProductPage, ProductStore, distinct_skus, validate_product};
use crate::{StoreError, now_ms};

mod buckets;
mod idempotency;
mod orders;
mod outbox;
mod sagas;
mod warehouse;

/// The schema, keyspace `holdfast`; see [`schema_statements`].
pub const SCHEMA_CQL: &str = include_str!("../schema/scylla.cql");
/// The keyspace name spelled in [`SCHEMA_CQL`].
pub const DEFAULT_KEYSPACE: &str = "holdfast";

/// How long to wait for a first connection to any contact point.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Product reads in flight at once for one batch get or listing page.
const READ_FAN_OUT: usize = 16;

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

/// A cart line as the `carts.lines` tuple holds it.
type LineTuple = (String, i64, i64, String, i64);

/// The ScyllaDB store. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    keyspace: String,
    statements: OnceCell<Statements>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("keyspace", &self.inner.keyspace)
            .finish_non_exhaustive()
    }
}

/// Every statement the store runs, prepared.
struct Statements {
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
    load_cart: PreparedStatement,
    save_cart: PreparedStatement,
    delete_cart: PreparedStatement,
    orders: orders::OrderStatements,
    sagas: sagas::SagaStatements,
    keys: idempotency::KeyStatements,
    outbox: outbox::OutboxStatements,
    warehouse: warehouse::WarehouseStatements,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
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
            load_cart: prepare(
                format!("SELECT lines, version, updated_at_ms FROM {ks}.carts WHERE owner = ?"),
                true,
            )
            .await?,
            // The write timestamp is the version, so replays and reorderings are harmless.
            save_cart: prepare(
                format!(
                    "INSERT INTO {ks}.carts (owner, lines, version, updated_at_ms) VALUES (?, ?, ?, ?) \
                     USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,
            delete_cart: prepare(
                format!("DELETE FROM {ks}.carts USING TIMESTAMP ? WHERE owner = ?"),
                true,
            )
            .await?,
            orders: orders::OrderStatements::prepare(session, ks).await?,
            sagas: sagas::SagaStatements::prepare(session, ks).await?,
            keys: idempotency::KeyStatements::prepare(session, ks).await?,
            outbox: outbox::OutboxStatements::prepare(session, ks).await?,
            warehouse: warehouse::WarehouseStatements::prepare(session, ks).await?,
        })
    }
}

/// Prepares `cql`. `idempotent` lets the driver retry it after a timeout: only for
/// statements safe to run twice (never an LWT).
async fn prepare_statement(
    session: &Session,
    cql: String,
    idempotent: bool,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session.prepare(cql.as_str()).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "scylla: cannot prepare {cql:?} (is the schema applied? `holdfast migrate`): {e}"
        ))
    })?;
    statement.set_is_idempotent(idempotent);
    Ok(statement)
}

/// A copy of `statement` that reads at SERIAL consistency: it sees every applied LWT, and
/// finishes one left half-done before answering.
fn serial(statement: &PreparedStatement) -> PreparedStatement {
    let mut serial = statement.clone();
    serial.set_consistency(Consistency::Serial);
    serial
}

/// One statement's bound values in a batch whose statements differ.
type BatchRow = Box<dyn SerializeRow + Send + Sync>;

impl ScyllaStore {
    /// Connects to the cluster through `nodes` (`host:port` contact points). Does not touch
    /// the schema: call [`migrate`](Self::migrate) to create it; statements are prepared on
    /// first use.
    pub async fn connect(nodes: &[String], keyspace: &str) -> Result<Self, StoreError> {
        validate_keyspace(keyspace)?;
        if nodes.is_empty() {
            return Err(StoreError::InvalidArgument(
                "no scylla contact points given".into(),
            ));
        }
        let session = SessionBuilder::new()
            .known_nodes(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .build()
            .await
            .map_err(unavailable)?;
        Ok(Self {
            inner: Arc::new(Inner {
                session,
                keyspace: keyspace.to_string(),
                statements: OnceCell::new(),
            }),
        })
    }

    /// The keyspace this store reads and writes.
    pub fn keyspace(&self) -> &str {
        &self.inner.keyspace
    }

    /// Applies `schema/scylla.cql` to this store's keyspace (idempotent) and waits until
    /// every node agrees on the schema.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        for statement in schema_statements(&self.inner.keyspace)? {
            self.inner
                .session
                .query_unpaged(statement, ())
                .await
                .map_err(unavailable)?;
        }
        self.inner
            .session
            .await_schema_agreement()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn statements(&self) -> Result<&Statements, StoreError> {
        self.inner
            .statements
            .get_or_try_init(|| Statements::prepare(&self.inner.session, &self.inner.keyspace))
            .await
    }

    async fn run(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.inner
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(unavailable)
    }

    /// Runs `batch` (a conditional one confined to one partition, in this store) with one
    /// row of values per statement.
    async fn run_batch(&self, batch: &Batch, values: Vec<BatchRow>) -> Result<QueryResult, StoreError> {
        self.inner.session.batch(batch, values).await.map_err(unavailable)
    }

    /// Runs `statement` and decodes every row as `R`.
    async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        let rows = self
            .run(statement, values)
            .await?
            .into_rows_result()
            .map_err(corrupt)?;
        rows.rows::<R>()
            .map_err(corrupt)?
            .collect::<Result<Vec<R>, _>>()
            .map_err(corrupt)
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
        statements: &Statements,
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
        statements: &Statements,
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

impl ProductStore for ScyllaStore {
    async fn upsert_product_announced(
        &self,
        product: Product,
        expected_version: Option<u64>,
        outbox: Vec<crate::OutboxMessage>,
    ) -> Result<Product, StoreError> {
        validate_product(&product)?;
        // No transaction spans the outbox and the product: the announcement goes first, so
        // a crash after the product write cannot lose it (a refused write announces nothing
        // that re-reading the SKU would not show).
        if !outbox.is_empty() {
            crate::OutboxStore::append_outbox(self, outbox).await?;
        }
        let statements = self.statements().await?;
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

    async fn scan_products(&self, after_sku: Option<&str>, limit: u32) -> Result<Vec<Product>, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidArgument("page size must be at least 1".into()));
        }
        let limit = i32::try_from(limit.min(crate::products::MAX_PAGE_SIZE)).unwrap_or(i32::MAX);
        let statements = self.statements().await?;
        let rows: Vec<ProductRow> = match after_sku {
            None => self.rows(&statements.scan_first, (limit,)).await?,
            Some(after) => self.rows(&statements.scan_after, (after, limit)).await?,
        };
        rows.into_iter().map(product_from_row).collect()
    }

    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        let statements = self.statements().await?;
        self.read_product(&statements.get_product, sku).await
    }

    async fn get_products(&self, skus: &[String]) -> Result<Vec<Product>, StoreError> {
        let skus = distinct_skus(skus)?.into_iter().map(String::from).collect();
        let statements = self.statements().await?;
        self.read_products(statements, skus).await
    }

    async fn list_products_by_category(
        &self,
        category: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        let request = PageRequest::new(category, cursor, limit)?;
        let statements = self.statements().await?;
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

impl CartStore for ScyllaStore {
    async fn save_cart(&self, cart: StoredCart) -> Result<(), StoreError> {
        let version = validate_cart(&cart)?;
        let statements = self.statements().await?;
        let lines: Vec<LineTuple> = cart
            .lines
            .into_iter()
            .map(|line| {
                (
                    line.sku,
                    line.quantity,
                    line.unit_price_minor,
                    line.currency,
                    line.added_at_ms,
                )
            })
            .collect();
        self.run(
            &statements.save_cart,
            (&cart.owner, lines, version, cart.updated_at_ms, version),
        )
        .await?;
        Ok(())
    }

    async fn load_cart(&self, owner: &str) -> Result<Option<StoredCart>, StoreError> {
        validate_owner(owner)?;
        let statements = self.statements().await?;
        let rows = self
            .run(&statements.load_cart, (owner,))
            .await?
            .into_rows_result()
            .map_err(corrupt)?;
        let Some((lines, version, updated_at_ms)) = rows
            .maybe_first_row::<(Option<Vec<LineTuple>>, i64, i64)>()
            .map_err(corrupt)?
        else {
            return Ok(None);
        };
        Ok(Some(StoredCart {
            owner: owner.to_string(),
            lines: lines
                .unwrap_or_default()
                .into_iter()
                .map(
                    |(sku, quantity, unit_price_minor, currency, added_at_ms)| StoredCartLine {
                        sku,
                        quantity,
                        unit_price_minor,
                        currency,
                        added_at_ms,
                    },
                )
                .collect(),
            version: StoreError::version_from_i64(version)?,
            updated_at_ms,
        }))
    }

    async fn delete_cart(&self, owner: &str) -> Result<(), StoreError> {
        let Some(stored) = self.load_cart(owner).await? else {
            return Ok(());
        };
        let statements = self.statements().await?;
        // A tombstone at the stored version: it shadows that version and older ones, and a
        // save that raced ahead with a newer version survives it.
        self.run(
            &statements.delete_cart,
            (StoreError::version_to_i64(stored.version)?, owner),
        )
        .await?;
        Ok(())
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

/// Whether an LWT applied, and the stored `version` it reported when it did not (`None`
/// when no row exists).
fn lwt_outcome(result: QueryResult) -> Result<(bool, Option<i64>), StoreError> {
    let rows = result.into_rows_result().map_err(corrupt)?;
    let specs = rows.column_specs();
    let applied_at = specs
        .get_by_name("[applied]")
        .map(|(index, _)| index)
        .ok_or_else(|| StoreError::Corrupt("lwt result has no [applied] column".into()))?;
    let version_at = specs.get_by_name("version").map(|(index, _)| index);
    let row: Row = rows.single_row().map_err(corrupt)?;
    let cell = |index: usize| row.columns.get(index).and_then(Option::as_ref);
    let applied = cell(applied_at)
        .and_then(CqlValue::as_boolean)
        .ok_or_else(|| StoreError::Corrupt("lwt [applied] is not a boolean".into()))?;
    Ok((applied, version_at.and_then(cell).and_then(CqlValue::as_bigint)))
}

/// Keyspace names as the schema may use them unquoted.
fn validate_keyspace(keyspace: &str) -> Result<(), StoreError> {
    let mut chars = keyspace.chars();
    let valid = keyspace.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "keyspace {keyspace:?} must be 1-48 of [a-z0-9_], starting with a letter"
        )))
    }
}

/// The statements of [`SCHEMA_CQL`] for `keyspace`, in order: comments dropped, split on
/// `;`, the keyspace name substituted.
pub fn schema_statements(keyspace: &str) -> Result<Vec<String>, StoreError> {
    validate_keyspace(keyspace)?;
    let without_comments: String = SCHEMA_CQL
        .lines()
        .map(|line| line.find("--").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(without_comments
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(|statement| {
            statement
                .replace(
                    &format!("KEYSPACE IF NOT EXISTS {DEFAULT_KEYSPACE}\n"),
                    &format!("KEYSPACE IF NOT EXISTS {keyspace}\n"),
                )
                .replace(&format!(" {DEFAULT_KEYSPACE}."), &format!(" {keyspace}."))
        })
        .collect())
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("scylla: {error}"))
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("scylla: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_statements_create_keyspace_then_tables() {
        let statements = schema_statements(DEFAULT_KEYSPACE).unwrap();
        let tables = [
            "products",
            "products_by_category",
            "carts",
            "orders",
            "orders_by_customer",
            "sagas",
            "sagas_by_lease",
            "idempotency_keys",
            "outbox_pending",
            "warehouses",
            "warehouse_stock",
            "warehouse_stock_by_sku",
            "shipments",
            "shipments_by_order",
            "shipments_by_warehouse",
            "warehouse_claims",
        ];
        assert_eq!(statements.len(), 1 + tables.len(), "{statements:#?}");
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS holdfast\n"));
        for (statement, table) in statements[1..].iter().zip(tables) {
            assert!(
                statement.starts_with(&format!("CREATE TABLE IF NOT EXISTS holdfast.{table} (")),
                "{statement}"
            );
        }
        assert!(statements.iter().all(|s| !s.contains("--")));
    }

    #[test]
    fn schema_statements_use_the_configured_keyspace_everywhere() {
        let statements = schema_statements("shop_test_1").unwrap();
        assert_eq!(statements.len(), 17);
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS shop_test_1\n"));
        for statement in &statements {
            assert!(!statement.contains(DEFAULT_KEYSPACE), "{statement}");
        }
        assert!(statements[1..].iter().all(|s| s.contains(" shop_test_1.")));
    }

    #[test]
    fn schema_keeps_each_aggregate_and_its_events_in_one_partition() {
        // A conditional batch must stay in one partition of one table: the saga and order
        // fields are static, their events clustering rows of the same partition.
        let statements = schema_statements(DEFAULT_KEYSPACE).unwrap();
        for table in ["orders", "sagas"] {
            let create = statements
                .iter()
                .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS holdfast.{table} (")))
                .unwrap();
            assert!(create.contains("PRIMARY KEY ((id), outbox_id)"), "{create}");
            assert!(create.contains("version             bigint static"), "{create}");
        }
    }

    #[test]
    fn keyspace_names_are_checked() {
        for good in ["holdfast", "a", "shop_eu_1"] {
            assert!(validate_keyspace(good).is_ok(), "{good}");
        }
        for bad in ["", "1shop", "Shop", "shop-eu", "shop;drop", &"k".repeat(49)] {
            assert!(validate_keyspace(bad).is_err(), "{bad}");
            assert!(schema_statements(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn scylla_connect_refuses_bad_arguments_before_dialing() {
        assert!(matches!(
            ScyllaStore::connect(&[], "holdfast").await,
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            ScyllaStore::connect(&["127.0.0.1:9042".into()], "Bad-Name").await,
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
