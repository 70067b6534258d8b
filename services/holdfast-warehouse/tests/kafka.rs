//! The warehouse on a real Apache Kafka broker (KRaft, one per test): bad events go to the
//! dead-letter topic while the pipeline keeps flowing, and a relay or a consumer killed at
//! the worst moment loses no event and applies none twice.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::future::BoxFuture;
use holdfast_platform::events::{
    BusError, Event, EventBus, HandleError, KafkaBus, dlq_topic, handler_fn, headers, spawn_consumer,
};
use holdfast_proto::events::v1::{FulfillmentEvent, ShipmentEvent, fulfillment_event, shipment_event};
use holdfast_proto::warehouse::v1::ShippingSpeed;
use holdfast_store::relay::{self, RelayOptions};
use holdfast_store::{OutboxMessage, OutboxStore, SqliteStore};
use holdfast_testkit::{KafkaBroker, TempDir};
use holdfast_warehouse::events::{FULFILLMENT_TOPIC, SHIPMENTS_TOPIC};
use holdfast_warehouse::{CONSUMER_GROUP, RunningWarehouse, WarehouseOptions, consumer};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _, OwnedMessage};
use tokio::sync::{Notify, mpsc};

/// A warehouse on its own SQLite file, publishing through `bus`.
struct Site {
    store: SqliteStore,
    _dir: TempDir,
}

impl Site {
    async fn new() -> Self {
        let dir = TempDir::new("warehouse-kafka").expect("dir");
        let store = SqliteStore::open(dir.path().join("holdfast.db"))
            .await
            .expect("sqlite");
        Self { store, _dir: dir }
    }

    fn start(&self, bus: Arc<dyn EventBus>) -> RunningWarehouse<SqliteStore> {
        holdfast_warehouse::start(self.store.clone(), bus, "eu", WarehouseOptions::default())
    }

    /// Warehouse "ber" in Berlin with `units` of "tee".
    async fn stocked(&self, running: &RunningWarehouse<SqliteStore>, units: i64) {
        use holdfast_store::{ShippingOptionRecord, StoredWarehouse, WarehouseStore};
        self.store
            .upsert_warehouse(StoredWarehouse {
                id: "ber".into(),
                region: "eu".into(),
                latitude: BERLIN.0,
                longitude: BERLIN.1,
                shipping_options: vec![ShippingOptionRecord {
                    speed: ShippingSpeed::Standard as i32,
                    max_days: 3,
                    max_distance_km: 0,
                }],
                active: true,
                ..StoredWarehouse::default()
            })
            .await
            .expect("warehouse");
        running
            .engine
            .set_stock("ber", "tee", units)
            .await
            .expect("stock");
    }

    async fn shipments_of(&self, order_id: &str) -> Vec<holdfast_store::StoredShipment> {
        use holdfast_store::WarehouseStore;
        self.store.list_shipments_by_order(order_id).await.expect("list")
    }

    async fn allocatable(&self) -> i64 {
        use holdfast_store::WarehouseStore;
        self.store
            .get_stock(&["tee".to_string()], Some("ber"))
            .await
            .expect("stock")[0]
            .allocatable
    }
}

/// Polls `check` (external state: the store, a topic) until it holds, at most [`WITHIN`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WITHIN * 3;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain rdkafka consumer (no holdfast code) reading `count` records of `topic` from the start.
async fn read_raw(brokers: &str, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-{topic}-{}", event_id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    while out.len() < count {
        let message = tokio::time::timeout(WITHIN * 3, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} records in {topic}", out.len()))
            .expect("recv");
        out.push(message.detach());
    }
    out
}

fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Publishes through Kafka, then never answers: a relay stuck (killed) between the
/// broker's acknowledgement and marking the rows sent.
struct PublishThenHang {
    inner: KafkaBus,
    published: mpsc::UnboundedSender<Vec<String>>,
}

impl EventBus for PublishThenHang {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let ids = events.iter().map(|e| e.id.clone()).collect();
            self.inner.publish(events).await?;
            let _ = self.published.send(ids);
            std::future::pending().await
        })
    }
}

