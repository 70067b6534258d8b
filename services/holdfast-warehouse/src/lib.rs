//! WarehouseService: warehouses and their stock, routing of dispatched orders to the
//! closest warehouses that keep the promise, shipments (suborders) from creation to
//! delivery, and the events that tie them to orders and inventory.
//!
//! - In: `fulfillment.dispatch_requested` (route the order), `order.cancelled` (cancel its
//!   open shipments), `order.return_received` (restock passed goods), consumed in group
//!   [`CONSUMER_GROUP`] ([`consumer`]).
//! - Out, through the store's outbox and a relay: `shipment.*` events on
//!   `holdfast.shipments.v1` (orders follows them to SHIPPED and DELIVERED),
//!   `fulfillment.backorder_raised`, and `reconciliation.warehouse_stock_changed` (the
//!   region's inventory follows goods receipts, shrinkage, stock takes and returns).
//!
//! Modules: [`routing`] (the pure routing rules), [`engine`] (each operation as one atomic
//! store change), [`consumer`], [`service`] (the RPCs), [`events`], [`keys`] (claims and
//! derived ids), [`validate`], [`error`]. Design notes: `docs/warehouse.md`.

pub mod authz;
pub mod consumer;
pub mod engine;
pub mod error;
pub mod events;
pub mod keys;
mod metrics;
pub mod routing;
pub mod service;
pub mod validate;

use std::sync::Arc;

use futures::future::BoxFuture;
use holdfast_platform::events::{BusConfig, BusError, ConsumerHandle, EventBus, spawn_consumer};
use holdfast_platform::task::AbortOnDrop;
use holdfast_platform::{Context, Needs, Service, ServiceParts};
use holdfast_proto::warehouse::v1::warehouse_service_server::WarehouseServiceServer;
use holdfast_store::relay::{self, RelayOptions};

pub use engine::{Engine, WakeRelay, WarehouseBackend};
pub use error::WarehouseError;
pub use service::Warehouses;

/// The warehouse's consumer group.
pub const CONSUMER_GROUP: &str = "holdfast-warehouse";

/// Who publishes the warehouse's outbox.
#[derive(Clone, Default)]
pub enum OutboxRelay {
    /// A relay of its own (the warehouse runs alone on its store).
    #[default]
    Own,
    /// Another service's relay over the same store (as `holdfast dev` runs them): it
    /// publishes every row, so the warehouse only wakes it after writing events. One relay
    /// per outbox avoids publishing rows twice.
    Shared(WakeRelay),
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Own => f.write_str("Own"),
            Self::Shared(_) => f.write_str("Shared"),
        }
    }
}

/// How the warehouse runs.
#[derive(Debug, Clone, Default)]
pub struct WarehouseOptions {
    /// Who publishes its events.
    pub relay: OutboxRelay,
    /// The relay's batch and waits (when it runs its own).
    pub relay_options: RelayOptions,
    /// The default warehouse's id ([`default_warehouse_id`]), when one runs; create it with
    /// [`Engine::ensure_default_warehouse`].
    pub default_warehouse: Option<String>,
}

/// A running warehouse service: the gRPC service, its outbox relay and its consumer
/// (stopped on drop).
pub struct RunningWarehouse<S: WarehouseBackend> {
    /// Register this with the server.
    pub service: WarehouseServiceServer<Warehouses<S>>,
    /// The engine, for tests and tools.
    pub engine: Arc<Engine<S>>,
    _tasks: Vec<AbortOnDrop>,
    consumers: Vec<ConsumerHandle>,
}

/// Builds the service over `store` in `region` and starts its outbox relay to `bus`
/// (unless another relay publishes this store: [`OutboxRelay::Shared`]). Events are
/// consumed once [`RunningWarehouse::consume`] is called.
pub fn start<S: WarehouseBackend>(
    store: S,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: WarehouseOptions,
) -> RunningWarehouse<S> {
    let shared = match &options.relay {
        OutboxRelay::Own => None,
        OutboxRelay::Shared(wake) => Some(Arc::clone(wake)),
    };
    let engine = Arc::new(
        Engine::new(store, region, shared).with_default_warehouse(options.default_warehouse.clone()),
    );
    let mut tasks = Vec::new();
    if matches!(options.relay, OutboxRelay::Own) {
        tasks.push(AbortOnDrop::new(tokio::spawn(run_relay(
            Arc::clone(&engine),
            bus,
            options.relay_options,
        ))));
    }
    RunningWarehouse {
        service: WarehouseServiceServer::new(Warehouses::new(Arc::clone(&engine))),
        engine,
        _tasks: tasks,
        consumers: Vec::new(),
    }
}

