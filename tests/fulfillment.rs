//! Fulfillment end to end on a real redis-server and a real Apache Kafka broker (KRaft):
//! the whole mesh as `holdfast dev --kafka-brokers` runs it. Warehouse stock flows into
//! inventory; a checkout is routed to one warehouse, another is split over two; shipping
//! and delivery move the orders, visible through GetOrder with each suborder's tracking
//! number; and the shipment events are plain Kafka to an independent client. The same flow
//! also runs on the in-process bus, as plain `holdfast dev` runs it.

use std::time::{Duration, Instant};

use holdfast_e2e::DevMesh;
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, SetStockRequest};
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CheckoutLine, CheckoutLines, CheckoutOutcome, CheckoutRequest, GetOrderRequest,
    LineStatus, Order, OrderStatus, checkout_request,
};
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::payments::v1::{LedgerEntryKind, ListLedgerEntriesRequest};
use holdfast_proto::warehouse::v1::warehouse_service_client::WarehouseServiceClient;
use holdfast_proto::warehouse::v1::{
    ListShipmentsRequest, MarkDeliveredRequest, MarkShippedRequest, ReceiveStockRequest,
    SetWarehouseStockRequest, Shipment, ShipmentStatus, ShippingOption, ShippingSpeed, StockReceiptLine,
    UpsertWarehouseRequest, Warehouse, list_shipments_request,
};
use holdfast_testkit::BearerChannel as Channel;
use holdfast_testkit::KafkaBroker;
use tonic::Code;

const REGION: &str = "eu-central";
const BERLIN: (f64, f64) = (52.520, 13.405);
const HAMBURG: (f64, f64) = (53.551, 9.994);
/// Bounded polling of the mesh's state, never a sleep to wait for an event.
const WITHIN: Duration = Duration::from_secs(30);

struct Clients {
    catalog: CatalogServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    warehouse: WarehouseServiceClient<Channel>,
}

fn point(at: (f64, f64)) -> Option<GeoPoint> {
    Some(GeoPoint {
        latitude: at.0,
        longitude: at.1,
    })
}

async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn on_hand(clients: &Clients, sku: &str) -> i64 {
    clients
        .inventory
        .clone()
        .get_availability(GetAvailabilityRequest {
            skus: vec![sku.into()],
        })
        .await
        .expect("availability")
        .into_inner()
        .levels[0]
        .on_hand
}

async fn order(clients: &Clients, id: &str) -> Order {
    clients
        .orders
        .clone()
        .get_order(GetOrderRequest { order_id: id.into() })
        .await
        .expect("get order")
        .into_inner()
        .order
        .expect("order")
}

/// Waits until GetOrder shows `status` with `suborders` suborders, and returns the order.
async fn order_in(clients: &Clients, id: &str, status: OrderStatus, suborders: usize) -> Order {
    until(
        &format!("{id} in {status:?} with {suborders} suborders"),
        || async {
            let order = order(clients, id).await;
            (order.status == status as i32 && order.suborders.len() == suborders).then_some(order)
        },
    )
    .await
}

async fn checkout(clients: &Clients, key: &str, lines: &[(&str, i64)]) -> String {
    checkout_as(clients, key, "cust-e2e", lines).await
}

async fn checkout_as(clients: &Clients, key: &str, customer: &str, lines: &[(&str, i64)]) -> String {
    let response = clients
        .orders
        .clone()
        .checkout(CheckoutRequest {
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
            shipping_address: Some(Address {
                name: "Ada Lovelace".into(),
                line1: "Unter den Linden 1".into(),
                city: "Berlin".into(),
                postal_code: "10117".into(),
                country: "DE".into(),
                location: point(BERLIN),
                ..Address::default()
            }),
            payment_method: "pm_card_visa".into(),
            shipping_speed: ShippingSpeed::Standard as i32,
            ..CheckoutRequest::default()
        })
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(response.outcome, CheckoutOutcome::Placed as i32, "{response:?}");
    response.order.expect("order").id
}

