//! A key's standing: its place in a waiting room, its claim and the queue's depth, read
//! together.

use crate::standing::{Standing, StandingStore};
use crate::{Enqueued, IDEMPOTENCY_TTL_MS, KeyClaim, StoreError, now_ms};

use super::idempotency::key_record;
use super::namespace;

/// Standing reads what the three separate reads say: nothing for an unknown key, a waiting
/// key's entry and position with the depth, a claimed key's claim (an expired claim counts
/// as absent); a bad queue or key is refused.
pub async fn standing_is_a_keys_place_claim_and_queue_depth<S: StandingStore>(store: &S) {
    let ns = namespace("standing");
    let (queue, scope) = (format!("{ns}-queue"), format!("{ns}-scope"));
    assert_eq!(
        store.standing(&queue, &scope, "k1").await.expect("standing"),
        Standing::default()
    );

    for key in ["k1", "k2"] {
        let outcome = store.enqueue(&queue, key, key.as_bytes().to_vec(), 10).await;
        assert!(
            matches!(outcome, Ok(Enqueued::Added { .. })),
            "{key}: {outcome:?}"
        );
    }
    let waiting = store.standing(&queue, &scope, "k2").await.expect("standing");
    let (entry, position) = waiting.waiting.expect("k2 waits");
    assert_eq!(
        (entry.key.as_str(), entry.payload.as_slice(), position),
        ("k2", &b"k2"[..], 2)
    );
    assert_eq!((waiting.claim, waiting.depth), (None, 2));

    // Claimed and no longer waiting: what a checkout the waiting room started looks like.
    let now = now_ms();
    let claim = key_record(&scope, "k1", "fp-1", now + IDEMPOTENCY_TTL_MS);
    assert_eq!(
        store.claim_key(claim.clone()).await.expect("claim"),
        KeyClaim::Claimed(claim.clone())
    );
    assert!(store.dequeue(&queue, "k1").await.expect("dequeue"));
    assert_eq!(
        store.standing(&queue, &scope, "k1").await.expect("standing"),
        Standing {
            waiting: None,
            claim: Some(claim),
            depth: 1,
        }
    );

    let expired = key_record(&scope, "k3", "fp-3", now - 1);
    store.claim_key(expired).await.expect("claim an expired key");
    assert_eq!(
        store
            .standing(&queue, &scope, "k3")
            .await
            .expect("standing")
            .claim,
        None,
        "an expired claim counts as absent"
    );

    for (queue, scope, key) in [
        ("", scope.as_str(), "k1"),
        (queue.as_str(), "", "k1"),
        (queue.as_str(), scope.as_str(), ""),
    ] {
        let refused = store.standing(queue, scope, key).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidArgument(_))),
            "queue {queue:?}, scope {scope:?}, key {key:?}: {refused:?}"
        );
    }
}
