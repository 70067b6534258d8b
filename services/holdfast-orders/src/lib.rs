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
//! Modules: [`state`] (what a checkout persists), [`checkout`] (its steps), [`engine`]
//! (leases, transitions, one driver per saga), [`lifecycle`] (cancel and return sagas),
//! [`shipments`] (shipment events move orders), [`risk`], [`service`] (the RPCs).

pub mod checkout;
pub mod engine;
pub mod lifecycle;
pub mod order;
pub mod risk;
pub mod service;
pub mod shipments;
pub mod state;
pub mod upstream;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::BoxFuture;
use holdfast_platform::config::parse_duration;
use holdfast_platform::events::{Event, EventBus};
use holdfast_platform::{Context, Needs, Peer, Service, ServiceParts};
use holdfast_proto::orders::v1::order_service_server::OrderServiceServer;
use holdfast_store::{IdempotencyStore, OrderStore, OutboxStore, SagaStore};
use prometheus::IntCounterVec;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use engine::Engine;
pub use risk::RiskRules;
pub use service::Orders;
pub use upstream::{Clients, Upstreams};

/// The store orders needs: every checkout aggregate, shareable across tasks.
pub trait OrdersStore: OrderStore + SagaStore + IdempotencyStore + OutboxStore + Clone + 'static {}
impl<T: OrderStore + SagaStore + IdempotencyStore + OutboxStore + Clone + 'static> OrdersStore for T {}

/// Timings, limits and the fault hook.
#[derive(Debug, Clone)]
pub struct OrdersOptions {
    /// TTL of the stock hold, set at reserve and again before authorizing.
    pub hold_ttl: Duration,
    /// Deadline of every call to catalog, inventory and cart.
    pub upstream_timeout: Duration,
    /// Deadline of every money movement at the PSP.
    pub payment_timeout: Duration,
    /// Tries of an authorization the PSP answers UNAVAILABLE before the saga waits.
    pub payment_attempts: u32,
    /// How long a worker owns a saga after its last transition.
    pub saga_lease: Duration,
    /// How soon a saga whose step failed transiently is retried.
    pub retry_after: Duration,
    /// A checkout stuck before the pivot this long is compensated, not resumed.
    pub abandon_after: Duration,
    /// How often the recovery worker looks for stalled sagas.
    pub recovery_interval: Duration,
    /// How long a request waits for a saga another process runs.
    pub wait_for_running: Duration,
    /// Risk thresholds.
    pub risk: RiskRules,
    /// Fault hook, off unless set: abort the process right after this step was persisted
    /// ("<step>" of a checkout, or "<kind>:<step>"). `HOLDFAST_FAULT_CRASH_AFTER`.
    pub crash_after: Option<String>,
}

impl Default for OrdersOptions {
    fn default() -> Self {
        Self {
            hold_ttl: Duration::from_secs(120),
            upstream_timeout: Duration::from_secs(2),
            payment_timeout: Duration::from_secs(3),
            payment_attempts: 3,
            saga_lease: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            abandon_after: Duration::from_secs(600),
            recovery_interval: Duration::from_secs(1),
            wait_for_running: Duration::from_secs(10),
            risk: RiskRules::default(),
            crash_after: None,
        }
    }
}

impl OrdersOptions {
    /// Defaults with the fault hook read from `HOLDFAST_FAULT_CRASH_AFTER`.
    pub fn from_env() -> Self {
        Self {
            crash_after: std::env::var("HOLDFAST_FAULT_CRASH_AFTER")
                .ok()
                .filter(|v| !v.is_empty()),
            ..Self::default()
        }
    }
}

/// The orders service's section of the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct OrdersArgs {
    /// Checkout risk rule: orders above this total (minor units) go to manual review uncharged.
    #[arg(long, env = "HOLDFAST_RISK_MAX_AMOUNT", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub risk_max_amount: i64,

    /// Checkout risk rule: a customer's order beyond this many within an hour goes to manual review.
    #[arg(long, env = "HOLDFAST_RISK_MAX_ORDERS_PER_HOUR", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=500))]
    pub risk_max_orders_per_hour: u32,

    /// How long an orders worker owns a checkout saga after its last step; a saga whose
    /// worker died is resumed by another once this passes.
    #[arg(long, env = "HOLDFAST_SAGA_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub saga_lease: Duration,
}