impl<S: WarehouseBackend> RunningWarehouse<S> {
    /// Starts consuming dispatch, cancellation and return events from `bus` (group
    /// [`CONSUMER_GROUP`]); the consumer stops when this is dropped.
    pub async fn consume(&mut self, bus: &BusConfig) -> Result<(), BusError> {
        let consumer = spawn_consumer(
            bus,
            CONSUMER_GROUP,
            &consumer::TOPICS,
            consumer::handler(Arc::clone(&self.engine)),
        )
        .await?;
        self.consumers.push(consumer);
        Ok(())
    }

    /// Stops the consumers gracefully (the event in hand is finished and committed).
    pub async fn shutdown_consumers(&mut self) {
        for consumer in self.consumers.drain(..) {
            consumer.shutdown().await;
        }
    }
}

/// The warehouse's section of the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WarehouseArgs {
    /// Run a default warehouse `default-<region>` (created at start) that ships whatever
    /// inventory sold and no other warehouse of the region can: its stock is what inventory
    /// sells, it keeps no stock counts (docs/warehouse.md). Default: on under `holdfast
    /// dev`, off under `holdfast serve`.
    #[arg(long, env = "HOLDFAST_DEFAULT_WAREHOUSE", value_name = "BOOL")]
    pub default_warehouse: Option<bool>,

    /// Set by `holdfast dev`: the defaults of a one-process dev mesh apply.
    #[arg(skip)]
    pub dev: bool,
}

impl WarehouseArgs {
    /// The default warehouse's id in `region`, when one runs.
    pub fn default_warehouse_id(&self, region: &str) -> Option<String> {
        self.default_warehouse
            .unwrap_or(self.dev)
            .then(|| default_warehouse_id(region))
    }
}

/// The id of `region`'s default warehouse.
pub fn default_warehouse_id(region: &str) -> String {
    format!("default-{region}")
}

impl<S: WarehouseBackend + Send + Sync> Service<S> for WarehouseArgs {
    fn name(&self) -> &'static str {
        "warehouse"
    }

    fn needs(&self) -> Needs {
        Needs {
            redis: false,
            store: true,
        }
    }

    /// Warehouses, stock and shipments in the store; consumes dispatch, cancellation and
    /// return events; its events go into the store's outbox (published by the process's
    /// relay).
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
        Box::pin(async move {
            let relay = Arc::clone(&ctx.outbox_written);
            let wake: WakeRelay = Arc::new(move || relay.notify_one());
            let engine = Arc::new(
                Engine::new(ctx.store("warehouse")?, &ctx.region, Some(wake))
                    .with_default_warehouse(self.default_warehouse_id(&ctx.region)),
            );
            engine.ensure_default_warehouse().await?;
            Ok(ServiceParts::new(
                "warehouse",
                WarehouseServiceServer::new(Warehouses::new(Arc::clone(&engine))),
            )
            .authz(&authz::TABLE)
            .consumer(
                CONSUMER_GROUP,
                &consumer::TOPICS,
                consumer::handler(Arc::clone(&engine)),
            )
            .writes_store_outbox()
            .keep(engine))
        })
    }
}

/// The outbox relay: the store's shared relay loop, publishing to `bus`.
async fn run_relay<S: WarehouseBackend>(
    engine: Arc<Engine<S>>,
    bus: Arc<dyn EventBus>,
    options: RelayOptions,
) {
    let (store, wake, region) = (&engine.store, &engine.outbox_written, &engine.region);
    relay::run_to_bus(store, wake, &options, &*bus, region, |events| {
        let count = events.len() as u64;
        move |published| metrics::relayed(published, count)
    })
    .await;
}

pub(crate) use holdfast_platform::clock::now_ms;
