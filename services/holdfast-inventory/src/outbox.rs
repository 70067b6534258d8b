//! A bucket's outbox as the relay reads it: the entries of one `XRANGE` reply, borrowed from
//! the reply (no string per field), and the bus event each becomes.

use std::borrow::Cow;

use fred::prelude::Value;
use holdfast_platform::events::Event;
use holdfast_proto::events::v1::{
    InventoryAdjusted, InventoryCommitted, InventoryEvent, InventoryExpired, InventoryRebalanced,
    InventoryReleased, InventoryReserved, InventoryStockSet, inventory_event,
};
use prost::Message;

use crate::keys::BucketKeys;

/// Topic of inventory events.
pub const TOPIC: &str = "holdfast.inventory.v1";

/// One outbox entry: its stream id and its fields in the order the script wrote them.
#[derive(Debug)]
pub struct OutboxEntry<'a> {
    /// The stream id (`<ms>-<n>`).
    pub id: Cow<'a, str>,
    fields: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl OutboxEntry<'_> {
    /// The value of field `name` (entries hold a dozen fields: a scan beats a map).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_ref())
    }
}

/// The entries of an `XRANGE` reply, in id order; a malformed entry is skipped.
pub fn entries(reply: &Value) -> Vec<OutboxEntry<'_>> {
    let Value::Array(entries) = reply else {
        return vec![];
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let [id, Value::Array(flat)] = parts.as_slice() else {
                return None;
            };
            let fields = flat
                .chunks_exact(2)
                .filter_map(|kv| Some((kv[0].as_str()?, kv[1].as_str()?)))
                .collect();
            Some(OutboxEntry {
                id: id.as_str()?,
                fields,
            })
        })
        .collect()
}

