//! The order aggregate: placed orders, read by id and listed by customer, newest first.
//!
//! The store does not interpret an order beyond what it must index: the full order (lines,
//! address, suborders, history...) travels as `payload`, an encoded
//! `holdfast.orders.v1.Order` the orders service owns. Changes are optimistic by version.

use std::future::Future;

use crate::{OutboxMessage, StoreError};

/// Largest page `list_orders_by_customer` returns; larger requests are served this many.
pub const MAX_ORDER_PAGE_SIZE: u32 = 500;

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredOrder {
    /// The order id ("ord_" + UUID v7), the key.
    pub id: String,
    /// The customer who placed it; orders are listed (and, on ScyllaDB, partitioned) by it.
    pub customer_id: String,
    /// The `holdfast.orders.v1.OrderStatus` number, indexed so listings can filter on it.
    pub status: i32,
    /// When it was created (Unix ms); listings sort on it. Kept from the first write.
    pub created_at_ms: i64,
    /// Set by the store: when it was last written (Unix ms).
    pub updated_at_ms: i64,
    /// Set by the store: 1 on creation, +1 on every update.
    pub version: u64,
    /// The encoded `holdfast.orders.v1.Order`, opaque to the store.
    pub payload: Vec<u8>,
}

/// One page of a customer's orders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderPage {
    /// Orders by `created_at_ms` descending, ties by id descending.
    pub orders: Vec<StoredOrder>,
    /// Pass this back for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Durable storage of orders.
pub trait OrderStore: Send + Sync {
    /// Creates `order` (version 1) unless an order with its id exists, in which case the
    /// stored one is returned unchanged: creating twice is safe (a saga step that is
    /// retried after a crash). `version` and `updated_at_ms` of the argument are ignored.
    fn create_order(&self, order: StoredOrder) -> impl Future<Output = Result<StoredOrder, StoreError>> + Send;

    /// The order with this id, if any.
    fn get_order(&self, id: &str) -> impl Future<Output = Result<Option<StoredOrder>, StoreError>> + Send;

    /// Replaces the order's `status` and `payload` if the stored version is
    /// `expected_version`, and appends `outbox` in the same atomic write (SQLite: one
    /// transaction). `NotFound` if there is no such order, `VersionConflict` if it moved on
    /// (nothing is written then, outbox included). `customer_id` and `created_at_ms` cannot
    /// change. Returns the order as stored (version + 1).
    fn update_order(
        &self,
        order: StoredOrder,
        expected_version: u64,
        outbox: Vec<OutboxMessage>,
    ) -> impl Future<Output = Result<StoredOrder, StoreError>> + Send;

    /// A page of the customer's orders, newest first (ties by id descending), only those
    /// whose status is in `statuses` (empty: every status), starting after `cursor` (from
    /// the previous page; `None` for the first). `limit` must be at least 1 and is capped
    /// at [`MAX_ORDER_PAGE_SIZE`]. A page may hold fewer than `limit` orders and still
    /// have a next cursor; an unknown customer has an empty first page.
    fn list_orders_by_customer(
        &self,
        customer_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<OrderPage, StoreError>> + Send;
}
