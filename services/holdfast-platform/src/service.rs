//! One start shape for every service, and the start sequence a process runs them in.
//!
//! Each service crate has a configuration section (a clap `Args` struct such as
//! `holdfast_orders::OrdersArgs`, flattened into the binary's command line) that implements
//! [`Service`]: given the engines the process built ([`Context`]), it loads what it needs and
//! answers its [`ServiceParts`] (its gRPC service, its consumers, the relays that publish its
//! events and its other background work) without starting any of them. [`start`] then runs a
//! list of services in the one order that loses no event:
//!
//! 1. build every service and register its gRPC service;
//! 2. subscribe every consumer (and tell the in-process bus they are all in);
//! 3. start the relays: the services' own and the process's one relay per store outbox;
//! 4. start the other background work.
//!
//! So no relay can publish before a consumer of the same process has subscribed.

use std::any::Any;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::PeerArgs;
use crate::events::{BusConfig, BusError, ConsumerHandle, EventBus, EventHandler, spawn_consumer};
use crate::server::GrpcServer;

/// The engines a service may need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Redis (`--redis-url`).
    pub redis: bool,
    /// The durable store (`--store`).
    pub store: bool,
}

/// A service as the process runs it: its configuration section knows how to build it.
pub trait Service<S>: Send + Sync {
    /// Short name (`orders`): `holdfast serve <name>`, health, logs.
    fn name(&self) -> &'static str;
    /// The engines it needs, checked before anything is connected.
    fn needs(&self) -> Needs;
    /// Builds it over `ctx` (loads scripts, opens its files) and answers its parts, started
    /// by [`start`] in order. Nothing that publishes events may run before then.
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>>;
}

/// What the process built for its services: clients to the engines, the bus, and where the
/// other services are. `S` is the durable store's client type.
pub struct Context<S> {
    /// Redis, when a service here needs it.
    pub redis: Option<fred::prelude::Pool>,
    /// The durable store, when a service here needs it.
    pub store: Option<S>,
    /// Where events go.
    pub bus: Arc<dyn EventBus>,
    /// The bus consumers join.
    pub bus_config: BusConfig,
    /// Region stamped on events.
    pub region: String,
    /// Directory for embedded engines' files.
    pub data_dir: PathBuf,
    /// Where the other services are; unset ones are this process.
    pub peers: PeerArgs,
    /// This process's gRPC address.
    pub self_addr: SocketAddr,
    /// Wakes the process's relay of the store's outbox: notify it after committing events.
    pub outbox_written: Arc<Notify>,
}

/// A service another one calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// CatalogService.
    Catalog,
    /// InventoryService.
    Inventory,
    /// CartService.
    Cart,
    /// PaymentsService.
    Payments,
}

impl<S> Context<S> {
    /// Redis, or an error naming the flag `service` needs.
    pub fn redis(&self, service: &str) -> anyhow::Result<fred::prelude::Pool> {
        self.redis
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{service} needs --redis-url"))
    }


    /// A lazily connected channel to `peer`: its URL flag, or this process when unset.
    pub fn channel(&self, peer: Peer) -> anyhow::Result<tonic::transport::Channel> {
        let url = match peer {
            Peer::Catalog => &self.peers.catalog_url,
            Peer::Inventory => &self.peers.inventory_url,
            Peer::Cart => &self.peers.cart_url,
            Peer::Payments => &self.peers.payments_url,
        };
        let url = url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.self_addr));
        Ok(tonic::transport::Endpoint::from_shared(url)?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy())
    }
}

impl<S: Clone> Context<S> {
    /// The durable store, or an error naming the flag `service` needs.
    pub fn store(&self, service: &str) -> anyhow::Result<S> {
        self.store
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{service} needs --store"))
    }
}

type Register = Box<dyn FnOnce(&mut GrpcServer) + Send>;
type Drain = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

struct ConsumerSpec {
    group: &'static str,
    topics: Vec<&'static str>,
    handler: Arc<dyn EventHandler>,
}

