//! The production backend: ScyllaDB through the `scylla` driver.
//!
//! Schema in `schema/scylla.cql`, applied by [`ScyllaStore::migrate`] (`holdfast migrate`).
//! Every query is a prepared statement, prepared once per store: by
//! [`ScyllaStore::prepare`] when a server starts, else on first use (so a store can be
//! connected before the schema exists and migrate it). Each aggregate lives in a
//! submodule: products (LWTs only for creates `IF NOT EXISTS` and updates `IF version = ?`)
//! and carts (no LWT: cell timestamps are the cart versions, `USING TIMESTAMP`, so
//! last-write-wins does it).
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

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::Consistency;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::sync::OnceCell;

use crate::StoreError;

mod buckets;
mod carts;
mod idempotency;
mod orders;
mod outbox;
mod products;
mod sagas;
mod stock_truth;
mod waiting_room;
mod warehouse;

/// The schema, keyspace `holdfast`; see [`schema_statements`].
pub const SCHEMA_CQL: &str = include_str!("../schema/scylla.cql");
/// The keyspace name spelled in [`SCHEMA_CQL`].
pub const DEFAULT_KEYSPACE: &str = "holdfast";

/// How long to wait for a first connection to any contact point.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads in flight at once for one batch get or listing page.
const READ_FAN_OUT: usize = 16;
/// The ScyllaDB store. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
    /// How long a cart row lives after the cart's last change (`USING TTL`).
    cart_ttl: Duration,
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
    products: products::ProductStatements,
    carts: carts::CartStatements,
    orders: orders::OrderStatements,
    sagas: sagas::SagaStatements,
    keys: idempotency::KeyStatements,
    outbox: outbox::OutboxStatements,
    warehouse: warehouse::WarehouseStatements,
    truth: stock_truth::TruthStatements,
    waiting_room: waiting_room::WaitingRoomStatements,
}

impl Statements {
    /// The aggregates' statements are prepared concurrently: one after another they are
    /// about 70 round trips, which the first requests after a start would otherwise wait for.
    async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let (products, carts, orders, sagas, keys, outbox, warehouse, truth, waiting_room) = futures::try_join!(
            products::ProductStatements::prepare(session, ks),
            carts::CartStatements::prepare(session, ks),
            orders::OrderStatements::prepare(session, ks),
            sagas::SagaStatements::prepare(session, ks),
            idempotency::KeyStatements::prepare(session, ks),
            outbox::OutboxStatements::prepare(session, ks),
            warehouse::WarehouseStatements::prepare(session, ks),
            stock_truth::TruthStatements::prepare(session, ks),
            waiting_room::WaitingRoomStatements::prepare(session, ks),
        )?;
        Ok(Self {
            products,
            carts,
            orders,
            sagas,
            keys,
            outbox,
            warehouse,
            truth,
            waiting_room,
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
            cart_ttl: crate::DEFAULT_CART_TTL,
        })
    }

    /// This store with cart rows expiring `ttl` after their cart's last change instead of
    /// [`DEFAULT_CART_TTL`](crate::DEFAULT_CART_TTL) (whole seconds, at least one).
    #[must_use]
    pub fn with_cart_ttl(mut self, ttl: Duration) -> Self {
        self.cart_ttl = ttl;
        self
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

    /// Prepares every statement now rather than on first use. A server calls it once the
    /// store is open, so its first requests do not queue behind the preparation (measured:
    /// the first checkouts of a fresh `holdfast dev` on Cassandra took 2.4 s instead of
    /// 0.2 s). Fails, naming `holdfast migrate`, when the schema is not applied.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        self.statements().await.map(|_| ())
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
            "stock_truth",
            "stock_sales",
            "waiting_room",
            "waiting_room_keys",
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
        assert_eq!(statements.len(), 21);
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