async fn ship_and_deliver_check(clients: &Clients, order_id: &str, suborders: usize) {
    let shipments = clients
        .warehouse
        .clone()
        .list_shipments(ListShipmentsRequest {
            filter: Some(list_shipments_request::Filter::OrderId(order_id.into())),
            ..ListShipmentsRequest::default()
        })
        .await
        .expect("list shipments")
        .into_inner()
        .shipments;
    assert_eq!(shipments.len(), suborders);
    for (i, shipment) in shipments.iter().enumerate() {
        clients
            .warehouse
            .clone()
            .mark_shipped(MarkShippedRequest {
                shipment_id: shipment.id.clone(),
                carrier: "dhl".into(),
                tracking_number: format!("JJD-{order_id}-{i}"),
            })
            .await
            .expect("ship");
        let expected = if i + 1 < shipments.len() {
            OrderStatus::PartiallyShipped
        } else {
            OrderStatus::Shipped
        };
        let seen = order_in(clients, order_id, expected, suborders).await;
        let suborder = seen
            .suborders
            .iter()
            .find(|s| s.shipment_id == shipment.id)
            .expect("the suborder");
        assert_eq!(suborder.tracking_number, format!("JJD-{order_id}-{i}"));
        assert_eq!(suborder.carrier, "dhl");
        assert_eq!(suborder.status, ShipmentStatus::Shipped as i32);
    }
    for shipment in &shipments {
        clients
            .warehouse
            .clone()
            .mark_delivered(MarkDeliveredRequest {
                shipment_id: shipment.id.clone(),
                delivered_at_unix_ms: 0,
            })
            .await
            .expect("deliver");
    }
    let delivered = order_in(clients, order_id, OrderStatus::Delivered, suborders).await;
    assert!(
        delivered
            .suborders
            .iter()
            .all(|s| s.status == ShipmentStatus::Delivered as i32 && s.tracking_number.starts_with("JJD-")),
        "{delivered:?}"
    );
}

