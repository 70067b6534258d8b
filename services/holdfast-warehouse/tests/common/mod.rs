//! A warehouse on a real SQLite file and the in-process bus: its relay publishes to the bus,
//! and tests read what it announced from there.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use holdfast_platform::events::{Event, HandleError, InProcessBus};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_proto::events::v1::{
    DispatchRequested, FulfillmentEvent, OrderCancelled, OrderEvent, OrderLine, ReturnReceived,
    ShipmentEvent, fulfillment_event, order_event,
};
use holdfast_proto::warehouse::v1::ShippingSpeed;
use holdfast_store::{
    ShippingOptionRecord, SqliteStore, StockRow, StoredShipment, StoredWarehouse, WarehouseStore,
};
use holdfast_testkit::TempDir;
use holdfast_warehouse::events::{FULFILLMENT_TOPIC, ORDERS_TOPIC, SHIPMENTS_TOPIC, types};
use holdfast_warehouse::{RunningWarehouse, WarehouseOptions, consumer};
use prost::Message;
use tokio::sync::broadcast;

/// Places routing tests ship to and ship from.
pub const BERLIN: (f64, f64) = (52.520, 13.405);
pub const POTSDAM: (f64, f64) = (52.391, 13.064);
pub const HAMBURG: (f64, f64) = (53.551, 9.994);
pub const MUNICH: (f64, f64) = (48.137, 11.576);
pub const PARIS: (f64, f64) = (48.857, 2.352);

/// How long a test waits for something that should happen at once.
pub const WITHIN: Duration = Duration::from_secs(10);

pub struct Fixture {
    pub running: RunningWarehouse<SqliteStore>,
    pub store: SqliteStore,
    pub bus: InProcessBus,
    pub shipments: broadcast::Receiver<Event>,
    pub fulfillment: broadcast::Receiver<Event>,
    pub reconciliation: broadcast::Receiver<Event>,
    pub dir: TempDir,
}

impl Fixture {
    pub async fn start() -> Self {
        Self::start_with(WarehouseOptions::default()).await
    }

    /// A fixture whose warehouse runs with `options` (its default warehouse created).
    pub async fn start_with(options: WarehouseOptions) -> Self {
        let dir = TempDir::new("warehouse").expect("dir");
        let store = SqliteStore::open(dir.path().join("holdfast.db"))
            .await
            .expect("sqlite");
        let bus = InProcessBus::new();
        let shipments = bus.subscribe(SHIPMENTS_TOPIC);
        let fulfillment = bus.subscribe(FULFILLMENT_TOPIC);
        let reconciliation = bus.subscribe(holdfast_warehouse::events::RECONCILIATION_TOPIC);
        let running = holdfast_warehouse::start(store.clone(), Arc::new(bus.clone()), "eu", options);
        running
            .engine
            .ensure_default_warehouse()
            .await
            .expect("default warehouse");
        Self {
            running,
            store,
            bus,
            shipments,
            fulfillment,
            reconciliation,
            dir,
        }
    }

    /// An active warehouse of region "eu" at `at`, standard shipping anywhere in 3 days,
    /// express within 600 km in 1 day, same day within 40 km.
    pub async fn warehouse(&self, id: &str, at: (f64, f64)) {
        self.warehouse_with(id, at, &standard_express_same_day()).await;
    }

    pub async fn warehouse_with(&self, id: &str, at: (f64, f64), options: &[(ShippingSpeed, u32, u32)]) {
        self.store
            .upsert_warehouse(StoredWarehouse {
                id: id.into(),
                name: format!("{id} fulfilment centre"),
                region: "eu".into(),
                latitude: at.0,
                longitude: at.1,
                shipping_options: options
                    .iter()
                    .map(|(speed, max_days, max_distance_km)| ShippingOptionRecord {
                        speed: *speed as i32,
                        max_days: *max_days,
                        max_distance_km: *max_distance_km,
                    })
                    .collect(),
                active: true,
                ..StoredWarehouse::default()
            })
            .await
            .expect("upsert warehouse");
    }

    /// Stock take: `physical` units of `sku` in `warehouse`.
    pub async fn stock(&self, warehouse: &str, sku: &str, physical: i64) {
        self.running
            .engine
            .set_stock(warehouse, sku, physical)
            .await
            .expect("set stock");
    }

    pub async fn row(&self, warehouse: &str, sku: &str) -> StockRow {
        self.store
            .get_stock(&[sku.to_string()], Some(warehouse))
            .await
            .expect("read stock")
            .pop()
            .unwrap_or_default()
    }

    /// (physical, allocatable) of `sku` in `warehouse`.
    pub async fn levels(&self, warehouse: &str, sku: &str) -> (i64, i64) {
        let row = self.row(warehouse, sku).await;
        (row.physical, row.allocatable)
    }

    pub async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        consumer::handle(&self.running.engine, event).await
    }

    pub async fn shipments_of(&self, order_id: &str) -> Vec<StoredShipment> {
        self.store
            .list_shipments_by_order(order_id)
            .await
            .expect("list shipments")
    }
}