impl OrdersArgs {
    /// The options these flags set, over the defaults and the fault hook from the env.
    pub fn options(&self) -> OrdersOptions {
        let mut options = OrdersOptions::from_env();
        options.risk.max_amount_minor = self.risk_max_amount;
        options.risk.max_orders_per_window = self.risk_max_orders_per_hour;
        options.saga_lease = self.saga_lease;
        options
    }
}

impl<S: OrdersStore + Send + Sync> Service<S> for OrdersArgs {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn needs(&self) -> Needs {
        Needs {
            redis: false,
            store: true,
        }
    }

    /// The checkout engine over the store: its recovery worker, its consumer of shipment
    /// events, and its events in the store's outbox (published by the process's relay).
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
        Box::pin(async move {
            let options = self.options();
            let upstreams = Upstreams {
                catalog: ctx.channel(Peer::Catalog)?,
                inventory: ctx.channel(Peer::Inventory)?,
                cart: ctx.channel(Peer::Cart)?,
                payments: ctx.channel(Peer::Payments)?,
            };
            let clients = Clients::new(upstreams, options.upstream_timeout, options.payment_timeout);
            let engine = Arc::new(Engine::new(ctx.store("orders")?, clients, options, &ctx.region));
            Ok(ServiceParts::new(
                "orders",
                OrderServiceServer::new(Orders::new(Arc::clone(&engine))),
            )
            .consumer(
                shipments::CONSUMER_GROUP,
                &[shipments::SHIPMENTS_TOPIC],
                shipments::handler(Arc::clone(&engine)),
            )
            .writes_store_outbox()
            .task(wake_relay(Arc::clone(&engine), Arc::clone(&ctx.outbox_written)))
            .task(recover(Arc::clone(&engine)))
            .keep(engine))
        })
    }
}

/// Passes the engine's "events written" signal on to the process's relay of the store.
async fn wake_relay<S: OrdersStore>(engine: Arc<Engine<S>>, relay: Arc<Notify>) {
    loop {
        engine.outbox_written.notified().await;
        relay.notify_one();
    }
}

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static CHECKOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_checkouts_total",
        "Checkouts that reached an answer, by outcome (placed, payment_declined, out_of_stock, price_changed, manual_review, error).",
        &["outcome"]
    )
    .expect("registers once")
});

#[allow(clippy::expect_used)]
static RELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_orders_outbox_events_total",
        "Outbox events handed to the bus (published) or kept for the next try (failed).",
        &["result"]
    )
    .expect("registers once")
});

pub(crate) fn record_outcome(outcome: Option<&state::Outcome>) {
    let label = match outcome {
        Some(state::Outcome::Placed) => "placed",
        Some(state::Outcome::Declined { .. }) => "payment_declined",
        Some(state::Outcome::OutOfStock { .. }) => "out_of_stock",
        Some(state::Outcome::PriceChanged { .. }) => "price_changed",
        Some(state::Outcome::ManualReview) => "manual_review",
        Some(state::Outcome::Refused { .. }) | None => "error",
    };
    CHECKOUTS.with_label_values(&[label]).inc();
}

/// Wall-clock time in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A running order service: the gRPC service plus its recovery worker and outbox relay
/// (both stopped on drop).
pub struct RunningOrders<S: OrdersStore> {
    /// Register this with the server.
    pub service: OrderServiceServer<Orders<S>>,
    /// The engine, for consumers that feed it events (shipments).
    pub engine: Arc<Engine<S>>,
    tasks: Vec<JoinHandle<()>>,
    consumers: Vec<holdfast_platform::events::ConsumerHandle>,
}

