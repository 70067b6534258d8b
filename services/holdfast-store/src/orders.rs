//! The order aggregate: placed orders, read by id and listed by customer, newest first.
//!
//! The store does not interpret an order beyond what it must index: the full order (lines,
//! address, suborders, history...) travels as `payload`, an encoded
//! `holdfast.orders.v1.Order` the orders service owns. Changes are optimistic by version.

use std::future::Future;

use crate::{OutboxMessage, StoreError, cursor};

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
    fn create_order(
        &self,
        order: StoredOrder,
    ) -> impl Future<Output = Result<StoredOrder, StoreError>> + Send;

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

/// Refuses orders no backend can key.
pub(crate) fn validate_order(order: &StoredOrder) -> Result<(), StoreError> {
    validate_order_id(&order.id)?;
    if order.customer_id.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "order {:?} has an empty customer id",
            order.id
        )));
    }
    Ok(())
}

/// Refuses an empty order id.
pub(crate) fn validate_order_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::InvalidArgument("order id is empty".into()));
    }
    Ok(())
}

/// A customer listing request, checked: where to resume, what to keep, how many to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderPageRequest {
    /// Return orders strictly after this (created_at_ms, id) in listing order; `None` on
    /// the first page.
    pub after: Option<(i64, String)>,
    /// The statuses to keep, sorted and distinct; empty keeps every status.
    pub statuses: Vec<i32>,
    /// Page size, 1..=MAX_ORDER_PAGE_SIZE.
    pub limit: usize,
}

impl OrderPageRequest {
    pub(crate) fn new(
        customer_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Self, StoreError> {
        if customer_id.is_empty() {
            return Err(StoreError::InvalidArgument("customer id is empty".into()));
        }
        if limit == 0 {
            return Err(StoreError::InvalidArgument("page size must be at least 1".into()));
        }
        let after = cursor
            .map(|cursor| cursor::decode_position(&cursor_partition(customer_id), cursor))
            .transpose()?;
        let mut statuses = statuses.to_vec();
        statuses.sort_unstable();
        statuses.dedup();
        Ok(Self {
            after,
            statuses,
            limit: limit.min(MAX_ORDER_PAGE_SIZE) as usize,
        })
    }

    /// Matching rows to read: one more than the page, to learn whether another follows.
    pub(crate) fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// Whether an order with this status belongs on the page.
    pub(crate) fn keeps(&self, status: i32) -> bool {
        self.statuses.is_empty() || self.statuses.binary_search(&status).is_ok()
    }

    /// The page from up to `fetch()` matching orders in listing order. `scanned_to` is the
    /// last position examined when reading stopped short of the listing's end with fewer
    /// matches than `fetch()` (a backend that filters statuses as it reads); the next page
    /// resumes after it.
    pub(crate) fn page(
        &self,
        customer_id: &str,
        mut rows: Vec<StoredOrder>,
        scanned_to: Option<(i64, String)>,
    ) -> OrderPage {
        let partition = cursor_partition(customer_id);
        let next_cursor = if rows.len() > self.limit {
            rows.truncate(self.limit);
            rows.last()
                .map(|last| cursor::encode_position(&partition, last.created_at_ms, &last.id))
        } else {
            scanned_to.map(|(created_at_ms, id)| cursor::encode_position(&partition, created_at_ms, &id))
        };
        OrderPage {
            orders: rows,
            next_cursor,
        }
    }
}

/// What a customer's cursors are bound to: the prefix keeps them apart from category
/// cursors even where a customer id and a category name coincide.
fn cursor_partition(customer_id: &str) -> String {
    format!("orders:{customer_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, created_at_ms: i64, status: i32) -> StoredOrder {
        StoredOrder {
            id: id.into(),
            customer_id: "c".into(),
            status,
            created_at_ms,
            ..StoredOrder::default()
        }
    }

    #[test]
    fn validate_order_refuses_empty_keys() {
        assert_eq!(validate_order(&order("o", 1, 1)), Ok(()));
        assert!(validate_order(&order("", 1, 1)).is_err());
        let orphan = StoredOrder {
            customer_id: String::new(),
            ..order("o", 1, 1)
        };
        assert!(validate_order(&orphan).is_err());
    }

    #[test]
    fn order_page_request_checks_caps_and_normalises_statuses() {
        assert!(OrderPageRequest::new("c", &[], None, 0).is_err());
        assert!(OrderPageRequest::new("", &[], None, 5).is_err());
        assert!(OrderPageRequest::new("c", &[], Some("nonsense"), 5).is_err());
        let capped = OrderPageRequest::new("c", &[3, 1, 3], None, u32::MAX).unwrap();
        assert_eq!(capped.limit, MAX_ORDER_PAGE_SIZE as usize);
        assert_eq!(capped.statuses, [1, 3]);
        assert_eq!(capped.after, None);
        assert!(capped.keeps(1) && capped.keeps(3) && !capped.keeps(2));
        assert!(OrderPageRequest::new("c", &[], None, 1).unwrap().keeps(42));
    }

    #[test]
    fn order_page_cursor_resumes_after_last_row_or_scan_position() {
        let request = OrderPageRequest::new("c", &[], None, 2).unwrap();
        let last = request.page("c", vec![order("b", 5, 1), order("a", 5, 1)], None);
        assert_eq!(last.orders.len(), 2);
        assert_eq!(last.next_cursor, None);

        let more = request.page(
            "c",
            vec![order("b", 5, 1), order("a", 5, 1), order("z", 4, 1)],
            None,
        );
        assert_eq!(more.orders.len(), 2);
        let next = OrderPageRequest::new("c", &[], more.next_cursor.as_deref(), 2).unwrap();
        assert_eq!(next.after, Some((5, "a".to_string())));
        assert!(
            OrderPageRequest::new("other", &[], more.next_cursor.as_deref(), 2).is_err(),
            "a cursor is bound to its customer"
        );

        let short = request.page("c", vec![order("b", 5, 1)], Some((3, "q".into())));
        assert_eq!(short.orders.len(), 1);
        let next = OrderPageRequest::new("c", &[], short.next_cursor.as_deref(), 2).unwrap();
        assert_eq!(next.after, Some((3, "q".to_string())));
    }
}