pub fn standard_express_same_day() -> Vec<(ShippingSpeed, u32, u32)> {
    vec![
        (ShippingSpeed::Standard, 3, 0),
        (ShippingSpeed::Express, 1, 600),
        (ShippingSpeed::SameDay, 0, 40),
    ]
}

pub fn address(at: (f64, f64)) -> Address {
    Address {
        name: "Grace Hopper".into(),
        line1: "1 Compiler Street".into(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
        location: Some(GeoPoint {
            latitude: at.0,
            longitude: at.1,
        }),
        ..Address::default()
    }
}

fn lines(lines: &[(&str, i64)]) -> Vec<OrderLine> {
    lines
        .iter()
        .map(|(sku, quantity)| OrderLine {
            sku: (*sku).into(),
            quantity: *quantity,
            unit_price: Some(Money {
                amount_minor: 1000,
                currency: "EUR".into(),
            }),
        })
        .collect()
}

fn event(topic: &str, key: &str, event_type: &str, id: &str, payload: Vec<u8>) -> Event {
    Event {
        id: id.into(),
        topic: topic.into(),
        key: key.into(),
        event_type: event_type.into(),
        region: "eu".into(),
        payload,
        traceparent: None,
    }
}

/// A fresh event id.
pub fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `fulfillment.dispatch_requested` for `order_id`.
pub fn dispatch(order_id: &str, order_lines: &[(&str, i64)], to: (f64, f64), speed: ShippingSpeed) -> Event {
    dispatch_with_id(&event_id(), order_id, order_lines, to, speed)
}

pub fn dispatch_with_id(
    id: &str,
    order_id: &str,
    order_lines: &[(&str, i64)],
    to: (f64, f64),
    speed: ShippingSpeed,
) -> Event {
    let payload = FulfillmentEvent {
        event_id: id.into(),
        event: Some(fulfillment_event::Event::DispatchRequested(DispatchRequested {
            order_id: order_id.into(),
            lines: lines(order_lines),
            ship_to: Some(address(to)),
            shipping_speed: speed as i32,
            region: "eu".into(),
            occurred_at_unix_ms: 1_700_000_000_000,
        })),
    }
    .encode_to_vec();
    event(
        FULFILLMENT_TOPIC,
        order_id,
        types::DISPATCH_REQUESTED,
        id,
        payload,
    )
}

/// `order.cancelled` for `order_id`.
pub fn cancelled(order_id: &str) -> Event {
    let id = event_id();
    let payload = OrderEvent {
        event_id: id.clone(),
        event: Some(order_event::Event::Cancelled(OrderCancelled {
            order_id: order_id.into(),
            customer_id: "c".into(),
            reason: "changed my mind".into(),
            ..OrderCancelled::default()
        })),
    }
    .encode_to_vec();
    event(ORDERS_TOPIC, order_id, types::ORDER_CANCELLED, &id, payload)
}

/// `order.return_received` for `order_id`.
pub fn returned(
    order_id: &str,
    return_id: &str,
    warehouse: &str,
    items: &[(&str, i64)],
    passed: bool,
) -> Event {
    let id = event_id();
    let payload = OrderEvent {
        event_id: id.clone(),
        event: Some(order_event::Event::ReturnReceived(ReturnReceived {
            order_id: order_id.into(),
            return_id: return_id.into(),
            lines: lines(items),
            warehouse_id: warehouse.into(),
            inspection_passed: passed,
            occurred_at_unix_ms: 1_700_000_000_000,
        })),
    }
    .encode_to_vec();
    event(ORDERS_TOPIC, order_id, types::RETURN_RECEIVED, &id, payload)
}

/// The next event on `rx`, waiting at most [`WITHIN`].
pub async fn next(rx: &mut broadcast::Receiver<Event>) -> Event {
    tokio::time::timeout(WITHIN, rx.recv())
        .await
        .expect("an event within the deadline")
        .expect("bus open")
}

/// The next shipment event on `rx`, decoded.
pub async fn next_shipment(rx: &mut broadcast::Receiver<Event>) -> (String, ShipmentEvent) {
    let event = next(rx).await;
    let decoded = ShipmentEvent::decode(event.payload.as_slice()).expect("a shipment event");
    assert_eq!(decoded.event_id, event.id, "payload and header carry one id");
    (event.event_type, decoded)
}

/// (warehouse, [(sku, units)]) of each shipment.
pub fn shapes(shipments: &[StoredShipment]) -> Vec<(String, Vec<(String, i64)>)> {
    shipments
        .iter()
        .map(|s| {
            (
                s.warehouse_id.clone(),
                s.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect(),
            )
        })
        .collect()
}

pub fn shape(items: &[(&str, &[(&str, i64)])]) -> Vec<(String, Vec<(String, i64)>)> {
    items
        .iter()
        .map(|(wh, lines)| {
            (
                (*wh).to_string(),
                lines.iter().map(|(s, q)| ((*s).to_string(), *q)).collect(),
            )
        })
        .collect()
}
