//! Orders on ScyllaDB.
//!
//! `orders` is the source of truth: an order is the static columns of its partition (by
//! id), and the events its updates announced are clustering rows of the same partition, so
//! an update and its events are one conditional batch (`IF version = ?`) in one partition:
//! atomic, and refused together.
//!
//! `orders_by_customer` is a copy for the customer listing, partitioned by customer and
//! clustered newest first. It cannot join that batch (another table, another partition),
//! so it is written *after* the commit, with the order's version as the write timestamp:
//! copies landing late or twice never replace a newer one. A crash between the commit and
//! the copy leaves the listing one version behind (or, for a create, without the order)
//! until the order is written again; `create_order` rewrites the copy even when the order
//! exists (a retried create heals it) and a refused `update_order` rewrites the current
//! copy (a retried update heals it).

use scylla::client::session::Session;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;

use super::outbox::{Home, home_event_row};
use super::{BatchRow, ScyllaStore, Statements, lwt_outcome, prepare_statement, serial};
use crate::orders::{
    OrderPage, OrderPageRequest, OrderStore, StoredOrder, validate_order, validate_order_id,
};
use crate::outbox::{OutboxMessage, distinct_messages};
use crate::{StoreError, now_ms};

const ORDER_COLUMNS: &str = "customer_id, status, created_at_ms, updated_at_ms, version, payload";
const LISTING_COLUMNS: &str = "created_at_ms, id, status, updated_at_ms, version, payload";

/// Listing reads one page may take when a status filter skips most rows; past that the
/// page comes back short, with a cursor where the reading stopped.
const MAX_LISTING_READS: usize = 8;

/// An order's static columns in `ORDER_COLUMNS` order; all null when there is no order.
type OrderRow = (
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
);

/// An `orders_by_customer` row in `LISTING_COLUMNS` order.
type ListingRow = (
    i64,
    String,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
);

/// The order statements, prepared.
pub(super) struct OrderStatements {
    get: PreparedStatement,
    get_serial: PreparedStatement,
    insert_if_absent: PreparedStatement,
    update_if_version: PreparedStatement,
    write_listing: PreparedStatement,
    list_first: PreparedStatement,
    list_after: PreparedStatement,
}

