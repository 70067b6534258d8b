//! CatalogService: what a SKU is and what it costs.
//!
//! The durable store (`holdfast-store`: SQLite or ScyllaDB) is the source of truth. Reads are
//! cache-aside in Redis for five minutes; an upsert leaves a versioned tombstone so no reader
//! can put an older product back, and concurrent misses of one SKU share one store read.

pub mod cache;
pub mod convert;
pub mod error;
pub mod search;
pub mod service;
pub mod validate;

pub use cache::ProductCache;
pub use error::CatalogError;
pub use service::Catalog;

use holdfast_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use holdfast_store::ProductStore;

/// Loads the cache scripts and builds the gRPC service over `store` and `redis`, without
/// search (Search answers UNIMPLEMENTED) and with no relay woken after upserts.
pub async fn start<S>(
    redis: fred::prelude::Pool,
    store: S,
) -> Result<CatalogServiceServer<Catalog<S>>, CatalogError>
where
    S: ProductStore + Clone + 'static,
{
    start_with(redis, store, CatalogOptions::default()).await
}

/// What the catalog is wired to besides Redis and the store.
#[derive(Clone, Default)]
pub struct CatalogOptions {
    /// The search index answering `Search`; `None` answers UNIMPLEMENTED.
    pub search: Option<holdfast_search::SearchHandle>,
    /// Notified after each upsert committed its `catalog.product_upserted` outbox row, so
    /// the relay draining this store's outbox publishes it at once.
    pub outbox_wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Region stamped on the events (empty: "local").
    pub region: String,
}

/// [`start`] with search and the outbox wake-up.
pub async fn start_with<S>(
    redis: fred::prelude::Pool,
    store: S,
    options: CatalogOptions,
) -> Result<CatalogServiceServer<Catalog<S>>, CatalogError>
where
    S: ProductStore + Clone + 'static,
{
    cache::load_scripts(redis.next()).await?;
    Ok(CatalogServiceServer::new(
        Catalog::new(ProductCache::new(redis, store)).with_options(options),
    ))
}
