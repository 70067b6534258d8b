//! The conformance suite: every behaviour callers may rely on, written once and run
//! against every backend (`tests/sqlite.rs`, and `tests/scylla.rs` on the nodes in
//! `SCYLLA_NODES` or else on an Apache Cassandra 5 node the testkit starts).
//!
//! Each check is a generic async function over a store, names its keys with a fresh
//! prefix (so checks may share a long-lived ScyllaDB keyspace and run in any order), and
//! panics on the first behaviour that differs from the traits' documentation. New
//! aggregates add their checks here and to [`checks`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::orders::MAX_ORDER_PAGE_SIZE;
use crate::{
    CartStore, ChangeOutcome, Claim, IDEMPOTENCY_TTL_MS, IdempotencyRecord, IdempotencyStore, IfTaken,
    KeyClaim, OrderPage, OrderStore, OutboxMessage, OutboxStore, Product, ProductPage, ProductStore, Refusal,
    SagaRecord, SagaStore, SagaTransition, ShipmentLineRecord, ShipmentWrite, ShippingOptionRecord,
    StockDelta, StockRow, StoreError, StoredCart, StoredCartLine, StoredOrder, StoredShipment,
    StoredWarehouse, WarehouseChange, WarehousePage, WarehouseStore, now_ms,
};

/// A store the suite can run against: every aggregate, shareable across tasks.
pub trait ConformanceStore:
    ProductStore
    + CartStore
    + OrderStore
    + SagaStore
    + IdempotencyStore
    + OutboxStore
    + WarehouseStore
    + Clone
    + 'static
{
}
impl<T> ConformanceStore for T where
    T: ProductStore
        + CartStore
        + OrderStore
        + SagaStore
        + IdempotencyStore
        + OutboxStore
        + WarehouseStore
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
        cart_save_load_delete,
        cart_older_version_never_overwrites_newer,
        cart_delete_is_not_undone_by_late_older_save,
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
        key_claim_get_complete,
        key_concurrent_claims_from_16_tasks_one_wins,
        key_expired_is_absent_reclaimable_and_purged,
        outbox_append_pending_mark_sent,
        bad_requests_are_refused,
        warehouse_upsert_get_and_list_by_region,
        warehouse_change_applies_everything_once_and_repeats_answer_the_first,
        warehouse_refused_change_writes_nothing,
        warehouse_concurrent_allocations_from_12_tasks_never_share_units,
        warehouse_shipments_list_by_order_and_by_warehouse,
        warehouse_bad_requests_are_refused,
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

fn sample(sku: &str, category: &str) -> Product {
    Product {
        sku: sku.to_string(),
        title: format!("title of {sku}"),
        description: "a thing worth having".into(),
        price_minor: 1999,
        currency: "EUR".into(),
        category: category.to_string(),
        brand: "Holdfast".into(),
        attributes: BTreeMap::from([("colour".into(), "blue".into()), ("size".into(), "M".into())]),
        active: true,
        ..Product::default()
    }
}

/// What the caller wrote, without the fields the store sets.
fn content(product: &Product) -> Product {
    Product {
        version: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
        ..product.clone()
    }
}

/// Every page of `category` at `page_size`, following cursors to the end.
async fn all_pages<S: ProductStore>(store: &S, category: &str, page_size: u32) -> Vec<ProductPage> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_products_by_category(category, cursor.as_deref(), page_size)
            .await
            .expect("list products");
        cursor.clone_from(&page.next_cursor);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 10_000, "listing {category:?} never ends");
    }
}

fn listed_skus(pages: &[ProductPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.products.iter().map(|p| p.sku.clone()))
        .collect()
}

fn cart(owner: &str, version: u64, lines: usize) -> StoredCart {
    StoredCart {
        owner: owner.to_string(),
        lines: (0..lines)
            .map(|i| StoredCartLine {
                sku: format!("sku-{version}-{i}"),
                quantity: i as i64 + 1,
                unit_price_minor: 500 + version as i64,
                currency: "EUR".into(),
                added_at_ms: 1_700_000_000_000 + i as i64,
            })
            .collect(),
        version,
        updated_at_ms: 1_700_000_000_000 + version as i64,
    }
}

/// A created product reads back as written; updates bump the version and keep
/// `created_at_ms`; the caller's version and timestamps are ignored.
pub async fn product_upsert_then_get<S: ProductStore>(store: &S) {
    let ns = namespace("upsert");
    let sku = format!("{ns}-sku");
    assert_eq!(
        store.get_product(&sku).await.expect("get"),
        None,
        "nothing before the first write"
    );

    let draft = sample(&sku, &format!("{ns}-cat"));
    let created = store
        .upsert_product(draft.clone(), Some(0))
        .await
        .expect("create");
    assert_eq!(content(&created), draft);
    assert_eq!(created.version, 1);
    assert!(created.created_at_ms > 0, "created_at_ms is set");
    assert_eq!(created.updated_at_ms, created.created_at_ms);
    assert_eq!(store.get_product(&sku).await.expect("get"), Some(created.clone()));

    // Let the clock move, so a reset `created_at_ms` would show.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let mut change = content(&created);
    change.title = "renamed".into();
    change.price_minor = 2499;
    change.active = false;
    change.attributes.insert("material".into(), "wool".into());
    change.attributes.remove("size");
    let updated = store
        .upsert_product(change.clone(), Some(1))
        .await
        .expect("update at version 1");
    assert_eq!(content(&updated), change);
    assert_eq!(updated.version, 2);
    assert_eq!(
        updated.created_at_ms, created.created_at_ms,
        "created_at_ms survives updates"
    );
    assert!(updated.updated_at_ms >= created.updated_at_ms);
    assert_eq!(store.get_product(&sku).await.expect("get"), Some(updated.clone()));

    let forced = Product {
        title: "forced".into(),
        // Ignored: the store numbers versions and stamps times itself.
        version: 77,
        created_at_ms: 1,
        updated_at_ms: 1,
        ..updated.clone()
    };
    let forced = store
        .upsert_product(forced, None)
        .await
        .expect("unconditional write");
    assert_eq!(forced.title, "forced");
    assert_eq!(forced.version, 3);
    assert_eq!(forced.created_at_ms, created.created_at_ms);
    assert_eq!(store.get_product(&sku).await.expect("get"), Some(forced));

    let blank = format!("{ns}-blank");
    let bare = Product {
        sku: blank.clone(),
        category: format!("{ns}-cat"),
        ..Product::default()
    };
    let stored = store
        .upsert_product(bare.clone(), None)
        .await
        .expect("unconditional create");
    assert_eq!(content(&stored), bare, "empty strings and attributes round-trip");
    assert_eq!(stored.version, 1);
    assert_eq!(store.get_product(&blank).await.expect("get"), Some(stored));
}

