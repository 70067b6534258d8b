//! A real cart for tests: redis-server and a SQLite store in a temp dir, the real catalog and
//! inventory in one gRPC server, and the cart in another whose channels point at it (as
//! `holdfast serve cart` runs), all on 127.0.0.1:0.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_cart::{CartOptions, RunningCart};
use holdfast_inventory::{InventoryOptions, RunningInventory};
use holdfast_platform::config::RedisUrl;
use holdfast_platform::events::InProcessBus;
use holdfast_platform::{GrpcServer, ServerOptions, redis};
use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::cart::v1::*;
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::Money;
use holdfast_proto::inventory::v1::SetStockRequest;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_store::{CartStore, SqliteStore, StoredCart};
use holdfast_testkit::{RedisCluster, RedisServer, SpawnedServer, TempDir};
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// The write-behind bound the tests hold the cart to (docs/cart.md: `flush_every` + one
/// store write, with `flush_every` at its 250 ms default).
pub const DURABLE_WITHIN: Duration = Duration::from_secs(1);

/// `R`: the Redis the mesh runs on (one server, or a cluster).
pub struct Fixture<R = RedisServer> {
    // Dropped first: the cart stops serving, then its worker, then what it calls.
    cart_server: SpawnedServer,
    pub cart: RunningCart<SqliteStore>,
    upstream: SpawnedServer,
    _inventory: RunningInventory,
    pub catalog: CatalogServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub store: SqliteStore,
    pub redis: R,
    _dir: TempDir,
}

impl Fixture<RedisCluster> {
    /// The mesh on a three-primary Redis Cluster, inventory with `inventory`.
    pub async fn on_cluster(options: CartOptions, inventory: InventoryOptions) -> Self {
        let cluster = RedisCluster::start().expect("redis cluster");
        let url = cluster.url();
        Self::assemble(cluster, &url, options, inventory).await
    }
}

impl Fixture {
    pub async fn start() -> Self {
        Self::with(CartOptions::default()).await
    }

    pub async fn with(options: CartOptions) -> Self {
        Self::with_inventory(options, InventoryOptions::default()).await
    }

    /// The cart with `options`, inventory with `inventory` (e.g. its background tasks slowed
    /// down, so that only the calls under test reach Redis).
    pub async fn with_inventory(options: CartOptions, inventory: InventoryOptions) -> Self {
        let redis_server = RedisServer::start().expect("redis-server");
        let url = redis_server.url();
        Self::assemble(redis_server, &url, options, inventory).await
    }
}

impl<R> Fixture<R> {
    async fn assemble(
        redis_engine: R,
        url: &RedisUrl,
        options: CartOptions,
        inventory: InventoryOptions,
    ) -> Self {
        let dir = TempDir::new("cart").expect("dir");
        let store = SqliteStore::open(dir.path().join("holdfast.db"))
            .await
            .expect("sqlite");
        let pool = redis::connect(url, 4).await.expect("connect");

        let catalog = holdfast_catalog::start(pool.clone(), store.clone())
            .await
            .expect("catalog");
        let inventory =
            holdfast_inventory::start(pool.clone(), Arc::new(InProcessBus::new()), "test", inventory)
                .await
                .expect("inventory");
        let mut grpc = GrpcServer::new(ServerOptions::default());
        grpc.add_service("catalog", catalog);
        grpc.add_service("inventory", inventory.service.clone());
        let upstream = SpawnedServer::start(grpc).await.expect("upstream server");

        let lazy = Endpoint::from_shared(upstream.endpoint())
            .expect("endpoint")
            .connect_lazy();
        let cart = holdfast_cart::start(pool, store.clone(), lazy.clone(), lazy, options)
            .await
            .expect("cart");
        let mut grpc = GrpcServer::new(ServerOptions::default());
        grpc.add_service("cart", cart.service.clone());
        let cart_server = SpawnedServer::start(grpc).await.expect("cart server");

        let channel = upstream.channel().await.expect("connect upstream");
        Self {
            cart_server,
            cart,
            upstream,
            _inventory: inventory,
            catalog: CatalogServiceClient::new(channel.clone()),
            inventory: InventoryServiceClient::new(channel),
            store,
            redis: redis_engine,
            _dir: dir,
        }
    }

    /// A new connection to the cart: one per "device".
    pub async fn device(&self) -> CartServiceClient<Channel> {
        CartServiceClient::new(self.cart_server.channel().await.expect("connect cart"))
    }

    /// Creates or changes an active product.
    pub async fn product(&self, sku: &str, price: i64, currency: &str) {
        self.upsert(sku, price, currency, true).await;
    }

    pub async fn upsert(&self, sku: &str, price: i64, currency: &str, active: bool) {
        self.catalog
            .clone()
            .upsert_product(UpsertProductRequest {
                product: Some(Product {
                    sku: sku.into(),
                    title: format!("{sku} title"),
                    price: Some(Money {
                        amount_minor: price,
                        currency: currency.into(),
                    }),
                    category: "kitchen".into(),
                    active,
                    ..Default::default()
                }),
                expected_version: 0,
            })
            .await
            .expect("upsert product");
    }

