//! CartService: shopping carts of signed-in customers and anonymous sessions.
//!
//! The live cart is a Redis hash per owner (layout in `docs/cart.md`), changed only by the
//! Lua scripts in `lua/cart_*.lua` so two devices changing one cart at once lose nothing.
//! Prices come from the catalog and stock from inventory, both over gRPC. Every change is
//! written behind to the durable store within [`CartOptions::flush_every`] plus one store
//! write, and a cart missing from Redis is re-warmed from the store before it is read or
//! changed, so a Redis loss loses no cart older than that.

pub mod authz;
mod copies;
pub mod error;
pub mod live;
mod lookup;
pub mod purge;
pub mod scripts;
pub mod service;
pub mod validate;
mod view;
pub mod write_behind;

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::Pool;
use futures::future::BoxFuture;
use holdfast_platform::task::AbortOnDrop;
use holdfast_platform::telemetry::TracePropagation;
use holdfast_platform::{Context, Needs, Peer, PeerChannel, Service, ServiceParts};
use holdfast_proto::cart::v1::cart_service_server::CartServiceServer;
use holdfast_store::{CartPurge, CartStore};

pub use error::CartError;
pub use live::{LiveCart, LiveLine, Owner};
pub use service::Cart;
pub use view::Priced;
pub use write_behind::WriteBehind;

/// Limits and timings of the cart service.
#[derive(Debug, Clone)]
pub struct CartOptions {
    /// Most lines one cart may hold.
    pub max_lines: u32,
    /// Most units one line may hold.
    pub max_quantity: i64,
    /// How long a cart lives after its last change.
    pub ttl: Duration,
    /// Longest a change waits before it is written to the durable store.
    pub flush_every: Duration,
    /// Deadline of every call to the catalog and inventory.
    pub upstream_timeout: Duration,
    /// How often durable carts untouched for `ttl` are purged from the store.
    pub purge_every: Duration,
    /// What calls to the catalog and inventory carry: the trace and this process's service
    /// token ([`holdfast_platform::Context::outbound`]).
    pub outbound: TracePropagation,
    /// How a view learns its SKUs' products and units available.
    pub view: ViewPath,
}

/// How a cart's view learns the products and units available of its SKUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewPath {
    /// `cart_view.lua` reads the cart with the catalog's cache and inventory's counters in one
    /// round trip, and only what it cannot answer exactly is asked over gRPC (standalone Redis;
    /// a cluster always takes `rpc`).
    #[default]
    Script,
    /// The cart's hash, then the catalog and inventory over their RPCs, as before the script
    /// and as on a cluster: a switch to turn the script off without a deploy, and the
    /// same-run baseline of `holdfast-load bench cart`.
    Rpc,
}

impl Default for CartOptions {
    fn default() -> Self {
        Self {
            max_lines: 100,
            max_quantity: 99,
            ttl: Duration::from_secs(30 * 24 * 3600),
            flush_every: Duration::from_millis(250),
            upstream_timeout: Duration::from_secs(2),
            purge_every: Duration::from_secs(3600),
            outbound: TracePropagation::default(),
            view: ViewPath::default(),
        }
    }
}

/// A running cart service: the gRPC service plus its background task (write-behind worker
/// and durable-cart purge, stopped on drop).
pub struct RunningCart<S: CartStore + Clone + 'static> {
    /// Register this with the server.
    pub service: CartServiceServer<Cart<S>>,
    _write_behind_task: AbortOnDrop,
    write_behind: Arc<WriteBehind>,
    redis: Pool,
    store: S,
}

impl<S: CartStore + Clone + 'static> RunningCart<S> {
    /// Writes every cart changed since the last window to the store now. Call on shutdown,
    /// after the server drained and before Redis connections close, so no change waits for
    /// the cart's next change to become durable. Returns how many carts could not be saved.
    pub async fn flush(&self) -> usize {
        let failures = write_behind::flush(&self.write_behind, &self.redis, &self.store).await;
        for (owner, error) in &failures {
            tracing::warn!(%owner, %error, "cart not saved on shutdown; Redis still has it");
        }
        failures.len()
    }
}

