//! Crash at every checkout step: `holdfast dev` with the fault hook aborts right after a
//! step was persisted; a fresh process on the same data (SQLite files, the same
//! redis-server) must end every saga consistent: charged ⇔ order exists ⇔ stock
//! committed, and no hold left behind. Half the cases are finished by the recovery worker
//! alone, the other half by the client retrying its key. Every case runs twice: on SQLite
//! (the default of `holdfast dev`) and, in module `scylla`, on the ScyllaDB backend
//! (`--store scylla://`) against an Apache Cassandra 5 node of its own.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, SetStockRequest, StockLevel};
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CheckoutLine, CheckoutLines, CheckoutOutcome, CheckoutRequest, CheckoutResponse,
    GetOrderRequest, ListOrdersRequest, OrderStatus, checkout_request,
};
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::payments::v1::{LedgerEntryKind, ListLedgerEntriesRequest};
use holdfast_testkit::BearerChannel as Channel;
use holdfast_testkit::{CassandraNode, RedisServer, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const SKU: &str = "crash-mug";
const UNITS: i64 = 2;
const STOCK: i64 = 10;

/// The durable store of a case.
#[derive(Debug, Clone, Copy)]
enum Backend {
    /// SQLite files in the data dir.
    Sqlite,
    /// `scylla://` on a Cassandra node started for the case, schema applied by `holdfast migrate`.
    Scylla,
}

/// The store a case's processes share: nothing to hold for SQLite, a node for ScyllaDB.
struct Store {
    url: Option<String>,
    _node: Option<CassandraNode>,
}

impl Store {
    /// Starts what `backend` needs (on the test's own thread: the node is tied to it).
    fn start(backend: Backend) -> Store {
        match backend {
            Backend::Sqlite => Store {
                url: None,
                _node: None,
            },
            Backend::Scylla => {
                let node = CassandraNode::start().expect("cassandra (make deps installs it)");
                let url = format!("scylla://{}", node.contact_point());
                let output = Command::new(BIN)
                    .args(["migrate", "--store", &url])
                    .env("RUST_LOG", "error")
                    .output()
                    .expect("holdfast migrate");
                assert!(
                    output.status.success(),
                    "holdfast migrate: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                Store {
                    url: Some(url),
                    _node: Some(node),
                }
            }
        }
    }
}

struct Dev {
    child: Child,
    channel: Channel,
}

impl Dev {
    async fn start(data: &TempDir, redis: &RedisServer, store: &Store, crash_after: Option<&str>) -> Dev {
        let mut command = Command::new(BIN);
        command
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--saga-lease",
                "1s",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .env("HOLDFAST_REDIS_URL", redis.url().to_string())
            .env("RUST_LOG", "error")
            .env_remove("HOLDFAST_FAULT_CRASH_AFTER");
        if let Some(step) = crash_after {
            command.env("HOLDFAST_FAULT_CRASH_AFTER", step);
        }
        match &store.url {
            Some(url) => command.env("HOLDFAST_STORE", url),
            None => command.env_remove("HOLDFAST_STORE"),
        };
        let (child, channel) = common::spawn_dev(command, data.path()).await;
        Dev { child, channel }
    }

    async fn wait_for_crash(mut self) {
        let status = tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(!status.success(), "the fault hook aborts the process: {status}");
    }

    fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel.clone())
    }

    async fn level(&self) -> StockLevel {
        InventoryServiceClient::new(self.channel.clone())
            .get_availability(GetAvailabilityRequest {
                skus: vec![SKU.into()],
            })
            .await
            .expect("availability")
            .into_inner()
            .levels
            .remove(0)
    }

    async fn ledger(&self, kind: LedgerEntryKind) -> usize {
        PaymentsServiceClient::new(self.channel.clone())
            .list_ledger_entries(ListLedgerEntriesRequest {
                kind: kind as i32,
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner()
            .entries
            .len()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(payment_method: &str) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: "crash-key".into(),
        customer_id: "crash-customer".into(),
        source: Some(checkout_request::Source::Lines(CheckoutLines {
            lines: vec![CheckoutLine {
                sku: SKU.into(),
                quantity: UNITS,
                expected_unit_price: None,
            }],
        })),
        shipping_address: Some(Address {
            name: "N".into(),
            line1: "L".into(),
            city: "C".into(),
            postal_code: "P".into(),
            country: "DE".into(),
            location: Some(GeoPoint {
                latitude: 52.5,
                longitude: 13.4,
            }),
            ..Address::default()
        }),
        payment_method: payment_method.into(),
        ..CheckoutRequest::default()
    }
}

/// Crashes the first process after `step`, restarts, and checks the invariants.
async fn crash_after(backend: Backend, step: &str, payment_method: &str, client_retries: bool) {
    let store = Store::start(backend);
    let redis = RedisServer::start().expect("redis-server");
    let data = TempDir::new("crash").expect("dir");
    let first = Dev::start(&data, &redis, &store, Some(step)).await;
    CatalogServiceClient::new(first.channel.clone())
        .upsert_product(UpsertProductRequest {
            product: Some(Product {
                sku: SKU.into(),
                title: "Mug".into(),
                price: Some(Money {
                    amount_minor: 1250,
                    currency: "EUR".into(),
                }),
                category: "kitchen".into(),
                active: true,
                ..Product::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("product");
    InventoryServiceClient::new(first.channel.clone())
        .set_stock(SetStockRequest {
            sku: SKU.into(),
            on_hand: STOCK,
            buckets: 0,
        })
        .await
        .expect("stock");
    let crashed = first.orders().checkout(request(payment_method)).await;
    assert!(crashed.is_err(), "the process died mid-checkout: {crashed:?}");
    first.wait_for_crash().await;

    let second = Dev::start(&data, &redis, &store, None).await;
    let answer: CheckoutResponse = if client_retries {
        second
            .orders()
            .checkout(request(payment_method))
            .await
            .expect("retry")
            .into_inner()
    } else {
        // The recovery worker alone: wait until no hold is left, then read the answer.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let level = second.level().await;
            if level.reserved == 0 && (level.sold == UNITS || level.available == STOCK) {
                let orders = second
                    .orders()
                    .list_orders(ListOrdersRequest {
                        customer_id: "crash-customer".into(),
                        ..Default::default()
                    })
                    .await
                    .expect("list")
                    .into_inner()
                    .orders;
                let settled = orders.iter().all(|o| {
                    o.status == OrderStatus::Fulfilling as i32 || o.status == OrderStatus::Cancelled as i32
                });
                if settled {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the recovery worker did not finish the saga: {level:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        second
            .orders()
            .checkout(request(payment_method))
            .await
            .expect("answer")
            .into_inner()
    };

    let level = second.level().await;
    let captures = second.ledger(LedgerEntryKind::Capture).await;
    let authorizations = second.ledger(LedgerEntryKind::Authorization).await;
    let voids = second.ledger(LedgerEntryKind::Void).await;
    let orders = second
        .orders()
        .list_orders(ListOrdersRequest {
            customer_id: "crash-customer".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .orders;
    let live_orders = orders
        .iter()
        .filter(|o| o.status != OrderStatus::Cancelled as i32)
        .count();
    assert_eq!(level.reserved, 0, "no hold left behind after {step}");
    assert!(authorizations <= 1, "at most one authorization after {step}");
    if answer.outcome == CheckoutOutcome::Placed as i32 {
        let order = answer.order.expect("order");
        assert_eq!(order.status, OrderStatus::Fulfilling as i32, "after {step}");
        assert_eq!(
            (captures, live_orders, level.sold),
            (1, 1, UNITS),
            "charged once, one order, committed ({step})"
        );
    } else {
        assert_eq!(
            answer.outcome,
            CheckoutOutcome::PaymentDeclined as i32,
            "after {step}: {answer:?}"
        );
        assert_eq!(
            (captures, live_orders, level.sold),
            (0, 0, 0),
            "nothing charged, no order, nothing sold ({step})"
        );
        assert_eq!(level.available, STOCK);
        assert_eq!(voids, authorizations, "every authorization voided ({step})");
    }
}

/// Crashes the process right after `step` of a cancellation; after a restart the recovery
/// worker finishes it: one refund, the stock back once, the order CANCELLED.
async fn crash_in_cancel(backend: Backend, step: &str) {
    let store = Store::start(backend);
    let redis = RedisServer::start().expect("redis-server");
    let data = TempDir::new("crash-cancel").expect("dir");
    let first = Dev::start(&data, &redis, &store, Some(&format!("cancel:{step}"))).await;
    CatalogServiceClient::new(first.channel.clone())
        .upsert_product(UpsertProductRequest {
            product: Some(Product {
                sku: SKU.into(),
                title: "Mug".into(),
                price: Some(Money {
                    amount_minor: 1250,
                    currency: "EUR".into(),
                }),
                category: "kitchen".into(),
                active: true,
                ..Product::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("product");
    InventoryServiceClient::new(first.channel.clone())
        .set_stock(SetStockRequest {
            sku: SKU.into(),
            on_hand: STOCK,
            buckets: 0,
        })
        .await
        .expect("stock");
    let placed = first
        .orders()
        .checkout(request("pm_card_visa"))
        .await
        .expect("checkout")
        .into_inner();
    let order_id = placed.order.expect("order").id;
    let cancel = CancelOrderRequest {
        order_id: order_id.clone(),
        reason: "crash test".into(),
    };
    let crashed = first.orders().cancel_order(cancel.clone()).await;
    assert!(crashed.is_err(), "the process died mid-cancel: {crashed:?}");
    first.wait_for_crash().await;

    let second = Dev::start(&data, &redis, &store, None).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let order = second
            .orders()
            .get_order(GetOrderRequest {
                order_id: order_id.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .order
            .expect("order");
        let level = second.level().await;
        if order.status == OrderStatus::Cancelled as i32
            && second.ledger(LedgerEntryKind::Refund).await == 1
            && level.on_hand == STOCK
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recovery worker did not finish the cancel after {step}: {level:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = second
        .orders()
        .cancel_order(cancel)
        .await
        .expect("cancel again")
        .into_inner();
    assert_eq!(again.order.map(|o| o.status), Some(OrderStatus::Cancelled as i32));
    assert_eq!(
        second.ledger(LedgerEntryKind::Refund).await,
        1,
        "refunded exactly once after {step}"
    );
    let level = second.level().await;
    assert_eq!(
        (level.on_hand, level.available, level.reserved),
        (STOCK, STOCK, 0),
        "restocked once"
    );
}

macro_rules! crash_cases {
    ($($name:ident: $step:literal, $method:literal, $retry:literal;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_after(Backend::Sqlite, $step, $method, $retry).await;
            }
        )*

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cancel_crash_after_mark() {
            crash_in_cancel(Backend::Sqlite, "mark").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cancel_crash_after_money() {
            crash_in_cancel(Backend::Sqlite, "money").await;
        }

        /// The same cases on the ScyllaDB backend (an Apache Cassandra 5 node per case).
        mod scylla {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crash_after(Backend::Scylla, $step, $method, $retry).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cancel_crash_after_mark() {
                crash_in_cancel(Backend::Scylla, "mark").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cancel_crash_after_money() {
                crash_in_cancel(Backend::Scylla, "money").await;
            }
        }
    };
}

crash_cases! {
    crash_after_validate: "validate", "pm_card_visa", true;
    crash_after_reserve: "reserve", "pm_card_visa", false;
    crash_after_screen: "screen", "pm_card_visa", true;
    crash_after_authorize: "authorize", "pm_card_visa", false;
    crash_after_create_order: "create_order", "pm_card_visa", true;
    crash_after_commit: "commit", "pm_card_visa", false;
    crash_after_capture: "capture", "pm_card_visa", true;
    crash_after_dispatch: "dispatch", "pm_card_visa", false;
    crash_after_notify: "notify", "pm_card_visa", true;
    crash_after_finish: "finish", "pm_card_visa", false;
    declined_crash_after_authorize: "authorize", "pm_card_declined", true;
    declined_crash_after_compensate: "compensate", "pm_card_declined", false;
}
