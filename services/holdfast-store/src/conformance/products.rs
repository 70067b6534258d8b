//! Products: writes, conditional updates, category listings, batch gets.

use std::collections::BTreeMap;

use tokio::task::JoinSet;

use crate::{Product, ProductPage, ProductStore, StoreError};

use super::namespace;

pub(super) fn sample(sku: &str, category: &str) -> Product {
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
pub(super) fn content(product: &Product) -> Product {
    Product {
        version: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
        ..product.clone()
    }
}

/// Every page of `category` at `page_size`, following cursors to the end.
pub(super) async fn all_pages<S: ProductStore>(
    store: &S,
    category: &str,
    page_size: u32,
) -> Vec<ProductPage> {
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

pub(super) fn listed_skus(pages: &[ProductPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.products.iter().map(|p| p.sku.clone()))
        .collect()
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
