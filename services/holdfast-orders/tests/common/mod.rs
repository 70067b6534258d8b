//! A real mesh for checkout tests: redis-server and a SQLite file in a temp dir; catalog,
//! inventory (its durable truth in that file), cart and the simulated PSP in one gRPC server; orders in another whose
//! channels point at it (as `holdfast serve orders` runs), all on 127.0.0.1:0.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use holdfast_inventory::{InventoryOptions, RunningInventory};
use holdfast_orders::{OrdersOptions, RunningOrders, Upstreams};
use holdfast_platform::events::InProcessBus;
use holdfast_platform::{GrpcServer, ServerOptions, redis};
use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::cart::v1::{AddItemRequest, CartOwner, cart_owner};
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, SetStockRequest, StockLevel};
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::orders::v1::{CheckoutLine, CheckoutLines, CheckoutRequest, checkout_request};
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::payments::v1::{
    GetPaymentRequest, LedgerEntry, LedgerEntryKind, ListLedgerEntriesRequest, get_payment_request,
};
use holdfast_store::SqliteStore;
use holdfast_testkit::{RedisServer, SpawnedServer, TempDir};
use tonic::transport::{Channel, Endpoint};

pub struct Fixture {
    // Dropped first: orders stops serving, then its workers, then what it calls.
    orders_server: SpawnedServer,
    pub orders_running: RunningOrders<SqliteStore>,
    upstream: SpawnedServer,
    _inventory: RunningInventory,
    pub cart_running: holdfast_cart::RunningCart<SqliteStore>,
    pub warehouse: holdfast_warehouse::RunningWarehouse<SqliteStore>,
    pub orders: OrderServiceClient<Channel>,
    pub catalog: CatalogServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub cart: CartServiceClient<Channel>,
    pub payments: PaymentsServiceClient<Channel>,
    pub bus: Arc<InProcessBus>,
    pub store: SqliteStore,
    pub redis: RedisServer,
    _dir: TempDir,
}

/// Options a test may change.
pub struct Setup {
    pub orders: OrdersOptions,
    pub psp_latency: Duration,
    /// Checkout admission: flag defaults of the limiter (None: no limiter) and the waiting
    /// room's settings. Inventory always serves the admission admin RPCs.
    pub checkout_limits: Option<holdfast_platform::admission::Defaults>,
    pub admission: holdfast_orders::AdmissionSettings,
    /// The cart service's options (its write-behind window, say).
    pub cart: holdfast_cart::CartOptions,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            orders: OrdersOptions {
                payment_timeout: Duration::from_millis(800),
                ..OrdersOptions::default()
            },
            psp_latency: Duration::ZERO,
            checkout_limits: None,
            admission: holdfast_orders::AdmissionSettings::default(),
            cart: holdfast_cart::CartOptions::default(),
        }
    }
}

