//! Cache-aside over the store: Redis hash `cat:{sku}` holds the encoded product and its
//! version for five minutes. Upserts leave a versioned tombstone; concurrent misses of one
//! SKU in this process share one store read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::{Client, ClientLike, HashesInterface, KeysInterface, Pool, Value};
use fred::types::SetOptions;
use holdfast_proto::catalog::v1::Product as WireProduct;
use holdfast_store::{Product, ProductStore};
use prost::Message;

use crate::convert;
use crate::error::CatalogError;

/// How long a cached product (or tombstone) lives.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// The catalog's scripts.
pub mod scripts {
    holdfast_platform::lua_scripts! {
        FILL => "catalog_cache_fill.lua",
        INVALIDATE => "catalog_cache_invalidate.lua",
    }
}

/// Loads the scripts on every primary.
pub async fn load_scripts(client: &Client) -> Result<(), CatalogError> {
    Ok(holdfast_platform::redis::load_scripts(client, &scripts::all()).await?)
}

/// The catalog's epoch: a token replaced by every invalidation on a standalone Redis, read by
/// the cart's view scripts (`lua/lib/cart_view.lua`) to know whether the products it kept
/// are still current.
pub const EPOCH_KEY: &str = "cat:epoch";

/// Starts the catalog's epoch where there is none (a first start, or a Redis that lost it),
/// on a standalone Redis: the cart keeps products only under an epoch, so without one it
/// would read them on every view until the first upsert. An epoch already there stays (`NX`):
/// copies kept under it are still current.
pub async fn start_epoch(client: &Client) -> Result<(), CatalogError> {
    if client.is_clustered() {
        return Ok(());
    }
    let _: Value = client
        .set(EPOCH_KEY, new_epoch(), None, Some(SetOptions::NX), false)
        .await?;
    Ok(())
}

/// An epoch never used before: a reader that kept products under an older one (or under one
/// a flushed Redis once held) can never take it for its own.
fn new_epoch() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn cache_key(sku: &str) -> String {
    format!("cat:{{{sku}}}")
}

/// The cache entry's `s` field: what the cart's one-round-trip AddItem reads instead of
/// decoding the product (`lua/cart_add_viewed.lua`): `1|<price_minor>|<currency>` for a product
/// that may be sold, `0` for one that may not, and empty (no field: the cart asks the catalog)
/// for a price the cart's line format cannot hold, so that the cart refuses it as it would on
/// a miss.
fn sellable(product: &Product) -> String {
    let (price, currency) = (product.price_minor, product.currency.as_str());
    if !product.active {
        "0".to_string()
    } else if price >= 0 && !currency.is_empty() && !currency.contains('|') {
        format!("1|{price}|{currency}")
    } else {
        String::new()
    }
}

fn ttl_ms() -> i64 {
    CACHE_TTL.as_millis() as i64
}

