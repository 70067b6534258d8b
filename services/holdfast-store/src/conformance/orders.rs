//! Orders: conditional updates with their events, customer listings.

use tokio::task::JoinSet;

use crate::orders::MAX_ORDER_PAGE_SIZE;
use crate::{OrderPage, OrderStore, OutboxStore, StoreError, StoredOrder, now_ms};

use super::{
    T0, namespace,
    outbox::{event, ids_of, pending_under, send_all_under},
};

pub(super) fn order(id: &str, customer_id: &str, created_at_ms: i64, status: i32) -> StoredOrder {
    StoredOrder {
        id: id.to_string(),
        customer_id: customer_id.to_string(),
        status,
        created_at_ms,
        payload: format!("order {id} in status {status}").into_bytes(),
        ..StoredOrder::default()
    }
}

/// Every page of a customer's listing at `page_size`, following cursors to the end.
pub(super) async fn all_order_pages<S: OrderStore>(
    store: &S,
    customer_id: &str,
    statuses: &[i32],
    page_size: u32,
) -> Vec<OrderPage> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_orders_by_customer(customer_id, statuses, cursor.as_deref(), page_size)
            .await
            .expect("list orders");
        assert!(
            page.orders.len() <= page_size as usize,
            "a page holds at most `limit`"
        );
        cursor.clone_from(&page.next_cursor);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 10_000, "listing {customer_id:?} never ends");
    }
}

pub(super) fn listed_orders(pages: &[OrderPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.orders.iter().map(|o| o.id.clone()))
        .collect()
}

/// Listing order: newest first, ties by id descending.
pub(super) fn newest_first(orders: &mut [StoredOrder]) {
    orders.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
}

/// A created order reads back as written with version 1; creating it again returns the
/// stored one unchanged (and lists it once, under its own customer).
pub async fn order_create_get_and_repeat_create<S: OrderStore>(store: &S) {
    let ns = namespace("order");
    let (id, customer) = (format!("{ns}-заказ-📦"), format!("{ns}-клиент"));
    assert_eq!(store.get_order(&id).await.expect("get"), None);

    let draft = StoredOrder {
        // Ignored: the store numbers versions and stamps updates itself.
        version: 42,
        updated_at_ms: 5,
        ..order(&id, &customer, T0 + 123, 1)
    };
    let before = now_ms();
    let created = store.create_order(draft.clone()).await.expect("create");
    assert_eq!(created.version, 1);
    assert!(
        created.updated_at_ms >= before,
        "updated_at_ms is the store's clock"
    );
    assert_eq!(
        created,
        StoredOrder {
            version: 1,
            updated_at_ms: created.updated_at_ms,
            ..draft.clone()
        },
        "created_at_ms and everything else kept as given"
    );
    assert_eq!(store.get_order(&id).await.expect("get"), Some(created.clone()));

    let retry = StoredOrder {
        status: 7,
        payload: b"another attempt".to_vec(),
        customer_id: format!("{ns}-someone-else"),
        ..draft
    };
    assert_eq!(
        store.create_order(retry).await.expect("create again"),
        created,
        "a repeated create returns the stored order"
    );
    assert_eq!(store.get_order(&id).await.expect("get"), Some(created.clone()));
    let listed = store
        .list_orders_by_customer(&customer, &[], None, 10)
        .await
        .expect("list");
    assert_eq!(listed.orders, vec![created]);
    assert_eq!(
        store
            .list_orders_by_customer(&format!("{ns}-someone-else"), &[], None, 10)
            .await
            .expect("list"),
        OrderPage::default(),
        "a repeated create lists nothing under another customer"
    );
}