/// Refused writes answer why and change nothing, listings included.
pub async fn product_version_conflict_changes_nothing<S: ProductStore>(store: &S) {
    let ns = namespace("conflict");
    let (sku, category, elsewhere) = (format!("{ns}-sku"), format!("{ns}-cat"), format!("{ns}-other"));
    store
        .upsert_product(sample(&sku, &category), Some(0))
        .await
        .expect("create");
    let current = store
        .upsert_product(sample(&sku, &category), Some(1))
        .await
        .expect("update to version 2");

    let intruder = Product {
        title: "must not land".into(),
        price_minor: 1,
        ..sample(&sku, &elsewhere)
    };
    for (expected, why) in [
        (0, "create over an existing sku"),
        (1, "stale version"),
        (7, "future version"),
    ] {
        assert_eq!(
            store.upsert_product(intruder.clone(), Some(expected)).await,
            Err(StoreError::VersionConflict { expected, actual: 2 }),
            "{why}"
        );
    }
    assert_eq!(store.get_product(&sku).await.expect("get"), Some(current.clone()));
    let listed = store
        .list_products_by_category(&category, None, 10)
        .await
        .expect("list");
    assert_eq!(listed.products, vec![current]);
    let refused = store
        .list_products_by_category(&elsewhere, None, 10)
        .await
        .expect("list");
    assert_eq!(
        refused.products,
        vec![],
        "a refused move lists nothing in the new category"
    );

    let unknown = format!("{ns}-unknown");
    assert!(
        matches!(
            store.upsert_product(sample(&unknown, &category), Some(1)).await,
            Err(StoreError::NotFound(_))
        ),
        "updating a product that does not exist"
    );
    assert_eq!(
        store.get_product(&unknown).await.expect("get"),
        None,
        "a refused update creates nothing"
    );
}

/// Small pages walk a category exactly once in SKU (UTF-8 byte) order, other categories
/// stay out, and writes between pages neither repeat nor shift what was listed.
pub async fn product_list_pages_category_once_in_sku_order<S: ProductStore>(store: &S) {
    let ns = namespace("paging");
    let (target, neighbour, empty) = (format!("{ns}-shoes"), format!("{ns}-hats"), format!("{ns}-none"));
    // Byte order puts "Z" before "a" before "é"; written out of order on purpose.
    let mut skus: Vec<String> = (0..20).map(|i| format!("{ns}-a{:02}", (i * 7) % 20)).collect();
    skus.extend(["Z", "é", "a05x"].map(|tail| format!("{ns}-{tail}")));
    for sku in &skus {
        store
            .upsert_product(sample(sku, &target), Some(0))
            .await
            .expect("create");
    }
    // The neighbour's SKUs interleave with the target's.
    for i in 0..5 {
        let sku = format!("{ns}-a{i:02}-hat");
        store
            .upsert_product(sample(&sku, &neighbour), Some(0))
            .await
            .expect("create");
    }

    let mut expected = skus.clone();
    expected.sort();
    let pages = all_pages(store, &target, 4).await;
    assert_eq!(listed_skus(&pages), expected, "every product once, in sku order");
    assert_eq!(
        pages.len(),
        expected.len().div_ceil(4),
        "full pages, no empty trailing page"
    );
    for page in &pages[..pages.len() - 1] {
        assert_eq!(page.products.len(), 4);
    }
    assert!(
        pages
            .iter()
            .flat_map(|p| &p.products)
            .all(|p| p.category == target)
    );

    assert_eq!(listed_skus(&all_pages(store, &neighbour, 2).await).len(), 5);
    let exact = all_pages(store, &neighbour, 5).await;
    assert_eq!(
        (exact.len(), exact[0].products.len()),
        (1, 5),
        "a page that fits all has no cursor"
    );
    let nothing = store
        .list_products_by_category(&empty, None, 4)
        .await
        .expect("list");
    assert_eq!(nothing, ProductPage::default());

    // Writes between pages: one before the cursor (not seen), one after (seen once).
    let first = store
        .list_products_by_category(&target, None, 4)
        .await
        .expect("list");
    let cursor = first.next_cursor.clone().expect("more pages");
    let before = format!("{ns}-a00-early");
    let after = format!("{ns}-zz-late");
    store
        .upsert_product(sample(&before, &target), Some(0))
        .await
        .expect("create");
    store
        .upsert_product(sample(&after, &target), Some(0))
        .await
        .expect("create");
    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = store
            .list_products_by_category(&target, Some(&cursor), 4)
            .await
            .expect("list");
        rest.extend(page.products.into_iter().map(|p| p.sku));
        next = page.next_cursor;
    }
    let mut expected_rest: Vec<String> = expected[4..].to_vec();
    expected_rest.push(after);
    expected_rest.sort();
    assert_eq!(rest, expected_rest);
}

/// A product moved to another category leaves the old listing and joins the new one.
pub async fn product_list_follows_category_moves<S: ProductStore>(store: &S) {
    let ns = namespace("move");
    let (sku, from, to) = (format!("{ns}-sku"), format!("{ns}-from"), format!("{ns}-to"));
    let stays = format!("{ns}-stays");
    store
        .upsert_product(sample(&stays, &from), Some(0))
        .await
        .expect("create");
    store
        .upsert_product(sample(&sku, &from), Some(0))
        .await
        .expect("create");

    store
        .upsert_product(sample(&sku, &to), Some(1))
        .await
        .expect("move");
    assert_eq!(
        listed_skus(&all_pages(store, &from, 1).await),
        vec![stays.clone()]
    );
    assert_eq!(listed_skus(&all_pages(store, &to, 1).await), vec![sku.clone()]);

    store
        .upsert_product(sample(&sku, &from), None)
        .await
        .expect("move back");
    let mut both = vec![sku.clone(), stays];
    both.sort();
    assert_eq!(listed_skus(&all_pages(store, &from, 1).await), both);
    assert_eq!(listed_skus(&all_pages(store, &to, 1).await), Vec::<String>::new());
}

/// A batch get answers the SKUs that exist, in the order asked, each once.
pub async fn product_batch_get_in_request_order_skips_unknown<S: ProductStore>(store: &S) {
    let ns = namespace("batch");
    let [a, b, c] = ["a", "b", "c"].map(|tail| format!("{ns}-{tail}"));
    for sku in [&c, &a, &b] {
        store
            .upsert_product(sample(sku, &format!("{ns}-cat")), Some(0))
            .await
            .expect("create");
    }
    let request = [&b, &format!("{ns}-unknown"), &a, &b, &c, &format!("{ns}-nope")].map(|s| s.to_string());
    let got = store.get_products(&request).await.expect("batch get");
    let got: Vec<&str> = got.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(got, [&b, &a, &c]);
    assert_eq!(store.get_products(&[]).await.expect("empty batch"), vec![]);
    let only_unknown = [format!("{ns}-missing")];
    assert_eq!(
        store.get_products(&only_unknown).await.expect("batch get"),
        vec![]
    );
}

