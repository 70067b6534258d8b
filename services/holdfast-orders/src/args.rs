//! The orders service's section of the command line and its start shape ([`Service`]):
//! what the binary needs to run it next to the others.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::Pool;
use futures::future::BoxFuture;
use holdfast_platform::admission::{Defaults, Limiter, Operation, RateLimit};
use holdfast_platform::config::parse_duration;
use holdfast_platform::{Context, Needs, Peer, Service, ServiceParts};
use holdfast_proto::orders::v1::order_service_server::OrderServiceServer;
use tokio::sync::Notify;

use crate::admission::{Admission, AdmissionSettings};
use crate::consumer;
use crate::context::{OrdersStore, StepContext};
use crate::engine::Engine;
use crate::options::OrdersOptions;
use crate::service::Orders;
use crate::upstream::{Clients, Upstreams};
use crate::{waiting_room, workers};

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

    /// A cancel or return saga still failing this long after it started is parked for
    /// review (step `parked:<step>`, `holdfast_orders_sagas_parked_total`) and not retried.
    #[arg(long, env = "HOLDFAST_SAGA_PARK_AFTER", default_value = "1440m", value_parser = parse_duration)]
    pub saga_park_after: Duration,

    /// Admission: new Checkout keys per second per SKU (explicit lines) over every replica
    /// (fractions allowed; 0: unlimited). A SKU's runtime limit wins. Needs Redis.
    #[arg(long, env = "HOLDFAST_CHECKOUT_LIMIT_PER_SKU", default_value_t = 0.0)]
    pub checkout_limit_per_sku: f64,

    /// Admission: new Checkout keys per second per customer over every replica (0: unlimited).
    #[arg(long, env = "HOLDFAST_CHECKOUT_LIMIT_PER_CUSTOMER", default_value_t = 0.0)]
    pub checkout_limit_per_customer: f64,

    /// Admission: Checkout keys admitted back to back on an idle SKU or customer.
    #[arg(long, env = "HOLDFAST_CHECKOUT_LIMIT_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub checkout_limit_burst: u32,

    /// Waiting room: checkouts this process runs at once; past it new ones wait in the
    /// durable queue and are answered PENDING (0: no limit, only drops wait).
    #[arg(long, env = "HOLDFAST_CHECKOUT_CAPACITY", default_value_t = 0)]
    pub checkout_capacity: usize,

    /// Waiting room: most checkouts waiting; more are refused RESOURCE_EXHAUSTED.
    #[arg(long, env = "HOLDFAST_CHECKOUT_QUEUE_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub checkout_queue_max: u64,
}

impl OrdersArgs {
    /// The options these flags set, over the defaults and the fault hook from the env.
    pub fn options(&self) -> OrdersOptions {
        let mut options = OrdersOptions::from_env();
        options.risk.max_amount_minor = self.risk_max_amount;
        options.risk.max_orders_per_window = self.risk_max_orders_per_hour;
        options.saga_lease = self.saga_lease;
        options.park_after = self.saga_park_after;
        options
    }

    /// The waiting room's capacity and bound.
    pub fn admission_settings(&self) -> AdmissionSettings {
        AdmissionSettings {
            capacity: self.checkout_capacity,
            queue_max: self.checkout_queue_max,
        }
    }

    /// The Checkout limiter over `redis` (scripts loaded), or none without Redis.
    pub async fn limiter(&self, redis: Option<&Pool>) -> anyhow::Result<Option<Limiter>> {
        for (flag, rate) in [
            ("--checkout-limit-per-sku", self.checkout_limit_per_sku),
            ("--checkout-limit-per-customer", self.checkout_limit_per_customer),
        ] {
            anyhow::ensure!(
                rate.is_finite() && rate >= 0.0,
                "{flag} must be a finite rate >= 0"
            );
        }
        let Some(redis) = redis else {
            if self.checkout_limit_per_sku > 0.0 || self.checkout_limit_per_customer > 0.0 {
                anyhow::bail!("checkout limits need Redis: set --redis-url");
            }
            return Ok(None);
        };
        let rate = |per_second| RateLimit {
            per_second,
            burst: self.checkout_limit_burst,
        };
        let limiter = Limiter::new(
            redis.clone(),
            Operation::Checkout,
            Defaults {
                per_sku: rate(self.checkout_limit_per_sku),
                per_customer: rate(self.checkout_limit_per_customer),
            },
        );
        limiter.load_scripts().await?;
        Ok(Some(limiter))
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
                warehouse: ctx.channel(Peer::Warehouse)?,
            };
            let clients = Clients::presenting(
                upstreams,
                options.upstream_timeout,
                options.payment_timeout,
                ctx.outbound(),
            );
            let step_ctx = Arc::new(StepContext::new(
                ctx.store("orders")?,
                clients,
                options,
                &ctx.region,
            ));
            let engine = Arc::new(Engine::new(Arc::clone(&step_ctx)));
            let limiter = self.limiter(ctx.redis.as_ref()).await?;
            let admission = Arc::new(Admission::new(
                Arc::clone(&engine),
                limiter,
                self.admission_settings(),
            ));
            Ok(ServiceParts::new(
                "orders",
                OrderServiceServer::new(Orders::with_admission(Arc::clone(&admission))),
            )
            .authz(&crate::authz::TABLE)
            .consumer(
                consumer::CONSUMER_GROUP,
                &consumer::TOPICS,
                consumer::handler(Arc::clone(&step_ctx)),
            )
            .consumer(
                consumer::BACKORDERS_GROUP,
                &consumer::BACKORDER_TOPICS,
                consumer::handler(Arc::clone(&step_ctx)),
            )
            .writes_store_outbox()
            .task(wake_relay(step_ctx, Arc::clone(&ctx.outbox_written)))
            .task(workers::recover(Arc::clone(&engine)))
            .task(waiting_room::run(admission))
            .keep(engine))
        })
    }
}

/// Passes the service's "events written" signal on to the process's relay of the store.
async fn wake_relay<S: OrdersStore>(ctx: Arc<StepContext<S>>, relay: Arc<Notify>) {
    loop {
        ctx.outbox_written.notified().await;
        relay.notify_one();
    }
}
