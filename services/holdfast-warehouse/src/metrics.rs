//! The warehouse's metrics: `holdfast_warehouse_<noun>_<unit>`.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, register_int_counter_vec};

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static ROUTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_warehouse_orders_routed_total",
        "Orders routed, by shape: single (one shipment), split (several), backordered (some lines short), unfilled (nothing shipped).",
        &["shape"]
    )
    .expect("registers once")
});

#[allow(clippy::expect_used)]
static RELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_warehouse_outbox_events_total",
        "Outbox events the warehouse's relay handed to the bus (published) or kept for the next try (failed).",
        &["result"]
    )
    .expect("registers once")
});

/// Counts one routed order of `shipments` shipments with `backordered` short lines.
pub(crate) fn routed(shipments: usize, backordered: usize) {
    let shape = match (shipments, backordered) {
        (0, _) => "unfilled",
        (_, 1..) => "backordered",
        (1, 0) => "single",
        _ => "split",
    };
    ROUTED.with_label_values(&[shape]).inc();
}

/// Counts `count` events the relay published (or failed to).
pub(crate) fn relayed(published: bool, count: u64) {
    let result = if published { "published" } else { "failed" };
    RELAYED.with_label_values(&[result]).inc_by(count);
}