/// Turns one outbox entry into a bus event. The id is `<tag>/<seq>`, the bucket's sequence
/// number the script stored in the entry: the same entry published twice (a crash between
/// publish and ack) carries the same id, so consumers dedupe, and no two entries ever share one.
pub fn to_event(bucket: &BucketKeys, entry: &OutboxEntry<'_>, region: &str) -> Option<Event> {
    let int = |k: &str| entry.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let text = |k: &str| entry.get(k).unwrap_or_default().to_string();
    let (sku, ref_id, qty) = (text("sku"), text("ref"), int("qty"));
    let (on_hand, reserved, sold, at) = (int("on_hand"), int("reserved"), int("sold"), int("at"));
    let bucket_index = bucket.index;
    let kind = entry.get("type").unwrap_or_default();
    let event = match kind {
        "reserved" => inventory_event::Event::Reserved(InventoryReserved {
            sku: sku.clone(),
            reservation_id: ref_id,
            quantity: qty,
            on_hand,
            reserved,
            sold,
            expires_at_unix_ms: int("expires_at"),
            occurred_at_unix_ms: at,
            bucket_index,
        }),
        "committed" => inventory_event::Event::Committed(InventoryCommitted {
            sku: sku.clone(),
            reservation_id: ref_id,
            quantity: qty,
            on_hand,
            reserved,
            sold,
            occurred_at_unix_ms: at,
            bucket_index,
        }),
        "released" => inventory_event::Event::Released(InventoryReleased {
            sku: sku.clone(),
            reservation_id: ref_id,
            quantity: qty,
            on_hand,
            reserved,
            sold,
            occurred_at_unix_ms: at,
            bucket_index,
        }),
        "expired" => inventory_event::Event::Expired(InventoryExpired {
            sku: sku.clone(),
            reservation_id: ref_id,
            quantity: qty,
            on_hand,
            reserved,
            sold,
            occurred_at_unix_ms: at,
            bucket_index,
        }),
        "adjusted" => inventory_event::Event::Adjusted(InventoryAdjusted {
            sku: sku.clone(),
            adjustment_id: ref_id,
            quantity: qty,
            on_hand,
            reserved,
            sold,
            occurred_at_unix_ms: at,
            bucket_index,
        }),
        "stock_set" => inventory_event::Event::StockSet(InventoryStockSet {
            sku: sku.clone(),
            quantity: qty,
            on_hand,
            reserved,
            sold,
            occurred_at_unix_ms: at,
            buckets: 0,
            bucket_index,
        }),
        "transfer_out" | "transfer_in" => inventory_event::Event::Rebalanced(InventoryRebalanced {
            sku: sku.clone(),
            transfer_id: ref_id,
            quantity: qty,
            on_hand,
            reserved,
            sold,
            occurred_at_unix_ms: at,
            bucket_index,
        }),
        other => {
            tracing::warn!(kind = other, id = %entry.id, "unknown outbox entry type; skipped");
            return None;
        }
    };
    // The bucket's sequence number outlives its stream (deleted once empty), so ids never
    // repeat; entries written before `seq` existed keep their stream id.
    let event_id = match entry.get("seq") {
        Some(seq) => format!("{}/{seq}", bucket.tag),
        None => format!("{}/{}", bucket.tag, entry.id),
    };
    let payload = InventoryEvent {
        event_id: event_id.clone(),
        event: Some(event),
    }
    .encode_to_vec();
    Some(Event {
        id: event_id,
        topic: TOPIC.into(),
        key: sku,
        event_type: format!("inventory.{kind}"),
        region: region.to_string(),
        payload,
        traceparent: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_entries_become_typed_events_with_stable_ids() {
        let bucket = BucketKeys::new("SKU-1", 2);
        let fields = [
            ("type", "reserved"),
            ("sku", "SKU-1"),
            ("ref", "r1"),
            ("qty", "3"),
            ("on_hand", "10"),
            ("reserved", "3"),
            ("sold", "0"),
            ("expires_at", "99"),
            ("at", "42"),
            ("seq", "7"),
        ]
        .map(|(k, v)| (k.into(), v.into()))
        .to_vec();
        let entry = OutboxEntry {
            id: "1-0".into(),
            fields,
        };
        let event = to_event(&bucket, &entry, "eu").expect("known type");
        assert_eq!(event.id, "SKU-1~2/7", "the bucket's sequence, not the stream id");
        assert_eq!(event.key, "SKU-1");
        assert_eq!(event.event_type, "inventory.reserved");
        let decoded = InventoryEvent::decode(event.payload.as_slice()).expect("decodes");
        let Some(inventory_event::Event::Reserved(r)) = decoded.event else {
            panic!("{decoded:?}")
        };
        assert_eq!(
            (r.quantity, r.reserved, r.expires_at_unix_ms, r.bucket_index),
            (3, 3, 99, 2)
        );
        let mut unknown = entry;
        unknown.fields[0].1 = "mystery".into();
        assert!(to_event(&bucket, &unknown, "eu").is_none());
    }

    #[test]
    fn an_xrange_reply_is_read_in_order_and_malformed_entries_are_skipped() {
        let text = |s: &str| Value::from(s);
        let entry = |id: &str, fields: &[&str]| {
            Value::Array(vec![
                text(id),
                Value::Array(fields.iter().map(|f| text(f)).collect()),
            ])
        };
        let reply = Value::Array(vec![
            entry("1-0", &["type", "reserved", "qty", "2"]),
            Value::Array(vec![text("1-1")]),
            entry("1-2", &["type", "released", "dangling"]),
        ]);
        let read = entries(&reply);
        let ids: Vec<&str> = read.iter().map(|e| e.id.as_ref()).collect();
        assert_eq!(ids, ["1-0", "1-2"], "the entry without fields is skipped");
        assert_eq!(read[0].get("qty"), Some("2"));
        assert_eq!(read[1].get("type"), Some("released"));
        assert_eq!(
            read[1].get("dangling"),
            None,
            "an odd field without a value is not read"
        );
        assert!(entries(&Value::Null).is_empty());
    }
}
