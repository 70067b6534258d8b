//! Wiring for the `holdfast` binary: which services run, on which engines.
//!
//! `holdfast dev` runs every service in one process with the embedded defaults;
//! `holdfast serve <service>` runs one, with its engines from flags or `HOLDFAST_*` env.
//! Every service has the same shape ([`holdfast_platform::Service`], implemented by its
//! section of the command line), so both are a list: [`RunArgs::services`].

pub mod outbox;
pub mod reconcile;
pub mod regions;

use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use holdfast_cart::CartArgs;
use holdfast_catalog::CatalogArgs;
use holdfast_inventory::InventoryArgs;
use holdfast_notifications::NotificationsArgs;
use holdfast_orders::OrdersArgs;
use holdfast_payments::PaymentsArgs;
use holdfast_platform::auth::AuthArgs;
use holdfast_platform::events::{BusConfig, BusError};
use holdfast_platform::service::{self, Running};
use holdfast_platform::{CommonArgs, Context, GrpcServer, Needs, ServerOptions, Service};
use holdfast_store::{Store, StoreArgs, StoreUrl};
use holdfast_warehouse::WarehouseArgs;

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
        /// Shared flags and every service's section.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Print a bearer token for grpcurl and scripts, signed with the dev key `holdfast dev`
    /// generated in --data-dir: `grpcurl -H "authorization: Bearer $(holdfast token --customer c1)" ...`.
    Token(TokenArgs),
    /// Apply the durable store's schema (ScyllaDB: schema/scylla.cql; SQLite migrates itself
    /// on open) and exit. Safe to run again.
    Migrate {
        /// The store to migrate: `sqlite://PATH` or `scylla://host:port,...`.
        #[arg(long, env = "HOLDFAST_STORE", value_name = "URL", value_parser = StoreUrl::parse)]
        store: StoreUrl,
    },
    /// Multi-region: print the cross-region reconciliation of a region's inventory (a
    /// table, then JSON); exits 2 when any SKU drifted or could not be confirmed.
    Reconcile(reconcile::ReconcileArgs),
    /// Multi-region operator actions: `holdfast regions move` moves a dead region's units of
    /// a global SKU to the receiving region (audited).
    Regions(regions::RegionsArgs),
    /// One service, with its engines from flags or env.
    Serve {
        /// Which service.
        service: ServiceName,
        /// Shared flags and every service's section.
        #[command(flatten)]
        args: RunArgs,
    },
}

/// `holdfast token`: whose token, for how long, signed by which data dir's dev key.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("role").required(true).multiple(true).args(["customer", "session", "admin", "service"])))]
pub struct TokenArgs {
    /// A customer token with this customer id as `sub` (with --session, also bound to that
    /// session: what MergeCarts needs).
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// A token bound to this anonymous session (`sid`): alone, an anonymous shopper's.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// An `admin` token (stock, catalog writes, warehouses, receiving returns).
    #[arg(long, conflicts_with_all = ["customer", "session", "service"])]
    pub admin: bool,
    /// A `service` token (payments, committing holds; acts for any customer).
    #[arg(long, conflicts_with_all = ["customer", "session", "admin"])]
    pub service: bool,
    /// How long the token is valid.
    #[arg(long, default_value = "60m", value_parser = holdfast_platform::config::parse_duration)]
    pub ttl: std::time::Duration,
    /// The data dir of the `holdfast dev` whose key signs the token.
    #[arg(long, env = "HOLDFAST_DATA_DIR", default_value = "./data", value_name = "DIR")]
    pub data_dir: std::path::PathBuf,
}

impl TokenArgs {
    /// The token, signed with the dev key in --data-dir.
    pub fn mint(&self) -> Result<String, holdfast_platform::auth::AuthError> {
        use holdfast_platform::auth::{DevKey, Role};
        let signer = DevKey::load(&self.data_dir)?.signer();
        let (role, subject) = if self.admin {
            (Role::Admin, Some("admin"))
        } else if self.service {
            (Role::Service, Some("service"))
        } else {
            (Role::Customer, self.customer.as_deref())
        };
        signer.mint(role, subject, self.session.as_deref(), self.ttl)
    }
}

/// The command line of `dev` and `serve`: the shared flags, the store's, and each service's
/// own section (each crate owns its flags, as linkerd2-proxy's components own theirs).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// `--store`.
    #[command(flatten)]
    pub store: StoreArgs,
    /// `--auth-*`: who may call.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// InventoryService's section.
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// CatalogService's section.
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// CartService's section.
    #[command(flatten)]
    pub cart: CartArgs,
    /// PaymentsService's section.
    #[command(flatten)]
    pub payments: PaymentsArgs,
    /// OrderService's section.
    #[command(flatten)]
    pub orders: OrdersArgs,
    /// WarehouseService's section.
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    /// NotificationService's section.
    #[command(flatten)]
    pub notifications: NotificationsArgs,
}

