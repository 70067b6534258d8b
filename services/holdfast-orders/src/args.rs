//! The orders service's section of the command line and its start shape ([`Service`]):
//! what the binary needs to run it next to the others.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use holdfast_platform::config::parse_duration;
use holdfast_platform::{Context, Needs, Peer, Service, ServiceParts};
use holdfast_proto::orders::v1::order_service_server::OrderServiceServer;
use tokio::sync::Notify;

use crate::consumer;
use crate::context::{OrdersStore, StepContext};
use crate::engine::Engine;
use crate::options::OrdersOptions;
use crate::service::Orders;
use crate::upstream::{Clients, Upstreams};
use crate::workers;

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
            Ok(ServiceParts::new(
                "orders",
                OrderServiceServer::new(Orders::new(Arc::clone(&engine))),
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