impl Fixture {
    pub async fn start() -> Self {
        Self::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Self {
        let dir = TempDir::new("orders").expect("dir");
        let store = SqliteStore::open(dir.path().join("holdfast.db"))
            .await
            .expect("sqlite");
        let redis_server = RedisServer::start().expect("redis-server");
        let pool = redis::connect(&redis_server.url(), 4).await.expect("connect");
        let bus = Arc::new(InProcessBus::new());

        let catalog = holdfast_catalog::start(pool.clone(), store.clone())
            .await
            .expect("catalog");
        // With the durable truth in the store, as `holdfast dev` runs it: a Redis that lost
        // writes is rebuilt from it.
        let inventory = holdfast_inventory::start_with_truth(
            pool.clone(),
            bus.clone(),
            "test",
            InventoryOptions::default(),
            Some(Arc::new(store.clone())),
        )
        .await
        .expect("inventory");
        let payments = holdfast_payments::start(holdfast_payments::PaymentsOptions {
            database: Some(dir.path().join("psp.db")),
            latency: setup.psp_latency,
            ..holdfast_payments::PaymentsOptions::default()
        })
        .await
        .expect("payments");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let lazy = Endpoint::from_shared(format!("http://{}", listener.local_addr().expect("addr")))
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect_lazy();
        let reserve_admission = holdfast_inventory::admission::ReserveAdmission::new(
            pool.clone(),
            holdfast_platform::admission::RateLimit::UNLIMITED,
        );
        reserve_admission.load().await.expect("admission scripts");
        let limiter = match setup.checkout_limits {
            Some(defaults) => {
                let limiter = holdfast_platform::admission::Limiter::new(
                    pool.clone(),
                    holdfast_platform::admission::Operation::Checkout,
                    defaults,
                );
                limiter.load_scripts().await.expect("admission scripts");
                Some(limiter)
            }
            None => None,
        };
        let cart = holdfast_cart::start(pool, store.clone(), lazy.clone(), lazy.clone(), setup.cart)
            .await
            .expect("cart");
        // The orders relay publishes this store's outbox, the warehouse's rows included.
        let warehouse = holdfast_warehouse::start(
            store.clone(),
            bus.clone(),
            "test",
            holdfast_warehouse::WarehouseOptions {
                relay: holdfast_warehouse::OutboxRelay::Shared(Arc::new(|| {})),
                ..holdfast_warehouse::WarehouseOptions::default()
            },
        );
        let mut grpc = GrpcServer::new(ServerOptions::default());
        grpc.add_service("warehouse", warehouse.service.clone());
        grpc.add_service("catalog", catalog);
        grpc.add_service(
            "inventory",
            holdfast_proto::inventory::v1::inventory_service_server::InventoryServiceServer::new(
                holdfast_inventory::Inventory::new(inventory.stock.clone()).with_admission(reserve_admission),
            ),
        );
        grpc.add_service("cart", cart.service.clone());
        grpc.add_service("payments", payments);
        let upstream = SpawnedServer::start_on(listener, grpc, true)
            .await
            .expect("upstream server");

        let orders_running = holdfast_orders::start_admitted(
            store.clone(),
            Upstreams {
                catalog: lazy.clone().into(),
                inventory: lazy.clone().into(),
                cart: lazy.clone().into(),
                payments: lazy.clone().into(),
                warehouse: lazy.into(),
            },
            bus.clone(),
            "test",
            setup.orders,
            limiter,
            setup.admission,
        );
        let mut grpc = GrpcServer::new(ServerOptions::default());
        grpc.add_service("orders", orders_running.service.clone());
        let orders_server = SpawnedServer::start(grpc).await.expect("orders server");

        let channel = upstream.channel().await.expect("connect upstream");
        Self {
            orders: OrderServiceClient::new(orders_server.channel().await.expect("connect orders")),
            orders_server,
            orders_running,
            upstream,
            _inventory: inventory,
            cart_running: cart,
            warehouse,
            catalog: CatalogServiceClient::new(channel.clone()),
            inventory: InventoryServiceClient::new(channel.clone()),
            cart: CartServiceClient::new(channel.clone()),
            payments: PaymentsServiceClient::new(channel),
            bus,
            store,
            redis: redis_server,
            _dir: dir,
        }
    }

    /// An active product at `price` USD with `on_hand` units.
    pub async fn product(&self, sku: &str, price: i64, on_hand: i64) {
        self.price(sku, price).await;
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

    /// Sets a product's price (USD).
    pub async fn price(&self, sku: &str, price: i64) {
        self.catalog
            .clone()
            .upsert_product(UpsertProductRequest {
                product: Some(Product {
                    sku: sku.into(),
                    title: format!("{sku} title"),
                    price: Some(usd(price)),
                    category: "test".into(),
                    active: true,
                    ..Default::default()
                }),
                expected_version: 0,
            })
            .await
            .expect("upsert product");
    }

    /// The order `id` as GetOrder answers it.
    pub async fn order(&self, id: &str) -> holdfast_proto::orders::v1::Order {
        self.orders
            .clone()
            .get_order(holdfast_proto::orders::v1::GetOrderRequest { order_id: id.into() })
            .await
            .expect("get order")
            .into_inner()
            .order
            .expect("order")
    }

    pub async fn level(&self, sku: &str) -> StockLevel {
        self.inventory
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

    /// Every ledger entry of `order_reference` of `kind`.
    pub async fn ledger(&self, order_reference: &str, kind: LedgerEntryKind) -> Vec<LedgerEntry> {
        self.payments
            .clone()
            .list_ledger_entries(ListLedgerEntriesRequest {
                order_reference: order_reference.into(),
                kind: kind as i32,
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner()
            .entries
    }

    /// The status of payment `payment_id` (`PaymentStatus` as i32).
    pub async fn payment_status(&self, payment_id: &str) -> i32 {
        self.payments
            .clone()
            .get_payment(GetPaymentRequest {
                lookup: Some(get_payment_request::Lookup::PaymentId(payment_id.into())),
            })
            .await
            .expect("get payment")
            .into_inner()
            .payment
            .expect("payment")
            .status
    }

    /// Every ledger entry of `kind`, all orders.
    pub async fn all_ledger(&self, kind: LedgerEntryKind) -> Vec<LedgerEntry> {
        self.ledger("", kind).await
    }

    pub async fn add_to_cart(&self, customer: &str, sku: &str, quantity: i64) {
        self.cart
            .clone()
            .add_item(AddItemRequest {
                owner: customer_cart(customer),
                sku: sku.into(),
                quantity,
                expected_version: 0,
            })
            .await
            .expect("add item");
    }
}

pub fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "USD".into(),
    }
}

pub fn customer_cart(customer: &str) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(cart_owner::Owner::CustomerId(customer.into())),
    })
}

