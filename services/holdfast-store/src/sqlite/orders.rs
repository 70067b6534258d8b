//! Orders on SQLite: one table, listed through the (customer, newest first) index.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::outbox::insert_messages;
use super::{SqliteStore, sqlite_error};
use crate::orders::{
    OrderPage, OrderPageRequest, OrderStore, StoredOrder, validate_order, validate_order_id,
};
use crate::outbox::{OutboxMessage, distinct_messages};
use crate::{StoreError, now_ms};

const ORDER_COLUMNS: &str = "id, customer_id, status, created_at_ms, updated_at_ms, version, payload";

fn read_order(row: &Row<'_>) -> rusqlite::Result<StoredOrder> {
    let version: i64 = row.get(5)?;
    Ok(StoredOrder {
        id: row.get(0)?,
        customer_id: row.get(1)?,
        status: row.get(2)?,
        created_at_ms: row.get(3)?,
        updated_at_ms: row.get(4)?,
        version: u64::try_from(version).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(5, version))?,
        payload: row.get(6)?,
    })
}

fn select_order(conn: &Connection, id: &str) -> Result<Option<StoredOrder>, StoreError> {
    conn.prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], read_order).optional())
        .map_err(sqlite_error)
}

/// Creates `order` (version 1) unless its id exists: the existing one is returned then.
pub(super) fn insert_order(tx: &Connection, order: StoredOrder) -> Result<StoredOrder, StoreError> {
    if let Some(existing) = select_order(tx, &order.id)? {
        return Ok(existing);
    }
    let stored = StoredOrder {
        version: 1,
        updated_at_ms: now_ms(),
        ..order
    };
    tx.prepare_cached(&format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)"
    ))
    .and_then(|mut statement| {
        statement.execute(params![
            stored.id,
            stored.customer_id,
            stored.status,
            stored.created_at_ms,
            stored.updated_at_ms,
            stored.payload,
        ])
    })
    .map_err(sqlite_error)?;
    Ok(stored)
}

/// Replaces `order`'s status and payload at `expected_version`, with `outbox` (checked
/// distinct by the caller); the order as stored.
pub(super) fn update_order_on(
    tx: &Connection,
    order: StoredOrder,
    expected_version: u64,
    outbox: &[OutboxMessage],
) -> Result<StoredOrder, StoreError> {
    validate_order_id(&order.id)?;
    let expected = StoreError::version_to_i64(expected_version)?;
    let next = StoreError::version_to_i64(expected_version.saturating_add(1))?;
    // The version check and the write are one statement; the outbox rows join
    // them in this transaction, so a refused update writes no events either.
    let changed = tx
        .prepare_cached(
            "UPDATE orders SET status = ?1, payload = ?2, version = ?3, updated_at_ms = ?4
             WHERE id = ?5 AND version = ?6",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                order.status,
                order.payload,
                next,
                now_ms(),
                order.id,
                expected
            ])
        })
        .map_err(sqlite_error)?;
    if changed == 0 {
        return Err(match select_order(tx, &order.id)? {
            None => StoreError::NotFound(format!(
                "order {:?} (expected version {expected_version})",
                order.id
            )),
            Some(current) => StoreError::VersionConflict {
                expected: expected_version,
                actual: current.version,
            },
        });
    }
    insert_messages(tx, outbox)?;
    let stored = select_order(tx, &order.id)?
        .ok_or_else(|| StoreError::Corrupt(format!("order {:?} vanished mid-update", order.id)))?;
    Ok(stored)
}

impl OrderStore for SqliteStore {
    async fn create_order(&self, order: StoredOrder) -> Result<StoredOrder, StoreError> {
        validate_order(&order)?;
        self.write(move |conn| insert_order(conn, order)).await
    }

    async fn get_order(&self, id: &str) -> Result<Option<StoredOrder>, StoreError> {
        validate_order_id(id)?;
        let id = id.to_string();
        self.lookup(move |conn| select_order(conn, &id)).await
    }

    async fn update_order(
        &self,
        order: StoredOrder,
        expected_version: u64,
        outbox: Vec<OutboxMessage>,
    ) -> Result<StoredOrder, StoreError> {
        validate_order_id(&order.id)?;
        let outbox = distinct_messages(outbox)?;
        self.write(move |conn| update_order_on(conn, order, expected_version, &outbox))
            .await
    }

    async fn list_orders_by_customer(
        &self,
        customer_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        let request = OrderPageRequest::new(customer_id, statuses, cursor, limit)?;
        let customer_id = customer_id.to_string();
        let statuses = serde_json::to_string(&request.statuses)
            .map_err(|e| StoreError::InvalidArgument(format!("statuses: {e}")))?;
        self.read(move |conn| {
            let fetch = i64::try_from(request.fetch()).unwrap_or(i64::MAX);
            // `?2` is a JSON array of the statuses to keep, '[]' for all of them.
            let filter = "customer_id = ?1 AND (?2 = '[]' OR status IN (SELECT value FROM json_each(?2)))";
            let order_by = "ORDER BY created_at_ms DESC, id DESC LIMIT ?3";
            let rows = match &request.after {
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {ORDER_COLUMNS} FROM orders WHERE {filter} {order_by}"
                    ))
                    .and_then(|mut statement| {
                        statement
                            .query_map(params![customer_id, statuses, fetch], read_order)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
                Some((created_at_ms, id)) => conn
                    .prepare_cached(&format!(
                        "SELECT {ORDER_COLUMNS} FROM orders
                         WHERE {filter} AND (created_at_ms, id) < (?4, ?5) {order_by}"
                    ))
                    .and_then(|mut statement| {
                        statement
                            .query_map(
                                params![customer_id, statuses, fetch, created_at_ms, id],
                                read_order,
                            )?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
            }
            .map_err(sqlite_error)?;
            Ok(request.page(&customer_id, rows, None))
        })
        .await
    }
}
