//! The conformance suite: every behaviour callers may rely on, written once and run
//! against every backend (`tests/sqlite.rs` always, `tests/scylla.rs` when `SCYLLA_NODES`
//! is set).
//!
//! Each check is a generic async function over a store, names its keys with a fresh
//! prefix (so checks may share a long-lived ScyllaDB keyspace and run in any order), and
//! panics on the first behaviour that differs from the traits' documentation. One file per
//! aggregate holds its checks and their fixtures; a new aggregate adds its file, re-exports
//! its checks here and lists them in [`checks`]. Checks that cross aggregates (refused
//! requests) stay here.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;

use crate::{
    CartPurge, CartStore, IdempotencyStore, JoinedWriteStore, OrderStore, OutboxStore, ProductPage,
    ProductStore, SagaStore, StandingStore, StockTruthStore, StoreError, WaitingRoomStore, WarehouseStore,
};

mod carts;
mod idempotency;
mod joined;
mod orders;
mod outbox;
mod product_events;
mod products;
mod sagas;
mod standing;
mod stock_truth;
mod waiting_room;
mod warehouse;
mod warehouse_changes;
mod warehouse_race;

pub use carts::{
    cart_delete_is_not_undone_by_late_older_save, cart_older_version_never_overwrites_newer,
    cart_save_load_delete, cart_untouched_for_the_ttl_is_gone, unicode_round_trips,
};
pub use idempotency::{
    key_claim_get_complete, key_concurrent_claims_from_16_tasks_one_wins,
    key_expired_is_absent_reclaimable_and_purged,
};
pub use joined::joined_transition_writes_order_key_and_saga_together;
pub use orders::{
    order_concurrent_updates_from_8_tasks_one_wins, order_create_get_and_repeat_create,
    order_list_page_size_is_capped, order_list_pages_newest_first_with_status_filter,
    order_update_is_conditional_and_refusals_write_nothing,
};
pub use outbox::{outbox_append_pending_mark_sent, outbox_pending_except_leaves_out_the_skipped};
pub use product_events::{
    product_announcements_are_listed_once_and_never_before_their_product,
    product_refused_upsert_announces_nothing, product_scan_visits_every_product_once,
};
pub use products::{
    product_batch_get_in_request_order_skips_unknown, product_concurrent_conditional_updates_one_wins,
    product_concurrent_upserts_from_8_tasks_all_land, product_list_follows_category_moves,
    product_list_pages_category_once_in_sku_order, product_upsert_then_get,
    product_version_conflict_changes_nothing,
};
pub use sagas::{
    saga_concurrent_transitions_from_8_tasks_one_wins, saga_create_get_and_repeat_create,
    saga_stalled_lists_unfinished_expired_leases_oldest_first,
    saga_transition_is_conditional_and_finished_sagas_never_move,
};
pub use standing::standing_is_a_keys_place_claim_and_queue_depth;
pub use stock_truth::{
    truth_bad_requests_are_refused, truth_concurrent_writes_keep_the_highest_version,
    truth_scan_pages_every_sku_once, truth_stock_versions_and_sales_once,
};
pub use waiting_room::{
    waiting_room_bad_requests_are_refused,
    waiting_room_concurrent_enqueues_from_16_tasks_keep_one_entry_per_key,
    waiting_room_is_fifo_bounded_and_one_entry_per_key,
};
pub use warehouse::{
    warehouse_bad_requests_are_refused, warehouse_shipments_list_by_order_and_by_warehouse,
    warehouse_upsert_get_and_list_by_region,
};
pub use warehouse_changes::{
    warehouse_change_applies_everything_once_and_repeats_answer_the_first,
    warehouse_concurrent_allocations_from_12_tasks_never_share_units,
    warehouse_refused_change_writes_nothing,
};
pub use warehouse_race::warehouse_cancel_and_ship_race_one_winner_per_shipment;

use {
    carts::cart, idempotency::bad_key_and_outbox_requests_are_refused,
    orders::bad_order_requests_are_refused, products::sample, sagas::bad_saga_requests_are_refused,
};

/// A store the suite can run against: every aggregate, shareable across tasks.
pub trait ConformanceStore:
    ProductStore
    + CartStore
    + CartPurge
    + OrderStore
    + SagaStore
    + IdempotencyStore
    + OutboxStore
    + WarehouseStore
    + StockTruthStore
    + WaitingRoomStore
    + JoinedWriteStore
    + StandingStore
    + Clone
    + 'static
{
}
impl<T> ConformanceStore for T where
    T: ProductStore
        + CartStore
        + CartPurge
        + OrderStore
        + SagaStore
        + IdempotencyStore
        + OutboxStore
        + WarehouseStore
        + StockTruthStore
        + WaitingRoomStore
        + JoinedWriteStore
        + StandingStore
        + Clone
        + 'static
{
}

/// One check, ready to run on its own clone of the store.
pub type Check<S> = fn(S) -> BoxFuture<'static, ()>;

