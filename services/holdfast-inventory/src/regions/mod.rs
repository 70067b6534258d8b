//! Multi-region inventory (docs/regions.md): every SKU has a home region; a regional SKU
//! sells only there; a global SKU's total is split into per-region allocations that each
//! region grants from with the ordinary Lua path, and regions move idle units to the ones
//! running low over Kafka. Each region publishes periodic per-SKU snapshots; any region
//! reconciles them with the transfer log.
//!
//! - [`keys`], [`scripts`]: the ledger in Redis (`inv:{S}:rg*`) and its six scripts;
//! - [`flow`]: the consumer of the other regions' events (placements, transfer requests,
//!   debits, credits, snapshots);
//! - [`tasks`]: the region outbox relay (with re-drive), the snapshot publisher, the
//!   requester and the reconciler loop;
//! - [`audit`], [`policy`]: the drift arithmetic and who gives, both pure;
//! - [`grpc`]: SetGlobalStock, GetRegionalAvailability, GetReconciliation;
//! - [`moves`]: MoveRegionUnits, an operator's audited move of a dead region's units.

pub mod audit;
pub mod flow;
pub mod grpc;
pub mod keys;
pub mod metrics;
pub mod moves;
pub mod policy;
pub mod report;
pub mod scripts;
pub mod tasks;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fred::prelude::{HashesInterface, SetsInterface};
use holdfast_platform::events::EventBus;
use holdfast_proto::events::v1::RegionSnapshot;
use prost::Message;
use tokio::sync::Notify;

use crate::error::InventoryError;
use crate::stock::Stock;
use keys::{REGION_SKUS, RegionKeys};
use scripts::{Placed, Placement};

/// Timings and the deployment's regions.
#[derive(Debug, Clone)]
pub struct RegionsConfig {
    /// This region.
    pub region: String,
    /// Every region of the deployment, this one included.
    pub regions: Vec<String>,
    /// How often each SKU's snapshot is published.
    pub snapshot_every: Duration,
    /// How often the requester looks for SKUs running low.
    pub request_every: Duration,
    /// A view older than this is shown as stale and never decides a transfer.
    pub stale_after: Duration,
    /// A debit not acknowledged for this long is published again (credits are idempotent).
    pub redrive_after: Duration,
    /// An unanswered request is forgotten (and may be sent again) after this long.
    pub ask_timeout: Duration,
}

impl RegionsConfig {
    /// Defaults for `region` among `regions`.
    pub fn new(region: &str, regions: &[String]) -> Self {
        Self {
            region: region.to_string(),
            regions: regions.to_vec(),
            snapshot_every: Duration::from_millis(500),
            request_every: Duration::from_millis(100),
            stale_after: Duration::from_secs(5),
            redrive_after: Duration::from_secs(2),
            ask_timeout: Duration::from_secs(1),
        }
    }

    /// The other regions.
    pub fn peers(&self) -> impl Iterator<Item = &String> {
        self.regions.iter().filter(move |r| **r != self.region)
    }
}

/// Whether `name` can name a region (it is part of topic names and ledger records).
pub fn valid_region(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `holdfast.regions.<region>.transfers.v1`: placements and transfers a region produces.
pub fn transfers_topic(region: &str) -> String {
    format!("holdfast.regions.{region}.transfers.v1")
}

/// `holdfast.regions.<region>.reconciliation.v1`: the region's stock snapshots.
pub fn reconciliation_topic(region: &str) -> String {
    format!("holdfast.regions.{region}.reconciliation.v1")
}

/// `holdfast-regions-<region>`: the consumer group of a region (one per region, so regions
/// sharing a broker in tests each read every event).
pub fn consumer_group(region: &str) -> String {
    format!("holdfast-regions-{region}")
}

/// The multi-region side of one region's inventory.
#[derive(Clone)]
pub struct Regions {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegionsConfig,
    stock: Stock,
    bus: Arc<dyn EventBus>,
    /// Wakes the relay: the region outbox has new entries.
    wake: Notify,
    /// SKU -> (request id, when asked): one open request per SKU.
    asked: Mutex<HashMap<String, (String, Instant)>>,
    /// SKU -> when Reserve last found it short here.
    short: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regions")
            .field("region", &self.inner.config.region)
            .field("regions", &self.inner.config.regions)
            .finish_non_exhaustive()
    }
}

