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

use crate::auth::{AuthzTable, ServiceCredentials};
use crate::config::PeerArgs;
use crate::drain::Draining;
use crate::events::{BusConfig, BusError, ConsumerHandle, EventBus, EventHandler, spawn_consumer};
use crate::peer::{LocalServices, PeerChannel};
use crate::server::GrpcServer;
use crate::tls::PeerTls;

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
    /// TLS to `https://` peers, and whether calls to this process go over TLS.
    pub peer_tls: PeerTls,
    /// Wakes the process's relay of the store's outbox: notify it after committing events.
    pub outbox_written: Arc<Notify>,
    /// The `service` token this process presents to the services it calls.
    pub credentials: ServiceCredentials,
    /// This process's own services, for in-process calls to peers without a URL flag
    /// ([`Context::channel`]); [`start`] has the server serve them.
    pub local: LocalServices,
    /// The server's drain, for handlers of long-lived streams; [`start`] has the server start
    /// it.
    pub draining: Draining,
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
    /// WarehouseService.
    Warehouse,
}

impl<S> Context<S> {
    /// The interceptor every client to another service uses: trace context and this
    /// process's service token.
    pub fn outbound(&self) -> crate::telemetry::TracePropagation {
        crate::telemetry::TracePropagation::with_credentials(self.credentials.clone())
    }

    /// Redis, or an error naming the flag `service` needs.
    pub fn redis(&self, service: &str) -> anyhow::Result<fred::prelude::Pool> {
        self.redis
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{service} needs --redis-url"))
    }

