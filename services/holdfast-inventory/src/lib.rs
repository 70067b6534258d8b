//! InventoryService: stock reservations that never oversell.
//!
//! Every state change is one Lua script on one bucket of one SKU (`lua/`, layout in
//! `docs/inventory-redis.md`); multi-line reservations compose them through an idempotent
//! reservation record. Holds lapse on the Redis clock; a sweeper frees them; hot SKUs split
//! into buckets on different cluster slots with a rebalancer and a sold-out marker.

pub mod background;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod reconcile;
pub mod reservations;
pub mod scripts;
pub mod service;
pub mod settle;
pub mod stock;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::Pool;
use holdfast_platform::events::EventBus;
use holdfast_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use tokio::task::JoinHandle;

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
    /// The engine's tunables (adjustment-id retention, claim lease).
    pub stock: stock::StockSettings,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        Self {
            sweep_every: Duration::from_millis(250),
            rebalance_every: Duration::from_millis(500),
            outbox_rescan_every: Duration::from_secs(30),
            stock: stock::StockSettings::default(),
        }
    }
}

/// A running inventory: the gRPC service plus its background tasks (stopped on drop).
pub struct RunningInventory {
    /// Register this with the server.
    pub service: InventoryServiceServer<Inventory>,
    /// The engine, for tests and tools.
    pub stock: Stock,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RunningInventory {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Loads the scripts (so the first call never pays for it) and starts the relay, sweeper and
/// rebalancer. Call before marking health SERVING.
pub async fn start(
    redis: Pool,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: InventoryOptions,
) -> Result<RunningInventory, InventoryError> {
    scripts::load_all(redis.next()).await?;
    let (relay_tx, relay_rx) = tokio::sync::mpsc::unbounded_channel();
    let stock = Stock::new(redis, relay_tx).with_settings(options.stock.clone());
    let tasks = vec![
        tokio::spawn(background::run_relay(
            stock.clone(),
            bus,
            region.to_string(),
            relay_rx,
            options.outbox_rescan_every,
        )),
        tokio::spawn(background::run_sweeper(stock.clone(), options.sweep_every)),
        tokio::spawn(background::run_rebalancer(stock.clone(), options.rebalance_every)),
    ];
    Ok(RunningInventory {
        service: InventoryServiceServer::new(Inventory::new(stock.clone())),
        stock,
        tasks,
    })
}
