//! Notifications end to end through the mesh `holdfast dev` builds (in-process bus): an
//! order through its whole life (placed and paid, shipped with tracking, delivered, return
//! received and refunded) and a second order cancelled produce exactly one notification per
//! event and channel, in the JSON-lines outbox under the data dir and through
//! ListNotifications; an opted-out channel is recorded as suppressed and not sent.
//!
//! The kill between send and record is exercised on the engine with its real store and
//! outbox file (`services/holdfast-notifications/tests/engine.rs`,
//! `killed_between_send_and_record_the_restart_sends_nothing_twice`): the in-process bus
//! of this mesh does not survive a process restart, so a restart here would lose events
//! for every consumer, not just ours.

use std::time::{Duration, Instant};

use holdfast_e2e::DevMesh;
use holdfast_notifications::{Channel, FileNotifier};
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_proto::inventory::v1::GetAvailabilityRequest;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use holdfast_proto::notifications::v1::{
    Channel as WireChannel, ListNotificationsRequest, NotificationStatus, SetPreferenceRequest,
};
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CheckoutLine, CheckoutLines, CheckoutOutcome, CheckoutRequest, GetOrderRequest,
    InspectionResult, OrderStatus, ReceiveReturnRequest, RequestReturnRequest, checkout_request,
};
use holdfast_proto::warehouse::v1::warehouse_service_client::WarehouseServiceClient;
use holdfast_proto::warehouse::v1::{
    ListShipmentsRequest, MarkDeliveredRequest, MarkShippedRequest, SetWarehouseStockRequest, ShippingOption,
    ShippingSpeed, UpsertWarehouseRequest, Warehouse, list_shipments_request,
};
use holdfast_testkit::BearerChannel as GrpcChannel;

const BERLIN: (f64, f64) = (52.520, 13.405);
/// Bounded polling of the mesh's state, never a sleep to wait for an event.
const WITHIN: Duration = Duration::from_secs(30);

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

fn berlin() -> Option<GeoPoint> {
    Some(GeoPoint {
        latitude: BERLIN.0,
        longitude: BERLIN.1,
    })
}

struct Clients {
    orders: OrderServiceClient<GrpcChannel>,
    warehouse: WarehouseServiceClient<GrpcChannel>,
    notifications: NotificationServiceClient<GrpcChannel>,
}

