//! The process's one relay per store: publishes the store's outbox, whichever services wrote
//! it (orders and warehouse share it under `holdfast dev`).

use std::sync::{Arc, LazyLock};

use holdfast_platform::events::EventBus;
use holdfast_store::Store;
use holdfast_store::relay::{self, RelayOptions};
use prometheus::IntCounterVec;
use tokio::sync::Notify;

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static RELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_outbox_events_total",
        "Events of the store's outbox handed to the bus (published) or kept for the next try (failed).",
        &["result"]
    )
    .expect("registers once")
});

/// Runs the relay of `store`'s outbox to `bus` forever (abort the task to stop it): in id
/// order, each row marked sent only once the bus took it. `wake` is notified by writers.
pub async fn relay(store: Store, wake: Arc<Notify>, bus: Arc<dyn EventBus>, region: String) {
    relay::run_to_bus(
        &store,
        &wake,
        &RelayOptions::default(),
        &*bus,
        &region,
        |events| {
            let count = events.len() as u64;
            move |published| {
                let result = if published { "published" } else { "failed" };
                RELAYED.with_label_values(&[result]).inc_by(count);
            }
        },
    )
    .await;
}
