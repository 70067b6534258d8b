//! OrderService: checkout as an orchestrated saga, orders, cancellations and returns.
//!
//! A checkout claims its idempotency key (insert-if-absent), creates a saga record and
//! runs the steps of ARCHITECTURE.md's table (validate and re-price, reserve, screen risk,
//! authorize, create the order, commit stock — the pivot —, capture, dispatch through the
//! outbox, notify), persisting the saga with a conditional transition after every step.
//! Before the pivot a refusal compensates (cancel the order, void, release the hold);
//! after it, steps only retry forward. A recovery worker resumes every saga nobody holds
//! a live lease on (a crashed process, a step that failed transiently), and an outbox
//! relay publishes the events written with each state change.
//!
//! Where things live (docs/checkout.md has the tour):
//! - [`service`]: the RPC handlers, thin; [`validate`]: every request's field checks;
//!   [`error`]: [`OrdersError`] and its one mapping to a status.
//! - [`order`]: the order aggregate: its status moves and the one way to write it.
//! - [`saga`]: one module per saga kind ([`saga::checkout`], [`saga::cancel`],
//!   [`saga::returns`]) and the dispatch; [`engine`]: leases, transitions, one driver per
//!   saga, knowing no kind; [`context`]: what steps receive.
//! - [`consumer`]: the events orders consumes; [`shipments`]: shipment events move orders; [`backorders`]: routing's backorders
//!   shown on the order; [`risk`]: the screening rules;
//!   [`upstream`]: the clients of catalog, inventory, cart and payments;
//!   [`workers`]: recovery and the outbox relay; [`options`]: timings and limits;
//!   [`args`]: the service's command-line section and its start shape.
//! - [`admission`]: rate limits, capacity and the waiting room's answers at Checkout;
//!   [`waiting_room`]: the worker that starts queued checkouts in arrival order.

pub mod admission;
pub mod args;
pub mod authz;
pub mod backorders;
pub mod consumer;
pub mod context;
pub mod engine;
pub mod error;
pub mod options;
pub mod order;
pub mod risk;
pub mod saga;
pub mod service;
pub mod shipments;
pub mod upstream;
pub mod validate;
pub mod waiting_room;
pub mod workers;

use std::sync::Arc;

use holdfast_platform::events::{BusConfig, BusError, ConsumerHandle, EventBus};
use holdfast_platform::task::AbortOnDrop;
use holdfast_proto::orders::v1::order_service_server::OrderServiceServer;

pub use admission::{Admission, AdmissionSettings};
pub use args::OrdersArgs;
pub use context::{OrdersStore, StepContext};
pub use engine::Engine;
pub use error::OrdersError;
pub use options::{OrdersOptions, RiskRules};
pub use service::Orders;
pub use upstream::{Clients, Upstreams};

/// A running order service: the gRPC service plus its recovery worker and outbox relay
/// (both stopped on drop).
pub struct RunningOrders<S: OrdersStore> {
    /// Register this with the server.
    pub service: OrderServiceServer<Orders<S>>,
    /// The engine (and, through it, the steps' context: the store, the outbox doorbell).
    pub engine: Arc<Engine<S>>,
    _tasks: Vec<AbortOnDrop>,
    consumers: Vec<ConsumerHandle>,
}

/// Builds the service and starts the recovery worker (which resumes, at once, every saga a
/// previous process left unfinished) and the outbox relay to `bus`; no admission limits,
/// no waiting room (see [`start_admitted`]).
pub fn start<S: OrdersStore>(
    store: S,
    upstreams: Upstreams,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: OrdersOptions,
) -> RunningOrders<S> {
    start_admitted(
        store,
        upstreams,
        bus,
        region,
        options,
        None,
        AdmissionSettings::default(),
    )
}

/// [`start`] with Checkout admission: the rate `limiter` (none: no limits, no drops) and
/// the waiting room's `settings`; also starts the waiting room's worker.
pub fn start_admitted<S: OrdersStore>(
    store: S,
    upstreams: Upstreams,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: OrdersOptions,
    limiter: Option<holdfast_platform::admission::Limiter>,
    settings: AdmissionSettings,
) -> RunningOrders<S> {
    let clients = Clients::new(upstreams, options.upstream_timeout, options.payment_timeout);
    let ctx = Arc::new(StepContext::new(store, clients, options, region));
    let engine = Arc::new(Engine::new(Arc::clone(&ctx)));
    let admission = Arc::new(Admission::new(Arc::clone(&engine), limiter, settings));
    let tasks = vec![
        tokio::spawn(workers::recover(Arc::clone(&engine))),
        tokio::spawn(workers::relay(ctx, bus)),
        tokio::spawn(waiting_room::run(Arc::clone(&admission))),
    ];
    RunningOrders {
        service: OrderServiceServer::new(Orders::with_admission(admission)),
        engine,
        _tasks: tasks.into_iter().map(AbortOnDrop::new).collect(),
        consumers: Vec::new(),
    }
}

impl<S: OrdersStore> RunningOrders<S> {
    /// Starts consuming shipment events from `bus` (they move orders to SHIPPED and
    /// DELIVERED); the consumer stops when this is dropped.
    pub async fn consume(&mut self, bus: &BusConfig) -> Result<(), BusError> {
        let consumer = holdfast_platform::events::spawn_consumer(
            bus,
            consumer::CONSUMER_GROUP,
            &consumer::TOPICS,
            consumer::handler(Arc::clone(self.engine.context())),
        )
        .await?;
        self.consumers.push(consumer);
        let backorders = holdfast_platform::events::spawn_consumer(
            bus,
            consumer::BACKORDERS_GROUP,
            &consumer::BACKORDER_TOPICS,
            consumer::handler(Arc::clone(self.engine.context())),
        )
        .await?;
        self.consumers.push(backorders);
        Ok(())
    }
}
