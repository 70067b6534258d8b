//! Event pipeline benchmark on a real Apache Kafka broker (KRaft, started here with the full JIT).
//!
//! 1. **Throughput**: events written to a SQLite outbox (100 per transaction, as fast as
//!    they go), published by the outbox relay to the broker, and consumed by a consumer
//!    group that only counts them: events per second from the first write to the last
//!    event consumed.
//! 2. **Lag**: orders confirmed at a fixed rate (open loop: each order's clock starts at
//!    its scheduled time, so a backlog counts as lag), each one's `dispatch_requested` event
//!    written to the orders outbox, relayed, consumed by the warehouse, routed and its
//!    shipment committed: lag from confirmation to the shipment (warehouse order) being
//!    stored, and to its `shipment.created` event reaching a downstream consumer.
//!
//! ```sh
//! cargo run --release -p holdfast-warehouse --example bench_events -- \
//!     [--events 20000] [--rate 200] [--seconds 10] [--json PATH]
//! ```
//!
//! Needs the Kafka jars `make deps` fetches from Maven Central (and java).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use holdfast_platform::events::{Event, EventBus, HandleError, KafkaBus, handler_fn, spawn_consumer};
use holdfast_proto::common::v1::{Address, GeoPoint};
use holdfast_proto::events::v1::{
    DispatchRequested, FulfillmentEvent, OrderLine, ShipmentEvent, fulfillment_event, shipment_event,
};
use holdfast_proto::warehouse::v1::ShippingSpeed;
use holdfast_store::relay::{self, RelayOptions};
use holdfast_store::{
    OutboxMessage, OutboxStore, ShippingOptionRecord, SqliteStore, StoredWarehouse, WarehouseStore,
};
use holdfast_testkit::{KafkaBroker, TempDir};
use holdfast_warehouse::events::{FULFILLMENT_TOPIC, SHIPMENTS_TOPIC, types};
use holdfast_warehouse::{CONSUMER_GROUP, WarehouseOptions, consumer};
use prost::Message;
use tokio::sync::{Notify, mpsc};

const SKUS: usize = 20;

struct Args {
    events: usize,
    rate: u64,
    seconds: u64,
    json: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        events: 20_000,
        rate: 200,
        seconds: 10,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => parsed.events = value()?.parse()?,
            "--rate" => parsed.rate = value()?.parse()?,
            "--seconds" => parsed.seconds = value()?.parse()?,
            "--json" => parsed.json = Some(value()?),
            other => anyhow::bail!("unknown flag {other}; see the example's docs"),
        }
    }
    anyhow::ensure!(
        parsed.events > 0 && parsed.rate > 0 && parsed.seconds > 0,
        "values must be positive"
    );
    Ok(parsed)
}

/// The relay of an outbox over `store`, publishing to `bus`, until aborted. With `timed`,
/// each order's lag to its row being read by the relay and to the broker's ack is recorded.
fn spawn_relay(
    store: SqliteStore,
    wake: Arc<Notify>,
    bus: KafkaBus,
    timed: Option<Timed>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let options = RelayOptions {
            batch: 500,
            ..RelayOptions::default()
        };
        relay::run_to_bus(&store, &wake, &options, &bus, "eu", |events| {
            let read = Instant::now();
            let keys: Vec<String> = events.iter().map(|e| e.key.clone()).collect();
            let timed = timed.clone();
            move |published| {
                if let Some(timed) = timed.filter(|_| published) {
                    timed.relayed(&keys, read, Instant::now());
                }
            }
        })
        .await;
    })
}

/// What the lag phase's relay records into.
#[derive(Clone)]
struct Timed {
    confirmed: Arc<Mutex<HashMap<String, Instant>>>,
    lag: Arc<Mutex<Lag>>,
}

impl Timed {
    /// Orders `keys` were read by the relay at `read` and acknowledged at `acked`.
    fn relayed(&self, keys: &[String], read: Instant, acked: Instant) {
        let started: Vec<Instant> = {
            let confirmed = lock(&self.confirmed);
            keys.iter()
                .filter_map(|key| confirmed.get(key).copied())
                .collect()
        };
        let mut lag = lock(&self.lag);
        for started in started {
            record(&mut lag.read, started, read);
            record(&mut lag.acked, started, acked);
        }
    }
}