/// Eight tasks creating distinct products at once: every product lands, listed once.
pub async fn product_concurrent_upserts_from_8_tasks_all_land<S: ProductStore + Clone + 'static>(store: &S) {
    let ns = namespace("concurrent");
    let category = format!("{ns}-cat");
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let (store, ns, category) = (store.clone(), ns.clone(), category.clone());
        tasks.spawn(async move {
            for i in 0..10 {
                let sku = format!("{ns}-t{task}-{i:02}");
                store
                    .upsert_product(sample(&sku, &category), Some(0))
                    .await
                    .expect("create");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer task");
    }
    let ns = ns.as_str();
    let mut expected: Vec<String> = (0..8)
        .flat_map(|task| (0..10).map(move |i| format!("{ns}-t{task}-{i:02}")))
        .collect();
    let found = store.get_products(&expected).await.expect("batch get");
    assert_eq!(found.len(), 80);
    assert!(found.iter().all(|p| p.version == 1));
    expected.sort();
    assert_eq!(listed_skus(&all_pages(store, &category, 7).await), expected);
}

/// Eight tasks updating one product from the same version: exactly one wins, the rest are
/// told the version moved, and the winner's write is what is stored.
pub async fn product_concurrent_conditional_updates_one_wins<S: ProductStore + Clone + 'static>(store: &S) {
    let ns = namespace("race");
    let sku = format!("{ns}-sku");
    let category = format!("{ns}-cat");
    store
        .upsert_product(sample(&sku, &category), Some(0))
        .await
        .expect("create");
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let (store, sku, category) = (store.clone(), sku.clone(), category.clone());
        tasks.spawn(async move {
            let attempt = Product {
                title: format!("written by {task}"),
                ..sample(&sku, &category)
            };
            store.upsert_product(attempt, Some(1)).await
        });
    }
    let mut winners = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.expect("writer task") {
            Ok(product) => winners.push(product),
            Err(StoreError::VersionConflict {
                expected: 1,
                actual: 2,
            }) => {}
            Err(other) => panic!("unexpected answer to a lost race: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one conditional update wins");
    assert_eq!(store.get_product(&sku).await.expect("get"), winners.pop());
}

/// A saved cart loads back as saved; a save replaces the whole cart; delete removes it
/// and only it.
pub async fn cart_save_load_delete<S: CartStore>(store: &S) {
    let ns = namespace("cart");
    let (owner, neighbour) = (format!("{ns}-customer"), format!("{ns}-session"));
    assert_eq!(store.load_cart(&owner).await.expect("load"), None);

    let first = cart(&owner, 1, 3);
    store.save_cart(first.clone()).await.expect("save");
    assert_eq!(store.load_cart(&owner).await.expect("load"), Some(first));
    store.save_cart(cart(&neighbour, 1, 1)).await.expect("save");

    let second = cart(&owner, 2, 1);
    store.save_cart(second.clone()).await.expect("save");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        Some(second),
        "lines replaced, not merged"
    );

    let emptied = cart(&owner, 3, 0);
    store.save_cart(emptied.clone()).await.expect("save");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        Some(emptied),
        "an empty cart is still a cart"
    );

    store.delete_cart(&owner).await.expect("delete");
    assert_eq!(store.load_cart(&owner).await.expect("load"), None);
    store.delete_cart(&owner).await.expect("delete is idempotent");
    store
        .delete_cart(&format!("{ns}-never-saved"))
        .await
        .expect("delete of nothing");
    assert_eq!(
        store.load_cart(&neighbour).await.expect("load"),
        Some(cart(&neighbour, 1, 1)),
        "other owners keep their carts"
    );
}

/// Saves arriving late or out of order never replace a newer cart.
pub async fn cart_older_version_never_overwrites_newer<S: CartStore + Clone + 'static>(store: &S) {
    let ns = namespace("cart-order");
    let owner = format!("{ns}-customer");
    store.save_cart(cart(&owner, 5, 2)).await.expect("save");
    store
        .save_cart(cart(&owner, 3, 4))
        .await
        .expect("late save is not an error");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        Some(cart(&owner, 5, 2))
    );
    store.save_cart(cart(&owner, 5, 2)).await.expect("replay");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        Some(cart(&owner, 5, 2))
    );
    store.save_cart(cart(&owner, 6, 1)).await.expect("save");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        Some(cart(&owner, 6, 1))
    );

    let shuffled = format!("{ns}-shuffled");
    for version in [2, 7, 4, 6, 3, 1] {
        store
            .save_cart(cart(&shuffled, version, version as usize))
            .await
            .expect("save");
    }
    assert_eq!(
        store.load_cart(&shuffled).await.expect("load"),
        Some(cart(&shuffled, 7, 7))
    );

    let raced = format!("{ns}-raced");
    let mut tasks = JoinSet::new();
    for task in 0..8_u64 {
        let (store, raced) = (store.clone(), raced.clone());
        tasks.spawn(async move {
            for round in 0..5_u64 {
                // Versions 1..=40, each task a different interleaving.
                let version = (round * 8 + (task * 3 + round) % 8) + 1;
                store.save_cart(cart(&raced, version, 2)).await.expect("save");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer task");
    }
    assert_eq!(
        store.load_cart(&raced).await.expect("load"),
        Some(cart(&raced, 40, 2))
    );
}

/// A delete keeps late saves of the deleted (or older) versions out; a newer save brings
/// the cart back.
pub async fn cart_delete_is_not_undone_by_late_older_save<S: CartStore>(store: &S) {
    let ns = namespace("cart-delete");
    let owner = format!("{ns}-session");
    store.save_cart(cart(&owner, 3, 2)).await.expect("save");
    store.delete_cart(&owner).await.expect("delete");
    store.save_cart(cart(&owner, 2, 1)).await.expect("late save");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        None,
        "an older save does not resurrect"
    );
    store.save_cart(cart(&owner, 3, 2)).await.expect("replayed save");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        None,
        "a replay does not resurrect"
    );
    store.save_cart(cart(&owner, 4, 1)).await.expect("newer save");
    assert_eq!(
        store.load_cart(&owner).await.expect("load"),
        Some(cart(&owner, 4, 1))
    );
}

