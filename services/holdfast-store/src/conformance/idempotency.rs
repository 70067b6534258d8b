//! Idempotency keys: claims, completion, expiry.

use tokio::task::JoinSet;

use crate::{
    IDEMPOTENCY_TTL_MS, IdempotencyRecord, IdempotencyStore, KeyClaim, OutboxStore, StoreError, now_ms,
};

use super::{
    namespace,
    outbox::{event, pending_under},
};

pub(super) fn key_record(scope: &str, key: &str, fingerprint: &str, expires_at_ms: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        scope: scope.to_string(),
        key: key.to_string(),
        fingerprint: fingerprint.to_string(),
        resource_id: format!("saga for {fingerprint}"),
        response: None,
        created_at_ms: expires_at_ms - IDEMPOTENCY_TTL_MS,
        expires_at_ms,
    }
}

/// The first claim of a key wins and later ones see its record; a completed key carries
/// its answer; keys are scoped.
pub async fn key_claim_get_complete<S: IdempotencyStore>(store: &S) {
    let ns = namespace("key");
    let scope = format!("{ns}-checkout");
    let key = "clé-🔑-1";
    let expires = now_ms() + IDEMPOTENCY_TTL_MS;
    assert_eq!(store.get_key(&scope, key).await.expect("get"), None);

    let first = key_record(&scope, key, "fp-1", expires);
    let claim = IdempotencyRecord {
        // Ignored: a claim is always unanswered.
        response: Some(b"premature".to_vec()),
        ..first.clone()
    };
    assert_eq!(
        store.claim_key(claim).await.expect("claim"),
        KeyClaim::Claimed(first.clone())
    );
    assert_eq!(
        store.get_key(&scope, key).await.expect("get"),
        Some(first.clone())
    );
    assert_eq!(
        store
            .claim_key(key_record(&scope, key, "fp-2", expires + 5))
            .await
            .expect("claim"),
        KeyClaim::Existing(first.clone()),
        "a repeat sees the first record, unchanged"
    );
    let other_scope = key_record(&format!("{ns}-refund"), key, "fp-3", expires);
    assert_eq!(
        store.claim_key(other_scope.clone()).await.expect("claim"),
        KeyClaim::Claimed(other_scope)
    );

    store
        .complete_key(&scope, key, b"the answer".to_vec())
        .await
        .expect("complete");
    let answered = IdempotencyRecord {
        response: Some(b"the answer".to_vec()),
        ..first
    };
    assert_eq!(
        store.get_key(&scope, key).await.expect("get"),
        Some(answered.clone())
    );
    store
        .complete_key(&scope, key, b"the answer".to_vec())
        .await
        .expect("the same answer again");
    assert_eq!(
        store
            .claim_key(key_record(&scope, key, "fp-4", expires))
            .await
            .expect("claim"),
        KeyClaim::Existing(answered.clone()),
        "a repeat after completion gets the answer"
    );
    assert!(matches!(
        store.complete_key(&scope, "never-claimed", b"x".to_vec()).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_key(&scope, "never-claimed").await.expect("get"), None);
    assert_eq!(store.get_key(&scope, key).await.expect("get"), Some(answered));
}

/// Sixteen concurrent claims of one key: exactly one wins, all others see its record.
pub async fn key_concurrent_claims_from_16_tasks_one_wins<S: IdempotencyStore + Clone + 'static>(store: &S) {
    let ns = namespace("key-race");
    let scope = format!("{ns}-checkout");
    let expires = now_ms() + IDEMPOTENCY_TTL_MS;
    let mut tasks = JoinSet::new();
    for task in 0..16 {
        let (store, scope) = (store.clone(), scope.clone());
        tasks.spawn(async move {
            store
                .claim_key(key_record(&scope, "k", &format!("fp-{task}"), expires))
                .await
                .expect("claim")
        });
    }
    let (mut claimed, mut existing) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        match done.expect("claim task") {
            KeyClaim::Claimed(record) => claimed.push(record),
            KeyClaim::Existing(record) => existing.push(record),
        }
    }
    assert_eq!(claimed.len(), 1, "exactly one claim wins");
    let winner = claimed.pop().expect("one winner");
    assert_eq!(existing.len(), 15);
    assert!(
        existing.iter().all(|record| *record == winner),
        "every loser sees the winner's record"
    );
    assert_eq!(store.get_key(&scope, "k").await.expect("get"), Some(winner));
}

