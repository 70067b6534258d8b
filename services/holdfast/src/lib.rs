//! Wiring for the `holdfast` binary: which services run, on which engines.
//!
//! `holdfast dev` runs every service in one process with the embedded defaults;
//! `holdfast serve <service>` runs one, with its engines from flags or `HOLDFAST_*` env.

use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use holdfast_platform::events::{BusConfig, ConsumerHandle, EventBus, InProcessBus};
use holdfast_platform::{CommonArgs, GrpcServer, ServerOptions};

pub mod read_side;

/// holdfast: the order-lifecycle backend of an online store, as a gRPC service mesh.
#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "The order-lifecycle backend of an online store: inventory, carts, checkout, orders, warehouse.",
    long_about = "holdfast serves InventoryService, CatalogService, CartService, OrderService, \
WarehouseService and PaymentsService over gRPC and grpc-web.\n\n\
Start everything on one port with embedded engines:\n    holdfast dev\n\
Run one service against shared engines (as the Helm chart does):\n    \
holdfast serve inventory --redis-url redis://redis:6379\n\n\
Every flag can also be set as an env var: --redis-url is HOLDFAST_REDIS_URL."
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every service in one process on one port; starts its own redis-server when
    /// --redis-url is unset, keeping data under --data-dir.
    Dev {
        /// Shared flags.
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Apply the durable store's schema (ScyllaDB: schema/scylla.cql; SQLite migrates itself
    /// on open) and exit. Safe to run again.
    Migrate {
        /// The store to migrate: `sqlite://PATH` or `scylla://host:port,...`.
        #[arg(long, env = "HOLDFAST_STORE", value_name = "URL", value_parser = holdfast_platform::StoreUrl::parse)]
        store: holdfast_platform::StoreUrl,
    },
    /// One service, with its engines from flags or env.
    Serve {
        /// Which service.
        service: ServiceName,
        /// Shared flags.
        #[command(flatten)]
        common: CommonArgs,
    },
}

impl Command {
    /// The services to run, the shared flags and whether this is `dev`; `None` for `migrate`.
    pub fn split(&self) -> Option<(Vec<ServiceName>, &CommonArgs, bool)> {
        match self {
            Command::Dev { common } => Some((ServiceName::ALL.to_vec(), common, true)),
            Command::Serve { service, common } => Some((vec![*service], common, false)),
            Command::Migrate { .. } => None,
        }
    }
}

/// A service's short name, used by `serve` and by the health service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceName {
    /// Stock reservations (Redis Lua).
    Inventory,
    /// Carts.
    Cart,
    /// Products and prices.
    Catalog,
    /// Checkout saga and orders.
    Orders,
    /// Warehouses and fulfillment.
    Warehouse,
    /// The simulated payment provider.
    Payments,
    /// Customer notifications from order events (issue 17).
    Notifications,
}

impl ServiceName {
    /// Every service, in start-up order.
    pub const ALL: [ServiceName; 7] = [
        ServiceName::Inventory,
        ServiceName::Catalog,
        ServiceName::Cart,
        ServiceName::Payments,
        ServiceName::Orders,
        ServiceName::Warehouse,
        ServiceName::Notifications,
    ];

    /// The short name (`inventory`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Inventory => "inventory",
            ServiceName::Cart => "cart",
            ServiceName::Catalog => "catalog",
            ServiceName::Orders => "orders",
            ServiceName::Warehouse => "warehouse",
            ServiceName::Payments => "payments",
            ServiceName::Notifications => "notifications",
        }
    }

    /// Whether it needs Redis.
    pub fn needs_redis(self) -> bool {
        matches!(
            self,
            ServiceName::Inventory | ServiceName::Cart | ServiceName::Catalog
        )
    }

    /// Whether it needs the durable store.
    pub fn needs_store(self) -> bool {
        matches!(
            self,
            ServiceName::Cart | ServiceName::Catalog | ServiceName::Orders | ServiceName::Warehouse
        )
    }
}

/// Clients to the engines the services share.
pub struct Engines {
    /// Redis, when any selected service needs it.
    pub redis: Option<fred::prelude::Pool>,
    /// The durable store, when any selected service needs it.
    pub store: Option<holdfast_store::Store>,
    /// Where events go (the producer side of `bus_config`).
    pub bus: Arc<dyn EventBus>,
    /// The bus consumers join: in-process (shared with `bus`) or Kafka.
    pub bus_config: BusConfig,
    /// Region stamped on events.
    pub region: String,
}

