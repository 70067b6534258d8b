//! A real inventory service for tests: redis-server (standalone or a 3-node cluster) started by
//! the testkit, the service on 127.0.0.1:0, and the in-process bus to watch events on.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{Client, ClientLike};
use holdfast_inventory::admission::ReserveAdmission;
use holdfast_inventory::background::TOPIC;
use holdfast_inventory::{Inventory, InventoryOptions, RunningInventory};
use holdfast_platform::admission::RateLimit;
use holdfast_platform::events::{Event, InProcessBus};
use holdfast_platform::{GrpcServer, RedisUrl, ServerOptions, redis};
use holdfast_proto::events::v1::{InventoryEvent, inventory_event};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use holdfast_proto::inventory::v1::*;
use holdfast_testkit::{RedisCluster, RedisServer, SpawnedServer};
use prost::Message;
use tokio::sync::broadcast;
use tonic::transport::Channel;

/// Which Redis the fixture runs on.
pub enum Engine {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

pub struct Fixture {
    pub client: InventoryServiceClient<Channel>,
    pub bus: InProcessBus,
    pub inventory: RunningInventory,
    pub server: SpawnedServer,
    pub engine: Engine,
}

/// Background work fast enough for tests to observe.
pub fn fast() -> InventoryOptions {
    InventoryOptions {
        sweep_every: Duration::from_millis(50),
        rebalance_every: Duration::from_millis(100),
        outbox_rescan_every: Duration::from_secs(1),
        ..InventoryOptions::default()
    }
}

/// Background work that never runs during a test (to isolate lazy behaviour).
pub fn idle() -> InventoryOptions {
    InventoryOptions {
        sweep_every: Duration::from_secs(3600),
        rebalance_every: Duration::from_secs(3600),
        outbox_rescan_every: Duration::from_secs(3600),
        ..InventoryOptions::default()
    }
}

impl Fixture {
    pub async fn standalone() -> Self {
        Self::standalone_with(fast()).await
    }

    pub async fn standalone_with(options: InventoryOptions) -> Self {
        let redis = RedisServer::start().expect("redis-server");
        let url = redis.url();
        Self::on(Engine::Standalone(redis), url, options).await
    }

    pub async fn cluster() -> Self {
        let cluster = RedisCluster::start().expect("redis cluster");
        let url = cluster.url();
        Self::on(Engine::Cluster(cluster), url, fast()).await
    }

    async fn on(engine: Engine, url: RedisUrl, options: InventoryOptions) -> Self {
        let pool = redis::connect(&url, 4).await.expect("connect");
        let bus = InProcessBus::new();
        let inventory = holdfast_inventory::start(pool, Arc::new(bus.clone()), "test", options)
            .await
            .expect("inventory starts");
        let mut grpc = GrpcServer::new(ServerOptions::default());
        grpc.add_service("inventory", inventory.service.clone());
        let server = SpawnedServer::start(grpc).await.expect("server");
        let client = InventoryServiceClient::new(server.channel().await.expect("connect"));
        Self {
            client,
            bus,
            inventory,
            server,
            engine,
        }
    }

    pub fn redis(&self) -> &Client {
        self.inventory.stock.client()
    }

    /// The fixture's engine behind a second server that limits Reserve per SKU to `limit`
    /// (standalone only): its handle and a client of it.
    pub async fn limited_server(
        &mut self,
        limit: RateLimit,
    ) -> (SpawnedServer, InventoryServiceClient<Channel>) {
        let url = self.standalone_redis().url();
        let admission = ReserveAdmission::new(redis::connect(&url, 2).await.expect("redis"), limit);
        admission.load().await.expect("admission scripts");
        let mut grpc = GrpcServer::new(ServerOptions::default());
        grpc.add_service(
            "inventory",
            InventoryServiceServer::new(
                Inventory::new(self.inventory.stock.clone()).with_admission(admission),
            ),
        );
        let server = SpawnedServer::start(grpc).await.expect("server");
        let client = InventoryServiceClient::new(server.channel().await.expect("connect"));
        (server, client)
    }