impl<S: OrdersStore> Drop for RunningOrders<S> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Builds the service and starts the recovery worker (which resumes, at once, every saga a
/// previous process left unfinished) and the outbox relay to `bus`.
pub fn start<S: OrdersStore>(
    store: S,
    upstreams: Upstreams,
    bus: Arc<dyn EventBus>,
    region: &str,
    options: OrdersOptions,
) -> RunningOrders<S> {
    let clients = Clients::new(upstreams, options.upstream_timeout, options.payment_timeout);
    let engine = Arc::new(Engine::new(store, clients, options, region));
    let tasks = vec![
        tokio::spawn(recover(Arc::clone(&engine))),
        tokio::spawn(relay(Arc::clone(&engine), bus)),
    ];
    RunningOrders {
        service: OrderServiceServer::new(Orders::new(Arc::clone(&engine))),
        engine,
        tasks,
        consumers: Vec::new(),
    }
}

impl<S: OrdersStore> RunningOrders<S> {
    /// Starts consuming shipment events from `bus` (they move orders to SHIPPED and
    /// DELIVERED); the consumer stops when this is dropped.
    pub async fn consume(
        &mut self,
        bus: &holdfast_platform::events::BusConfig,
    ) -> Result<(), holdfast_platform::events::BusError> {
        let consumer = holdfast_platform::events::spawn_consumer(
            bus,
            shipments::CONSUMER_GROUP,
            &[shipments::SHIPMENTS_TOPIC],
            shipments::handler(Arc::clone(&self.engine)),
        )
        .await?;
        self.consumers.push(consumer);
        Ok(())
    }
}

/// The recovery worker: every `recovery_interval`, resumes stalled sagas (unfinished, no
/// live lease) and drops expired idempotency keys now and then.
async fn recover<S: OrdersStore>(engine: Arc<Engine<S>>) {
    let mut ticks: u64 = 0;
    loop {
        match engine.store.list_stalled_sagas(now_ms(), 64).await {
            Ok(stalled) => {
                let runs = stalled.into_iter().map(|saga| {
                    let engine = Arc::clone(&engine);
                    async move {
                        tracing::info!(saga = %saga.id, kind = %saga.kind, step = %saga.step, "resuming a stalled saga");
                        if let Err((code, message)) = engine.run(saga).await {
                            tracing::debug!(?code, %message, "stalled saga not finished yet");
                        }
                    }
                });
                futures::future::join_all(runs).await;
            }
            Err(error) => tracing::warn!(%error, "listing stalled sagas failed"),
        }
        if ticks.is_multiple_of(600)
            && let Err(error) = engine.store.purge_expired_keys(now_ms()).await
        {
            tracing::warn!(%error, "purging expired idempotency keys failed");
        }
        ticks += 1;
        tokio::time::sleep(engine.options.recovery_interval).await;
    }
}

/// The outbox relay (the store's shared loop) of [`start`]: publishes pending events in order
/// and marks them sent only after the bus took them; on failure they stay and are published
/// again (consumers dedupe by id). A process running services through [`Service`] runs one
/// relay per store instead.
async fn relay<S: OrdersStore>(engine: Arc<Engine<S>>, bus: Arc<dyn EventBus>) {
    let options = holdfast_store::relay::RelayOptions {
        batch: 256,
        idle_wait: Duration::from_millis(500),
        retry_wait: Duration::from_millis(500),
    };
    holdfast_store::relay::run(&engine.store, &engine.outbox_written, &options, |pending| {
        let events: Vec<Event> = pending
            .into_iter()
            .map(|m| Event {
                id: m.id,
                topic: m.topic,
                key: m.key,
                event_type: m.event_type,
                region: m
                    .headers
                    .get("region")
                    .cloned()
                    .unwrap_or_else(|| engine.region.clone()),
                payload: m.payload,
                traceparent: m.headers.get("traceparent").cloned(),
            })
            .collect();
        let count = events.len() as u64;
        let bus = Arc::clone(&bus);
        async move {
            match bus.publish(events).await {
                Ok(()) => {
                    RELAYED.with_label_values(&["published"]).inc_by(count);
                    Ok(())
                }
                Err(error) => {
                    RELAYED.with_label_values(&["failed"]).inc_by(count);
                    Err(error.to_string())
                }
            }
        }
    })
    .await;
}
