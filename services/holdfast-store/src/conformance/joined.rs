//! Joined saga transitions: the order and key writes of a step with its transition.

use crate::{JoinedWrite, JoinedWriteStore, StoreError, StoredOrder, now_ms};

use super::{
    T0,
    idempotency::key_record,
    namespace,
    orders::order,
    sagas::{saga, step},
};

/// A joined transition writes its order create, order update and key answer with the
/// saga's move; a joined order update at a stale version fails the whole call with
/// `VersionConflict`, and the saga does not move.
pub async fn joined_transition_writes_order_key_and_saga_together<S: JoinedWriteStore>(store: &S) {
    let ns = namespace("joined");
    let (saga_id, order_id, key) = (format!("{ns}-saga"), format!("{ns}-order"), format!("{ns}-key"));
    let created = store
        .create_saga(saga(&saga_id, now_ms() + 60_000, T0))
        .await
        .expect("create saga");
    store
        .claim_key(key_record("checkout", &key, "fp", now_ms() + 60_000))
        .await
        .expect("claim");

    let placed = order(&order_id, &format!("{ns}-customer"), T0, 1);
    let moved = store
        .transition_saga_joined(
            &saga_id,
            created.version,
            step("commit", now_ms() + 60_000, false),
            Vec::new(),
            vec![JoinedWrite::CreateOrder(placed.clone())],
        )
        .await
        .expect("joined create");
    assert_eq!((moved.version, moved.step.as_str()), (2, "commit"));
    let stored = store
        .get_order(&order_id)
        .await
        .expect("get")
        .expect("order created");
    assert_eq!((stored.version, stored.status), (1, 1));

    let paid = StoredOrder {
        status: 2,
        payload: b"paid".to_vec(),
        ..placed.clone()
    };
    // Stale: the order is at version 1, not 7. Nothing moves.
    let refused = store
        .transition_saga_joined(
            &saga_id,
            moved.version,
            step("capture", now_ms() + 60_000, false),
            Vec::new(),
            vec![JoinedWrite::UpdateOrder {
                order: paid.clone(),
                expected_version: 7,
                outbox: Vec::new(),
            }],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::VersionConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store
            .get_saga(&saga_id)
            .await
            .expect("get")
            .expect("saga")
            .version,
        2
    );

    let done = store
        .transition_saga_joined(
            &saga_id,
            moved.version,
            step("done", 0, true),
            Vec::new(),
            vec![
                JoinedWrite::UpdateOrder {
                    order: paid,
                    expected_version: 1,
                    outbox: Vec::new(),
                },
                JoinedWrite::CompleteKey {
                    scope: "checkout".into(),
                    key: key.clone(),
                    response: b"answer".to_vec(),
                },
                // A key that is not live is skipped, not an error.
                JoinedWrite::CompleteKey {
                    scope: "checkout".into(),
                    key: format!("{ns}-never-claimed"),
                    response: b"nobody".to_vec(),
                },
            ],
        )
        .await
        .expect("joined update and answer");
    assert!(done.finished);
    let stored = store.get_order(&order_id).await.expect("get").expect("order");
    assert_eq!(
        (stored.version, stored.status, stored.payload.as_slice()),
        (2, 2, &b"paid"[..])
    );
    let answered = store
        .get_key("checkout", &key)
        .await
        .expect("get key")
        .expect("key");
    assert_eq!(answered.response.as_deref(), Some(&b"answer"[..]));
}
