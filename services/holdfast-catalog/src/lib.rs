//! CatalogService: what a SKU is and what it costs.
//!
//! The durable store (`holdfast-store`: SQLite or ScyllaDB) is the source of truth. Reads are
//! cache-aside in Redis for five minutes; an upsert leaves a versioned tombstone so no reader
//! can put an older product back, and concurrent misses of one SKU share one store read.

pub mod authz;
pub mod cache;
pub mod convert;
pub mod error;
pub mod search;
pub mod service;
pub mod validate;

pub use cache::ProductCache;
pub use error::CatalogError;
pub use service::Catalog;

use std::sync::Arc;

use futures::future::BoxFuture;
use holdfast_platform::{Context, Needs, Service, ServiceParts};
use holdfast_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use holdfast_search::tantivy_index::Opened;
use holdfast_search::{Indexer, IndexerOptions, SearchHandle, SearchIndex, TantivyIndex};
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
    cache::start_epoch(redis.next()).await?;
    Ok(CatalogServiceServer::new(
        Catalog::new(ProductCache::new(redis, store)).with_options(options),
    ))
}

/// The catalog's section of the command line (none of its own flags yet).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CatalogArgs {}

impl<S> Service<S> for CatalogArgs
where
    S: ProductStore + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "catalog"
    }

    fn needs(&self) -> Needs {
        Needs {
            redis: true,
            store: true,
        }
    }

    /// Products in the store, cached in Redis; every upsert announces itself through the
    /// store's outbox (published by the process's relay); `Search` answers from this
    /// replica's index under `<data-dir>/search-index`, kept current by its indexer.
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
        Box::pin(async move {
            let store = ctx.store("catalog")?;
            let (index, opened) = TantivyIndex::open(&ctx.data_dir.join("search-index"))
                .map_err(|e| anyhow::anyhow!("search index: {e}"))?;
            let index: Arc<dyn SearchIndex> = Arc::new(index);
            // One index per replica, so one consumer group per replica (on Kafka).
            let replica = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
            let indexer = Indexer::start(
                store.clone(),
                Arc::clone(&index),
                opened == Opened::Created,
                &ctx.bus_config,
                IndexerOptions {
                    group: format!("holdfast-search-{replica}"),
                    ..IndexerOptions::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("search: consuming catalog and inventory events: {e}"))?;
            let options = CatalogOptions {
                search: Some(SearchHandle {
                    index,
                    lag: Arc::clone(&indexer.lag),
                }),
                outbox_wake: Some(Arc::clone(&ctx.outbox_written)),
                region: ctx.region.clone(),
            };
            let service = start_with(ctx.redis("catalog")?, store, options).await?;
            Ok(ServiceParts::new("catalog", service)
                .authz(&authz::TABLE)
                .writes_store_outbox()
                .keep(indexer))
        })
    }
}
