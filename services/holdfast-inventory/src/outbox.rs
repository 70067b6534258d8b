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

/// Appends the bus events of one outbox entry to `out` and answers how many: one, or for a
/// `reserved_n` entry (the holds of one `reserve_batch` call, `lua/lib/bucket.lua`) one
/// `reserved` event per hold, with the ids and fields one entry per hold would have given. An
/// unknown or malformed entry adds none (logged).
pub fn push_events(
    bucket: &BucketKeys,
    entry: &OutboxEntry<'_>,
    region: &str,
    out: &mut Vec<Event>,
) -> usize {
    if entry.get("type") == Some("reserved_n") {
        return push_reserved_n(bucket, entry, region, out);
    }
    match to_event(bucket, entry, region) {
        Some(event) => {
            out.push(event);
            1
        }
        None => 0,
    }
}

/// An entry field as an integer (0 when absent or not one, as the scripts never write).
fn int(entry: &OutboxEntry<'_>, name: &str) -> i64 {
    entry.get(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0)
}

/// Turns one outbox entry of a single change into a bus event. The id is `<tag>/<seq>`, the
/// bucket's sequence number the script stored in the entry: the same entry published twice (a
/// crash between publish and ack) carries the same id, so consumers dedupe, and no two entries
/// ever share one.
fn to_event(bucket: &BucketKeys, entry: &OutboxEntry<'_>, region: &str) -> Option<Event> {
    let int = |k: &str| int(entry, k);
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
    Some(bus_event(kind, sku, event_id, event, region))
}

/// The `reserved` events of a `reserved_n` entry, in the order the holds were made: hold `i`
/// has sequence number `seq + i` and the bucket's `reserved` count after it.
fn push_reserved_n(
    bucket: &BucketKeys,
    entry: &OutboxEntry<'_>,
    region: &str,
    out: &mut Vec<Event>,
) -> usize {
    let holds = entry.get("holds").unwrap_or_default();
    let parsed: Option<Vec<(&str, i64, i64)>> = holds
        .split('\n')
        .map(|hold| {
            let mut parts = hold.split('\t');
            let rid = parts.next().filter(|rid| !rid.is_empty())?;
            let qty = parts.next()?.parse().ok()?;
            let expires_at = parts.next()?.parse().ok()?;
            parts.next().is_none().then_some((rid, qty, expires_at))
        })
        .collect();
    let first = entry.get("seq").and_then(|seq| seq.parse::<u64>().ok());
    let (Some(parsed), Some(first)) = (parsed, first) else {
        tracing::error!(id = %entry.id, bucket = %bucket.tag, "malformed reserved_n outbox entry; skipped");
        return 0;
    };
    let sku = entry.get("sku").unwrap_or_default();
    let (on_hand, sold, at) = (int(entry, "on_hand"), int(entry, "sold"), int(entry, "at"));
    let mut reserved = int(entry, "reserved_before");
    for (seq, (rid, quantity, expires_at)) in (first..).zip(&parsed) {
        reserved += quantity;
        let event = inventory_event::Event::Reserved(InventoryReserved {
            sku: sku.to_string(),
            reservation_id: (*rid).to_string(),
            quantity: *quantity,
            on_hand,
            reserved,
            sold,
            expires_at_unix_ms: *expires_at,
            occurred_at_unix_ms: at,
            bucket_index: bucket.index,
        });
        let event_id = format!("{}/{seq}", bucket.tag);
        out.push(bus_event("reserved", sku.to_string(), event_id, event, region));
    }
    parsed.len()
}

/// The bus event of one inventory event, keyed by its SKU.
fn bus_event(
    kind: &str,
    sku: String,
    event_id: String,
    event: inventory_event::Event,
    region: &str,
) -> Event {
    let payload = InventoryEvent {
        event_id: event_id.clone(),
        event: Some(event),
    }
    .encode_to_vec();
    Event {
        id: event_id,
        topic: TOPIC.into(),
        key: sku,
        event_type: format!("inventory.{kind}"),
        region: region.to_string(),
        payload,
        traceparent: None,
    }
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

    fn packed(holds: &str) -> OutboxEntry<'static> {
        let fields = [
            ("type", "reserved_n"),
            ("sku", "HOT"),
            ("bucket", "0"),
            ("on_hand", "10"),
            ("reserved_before", "4"),
            ("sold", "1"),
            ("at", "42"),
            ("seq", "17"),
            ("holds", holds),
        ]
        .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v.to_string())))
        .to_vec();
        OutboxEntry {
            id: "5-0".into(),
            fields,
        }
    }

    #[test]
    fn a_batch_entry_becomes_one_reserved_event_per_hold_in_order() {
        let bucket = BucketKeys::new("HOT", 0);
        let mut out = Vec::new();
        let entry = packed("r-a\t2\t1000\nr-b\t1\t1500\nr-c\t3\t900");
        assert_eq!(push_events(&bucket, &entry, "eu", &mut out), 3);
        let ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["HOT/17", "HOT/18", "HOT/19"],
            "consecutive sequence numbers"
        );
        let holds: Vec<(String, i64, i64, i64)> = out
            .iter()
            .map(|event| {
                assert_eq!(
                    (event.key.as_str(), event.event_type.as_str()),
                    ("HOT", "inventory.reserved")
                );
                let decoded = InventoryEvent::decode(event.payload.as_slice()).expect("decodes");
                assert_eq!(decoded.event_id, event.id);
                let Some(inventory_event::Event::Reserved(r)) = decoded.event else {
                    panic!("{decoded:?}")
                };
                assert_eq!((r.on_hand, r.sold, r.occurred_at_unix_ms), (10, 1, 42));
                (r.reservation_id, r.quantity, r.reserved, r.expires_at_unix_ms)
            })
            .collect();
        assert_eq!(
            holds,
            [
                ("r-a".to_string(), 2, 6, 1000),
                ("r-b".to_string(), 1, 7, 1500),
                ("r-c".to_string(), 3, 10, 900)
            ],
            "each hold's count is the bucket's after it"
        );
    }

    #[test]
    fn a_malformed_batch_entry_publishes_none_of_its_holds() {
        let bucket = BucketKeys::new("HOT", 0);
        for holds in [
            "r-a\t2\t1000\nr-b\t1",
            "r-a\t2\t1000\t9",
            "\t2\t1000",
            "r-a\tx\t1000",
            "",
        ] {
            let mut out = Vec::new();
            assert_eq!(
                push_events(&bucket, &packed(holds), "eu", &mut out),
                0,
                "{holds:?}"
            );
            assert!(out.is_empty(), "{holds:?}");
        }
        let mut no_seq = packed("r-a\t2\t1000");
        no_seq.fields.retain(|(k, _)| k != "seq");
        assert_eq!(push_events(&bucket, &no_seq, "eu", &mut Vec::new()), 0);
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
