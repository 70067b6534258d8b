//! The transactional outbox: events written in the same atomic write as the state change
//! they announce, then published by a relay that marks them sent once the bus accepted
//! them. A crash between the two publishes again (duplicates are possible and harmless:
//! consumers dedupe by event id); nothing is lost.

use std::collections::BTreeMap;
use std::future::Future;

use crate::StoreError;

/// One event waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxMessage {
    /// The event id (a UUID v7, so ids sort by creation); consumers dedupe by it.
    pub id: String,
    /// Where it goes, e.g. "holdfast.orders.v1".
    pub topic: String,
    /// The partition key (an order id or a SKU); events of one key keep their order.
    pub key: String,
    /// The event type, e.g. "order.confirmed".
    pub event_type: String,
    /// The encoded event (protobuf), opaque to the store.
    pub payload: Vec<u8>,
    /// Extra headers to publish with it (e.g. "traceparent").
    pub headers: BTreeMap<String, String>,
    /// When it was written (Unix ms).
    pub created_at_ms: i64,
}

/// Durable storage of unsent events.
pub trait OutboxStore: Send + Sync {
    /// Appends events that announce no stored change of their own (state changes append
    /// theirs through `transition_saga` or `update_order`). Appending an id twice keeps one.
    fn append_outbox(&self, messages: Vec<OutboxMessage>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Unsent events, oldest first (by id), at most `limit`.
    fn pending_outbox(&self, limit: u32) -> impl Future<Output = Result<Vec<OutboxMessage>, StoreError>> + Send;

    /// Marks events sent so `pending_outbox` no longer returns them. Unknown or already
    /// sent ids are ignored.
    fn mark_outbox_sent(&self, ids: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;
}
