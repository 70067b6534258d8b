//! The background tasks of the service: the recovery worker (resumes stalled sagas, which
//! includes the void sweeps of checkouts that ended without an order, each due at its own
//! time, see [`crate::saga::sweep`]; parked sagas are never listed) and the outbox relay
//! (publishes the events written with each order and saga change).

use std::sync::{Arc, LazyLock};

use holdfast_platform::events::EventBus;
use prometheus::IntCounterVec;

use crate::context::{OrdersStore, StepContext, now_ms};
use crate::engine::Engine;

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
static RELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_orders_outbox_events_total",
        "Outbox events handed to the bus (published) or kept for the next try (failed).",
        &["result"]
    )
    .expect("registers once")
});

/// The recovery worker: every `recovery_interval`, resumes stalled sagas (unfinished, no
/// live lease) and drops expired idempotency keys now and then.
pub async fn recover<S: OrdersStore>(engine: Arc<Engine<S>>) {
    let mut ticks: u64 = 0;
    loop {
        if let Err(error) = engine.resume_stalled().await {
            tracing::warn!(%error, "listing stalled sagas failed");
        }
        if ticks.is_multiple_of(600)
            && let Err(error) = engine.store.purge_expired_keys(now_ms()).await
        {
            tracing::warn!(%error, "purging expired idempotency keys failed");
        }
        ticks += 1;
        tokio::time::sleep(engine.options.recovery_interval).await;
    }
}

/// The outbox relay (the store's shared loop): publishes pending events in order and marks
/// them sent only after the bus took them; on failure they stay and are published again
/// (consumers dedupe by id). Under `holdfast dev` it also publishes the warehouse's events,
/// which share the store's outbox.
pub async fn relay<S: OrdersStore>(ctx: Arc<StepContext<S>>, bus: Arc<dyn EventBus>) {
    let options = holdfast_store::relay::RelayOptions::default();
    holdfast_store::relay::run_to_bus(
        &ctx.store,
        &ctx.outbox_written,
        &options,
        &*bus,
        &ctx.region,
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