/// Builds the cart over `store` and `redis` without starting its write-behind worker: the
/// service, and the worker to spawn.
fn build<S: CartStore + Clone + 'static>(
    redis: Pool,
    store: S,
    catalog: PeerChannel,
    inventory: PeerChannel,
    options: CartOptions,
) -> (
    CartServiceServer<Cart<S>>,
    Arc<WriteBehind>,
    impl Future<Output = ()> + Send + 'static,
) {
    let write_behind = Arc::new(WriteBehind::new());
    let worker = write_behind::run(
        Arc::clone(&write_behind),
        redis.clone(),
        store.clone(),
        options.flush_every,
    );
    let cart = Cart::new(
        redis,
        store,
        catalog,
        inventory,
        Arc::clone(&write_behind),
        options,
    );
    (CartServiceServer::new(cart), write_behind, worker)
}

/// Loads the scripts (so the first call never pays for it), starts the write-behind worker
/// and builds the service. `catalog` and `inventory` may be lazy channels
/// (`Endpoint::connect_lazy`), even to the server this service will run in, or in-process
/// channels ([`PeerChannel`]). Call before marking health SERVING.
pub async fn start<S: CartStore + CartPurge + Clone + 'static>(
    redis: Pool,
    store: S,
    catalog: impl Into<PeerChannel>,
    inventory: impl Into<PeerChannel>,
    options: CartOptions,
) -> Result<RunningCart<S>, CartError> {
    scripts::load_all(redis.next()).await?;
    let purge = purge::run(store.clone(), options.ttl, options.purge_every);
    let (service, write_behind, worker) = build(
        redis.clone(),
        store.clone(),
        catalog.into(),
        inventory.into(),
        options,
    );
    let task = tokio::spawn(async move {
        tokio::join!(worker, purge);
    });
    Ok(RunningCart {
        service,
        _write_behind_task: AbortOnDrop::new(task),
        write_behind,
        redis,
        store,
    })
}

/// The cart's section of the command line (where catalog and inventory are is
/// [`holdfast_platform::PeerArgs`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CartArgs {
    /// How a cart's view reads its SKUs' products and stock: `script` (one round trip with
    /// the cart, standalone Redis) or `rpc` (the catalog and inventory asked over their RPCs,
    /// as on a cluster). docs/cart.md.
    #[arg(long = "cart-view", env = "HOLDFAST_CART_VIEW", value_enum, default_value_t = ViewPath::default())]
    pub view: ViewPath,
}

impl<S> Service<S> for CartArgs
where
    S: CartStore + CartPurge + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "cart"
    }

    fn needs(&self) -> Needs {
        Needs {
            redis: true,
            store: true,
        }
    }

    /// Live carts in Redis, written behind to the store; on drain, the last changes are
    /// written before Redis connections close.
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
        Box::pin(async move {
            let (redis, store) = (ctx.redis("cart")?, ctx.store("cart")?);
            scripts::load_all(redis.next()).await?;
            let options = CartOptions {
                outbound: ctx.outbound(),
                view: self.view,
                ..CartOptions::default()
            };
            let purge = purge::run(store.clone(), options.ttl, options.purge_every);
            let (service, write_behind, worker) = build(
                redis.clone(),
                store.clone(),
                ctx.channel(Peer::Catalog)?,
                ctx.channel(Peer::Inventory)?,
                options,
            );
            Ok(ServiceParts::new("cart", service)
                .authz(&authz::TABLE)
                .task(worker)
                .task(purge)
                .on_drain(move || async move {
                    let failures = write_behind::flush(&write_behind, &redis, &store).await;
                    for (owner, error) in &failures {
                        tracing::warn!(%owner, %error, "cart not saved on shutdown; Redis still has it");
                    }
                }))
        })
    }
}