    pub fn standalone_redis(&mut self) -> &mut RedisServer {
        match &mut self.engine {
            Engine::Standalone(redis) => redis,
            Engine::Cluster(_) => panic!("not standalone"),
        }
    }

    pub async fn set_stock(&self, sku: &str, on_hand: i64, buckets: u32) -> StockLevel {
        self.client
            .clone()
            .set_stock(SetStockRequest {
                sku: sku.into(),
                on_hand,
                buckets,
            })
            .await
            .expect("set stock")
            .into_inner()
    }

    pub async fn level(&self, sku: &str) -> StockLevel {
        self.client
            .clone()
            .get_availability(GetAvailabilityRequest {
                skus: vec![sku.into()],
            })
            .await
            .expect("availability")
            .into_inner()
            .levels
            .remove(0)
    }

    pub async fn reserve(
        &self,
        rid: &str,
        lines: &[(&str, i64)],
        ttl_seconds: u32,
    ) -> Result<ReserveResponse, tonic::Status> {
        self.client
            .clone()
            .reserve(ReserveRequest {
                reservation_id: rid.into(),
                lines: lines
                    .iter()
                    .map(|(sku, quantity)| ReserveLine {
                        sku: (*sku).into(),
                        quantity: *quantity,
                    })
                    .collect(),
                ttl_seconds,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn commit(&self, rid: &str) -> Result<CommitResponse, tonic::Status> {
        self.client
            .clone()
            .commit(CommitRequest {
                reservation_id: rid.into(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn release(&self, rid: &str) -> Result<ReleaseResponse, tonic::Status> {
        self.client
            .clone()
            .release(ReleaseRequest {
                reservation_id: rid.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Redis's clock, ms.
    pub async fn redis_now_ms(&self) -> i64 {
        let (secs, micros): (String, String) = self
            .redis()
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await
            .expect("TIME");
        secs.parse::<i64>().expect("secs") * 1000 + micros.parse::<i64>().expect("micros") / 1000
    }

    /// Waits (on Redis's clock) until `unix_ms` has passed.
    pub async fn wait_redis_time_past(&self, unix_ms: i64) {
        loop {
            let now = self.redis_now_ms().await;
            if now > unix_ms {
                return;
            }
            // Waiting for a clock to pass a point is the behaviour under test, not a race.
            tokio::time::sleep(Duration::from_millis((unix_ms - now + 1) as u64)).await;
        }
    }
}

/// Subscribes to inventory events.
pub fn events(bus: &InProcessBus) -> broadcast::Receiver<Event> {
    bus.subscribe(TOPIC)
}

/// Waits (bounded) for the next event matching `pred`.
pub async fn next_event(
    rx: &mut broadcast::Receiver<Event>,
    pred: impl Fn(&inventory_event::Event) -> bool,
) -> inventory_event::Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = rx.recv().await.expect("bus open");
            let decoded = InventoryEvent::decode(event.payload.as_slice()).expect("payload decodes");
            if let Some(inner) = decoded.event
                && pred(&inner)
            {
                return inner;
            }
        }
    })
    .await
    .expect("event within 10s")
}

pub fn reserved(r: &ReserveResponse) -> bool {
    r.status == ReservationStatus::Reserved as i32
}

/// Calls of one Lua script this process has made so far (the script-latency histogram's count;
/// nextest runs each test in a process of its own).
pub fn script_calls(script: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == "holdfast_inventory_script_duration_seconds")
        .flat_map(|family| family.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "script" && l.value() == script)
        })
        .map(|m| m.get_histogram().get_sample_count())
        .sum()
}

/// Script calls Redis has run so far (`INFO commandstats`: `FCALL`, and `EVALSHA` or `EVAL`
/// should anything still send one).
pub async fn script_calls_in_redis(client: &Client) -> u64 {
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .expect("info");
    [
        "cmdstat_fcall:calls=",
        "cmdstat_evalsha:calls=",
        "cmdstat_eval:calls=",
    ]
    .iter()
    .map(|prefix| {
        info.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse::<u64>().ok())
            .unwrap_or(0)
    })
    .sum()
}
