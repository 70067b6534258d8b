//! The inventory outbox never loses or confuses an event: ids stay unique after a stream is
//! emptied and deleted, and a backlog the bus cannot take is never trimmed (new work is
//! refused instead). Against a real redis-server, with no relay running, so the test decides
//! when the "bus" publishes.

use std::collections::HashSet;

use fred::prelude::{Pool, StreamsInterface, Value};
use holdfast_inventory::background::{self, TOPIC};
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::scripts::{self, Hold, OUTBOX_LIMIT};
use holdfast_inventory::{InventoryError, Stock};
use holdfast_platform::events::InProcessBus;
use holdfast_testkit::RedisServer;
use tokio::sync::mpsc;

/// A stock engine whose relay is the test itself (nothing drains on its own).
async fn engine(redis: &RedisServer) -> Stock {
    let pool: Pool = holdfast_platform::redis::connect(&redis.url(), 2)
        .await
        .expect("connect");
    scripts::load_all(pool.next()).await.expect("scripts");
    let (tx, rx) = mpsc::unbounded_channel();
    // Keep the receiving end alive and unread: touched buckets pile up, nobody drains.
    std::mem::forget(rx);
    Stock::new(pool, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_stay_unique_when_an_emptied_stream_is_written_again() {
    let redis = RedisServer::start().expect("redis");
    let stock = engine(&redis).await;
    let bus = InProcessBus::new();
    let mut rx = bus.subscribe(TOPIC);
    let bucket = BucketKeys::new("ID", 0);
    let mut ids = HashSet::new();
    for i in 0..300 {
        // One change, published and acked at once (the stream is emptied each time).
        stock
            .adjust_stock("ID", 1, &format!("adj-{i}"))
            .await
            .expect("adjust");
        background::drain(&stock, &bus, "eu", &bucket)
            .await
            .expect("drain");
        while let Ok(event) = rx.try_recv() {
            assert!(
                ids.insert(event.id.clone()),
                "event id {} used twice (change {i})",
                event.id
            );
        }
    }
    assert_eq!(ids.len(), 300, "one event per change");
}

/// Fills `bucket`'s outbox with `n` unpublished entries in one script call.
async fn fill(stock: &Stock, bucket: &BucketKeys, n: i64) {
    let body = "for i = 1, tonumber(ARGV[1]) do \
                redis.call('XADD', KEYS[1], '*', 'type', 'filler', 'sku', 'X', 'bucket', '0') end \
                return redis.call('XLEN', KEYS[1])";
    let _: Value = fred::prelude::LuaInterface::eval(stock.client(), body, vec![bucket.events()], vec![n])
        .await
        .expect("fill");
}

async fn first_id(stock: &Stock, bucket: &BucketKeys) -> Option<String> {
    let first: Value = stock
        .client()
        .xrange(bucket.events(), "-", "+", Some(1))
        .await
        .expect("xrange");
    let Value::Array(entries) = first else { return None };
    let Some(Value::Array(entry)) = entries.into_iter().next() else {
        return None;
    };
    entry.first().and_then(Value::as_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_is_never_trimmed_and_new_work_waits_for_the_bus() {
    let redis = RedisServer::start().expect("redis");
    let stock = engine(&redis).await;
    let bucket = BucketKeys::new("BACKLOG", 0);
    stock.set_stock("BACKLOG", 100, 1).await.expect("set");
    assert!(matches!(
        scripts::reserve(stock.client(), &bucket, "early", 2, 600_000)
            .await
            .expect("hold"),
        Hold::Held { .. }
    ));
    let oldest = first_id(&stock, &bucket).await.expect("an entry");
    // The bus has been down for a long time: the backlog reaches its limit.
    fill(&stock, &bucket, OUTBOX_LIMIT).await;

    let refused = scripts::reserve(stock.client(), &bucket, "late", 1, 600_000).await;
    assert!(
        matches!(refused, Err(InventoryError::Backpressure(_))),
        "new holds wait for the bus: {refused:?}"
    );
    let status = tonic::Status::from(refused.expect_err("refused"));
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let adjust = stock.adjust_stock("BACKLOG", 5, "adj-late").await;
    assert!(
        matches!(adjust, Err(InventoryError::Backpressure(_))),
        "{adjust:?}"
    );
    // Work already under way still finishes: releasing a hold is never refused.
    assert_eq!(
        scripts::release(stock.client(), &bucket, "early")
            .await
            .expect("release"),
        2
    );
    let len: i64 = stock.client().xlen(bucket.events()).await.expect("xlen");
    assert!(len > OUTBOX_LIMIT, "every event kept: {len}");
    assert_eq!(
        first_id(&stock, &bucket).await.as_deref(),
        Some(oldest.as_str()),
        "the oldest unpublished event is still there"
    );

    // The bus is back: the relay drains, and new work is accepted again.
    let bus = InProcessBus::new();
    background::drain(&stock, &bus, "eu", &bucket)
        .await
        .expect("drain");
    assert!(matches!(
        scripts::reserve(stock.client(), &bucket, "late", 1, 600_000)
            .await
            .expect("hold"),
        Hold::Held { .. }
    ));
}
