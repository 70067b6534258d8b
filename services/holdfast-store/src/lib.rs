//! holdfast's durable store: a trait per aggregate, two backends, one conformance suite.
//!
//! Layout, one module per aggregate next to the others:
//! - [`products`]: [`ProductStore`], the catalog's products (optimistic versions, category
//!   listing with opaque cursors),
//! - [`carts`]: [`CartStore`], the durable copy of live carts (last writer wins by version),
//! - [`orders`]: [`OrderStore`], placed orders by id and by customer (optimistic versions),
//! - [`sagas`]: [`SagaStore`], workflow state moved by conditional transitions under a lease,
//!   and [`joined`]: [`JoinedWriteStore`], a transition with the order/key writes of its step,
//! - [`idempotency`]: [`IdempotencyStore`], client keys claimed insert-if-absent, kept 24 h,
//! - [`outbox`]: [`OutboxStore`], events written with the change they announce, and
//!   [`relay`], the loop that publishes them,
//! - [`warehouse`]: [`WarehouseStore`], warehouses, stock per (SKU, warehouse), shipments and
//!   the claims that make a warehouse change happen once, all changed through one atomic
//!   [`WarehouseChange`],
//! - [`stock_truth`]: [`StockTruthStore`], inventory's durable stock and sales, from which
//!   its Redis counts are rebuilt after Redis lost writes.
//! - [`waiting_room`]: [`WaitingRoomStore`], bounded first-in-first-out queues of admitted
//!   work (checkouts at overload) that survive a restart, and [`standing`]:
//!   [`StandingStore`], a key's place in one, its claim and the queue's depth in one read.
//!
//! A new aggregate is a module beside these: a trait, an impl in both backends, and its
//! checks in [`conformance`].
//!
//! [`open`] and [`migrate`] turn a `--store` URL ([`StoreUrl`]) into a [`Store`].
//!
//! Backends: [`SqliteStore`] (rusqlite, bundled SQLite, WAL; the embedded default) and
//! [`ScyllaStore`] (the `scylla` driver, schema in `schema/scylla.cql`). [`Store`] is the
//! one a service holds; it picks a backend at startup and delegates, so there are no trait
//! objects and every trait method returns a `Send` future.

pub mod cart_purge;
pub mod carts;
#[doc(hidden)]
pub mod conformance;
mod cursor;
pub mod error;
pub mod idempotency;
pub mod joined;
pub mod open;
pub mod orders;
pub mod outbox;
pub mod products;
pub mod relay;
pub mod sagas;
pub mod scylladb;
pub mod sqlite;
pub mod standing;
pub mod stock_truth;
mod store;
pub mod waiting_room;
pub mod warehouse;

pub use cart_purge::CartPurge;
pub use carts::{CartStore, DEFAULT_CART_TTL, StoredCart, StoredCartLine};
pub use error::StoreError;
pub use idempotency::{IDEMPOTENCY_TTL_MS, IdempotencyRecord, IdempotencyStore, KeyClaim};
pub use joined::{JoinedWrite, JoinedWriteStore};
pub use open::{StoreArgs, StoreUrl, migrate, open};
pub use orders::{OrderPage, OrderStore, StoredOrder};
pub use outbox::{OutboxMessage, OutboxStore};
pub use products::{Product, ProductPage, ProductStore};
pub use sagas::{SagaRecord, SagaStore, SagaTransition};
pub use scylladb::ScyllaStore;
pub use sqlite::SqliteStore;
pub use standing::{Standing, StandingStore};
pub use stock_truth::{SaleRecord, StockTruth, StockTruthStore, StockWrite};
pub use store::Store;
pub use waiting_room::{Enqueued, QueuedEntry, WaitingRoomStore};
pub use warehouse::{
    ChangeOutcome, Claim, ClaimRecord, IfTaken, Refusal, ShipmentLineRecord, ShipmentPage, ShipmentWrite,
    ShippingOptionRecord, StockDelta, StockRow, StoredShipment, StoredWarehouse, WarehouseChange,
    WarehousePage, WarehouseStore,
};

/// Wall-clock time in Unix milliseconds, for the timestamps the store sets.
pub(crate) use holdfast_platform::clock::now_ms;
