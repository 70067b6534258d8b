//! The waiting room: arrival order, one entry per key, the bound, and dequeue.

use std::collections::BTreeSet;

use tokio::task::JoinSet;

use crate::StoreError;
use crate::waiting_room::{Enqueued, WaitingRoomStore};

use super::namespace;

fn placed_at(outcome: &Enqueued) -> Option<u64> {
    match outcome {
        Enqueued::Added { position, .. } | Enqueued::Existing { position, .. } => Some(*position),
        Enqueued::Full { .. } => None,
    }
}

/// Entries come out in arrival order with their positions; a repeat enqueue answers the
/// first entry; a full queue writes nothing; dequeue moves everyone up.
pub async fn waiting_room_is_fifo_bounded_and_one_entry_per_key<S: WaitingRoomStore>(store: &S) {
    let queue = namespace("queue");
    assert_eq!(store.queue_depth(&queue).await.expect("depth"), 0);
    assert_eq!(store.queue_head(&queue, 10).await.expect("head"), vec![]);
    assert_eq!(store.queue_position(&queue, "k1").await.expect("position"), None);

    for (i, key) in ["k1", "k2", "k3"].iter().enumerate() {
        let outcome = store
            .enqueue(&queue, key, format!("payload {key}").into_bytes(), 3)
            .await
            .expect("enqueue");
        let Enqueued::Added { position, entry } = outcome else {
            panic!("{key}: {outcome:?}");
        };
        assert_eq!(position, i as u64 + 1, "{key}");
        assert_eq!(entry.key, *key);
        assert_eq!(entry.payload, format!("payload {key}").into_bytes());
    }
    // A repeat of a waiting key: its first entry, payload unchanged, nothing added.
    let again = store
        .enqueue(&queue, "k2", b"other".to_vec(), 3)
        .await
        .expect("enqueue again");
    let Enqueued::Existing { position: 2, entry } = again else {
        panic!("repeat: {again:?}");
    };
    assert_eq!(entry.payload, b"payload k2".to_vec());
    // Full: nothing written.
    assert_eq!(
        store.enqueue(&queue, "k4", vec![], 3).await.expect("enqueue"),
        Enqueued::Full { depth: 3 }
    );
    assert_eq!(store.queue_position(&queue, "k4").await.expect("position"), None);
    assert_eq!(store.queue_depth(&queue).await.expect("depth"), 3);

    let head = store.queue_head(&queue, 2).await.expect("head");
    assert_eq!(
        head.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["k1", "k2"]
    );
    assert!(head[0].seq < head[1].seq);

    assert!(store.dequeue(&queue, "k1").await.expect("dequeue"));
    assert!(
        !store.dequeue(&queue, "k1").await.expect("dequeue twice"),
        "harmless repeat"
    );
    let (entry, position) = store
        .queue_position(&queue, "k3")
        .await
        .expect("position")
        .expect("k3 waits");
    assert_eq!((entry.key.as_str(), position), ("k3", 2));
    assert_eq!(position_of(store, &queue, "k2").await, Some(1));
    // Room again: the next arrival goes to the back.
    let back = store.enqueue(&queue, "k5", vec![5], 3).await.expect("enqueue");
    assert_eq!(placed_at(&back), Some(3));
    let head = store.queue_head(&queue, 10).await.expect("head");
    assert_eq!(
        head.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["k2", "k3", "k5"]
    );

    // Another queue is separate.
    let other = format!("{queue}-other");
    assert_eq!(
        placed_at(&store.enqueue(&other, "k2", vec![], 1).await.expect("enqueue")),
        Some(1)
    );
}

async fn position_of<S: WaitingRoomStore>(store: &S, queue: &str, key: &str) -> Option<u64> {
    store
        .queue_position(queue, key)
        .await
        .expect("position")
        .map(|(_, position)| position)
}

/// 16 tasks enqueue 4 keys each at once (every key twice): each key waits exactly once
/// and the positions are 1..=n.
pub async fn waiting_room_concurrent_enqueues_from_16_tasks_keep_one_entry_per_key<S>(store: &S)
where
    S: WaitingRoomStore + Clone + 'static,
{
    let queue = namespace("queue-race");
    let mut tasks = JoinSet::new();
    for task in 0..16 {
        let store = store.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            for i in 0..4 {
                // Tasks 2n and 2n+1 race for the same keys.
                let key = format!("k{}-{i}", task / 2);
                store
                    .enqueue(&queue, &key, key.clone().into_bytes(), 10_000)
                    .await
                    .expect("enqueue");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let head = store.queue_head(&queue, 1000).await.expect("head");
    let keys: BTreeSet<&str> = head.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(head.len(), 32, "{head:?}");
    assert_eq!(keys.len(), 32);
    assert_eq!(store.queue_depth(&queue).await.expect("depth"), 32);
    let mut positions = Vec::new();
    for entry in &head {
        positions.push(position_of(store, &queue, &entry.key).await.expect("waits"));
    }
    assert_eq!(
        positions,
        (1..=32).collect::<Vec<_>>(),
        "positions follow the head order"
    );
}

/// Empty names and out-of-range listings are refused.
pub async fn waiting_room_bad_requests_are_refused<S: WaitingRoomStore>(store: &S) {
    let invalid = |r: Result<_, StoreError>| matches!(r, Err(StoreError::InvalidArgument(_)));
    assert!(invalid(store.enqueue("", "k", vec![], 1).await.map(|_| ())));
    assert!(invalid(store.enqueue("q", "", vec![], 1).await.map(|_| ())));
    assert!(invalid(store.queue_head("q", 0).await.map(|_| ())));
    assert!(invalid(store.queue_head("q", 1001).await.map(|_| ())));
    assert!(invalid(store.dequeue("q", "").await.map(|_| ())));
    assert!(invalid(store.queue_position("", "k").await.map(|_| ())));
}
