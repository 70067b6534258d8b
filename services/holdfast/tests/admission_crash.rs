//! A checkout storm over capacity drains through the waiting room across a kill -9 of
//! `holdfast dev` mid-queue: the next process on the same data (SQLite files, the same
//! redis-server) resumes the queue, and every key is answered exactly once: winners =
//! min(stock, buyers), one order and one charge per winner, no oversell, no hold left,
//! nothing lost from the queue.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{
    AdmissionLimits, GetAvailabilityRequest, SetAdmissionLimitsRequest, SetStockRequest, StockLevel,
};
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::orders::v1::{
    CheckoutLine, CheckoutLines, CheckoutOutcome, CheckoutRequest, CheckoutResponse, GetCheckoutRequest,
    checkout_request,
};
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::payments::v1::{LedgerEntryKind, ListLedgerEntriesRequest};
use holdfast_testkit::BearerChannel as Channel;
use holdfast_testkit::{RedisServer, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const SKU: &str = "storm-mug";
const STOCK: i64 = 12;
const BUYERS: usize = 30;

struct Dev {
    child: Child,
    channel: Channel,
}

impl Dev {
    async fn start(data: &TempDir, redis: &RedisServer) -> Dev {
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
                // One checkout at a time, each slowed by the PSP: the storm queues.
                "--checkout-capacity",
                "1",
                "--payments-latency",
                "150ms",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .env("HOLDFAST_REDIS_URL", redis.url().to_string())
            .env("RUST_LOG", "error")
            .env_remove("HOLDFAST_FAULT_CRASH_AFTER")
            .env_remove("HOLDFAST_STORE");
        let (child, channel) = common::spawn_dev(command, data.path()).await;
        Dev { child, channel }
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

    /// kill -9.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(i: usize) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: format!("storm-{i}"),
        customer_id: format!("buyer-{i}"),
        source: Some(checkout_request::Source::Lines(CheckoutLines {
            lines: vec![CheckoutLine {
                sku: SKU.into(),
                quantity: 1,
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
        payment_method: "pm_card_visa".into(),
        ..CheckoutRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_storm_drains_through_the_waiting_room_across_a_kill_9() {
    let redis = RedisServer::start().expect("redis-server");
    let data = TempDir::new("admission-crash").expect("dir");
    let first = Dev::start(&data, &redis).await;
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
    // Flagged as a drop: every checkout of it waits in the queue, however the storm's
    // arrivals interleave with the one running checkout on a busy machine.
    InventoryServiceClient::new(first.channel.clone())
        .set_admission_limits(SetAdmissionLimitsRequest {
            limits: Some(AdmissionLimits {
                sku: SKU.into(),
                drop: true,
                ..AdmissionLimits::default()
            }),
        })
        .await
        .expect("drop flag");

    // The storm: every buyer at once. Those answered PENDING wait in the durable queue.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..BUYERS {
        let mut orders = first.orders();
        calls.spawn(async move { (i, orders.checkout(request(i)).await) });
    }
    let mut pending = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending.len() < BUYERS / 2 {
        let (i, answer) = tokio::time::timeout_at(deadline.into(), calls.join_next())
            .await
            .expect("half the storm answered PENDING in time")
            .expect("a call")
            .expect("task");
        if let Ok(answer) = answer
            && answer.get_ref().outcome == CheckoutOutcome::Pending as i32
        {
            pending.insert(i);
        }
    }
    // Mid-queue: most checkouts still wait.
    let waiting = first
        .orders()
        .get_checkout(GetCheckoutRequest {
            idempotency_key: format!("storm-{}", pending.iter().max().expect("some")),
        })
        .await
        .expect("get checkout")
        .into_inner()
        .checkout
        .expect("checkout");
    assert_eq!(waiting.outcome, CheckoutOutcome::Pending as i32);
    first.kill();
    calls.abort_all();

    let second = Dev::start(&data, &redis).await;
    let mut orders = second.orders();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut answers: BTreeMap<usize, CheckoutResponse> = BTreeMap::new();
    while answers.len() < BUYERS {
        for i in 0..BUYERS {
            if answers.contains_key(&i) {
                continue;
            }
            if !pending.contains(&i) {
                // The client saw no answer (or did not wait for it): it retries its key,
                // as clients do after UNAVAILABLE; a repeat never runs a checkout twice.
                let answer = orders.checkout(request(i)).await.expect("retry").into_inner();
                if answer.outcome != CheckoutOutcome::Pending as i32 {
                    answers.insert(i, answer);
                } else {
                    pending.insert(i);
                }
                continue;
            }
            // A key answered PENDING is only polled: the restarted process must run it
            // from the durable queue by itself.
            let state = orders
                .get_checkout(GetCheckoutRequest {
                    idempotency_key: format!("storm-{i}"),
                })
                .await
                .unwrap_or_else(|status| panic!("storm-{i} was PENDING and is now {status:?}"))
                .into_inner()
                .checkout
                .expect("checkout");
            if state.outcome != CheckoutOutcome::Pending as i32 {
                answers.insert(i, state);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {BUYERS} answered after the restart",
            answers.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let placed: Vec<&CheckoutResponse> = answers
        .values()
        .filter(|a| a.outcome == CheckoutOutcome::Placed as i32)
        .collect();
    let out_of_stock = answers
        .values()
        .filter(|a| a.outcome == CheckoutOutcome::OutOfStock as i32)
        .count();
    assert_eq!(
        placed.len(),
        STOCK as usize,
        "winners = min(stock, buyers): {answers:?}"
    );
    assert_eq!(out_of_stock, BUYERS - STOCK as usize);
    let order_ids: HashSet<&str> = placed
        .iter()
        .map(|a| a.order.as_ref().expect("order").id.as_str())
        .collect();
    assert_eq!(order_ids.len(), placed.len(), "one order per winner");
    let captures = PaymentsServiceClient::new(second.channel.clone())
        .list_ledger_entries(ListLedgerEntriesRequest {
            kind: LedgerEntryKind::Capture as i32,
            ..Default::default()
        })
        .await
        .expect("ledger")
        .into_inner()
        .entries;
    assert_eq!(
        captures.len(),
        placed.len(),
        "one charge per order, no order without one"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let level = second.level().await;
        assert_eq!(level.sold, STOCK, "no oversell");
        if level.reserved == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "a hold outlived the storm: {level:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
