//! Two regions over one in-process bus for the region tests: each with its own
//! redis-server, inventory, gRPC server (auth on, dev tokens) and region tasks. A region can
//! be stopped keeping its redis-server and started again on it.

#![allow(dead_code)] // each test binary uses a part

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_inventory::regions::{self, Regions, RegionsConfig};
use holdfast_inventory::{InventoryOptions, RunningInventory};
use holdfast_platform::auth::keys::{DEV_AUDIENCE, DEV_ISSUER};
use holdfast_platform::auth::{DevKey, Verifier};
use holdfast_platform::events::{BusConfig, ConsumerHandle, InProcessBus, spawn_consumer};
use holdfast_platform::task::AbortOnDrop;
use holdfast_platform::{GrpcServer, ServerOptions, redis};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::*;
use holdfast_testkit::{BearerChannel, DevTokens, RedisServer, SpawnedServer, TempDir};

pub struct Region {
    /// Calls every RPC with a token of a role its authz row lets through (admin for admin rows).
    pub client: InventoryServiceClient<BearerChannel>,
    pub regions: Regions,
    /// Mints tokens the region's server accepts.
    pub tokens: DevTokens,
    channel: tonic::transport::Channel,
    _consumer: ConsumerHandle,
    _tasks: Vec<AbortOnDrop>,
    _server: SpawnedServer,
    _inventory: RunningInventory,
    redis: RedisServer,
    _auth: TempDir,
}

pub fn config(name: &str) -> RegionsConfig {
    let mut config = RegionsConfig::new(name, &["na".to_string(), "eu".to_string()]);
    config.snapshot_every = Duration::from_millis(100);
    config.request_every = Duration::from_millis(25);
    config.redrive_after = Duration::from_millis(500);
    config.ask_timeout = Duration::from_millis(300);
    config
}

impl Region {
    pub async fn start(name: &str, bus: &InProcessBus) -> Self {
        let redis = RedisServer::start().expect("redis-server");
        Self::start_on(name, bus, redis, config(name)).await
    }

    /// Starts region `name` on `redis` (a fresh one, or a stopped region's).
    pub async fn start_on(name: &str, bus: &InProcessBus, redis: RedisServer, config: RegionsConfig) -> Self {
        let pool = redis::connect(&redis.url(), 4).await.expect("connect");
        let options = InventoryOptions {
            sweep_every: Duration::from_millis(50),
            rebalance_every: Duration::from_millis(100),
            ..InventoryOptions::default()
        };
        let inventory = holdfast_inventory::start(pool, Arc::new(bus.clone()), name, options)
            .await
            .expect("inventory");
        let regions = Regions::new(config, inventory.stock.clone(), Arc::new(bus.clone()))
            .await
            .expect("regions");
        let topics: Vec<&'static str> = regions
            .consumed_topics()
            .into_iter()
            .map(|t| &*Box::leak(t.into_boxed_str()))
            .collect();
        let group: &'static str = Box::leak(regions::consumer_group(name).into_boxed_str());
        let consumer = spawn_consumer(
            &BusConfig::InProcess(bus.clone()),
            group,
            &topics,
            regions.handler(),
        )
        .await
        .expect("consumer");
        let tasks = vec![
            AbortOnDrop::new(tokio::spawn(regions.clone().run_relay())),
            AbortOnDrop::new(tokio::spawn(regions.clone().run_snapshots())),
            AbortOnDrop::new(tokio::spawn(regions.clone().run_requester())),
            AbortOnDrop::new(tokio::spawn(
                regions.clone().run_reconciler(Duration::from_millis(200)),
            )),
        ];
        let service = holdfast_proto::inventory::v1::inventory_service_server::InventoryServiceServer::new(
            holdfast_inventory::Inventory::new(inventory.stock.clone()).with_regions(regions.clone()),
        );
        let auth = TempDir::new("region-auth").expect("temp dir");
        let key = DevKey::load_or_create(auth.path()).expect("dev key");
        let tokens = DevTokens::new(auth.path()).expect("dev tokens");
        let mut grpc = GrpcServer::new(ServerOptions::default());
        grpc.set_auth(Some(Verifier::new(
            key.key_set(),
            DEV_ISSUER,
            DEV_AUDIENCE,
            Duration::from_secs(30),
        )))
        .authorize(&holdfast_inventory::authz::TABLE);
        grpc.add_service("inventory", service);
        let server = SpawnedServer::start(grpc).await.expect("server");
        let channel = server.channel().await.expect("channel");
        let client = InventoryServiceClient::new(BearerChannel::new(
            channel.clone(),
            tokens.operator(&[&holdfast_inventory::authz::TABLE]),
        ));
        Self {
            client,
            regions,
            tokens,
            channel,
            _consumer: consumer,
            _tasks: tasks,
            _server: server,
            _inventory: inventory,
            redis,
            _auth: auth,
        }
    }

    /// A client whose every call carries `token`.
    pub fn client_with(&self, token: String) -> InventoryServiceClient<BearerChannel> {
        InventoryServiceClient::new(BearerChannel::fixed(self.channel.clone(), token))
    }

    /// Stops the region (server, consumer, tasks, inventory) and hands back its redis-server,
    /// data intact, to start it again with [`Region::start_on`].
    pub async fn stop(self) -> RedisServer {
        let Self {
            redis,
            _consumer,
            _tasks,
            _server,
            _inventory,
            ..
        } = self;
        drop(_tasks);
        _consumer.abort().await;
        drop(_server);
        drop(_inventory);
        redis
    }

    pub async fn availability(&self, sku: &str) -> RegionalAvailability {
        self.client
            .clone()
            .get_regional_availability(GetRegionalAvailabilityRequest {
                skus: vec![sku.into()],
            })
            .await
            .expect("regional availability")
            .into_inner()
            .skus
            .remove(0)
    }

    pub async fn reserve(&self, rid: &str, sku: &str) -> Result<ReserveResponse, tonic::Status> {
        self.client
            .clone()
            .reserve(ReserveRequest {
                reservation_id: rid.into(),
                lines: vec![ReserveLine {
                    sku: sku.into(),
                    quantity: 1,
                }],
                ttl_seconds: 60,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn reconciliation(&self, sku: &str) -> GetReconciliationResponse {
        self.client
            .clone()
            .get_reconciliation(GetReconciliationRequest {
                skus: vec![sku.into()],
            })
            .await
            .expect("reconciliation")
            .into_inner()
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes (then fails with `what`).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn two_regions() -> (InProcessBus, Region, Region) {
    let bus = InProcessBus::new();
    let na = Region::start("na", &bus).await;
    let eu = Region::start("eu", &bus).await;
    (bus, na, eu)
}