    /// A channel to `peer`. With its URL flag: a lazily connected gRPC channel (`https://`
    /// with [`Context::peer_tls`]). Without: this process, called in-process
    /// ([`crate::peer`]: no socket, the same deadline, auth, trace and metrics layers, at most
    /// `--peer-concurrency` calls in flight to it), or over loopback gRPC with
    /// `--peers-over-grpc` (over TLS when this process's listener speaks it).
    pub fn channel(&self, peer: Peer) -> anyhow::Result<PeerChannel> {
        let (name, url) = match peer {
            Peer::Catalog => ("catalog", &self.peers.catalog_url),
            Peer::Inventory => ("inventory", &self.peers.inventory_url),
            Peer::Cart => ("cart", &self.peers.cart_url),
            Peer::Payments => ("payments", &self.peers.payments_url),
            Peer::Warehouse => ("warehouse", &self.peers.warehouse_url),
        };
        if url.is_none() && !self.peers.peers_over_grpc {
            return Ok(self.local.channel(name, self.peers.peer_concurrency as usize));
        }
        Ok(self
            .peer_tls
            .endpoint(url.as_deref(), self.self_addr)?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy()
            .into())
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

    /// The service's authorization table, enforced when the server authenticates.
    pub fn authz(mut self, table: &'static AuthzTable) -> Self {
        let register = self.register;
        self.register = Box::new(move |server: &mut GrpcServer| {
            server.authorize(table);
            register(server);
        });
        self
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
    server.serve_in_process(&ctx.local);
    server.drain_with(&ctx.draining);
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::task::{Context as TaskContext, Poll};

    use tokio::sync::{mpsc, oneshot};
    use tonic::body::Body;
    use tonic::server::NamedService;

    use super::*;
    use crate::events::{Event, handler_fn};
    use crate::server::ServerOptions;

    const TOPIC: &str = "holdfast.test.v1";

    /// A gRPC service answering nothing, named per `N`.
    #[derive(Clone)]
    struct Stub<const N: u8>;

    impl NamedService for Stub<1> {
        const NAME: &'static str = "holdfast.test.v1.Publisher";
    }

    impl NamedService for Stub<2> {
        const NAME: &'static str = "holdfast.test.v1.Consumer";
    }

    impl<const N: u8> tower::Service<http::Request<Body>> for Stub<N> {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    /// Publishes one event the moment its relay starts, once, and reports whether the bus
    /// took it.
    struct Publisher(Mutex<Option<oneshot::Sender<bool>>>);

    impl Service<()> for Publisher {
        fn name(&self) -> &'static str {
            "publisher"
        }

        fn needs(&self) -> Needs {
            Needs::default()
        }

        fn build<'a>(&'a self, ctx: &'a Context<()>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
            let report = self.0.lock().expect("lock").take();
            let bus = Arc::clone(&ctx.bus);
            Box::pin(async move {
                Ok(ServiceParts::new("publisher", Stub::<1>).relay(async move {
                    let event = Event {
                        id: "first".into(),
                        topic: TOPIC.into(),
                        key: "k".into(),
                        event_type: "test.happened".into(),
                        region: "local".into(),
                        payload: Vec::new(),
                        traceparent: None,
                    };
                    let taken = bus.publish(vec![event]).await.is_ok();
                    if let Some(report) = report {
                        let _ = report.send(taken);
                    }
                }))
            })
        }
    }

    /// Consumes the topic, passing on every event id.
    struct Consumer(mpsc::UnboundedSender<String>);

    impl Service<()> for Consumer {
        fn name(&self) -> &'static str {
            "consumer"
        }

        fn needs(&self) -> Needs {
            Needs::default()
        }

        fn build<'a>(&'a self, _: &'a Context<()>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
            let seen = self.0.clone();
            Box::pin(async move {
                Ok(ServiceParts::new("consumer", Stub::<2>).consumer(
                    "test",
                    &[TOPIC],
                    handler_fn(move |event: Event| {
                        let seen = seen.clone();
                        async move {
                            let _ = seen.send(event.id);
                            Ok(())
                        }
                    }),
                ))
            })
        }
    }

    /// A context without engines, its peers at `peers`.
    fn context(peers: PeerArgs) -> Context<()> {
        let bus_config = BusConfig::default();
        Context {
            redis: None,
            store: None::<()>,
            bus: bus_config.publisher().expect("publisher"),
            bus_config,
            region: "local".into(),
            data_dir: PathBuf::from("."),
            peers,
            self_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            peer_tls: PeerTls::plaintext(),
            outbox_written: Arc::default(),
            credentials: ServiceCredentials::default(),
            local: LocalServices::default(),
            draining: Draining::default(),
        }
    }

    const EVERY_PEER: [Peer; 5] = [
        Peer::Catalog,
        Peer::Inventory,
        Peer::Cart,
        Peer::Payments,
        Peer::Warehouse,
    ];

    // A peer without a URL runs in this process and is called in-process; one with a URL,
    // or any with --peers-over-grpc, over gRPC.
    #[tokio::test]
    async fn channel_is_in_process_for_peers_here_unless_a_url_or_peers_over_grpc() {
        let here = context(PeerArgs::default());
        for peer in EVERY_PEER {
            assert!(here.channel(peer).expect("channel").is_in_process(), "{peer:?}");
        }

        let elsewhere = context(PeerArgs {
            inventory_url: Some("http://127.0.0.1:1".into()),
            ..PeerArgs::default()
        });
        assert!(
            !elsewhere
                .channel(Peer::Inventory)
                .expect("channel")
                .is_in_process()
        );
        assert!(elsewhere.channel(Peer::Catalog).expect("channel").is_in_process());

        let over_grpc = context(PeerArgs {
            peers_over_grpc: true,
            ..PeerArgs::default()
        });
        for peer in EVERY_PEER {
            assert!(
                !over_grpc.channel(peer).expect("channel").is_in_process(),
                "{peer:?}"
            );
        }
    }

    // A service listed before the one consuming its events (orders before warehouse) still
    // publishes only once every consumer has subscribed: its first event is taken and
    // delivered, not lost.
    #[tokio::test]
    async fn start_subscribes_every_consumer_before_any_relay_runs() {
        let ctx = context(PeerArgs::default());
        let (report, taken) = oneshot::channel();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let publisher = Publisher(Mutex::new(Some(report)));
        let consumer = Consumer(seen_tx);
        let mut server = GrpcServer::new(ServerOptions::default());
        let (store_relay_tx, store_relay) = oneshot::channel();
        let running = start(
            &[&publisher as &dyn Service<()>, &consumer],
            &ctx,
            &mut server,
            move || {
                let _ = store_relay_tx.send(());
                Box::pin(std::future::ready(()))
            },
        )
        .await
        .expect("start");
        assert_eq!(running.names(), ["publisher", "consumer"]);
        assert!(taken.await.expect("relay ran"), "the bus took the first event");
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), seen.recv())
            .await
            .expect("delivered within 10 s");
        assert_eq!(first.as_deref(), Some("first"));
        assert!(
            store_relay.await.is_err(),
            "no service writes the store's outbox: no store relay"
        );
    }
}
