//! The cart purge on SQLite: chunked deletes, so one purge never holds the write lock long.

use super::{SqliteStore, sqlite_error};
use crate::StoreError;
use crate::cart_purge::CartPurge;

/// Rows one delete statement removes; the purge loops until a chunk comes back short.
const PURGE_CHUNK: i64 = 5000;

impl CartPurge for SqliteStore {
    async fn purge_carts(&self, updated_before_ms: i64) -> Result<u64, StoreError> {
        let mut purged = 0u64;
        loop {
            let deleted = self
                .write(move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM carts WHERE owner IN
                           (SELECT owner FROM carts WHERE updated_at_ms < ?1 LIMIT ?2)",
                    )
                    .and_then(|mut statement| statement.execute([updated_before_ms, PURGE_CHUNK]))
                    .map_err(sqlite_error)
                })
                .await?;
            purged += deleted as u64;
            if (deleted as i64) < PURGE_CHUNK {
                return Ok(purged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;
    use crate::cart_purge::CartPurge;
    use crate::carts::{CartStore, StoredCart};

    fn cart(owner: &str, version: u64, updated_at_ms: i64) -> StoredCart {
        StoredCart {
            owner: owner.into(),
            version,
            updated_at_ms,
            ..StoredCart::default()
        }
    }

    #[tokio::test]
    async fn sqlite_purge_carts_deletes_only_carts_untouched_since_the_cutoff() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        store.save_cart(cart("s:old", 3, 1_000)).await.expect("save");
        store.save_cart(cart("s:gone", 2, 1_500)).await.expect("save");
        store.delete_cart("s:gone").await.expect("delete");
        store.save_cart(cart("c:fresh", 1, 5_000)).await.expect("save");
        store.save_cart(cart("s:edge", 1, 2_000)).await.expect("save");

        assert_eq!(
            store.purge_carts(2_000).await.expect("purge"),
            2,
            "old cart and old tombstone"
        );
        assert_eq!(store.load_cart("s:old").await.expect("load"), None);
        assert!(store.load_cart("c:fresh").await.expect("load").is_some());
        assert!(
            store.load_cart("s:edge").await.expect("load").is_some(),
            "cut-off is exclusive"
        );
        // The purged owner starts again from any version.
        store.save_cart(cart("s:old", 1, 6_000)).await.expect("save");
        assert_eq!(
            store.load_cart("s:old").await.expect("load").map(|c| c.version),
            Some(1)
        );
        assert_eq!(store.purge_carts(2_000).await.expect("purge"), 0);
    }
}