/// Non-ASCII keys and text, and text that looks like query syntax, round-trip unchanged.
pub async fn unicode_round_trips<S: ProductStore + CartStore>(store: &S) {
    let ns = namespace("unicode");
    let category = format!("{ns}-électronique-家電");
    let product = Product {
        sku: format!("{ns}-ЖК-телевизор-📺"),
        title: "Телевизор «Ультра» 📺 — 55″".into(),
        description: "line one\nline two\t'quoted' \"double\" ; DROP TABLE products; -- \u{0}nul".into(),
        price_minor: -5,
        currency: "JPY".into(),
        category: category.clone(),
        brand: "株式会社ホールドファスト".into(),
        attributes: BTreeMap::from([
            ("größe".into(), "55″".into()),
            ("色".into(), "黒".into()),
            ("emoji".into(), "🟦🟥".into()),
            (String::new(), "empty key".into()),
        ]),
        active: true,
        ..Product::default()
    };
    let stored = store
        .upsert_product(product.clone(), Some(0))
        .await
        .expect("create");
    assert_eq!(content(&stored), product);
    assert_eq!(
        store.get_product(&product.sku).await.expect("get"),
        Some(stored.clone())
    );
    assert_eq!(
        store
            .get_products(std::slice::from_ref(&product.sku))
            .await
            .expect("batch get"),
        vec![stored.clone()]
    );
    let pages = all_pages(store, &category, 1).await;
    assert_eq!(
        pages.iter().flat_map(|p| &p.products).collect::<Vec<_>>(),
        vec![&stored]
    );

    let owner = format!("{ns}-séance-🛒");
    let saved = StoredCart {
        owner: owner.clone(),
        lines: vec![StoredCartLine {
            sku: product.sku.clone(),
            quantity: 2,
            unit_price_minor: 1_000,
            currency: "JPY".into(),
            added_at_ms: 1,
        }],
        version: 1,
        updated_at_ms: 2,
    };
    store.save_cart(saved.clone()).await.expect("save");
    assert_eq!(store.load_cart(&owner).await.expect("load"), Some(saved));
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

// ---- orders, sagas, idempotency keys, the outbox ----------------------------------------

/// Unix ms of 2023-11-14: order times in the checks, far from the clock the store stamps.
const T0: i64 = 1_700_000_000_000;

fn order(id: &str, customer_id: &str, created_at_ms: i64, status: i32) -> StoredOrder {
    StoredOrder {
        id: id.to_string(),
        customer_id: customer_id.to_string(),
        status,
        created_at_ms,
        payload: format!("order {id} in status {status}").into_bytes(),
        ..StoredOrder::default()
    }
}

fn event(id: &str) -> OutboxMessage {
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

fn saga(id: &str, lease_until_ms: i64, created_at_ms: i64) -> SagaRecord {
    SagaRecord {
        id: id.to_string(),
        kind: "checkout".into(),
        step: "reserve".into(),
        state: format!("state of {id}").into_bytes(),
        lease_owner: "worker-a".into(),
        lease_until_ms,
        finished: false,
        created_at_ms,
        ..SagaRecord::default()
    }
}

fn step(step: &str, lease_until_ms: i64, finished: bool) -> SagaTransition {
    SagaTransition {
        step: step.to_string(),
        state: format!("state at {step}").into_bytes(),
        lease_owner: if finished {
            String::new()
        } else {
            "worker-b".into()
        },
        lease_until_ms,
        finished,
    }
}

fn key_record(scope: &str, key: &str, fingerprint: &str, expires_at_ms: i64) -> IdempotencyRecord {
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

/// The pending events whose ids start with `prefix`, after checking what holds for the
/// whole listing: ids strictly ascending, and a smaller limit is a prefix of it.
async fn pending_under<S: OutboxStore>(store: &S, prefix: &str) -> Vec<OutboxMessage> {
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
async fn send_all_under<S: OutboxStore>(store: &S, prefix: &str) {
    let ids: Vec<String> = pending_under(store, prefix)
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    store.mark_outbox_sent(&ids).await.expect("mark sent");
    assert_eq!(pending_under(store, prefix).await, vec![]);
}

fn ids_of(messages: &[OutboxMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.id.as_str()).collect()
}

/// Every page of a customer's listing at `page_size`, following cursors to the end.
async fn all_order_pages<S: OrderStore>(
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

fn listed_orders(pages: &[OrderPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.orders.iter().map(|o| o.id.clone()))
        .collect()
}

/// Listing order: newest first, ties by id descending.
fn newest_first(orders: &mut [StoredOrder]) {
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

fn ids_of_orders(orders: &[StoredOrder]) -> Vec<String> {
    orders.iter().map(|o| o.id.clone()).collect()
}

/// A created saga reads back as written with version 1; creating it again returns the
/// stored one unchanged.
pub async fn saga_create_get_and_repeat_create<S: SagaStore>(store: &S) {
    let ns = namespace("saga");
    let id = format!("{ns}-сага-🧾");
    assert_eq!(store.get_saga(&id).await.expect("get"), None);
    let draft = SagaRecord {
        version: 9,
        updated_at_ms: 3,
        ..saga(&id, now_ms() + 60_000, T0)
    };
    let before = now_ms();
    let created = store.create_saga(draft.clone()).await.expect("create");
    assert_eq!(created.version, 1);
    assert!(
        created.updated_at_ms >= before,
        "updated_at_ms is the store's clock"
    );
    assert_eq!(
        created,
        SagaRecord {
            version: 1,
            updated_at_ms: created.updated_at_ms,
            ..draft.clone()
        }
    );
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(created.clone()));
    let retry = SagaRecord {
        kind: "cancel".into(),
        step: "elsewhere".into(),
        finished: true,
        ..draft
    };
    assert_eq!(store.create_saga(retry).await.expect("create again"), created);
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(created));
}

/// Transitions apply only at the stored version of an unfinished saga, with their events;
/// refused ones (stale, unknown, finished) write nothing.
pub async fn saga_transition_is_conditional_and_finished_sagas_never_move<S>(store: &S)
where
    S: SagaStore + OutboxStore,
{
    let ns = namespace("saga-move");
    let id = format!("{ns}-s");
    let lease = now_ms() + 60_000;
    let created = store.create_saga(saga(&id, lease, T0)).await.expect("create");

    let charge = step("charge", lease + 1, false);
    let moved = store
        .transition_saga(&id, 1, charge.clone(), vec![event(&format!("{ns}-ev-1"))])
        .await
        .expect("transition at version 1");
    assert_eq!(
        moved,
        SagaRecord {
            id: id.clone(),
            kind: created.kind.clone(),
            step: charge.step.clone(),
            state: charge.state.clone(),
            version: 2,
            lease_owner: charge.lease_owner.clone(),
            lease_until_ms: charge.lease_until_ms,
            finished: false,
            created_at_ms: T0,
            updated_at_ms: moved.updated_at_ms,
        }
    );
    assert!(moved.updated_at_ms >= created.updated_at_ms);
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(moved.clone()));
    assert_eq!(
        pending_under(store, &ns).await,
        vec![event(&format!("{ns}-ev-1"))]
    );

    for (expected, why) in [(1, "stale version"), (3, "future version")] {
        assert_eq!(
            store
                .transition_saga(
                    &id,
                    expected,
                    step("wrong", 0, false),
                    vec![event(&format!("{ns}-ev-refused-{expected}"))]
                )
                .await,
            Err(StoreError::VersionConflict { expected, actual: 2 }),
            "{why}"
        );
    }
    assert!(matches!(
        store
            .transition_saga(
                &format!("{ns}-unknown"),
                1,
                step("x", 0, false),
                vec![event(&format!("{ns}-ev-unknown"))]
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_saga(&format!("{ns}-unknown")).await.expect("get"), None);
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(moved));

    let done = store
        .transition_saga(&id, 2, step("done", 0, true), vec![event(&format!("{ns}-ev-2"))])
        .await
        .expect("finishing transition");
    assert!(done.finished);
    assert_eq!(done.version, 3);
    assert_eq!(
        store
            .transition_saga(
                &id,
                3,
                step("again", lease, false),
                vec![event(&format!("{ns}-ev-after-end"))]
            )
            .await,
        Err(StoreError::VersionConflict {
            expected: 3,
            actual: 3
        }),
        "a finished saga never moves"
    );
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(done));
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-1"), format!("{ns}-ev-2")],
        "only applied transitions wrote events"
    );
    send_all_under(store, &ns).await;
}

/// Eight workers moving one saga from the same version: exactly one wins, the others are
/// told it moved, and only the winner's event is written.
pub async fn saga_concurrent_transitions_from_8_tasks_one_wins<S>(store: &S)
where
    S: SagaStore + OutboxStore + Clone + 'static,
{
    let ns = namespace("saga-race");
    let id = format!("{ns}-s");
    let lease = now_ms() + 60_000;
    store.create_saga(saga(&id, lease, T0)).await.expect("create");
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let (store, ns, id) = (store.clone(), ns.clone(), id.clone());
        tasks.spawn(async move {
            let transition = SagaTransition {
                lease_owner: format!("worker-{task}"),
                ..step("charge", lease + task, false)
            };
            let result = store
                .transition_saga(&id, 1, transition, vec![event(&format!("{ns}-ev-{task}"))])
                .await;
            (task, result)
        });
    }
    let mut winners = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.expect("worker task") {
            (task, Ok(saga)) => winners.push((task, saga)),
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
    assert_eq!(winners.len(), 1, "exactly one transition wins");
    let (task, winner) = winners.pop().expect("one winner");
    assert_eq!(winner.lease_owner, format!("worker-{task}"));
    assert_eq!(store.get_saga(&id).await.expect("get"), Some(winner));
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-{task}")],
        "only the winner's event"
    );
    send_all_under(store, &ns).await;
}

/// Stalled sagas are the unfinished ones whose lease ended before `now`, oldest first
/// (earliest lease end, ties by id; their creation order agrees here); finished sagas,
/// live leases and leases moved away never show.
pub async fn saga_stalled_lists_unfinished_expired_leases_oldest_first<S: SagaStore>(store: &S) {
    let ns = namespace("saga-stalled");
    // A window of times far in the past and unique to this run: the store's other sagas
    // (real-time leases) stay out of it.
    let base = 1_000_000_000_000 + now_ms() % 1_000_000_000;
    let now = base + 10_000;
    let name = |tail: &str| format!("{ns}-{tail}");
    let create = |tail: &'static str, lease_until_ms: i64, created: i64| {
        let id = name(tail);
        async move {
            store
                .create_saga(saga(&id, lease_until_ms, base + created))
                .await
                .expect("create")
        }
    };
    // Ids sort against lease order, so only the lease order explains the listing; the
    // creation order agrees with it.
    create("d-first", base + 1_000, 1).await;
    create("b-tie-b", base + 2_000, 3).await;
    create("b-tie-a", base + 2_000, 2).await;
    // Stalled through a transition: its created lease was live.
    let third = create("a-third", base + 20_000, 4).await;
    store
        .transition_saga(&third.id, 1, step("retry", base + 3_000, false), vec![])
        .await
        .expect("let go");
    create("c-at-now", now, 5).await;
    // Never stalled: finished, live, moved to a live lease.
    let finished = create("finished", base + 500, 0).await;
    store
        .transition_saga(&finished.id, 1, step("done", base + 500, true), vec![])
        .await
        .expect("finish");
    create("live", base + 60_000, 6).await;
    let moved = create("moved", base + 100, 0).await;
    store
        .transition_saga(&moved.id, 1, step("taken", base + 50_000, false), vec![])
        .await
        .expect("take over");

    let ours = |listed: Vec<SagaRecord>| -> Vec<String> {
        listed
            .into_iter()
            .filter(|s| s.id.starts_with(&ns))
            .map(|s| s.id)
            .collect()
    };
    let all = store.list_stalled_sagas(now, 1000).await.expect("stalled");
    assert!(
        all.iter().all(|s| !s.finished && s.lease_until_ms < now),
        "only unfinished sagas with a lease ended before now"
    );
    assert!(
        all.windows(2)
            .all(|pair| (pair[0].lease_until_ms, &pair[0].id) < (pair[1].lease_until_ms, &pair[1].id)),
        "oldest first, each once"
    );
    let stalled = ours(all.clone());
    assert_eq!(
        stalled,
        [name("d-first"), name("b-tie-a"), name("b-tie-b"), name("a-third")]
    );
    let third_listed = all.iter().find(|s| s.id == third.id).expect("listed");
    assert_eq!(
        (third_listed.step.as_str(), third_listed.version),
        ("retry", 2),
        "listed as stored now"
    );
    assert_eq!(
        ours(store.list_stalled_sagas(now + 1, 1000).await.expect("stalled")),
        [
            name("d-first"),
            name("b-tie-a"),
            name("b-tie-b"),
            name("a-third"),
            name("c-at-now")
        ],
        "a lease ending at `now` has ended before `now + 1`"
    );
    let two = store.list_stalled_sagas(now, 2).await.expect("stalled");
    assert_eq!(two, all[..2.min(all.len())], "at most `limit`, the oldest");
    assert_eq!(store.list_stalled_sagas(now, 0).await.expect("stalled"), vec![]);

    // Tidy up: finished sagas never show again, here or in a later run's listing.
    for tail in ["d-first", "b-tie-a", "b-tie-b", "c-at-now", "live", "moved"] {
        let current = store.get_saga(&name(tail)).await.expect("get").expect("saga");
        store
            .transition_saga(&current.id, current.version, step("done", 0, true), vec![])
            .await
            .expect("finish");
    }
    store
        .transition_saga(&third.id, 2, step("done", 0, true), vec![])
        .await
        .expect("finish");
    assert_eq!(
        ours(store.list_stalled_sagas(now + 1, 1000).await.expect("stalled")),
        Vec::<String>::new()
    );
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

async fn bad_order_requests_are_refused<S: OrderStore + OutboxStore>(store: &S, ns: &str) {
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

async fn bad_saga_requests_are_refused<S: SagaStore + OutboxStore>(store: &S, ns: &str) {
    let refused =
        |result: Result<SagaRecord, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    assert!(refused(store.create_saga(saga("", 0, T0)).await), "empty id");
    assert!(matches!(
        store.get_saga("").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(refused(
        store.transition_saga("", 1, step("x", 0, false), vec![]).await
    ));
    let id = format!("{ns}-saga");
    let created = store
        .create_saga(saga(&id, now_ms() + 60_000, T0))
        .await
        .expect("create");
    assert!(
        refused(
            store
                .transition_saga(
                    &id,
                    1,
                    step("x", 0, false),
                    vec![event(&format!("{ns}-saga-ev")), event("")]
                )
                .await
        ),
        "an event without id"
    );
    assert!(refused(
        store
            .transition_saga(&id, u64::MAX, step("x", 0, false), vec![])
            .await
    ));
    assert_eq!(
        store.get_saga(&id).await.expect("get"),
        Some(created.clone()),
        "a refused transition changes nothing"
    );
    assert_eq!(pending_under(store, ns).await, vec![], "and writes no event");
    store
        .transition_saga(&id, 1, step("done", 0, true), vec![])
        .await
        .expect("finish");
}

async fn bad_key_and_outbox_requests_are_refused<S: IdempotencyStore + OutboxStore>(store: &S, ns: &str) {
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

// ---- warehouses, stock, shipments, claims -----------------------------------------------

fn warehouse(id: &str, region: &str, active: bool) -> StoredWarehouse {
    StoredWarehouse {
        id: id.to_string(),
        name: format!("Warehouse {id} — Zürich"),
        region: region.to_string(),
        latitude: 47.37,
        longitude: 8.54,
        shipping_options: vec![
            ShippingOptionRecord {
                speed: 1,
                max_days: 5,
                max_distance_km: 0,
            },
            ShippingOptionRecord {
                speed: 3,
                max_days: 0,
                max_distance_km: 50,
            },
        ],
        active,
        ..StoredWarehouse::default()
    }
}

/// A warehouse without the times the store sets.
fn timeless(warehouse: &StoredWarehouse) -> StoredWarehouse {
    StoredWarehouse {
        created_at_ms: 0,
        updated_at_ms: 0,
        ..warehouse.clone()
    }
}

fn delta(warehouse_id: &str, sku: &str, physical: i64, allocatable: i64) -> StockDelta {
    StockDelta {
        warehouse_id: warehouse_id.to_string(),
        sku: sku.to_string(),
        physical,
        allocatable,
        expected_version: None,
    }
}

fn claim(scope: &str, key: &str, fingerprint: &str) -> Claim {
    Claim {
        scope: scope.to_string(),
        key: key.to_string(),
        fingerprint: fingerprint.to_string(),
        if_taken: IfTaken::Repeat,
    }
}

fn shipment(id: &str, order_id: &str, warehouse_id: &str, created_at_ms: i64, status: i32) -> StoredShipment {
    StoredShipment {
        id: id.to_string(),
        order_id: order_id.to_string(),
        warehouse_id: warehouse_id.to_string(),
        lines: vec![ShipmentLineRecord {
            sku: format!("{order_id}-sku"),
            quantity: 2,
        }],
        status,
        ship_to: b"encoded address".to_vec(),
        shipping_speed: 2,
        promised_by_ms: created_at_ms + 86_400_000,
        created_at_ms,
        ..StoredShipment::default()
    }
}

/// (warehouse, sku, physical, allocatable) of each row.
fn stock_levels(rows: &[StockRow]) -> Vec<(String, String, i64, i64)> {
    rows.iter()
        .map(|r| (r.warehouse_id.clone(), r.sku.clone(), r.physical, r.allocatable))
        .collect()
}

fn warehouse_ids(page: &WarehousePage) -> Vec<String> {
    page.warehouses.iter().map(|w| w.id.clone()).collect()
}

fn shipment_ids(shipments: &[StoredShipment]) -> Vec<String> {
    shipments.iter().map(|s| s.id.clone()).collect()
}

pub async fn warehouse_upsert_get_and_list_by_region<S: WarehouseStore>(store: &S) {
    let ns = namespace("wh");
    let region = format!("{ns}-eu");
    let (stored, created) = store
        .upsert_warehouse(warehouse(&format!("{ns}-b"), &region, true))
        .await
        .expect("create");
    assert!(created);
    assert_eq!(timeless(&stored), warehouse(&format!("{ns}-b"), &region, true));
    assert!(stored.created_at_ms > 0 && stored.updated_at_ms >= stored.created_at_ms);
    assert_eq!(
        store.get_warehouse(&stored.id).await.expect("get"),
        Some(stored.clone())
    );

    let mut moved = warehouse(&stored.id, &region, false);
    moved.name = "renamed".into();
    let (again, created) = store.upsert_warehouse(moved.clone()).await.expect("replace");
    assert!(!created, "a second upsert replaces");
    assert_eq!(again.created_at_ms, stored.created_at_ms, "created_at is kept");
    assert_eq!(timeless(&again), moved);
    assert_eq!(store.get_warehouse(&stored.id).await.expect("get"), Some(again));

    for id in ["a", "c", "d"] {
        store
            .upsert_warehouse(warehouse(&format!("{ns}-{id}"), &region, true))
            .await
            .expect("create");
    }
    store
        .upsert_warehouse(warehouse(&format!("{ns}-e"), &format!("{ns}-us"), true))
        .await
        .expect("other region");
    assert_eq!(store.get_warehouse(&format!("{ns}-zz")).await.expect("get"), None);

    let active = store
        .list_warehouses(Some(&region), false, None, 500)
        .await
        .expect("list");
    assert_eq!(
        warehouse_ids(&active),
        [format!("{ns}-a"), format!("{ns}-c"), format!("{ns}-d")],
        "active ones of the region, by id"
    );
    assert_eq!(active.next_cursor, None);
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_warehouses(Some(&region), true, cursor.as_deref(), 1)
            .await
            .expect("page");
        assert!(page.warehouses.len() <= 1);
        listed.extend(warehouse_ids(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        listed,
        ["a", "b", "c", "d"].map(|id| format!("{ns}-{id}")),
        "pages of one, inactive included, each once"
    );
}

pub async fn warehouse_change_applies_everything_once_and_repeats_answer_the_first<S>(store: &S)
where
    S: WarehouseStore + OutboxStore,
{
    let ns = namespace("wh-change");
    let (wh, sku_a, sku_b) = (format!("{ns}-w"), format!("{ns}-a"), format!("{ns}-b"));
    let receipt = WarehouseChange {
        claims: vec![claim("receipt", &format!("{ns}-r1"), "fp-1")],
        stock: vec![
            delta(&wh, &sku_a, 10, 10),
            delta(&wh, &sku_b, 4, 4),
            delta(&wh, &sku_a, 2, 2),
        ],
        outbox: vec![event(&format!("{ns}-ev-1"))],
        ..WarehouseChange::default()
    };
    let ChangeOutcome::Applied { stock, shipments } = store
        .apply_warehouse_change(receipt.clone())
        .await
        .expect("apply")
    else {
        panic!("a receipt applies");
    };
    assert!(shipments.is_empty());
    assert_eq!(
        stock_levels(&stock),
        [
            (wh.clone(), sku_a.clone(), 12, 12),
            (wh.clone(), sku_b.clone(), 4, 4)
        ],
        "one row per touched pair, deltas on one row added up, in order of first appearance"
    );
    assert!(stock.iter().all(|row| row.version == 1 && row.updated_at_ms > 0));
    assert_eq!(
        store
            .get_stock(&[sku_b.clone(), sku_a.clone(), sku_a.clone()], Some(&wh))
            .await
            .expect("read"),
        [stock[0].clone(), stock[1].clone()],
        "rows by SKU"
    );
    assert_eq!(ids_of(&pending_under(store, &ns).await), [format!("{ns}-ev-1")]);
    let record = store
        .get_claim("receipt", &format!("{ns}-r1"))
        .await
        .expect("claim")
        .expect("taken");
    assert_eq!((record.fingerprint.as_str(), &record.stock), ("fp-1", &stock));

    // A repeat (even with other contents) writes nothing and answers the first claim.
    let mut repeat = receipt.clone();
    repeat.claims[0].fingerprint = "fp-2".into();
    repeat.outbox = vec![event(&format!("{ns}-ev-2"))];
    assert_eq!(
        store.apply_warehouse_change(repeat).await.expect("repeat"),
        ChangeOutcome::Repeated(record.clone())
    );
    assert_eq!(
        store
            .get_stock(std::slice::from_ref(&sku_a), None)
            .await
            .expect("read"),
        [stock[0].clone()],
        "no second receipt"
    );
    assert_eq!(ids_of(&pending_under(store, &ns).await), [format!("{ns}-ev-1")]);

    // Allocation: a shipment created with its units, under an event claim; an Ignore claim
    // that is already taken does not stop it.
    let order_id = format!("{ns}-o1");
    let created = shipment(&format!("{ns}-s1"), &order_id, &wh, T0, 1);
    let allocate = WarehouseChange {
        claims: vec![
            claim("event:test", &format!("{ns}-e1"), ""),
            Claim {
                if_taken: IfTaken::Ignore,
                ..claim("receipt", &format!("{ns}-r1"), "marker")
            },
        ],
        stock: vec![delta(&wh, &sku_a, 0, -7)],
        shipments: vec![ShipmentWrite::Create(created.clone())],
        outbox: vec![event(&format!("{ns}-ev-3"))],
    };
    let ChangeOutcome::Applied { stock, shipments } =
        store.apply_warehouse_change(allocate).await.expect("allocate")
    else {
        panic!("an allocation within stock applies");
    };
    assert_eq!(stock_levels(&stock), [(wh.clone(), sku_a.clone(), 12, 5)]);
    assert_eq!(stock[0].version, 2);
    assert_eq!(shipments.len(), 1);
    assert_eq!(
        (shipments[0].version, shipments[0].created_at_ms),
        (1, T0),
        "created at version 1, with the caller's creation time"
    );
    assert_eq!(
        StoredShipment {
            version: 0,
            updated_at_ms: 0,
            ..shipments[0].clone()
        },
        created
    );
    assert_eq!(
        store.get_shipment(&created.id).await.expect("get"),
        Some(shipments[0].clone())
    );
    assert_eq!(
        store
            .get_claim("receipt", &format!("{ns}-r1"))
            .await
            .expect("claim")
            .map(|c| c.fingerprint),
        Some("fp-1".into()),
        "an Ignore claim keeps the record it found"
    );

    // Shipping: an update at the read version; the units leave physical stock.
    let shipped = StoredShipment {
        status: 3,
        carrier: "dhl".into(),
        tracking_number: "JD0001".into(),
        shipped_at_ms: T0 + 5,
        ..shipments[0].clone()
    };
    let ChangeOutcome::Applied { stock, shipments } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("ship", &created.id, "")],
            stock: vec![delta(&wh, &sku_a, -7, 0)],
            shipments: vec![ShipmentWrite::Update {
                shipment: shipped.clone(),
                expected_version: 1,
            }],
            ..WarehouseChange::default()
        })
        .await
        .expect("ship")
    else {
        panic!("a shipment at its version updates");
    };
    assert_eq!(stock_levels(&stock), [(wh.clone(), sku_a.clone(), 5, 5)]);
    assert_eq!(
        (
            shipments[0].version,
            shipments[0].status,
            shipments[0].created_at_ms
        ),
        (2, 3, T0)
    );
    assert_eq!(shipments[0].tracking_number, "JD0001");
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-1"), format!("{ns}-ev-3")]
    );
    send_all_under(store, &ns).await;
}

pub async fn warehouse_refused_change_writes_nothing<S>(store: &S)
where
    S: WarehouseStore + OutboxStore,
{
    let ns = namespace("wh-refuse");
    let (wh, sku, other_sku) = (format!("{ns}-w"), format!("{ns}-a"), format!("{ns}-b"));
    let ChangeOutcome::Applied { stock, .. } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("receipt", &format!("{ns}-r1"), "")],
            stock: vec![delta(&wh, &sku, 3, 3)],
            ..WarehouseChange::default()
        })
        .await
        .expect("stock up")
    else {
        panic!("stock up applies");
    };
    let stored = stock[0].clone();
    let s1 = shipment(&format!("{ns}-s1"), &format!("{ns}-o"), &wh, T0, 1);
    let over = WarehouseChange {
        claims: vec![claim("route", &format!("{ns}-o"), "")],
        stock: vec![delta(&wh, &other_sku, 5, 5), delta(&wh, &sku, 0, -4)],
        shipments: vec![ShipmentWrite::Create(s1.clone())],
        outbox: vec![event(&format!("{ns}-ev-1"))],
    };
    assert_eq!(
        store.apply_warehouse_change(over.clone()).await.expect("apply"),
        ChangeOutcome::Refused(Refusal::Stock(stored.clone())),
        "more than allocatable: refused with the row as stored"
    );
    let version_moved = WarehouseChange {
        stock: vec![StockDelta {
            expected_version: Some(7),
            ..delta(&wh, &sku, 1, 1)
        }],
        ..over.clone()
    };
    assert_eq!(
        store.apply_warehouse_change(version_moved).await.expect("apply"),
        ChangeOutcome::Refused(Refusal::Stock(stored.clone())),
        "a row not at the expected version"
    );
    let wrong_version = WarehouseChange {
        claims: vec![claim("route", &format!("{ns}-o"), "")],
        stock: vec![delta(&wh, &other_sku, 5, 5)],
        shipments: vec![ShipmentWrite::Update {
            shipment: s1.clone(),
            expected_version: 1,
        }],
        outbox: vec![event(&format!("{ns}-ev-2"))],
    };
    assert_eq!(
        store.apply_warehouse_change(wrong_version).await.expect("apply"),
        ChangeOutcome::Refused(Refusal::Shipment {
            id: s1.id.clone(),
            actual: 0
        }),
        "an update of a shipment that does not exist"
    );
    assert_eq!(
        store.get_claim("route", &format!("{ns}-o")).await.expect("claim"),
        None
    );
    assert_eq!(
        store
            .get_stock(std::slice::from_ref(&other_sku), None)
            .await
            .expect("read"),
        vec![],
        "no delta of a refused change stays"
    );
    assert_eq!(
        store
            .get_stock(std::slice::from_ref(&sku), None)
            .await
            .expect("read"),
        std::slice::from_ref(&stored)
    );
    assert_eq!(store.get_shipment(&s1.id).await.expect("get"), None);
    assert_eq!(
        pending_under(store, &ns).await,
        vec![],
        "no event of a refused change"
    );

    // A loss that keeps the allocated units allocated cannot take more than the rest.
    let ChangeOutcome::Applied { .. } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("route", &format!("{ns}-other"), "")],
            stock: vec![delta(&wh, &sku, 0, -3)],
            ..WarehouseChange::default()
        })
        .await
        .expect("allocate all")
    else {
        panic!("allocating what is there applies");
    };
    assert!(
        matches!(
            store
                .apply_warehouse_change(WarehouseChange {
                    stock: vec![delta(&wh, &sku, -1, -1)],
                    ..WarehouseChange::default()
                })
                .await
                .expect("apply"),
            ChangeOutcome::Refused(Refusal::Stock(StockRow {
                physical: 3,
                allocatable: 0,
                ..
            }))
        ),
        "physical cannot drop below what is allocated"
    );

    // The refused change applies once the units are there; a second create of its
    // shipment is refused.
    store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("receipt", &format!("{ns}-r2"), "")],
            stock: vec![delta(&wh, &sku, 4, 4)],
            ..WarehouseChange::default()
        })
        .await
        .expect("receive");
    assert!(matches!(
        store.apply_warehouse_change(over).await.expect("apply"),
        ChangeOutcome::Applied { .. }
    ));
    assert_eq!(
        store
            .apply_warehouse_change(WarehouseChange {
                shipments: vec![ShipmentWrite::Create(s1.clone())],
                ..WarehouseChange::default()
            })
            .await
            .expect("apply"),
        ChangeOutcome::Refused(Refusal::Shipment {
            id: s1.id.clone(),
            actual: 1
        }),
        "a create of an existing id"
    );
    send_all_under(store, &ns).await;
}