macro_rules! named_checks {
    ($($check:ident),* $(,)?) => {
        vec![$((
            stringify!($check),
            (|store: S| -> BoxFuture<'static, ()> { Box::pin(async move { $check(&store).await }) }) as Check<S>,
        )),*]
    };
}

/// Every check with its name, in the order [`run_all`] runs them.
pub fn checks<S: ConformanceStore>() -> Vec<(&'static str, Check<S>)> {
    named_checks![
        product_upsert_then_get,
        product_version_conflict_changes_nothing,
        product_list_pages_category_once_in_sku_order,
        product_list_follows_category_moves,
        product_batch_get_in_request_order_skips_unknown,
        product_concurrent_upserts_from_8_tasks_all_land,
        product_concurrent_conditional_updates_one_wins,
        product_scan_visits_every_product_once,
        product_refused_upsert_announces_nothing,
        product_announcements_are_listed_once_and_never_before_their_product,
        cart_save_load_delete,
        cart_older_version_never_overwrites_newer,
        cart_delete_is_not_undone_by_late_older_save,
        cart_untouched_for_the_ttl_is_gone,
        unicode_round_trips,
        order_create_get_and_repeat_create,
        order_update_is_conditional_and_refusals_write_nothing,
        order_concurrent_updates_from_8_tasks_one_wins,
        order_list_pages_newest_first_with_status_filter,
        order_list_page_size_is_capped,
        saga_create_get_and_repeat_create,
        saga_transition_is_conditional_and_finished_sagas_never_move,
        saga_concurrent_transitions_from_8_tasks_one_wins,
        saga_stalled_lists_unfinished_expired_leases_oldest_first,
        joined_transition_writes_order_key_and_saga_together,
        key_claim_get_complete,
        key_concurrent_claims_from_16_tasks_one_wins,
        key_expired_is_absent_reclaimable_and_purged,
        outbox_append_pending_mark_sent,
        outbox_pending_except_leaves_out_the_skipped,
        bad_requests_are_refused,
        warehouse_upsert_get_and_list_by_region,
        warehouse_change_applies_everything_once_and_repeats_answer_the_first,
        warehouse_refused_change_writes_nothing,
        warehouse_concurrent_allocations_from_12_tasks_never_share_units,
        warehouse_cancel_and_ship_race_one_winner_per_shipment,
        warehouse_shipments_list_by_order_and_by_warehouse,
        warehouse_bad_requests_are_refused,
        truth_stock_versions_and_sales_once,
        truth_concurrent_writes_keep_the_highest_version,
        truth_scan_pages_every_sku_once,
        truth_bad_requests_are_refused,
        waiting_room_is_fifo_bounded_and_one_entry_per_key,
        waiting_room_concurrent_enqueues_from_16_tasks_keep_one_entry_per_key,
        waiting_room_bad_requests_are_refused,
        standing_is_a_keys_place_claim_and_queue_depth,
    ]
}

/// Runs every check against `store`, printing each name before it runs.
pub async fn run_all<S: ConformanceStore>(store: &S) {
    for (name, check) in checks::<S>() {
        println!("conformance: {name}");
        check(store.clone()).await;
    }
}

/// A prefix no other check or earlier run has used.
fn namespace(check: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{check}-{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Requests no backend can serve are refused as invalid, not half-done.
pub async fn bad_requests_are_refused<S>(store: &S)
where
    S: ProductStore + CartStore + OrderStore + SagaStore + IdempotencyStore + OutboxStore,
{
    let ns = namespace("bad");
    let category = format!("{ns}-cat");
    let invalid =
        |result: Result<ProductPage, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    assert!(
        invalid(store.list_products_by_category(&category, None, 0).await),
        "page size 0"
    );
    assert!(
        invalid(store.list_products_by_category("", None, 5).await),
        "empty category"
    );
    assert!(
        invalid(
            store
                .list_products_by_category(&category, Some("garbage"), 5)
                .await
        ),
        "garbage cursor"
    );

    for i in 0..3 {
        let sku = format!("{ns}-{i}");
        store
            .upsert_product(sample(&sku, &category), Some(0))
            .await
            .expect("create");
    }
    let first = store
        .list_products_by_category(&category, None, 1)
        .await
        .expect("list");
    let cursor = first.next_cursor.expect("more pages");
    assert!(
        invalid(
            store
                .list_products_by_category(&format!("{ns}-other"), Some(&cursor), 5)
                .await
        ),
        "a cursor is only good for the category it came from"
    );
    let huge = store
        .list_products_by_category(&category, None, u32::MAX)
        .await
        .expect("huge page size is capped");
    assert_eq!(huge.products.len(), 3);

    assert!(matches!(
        store.upsert_product(sample("", &category), None).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.upsert_product(sample(&format!("{ns}-x"), ""), None).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.save_cart(cart("", 1, 1)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.save_cart(cart(&format!("{ns}-owner"), u64::MAX, 1)).await,
        Err(StoreError::InvalidArgument(_))
    ));

    bad_order_requests_are_refused(store, &ns).await;
    bad_saga_requests_are_refused(store, &ns).await;
    bad_key_and_outbox_requests_are_refused(store, &ns).await;
}

/// Unix ms of 2023-11-14: order times in the checks, far from the clock the store stamps.
const T0: i64 = 1_700_000_000_000;