/// An update at the stored version replaces status and payload (never customer or
/// creation time) and writes its events; refused updates write neither.
pub async fn order_update_is_conditional_and_refusals_write_nothing<S: OrderStore + OutboxStore>(store: &S) {
    let ns = namespace("order-update");
    let (id, customer) = (format!("{ns}-o"), format!("{ns}-c"));
    let created = store
        .create_order(order(&id, &customer, T0, 1))
        .await
        .expect("create");

    let change = StoredOrder {
        status: 2,
        payload: b"confirmed".to_vec(),
        // Cannot change: ignored.
        customer_id: format!("{ns}-thief"),
        created_at_ms: 1,
        ..created.clone()
    };
    let confirmed = store
        .update_order(change, 1, vec![event(&format!("{ns}-ev-1"))])
        .await
        .expect("update at version 1");
    assert_eq!(confirmed.version, 2);
    assert_eq!(
        (confirmed.status, confirmed.payload.as_slice()),
        (2, &b"confirmed"[..])
    );
    assert_eq!(
        (&confirmed.customer_id, confirmed.created_at_ms),
        (&customer, T0),
        "customer and creation time stay"
    );
    assert!(confirmed.updated_at_ms >= created.updated_at_ms);
    assert_eq!(store.get_order(&id).await.expect("get"), Some(confirmed.clone()));
    assert_eq!(
        pending_under(store, &ns).await,
        vec![event(&format!("{ns}-ev-1"))],
        "the update's event is pending, as written"
    );

    let intruder = StoredOrder {
        status: 9,
        payload: b"must not land".to_vec(),
        ..confirmed.clone()
    };
    for (expected, why) in [(1, "stale version"), (5, "future version")] {
        assert_eq!(
            store
                .update_order(
                    intruder.clone(),
                    expected,
                    vec![event(&format!("{ns}-ev-refused-{expected}"))]
                )
                .await,
            Err(StoreError::VersionConflict { expected, actual: 2 }),
            "{why}"
        );
    }
    let unknown = StoredOrder {
        id: format!("{ns}-unknown"),
        ..intruder
    };
    assert!(matches!(
        store
            .update_order(unknown, 1, vec![event(&format!("{ns}-ev-unknown"))])
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.get_order(&format!("{ns}-unknown")).await.expect("get"),
        None
    );
    assert_eq!(store.get_order(&id).await.expect("get"), Some(confirmed.clone()));
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-1")],
        "refused updates write no events"
    );

    // The listing follows the update's status.
    let by_status = |statuses: &'static [i32]| {
        let customer = customer.clone();
        async move {
            store
                .list_orders_by_customer(&customer, statuses, None, 10)
                .await
                .expect("list")
                .orders
        }
    };
    assert_eq!(by_status(&[2]).await, vec![confirmed.clone()]);
    assert_eq!(by_status(&[1]).await, vec![]);

    let shipped = store
        .update_order(
            StoredOrder {
                status: 3,
                ..confirmed
            },
            2,
            vec![],
        )
        .await
        .expect("update without events");
    assert_eq!(shipped.version, 3);
    assert_eq!(by_status(&[3]).await, vec![shipped]);
    assert_eq!(ids_of(&pending_under(store, &ns).await), [format!("{ns}-ev-1")]);
    send_all_under(store, &ns).await;
}

/// Eight tasks updating one order from the same version: exactly one wins, the rest are
/// told the version moved, and only the winner's event is written.
pub async fn order_concurrent_updates_from_8_tasks_one_wins<S>(store: &S)
where
    S: OrderStore + OutboxStore + Clone + 'static,
{
    let ns = namespace("order-race");
    let id = format!("{ns}-o");
    let created = store
        .create_order(order(&id, &format!("{ns}-c"), T0, 1))
        .await
        .expect("create");
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let (store, ns, created) = (store.clone(), ns.clone(), created.clone());
        tasks.spawn(async move {
            let attempt = StoredOrder {
                status: 10 + task,
                ..created
            };
            let result = store
                .update_order(attempt, 1, vec![event(&format!("{ns}-ev-{task}"))])
                .await;
            (task, result)
        });
    }
    let mut winners = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.expect("writer task") {
            (task, Ok(stored)) => winners.push((task, stored)),
            (
                _,
                Err(StoreError::VersionConflict {
                    expected: 1,
                    actual: 2,
                }),
            ) => {}
            (_, Err(other)) => panic!("unexpected answer to a lost race: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one conditional update wins");
    let (task, winner) = winners.pop().expect("one winner");
    assert_eq!((winner.version, winner.status), (2, 10 + task));
    assert_eq!(store.get_order(&id).await.expect("get"), Some(winner));
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-{task}")],
        "only the winner's event"
    );
    send_all_under(store, &ns).await;
}