/// A dispatch event as the orders service writes it to its outbox.
fn dispatch_row(order_id: &str, units: i64) -> OutboxMessage {
    let event = dispatch(order_id, &[("tee", units)], BERLIN, ShippingSpeed::Standard);
    OutboxMessage {
        id: event.id,
        topic: event.topic,
        key: event.key,
        event_type: event.event_type,
        payload: event.payload,
        headers: [("region".to_string(), "eu".to_string())].into(),
        created_at_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_dead_lettered_and_the_next_good_one_is_routed() {
    let broker = KafkaBroker::start().expect("broker");
    let bus = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let site = Site::new().await;
    let mut running = site.start(Arc::new(bus.clone()));
    site.stocked(&running, 10).await;
    running.consume(&broker.bus()).await.expect("consume");

    // One key, so one partition and one order: the good event comes after the bad ones.
    let key = "ord-flow";
    let mut unknown_type = dispatch(key, &[("tee", 1)], BERLIN, ShippingSpeed::Standard);
    unknown_type.event_type = "fulfillment.teleport_requested".into();
    unknown_type.id = event_id();
    let mut undecodable = dispatch(key, &[("tee", 1)], BERLIN, ShippingSpeed::Standard);
    undecodable.payload = vec![0xff, 0xff, 0xff, 0x01];
    undecodable.id = event_id();
    // An unknown SKU is no longer poison (it is backordered, see fulfillment.rs): a bad
    // routing input now is a dispatch without a ship-to location.
    let mut no_location = dispatch(key, &[("tee", 1)], BERLIN, ShippingSpeed::Standard);
    no_location.id = event_id();
    no_location.payload = {
        let mut decoded = FulfillmentEvent::decode(no_location.payload.as_slice()).expect("decodes");
        if let Some(fulfillment_event::Event::DispatchRequested(d)) = decoded.event.as_mut() {
            d.ship_to = None;
        }
        decoded.encode_to_vec()
    };
    let good = dispatch(key, &[("tee", 2)], BERLIN, ShippingSpeed::Standard);
    bus.publish(vec![
        unknown_type.clone(),
        undecodable.clone(),
        no_location.clone(),
        good,
    ])
    .await
    .expect("publish");

    eventually("the good dispatch routed", || async {
        !site.shipments_of(key).await.is_empty()
    })
    .await;
    assert_eq!(site.allocatable().await, 8, "only the good event allocated");

    let dead = read_raw(&broker.bootstrap(), &dlq_topic(FULFILLMENT_TOPIC), 3).await;
    let dead: Vec<(String, String)> = dead
        .iter()
        .map(|m| {
            assert_eq!(
                header(m, headers::CONSUMER_GROUP).as_deref(),
                Some(CONSUMER_GROUP)
            );
            assert_eq!(
                header(m, headers::ORIGINAL_TOPIC).as_deref(),
                Some(FULFILLMENT_TOPIC)
            );
            (
                header(m, headers::EVENT_ID).expect("event id kept"),
                header(m, headers::REASON).expect("a reason"),
            )
        })
        .collect();
    assert_eq!(dead[0].0, unknown_type.id);
    assert!(dead[0].1.contains("unknown event type"), "{}", dead[0].1);
    assert_eq!(dead[1].0, undecodable.id);
    assert!(dead[1].1.contains("undecodable"), "{}", dead[1].1);
    assert_eq!(dead[2].0, no_location.id);
    assert!(dead[2].1.contains("ship_to.location"), "{}", dead[2].1);

    let created = read_raw(&broker.bootstrap(), SHIPMENTS_TOPIC, 1).await;
    assert_eq!(
        header(&created[0], headers::EVENT_TYPE).as_deref(),
        Some("shipment.created")
    );
    assert_eq!(created[0].key(), Some(key.as_bytes()), "keyed by order id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_between_publish_and_mark_lose_nothing_and_routing_happens_once() {
    let broker = KafkaBroker::start().expect("broker");
    let kafka = KafkaBus::new(&broker.bootstrap()).expect("bus");

    // The producer side of dispatch (as orders runs it): an outbox with three dispatches,
    // and a relay that dies after the broker took them, before marking them sent.
    let producer = Site::new().await;
    let rows = vec![
        dispatch_row("ord-a", 2),
        dispatch_row("ord-b", 3),
        dispatch_row("ord-c", 1),
    ];
    let dispatch_ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    producer.store.append_outbox(rows).await.expect("outbox");
    let (published_tx, mut published) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let crashing = PublishThenHang {
        inner: kafka.clone(),
        published: published_tx,
    };
    let first_relay = tokio::spawn({
        let (store, wake) = (producer.store.clone(), wake.clone());
        async move {
            relay::run_to_bus(&store, &wake, &RelayOptions::default(), &crashing, "eu", |_| {
                |_| {}
            })
            .await;
        }
    });
    let sent = tokio::time::timeout(WITHIN, published.recv())
        .await
        .expect("published")
        .expect("a batch");
    assert_eq!(sent, dispatch_ids);
    first_relay.abort();
    let _ = first_relay.await;
    assert_eq!(
        producer.store.pending_outbox(10).await.expect("pending").len(),
        3,
        "never marked sent"
    );

    // The warehouse, stocked (and its stock take announced) by a first clean run...
    let site = Site::new().await;
    let setup = site.start(Arc::new(kafka.clone()));
    site.stocked(&setup, 10).await;
    eventually("the stock take announced", || async {
        site.store.pending_outbox(10).await.expect("pending").is_empty()
    })
    .await;
    drop(setup);
    // ...then run with a relay that also dies between publish and mark.
    let (warehouse_published_tx, mut warehouse_published) = mpsc::unbounded_channel();
    let mut first = site.start(Arc::new(PublishThenHang {
        inner: kafka.clone(),
        published: warehouse_published_tx,
    }));
    first.consume(&broker.bus()).await.expect("consume");
    eventually("the three orders routed", || async {
        let mut routed = 0;
        for order in ["ord-a", "ord-b", "ord-c"] {
            routed += usize::from(!site.shipments_of(order).await.is_empty());
        }
        routed == 3
    })
    .await;
    let announced = tokio::time::timeout(WITHIN, warehouse_published.recv())
        .await
        .expect("the warehouse relay published")
        .expect("a batch");
    assert!(!announced.is_empty());
    drop(first);

    // Restart both relays: the rows still pending go out again.
    let second_relay = tokio::spawn({
        let (store, wake, kafka) = (producer.store.clone(), wake.clone(), kafka.clone());
        async move {
            relay::run_to_bus(&store, &wake, &RelayOptions::default(), &kafka, "eu", |_| |_| {}).await;
        }
    });
    let mut second = site.start(Arc::new(kafka.clone()));
    second.consume(&broker.bus()).await.expect("consume again");
    eventually("both outboxes drained", || async {
        producer
            .store
            .pending_outbox(10)
            .await
            .expect("pending")
            .is_empty()
            && site.store.pending_outbox(10).await.expect("pending").is_empty()
    })
    .await;

    // Each dispatch is on the topic twice; each order was routed once.
    let dispatches = read_raw(&broker.bootstrap(), FULFILLMENT_TOPIC, 6).await;
    for id in &dispatch_ids {
        let copies = dispatches
            .iter()
            .filter(|m| header(m, headers::EVENT_ID).as_deref() == Some(id))
            .count();
        assert_eq!(copies, 2, "published, then published again after the crash");
    }
    for (order, units) in [("ord-a", 2), ("ord-b", 3), ("ord-c", 1)] {
        let shipments = site.shipments_of(order).await;
        assert_eq!(shipments.len(), 1, "{order} routed once");
        assert_eq!(shipments[0].lines[0].quantity, units);
    }
    assert_eq!(site.allocatable().await, 10 - 6, "allocated once per order");

    // Every shipment.created is on the topic; those the crashed relay published, twice.
    let records = read_raw(&broker.bootstrap(), SHIPMENTS_TOPIC, 3 + announced.len()).await;
    let ids: Vec<String> = records
        .iter()
        .map(|m| header(m, headers::EVENT_ID).expect("event id"))
        .collect();
    for id in &announced {
        assert_eq!(ids.iter().filter(|i| *i == id).count(), 2, "{id} published again");
    }
    let mut orders: Vec<String> = records
        .iter()
        .map(|m| {
            let event = ShipmentEvent::decode(m.payload().unwrap_or_default()).expect("decodes");
            assert_eq!(header(m, headers::EVENT_ID), Some(event.event_id.clone()));
            let Some(shipment_event::Event::Created(created)) = event.event else {
                panic!("created events");
            };
            created.order_id
        })
        .collect();
    orders.sort();
    orders.dedup();
    assert_eq!(orders, ["ord-a", "ord-b", "ord-c"], "no shipment event lost");
    second_relay.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_effect_and_commit_gets_the_event_again_and_routes_once() {
    let broker = KafkaBroker::start().expect("broker");
    let kafka = KafkaBus::new(&broker.bootstrap()).expect("bus");
    let site = Site::new().await;
    let running = site.start(Arc::new(kafka.clone()));
    site.stocked(&running, 10).await;
    let engine = running.engine.clone();

    // First member: stores the effect, then hangs before returning (so before the commit).
    let (effect_tx, mut effect) = mpsc::unbounded_channel();
    let first = spawn_consumer(&broker.bus(), CONSUMER_GROUP, &consumer::TOPICS, {
        let engine = engine.clone();
        handler_fn(move |event: Event| {
            let (engine, effect_tx) = (engine.clone(), effect_tx.clone());
            async move {
                consumer::handle(&engine, &event).await?;
                let _ = effect_tx.send(event.id.clone());
                std::future::pending::<Result<(), HandleError>>().await
            }
        })
    })
    .await
    .expect("first member");
    let event = dispatch("ord-crash", &[("tee", 4)], BERLIN, ShippingSpeed::Standard);
    kafka.publish(vec![event.clone()]).await.expect("publish");
    let handled = tokio::time::timeout(WITHIN * 3, effect.recv())
        .await
        .expect("effect stored")
        .expect("id");
    assert_eq!(handled, event.id);
    assert_eq!(
        site.shipments_of("ord-crash").await.len(),
        1,
        "the effect is stored"
    );
    first.abort().await;

    // Second member of the group: the uncommitted event comes again and changes nothing.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let second = spawn_consumer(&broker.bus(), CONSUMER_GROUP, &consumer::TOPICS, {
        let (engine, seen) = (engine.clone(), seen.clone());
        handler_fn(move |event: Event| {
            let (engine, seen) = (engine.clone(), seen.clone());
            async move {
                consumer::handle(&engine, &event).await?;
                seen.lock().expect("lock").push(event.id.clone());
                Ok(())
            }
        })
    })
    .await
    .expect("second member");
    let next_order = dispatch("ord-after", &[("tee", 1)], BERLIN, ShippingSpeed::Standard);
    kafka.publish(vec![next_order.clone()]).await.expect("publish");
    eventually("the redelivery and the next event", || async {
        let seen = seen.lock().expect("lock");
        seen.contains(&event.id) && seen.contains(&next_order.id)
    })
    .await;
    assert_eq!(
        site.shipments_of("ord-crash").await.len(),
        1,
        "one shipment per order"
    );
    assert_eq!(site.shipments_of("ord-after").await.len(), 1);
    assert_eq!(site.allocatable().await, 10 - 4 - 1, "no double allocation");
    second.shutdown().await;

    let created = read_raw(&broker.bootstrap(), SHIPMENTS_TOPIC, 2).await;
    let ids: Vec<String> = created
        .iter()
        .filter_map(|m| header(m, headers::EVENT_ID))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "the redelivery announced nothing new");
}
