//! InventoryService: stock reservations that never oversell.
//!
//! Every state change is one Lua script on one bucket of one SKU (`lua/`, layout in
//! `docs/inventory-redis.md`); multi-line reservations compose them through an idempotent
//! reservation record. Holds lapse on the Redis clock; a sweeper frees them; hot SKUs split
//! into buckets on different cluster slots with a rebalancer and a sold-out marker.

pub mod admission;
pub mod authz;
pub mod background;
pub mod batcher;
pub mod coalesce;
pub mod error;
pub mod guard;
pub mod hot_path;
pub mod keys;
pub mod line_hints;
pub mod metrics;
pub mod outbox;
pub mod reconcile;
pub mod regions;
pub mod reservations;
pub mod reserve_lines;
pub mod reserve_stream;
pub mod scripts;
pub mod service;
pub mod settle;
pub mod stock;
pub mod truth;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::Pool;
use futures::future::BoxFuture;
use holdfast_platform::events::EventBus;
use holdfast_platform::task::AbortOnDrop;
use holdfast_platform::{Context, Needs, Service, ServiceParts};
use holdfast_proto::inventory::v1::inventory_service_server::InventoryServiceServer;

pub use error::InventoryError;
pub use service::Inventory;
pub use stock::Stock;

/// Timings of the background work.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// How often the sweeper looks for lapsed holds.
    pub sweep_every: Duration,
    /// How often the rebalancer visits hot SKUs.
    pub rebalance_every: Duration,
    /// How often the relay rescans Redis for outbox leftovers (crash recovery).
    pub outbox_rescan_every: Duration,
    /// The engine's tunables (adjustment-id retention, claim lease, WAIT for commits).
    pub stock: stock::StockSettings,
    /// How often the generation marker is beaten (with a durable truth only).
    pub generation_every: Duration,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        Self {
            sweep_every: Duration::from_millis(250),
            rebalance_every: Duration::from_millis(500),
            outbox_rescan_every: Duration::from_secs(30),
            stock: stock::StockSettings::default(),
            generation_every: truth::CHECK_EVERY,
        }
    }
}

/// A running inventory: the gRPC service plus its background tasks (stopped on drop).
pub struct RunningInventory {
    /// Register this with the server.
    pub service: InventoryServiceServer<Inventory>,
    /// The engine, for tests and tools.
    pub stock: Stock,
    _tasks: Vec<AbortOnDrop>,
}

/// Loads the scripts (so the first call never pays for it) and starts the relay, sweeper and
/// rebalancer. Call before marking health SERVING. (A process runs inventory through
/// [`InventoryArgs`]' [`Service`] impl, which starts the relay after every consumer.)
/// No durable truth: see [`start_with_truth`].
pub async fn start(
    redis: Pool,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: InventoryOptions,
) -> Result<RunningInventory, InventoryError> {
    start_with_truth(redis, bus, region, options, None).await
}

/// [`start`], with the durable truth in `truth` guarding against a Redis that lost writes
/// (see [`truth`]): the generation watch runs too.
pub async fn start_with_truth(
    redis: Pool,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: InventoryOptions,
    truth: Option<Arc<dyn truth::TruthBackend>>,
) -> Result<RunningInventory, InventoryError> {
    let parts = build(redis, bus, region, &options, truth).await?;
    let mut tasks = vec![
        tokio::spawn(parts.relay),
        tokio::spawn(parts.sweeper),
        tokio::spawn(parts.rebalancer),
    ];
    if let Some(watch) = parts.watch {
        tasks.push(tokio::spawn(watch));
    }
    Ok(RunningInventory {
        service: InventoryServiceServer::new(Inventory::new(parts.stock.clone())),
        stock: parts.stock,
        _tasks: tasks.into_iter().map(AbortOnDrop::new).collect(),
    })
}

/// The engine and its background work, not yet running.
struct Built {
    stock: Stock,
    relay: BoxFuture<'static, ()>,
    sweeper: BoxFuture<'static, ()>,
    rebalancer: BoxFuture<'static, ()>,
    watch: Option<BoxFuture<'static, ()>>,
}