/// Stocks two warehouses, checks the stock reached inventory, then checks out one order
/// routed to one warehouse and one split over two, ships and delivers them. Answers the
/// two order ids.
async fn route_ship_and_deliver(mesh: &DevMesh) -> (String, String) {
    let channel = mesh.channel().await.expect("connect");
    let clients = Clients {
        catalog: CatalogServiceClient::new(channel.clone()),
        inventory: InventoryServiceClient::new(channel.clone()),
        orders: OrderServiceClient::new(channel.clone()),
        warehouse: WarehouseServiceClient::new(channel),
    };
    for (sku, price) in [("e2e-tee", 1500), ("e2e-mug", 900), ("e2e-lamp", 4900)] {
        clients
            .catalog
            .clone()
            .upsert_product(UpsertProductRequest {
                product: Some(Product {
                    sku: sku.into(),
                    title: format!("{sku} title"),
                    price: Some(Money {
                        amount_minor: price,
                        currency: "EUR".into(),
                    }),
                    category: "e2e".into(),
                    active: true,
                    ..Product::default()
                }),
                expected_version: 0,
            })
            .await
            .expect("product");
    }
    for (id, at) in [("ber-1", BERLIN), ("ham-1", HAMBURG)] {
        clients
            .warehouse
            .clone()
            .upsert_warehouse(UpsertWarehouseRequest {
                warehouse: Some(Warehouse {
                    id: id.into(),
                    name: format!("{id} fulfilment"),
                    region: REGION.into(),
                    location: point(at),
                    shipping_options: vec![ShippingOption {
                        speed: ShippingSpeed::Standard as i32,
                        max_days: 3,
                        max_distance_km: 0,
                    }],
                    active: true,
                    ..Warehouse::default()
                }),
            })
            .await
            .expect("warehouse");
    }
    // Stock takes in the warehouses flow into the region's inventory through Kafka.
    for (warehouse, sku, physical) in [
        ("ber-1", "e2e-tee", 5),
        ("ber-1", "e2e-mug", 3),
        ("ham-1", "e2e-tee", 5),
        ("ham-1", "e2e-lamp", 2),
    ] {
        clients
            .warehouse
            .clone()
            .set_warehouse_stock(SetWarehouseStockRequest {
                warehouse_id: warehouse.into(),
                sku: sku.into(),
                physical,
            })
            .await
            .expect("stock take");
    }
    for (sku, total) in [("e2e-tee", 10), ("e2e-mug", 3), ("e2e-lamp", 2)] {
        until(&format!("inventory on_hand of {sku} = {total}"), || async {
            (on_hand(&clients, sku).await == total).then_some(())
        })
        .await;
    }
    // A goods receipt booked twice counts once.
    for _ in 0..2 {
        clients
            .warehouse
            .clone()
            .receive_stock(ReceiveStockRequest {
                receipt_id: "DN-e2e-1".into(),
                warehouse_id: "ham-1".into(),
                lines: vec![StockReceiptLine {
                    sku: "e2e-lamp".into(),
                    quantity: 4,
                }],
            })
            .await
            .expect("receipt");
    }
    until("the receipt in inventory", || async {
        (on_hand(&clients, "e2e-lamp").await == 6).then_some(())
    })
    .await;

    // Single: Berlin has the tees, and is closest.
    let single = checkout(&clients, "e2e-single", &[("e2e-tee", 2)]).await;
    let routed = order_in(&clients, &single, OrderStatus::Fulfilling, 1).await;
    assert_eq!(routed.suborders[0].warehouse_id, "ber-1");
    assert_eq!(routed.suborders[0].lines[0].quantity, 2);
    // Split: mugs only in Berlin, lamps only in Hamburg.
    let split = checkout(&clients, "e2e-split", &[("e2e-mug", 1), ("e2e-lamp", 1)]).await;
    let routed = order_in(&clients, &split, OrderStatus::Fulfilling, 2).await;
    let mut warehouses: Vec<&str> = routed.suborders.iter().map(|s| s.warehouse_id.as_str()).collect();
    warehouses.sort_unstable();
    assert_eq!(warehouses, ["ber-1", "ham-1"]);

    ship_and_deliver_check(&clients, &single, 1).await;
    ship_and_deliver_check(&clients, &split, 2).await;

    // Shipped units left the shelves but not inventory's on_hand (sold at checkout).
    assert_eq!(on_hand(&clients, "e2e-tee").await, 8);

    (single, split)
}

// The same flow on the in-process bus, as `holdfast dev` runs without Kafka: orders and
// warehouse share the store's outbox and its one relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkouts_are_routed_shipped_and_delivered_in_process() {
    let mesh = DevMesh::start_in_region(REGION).await.expect("mesh");
    route_ship_and_deliver(&mesh).await;
}