/// Pages walk a customer's orders exactly once, newest first with ties by id descending,
/// other customers stay out, the status filter holds on every page, and writes between
/// pages neither repeat nor shift what was listed.
pub async fn order_list_pages_newest_first_with_status_filter<S: OrderStore>(store: &S) {
    let ns = namespace("order-list");
    let (customer, neighbour) = (format!("{ns}-c"), format!("{ns}-n"));
    // (id tail, created_at offset, status): ties on time, ids out of order on purpose.
    let plan = [
        ("e", 30, 1),
        ("a", 10, 2),
        ("c", 20, 3),
        ("b", 20, 1),
        ("d", 20, 2),
        ("h", 40, 2),
        ("f", 10, 3),
        ("g", 50, 1),
        ("i", 30, 2),
    ];
    let mut stored = Vec::new();
    for (tail, offset, status) in plan {
        let created = store
            .create_order(order(&format!("{ns}-{tail}"), &customer, T0 + offset, status))
            .await
            .expect("create");
        stored.push(created);
        // The neighbour's orders interleave in time.
        store
            .create_order(order(&format!("{ns}-{tail}-n"), &neighbour, T0 + offset, status))
            .await
            .expect("create");
    }
    newest_first(&mut stored);
    let expected: Vec<String> = stored.iter().map(|o| o.id.clone()).collect();
    assert_eq!(
        expected[..4],
        [
            format!("{ns}-g"),
            format!("{ns}-h"),
            format!("{ns}-i"),
            format!("{ns}-e")
        ],
        "the test's own idea of the order"
    );

    for page_size in [1, 2, 4, 9, 100] {
        let pages = all_order_pages(store, &customer, &[], page_size).await;
        assert_eq!(listed_orders(&pages), expected, "page size {page_size}");
    }
    let whole = store
        .list_orders_by_customer(&customer, &[], None, 100)
        .await
        .expect("list");
    assert_eq!(whole.orders, stored, "listed orders are the stored ones");
    assert_eq!(whole.next_cursor, None, "a page that fits all has no cursor");

    for statuses in [&[2][..], &[3, 1], &[1, 2, 3], &[2, 2, 999]] {
        let wanted: Vec<String> = stored
            .iter()
            .filter(|o| statuses.contains(&o.status))
            .map(|o| o.id.clone())
            .collect();
        for page_size in [1, 2, 100] {
            let pages = all_order_pages(store, &customer, statuses, page_size).await;
            assert_eq!(
                listed_orders(&pages),
                wanted,
                "statuses {statuses:?}, page size {page_size}"
            );
        }
    }
    let none = all_order_pages(store, &customer, &[999], 2).await;
    assert_eq!(listed_orders(&none), Vec::<String>::new());
    assert_eq!(
        store
            .list_orders_by_customer(&format!("{ns}-nobody"), &[], None, 5)
            .await
            .expect("list"),
        OrderPage::default(),
        "an unknown customer has an empty first page"
    );

    // Writes between pages: a newer order (before the cursor: not seen) and an older
    // one (after it: seen once).
    let first = store
        .list_orders_by_customer(&customer, &[], None, 3)
        .await
        .expect("list");
    let cursor = first.next_cursor.clone().expect("more pages");
    store
        .create_order(order(&format!("{ns}-late-new"), &customer, T0 + 1000, 1))
        .await
        .expect("create");
    store
        .create_order(order(&format!("{ns}-late-old"), &customer, T0 - 1000, 1))
        .await
        .expect("create");
    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = store
            .list_orders_by_customer(&customer, &[], Some(&cursor), 3)
            .await
            .expect("list");
        rest.extend(page.orders.into_iter().map(|o| o.id));
        next = page.next_cursor;
    }
    let mut expected_rest = expected[first.orders.len()..].to_vec();
    expected_rest.push(format!("{ns}-late-old"));
    assert_eq!(rest, expected_rest);
}