/// Locks `mutex`, a poisoned one too (a panicking handler already failed the run).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records the time from `since` to `at` in `histogram`, in µs (at least 1).
fn record(histogram: &mut Histogram<u64>, since: Instant, at: Instant) {
    let micros = u64::try_from(at.saturating_duration_since(since).as_micros()).unwrap_or(u64::MAX);
    let _ = histogram.record(micros.max(1));
}

fn row(topic: &str, key: &str, event_type: &str, id: String, payload: Vec<u8>) -> OutboxMessage {
    OutboxMessage {
        id,
        topic: topic.into(),
        key: key.into(),
        event_type: event_type.into(),
        payload,
        headers: [("region".to_string(), "eu".to_string())].into(),
        created_at_ms: 0,
    }
}

/// Phase 1: events per second through outbox → broker → consumer.
async fn throughput(broker: &KafkaBroker, dir: &TempDir, events: usize) -> anyhow::Result<(f64, Duration)> {
    let topic = "holdfast.bench.v1";
    let store = SqliteStore::open(dir.path().join("throughput.db")).await?;
    let bus = KafkaBus::new(&broker.bootstrap())?;
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let consumer = spawn_consumer(&broker.bus(), "bench-pipeline", &[topic], {
        let seen = seen.clone();
        handler_fn(move |event: Event| {
            let (seen, done_tx) = (seen.clone(), done_tx.clone());
            async move {
                let count = {
                    let mut seen = lock(&seen);
                    seen.insert(event.id);
                    seen.len()
                };
                if count == events {
                    let _ = done_tx.send(Instant::now());
                }
                Ok::<(), HandleError>(())
            }
        })
    })
    .await?;
    // Warm up: the topic exists and the consumer has joined before the clock starts.
    bus.publish(vec![relay::to_event(
        row(topic, "warm", "bench.warmup", "warmup".into(), vec![]),
        "eu",
    )])
    .await?;
    while lock(&seen).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lock(&seen).clear();

    let wake = Arc::new(Notify::new());
    let relay = spawn_relay(store.clone(), wake.clone(), bus.clone(), None);
    let payload = vec![7_u8; 200];
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
        let rows = chunk
            .iter()
            .map(|i| {
                row(
                    topic,
                    &format!("key-{}", i % 64),
                    "bench.event",
                    uuid::Uuid::now_v7().to_string(),
                    payload.clone(),
                )
            })
            .collect();
        store.append_outbox(rows).await?;
        wake.notify_one();
    }
    let finished = tokio::time::timeout(Duration::from_secs(600), done.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("consumer stopped"))?;
    let elapsed = finished - started;
    relay.abort();
    consumer.shutdown().await;
    Ok((events as f64 / elapsed.as_secs_f64(), elapsed))
}

/// Lag histograms (µs) from confirmation to shipment stored, and to its event consumed.
struct Lag {
    stored: Histogram<u64>,
    announced: Histogram<u64>,
    /// Confirmation to the outbox row committed.
    appended: Histogram<u64>,
    /// Confirmation to the orders relay reading the row.
    read: Histogram<u64>,
    /// Confirmation to the broker acknowledging the event.
    acked: Histogram<u64>,
    /// Confirmation to the warehouse's handler getting the event.
    delivered: Histogram<u64>,
}

fn dispatch_payload(id: &str, order_id: &str, n: usize) -> Vec<u8> {
    let lines = (0..1 + n % 3)
        .map(|l| OrderLine {
            sku: format!("bench-{}", (n + l * 7) % SKUS),
            quantity: 1 + (n % 2) as i64,
            unit_price: None,
        })
        .collect();
    FulfillmentEvent {
        event_id: id.into(),
        event: Some(fulfillment_event::Event::DispatchRequested(DispatchRequested {
            order_id: order_id.into(),
            lines,
            ship_to: Some(Address {
                location: Some(GeoPoint {
                    latitude: 52.52 + (n % 10) as f64 * 0.1,
                    longitude: 13.40 - (n % 7) as f64 * 0.3,
                }),
                ..Address::default()
            }),
            shipping_speed: ShippingSpeed::Standard as i32,
            region: "eu".into(),
            occurred_at_unix_ms: 0,
        })),
    }
    .encode_to_vec()
}

/// Phase 2: open-loop orders at `rate`/s for `seconds`; lag to shipment created.
/// When `order` was confirmed, the first time a side counts it (`None` for an order the run
/// did not confirm, or one `counted` already holds).
fn first_count(
    confirmed: &Mutex<HashMap<String, Instant>>,
    counted: &Mutex<HashSet<String>>,
    order: &str,
) -> Option<Instant> {
    let started = lock(confirmed).get(order).copied()?;
    lock(counted).insert(order.to_string()).then_some(started)
}