impl Regions {
    /// The region side over `stock`, publishing on `bus`; loads the region scripts.
    pub async fn new(
        config: RegionsConfig,
        stock: Stock,
        bus: Arc<dyn EventBus>,
    ) -> Result<Self, InventoryError> {
        scripts::load_all(stock.client()).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                stock,
                bus,
                wake: Notify::new(),
                asked: Mutex::default(),
                short: Mutex::default(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RegionsConfig {
        &self.inner.config
    }

    /// This region.
    pub fn region(&self) -> &str {
        &self.inner.config.region
    }

    /// The engine.
    pub fn stock(&self) -> &Stock {
        &self.inner.stock
    }

    fn bus(&self) -> &dyn EventBus {
        self.inner.bus.as_ref()
    }

    fn wake_relay(&self) {
        self.inner.wake.notify_one();
    }

    /// The topics this region consumes: every other region's.
    pub fn consumed_topics(&self) -> Vec<String> {
        self.config()
            .peers()
            .flat_map(|r| [transfers_topic(r), reconciliation_topic(r)])
            .collect()
    }

    /// Refuses a Reserve of a regional SKU of another region, naming its home.
    pub async fn check_home(&self, skus: &[&str]) -> Result<(), InventoryError> {
        for sku in skus {
            let keys = RegionKeys::new(sku);
            let (scope, home): (Option<String>, Option<String>) = self
                .stock()
                .client()
                .hmget(keys.placement(), vec!["scope", "home"])
                .await?;
            if let (Some(scope), Some(home)) = (scope, home)
                && scope == "regional"
                && home != self.region()
            {
                return Err(wrong_region(sku, &home, self.region()));
            }
        }
        Ok(())
    }

    /// Before SetStock: the SKU becomes (or stays) a regional SKU of this region; refused for
    /// a global SKU or one homed elsewhere.
    pub async fn claim_regional(&self, sku: &str) -> Result<(), InventoryError> {
        let placed = scripts::place(
            self.stock().client(),
            &RegionKeys::new(sku),
            &Placement::Regional { home: self.region() },
        )
        .await?;
        match placed {
            Placed::Now(_) | Placed::Already(_) => {
                let _: i64 = self.stock().client().sadd(REGION_SKUS, sku).await?;
                Ok(())
            }
            Placed::Otherwise(scope, home) if scope == "global" => Err(InventoryError::precondition(
                "GLOBAL_SKU",
                sku,
                format!(
                    "{sku} is a global SKU placed by region {home}: its stock is set with SetGlobalStock and moved by transfers, not SetStock"
                ),
            )),
            Placed::Otherwise(_, home) => Err(wrong_region(sku, &home, self.region())),
        }
    }

    /// Notes that Reserve found `skus` short here (the requester asks for units sooner).
    pub fn note_shortage<'a>(&self, skus: impl IntoIterator<Item = &'a str>) {
        let mut short = self.inner.short.lock().unwrap_or_else(PoisonError::into_inner);
        if short.len() > 10_000 {
            short.clear();
        }
        for sku in skus {
            short.insert(sku.to_string(), Instant::now());
        }
    }

    fn recently_short(&self, sku: &str) -> bool {
        let short = self.inner.short.lock().unwrap_or_else(PoisonError::into_inner);
        short
            .get(sku)
            .is_some_and(|at| at.elapsed() < self.config().ask_timeout * 3)
    }

    /// The latest snapshot of `sku` from every region heard from (this one's as last taken).
    pub async fn views(&self, sku: &str) -> Result<BTreeMap<String, RegionSnapshot>, InventoryError> {
        let raw: HashMap<String, Vec<u8>> = self
            .stock()
            .client()
            .hgetall(RegionKeys::new(sku).views())
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(region, bytes)| Some((region, RegionSnapshot::decode(bytes.as_slice()).ok()?)))
            .collect())
    }

    /// Every SKU with region state here.
    pub async fn skus(&self) -> Result<Vec<String>, InventoryError> {
        let mut skus: Vec<String> = self.stock().client().smembers(REGION_SKUS).await?;
        skus.sort();
        Ok(skus)
    }
}

/// The answer to a Reserve of another region's regional SKU.
pub fn wrong_region(sku: &str, home: &str, here: &str) -> InventoryError {
    InventoryError::precondition(
        "WRONG_REGION",
        sku,
        format!("{sku} is a regional SKU of region {home}: it sells only in region {home}, not in {here}"),
    )
}

/// Registers a region's consumer (every other region's topics, in its own group) and its
/// background work with the service.
pub fn wire(parts: holdfast_platform::ServiceParts, regions: Regions) -> holdfast_platform::ServiceParts {
    // Names fixed for the life of the process: leaked once at start-up.
    let group: &'static str = Box::leak(consumer_group(regions.region()).into_boxed_str());
    let topics: Vec<&'static str> = regions
        .consumed_topics()
        .into_iter()
        .map(|t| &*Box::leak(t.into_boxed_str()))
        .collect();
    let mut parts = parts;
    if !topics.is_empty() {
        parts = parts.consumer(group, &topics, regions.handler());
    }
    parts
        .relay(regions.clone().run_relay())
        .task(regions.clone().run_snapshots())
        .task(regions.clone().run_requester())
        .task(regions.clone().run_reconciler(Duration::from_secs(1)))
        .keep(regions)
}
