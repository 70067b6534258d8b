//! Inventory metrics (`holdfast_inventory_*`), served with the RPC metrics on `/metrics`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
mod defs {
    use super::*;
    use prometheus::{
        register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
        register_int_gauge,
    };

    pub static RESERVE_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
        register_histogram!(
            "holdfast_inventory_reserve_batch_items",
            "Reserves carried by one reserve_batch.lua call (1 at low load).",
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
        )
        .expect("registers once")
    });

    pub static HOLDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "holdfast_inventory_holds_total",
            "Holds by what happened to them: created, committed, released, expired (per SKU line).",
            &["outcome"]
        )
        .expect("registers once")
    });
    pub static LIVE_HOLDS: LazyLock<IntGauge> = LazyLock::new(|| {
        register_int_gauge!(
            "holdfast_inventory_live_holds",
            "Holds currently in Redis, counted by the sweeper over buckets that have any."
        )
        .expect("registers once")
    });
    pub static REJECTED: LazyLock<IntCounter> = LazyLock::new(|| {
        register_int_counter!(
            "holdfast_inventory_reservations_rejected_total",
            "Reservations answered INSUFFICIENT_STOCK."
        )
        .expect("registers once")
    });
    pub static SOLD_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
        register_int_counter!(
            "holdfast_inventory_sold_out_short_circuits_total",
            "Reservations answered from a sold-out marker (the hot-SKU one in Redis, or the local one) without running a reserve script."
        )
        .expect("registers once")
    });
    pub static SCRIPT_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
        register_histogram_vec!(
            "holdfast_inventory_script_duration_seconds",
            "Round trip of one Lua script call, by script.",
            &["script"],
            holdfast_platform::metrics::LATENCY_BUCKETS.to_vec()
        )
        .expect("registers once")
    });
    pub static EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
        register_int_counter!(
            "holdfast_inventory_events_published_total",
            "Outbox entries published to the event bus."
        )
        .expect("registers once")
    });
    pub static BACKPRESSURE: LazyLock<IntCounter> = LazyLock::new(|| {
        register_int_counter!(
            "holdfast_inventory_outbox_backpressure_total",
            "Calls refused because a bucket's outbox was full of unpublished events (bus down)."
        )
        .expect("registers once")
    });
    pub static BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
        register_int_gauge!(
            "holdfast_inventory_outbox_backlog_events",
            "Unpublished events left in the last outbox the relay failed to drain (0 once it drains)."
        )
        .expect("registers once")
    });
    pub static STRANDED: LazyLock<IntCounter> = LazyLock::new(|| {
        register_int_counter!(
            "holdfast_inventory_transfers_stranded_total",
            "Re-drives of a bucket transfer older than the received-id window: refused, left for a human."
        )
        .expect("registers once")
    });
}

/// Records one script round trip.
pub fn observe_script(script: &str, elapsed: Duration) {
    defs::SCRIPT_LATENCY
        .with_label_values(&[script])
        .observe(elapsed.as_secs_f64());
}
/// `n` holds were created.
pub fn holds_created(n: usize) {
    defs::HOLDS.with_label_values(&["created"]).inc_by(n as u64);
}
/// `n` holds were committed.
pub fn holds_committed(n: usize) {
    defs::HOLDS.with_label_values(&["committed"]).inc_by(n as u64);
}
/// `n` holds were released.
pub fn holds_released(n: usize) {
    defs::HOLDS.with_label_values(&["released"]).inc_by(n as u64);
}
/// `n` holds expired (swept).
pub fn holds_expired(n: u64) {
    defs::HOLDS.with_label_values(&["expired"]).inc_by(n);
}
/// The sweeper's count of holds in Redis.
pub fn set_live_holds(n: i64) {
    defs::LIVE_HOLDS.set(n);
}
/// A reservation was refused for stock.
pub fn reservation_rejected() {
    defs::REJECTED.inc();
}
/// The sold-out marker answered.
pub fn sold_out_short_circuit() {
    defs::SOLD_OUT.inc();
}
/// `n` outbox entries were published.
pub fn events_published(n: usize) {
    defs::EVENTS.inc_by(n as u64);
}
/// A call was refused because an outbox was full.
pub fn outbox_backpressure() {
    defs::BACKPRESSURE.inc();
}
/// Unpublished events left in an outbox the relay could not drain.
pub fn set_outbox_backlog(n: i64) {
    defs::BACKLOG.set(n);
}
/// A transfer too old to re-drive safely was found.
pub fn transfer_stranded() {
    defs::STRANDED.inc();
}
/// One reserve_batch call carried `n` Reserves.
pub fn observe_reserve_batch(n: usize) {
    defs::RESERVE_BATCH.observe(n as f64);
}