// The same flow with the services calling each other over loopback gRPC
// (`--peers-over-grpc`) instead of in-process: both transports give the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkouts_are_routed_shipped_and_delivered_with_peers_over_grpc() {
    let mesh = DevMesh::start_with(&["--region", REGION, "--peers-over-grpc"])
        .await
        .expect("mesh");
    route_ship_and_deliver(&mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkouts_are_routed_shipped_and_delivered_over_kafka() {
    let broker = KafkaBroker::start().expect("kafka broker");
    let mesh = DevMesh::start_on_kafka(&broker.bootstrap(), REGION)
        .await
        .expect("mesh");
    let (single, split) = route_ship_and_deliver(&mesh).await;

    // An independent client (PyPI confluent-kafka) reads the shipment events: 3 for the
    // single order (created, shipped, delivered), 6 for the split one.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/holdfast-platform/tests/kafka_independent_client.py"
    );
    let bootstrap = broker.bootstrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([
                script,
                bootstrap.as_str(),
                "holdfast.shipments.v1",
                "e2e-python",
                "9",
                "30",
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs (make deps installs confluent-kafka)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seen: Vec<(String, String)> = stdout
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("json");
            assert_eq!(record["headers"]["region"], REGION);
            (
                record["key"].as_str().expect("key").to_string(),
                record["headers"]["event-type"]
                    .as_str()
                    .expect("type")
                    .to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String)> = Vec::new();
    for (order, count) in [(&single, 1), (&split, 2)] {
        for event_type in ["shipment.created", "shipment.shipped", "shipment.delivered"] {
            for _ in 0..count {
                expected.push((order.clone(), event_type.to_string()));
            }
        }
    }
    expected.sort();
    assert_eq!(seen, expected, "every shipment event, keyed by its order");
}

// ---- Cancel versus ship (issue 12, H2) and the default warehouse (H8). ----

fn clients_of(channel: Channel) -> (Clients, PaymentsServiceClient<Channel>) {
    (
        Clients {
            catalog: CatalogServiceClient::new(channel.clone()),
            inventory: InventoryServiceClient::new(channel.clone()),
            orders: OrderServiceClient::new(channel.clone()),
            warehouse: WarehouseServiceClient::new(channel.clone()),
        },
        PaymentsServiceClient::new(channel),
    )
}

async fn product(clients: &Clients, sku: &str, price: i64) {
    clients
        .catalog
        .clone()
        .upsert_product(UpsertProductRequest {
            product: Some(Product {
                sku: sku.into(),
                title: format!("{sku} title"),
                price: Some(Money {
                    amount_minor: price,
                    currency: "EUR".into(),
                }),
                category: "e2e".into(),
                active: true,
                ..Product::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("product");
}

async fn sell(clients: &Clients, sku: &str, on_hand: i64) {
    clients
        .inventory
        .clone()
        .set_stock(SetStockRequest {
            sku: sku.into(),
            on_hand,
            buckets: 0,
        })
        .await
        .expect("set stock");
}

async fn shipments_of(clients: &Clients, order_id: &str) -> Vec<Shipment> {
    clients
        .warehouse
        .clone()
        .list_shipments(ListShipmentsRequest {
            filter: Some(list_shipments_request::Filter::OrderId(order_id.into())),
            ..ListShipmentsRequest::default()
        })
        .await
        .expect("list shipments")
        .into_inner()
        .shipments
}

async fn refunded(payments: &PaymentsServiceClient<Channel>, order_id: &str) -> i64 {
    payments
        .clone()
        .list_ledger_entries(ListLedgerEntriesRequest {
            order_reference: order_id.into(),
            kind: LedgerEntryKind::Refund as i32,
            ..ListLedgerEntriesRequest::default()
        })
        .await
        .expect("ledger")
        .into_inner()
        .entries
        .iter()
        .filter_map(|e| e.amount.as_ref().map(|m| m.amount_minor))
        .sum()
}

/// Orders raced in [`cancel_racing_mark_shipped_never_ships_and_refunds_the_same_units`].
const RACED: usize = 50;
const TEE_PRICE: i64 = 1000;
const MUG_PRICE: i64 = 300;

/// 50 orders, each split over a real warehouse (tees, Berlin) and the default warehouse
/// (mugs): CancelOrder and MarkShipped of both shipments at once, through the mesh on a
/// real redis-server. Each shipment ends shipped or cancelled, never both; exactly the
/// cancelled lines are refunded and restocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_mark_shipped_never_ships_and_refunds_the_same_units() {
    let mesh = DevMesh::start_in_region(REGION).await.expect("mesh");
    let (clients, payments) = clients_of(mesh.channel().await.expect("connect"));
    product(&clients, "race-tee", TEE_PRICE).await;
    product(&clients, "race-mug", MUG_PRICE).await;
    clients
        .warehouse
        .clone()
        .upsert_warehouse(UpsertWarehouseRequest {
            warehouse: Some(Warehouse {
                id: "ber-race".into(),
                name: "Berlin".into(),
                region: REGION.into(),
                location: point(BERLIN),
                shipping_options: vec![ShippingOption {
                    speed: ShippingSpeed::Standard as i32,
                    max_days: 3,
                    max_distance_km: 0,
                }],
                active: true,
                ..Warehouse::default()
            }),
        })
        .await
        .expect("warehouse");
    let stock = RACED as i64;
    clients
        .warehouse
        .clone()
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "ber-race".into(),
            sku: "race-tee".into(),
            physical: stock,
        })
        .await
        .expect("stock take");
    until("tees in inventory", || async {
        (on_hand(&clients, "race-tee").await == stock).then_some(())
    })
    .await;
    sell(&clients, "race-mug", stock).await;

    let mut orders = Vec::new();
    for i in 0..RACED {
        let id = checkout_as(
            &clients,
            &format!("race-{i}"),
            &format!("race-cust-{i}"),
            &[("race-tee", 1), ("race-mug", 1)],
        )
        .await;
        order_in(&clients, &id, OrderStatus::Fulfilling, 2).await;
        orders.push(id);
    }

    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in orders.iter().enumerate() {
        let shipments = shipments_of(&clients, id).await;
        let mut calls: Vec<futures::future::BoxFuture<'static, Race>> = shipments
            .into_iter()
            .enumerate()
            .map(|(n, shipment)| {
                let mut warehouse = clients.warehouse.clone();
                // Jitter, not synchronisation: MarkShipped is much quicker than the cancel
                // saga's first steps, so spread the shipments over 0..60 ms to meet the
                // warehouse step at every point (nothing, one or both shipped before it).
                let jitter = Duration::from_millis(((i * 7 + n * 23) % 60) as u64);
                Box::pin(async move {
                    tokio::time::sleep(jitter).await;
                    let result = warehouse
                        .mark_shipped(MarkShippedRequest {
                            shipment_id: shipment.id.clone(),
                            carrier: "dhl".into(),
                            tracking_number: format!("T-{}", shipment.id),
                        })
                        .await;
                    Race::Ship(shipment.id, result.map(|_| ()))
                }) as futures::future::BoxFuture<'static, Race>
            })
            .collect();
        let (mut orders_client, id) = (clients.orders.clone(), id.clone());
        let cancel = Box::pin(async move {
            let result = orders_client
                .cancel_order(CancelOrderRequest {
                    order_id: id.clone(),
                    reason: "changed my mind".into(),
                })
                .await;
            Race::Cancel(id, result.map(|r| Box::new(r.into_inner().order.expect("order"))))
        });
        // Half the orders start with the cancel, half with the shipments.
        if i % 2 == 0 {
            calls.insert(0, cancel);
        } else {
            calls.push(cancel);
        }
        for call in calls {
            tasks.spawn(call);
        }
    }
    let mut shipped_calls = std::collections::HashMap::new();
    let mut cancels = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            Race::Ship(id, result) => {
                shipped_calls.insert(id, result);
            }
            Race::Cancel(id, result) => {
                cancels.insert(id, result);
            }
        }
    }

    let (mut tees_left, mut mugs_left, mut refunds, mut cancelled_value) = (0, 0, 0, 0);
    let mut shapes = [0_usize; 3]; // nothing, part, all shipped
    for id in &orders {
        let mut left = Vec::new();
        for shipment in shipments_of(&clients, id).await {
            let sku = shipment.lines[0].sku.clone();
            match (
                &shipped_calls[&shipment.id],
                ShipmentStatus::try_from(shipment.status),
            ) {
                (Ok(()), Ok(ShipmentStatus::Shipped)) => left.push(sku),
                (Err(status), Ok(ShipmentStatus::Cancelled)) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                }
                (call, status) => panic!("{}: MarkShipped {call:?}, ended {status:?}", shipment.id),
            }
        }
        let refund = refunded(&payments, id).await;
        let order = order(&clients, id).await;
        let expected: i64 = [("race-tee", TEE_PRICE), ("race-mug", MUG_PRICE)]
            .iter()
            .filter(|(sku, _)| !left.iter().any(|l| l == sku))
            .map(|(_, price)| price)
            .sum();
        assert_eq!(refund, expected, "{id}: refunded exactly what did not ship");
        match (left.len(), &cancels[id]) {
            (0, Ok(cancelled)) => {
                assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
                shapes[0] += 1;
            }
            (1, Ok(_)) => {
                let lines: Vec<&str> = order.cancelled_lines.iter().map(|l| l.sku.as_str()).collect();
                assert_eq!(lines.len(), 1, "{order:?}");
                assert_ne!(
                    lines[0], left[0],
                    "the cancelled line is the one that did not ship"
                );
                assert_ne!(order.status, OrderStatus::Cancelled as i32);
                shapes[1] += 1;
            }
            (2, Err(status)) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(order.cancelled_lines.is_empty());
                shapes[2] += 1;
            }
            (shipped, answer) => panic!("{id}: {shipped} shipped, CancelOrder answered {answer:?}"),
        }
        tees_left += left.iter().filter(|s| *s == "race-tee").count() as i64;
        mugs_left += left.iter().filter(|s| *s == "race-mug").count() as i64;
        refunds += refund;
        cancelled_value += expected;
    }
    assert_eq!(refunds, cancelled_value);
    // Sold at checkout, restocked only when never shipped.
    assert_eq!(
        on_hand(&clients, "race-tee").await,
        stock - tees_left,
        "tees never restocked and shipped"
    );
    assert_eq!(
        on_hand(&clients, "race-mug").await,
        stock - mugs_left,
        "mugs never restocked and shipped"
    );
    println!(
        "cancel vs ship over {RACED} orders: {} fully cancelled, {} partly, {} refused (all shipped); {} refunded",
        shapes[0], shapes[1], shapes[2], refunds
    );
}

