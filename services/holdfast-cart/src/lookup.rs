//! What a cart's view needs about its SKUs (current products, units available), gathered in as
//! few round trips as possible: on a standalone Redis `cart_view.lua` reads the cart together
//! with the catalog's cache and inventory's counters in one script, and only the SKUs it could
//! not answer exactly (a catalog cache miss, a bucketed SKU, a lapsed hold...) are asked over
//! gRPC; on a cluster, or with the script turned off ([`ViewPath::Rpc`]), every SKU is asked
//! over gRPC.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{ClientLike, Pool};
use holdfast_platform::PeerChannel;
use holdfast_platform::telemetry::TracePropagation;
use holdfast_proto::catalog::v1::BatchGetProductsRequest;
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::inventory::v1::GetAvailabilityRequest;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::ViewPath;
use crate::copies::Copies;
use crate::error::CartError;
use crate::live::LiveCart;
use crate::scripts;
use crate::view::{Lookup, Priced};

/// Most SKUs per catalog or inventory batch call (both services' limit).
const UPSTREAM_BATCH: usize = 100;

/// The catalog client cart calls, carrying the caller's trace.
pub type CatalogClient = CatalogServiceClient<InterceptedService<PeerChannel, TracePropagation>>;
/// The inventory client cart calls, carrying the caller's trace.
pub type InventoryClient = InventoryServiceClient<InterceptedService<PeerChannel, TracePropagation>>;

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

/// A lookup being gathered: what is known so far, and about which SKUs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// What is known.
    pub(crate) lookup: Lookup,
    /// SKUs the catalog's answer is in `lookup` for (a product, or known to be unknown).
    priced: HashSet<String>,
    /// SKUs the units available are in `lookup` for.
    counted: HashSet<String>,
    /// The catalog's epoch the view script ran under, if one ran and there was one: products
    /// the catalog answers for this lookup are kept under it ([`Copies::keep`]).
    epoch: Option<String>,
}

impl Known {
    /// What a script read about the SKUs in `seen` (`lib/cart_view.lua`), its
    /// [`scripts::Cached::Current`] products settled by [`Copies::settle`] first.
    fn from_seen(seen: Vec<scripts::Seen>, epoch: Option<String>) -> Self {
        let n = seen.len();
        let mut known = Self {
            lookup: Lookup {
                products: HashMap::with_capacity(n),
                available: HashMap::with_capacity(n),
            },
            priced: HashSet::with_capacity(n),
            counted: HashSet::with_capacity(n),
            epoch,
        };
        for seen in seen {
            if let scripts::Cached::Read(product) = seen.product {
                known.priced.insert(seen.sku.clone());
                known.lookup.products.insert(seen.sku.clone(), product);
            }
            if let Some(available) = seen.available {
                known.counted.insert(seen.sku.clone());
                known.lookup.available.insert(seen.sku, available);
            }
        }
        known
    }
}

/// The cart and what `cart_view.lua` knew about its SKUs.
pub(crate) struct Peek {
    /// The live cart; `None` when the key is absent (cold, or an owner who never had one).
    pub(crate) cart: Option<LiveCart>,
    /// What the script knew.
    pub(crate) known: Known,
}

/// The catalog and inventory, as the cart asks them.
#[derive(Clone)]
pub(crate) struct Upstream {
    redis: Pool,
    catalog: CatalogClient,
    inventory: InventoryClient,
    timeout: Duration,
    view: ViewPath,
    /// Products kept between views (shared by the clones of this service).
    copies: Arc<Copies>,
}

impl Upstream {
    pub(crate) fn new(
        redis: Pool,
        catalog: PeerChannel,
        inventory: PeerChannel,
        outbound: TracePropagation,
        timeout: Duration,
        view: ViewPath,
    ) -> Self {
        Self {
            redis,
            catalog: CatalogServiceClient::with_interceptor(catalog, outbound.clone()),
            inventory: InventoryServiceClient::with_interceptor(inventory, outbound),
            timeout,
            view,
            copies: Arc::default(),
        }
    }

    /// An outbound request whose deadline the callee sees too (`grpc-timeout`).
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// One round trip on a standalone Redis: the cart at `key` and what the catalog's cache
    /// and inventory's counters say about its SKUs and `extra`. `None` on a cluster, where
    /// the script cannot run, or with the script turned off (nothing is sent).
    pub(crate) async fn peek(&self, key: &str, extra: Option<&str>) -> Result<Option<Peek>, CartError> {
        if !self.reads_in_scripts() {
            return Ok(None);
        }
        let sent = self.epoch();
        let viewed = scripts::view(self.redis.next(), key, extra.unwrap_or_default(), &sent).await?;
        Ok(Some(Peek {
            cart: viewed.cart,
            known: self.known(viewed.epoch, viewed.seen),
        }))
    }

    /// The catalog epoch to name in a view script: the one this process keeps products of,
    /// or '' (see [`Copies`]).
    pub(crate) fn epoch(&self) -> String {
        self.copies.epoch()
    }

    /// What a view script answered (run under the catalog's epoch `now`), with the products
    /// it did not read taken from the copies kept.
    pub(crate) fn known(&self, now: Option<String>, mut seen: Vec<scripts::Seen>) -> Known {
        self.copies.settle(now.as_deref(), &mut seen);
        Known::from_seen(seen, now)
    }