/// A built service, not yet running: see [`start`] for the order its parts start in.
pub struct ServiceParts {
    name: &'static str,
    register: Register,
    consumers: Vec<ConsumerSpec>,
    relays: Vec<BoxFuture<'static, ()>>,
    tasks: Vec<BoxFuture<'static, ()>>,
    writes_store_outbox: bool,
    drain: Vec<Drain>,
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl ServiceParts {
    /// A service named `name` serving `grpc` (health reports it under `name` and its
    /// gRPC name).
    pub fn new<G>(name: &'static str, grpc: G) -> Self
    where
        G: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        G::Response: axum::response::IntoResponse,
        G::Future: Send + 'static,
    {
        Self {
            name,
            register: Box::new(move |server: &mut GrpcServer| {
                server.add_service(name, grpc);
            }),
            consumers: Vec::new(),
            relays: Vec::new(),
            tasks: Vec::new(),
            writes_store_outbox: false,
            drain: Vec::new(),
            keep: Vec::new(),
        }
    }

    /// Consumes `topics` in consumer group `group` with `handler`.
    pub fn consumer(
        mut self,
        group: &'static str,
        topics: &[&'static str],
        handler: impl EventHandler,
    ) -> Self {
        self.consumers.push(ConsumerSpec {
            group,
            topics: topics.to_vec(),
            handler: Arc::new(handler),
        });
        self
    }

    /// Publishes this service's own outbox (one not in the store, e.g. Redis); started
    /// after every consumer subscribed.
    pub fn relay(mut self, relay: impl Future<Output = ()> + Send + 'static) -> Self {
        self.relays.push(Box::pin(relay));
        self
    }

    /// Writes events to the store's outbox (waking [`Context::outbox_written`]): the process
    /// runs one relay for that store.
    pub fn writes_store_outbox(mut self) -> Self {
        self.writes_store_outbox = true;
        self
    }

    /// Background work that publishes nothing itself.
    pub fn task(mut self, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.tasks.push(Box::pin(task));
        self
    }

    /// Runs `drain` once the server drained, before connections close.
    pub fn on_drain<F>(mut self, drain: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.drain.push(Box::new(move || Box::pin(drain())));
        self
    }

    /// Keeps `value` alive as long as the service runs (handles tests and tools use).
    pub fn keep(mut self, value: impl Any + Send + Sync) -> Self {
        self.keep.push(Box::new(value));
        self
    }
}

/// Services started by [`start`]; dropping it stops their background work and consumers.
pub struct Running {
    names: Vec<&'static str>,
    tasks: Vec<JoinHandle<()>>,
    consumers: Vec<ConsumerHandle>,
    drain: Vec<Drain>,
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("services", &self.names)
            .field("tasks", &self.tasks.len())
            .field("consumers", &self.consumers.len())
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The services' names, in start order.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// The first kept value of type `T` (a service's engine, for tests and tools).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.keep.iter().find_map(|k| k.downcast_ref::<T>())
    }

    /// Runs every service's drain step (e.g. the cart's last write-behind), in start order.
    pub async fn drain(&mut self) {
        for drain in self.drain.drain(..) {
            drain().await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Builds `services` over `ctx`, registers them on `server` and starts them in order: every
/// consumer subscribed before any relay runs. `store_relay` is the process's relay of the
/// store's outbox, run once (when some service writes it) however many services share it.
///
/// Returns once every part is started, so the caller can mark health SERVING.
pub async fn start<S>(
    services: &[&dyn Service<S>],
    ctx: &Context<S>,
    server: &mut GrpcServer,
    store_relay: impl FnOnce() -> BoxFuture<'static, ()>,
) -> anyhow::Result<Running> {
    let mut parts = Vec::with_capacity(services.len());
    for service in services {
        let built = service
            .build(ctx)
            .await
            .map_err(|e| anyhow::anyhow!("starting {}: {e:#}", service.name()))?;
        parts.push(built);
    }
    let mut running = Running {
        names: Vec::new(),
        tasks: Vec::new(),
        consumers: Vec::new(),
        drain: Vec::new(),
        keep: Vec::new(),
    };
    let mut relays = Vec::new();
    let mut tasks = Vec::new();
    let mut store_outbox = false;
    for part in parts {
        running.names.push(part.name);
        (part.register)(server);
        for consumer in part.consumers {
            running.consumers.push(
                spawn_consumer(
                    &ctx.bus_config,
                    consumer.group,
                    &consumer.topics,
                    consumer.handler,
                )
                .await
                .map_err(|e: BusError| {
                    anyhow::anyhow!("{}: consuming {:?}: {e}", part.name, consumer.topics)
                })?,
            );
        }
        relays.extend(part.relays);
        tasks.extend(part.tasks);
        store_outbox |= part.writes_store_outbox;
        running.drain.extend(part.drain);
        running.keep.extend(part.keep);
    }
    // Every consumer is in: from here a topic without one has no reader in this process.
    ctx.bus_config.consumers_ready();
    if store_outbox {
        running.tasks.push(tokio::spawn(store_relay()));
    }
    running.tasks.extend(relays.into_iter().map(tokio::spawn));
    running.tasks.extend(tasks.into_iter().map(tokio::spawn));
    Ok(running)
}