/// An expired record counts as absent: reads miss it, completing it is refused, a new
/// claim replaces it, and a purge removes it (SQLite counts them; ScyllaDB, whose TTL
/// drops them, may answer 0).
pub async fn key_expired_is_absent_reclaimable_and_purged<S: IdempotencyStore>(store: &S) {
    let ns = namespace("key-expiry");
    let scope = format!("{ns}-checkout");
    let now = now_ms();

    let expired = key_record(&scope, "old", "fp-old", now - 1_000);
    assert!(matches!(
        store.claim_key(expired).await.expect("claim"),
        KeyClaim::Claimed(_)
    ));
    assert_eq!(store.get_key(&scope, "old").await.expect("get"), None);
    assert!(matches!(
        store.complete_key(&scope, "old", b"late".to_vec()).await,
        Err(StoreError::NotFound(_))
    ));
    let fresh = key_record(&scope, "old", "fp-new", now + IDEMPOTENCY_TTL_MS);
    assert_eq!(
        store.claim_key(fresh.clone()).await.expect("claim"),
        KeyClaim::Claimed(fresh.clone()),
        "an expired record does not block a claim"
    );
    assert_eq!(
        store.get_key(&scope, "old").await.expect("get"),
        Some(fresh.clone())
    );

    for key in ["gone-1", "gone-2", "gone-3"] {
        store
            .claim_key(key_record(&scope, key, key, now - 5_000))
            .await
            .expect("claim");
    }
    let live = key_record(&scope, "live", "fp-live", now + IDEMPOTENCY_TTL_MS);
    store.claim_key(live.clone()).await.expect("claim");
    let purged = store.purge_expired_keys(now_ms()).await.expect("purge");
    assert!(
        purged == 0 || purged >= 3,
        "purged {purged}: 0 (TTL) or every expired key"
    );
    for key in ["gone-1", "gone-2", "gone-3"] {
        assert_eq!(store.get_key(&scope, key).await.expect("get"), None, "{key}");
    }
    assert_eq!(store.get_key(&scope, "live").await.expect("get"), Some(live));
    assert_eq!(store.get_key(&scope, "old").await.expect("get"), Some(fresh));
    let again = key_record(&scope, "gone-1", "fp-again", now + IDEMPOTENCY_TTL_MS);
    assert_eq!(
        store.claim_key(again.clone()).await.expect("claim"),
        KeyClaim::Claimed(again)
    );
}

pub(super) async fn bad_key_and_outbox_requests_are_refused<S: IdempotencyStore + OutboxStore>(
    store: &S,
    ns: &str,
) {
    let invalid =
        |result: Result<KeyClaim, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    let expires = now_ms() + IDEMPOTENCY_TTL_MS;
    assert!(
        invalid(store.claim_key(key_record("", "k", "fp", expires)).await),
        "empty scope"
    );
    assert!(
        invalid(store.claim_key(key_record(ns, "", "fp", expires)).await),
        "empty key"
    );
    assert!(matches!(
        store.get_key("", "k").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_key(ns, "").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.complete_key(ns, "", b"x".to_vec()).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.complete_key("", "k", b"x".to_vec()).await,
        Err(StoreError::InvalidArgument(_))
    ));

    assert!(matches!(
        store
            .append_outbox(vec![event(&format!("{ns}-ev-ok")), event("")])
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(
        pending_under(store, ns).await,
        vec![],
        "a refused append appends nothing"
    );
    assert!(matches!(
        store
            .mark_outbox_sent(&[format!("{ns}-ev-ok"), String::new()])
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
}
