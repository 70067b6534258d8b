//! The outbox: appends, the pending listing, marking sent; helpers the other checks use to read their own events.

use std::collections::BTreeMap;

use crate::{OutboxMessage, OutboxStore};

use super::{T0, namespace};

pub(super) fn event(id: &str) -> OutboxMessage {
    OutboxMessage {
        id: id.to_string(),
        topic: "holdfast.orders.v1".into(),
        key: format!("key of {id}"),
        event_type: "order.confirmed".into(),
        payload: format!("payload of {id}").into_bytes(),
        headers: BTreeMap::from([
            (
                "traceparent".into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ),
            ("région".into(), "eu-west-🇪🇺".into()),
        ]),
        created_at_ms: T0 + 1,
    }
}

/// The pending events whose ids start with `prefix`, after checking what holds for the
/// whole listing: ids strictly ascending, and a smaller limit is a prefix of it.
pub(super) async fn pending_under<S: OutboxStore>(store: &S, prefix: &str) -> Vec<OutboxMessage> {
    let all = store.pending_outbox(1000).await.expect("pending outbox");
    assert!(
        all.windows(2).all(|pair| pair[0].id < pair[1].id),
        "pending events oldest (smallest id) first, each once"
    );
    let first = store.pending_outbox(1).await.expect("pending outbox");
    assert!(first.len() <= 1, "at most `limit` events");
    assert_eq!(first.first().map(|m| &m.id), all.first().map(|m| &m.id));
    all.into_iter().filter(|m| m.id.starts_with(prefix)).collect()
}

/// Marks the check's own events sent, so they do not pile up in a shared keyspace.
pub(super) async fn send_all_under<S: OutboxStore>(store: &S, prefix: &str) {
    let ids: Vec<String> = pending_under(store, prefix)
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    store.mark_outbox_sent(&ids).await.expect("mark sent");
    assert_eq!(pending_under(store, prefix).await, vec![]);
}

pub(super) fn ids_of(messages: &[OutboxMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.id.as_str()).collect()
}

/// Appended events are pending once each, oldest (smallest id) first, until marked sent;
/// marking is idempotent and ignores unknown ids.
pub async fn outbox_append_pending_mark_sent<S: OutboxStore>(store: &S) {
    let ns = namespace("outbox");
    let id = |n: u32| format!("{ns}-{n:02}");
    store
        .append_outbox(vec![event(&id(3)), event(&id(1)), event(&id(2)), event(&id(1))])
        .await
        .expect("append");
    store
        .append_outbox(vec![event(&id(2))])
        .await
        .expect("append an id again");
    store.append_outbox(vec![]).await.expect("append nothing");
    let bare = OutboxMessage {
        id: id(4),
        ..OutboxMessage::default()
    };
    store.append_outbox(vec![bare.clone()]).await.expect("append");
    assert_eq!(
        pending_under(store, &ns).await,
        vec![event(&id(1)), event(&id(2)), event(&id(3)), bare],
        "each id once, in id order, as written"
    );

    store
        .mark_outbox_sent(&[id(1), format!("{ns}-unknown"), id(3)])
        .await
        .expect("mark sent");
    assert_eq!(ids_of(&pending_under(store, &ns).await), [id(2), id(4)]);
    store
        .mark_outbox_sent(&[id(1)])
        .await
        .expect("marking again is fine");
    store.mark_outbox_sent(&[]).await.expect("mark nothing");
    assert_eq!(ids_of(&pending_under(store, &ns).await), [id(2), id(4)]);
    assert_eq!(store.pending_outbox(0).await.expect("pending"), vec![]);
    send_all_under(store, &ns).await;
}

/// Events left out of a read (a relay's batches on their way) are neither returned nor
/// counted against the limit; the rest come oldest first as without them.
pub async fn outbox_pending_except_leaves_out_the_skipped<S: OutboxStore>(store: &S) {
    let ns = namespace("outbox-except");
    let id = |n: u32| format!("{ns}-{n:02}");
    store
        .append_outbox((1..=5).map(|n| event(&id(n))).collect())
        .await
        .expect("append");
    let (two, four) = (id(2), id(4));
    let read = store
        .pending_outbox_except(1000, &[two.as_str(), four.as_str(), "not-pending"])
        .await
        .expect("pending except");
    assert!(
        read.windows(2).all(|pair| pair[0].id < pair[1].id),
        "oldest first, each once"
    );
    let mine: Vec<OutboxMessage> = read.into_iter().filter(|m| m.id.starts_with(&ns)).collect();
    assert_eq!(
        mine,
        vec![event(&id(1)), event(&id(3)), event(&id(5))],
        "as written, without 2 and 4"
    );

    let all = store.pending_outbox(1000).await.expect("pending outbox");
    let skipped: Vec<&str> = all.iter().take(2).map(|m| m.id.as_str()).collect();
    let third = store
        .pending_outbox_except(1, &skipped)
        .await
        .expect("pending except");
    assert_eq!(
        ids_of(&third),
        ids_of(&all[2..3]),
        "the limit counts only what is returned"
    );
    assert_eq!(
        store.pending_outbox_except(0, &skipped).await.expect("pending"),
        vec![]
    );
    assert_eq!(
        store.pending_outbox_except(1000, &[]).await.expect("pending"),
        all,
        "nothing skipped: the plain listing"
    );
    send_all_under(store, &ns).await;
}