/// One side of the race.
enum Race {
    Ship(String, Result<(), tonic::Status>),
    Cancel(String, Result<Box<Order>, tonic::Status>),
}

/// A fresh `holdfast dev` sells what inventory has and fulfils it from its default
/// warehouse: no warehouse set up by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_dev_mesh_fulfils_from_its_default_warehouse() {
    let mesh = DevMesh::start_in_region(REGION).await.expect("mesh");
    let (clients, _) = clients_of(mesh.channel().await.expect("connect"));
    product(&clients, "dev-tee", 1500).await;
    sell(&clients, "dev-tee", 5).await;
    let id = checkout(&clients, "dev-1", &[("dev-tee", 2)]).await;
    let routed = order_in(&clients, &id, OrderStatus::Fulfilling, 1).await;
    assert_eq!(routed.suborders[0].warehouse_id, format!("default-{REGION}"));
    assert!(routed.backorders.is_empty());
    ship_and_deliver_check(&clients, &id, 1).await;
    assert_eq!(on_hand(&clients, "dev-tee").await, 3);
}

/// With the default warehouse off, a SKU no warehouse stocks is a backorder the order
/// shows (BACKORDERED, with why), not a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_default_warehouse_an_unstocked_line_shows_as_backordered() {
    let mesh = DevMesh::start_with(&["--region", REGION, "--default-warehouse", "false"])
        .await
        .expect("mesh");
    let (clients, _) = clients_of(mesh.channel().await.expect("connect"));
    product(&clients, "bo-tee", 1500).await;
    sell(&clients, "bo-tee", 5).await;
    let id = checkout(&clients, "bo-1", &[("bo-tee", 2)]).await;
    let order = until("the backorder on the order", || async {
        let order = order(&clients, &id).await;
        (!order.backorders.is_empty()).then_some(order)
    })
    .await;
    assert_eq!(order.status, OrderStatus::Fulfilling as i32);
    assert!(order.suborders.is_empty());
    let backorder = &order.backorders[0];
    assert_eq!(
        (backorder.sku.as_str(), backorder.requested, backorder.missing),
        ("bo-tee", 2, 2)
    );
    assert_eq!(backorder.status, LineStatus::Backordered as i32);
    assert!(backorder.reason.contains("stocks bo-tee"), "{}", backorder.reason);
    // Cancelling it refunds and restocks everything (nothing can have shipped).
    let cancelled = clients
        .orders
        .clone()
        .cancel_order(CancelOrderRequest {
            order_id: id.clone(),
            reason: String::new(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    assert_eq!(on_hand(&clients, "bo-tee").await, 5);
}