pub async fn warehouse_concurrent_allocations_from_12_tasks_never_share_units<S>(store: &S)
where
    S: WarehouseStore + OutboxStore + Clone + 'static,
{
    let ns = namespace("wh-race");
    let (wh, sku) = (format!("{ns}-w"), format!("{ns}-a"));
    store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("receipt", &format!("{ns}-r"), "")],
            stock: vec![delta(&wh, &sku, 5, 5)],
            ..WarehouseChange::default()
        })
        .await
        .expect("stock up");
    let mut tasks = JoinSet::new();
    for task in 0..12_i64 {
        let (store, ns, wh, sku) = (store.clone(), ns.clone(), wh.clone(), sku.clone());
        tasks.spawn(async move {
            let order_id = format!("{ns}-o{task}");
            // Even tasks want 1 unit, odd ones 2: 18 wanted, 5 there.
            let units = 1 + task % 2;
            let change = WarehouseChange {
                claims: vec![claim("route", &order_id, "")],
                stock: vec![delta(&wh, &sku, 0, -units)],
                shipments: vec![ShipmentWrite::Create(StoredShipment {
                    lines: vec![ShipmentLineRecord {
                        sku: sku.clone(),
                        quantity: units,
                    }],
                    ..shipment(&format!("{ns}-s{task}"), &order_id, &wh, T0, 1)
                })],
                outbox: vec![event(&format!("{ns}-ev-{task:02}"))],
            };
            store
                .apply_warehouse_change(change)
                .await
                .map(|outcome| (units, outcome))
        });
    }
    let (mut allocated, mut winners) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.expect("task").expect("apply") {
            (units, ChangeOutcome::Applied { .. }) => {
                allocated += units;
                winners += 1;
            }
            (units, ChangeOutcome::Refused(Refusal::Stock(row))) => {
                assert!(row.allocatable < units, "refused only when short: {row:?}");
            }
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    let rows = store.get_stock(&[sku], Some(&wh)).await.expect("read");
    assert_eq!(rows[0].physical, 5);
    assert_eq!(rows[0].allocatable, 5 - allocated, "every unit allocated once");
    assert!((4..=5).contains(&allocated), "the stock is used up: {allocated}");
    assert_eq!(
        pending_under(store, &ns).await.len(),
        winners,
        "one event per winning allocation, none for the losers"
    );
    send_all_under(store, &ns).await;
}