/// Products by SKU through the cache.
#[derive(Clone)]
pub struct ProductCache<S> {
    redis: Pool,
    store: S,
    // One async lock per SKU being loaded: concurrent misses queue behind the first, then
    // find Redis warm. Entries are dropped once nobody waits on them.
    loading: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<S: ProductStore + Clone + 'static> ProductCache<S> {
    /// A cache over `store`.
    pub fn new(redis: Pool, store: S) -> Self {
        Self {
            redis,
            store,
            loading: Arc::default(),
        }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// `(product on a hit, or None on a miss)`; tombstones and undecodable entries are misses.
    async fn cached(&self, sku: &str) -> Result<Option<Product>, CatalogError> {
        let fields: Vec<Value> = self.redis.next().hmget(cache_key(sku), vec!["v", "p"]).await?;
        // fred hands back valid UTF-8 as a string and anything else as bytes: take either.
        let Some(payload) = fields.get(1).and_then(Value::as_bytes) else {
            return Ok(None);
        };
        Ok(WireProduct::decode(payload).ok().map(convert::from_wire_cached))
    }

    /// One product, from Redis or, once per SKU at a time, from the store.
    pub async fn get(&self, sku: &str) -> Result<Option<Product>, CatalogError> {
        if let Some(hit) = self.cached(sku).await? {
            return Ok(Some(hit));
        }
        let lock = {
            let mut loading = self
                .loading
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loading.entry(sku.to_string()).or_default().clone()
        };
        let result = async {
            let _turn = lock.lock().await;
            // Whoever held the lock before us has filled Redis (or an upsert has left a
            // tombstone): look again before going to the store.
            if let Some(hit) = self.cached(sku).await? {
                return Ok(Some(hit));
            }
            let product = self.store.get_product(sku).await?;
            if let Some(product) = &product {
                self.fill(product).await?;
            }
            Ok(product)
        }
        .await;
        let mut loading = self
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the map and this call hold it: nobody else is waiting.
        if Arc::strong_count(&lock) <= 2 {
            loading.remove(sku);
        }
        result
    }

    /// Many products: hits from Redis, the misses in one store call. Request order, unknown
    /// SKUs left out.
    pub async fn get_many(&self, skus: &[String]) -> Result<Vec<Product>, CatalogError> {
        let cached = futures::future::try_join_all(skus.iter().map(|sku| self.cached(sku))).await?;
        let misses: Vec<String> = skus
            .iter()
            .zip(&cached)
            .filter(|(_, hit)| hit.is_none())
            .map(|(sku, _)| sku.clone())
            .collect();
        let loaded = if misses.is_empty() {
            Vec::new()
        } else {
            self.store.get_products(&misses).await?
        };
        for product in &loaded {
            self.fill(product).await?;
        }
        let mut loaded: HashMap<String, Product> = loaded.into_iter().map(|p| (p.sku.clone(), p)).collect();
        Ok(skus
            .iter()
            .zip(cached)
            .filter_map(|(sku, hit)| hit.or_else(|| loaded.remove(sku)))
            .collect())
    }

    async fn fill(&self, product: &Product) -> Result<(), CatalogError> {
        let payload = convert::to_wire(product).encode_to_vec();
        let _: i64 = scripts::FILL
            .run(
                self.redis.next(),
                vec![cache_key(&product.sku)],
                vec![
                    Value::from(product.version as i64),
                    Value::from(payload.as_slice()),
                    Value::from(ttl_ms()),
                    Value::from(sellable(product)),
                ],
            )
            .await?;
        Ok(())
    }

    /// After an upsert: no reader, here or on another instance, sees an older version again.
    /// On a standalone Redis the catalog's epoch ([`EPOCH_KEY`]) is replaced in the same
    /// script, so a cart that kept products it read under the old epoch reads them again.
    pub async fn invalidate(&self, product: &Product) -> Result<(), CatalogError> {
        let client = self.redis.next();
        let mut keys = vec![cache_key(&product.sku)];
        let mut args = vec![Value::from(product.version as i64), Value::from(ttl_ms())];
        // A cluster runs no cart view script (docs/cart.md), and the epoch's key is in
        // another slot than the entry's.
        if !client.is_clustered() {
            keys.push(EPOCH_KEY.to_string());
            args.push(Value::from(new_epoch()));
        }
        let _: i64 = scripts::INVALIDATE.run(client, keys, args).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(active: bool, price_minor: i64, currency: &str) -> Product {
        Product {
            sku: "MUG".into(),
            title: "Mug".into(),
            description: String::new(),
            price_minor,
            currency: currency.into(),
            category: "kitchen".into(),
            brand: String::new(),
            attributes: Default::default(),
            active,
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    /// The `s` field the cart's one-script AddItem reads: the price and currency of a product
    /// that may be sold, `0` for one that may not, and none where the cart's line format could
    /// not hold the price (the cart then asks the catalog and refuses it as it always has).
    #[test]
    fn the_sellable_field_says_what_the_cart_may_snapshot() {
        assert_eq!(sellable(&product(true, 1299, "EUR")), "1|1299|EUR");
        assert_eq!(sellable(&product(true, 0, "JPY")), "1|0|JPY");
        assert_eq!(sellable(&product(false, 1299, "EUR")), "0");
        assert_eq!(sellable(&product(true, -5, "EUR")), "");
        assert_eq!(sellable(&product(true, 5, "E|R")), "");
        assert_eq!(sellable(&product(true, 5, "")), "");
    }
}
