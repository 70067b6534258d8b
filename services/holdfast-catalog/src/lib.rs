//! CatalogService: what a SKU is and what it costs.
//!
//! The durable store (`holdfast-store`: SQLite or ScyllaDB) is the source of truth. Reads are
//! cache-aside in Redis for five minutes; an upsert leaves a versioned tombstone so no reader
//! can put an older product back, and concurrent misses of one SKU share one store read.

pub mod cache;
pub mod convert;
pub mod error;
pub mod service;
pub mod validate;

pub use cache::ProductCache;
pub use error::CatalogError;
pub use service::Catalog;

use futures::future::BoxFuture;
use holdfast_platform::{Context, Needs, Service, ServiceParts};
use holdfast_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use holdfast_store::ProductStore;

/// Loads the cache scripts and builds the gRPC service over `store` and `redis`.
pub async fn start<S>(
    redis: fred::prelude::Pool,
    store: S,
) -> Result<CatalogServiceServer<Catalog<S>>, CatalogError>
where
    S: ProductStore + Clone + 'static,
{
    cache::load_scripts(redis.next()).await?;
    Ok(CatalogServiceServer::new(Catalog::new(ProductCache::new(
        redis, store,
    ))))
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

    /// Products in the store, cached in Redis; no events, no background work.
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
        Box::pin(async move {
            let service = start(ctx.redis("catalog")?, ctx.store("catalog")?).await?;
            Ok(ServiceParts::new("catalog", service))
        })
    }
}
