//! Carts: saves, loads and deletes ordered by version; text round trips.

use std::collections::BTreeMap;

use tokio::task::JoinSet;

use crate::{CartPurge, CartStore, DEFAULT_CART_TTL, Product, ProductStore, StoredCart, StoredCartLine};

use super::{
    namespace,
    products::{all_pages, content},
};

pub(super) fn cart(owner: &str, version: u64, lines: usize) -> StoredCart {
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
        // Changed just now: a cart untouched for the cart TTL is gone (see
        // `cart_untouched_for_the_ttl_is_gone`).
        updated_at_ms: recent() + version as i64,
    }
}

/// One recent time for every cart the checks build (so two builds of a cart are equal), far
/// inside the cart TTL for any run of the suite.
fn recent() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(crate::now_ms)
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
        updated_at_ms: recent(),
    };
    store.save_cart(saved.clone()).await.expect("save");
    assert_eq!(store.load_cart(&owner).await.expect("load"), Some(saved));
}

/// A cart nobody changed for the cart TTL ([`DEFAULT_CART_TTL`]) is gone, counted from its
/// `updated_at_ms`: SQLite deletes it when purged, ScyllaDB expires the row itself (its
/// purge deletes nothing). A cart changed since stays. The check purges with the cut-off
/// the cart service uses and polls until the expired carts are gone, bounded.
pub async fn cart_untouched_for_the_ttl_is_gone<S: CartStore + CartPurge>(store: &S) {
    let ns = namespace("cart-ttl");
    let ttl_ms = i64::try_from(DEFAULT_CART_TTL.as_millis()).expect("ttl fits");
    let at = |owner: &str, updated_at_ms: i64| StoredCart {
        updated_at_ms,
        ..cart(owner, 1, 2)
    };
    let now = crate::now_ms();
    let stale = at(&format!("{ns}-s:stale"), now - ttl_ms - 60_000);
    // Two seconds of its TTL left: present now, gone once they pass.
    let ending = at(&format!("{ns}-s:ending"), now - ttl_ms + 2_000);
    let fresh = at(&format!("{ns}-c:fresh"), now);
    for cart in [&stale, &ending, &fresh] {
        store.save_cart(cart.clone()).await.expect("save");
    }
    assert_eq!(
        store.load_cart(&ending.owner).await.expect("load"),
        Some(ending.clone()),
        "a cart within its ttl is kept"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        store.purge_carts(crate::now_ms() - ttl_ms).await.expect("purge");
        let stale_left = store.load_cart(&stale.owner).await.expect("load");
        let ending_left = store.load_cart(&ending.owner).await.expect("load");
        if stale_left.is_none() && ending_left.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carts past their ttl still stored: {stale_left:?} {ending_left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        crate::now_ms() >= ending.updated_at_ms + ttl_ms,
        "a cart went before its ttl was over"
    );
    assert_eq!(
        store.load_cart(&fresh.owner).await.expect("load"),
        Some(fresh),
        "a cart changed just now stays"
    );
}