    /// Whether the cart's scripts read the catalog's cache and inventory's counters themselves
    /// (`cart_view.lua`, `cart_add_viewed.lua`): on a standalone Redis with the view script on.
    pub(crate) fn reads_in_scripts(&self) -> bool {
        self.view == ViewPath::Script && !self.redis.next().is_clustered()
    }

    /// Asks the catalog and inventory, at once, about the SKUs of `skus` that `known` lacks.
    pub(crate) async fn complete(&self, known: &mut Known, skus: &[String]) -> Result<(), CartError> {
        let (priced, counted) = self.ask(known, skus).await;
        priced.and(counted)
    }

    /// [`Self::complete`], with the catalog's outcome and inventory's apart (whatever one
    /// answered is in `known` even if the other failed).
    pub(crate) async fn ask(
        &self,
        known: &mut Known,
        skus: &[String],
    ) -> (Result<(), CartError>, Result<(), CartError>) {
        let (unpriced, uncounted) = (missing(&known.priced, skus), missing(&known.counted, skus));
        if unpriced.is_empty() && uncounted.is_empty() {
            return (Ok(()), Ok(()));
        }
        // Boxed: the two gRPC calls' futures are large, and most carts never need them (the
        // script knew every SKU). Unboxed, every RPC's future reserved room for them and
        // copied it (profile of `bench cart`: ~3% of the server in memcpy of futures).
        let (products, available) = Box::pin(futures::future::join(
            self.products(&unpriced),
            self.available(&uncounted),
        ))
        .await;
        let priced = products.map(|products| {
            // Asked after the script ran under the epoch: as new as what it would have read.
            self.copies.keep(known.epoch.as_deref(), &products.1);
            known.add_products(products)
        });
        let counted = available.map(|available| known.add_available(available));
        (priced, counted)
    }

    /// Asks inventory about the SKUs of `skus` whose units available `known` lacks.
    pub(crate) async fn complete_stock(&self, known: &mut Known, skus: &[String]) -> Result<(), CartError> {
        let uncounted = missing(&known.counted, skus);
        if uncounted.is_empty() {
            return Ok(());
        }
        let available = Box::pin(self.available(&uncounted)).await?;
        known.add_available(available);
        Ok(())
    }

    /// Catalog products of `skus` (unknown ones left out), with the SKUs asked.
    pub(crate) async fn products(
        &self,
        skus: &[String],
    ) -> Result<(Vec<String>, HashMap<String, Priced>), CartError> {
        if skus.is_empty() {
            return Ok(Default::default());
        }
        let calls = skus.chunks(UPSTREAM_BATCH).map(|chunk| {
            let mut catalog = self.catalog.clone();
            let request = self.request(BatchGetProductsRequest { skus: chunk.to_vec() });
            let timeout = self.timeout;
            async move { within(timeout, "catalog", catalog.batch_get_products(request)).await }
        });
        let answers = futures::future::try_join_all(calls)
            .await
            .map_err(|status| CartError::upstream("catalog", &status))?;
        let products = answers
            .into_iter()
            .flat_map(|answer| answer.products)
            .map(|product| (product.sku.clone(), Priced::from(product)))
            .collect();
        Ok((skus.to_vec(), products))
    }

    /// Units inventory has available for each of `skus` (0 for SKUs it never stocked), with
    /// the SKUs asked.
    async fn available(&self, skus: &[String]) -> Result<(Vec<String>, HashMap<String, i64>), CartError> {
        if skus.is_empty() {
            return Ok(Default::default());
        }
        let calls = skus.chunks(UPSTREAM_BATCH).map(|chunk| {
            let mut inventory = self.inventory.clone();
            let request = self.request(GetAvailabilityRequest { skus: chunk.to_vec() });
            let timeout = self.timeout;
            async move { within(timeout, "inventory", inventory.get_availability(request)).await }
        });
        let answers = futures::future::try_join_all(calls)
            .await
            .map_err(|status| CartError::upstream("inventory", &status))?;
        let levels = answers
            .into_iter()
            .flat_map(|answer| answer.levels)
            .map(|level| (level.sku, level.available.max(0)))
            .collect();
        Ok((skus.to_vec(), levels))
    }
}

impl Known {
    fn add_products(&mut self, (asked, products): (Vec<String>, HashMap<String, Priced>)) {
        self.priced.extend(asked);
        self.lookup.products.extend(products);
    }

    fn add_available(&mut self, (asked, levels): (Vec<String>, HashMap<String, i64>)) {
        for sku in asked {
            let units = levels.get(&sku).copied().unwrap_or(0);
            self.lookup.available.insert(sku.clone(), units);
            self.counted.insert(sku);
        }
    }
}

/// The SKUs of `skus` not in `known`, each once.
fn missing(known: &HashSet<String>, skus: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    skus.iter()
        .filter(|sku| !known.contains(*sku) && seen.insert(sku.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_skus_are_asked_once_and_known_ones_never() {
        let known: HashSet<String> = ["A".to_string()].into();
        let skus: Vec<String> = ["A", "B", "C", "B"].iter().map(|s| s.to_string()).collect();
        assert_eq!(missing(&known, &skus), ["B", "C"]);
    }

    #[test]
    fn skus_asked_but_not_stocked_count_as_none_available() {
        let mut known = Known::default();
        known.add_available((
            vec!["A".into(), "B".into()],
            [("A".to_string(), 4)].into_iter().collect(),
        ));
        assert_eq!(known.lookup.available.get("A"), Some(&4));
        assert_eq!(known.lookup.available.get("B"), Some(&0));
        assert!(missing(&known.counted, &["B".into()]).is_empty());
    }
}