/// A page never holds more than [`MAX_ORDER_PAGE_SIZE`] orders, however many are asked.
pub async fn order_list_page_size_is_capped<S: OrderStore + Clone + 'static>(store: &S) {
    let ns = namespace("order-cap");
    let customer = format!("{ns}-c");
    let total = MAX_ORDER_PAGE_SIZE as i64 + 1;
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let (store, ns, customer) = (store.clone(), ns.clone(), customer.clone());
        tasks.spawn(async move {
            for i in (task..total).step_by(8) {
                store
                    .create_order(order(&format!("{ns}-{i:04}"), &customer, T0 + i, 1))
                    .await
                    .expect("create");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer task");
    }
    let first = store
        .list_orders_by_customer(&customer, &[], None, u32::MAX)
        .await
        .expect("a huge page size is capped, not refused");
    assert_eq!(first.orders.len(), MAX_ORDER_PAGE_SIZE as usize);
    assert_eq!(
        first.orders[0].id,
        format!("{ns}-{:04}", total - 1),
        "newest first"
    );
    let rest = store
        .list_orders_by_customer(&customer, &[], first.next_cursor.as_deref(), u32::MAX)
        .await
        .expect("list");
    assert_eq!(ids_of_orders(&rest.orders), [format!("{ns}-0000")]);
    assert_eq!(rest.next_cursor, None);
}

pub(super) fn ids_of_orders(orders: &[StoredOrder]) -> Vec<String> {
    orders.iter().map(|o| o.id.clone()).collect()
}

pub(super) async fn bad_order_requests_are_refused<S: OrderStore + OutboxStore>(store: &S, ns: &str) {
    let invalid =
        |result: Result<OrderPage, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    let customer = format!("{ns}-customer");
    for i in 0..3 {
        store
            .create_order(order(&format!("{ns}-order-{i}"), &customer, T0 + i, 1))
            .await
            .expect("create");
    }
    assert!(
        invalid(store.list_orders_by_customer(&customer, &[], None, 0).await),
        "page size 0"
    );
    assert!(
        invalid(store.list_orders_by_customer("", &[], None, 5).await),
        "empty customer"
    );
    assert!(
        invalid(
            store
                .list_orders_by_customer(&customer, &[], Some("garbage"), 5)
                .await
        ),
        "garbage cursor"
    );
    let first = store
        .list_orders_by_customer(&customer, &[], None, 1)
        .await
        .expect("list");
    let cursor = first.next_cursor.expect("more pages");
    assert!(
        invalid(
            store
                .list_orders_by_customer(&format!("{ns}-other"), &[], Some(&cursor), 5)
                .await
        ),
        "a cursor is only good for the customer it came from"
    );
    // A category listing's cursor, for a category named like the customer.
    let category_cursor = crate::cursor::encode(&customer, &format!("{T0}:{ns}-order-2"));
    assert!(
        invalid(
            store
                .list_orders_by_customer(&customer, &[], Some(&category_cursor), 5)
                .await
        ),
        "a product cursor is no order cursor"
    );

    let refused =
        |result: Result<StoredOrder, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    assert!(
        refused(store.create_order(order("", &customer, T0, 1)).await),
        "empty id"
    );
    assert!(
        refused(store.create_order(order(&format!("{ns}-x"), "", T0, 1)).await),
        "empty customer"
    );
    assert!(matches!(
        store.get_order("").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(refused(
        store.update_order(order("", &customer, T0, 1), 1, vec![]).await
    ));
    let id = format!("{ns}-order-0");
    let before = store.get_order(&id).await.expect("get").expect("order");
    assert!(
        refused(
            store
                .update_order(
                    order(&id, &customer, T0, 5),
                    1,
                    vec![event(&format!("{ns}-ev-ok")), event("")]
                )
                .await
        ),
        "an event without id"
    );
    assert!(refused(
        store
            .update_order(order(&id, &customer, T0, 5), u64::MAX, vec![])
            .await
    ));
    assert_eq!(
        store.get_order(&id).await.expect("get"),
        Some(before),
        "a refused update changes nothing"
    );
    assert_eq!(pending_under(store, ns).await, vec![], "and writes no event");
}
