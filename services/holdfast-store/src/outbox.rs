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
    fn append_outbox(
        &self,
        messages: Vec<OutboxMessage>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Unsent events, oldest first (by id), at most `limit`: [`pending_outbox_except`]
    /// leaving nothing out.
    ///
    /// [`pending_outbox_except`]: Self::pending_outbox_except
    fn pending_outbox(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, StoreError>> + Send {
        self.pending_outbox_except(limit, &[])
    }

    /// As [`pending_outbox`](Self::pending_outbox), leaving out the events in `skip` (a
    /// relay's batches on their way to the bus): they are neither returned nor counted
    /// against `limit`; at most `limit` others, oldest first.
    fn pending_outbox_except(
        &self,
        limit: u32,
        skip: &[&str],
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, StoreError>> + Send;

    /// Marks events sent so `pending_outbox` no longer returns them. Unknown or already
    /// sent ids are ignored.
    fn mark_outbox_sent(&self, ids: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Most events one `pending_outbox` call returns, whatever `limit` asks.
pub(crate) const MAX_OUTBOX_BATCH: u32 = 1000;

/// Checks events about to be written and drops repeated ids (the first one stays), so
/// one write never carries two versions of an event.
pub(crate) fn distinct_messages(messages: Vec<OutboxMessage>) -> Result<Vec<OutboxMessage>, StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(messages.len());
    let mut distinct = Vec::with_capacity(messages.len());
    for message in messages {
        if message.id.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "outbox event of type {:?} has an empty id",
                message.event_type
            )));
        }
        if seen.insert(message.id.clone()) {
            distinct.push(message);
        }
    }
    Ok(distinct)
}

/// Refuses an empty event id among ids to mark sent.
pub(crate) fn validate_ids(ids: &[String]) -> Result<(), StoreError> {
    if ids.iter().any(String::is_empty) {
        return Err(StoreError::InvalidArgument("outbox event id is empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, event_type: &str) -> OutboxMessage {
        OutboxMessage {
            id: id.into(),
            event_type: event_type.into(),
            ..OutboxMessage::default()
        }
    }

    #[test]
    fn distinct_messages_keeps_first_of_each_id_and_refuses_empty_ids() {
        let kept = distinct_messages(vec![
            message("b", "first"),
            message("a", "x"),
            message("b", "second"),
        ])
        .unwrap();
        assert_eq!(kept, vec![message("b", "first"), message("a", "x")]);
        assert!(distinct_messages(vec![message("a", "x"), message("", "y")]).is_err());
        assert_eq!(validate_ids(&["a".into()]), Ok(()));
        assert!(validate_ids(&["a".into(), String::new()]).is_err());
    }
}