impl Engines {
    /// Engines with the in-process bus.
    pub fn new(
        redis: Option<fred::prelude::Pool>,
        store: Option<holdfast_store::Store>,
        region: &str,
    ) -> Self {
        let bus = InProcessBus::new();
        Self {
            redis,
            store,
            bus: Arc::new(bus.clone()),
            bus_config: BusConfig::InProcess(bus),
            region: region.to_string(),
        }
    }

    /// Engines on `bus_config` (Kafka when `--kafka-brokers` is set).
    pub fn with_bus(
        redis: Option<fred::prelude::Pool>,
        store: Option<holdfast_store::Store>,
        region: &str,
        bus_config: BusConfig,
    ) -> Result<Self, holdfast_platform::events::BusError> {
        Ok(Self {
            redis,
            store,
            bus: bus_config.publisher()?,
            bus_config,
            region: region.to_string(),
        })
    }
}

fn redis_and_store(
    engines: &Engines,
    service: &str,
) -> anyhow::Result<(fred::prelude::Pool, holdfast_store::Store)> {
    let redis = engines
        .redis
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{service} needs --redis-url"))?;
    let store = engines
        .store
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{service} needs --store"))?;
    Ok((redis, store))
}

/// Opens the durable store named by `url` (SQLite migrates itself; ScyllaDB needs `migrate`).
pub async fn open_store(
    url: &holdfast_platform::StoreUrl,
) -> Result<holdfast_store::Store, holdfast_store::StoreError> {
    Ok(match url {
        holdfast_platform::StoreUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| holdfast_store::StoreError::Unavailable(e.to_string()))?;
            }
            holdfast_store::SqliteStore::open(path).await?.into()
        }
        holdfast_platform::StoreUrl::Scylla(nodes) => holdfast_store::ScyllaStore::connect(nodes, "holdfast")
            .await?
            .into(),
    })
}

/// A built server and the background work its services need; dropping it stops that work.
pub struct Mesh {
    /// Serve this.
    pub server: GrpcServer,
    /// The inventory's sweeper, relay and rebalancer, when inventory runs here.
    pub inventory: Option<holdfast_inventory::RunningInventory>,
    /// The cart's write-behind worker, when cart runs here.
    pub cart: Option<holdfast_cart::RunningCart<holdfast_store::Store>>,
    /// The orders' recovery worker and outbox relay, when orders runs here.
    pub orders: Option<holdfast_orders::RunningOrders<holdfast_store::Store>>,
    /// The warehouse's consumer (and relay, unless orders' relay publishes its outbox),
    /// when warehouse runs here.
    pub warehouse: Option<holdfast_warehouse::RunningWarehouse<holdfast_store::Store>>,
    /// Inventory's consumer of warehouse stock changes, when inventory runs here.
    pub reconciliation: Option<ConsumerHandle>,
    /// Issue 17: the search indexer (with catalog) and the notifications service.
    pub read_side: (
        Option<read_side::RunningSearch>,
        Option<holdfast_notifications::RunningNotifications>,
    ),
}

/// The orders service's options from the shared flags (and the fault hook from the env).
pub fn orders_options(common: &CommonArgs) -> holdfast_orders::OrdersOptions {
    let mut options = holdfast_orders::OrdersOptions::from_env();
    options.risk.max_amount_minor = common.risk_max_amount;
    options.risk.max_orders_per_window = common.risk_max_orders_per_hour;
    options.saga_lease = common.saga_lease;
    options
}

