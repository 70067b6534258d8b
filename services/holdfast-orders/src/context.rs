//! What every saga step and every order writer receives: the store, the upstream clients,
//! the options, the clock and the region events are stamped with. Not the engine: a step
//! cannot start, drive or wait for sagas, only do its one thing and say what comes next.

use std::collections::BTreeMap;

use holdfast_store::{
    IdempotencyStore, JoinedWriteStore, OrderStore, OutboxMessage, OutboxStore, SagaStore, StandingStore,
    WaitingRoomStore,
};
use tokio::sync::Notify;

use crate::options::OrdersOptions;
use crate::upstream::Clients;

/// The store orders needs: every checkout aggregate (and transitions joined with their
/// order and key writes) and the waiting room (and a key's standing in it, one read),
/// shareable across tasks.
pub trait OrdersStore:
    OrderStore
    + SagaStore
    + IdempotencyStore
    + OutboxStore
    + WaitingRoomStore
    + JoinedWriteStore
    + StandingStore
    + Clone
    + 'static
{
}
impl<
    T: OrderStore
        + SagaStore
        + IdempotencyStore
        + OutboxStore
        + WaitingRoomStore
        + JoinedWriteStore
        + StandingStore
        + Clone
        + 'static,
> OrdersStore for T
{
}

/// The context of a saga step (and of the RPC handlers and the shipments consumer).
pub struct StepContext<S> {
    /// The durable store.
    pub store: S,
    /// The upstream services.
    pub clients: Clients,
    /// Limits, timings, fault hook.
    pub options: OrdersOptions,
    /// Region stamped on events.
    pub region: String,
    /// Poked when a write put events in the outbox, so the relay publishes them at once.
    pub outbox_written: Notify,
}

impl<S> StepContext<S> {
    /// A context over `store` and `clients`.
    pub fn new(store: S, clients: Clients, options: OrdersOptions, region: &str) -> Self {
        Self {
            store,
            clients,
            options,
            region: region.to_string(),
            outbox_written: Notify::new(),
        }
    }

    /// Wall-clock time in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        now_ms()
    }

    /// An event for the outbox, stamped with this region and the current trace.
    pub fn event(&self, topic: &str, key: &str, event_type: &str, payload: Vec<u8>) -> OutboxMessage {
        let mut headers = BTreeMap::new();
        headers.insert("region".to_string(), self.region.clone());
        if let Some(traceparent) = holdfast_platform::telemetry::current_traceparent() {
            headers.insert("traceparent".to_string(), traceparent);
        }
        OutboxMessage {
            id: uuid::Uuid::now_v7().to_string(),
            topic: topic.to_string(),
            key: key.to_string(),
            event_type: event_type.to_string(),
            payload,
            headers,
            created_at_ms: now_ms(),
        }
    }
}

pub use holdfast_platform::clock::now_ms;