impl OrderStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        let get = prepare(
            format!("SELECT {ORDER_COLUMNS} FROM {ks}.orders WHERE id = ? LIMIT 1"),
            true,
        )
        .await?;
        Ok(Self {
            get_serial: serial(&get),
            get,
            // Static columns only: the partition's order, not an event row.
            insert_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.orders (id, {ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, 1, ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            update_if_version: prepare(
                format!(
                    "UPDATE {ks}.orders SET status = ?, payload = ?, version = ?, updated_at_ms = ? \
                     WHERE id = ? IF version = ?"
                ),
                false,
            )
            .await?,
            // The version is the write timestamp: the newest version's copy always wins.
            write_listing: prepare(
                format!(
                    "INSERT INTO {ks}.orders_by_customer (customer_id, {LISTING_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,
            list_first: prepare(
                format!(
                    "SELECT {LISTING_COLUMNS} FROM {ks}.orders_by_customer WHERE customer_id = ? LIMIT ?"
                ),
                true,
            )
            .await?,
            list_after: prepare(
                format!(
                    "SELECT {LISTING_COLUMNS} FROM {ks}.orders_by_customer \
                     WHERE customer_id = ? AND (created_at_ms, id) < (?, ?) LIMIT ?"
                ),
                true,
            )
            .await?,
        })
    }
}

fn order_from_row(id: &str, row: OrderRow) -> Result<Option<StoredOrder>, StoreError> {
    let (customer_id, status, created_at_ms, updated_at_ms, version, payload) = row;
    let Some(version) = version else {
        return Ok(None);
    };
    Ok(Some(StoredOrder {
        id: id.to_string(),
        customer_id: customer_id.unwrap_or_default(),
        status: status.unwrap_or_default(),
        created_at_ms: created_at_ms.unwrap_or_default(),
        updated_at_ms: updated_at_ms.unwrap_or_default(),
        version: StoreError::version_from_i64(version)?,
        payload: payload.unwrap_or_default(),
    }))
}

fn order_from_listing(customer_id: &str, row: ListingRow) -> Result<StoredOrder, StoreError> {
    let (created_at_ms, id, status, updated_at_ms, version, payload) = row;
    Ok(StoredOrder {
        id,
        customer_id: customer_id.to_string(),
        status: status.unwrap_or_default(),
        created_at_ms,
        updated_at_ms: updated_at_ms.unwrap_or_default(),
        version: StoreError::version_from_i64(version.unwrap_or_default())?,
        payload: payload.unwrap_or_default(),
    })
}

impl ScyllaStore {
    async fn read_order(
        &self,
        statement: &PreparedStatement,
        id: &str,
    ) -> Result<Option<StoredOrder>, StoreError> {
        match self.rows::<OrderRow>(statement, (id,)).await?.into_iter().next() {
            Some(row) => order_from_row(id, row),
            None => Ok(None),
        }
    }

    /// Writes `order`'s listing copy, stamped with its version.
    async fn write_listing(&self, statements: &Statements, order: &StoredOrder) -> Result<(), StoreError> {
        let version = StoreError::version_to_i64(order.version)?;
        self.run(
            &statements.orders.write_listing,
            (
                &order.customer_id,
                order.created_at_ms,
                &order.id,
                order.status,
                order.updated_at_ms,
                version,
                &order.payload,
                version,
            ),
        )
        .await?;
        Ok(())
    }

    /// Rewrites the listing copy of the order as it stands now, after a refused update:
    /// heals a copy a crash left behind. Best effort: the caller is told about the
    /// refusal, not about this.
    async fn heal_listing(&self, statements: &Statements, id: &str) {
        if let Ok(Some(current)) = self.read_order(&statements.orders.get_serial, id).await {
            let _ = self.write_listing(statements, &current).await;
        }
    }
}

impl OrderStore for ScyllaStore {
    async fn create_order(&self, order: StoredOrder) -> Result<StoredOrder, StoreError> {
        validate_order(&order)?;
        let statements = self.statements().await?;
        let created = StoredOrder {
            version: 1,
            updated_at_ms: now_ms(),
            ..order
        };
        let result = self
            .run(
                &statements.orders.insert_if_absent,
                (
                    &created.id,
                    &created.customer_id,
                    created.status,
                    created.created_at_ms,
                    created.updated_at_ms,
                    &created.payload,
                ),
            )
            .await?;
        let stored = if lwt_outcome(result)?.0 {
            created
        } else {
            self.read_order(&statements.orders.get_serial, &created.id)
                .await?
                .ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "order {:?} refused a create but cannot be read",
                        created.id
                    ))
                })?
        };
        // Also when the order existed: a create retried after a crash heals its listing.
        self.write_listing(statements, &stored).await?;
        Ok(stored)
    }

    async fn get_order(&self, id: &str) -> Result<Option<StoredOrder>, StoreError> {
        validate_order_id(id)?;
        let statements = self.statements().await?;
        self.read_order(&statements.orders.get, id).await
    }

    async fn update_order(
        &self,
        order: StoredOrder,
        expected_version: u64,
        outbox: Vec<OutboxMessage>,
    ) -> Result<StoredOrder, StoreError> {
        validate_order_id(&order.id)?;
        let expected = StoreError::version_to_i64(expected_version)?;
        let next_version = expected_version.saturating_add(1);
        let next = StoreError::version_to_i64(next_version)?;
        let outbox = distinct_messages(outbox)?;
        let statements = self.statements().await?;

        // A quorum read sees every committed update and versions only grow: an order not
        // at `expected_version` now never will be, so refuse without an LWT.
        let current = self
            .read_order(&statements.orders.get, &order.id)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "order {:?} (expected version {expected_version})",
                    order.id
                ))
            })?;
        if current.version != expected_version {
            self.heal_listing(statements, &order.id).await;
            return Err(StoreError::VersionConflict {
                expected: expected_version,
                actual: current.version,
            });
        }

        // Index rows before the batch that writes the events they point at.
        self.index_pending(Some(Home::Order), &order.id, next, &outbox)
            .await?;
        let now = now_ms();
        let values = (
            order.status,
            order.payload.clone(),
            next,
            now,
            order.id.clone(),
            expected,
        );
        let result = if outbox.is_empty() {
            self.run(&statements.orders.update_if_version, values).await?
        } else {
            // One partition of one table: the order and its events commit together.
            let mut batch = Batch::default();
            batch.append_statement(statements.orders.update_if_version.clone());
            let mut rows: Vec<BatchRow> = vec![Box::new(values)];
            for message in &outbox {
                batch.append_statement(statements.outbox.insert_order_event.clone());
                rows.push(home_event_row(&order.id, message));
            }
            self.run_batch(&batch, rows).await?
        };
        match lwt_outcome(result)? {
            (true, _) => {}
            (false, None) => {
                return Err(StoreError::NotFound(format!(
                    "order {:?} (expected version {expected_version})",
                    order.id
                )));
            }
            (false, Some(actual)) => {
                self.heal_listing(statements, &order.id).await;
                return Err(StoreError::VersionConflict {
                    expected: expected_version,
                    actual: StoreError::version_from_i64(actual)?,
                });
            }
        }
        let stored = StoredOrder {
            id: order.id,
            customer_id: current.customer_id,
            status: order.status,
            created_at_ms: current.created_at_ms,
            updated_at_ms: now,
            version: next_version,
            payload: order.payload,
        };
        // After the commit, and not its outcome: reporting a failure here would invite a
        // retry that can only conflict. A missed copy heals on the next write (see above).
        let _ = self.write_listing(statements, &stored).await;
        Ok(stored)
    }

    async fn list_orders_by_customer(
        &self,
        customer_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        let request = OrderPageRequest::new(customer_id, statuses, cursor, limit)?;
        let statements = self.statements().await?;
        let fetch = request.fetch();
        let fetch_i32 = i32::try_from(fetch).unwrap_or(i32::MAX);
        let mut after = request.after.clone();
        let mut found = Vec::with_capacity(fetch);
        let mut scanned_to = None;
        // Statuses are filtered here, not in CQL (that would need ALLOW FILTERING): read
        // the partition in pages until the page is full or the listing ends.
        for read in 1..=MAX_LISTING_READS {
            let rows: Vec<ListingRow> = match &after {
                None => {
                    self.rows(&statements.orders.list_first, (customer_id, fetch_i32))
                        .await?
                }
                Some((created_at_ms, id)) => {
                    self.rows(
                        &statements.orders.list_after,
                        (customer_id, *created_at_ms, id, fetch_i32),
                    )
                    .await?
                }
            };
            let exhausted = rows.len() < fetch;
            let last = rows
                .last()
                .map(|(created_at_ms, id, ..)| (*created_at_ms, id.clone()));
            for row in rows {
                let order = order_from_listing(customer_id, row)?;
                if request.keeps(order.status) {
                    found.push(order);
                    if found.len() == fetch {
                        break;
                    }
                }
            }
            if exhausted || found.len() == fetch {
                break;
            }
            after = last;
            if read == MAX_LISTING_READS {
                scanned_to = after.clone();
            }
        }
        Ok(request.page(customer_id, found, scanned_to))
    }
}