pub async fn warehouse_shipments_list_by_order_and_by_warehouse<S: WarehouseStore>(store: &S) {
    let ns = namespace("wh-list");
    let wh = format!("{ns}-w");
    let order_a = format!("{ns}-oa");
    let mut writes = Vec::new();
    for (i, (created_at, status)) in [(T0 + 3, 1), (T0 + 1, 3), (T0 + 2, 1), (T0 + 2, 5), (T0 + 5, 2)]
        .into_iter()
        .enumerate()
    {
        let order_id = if i < 2 {
            order_a.clone()
        } else {
            format!("{ns}-o{i}")
        };
        writes.push(ShipmentWrite::Create(shipment(
            &format!("{ns}-s{i}"),
            &order_id,
            &wh,
            created_at,
            status,
        )));
    }
    writes.push(ShipmentWrite::Create(shipment(
        &format!("{ns}-x"),
        &order_a,
        &format!("{ns}-other"),
        T0,
        1,
    )));
    let ChangeOutcome::Applied { .. } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("route", &order_a, "")],
            shipments: writes,
            ..WarehouseChange::default()
        })
        .await
        .expect("create")
    else {
        panic!("creates apply");
    };
    assert_eq!(
        shipment_ids(&store.list_shipments_by_order(&order_a).await.expect("by order")),
        [format!("{ns}-x"), format!("{ns}-s1"), format!("{ns}-s0")],
        "an order's shipments oldest first, across warehouses"
    );
    assert_eq!(
        store
            .list_shipments_by_order(&format!("{ns}-none"))
            .await
            .expect("none"),
        vec![]
    );

    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_shipments_by_warehouse(&wh, &[], cursor.as_deref(), 2)
            .await
            .expect("page");
        assert!(page.shipments.len() <= 2);
        listed.extend(shipment_ids(&page.shipments));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        listed,
        ["s1", "s2", "s3", "s0", "s4"].map(|s| format!("{ns}-{s}")),
        "by creation time, ties by id, each once"
    );
    let open = store
        .list_shipments_by_warehouse(&wh, &[2, 1], None, 500)
        .await
        .expect("open ones");
    assert_eq!(
        shipment_ids(&open.shipments),
        ["s2", "s0", "s4"].map(|s| format!("{ns}-{s}"))
    );
    assert_eq!(open.next_cursor, None);
}

pub async fn warehouse_bad_requests_are_refused<S: WarehouseStore>(store: &S) {
    let ns = namespace("wh-bad");
    let invalid =
        |result: Result<ChangeOutcome, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    assert!(matches!(
        store.upsert_warehouse(warehouse("", "eu", true)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store
            .upsert_warehouse(warehouse(&format!("{ns}-w"), "", true))
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    let mut nan = warehouse(&format!("{ns}-w"), "eu", true);
    nan.latitude = f64::NAN;
    assert!(matches!(
        store.upsert_warehouse(nan).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list_warehouses(None, false, None, 0).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list_warehouses(None, false, Some("garbage"), 5).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_stock(&[], None).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list_shipments_by_warehouse("", &[], None, 5).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_claim("", "k").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                claims: vec![claim("route", "", "")],
                ..WarehouseChange::default()
            })
            .await
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                stock: vec![delta("", "sku", 1, 1)],
                ..WarehouseChange::default()
            })
            .await
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                shipments: vec![ShipmentWrite::Create(shipment("", "o", "w", T0, 1))],
                ..WarehouseChange::default()
            })
            .await
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                outbox: vec![OutboxMessage::default()],
                ..WarehouseChange::default()
            })
            .await
    ));
}