    pub async fn stock(&self, sku: &str, on_hand: i64) {
        self.inventory
            .clone()
            .set_stock(SetStockRequest {
                sku: sku.into(),
                on_hand,
                buckets: 0,
            })
            .await
            .expect("set stock");
    }

    /// A product in EUR with plenty of stock.
    pub async fn sellable(&self, sku: &str, price: i64) {
        self.product(sku, price, "EUR").await;
        self.stock(sku, 1000).await;
    }

    /// Polls the store (the write-behind bound is the behaviour under test) until it holds
    /// `owner_key`'s cart at `version` or newer; panics after [`DURABLE_WITHIN`].
    pub async fn durable(&self, owner_key: &str, version: u64) -> StoredCart {
        let deadline = Instant::now() + DURABLE_WITHIN;
        loop {
            if let Some(stored) = self.store.load_cart(owner_key).await.expect("load")
                && stored.version >= version
            {
                return stored;
            }
            assert!(
                Instant::now() < deadline,
                "cart {owner_key} v{version} did not reach the store within {DURABLE_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn customer(id: &str) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(cart_owner::Owner::CustomerId(id.into())),
    })
}

pub fn session(id: &str) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(cart_owner::Owner::SessionId(id.into())),
    })
}

pub async fn get(client: &mut CartServiceClient<Channel>, owner: Option<CartOwner>) -> Cart {
    client
        .get_cart(GetCartRequest { owner })
        .await
        .expect("get cart")
        .into_inner()
        .cart
        .expect("cart")
}

pub async fn add(
    client: &mut CartServiceClient<Channel>,
    owner: Option<CartOwner>,
    sku: &str,
    quantity: i64,
) -> Result<AddItemResponse, tonic::Status> {
    add_at(client, owner, sku, quantity, 0).await
}

pub async fn add_at(
    client: &mut CartServiceClient<Channel>,
    owner: Option<CartOwner>,
    sku: &str,
    quantity: i64,
    expected_version: u64,
) -> Result<AddItemResponse, tonic::Status> {
    client
        .add_item(AddItemRequest {
            owner,
            sku: sku.into(),
            quantity,
            expected_version,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Adds and expects it applied; the cart after.
pub async fn added(
    client: &mut CartServiceClient<Channel>,
    owner: Option<CartOwner>,
    sku: &str,
    quantity: i64,
) -> Cart {
    let reply = add(client, owner, sku, quantity).await.expect("add item");
    assert_eq!(reply.outcome(), ItemOutcome::Applied, "{reply:?}");
    reply.cart.expect("cart")
}

pub async fn update(
    client: &mut CartServiceClient<Channel>,
    owner: Option<CartOwner>,
    sku: &str,
    quantity: i64,
    expected_version: u64,
) -> Result<UpdateItemResponse, tonic::Status> {
    client
        .update_item(UpdateItemRequest {
            owner,
            sku: sku.into(),
            quantity,
            expected_version,
        })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn remove(
    client: &mut CartServiceClient<Channel>,
    owner: Option<CartOwner>,
    sku: &str,
    expected_version: u64,
) -> Result<Cart, tonic::Status> {
    client
        .remove_item(RemoveItemRequest {
            owner,
            sku: sku.into(),
            expected_version,
        })
        .await
        .map(|r| r.into_inner().cart.expect("cart"))
}

pub async fn clear(
    client: &mut CartServiceClient<Channel>,
    owner: Option<CartOwner>,
    expected_version: u64,
) -> Result<Cart, tonic::Status> {
    client
        .clear_cart(ClearCartRequest {
            owner,
            expected_version,
        })
        .await
        .map(|r| r.into_inner().cart.expect("cart"))
}

pub async fn merge(
    client: &mut CartServiceClient<Channel>,
    session_id: &str,
    customer_id: &str,
) -> Result<MergeCartsResponse, tonic::Status> {
    client
        .merge_carts(MergeCartsRequest {
            session_id: session_id.into(),
            customer_id: customer_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `(sku, quantity)` of every line, in cart order.
pub fn lines(cart: &Cart) -> Vec<(String, i64)> {
    cart.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect()
}

/// Sorted `(sku, quantity)`, for comparisons that do not care about order.
pub fn sorted_lines(cart: &Cart) -> Vec<(String, i64)> {
    let mut lines = lines(cart);
    lines.sort();
    lines
}

pub fn pairs(expected: &[(&str, i64)]) -> Vec<(String, i64)> {
    expected.iter().map(|(s, q)| (s.to_string(), *q)).collect()
}

/// The field names of a BadRequest detail.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// The PreconditionFailure kind of a FAILED_PRECONDITION.
pub fn precondition_kind(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    status
        .get_details_precondition_failure()
        .expect("precondition failure details")
        .violations
        .remove(0)
        .r#type
}