async fn checkout(clients: &mut Clients, key: &str, customer: &str) -> String {
    let response = clients
        .orders
        .checkout(CheckoutRequest {
            idempotency_key: key.into(),
            customer_id: customer.into(),
            source: Some(checkout_request::Source::Lines(CheckoutLines {
                lines: vec![CheckoutLine {
                    sku: "n-tee".into(),
                    quantity: 1,
                    expected_unit_price: None,
                }],
            })),
            shipping_address: Some(Address {
                name: "Ada Lovelace".into(),
                line1: "Unter den Linden 1".into(),
                city: "Berlin".into(),
                postal_code: "10117".into(),
                country: "DE".into(),
                location: berlin(),
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

async fn status(clients: &Clients, id: &str) -> i32 {
    clients
        .orders
        .clone()
        .get_order(GetOrderRequest { order_id: id.into() })
        .await
        .expect("get order")
        .into_inner()
        .order
        .expect("order")
        .status
}

async fn listed(clients: &Clients, customer: &str) -> Vec<holdfast_proto::notifications::v1::Notification> {
    clients
        .notifications
        .clone()
        .list_notifications(ListNotificationsRequest {
            customer_id: customer.into(),
            page: None,
        })
        .await
        .expect("list notifications")
        .into_inner()
        .notifications
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_life_notifies_once_per_event_and_channel() {
    let mesh = DevMesh::start().await.expect("mesh");
    let channel = mesh.channel().await.expect("connect");
    let mut clients = Clients {
        orders: OrderServiceClient::new(channel.clone()),
        warehouse: WarehouseServiceClient::new(channel.clone()),
        notifications: NotificationServiceClient::new(channel.clone()),
    };
    CatalogServiceClient::new(channel.clone())
        .upsert_product(UpsertProductRequest {
            product: Some(Product {
                sku: "n-tee".into(),
                title: "Notification tee".into(),
                price: Some(Money {
                    amount_minor: 1500,
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
    clients
        .warehouse
        .upsert_warehouse(UpsertWarehouseRequest {
            warehouse: Some(Warehouse {
                id: "ber-1".into(),
                name: "Berlin".into(),
                region: "local".into(),
                location: berlin(),
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
    clients
        .warehouse
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "ber-1".into(),
            sku: "n-tee".into(),
            physical: 10,
        })
        .await
        .expect("stock");
    let inventory = InventoryServiceClient::new(channel.clone());
    until("stock in inventory", || {
        let mut inventory = inventory.clone();
        async move {
            let levels = inventory
                .get_availability(GetAvailabilityRequest {
                    skus: vec!["n-tee".into()],
                })
                .await
                .ok()?
                .into_inner()
                .levels;
            (levels.first()?.on_hand == 10).then_some(())
        }
    })
    .await;

    // Order 1: placed, shipped, delivered, returned.
    let first = checkout(&mut clients, "n-1", "ada").await;
    let shipment = until("the shipment", || {
        let mut warehouse = clients.warehouse.clone();
        let first = first.clone();
        async move {
            warehouse
                .list_shipments(ListShipmentsRequest {
                    filter: Some(list_shipments_request::Filter::OrderId(first)),
                    ..ListShipmentsRequest::default()
                })
                .await
                .ok()?
                .into_inner()
                .shipments
                .into_iter()
                .next()
        }
    })
    .await;
    clients
        .warehouse
        .mark_shipped(MarkShippedRequest {
            shipment_id: shipment.id.clone(),
            carrier: "dhl".into(),
            tracking_number: "JJD-N-1".into(),
        })
        .await
        .expect("ship");
    clients
        .warehouse
        .mark_delivered(MarkDeliveredRequest {
            shipment_id: shipment.id.clone(),
            delivered_at_unix_ms: 0,
        })
        .await
        .expect("deliver");
    until("delivered", || async {
        (status(&clients, &first).await == OrderStatus::Delivered as i32).then_some(())
    })
    .await;
    let requested = clients
        .orders
        .request_return(RequestReturnRequest {
            order_id: first.clone(),
            lines: vec![],
            reason: "too small".into(),
        })
        .await
        .expect("return")
        .into_inner()
        .order
        .expect("order");
    let return_id = requested.order_return.expect("return").return_id;
    clients
        .orders
        .receive_return(ReceiveReturnRequest {
            order_id: first.clone(),
            return_id,
            inspection: InspectionResult::Passed as i32,
            inspection_note: String::new(),
            warehouse_id: "ber-1".into(),
        })
        .await
        .expect("receive return");

    // Order 1's eight notifications are settled before the opt-out: its events reach the
    // notifications service asynchronously, and an opt-out that overtook them would
    // (rightly) suppress their push.
    until("order 1's notifications settled", || async {
        let all = listed(&clients, "ada").await;
        let settled = all.iter().all(|n| n.status != NotificationStatus::Pending as i32);
        (all.len() == 8 && settled).then_some(())
    })
    .await;

    // Order 2: placed, then cancelled; ada opted out of push first.
    clients
        .notifications
        .set_preference(SetPreferenceRequest {
            customer_id: "ada".into(),
            channel: WireChannel::Push as i32,
            opted_out: true,
        })
        .await
        .expect("opt out");
    let second = checkout(&mut clients, "n-2", "ada").await;
    clients
        .orders
        .cancel_order(CancelOrderRequest {
            order_id: second.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .expect("cancel");

    // 4 events of order 1 x 2 channels sent; 2 events of order 2: email sent, push suppressed.
    let all = until("every notification recorded and settled", || async {
        let all = listed(&clients, "ada").await;
        let settled = all.iter().all(|n| n.status != NotificationStatus::Pending as i32);
        (all.len() == 12 && settled).then_some(all)
    })
    .await;
    let kinds = |order: &str| {
        let mut kinds: Vec<(String, i32, i32)> = all
            .iter()
            .filter(|n| n.order_id == order)
            .map(|n| (n.event_type.clone(), n.channel, n.status))
            .collect();
        kinds.sort();
        kinds
    };
    let (sent, suppressed) = (
        NotificationStatus::Sent as i32,
        NotificationStatus::Suppressed as i32,
    );
    let (email, push) = (WireChannel::Email as i32, WireChannel::Push as i32);
    let mut want_first = Vec::new();
    for kind in [
        "order.confirmed",
        "order.return_received",
        "shipment.delivered",
        "shipment.shipped",
    ] {
        want_first.push((kind.to_string(), email, sent));
        want_first.push((kind.to_string(), push, sent));
    }
    want_first.sort();
    assert_eq!(kinds(&first), want_first);
    let mut want_second = vec![
        ("order.cancelled".to_string(), email, sent),
        ("order.cancelled".to_string(), push, suppressed),
        ("order.confirmed".to_string(), email, sent),
        ("order.confirmed".to_string(), push, suppressed),
    ];
    want_second.sort();
    assert_eq!(kinds(&second), want_second);
    let shipped = all
        .iter()
        .find(|n| n.event_type == "shipment.shipped" && n.channel == email)
        .expect("shipped email");
    assert!(shipped.body.contains("JJD-N-1"), "{}", shipped.body);

    // The outbox file: one line per sent (event, channel), none for suppressed ones.
    let written =
        FileNotifier::read_all(&mesh.data_dir().join("notifications-outbox.jsonl")).expect("outbox");
    let mut keys: Vec<(String, Channel)> = written.iter().map(|n| (n.event_id.clone(), n.channel)).collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "a notification was written twice");
    assert_eq!(keys.len(), 10);
}