/// A lazily connected channel to `url`, or to this process (`self_addr`) when unset.
fn upstream(
    url: Option<&String>,
    self_addr: std::net::SocketAddr,
) -> anyhow::Result<tonic::transport::Channel> {
    let url = url.cloned().unwrap_or_else(|| format!("http://{self_addr}"));
    Ok(tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Builds a server with `services` registered on `engines`: loads scripts and starts
/// background work, so the caller can mark health SERVING as soon as this returns.
///
/// `self_addr` is where this server will listen: services that call others default to it.
pub async fn build_server(
    services: &[ServiceName],
    common: &CommonArgs,
    engines: &Engines,
    self_addr: std::net::SocketAddr,
) -> anyhow::Result<Mesh> {
    let mut server = GrpcServer::new(ServerOptions::from(common));
    let mut running_inventory = None;
    let mut running_cart = None;
    let mut running_orders: Option<holdfast_orders::RunningOrders<holdfast_store::Store>> = None;
    let mut running_warehouse = None;
    let mut reconciliation = None;
    let (mut running_search, mut running_notifications) = (None, None);
    for service in services {
        let name = service.as_str();
        match service {
            ServiceName::Inventory => {
                let redis = engines
                    .redis
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("inventory needs --redis-url"))?;
                let running = holdfast_inventory::start(
                    redis,
                    engines.bus.clone(),
                    &engines.region,
                    holdfast_inventory::InventoryOptions::default(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("starting inventory: {e}"))?;
                // Warehouse stock changes flow into this region's on_hand.
                reconciliation = Some(
                    holdfast_inventory::reconcile::spawn(
                        &engines.bus_config,
                        running.stock.clone(),
                        &engines.region,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("inventory: consuming warehouse stock changes: {e}"))?,
                );
                server.add_service(name, running.service.clone());
                running_inventory = Some(running);
            }
            ServiceName::Catalog => {
                let (redis, store) = redis_and_store(engines, "catalog")?;
                // Issue 17: search beside catalog.
                let (options, search) = read_side::start_search(store.clone(), engines, common).await?;
                running_search = Some(search);
                let service = holdfast_catalog::start_with(redis, store, options)
                    .await
                    .map_err(|e| anyhow::anyhow!("starting catalog: {e}"))?;
                server.add_service(name, service);
            }
            ServiceName::Cart => {
                let (redis, store) = redis_and_store(engines, "cart")?;
                let running = holdfast_cart::start(
                    redis,
                    store,
                    upstream(common.catalog_url.as_ref(), self_addr)?,
                    upstream(common.inventory_url.as_ref(), self_addr)?,
                    holdfast_cart::CartOptions::default(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("starting cart: {e}"))?;
                server.add_service(name, running.service.clone());
                running_cart = Some(running);
            }
            ServiceName::Orders => {
                let store = engines
                    .store
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("orders needs --store"))?;
                let running = holdfast_orders::start(
                    store,
                    holdfast_orders::Upstreams {
                        catalog: upstream(common.catalog_url.as_ref(), self_addr)?,
                        inventory: upstream(common.inventory_url.as_ref(), self_addr)?,
                        cart: upstream(common.cart_url.as_ref(), self_addr)?,
                        payments: upstream(common.payments_url.as_ref(), self_addr)?,
                    },
                    engines.bus.clone(),
                    &engines.region,
                    orders_options(common),
                );
                let mut running = running;
                running
                    .consume(&engines.bus_config)
                    .await
                    .map_err(|e| anyhow::anyhow!("orders: consuming shipment events: {e}"))?;
                server.add_service(name, running.service.clone());
                running_orders = Some(running);
            }
            ServiceName::Warehouse => {
                let store = engines
                    .store
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("warehouse needs --store"))?;
                // One relay per outbox: when orders runs here on the same store, its relay
                // publishes the warehouse's events too, woken after each warehouse change.
                let relay = match &running_orders {
                    Some(orders) => {
                        let engine = std::sync::Arc::clone(&orders.engine);
                        holdfast_warehouse::OutboxRelay::Shared(Arc::new(move || {
                            engine.outbox_written.notify_one()
                        }))
                    }
                    None => holdfast_warehouse::OutboxRelay::Own,
                };
                let mut running = holdfast_warehouse::start(
                    store,
                    engines.bus.clone(),
                    &engines.region,
                    holdfast_warehouse::WarehouseOptions {
                        relay,
                        ..holdfast_warehouse::WarehouseOptions::default()
                    },
                );
                running
                    .consume(&engines.bus_config)
                    .await
                    .map_err(|e| anyhow::anyhow!("warehouse: consuming fulfillment and order events: {e}"))?;
                server.add_service(name, running.service.clone());
                running_warehouse = Some(running);
            }
            ServiceName::Payments => {
                std::fs::create_dir_all(&common.data_dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", common.data_dir.display()))?;
                let service = holdfast_payments::start(holdfast_payments::PaymentsOptions {
                    database: Some(common.data_dir.join("payments.db")),
                    latency: common.payments_latency,
                    ..holdfast_payments::PaymentsOptions::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("starting payments: {e}"))?;
                server.add_service(name, service);
            }
            ServiceName::Notifications => {
                let running = read_side::start_notifications(engines, common).await?;
                server.add_service(name, running.service.clone());
                running_notifications = Some(running);
            }
        }
    }
    // Issue 17: catalog's outbox rows go out through orders' relay when it runs here.
    if let (Some(search), Some(store)) = (running_search.as_mut(), engines.store.clone()) {
        let shared = running_orders.as_ref().map(|orders| {
            let engine = Arc::clone(&orders.engine);
            Arc::new(move || engine.outbox_written.notify_one()) as Arc<dyn Fn() + Send + Sync>
        });
        read_side::publish_catalog_outbox(search, store, engines, shared);
    }
    Ok(Mesh {
        server,
        inventory: running_inventory,
        cart: running_cart,
        orders: running_orders,
        warehouse: running_warehouse,
        reconciliation,
        read_side: (running_search, running_notifications),
    })
}
