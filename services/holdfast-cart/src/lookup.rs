//! Current prices and stock of a cart's SKUs. Where the catalog's cache and inventory's
//! buckets live in the cart's Redis, `cart_view.lua` reads them with the cart in one round
//! trip ([`Known::from_found`]); whatever it could not find there (a catalog cache miss, a SKU
//! inventory keeps elsewhere, a Redis Cluster) is asked from the catalog and inventory over
//! gRPC ([`Known::complete`]), as every lookup was before.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use holdfast_platform::telemetry::TracePropagation;
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{BatchGetProductsRequest, Product};
use holdfast_proto::inventory::v1::GetAvailabilityRequest;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::CartError;
use crate::scripts::Found;
use crate::view::Lookup;

/// Most SKUs per catalog or inventory batch call (both services' limit).
const UPSTREAM_BATCH: usize = 100;

/// The catalog client cart calls, carrying the caller's trace.
pub type CatalogClient = CatalogServiceClient<InterceptedService<Channel, TracePropagation>>;
/// The inventory client cart calls, carrying the caller's trace.
pub type InventoryClient = InventoryServiceClient<InterceptedService<Channel, TracePropagation>>;

/// The catalog and inventory over gRPC, each call with a deadline.
#[derive(Clone)]
pub(crate) struct Upstream {
    catalog: CatalogClient,
    inventory: InventoryClient,
    timeout: Duration,
}

/// Runs `call` with a deadline: an upstream that hangs costs this RPC `timeout`, no more.
async fn within<T>(
    timeout: Duration,
    dependency: &'static str,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{dependency} did not answer within {timeout:?}"
        ))),
    }
}

impl Upstream {
    /// Clients over `catalog` and `inventory` (lazy channels are fine) carrying `outbound`.
    pub(crate) fn new(
        catalog: Channel,
        inventory: Channel,
        outbound: &TracePropagation,
        timeout: Duration,
    ) -> Self {
        Self {
            catalog: CatalogServiceClient::with_interceptor(catalog, outbound.clone()),
            inventory: InventoryServiceClient::with_interceptor(inventory, outbound.clone()),
            timeout,
        }
    }

    /// An outbound request whose deadline the callee sees too (`grpc-timeout`).
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Catalog products of `skus` (unknown ones left out).
    async fn products(&self, skus: &[String]) -> Result<HashMap<String, Product>, CartError> {
        let calls = skus.chunks(UPSTREAM_BATCH).map(|chunk| {
            let mut catalog = self.catalog.clone();
            let request = self.request(BatchGetProductsRequest { skus: chunk.to_vec() });
            let timeout = self.timeout;
            async move { within(timeout, "catalog", catalog.batch_get_products(request)).await }
        });
        let answers = futures::future::try_join_all(calls)
            .await
            .map_err(|status| CartError::upstream("catalog", &status))?;
        Ok(answers
            .into_iter()
            .flat_map(|answer| answer.products)
            .map(|product| (product.sku.clone(), product))
            .collect())
    }

    /// Units inventory has available for each of `skus` (0 for SKUs it never stocked).
    async fn available(&self, skus: &[String]) -> Result<HashMap<String, i64>, CartError> {
        let calls = skus.chunks(UPSTREAM_BATCH).map(|chunk| {
            let mut inventory = self.inventory.clone();
            let request = self.request(GetAvailabilityRequest { skus: chunk.to_vec() });
            let timeout = self.timeout;
            async move { within(timeout, "inventory", inventory.get_availability(request)).await }
        });
        let answers = futures::future::try_join_all(calls)
            .await
            .map_err(|status| CartError::upstream("inventory", &status))?;
        Ok(answers
            .into_iter()
            .flat_map(|answer| answer.levels)
            .map(|level| (level.sku, level.available.max(0)))
            .collect())
    }
}

/// What is known so far about the prices and stock of some SKUs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// Products and units found so far (a SKU the catalog does not know has no product).
    pub(crate) lookup: Lookup,
    /// SKUs whose product is settled: found, or known to be unknown to the catalog.
    priced: HashSet<String>,
    /// SKUs whose available units are settled.
    counted: HashSet<String>,
}

impl Known {
    /// What `cart_view.lua` found; its misses stay unsettled.
    pub(crate) fn from_found(found: Vec<Found>) -> Self {
        let mut known = Self::default();
        for Found {
            sku,
            product,
            available,
        } in found
        {
            if let Some(product) = product {
                known.priced.insert(sku.clone());
                known.lookup.products.insert(sku.clone(), product);
            }
            if let Some(units) = available {
                known.counted.insert(sku.clone());
                known.lookup.available.insert(sku, units);
            }
        }
        known
    }

    /// The product of `sku`, if settled and known to the catalog.
    pub(crate) fn product(&self, sku: &str) -> Option<&Product> {
        self.lookup.products.get(sku)
    }

    /// The units available of `sku`, if settled.
    pub(crate) fn available(&self, sku: &str) -> Option<i64> {
        self.counted
            .contains(sku)
            .then(|| self.lookup.available.get(sku).copied().unwrap_or(0))
    }

    /// Asks the catalog for the products of those of `skus` not settled yet.
    pub(crate) async fn complete_products(
        &mut self,
        upstream: &Upstream,
        skus: &[String],
    ) -> Result<(), CartError> {
        self.settle(upstream, skus, true, false).await
    }

    /// Asks inventory for the units available of those of `skus` not settled yet.
    pub(crate) async fn complete_available(
        &mut self,
        upstream: &Upstream,
        skus: &[String],
    ) -> Result<(), CartError> {
        self.settle(upstream, skus, false, true).await
    }

    /// Settles products and units of every one of `skus`, asking the catalog and inventory at
    /// once for what Redis did not have (nothing at all when it had everything).
    pub(crate) async fn complete(&mut self, upstream: &Upstream, skus: &[String]) -> Result<(), CartError> {
        self.settle(upstream, skus, true, true).await
    }

    async fn settle(
        &mut self,
        upstream: &Upstream,
        skus: &[String],
        prices: bool,
        units: bool,
    ) -> Result<(), CartError> {
        let unpriced = if prices {
            unsettled(&self.priced, skus)
        } else {
            Vec::new()
        };
        let uncounted = if units {
            unsettled(&self.counted, skus)
        } else {
            Vec::new()
        };
        let (products, levels) = futures::future::join(
            async {
                if unpriced.is_empty() {
                    return Ok(HashMap::new());
                }
                upstream.products(&unpriced).await
            },
            async {
                if uncounted.is_empty() {
                    return Ok(HashMap::new());
                }
                upstream.available(&uncounted).await
            },
        )
        .await;
        let (products, levels) = (products?, levels?);
        self.lookup.products.extend(products);
        self.priced.extend(unpriced);
        self.lookup.available.extend(levels);
        self.counted.extend(uncounted);
        Ok(())
    }
}

/// Those of `skus` not in `settled`, each once.
fn unsettled(settled: &HashSet<String>, skus: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    skus.iter()
        .filter(|sku| !settled.contains(*sku) && seen.insert(sku.as_str()))
        .cloned()
        .collect()
}