pub fn address() -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "1 Analytical Way".into(),
        city: "London".into(),
        postal_code: "N1 9GU".into(),
        country: "GB".into(),
        location: Some(GeoPoint {
            latitude: 51.53,
            longitude: -0.1,
        }),
        ..Address::default()
    }
}

/// A checkout of explicit lines `(sku, quantity)` at catalog prices.
pub fn checkout(key: &str, customer: &str, lines: &[(&str, i64)], payment_method: &str) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: key.into(),
        customer_id: customer.into(),
        source: Some(checkout_request::Source::Lines(CheckoutLines {
            lines: lines
                .iter()
                .map(|(sku, quantity)| CheckoutLine {
                    sku: (*sku).into(),
                    quantity: *quantity,
                    expected_unit_price: None,
                })
                .collect(),
        })),
        shipping_address: Some(address()),
        payment_method: payment_method.into(),
        ..CheckoutRequest::default()
    }
}

/// A checkout of the customer's cart.
pub fn checkout_cart(key: &str, customer: &str, payment_method: &str) -> CheckoutRequest {
    CheckoutRequest {
        source: Some(checkout_request::Source::Cart(CartOwner {
            owner: Some(cart_owner::Owner::CustomerId(customer.into())),
        })),
        ..checkout(key, customer, &[], payment_method)
    }
}

/// A checkout saga run in memory through step `last` (every step's side effects and joined
/// writes are real; no transition is written): the record as it stood before `last` ran,
/// and as it would stand after (at the next step, with `last`'s state). The saga id is
/// `saga-<key>`. Store either to simulate a process that stopped in between.
pub async fn steps_in_memory(
    fx: &Fixture,
    request: &CheckoutRequest,
    last: &str,
) -> (holdfast_store::SagaRecord, holdfast_store::SagaRecord) {
    use holdfast_orders::saga::{self, StepResult};
    let ctx = fx.orders_running.engine.context();
    let id = format!("saga-{}", request.idempotency_key);
    let mut record = holdfast_store::SagaRecord {
        id: id.clone(),
        kind: "checkout".into(),
        step: "validate".into(),
        state: holdfast_orders::saga::checkout::initial_state(&id, request).encode(),
        ..holdfast_store::SagaRecord::default()
    };
    loop {
        match saga::step(ctx, &record).await.expect("step") {
            StepResult::Next {
                step, state, joined, ..
            } => {
                for write in joined {
                    holdfast_store::joined::apply_in_order(&fx.store, write)
                        .await
                        .expect("joined write");
                }
                let after = holdfast_store::SagaRecord {
                    step: step.into(),
                    state,
                    ..record.clone()
                };
                if record.step == last {
                    return (record, after);
                }
                record = after;
            }
            StepResult::Finished { .. } => panic!("the checkout finished before {last}"),
            StepResult::Later { .. } => panic!("a checkout step never asks to run later"),
        }
    }
}