impl RunArgs {
    /// Every service, in start-up order.
    pub fn services(&self) -> [&dyn Service<Store>; 7] {
        [
            &self.inventory,
            &self.catalog,
            &self.cart,
            &self.payments,
            &self.orders,
            &self.warehouse,
            &self.notifications,
        ]
    }
}

impl Cli {
    /// Defaults that differ under `holdfast dev`: browsers on loopback origins (any port) may
    /// call over grpc-web unless `--cors-origin` says otherwise.
    pub fn apply_dev_defaults(&mut self) {
        if let Command::Dev { args } = &mut self.command {
            args.common.cors.default_to_loopback();
        }
    }
}

impl Command {
    /// The services to run, their flags and whether this is `dev`; `None` for `migrate`.
    /// Under `dev`, the dev defaults apply first (a default warehouse per region).
    pub fn split(&mut self) -> Option<(Vec<&dyn Service<Store>>, &RunArgs, bool)> {
        if let Command::Dev { args } = self {
            args.warehouse.dev = true;
        }
        match &*self {
            Command::Dev { args } => Some((args.services().to_vec(), args, true)),
            Command::Serve { service, args } => {
                let chosen = args
                    .services()
                    .into_iter()
                    .filter(|s| s.name() == service.as_str())
                    .collect();
                Some((chosen, args, false))
            }
            Command::Migrate { .. } | Command::Token(_) | Command::Reconcile(_) | Command::Regions(_) => None,
        }
    }
}

/// A service's short name, as `serve` takes it.
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
    /// Customer notifications from order events.
    Notifications,
}

impl ServiceName {
    /// The short name (`inventory`), the one its [`Service::name`] answers.
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
}

/// Every service's authorization table (the auth layer enforces those of the services a
/// process runs; tests and tools pick tokens by them).
pub fn authz_tables() -> [&'static holdfast_platform::auth::AuthzTable; 7] {
    [
        &holdfast_inventory::authz::TABLE,
        &holdfast_catalog::authz::TABLE,
        &holdfast_cart::authz::TABLE,
        &holdfast_payments::authz::TABLE,
        &holdfast_orders::authz::TABLE,
        &holdfast_warehouse::authz::TABLE,
        &holdfast_notifications::authz::TABLE,
    ]
}

/// What `services` need between them.
pub fn needs(services: &[&dyn Service<Store>]) -> Needs {
    services.iter().fold(Needs::default(), |acc, s| {
        let n = s.needs();
        Needs {
            redis: acc.redis || n.redis,
            store: acc.store || n.store,
        }
    })
}

/// The services' context over the built clients; `self_addr` is where this process listens
/// (services that call others default to it). Its outbound credentials are unset: set
/// `credentials` from [`AuthArgs::resolve`].
pub fn context(
    args: &RunArgs,
    redis: Option<fred::prelude::Pool>,
    store: Option<Store>,
    bus_config: BusConfig,
    self_addr: std::net::SocketAddr,
) -> Result<Context<Store>, BusError> {
    Ok(Context {
        redis,
        store,
        bus: bus_config.publisher()?,
        bus_config,
        region: args.common.region.clone(),
        data_dir: args.common.data_dir.clone(),
        peers: args.common.peers.clone(),
        self_addr,
        // Plaintext; the binary sets `--tls-*` after loading them (config errors exit 64).
        peer_tls: holdfast_platform::tls::PeerTls::plaintext(),
        outbox_written: Arc::default(),
        credentials: Default::default(),
        local: Default::default(),
        draining: Default::default(),
    })
}

/// A built server and its running services; dropping it stops their background work.
pub struct Mesh {
    /// Serve this.
    pub server: GrpcServer,
    /// The services' consumers, relays and background work.
    pub running: Running,
}

/// Builds a server with `services` on `ctx` and starts them (consumers, then the relays,
/// then the rest), so the caller can mark health SERVING as soon as this returns.
pub async fn build_server(
    services: &[&dyn Service<Store>],
    common: &CommonArgs,
    ctx: &Context<Store>,
) -> anyhow::Result<Mesh> {
    let mut server = GrpcServer::new(ServerOptions::from(common));
    let relay = ctx.store.clone().map(|store| {
        outbox::relay(
            store,
            Arc::clone(&ctx.outbox_written),
            Arc::clone(&ctx.bus),
            ctx.region.clone(),
        )
    });
    let running = service::start(services, ctx, &mut server, move || match relay {
        Some(relay) => Box::pin(relay),
        None => Box::pin(std::future::ready(())),
    })
    .await?;
    Ok(Mesh { server, running })
}