async fn build(
    redis: Pool,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: &InventoryOptions,
    truth: Option<Arc<dyn truth::TruthBackend>>,
) -> Result<Built, InventoryError> {
    scripts::load_all(redis.next()).await?;
    let (relay_tx, relay_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stock = Stock::new(redis, relay_tx).with_settings(options.stock.clone());
    let mut watch: Option<BoxFuture<'static, ()>> = None;
    if let Some(store) = truth {
        stock = stock.with_truth(guard::Truth::new(store));
        // The first beat before serving: a Redis that lost writes while we were down is
        // noticed before the first call.
        stock.check_generation().await?;
        watch = Some(Box::pin(truth::run_generation_watch(
            stock.clone(),
            options.generation_every,
        )));
    } else {
        tracing::warn!("inventory runs without a durable truth: a Redis that loses writes can oversell");
    }
    Ok(Built {
        watch,
        relay: Box::pin(background::run_relay(
            stock.clone(),
            bus,
            region.to_string(),
            relay_rx,
            options.outbox_rescan_every,
        )),
        sweeper: Box::pin(background::run_sweeper(stock.clone(), options.sweep_every)),
        rebalancer: Box::pin(background::run_rebalancer(stock.clone(), options.rebalance_every)),
        stock,
    })
}

/// The inventory's section of the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InventoryArgs {
    /// Replicas that must acknowledge each commit's Redis writes (`WAIT`) before Commit
    /// answers; 0 does not wait. Fewer within the timeout is logged, not refused (every
    /// sale is in the durable store first).
    #[arg(long, env = "HOLDFAST_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// How long a commit waits for those replicas, in milliseconds.
    #[arg(long, env = "HOLDFAST_REDIS_WAIT_TIMEOUT_MS", default_value_t = 100)]
    pub redis_wait_timeout_ms: u64,

    /// Most one-line Reserves of one SKU coalesced into one Redis script call while the
    /// previous call is in flight (standalone Redis; 1: no coalescing, every Reserve its own
    /// call). 64 measured faster than 1 on both the Reserve and the sold-out bench
    /// (docs/performance.md). Refusals of a locally sold-out SKU are coalesced whatever this is.
    #[arg(long, env = "HOLDFAST_RESERVE_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub reserve_batch: u64,

    /// Admission: Reserve calls per second per SKU over every replica (fractions allowed;
    /// 0: unlimited). A SKU's runtime limit (SetAdmissionLimits) wins. docs/admission.md.
    #[arg(long, env = "HOLDFAST_RESERVE_LIMIT_PER_SKU", default_value_t = 0.0)]
    pub reserve_limit_per_sku: f64,

    /// Admission: Reserve calls per SKU admitted back to back on an idle SKU.
    #[arg(long, env = "HOLDFAST_RESERVE_LIMIT_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub reserve_limit_burst: u32,

    /// Multi-region (docs/regions.md): every region of the deployment, comma-separated,
    /// this one (--region) included. Unset: one region, no placements or transfers.
    #[arg(long, env = "HOLDFAST_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Multi-region: how often each region SKU's snapshot is published, in milliseconds.
    #[arg(long, env = "HOLDFAST_REGION_SNAPSHOT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub region_snapshot_ms: u64,
}

impl InventoryArgs {
    /// The Reserve admission over `redis` with these defaults, scripts loaded.
    pub async fn admission(&self, redis: Pool) -> anyhow::Result<admission::ReserveAdmission> {
        anyhow::ensure!(
            self.reserve_limit_per_sku.is_finite() && self.reserve_limit_per_sku >= 0.0,
            "--reserve-limit-per-sku must be a finite rate >= 0"
        );
        let admission = admission::ReserveAdmission::new(
            redis,
            holdfast_platform::admission::RateLimit {
                per_second: self.reserve_limit_per_sku,
                burst: self.reserve_limit_burst.max(1),
            },
        );
        admission.load().await?;
        Ok(admission)
    }

    /// The multi-region configuration for `region`, if `--regions` is set.
    pub fn regions_config(&self, region: &str) -> anyhow::Result<Option<regions::RegionsConfig>> {
        if self.regions.is_empty() {
            return Ok(None);
        }
        for name in self.regions.iter().map(String::as_str).chain([region]) {
            anyhow::ensure!(
                regions::valid_region(name),
                "region {name:?}: must be 1..32 of a-z, 0-9 and -"
            );
        }
        anyhow::ensure!(
            self.regions.iter().any(|r| r == region),
            "--regions {:?} must include this server's --region {region:?}",
            self.regions
        );
        let mut config = regions::RegionsConfig::new(region, &self.regions);
        config.snapshot_every = Duration::from_millis(self.region_snapshot_ms);
        Ok(Some(config))
    }

    /// The options these flags select.
    pub fn options(&self) -> InventoryOptions {
        let mut options = InventoryOptions::default();
        options.stock.wait_replicas = self.redis_wait_replicas;
        options.stock.wait_timeout = Duration::from_millis(self.redis_wait_timeout_ms.max(1));
        // 0 is a Default-built InventoryArgs (no command line): the flag's default.
        options.stock.reserve_batch = match usize::try_from(self.reserve_batch) {
            Ok(0) | Err(_) => 1,
            Ok(n) => n,
        };
        options
    }
}

impl<S: holdfast_store::StockTruthStore + Clone + 'static> Service<S> for InventoryArgs {
    fn name(&self) -> &'static str {
        "inventory"
    }

    fn needs(&self) -> Needs {
        Needs {
            redis: true,
            // Used when the process has one (the durable truth); not required, so a split
            // deployment without --store still runs (unguarded, with a warning).
            store: false,
        }
    }

    /// Stock reservations on Redis; its relay publishes the Redis outbox; it consumes
    /// warehouse stock changes into this region's on_hand.
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
        Box::pin(async move {
            let redis = ctx.redis("inventory")?;
            let admission = self.admission(redis.clone()).await?;
            let truth = ctx
                .store
                .clone()
                .map(|store| Arc::new(store) as Arc<dyn truth::TruthBackend>);
            let regions_config = self.regions_config(&ctx.region)?;
            let built = build(redis, ctx.bus.clone(), &ctx.region, &self.options(), truth).await?;
            let mut inventory = Inventory::new(built.stock.clone())
                .with_admission(admission)
                .with_draining(ctx.draining.clone());
            let mut regions = None;
            if let Some(config) = regions_config {
                let region = regions::Regions::new(config, built.stock.clone(), ctx.bus.clone()).await?;
                inventory = inventory.with_regions(region.clone());
                regions = Some(region);
            }
            let mut parts = ServiceParts::new("inventory", InventoryServiceServer::new(inventory))
                .authz(&authz::TABLE)
                .consumer(
                    reconcile::CONSUMER_GROUP,
                    &[reconcile::RECONCILIATION_TOPIC],
                    reconcile::handler(built.stock.clone(), &ctx.region),
                )
                .relay(built.relay)
                .task(built.sweeper)
                .task(built.rebalancer);
            if let Some(watch) = built.watch {
                parts = parts.task(watch);
            }
            if let Some(regions) = regions {
                parts = regions::wire(parts, regions);
            }
            Ok(parts.keep(built.stock))
        })
    }
}