async fn lag(broker: &KafkaBroker, dir: &TempDir, rate: u64, seconds: u64) -> anyhow::Result<(Lag, usize)> {
    let bus = KafkaBus::new(&broker.bootstrap())?;
    let orders_store = SqliteStore::open(dir.path().join("orders.db")).await?;
    let warehouse_store = SqliteStore::open(dir.path().join("warehouse.db")).await?;
    let warehouse = holdfast_warehouse::start(
        warehouse_store.clone(),
        Arc::new(bus.clone()),
        "eu",
        WarehouseOptions::default(),
    );
    for (id, lat, lon) in [("ber", 52.52, 13.40), ("ham", 53.55, 9.99), ("muc", 48.14, 11.58)] {
        warehouse_store
            .upsert_warehouse(StoredWarehouse {
                id: id.into(),
                region: "eu".into(),
                latitude: lat,
                longitude: lon,
                shipping_options: vec![ShippingOptionRecord {
                    speed: ShippingSpeed::Standard as i32,
                    max_days: 3,
                    max_distance_km: 0,
                }],
                active: true,
                ..StoredWarehouse::default()
            })
            .await?;
        for sku in 0..SKUS {
            warehouse
                .engine
                .set_stock(id, &format!("bench-{sku}"), 1_000_000)
                .await?;
        }
    }

    let total = usize::try_from(rate * seconds)?;
    let confirmed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let lag = Arc::new(Mutex::new(Lag {
        stored: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        announced: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        appended: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        read: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        acked: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        delivered: Histogram::new_with_bounds(1, 600_000_000, 3)?,
    }));
    let (routed_tx, mut routed) = mpsc::unbounded_channel();
    let (announced_tx, mut announced) = mpsc::unbounded_channel();
    // Each order counts once per side, whatever the order the two consumers run in (the
    // shipment.created of an order can be consumed before its routing handler has counted
    // it), however many shipments it has, and however often an event is redelivered. The
    // confirm times stay in `confirmed` for both sides to read.
    let routed_orders: Arc<Mutex<HashSet<String>>> = Arc::default();
    let announced_orders: Arc<Mutex<HashSet<String>>> = Arc::default();

    // The warehouse's consumer, timing each routing as it commits.
    let engine = warehouse.engine.clone();
    let warehouse_consumer = spawn_consumer(&broker.bus(), CONSUMER_GROUP, &consumer::TOPICS, {
        let (confirmed, lag, routed_orders) = (confirmed.clone(), lag.clone(), routed_orders.clone());
        handler_fn(move |event: Event| {
            let (engine, confirmed, lag, routed_orders, routed_tx) = (
                engine.clone(),
                confirmed.clone(),
                lag.clone(),
                routed_orders.clone(),
                routed_tx.clone(),
            );
            async move {
                let seen = Instant::now();
                consumer::handle(&engine, &event).await?;
                if event.event_type == types::DISPATCH_REQUESTED
                    && let Some(started) = first_count(&confirmed, &routed_orders, &event.key)
                {
                    let stored = Instant::now();
                    let mut lag = lock(&lag);
                    record(&mut lag.stored, started, stored);
                    record(&mut lag.delivered, started, seen);
                    drop(lag);
                    let _ = routed_tx.send(());
                }
                Ok(())
            }
        })
    })
    .await?;
    // Downstream (as orders): when each order's first shipment.created arrives.
    let downstream = spawn_consumer(&broker.bus(), "bench-downstream", &[SHIPMENTS_TOPIC], {
        let (confirmed, lag, announced_orders) = (confirmed.clone(), lag.clone(), announced_orders.clone());
        handler_fn(move |event: Event| {
            let (confirmed, lag, announced_orders, announced_tx) = (
                confirmed.clone(),
                lag.clone(),
                announced_orders.clone(),
                announced_tx.clone(),
            );
            async move {
                let decoded = ShipmentEvent::decode(event.payload.as_slice())
                    .map_err(|e| HandleError::Poison(e.to_string()))?;
                if let Some(shipment_event::Event::Created(created)) = decoded.event
                    && let Some(started) = first_count(&confirmed, &announced_orders, &created.order_id)
                {
                    record(&mut lock(&lag).announced, started, Instant::now());
                    let _ = announced_tx.send(());
                }
                Ok(())
            }
        })
    })
    .await?;

    // The orders side: its outbox and relay.
    let wake = Arc::new(Notify::new());
    let timed = Timed {
        confirmed: confirmed.clone(),
        lag: lag.clone(),
    };
    let orders_relay = spawn_relay(orders_store.clone(), wake.clone(), bus.clone(), Some(timed));
    // Warm up both consumers before the clock starts (group joins, topic metadata).
    let warm_id = uuid::Uuid::now_v7().to_string();
    lock(&confirmed).insert("warmup".into(), Instant::now());
    orders_store
        .append_outbox(vec![row(
            FULFILLMENT_TOPIC,
            "warmup",
            types::DISPATCH_REQUESTED,
            warm_id.clone(),
            dispatch_payload(&warm_id, "warmup", 0),
        )])
        .await?;
    wake.notify_one();
    tokio::time::timeout(Duration::from_secs(120), routed.recv()).await?;
    tokio::time::timeout(Duration::from_secs(120), announced.recv()).await?;
    {
        let mut lag = lock(&lag);
        lag.stored.reset();
        lag.announced.reset();
        lag.appended.reset();
        lag.read.reset();
        lag.acked.reset();
        lag.delivered.reset();
    }

    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for n in 0..total {
        let due = start + interval * u32::try_from(n)?;
        tokio::time::sleep_until(due.into()).await;
        let order_id = format!("ord-bench-{n}");
        let id = uuid::Uuid::now_v7().to_string();
        // The order is confirmed at its scheduled time: a writer running late counts.
        lock(&confirmed).insert(order_id.clone(), due);
        orders_store
            .append_outbox(vec![row(
                FULFILLMENT_TOPIC,
                &order_id,
                types::DISPATCH_REQUESTED,
                id.clone(),
                dispatch_payload(&id, &order_id, n),
            )])
            .await?;
        wake.notify_one();
        record(&mut lock(&lag).appended, due, Instant::now());
    }
    for _ in 0..total {
        tokio::time::timeout(Duration::from_secs(120), routed.recv()).await?;
    }
    for _ in 0..total {
        tokio::time::timeout(Duration::from_secs(120), announced.recv()).await?;
    }
    orders_relay.abort();
    // The relay holds `lag` until its task is gone.
    let _ = orders_relay.await;
    warehouse_consumer.shutdown().await;
    downstream.shutdown().await;
    drop(warehouse);
    let lag = Arc::try_unwrap(lag)
        .map_err(|_| anyhow::anyhow!("lag still shared"))?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok((lag, total))
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let broker = KafkaBroker::start_full_jit()?;
    let dir = TempDir::new("bench-events")?;

    let (per_second, elapsed) = throughput(&broker, &dir, args.events).await?;
    println!(
        "pipeline: {} events outbox -> kafka -> consumer in {:.2} s = {per_second:.0} events/s",
        args.events,
        elapsed.as_secs_f64()
    );

    let (lag, orders) = lag(&broker, &dir, args.rate, args.seconds).await?;
    for (what, histogram) in [
        ("confirmed -> shipment stored     ", &lag.stored),
        ("confirmed -> shipment.created consumed", &lag.announced),
        ("confirmed -> outbox row committed", &lag.appended),
        ("confirmed -> row read by the relay", &lag.read),
        ("confirmed -> broker acknowledged", &lag.acked),
        ("confirmed -> warehouse handler called", &lag.delivered),
    ] {
        println!(
            "lag {what}: {orders} orders at {}/s: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            args.rate,
            ms(histogram.value_at_quantile(0.5)),
            ms(histogram.value_at_quantile(0.9)),
            ms(histogram.value_at_quantile(0.99)),
            ms(histogram.max()),
        );
    }
    if let Some(path) = args.json {
        let json = format!(
            "{{\"events\":{},\"events_per_second\":{per_second:.0},\"orders\":{orders},\"rate\":{},\
             \"lag_stored_p50_ms\":{:.1},\"lag_stored_p99_ms\":{:.1},\
             \"lag_announced_p50_ms\":{:.1},\"lag_announced_p99_ms\":{:.1}}}\n",
            args.events,
            args.rate,
            ms(lag.stored.value_at_quantile(0.5)),
            ms(lag.stored.value_at_quantile(0.99)),
            ms(lag.announced.value_at_quantile(0.5)),
            ms(lag.announced.value_at_quantile(0.99)),
        );
        std::fs::write(&path, json)?;
    }
    Ok(())
}
