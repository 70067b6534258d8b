//! The warehouse's operations: each reads what it needs, plans one [`WarehouseChange`]
//! (stock deltas, shipment writes, the events announcing them, the claims that make it
//! happen once) and hands it to the store, which applies it atomically or says which
//! condition no longer holds; then the operation reads again and plans again, a few times
//! at most.
//!
//! Stock model, per (SKU, warehouse): `physical` units on the shelves and `allocatable`
//! units not promised to a shipment; `allocated = physical - allocatable`.
//!
//! | operation | physical | allocatable | events |
//! |---|---|---|---|
//! | routing allocates a shipment | | − units | `shipment.created` (+ `fulfillment.backorder_raised`) |
//! | shipment cancelled | | + units | `shipment.cancelled` |
//! | shipment shipped | − units | | `shipment.shipped` |
//! | goods receipt, passed return | + units | + units | `reconciliation.warehouse_stock_changed` |
//! | shrinkage | − units | − units (shipments re-routed if it must take allocated units) | same, plus shipment events |
//! | stock take | set | follows, allocated kept | `reconciliation.warehouse_stock_changed` |
//!
//! Files: `stock.rs` (stock takes, goods receipts, shrinkage), `orders.rs` (order events:
//! routing, cancellation, returns), `shipments.rs` (picking to delivery).

use std::sync::Arc;

use holdfast_proto::common::v1::Address;
use holdfast_proto::warehouse::v1::ShipmentStatus;
use holdfast_store::{
    ChangeOutcome, OutboxMessage, OutboxStore, StockDelta, StockRow, StoredShipment, StoredWarehouse,
    WarehouseChange, WarehouseStore,
};
use tokio::sync::Notify;

use crate::error::WarehouseError;
use crate::events::Events;
use crate::routing::{Need, Shortfall};

mod cancel;
mod orders;
mod shipments;
mod stock;

pub use cancel::Cancelled;

/// Plans tried before an operation whose rows keep changing gives up.
const ATTEMPTS: usize = 8;
/// A day in milliseconds, for promises.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The store the warehouse needs: its aggregate and the outbox, shareable across tasks.
pub trait WarehouseBackend: WarehouseStore + OutboxStore + Clone + 'static {}
impl<T: WarehouseStore + OutboxStore + Clone + 'static> WarehouseBackend for T {}

/// Wakes a relay that publishes this store's outbox (when another service's relay does).
pub type WakeRelay = Arc<dyn Fn() + Send + Sync>;

/// How a routing request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Shipments were created (maybe none, if everything was backordered).
    Shipments {
        /// The shipments created.
        shipments: Vec<StoredShipment>,
        /// Lines (or parts of lines) backordered.
        backordered: usize,
    },
    /// The order was routed (or cancelled) before: nothing changed.
    AlreadyDone,
}

/// A shrinkage to book.
#[derive(Debug, Clone)]
pub struct Shrinkage {
    /// Client-made id, the idempotency key.
    pub id: String,
    /// The warehouse.
    pub warehouse_id: String,
    /// The SKU.
    pub sku: String,
    /// Units lost, at least 1.
    pub quantity: i64,
    /// The `ShrinkageReason` number.
    pub reason: i32,
    /// Free text.
    pub note: String,
}

/// An order (or part of one) to route.
struct RouteRequest<'a> {
    order_id: &'a str,
    needs: Vec<Need>,
    ship_to: &'a Address,
    speed: i32,
    region: &'a str,
    occurred_at_ms: i64,
}

/// The part of a change one routing contributes.
#[derive(Default)]
struct RoutingPart {
    stock: Vec<StockDelta>,
    shipments: Vec<StoredShipment>,
    outbox: Vec<OutboxMessage>,
    backorders: Vec<Shortfall>,
}

/// Everything the operations share: the store, the event builders, the relay's wake-up.
pub struct Engine<S> {
    /// The durable store.
    pub store: S,
    /// This service's region (stamped on events; routes dispatches that name none).
    pub region: String,
    /// Poked after a change wrote events, so the relay publishes them at once.
    pub outbox_written: Notify,
    events: Events,
    shared_relay: Option<WakeRelay>,
    default_warehouse: Option<String>,
}

fn status(shipment: &StoredShipment) -> ShipmentStatus {
    ShipmentStatus::try_from(shipment.status).unwrap_or(ShipmentStatus::Unspecified)
}

fn is_open(shipment: &StoredShipment) -> bool {
    matches!(
        status(shipment),
        ShipmentStatus::Created | ShipmentStatus::Picking
    )
}

/// The `(warehouse, sku)` key of stock maps.
fn at(warehouse_id: &str, sku: &str) -> (String, String) {
    (warehouse_id.to_string(), sku.to_string())
}

impl<S: WarehouseBackend> Engine<S> {
    /// An engine over `store` in `region`. With `shared_relay`, another relay publishes
    /// this store's outbox and is woken through it.
    pub fn new(store: S, region: &str, shared_relay: Option<WakeRelay>) -> Self {
        Self {
            store,
            region: region.to_string(),
            outbox_written: Notify::new(),
            events: Events::new(region),
            shared_relay,
            default_warehouse: None,
        }
    }

    /// This engine with `id` as its region's default warehouse (see
    /// [`Engine::is_default_warehouse`]).
    pub fn with_default_warehouse(mut self, id: Option<String>) -> Self {
        self.default_warehouse = id;
        self
    }

    /// Whether `warehouse_id` is the default warehouse: routing sends it what no other
    /// warehouse of the region can ship, and it keeps no stock rows (its stock is what
    /// inventory sells). See `docs/warehouse.md`.
    pub fn is_default_warehouse(&self, warehouse_id: &str) -> bool {
        self.default_warehouse.as_deref() == Some(warehouse_id)
    }

    /// Applies `change`, waking the relay if it wrote events.
    async fn apply(&self, change: WarehouseChange) -> Result<ChangeOutcome, WarehouseError> {
        let wrote_events = !change.outbox.is_empty();
        let outcome = self.store.apply_warehouse_change(change).await?;
        if wrote_events && matches!(outcome, ChangeOutcome::Applied { .. }) {
            self.outbox_written.notify_one();
            if let Some(wake) = &self.shared_relay {
                wake();
            }
        }
        Ok(outcome)
    }

    /// Creates (or re-activates) the default warehouse, if this engine has one: region
    /// [`Engine::region`], every speed offered with no distance limit (standard in 5 days,
    /// express in 2, same day). A warehouse already stored under its id keeps its name and
    /// location.
    pub async fn ensure_default_warehouse(&self) -> Result<(), WarehouseError> {
        let Some(id) = &self.default_warehouse else {
            return Ok(());
        };
        use holdfast_proto::warehouse::v1::ShippingSpeed;
        let existing = self.store.get_warehouse(id).await?;
        let option = |speed: ShippingSpeed, max_days| holdfast_store::ShippingOptionRecord {
            speed: speed as i32,
            max_days,
            max_distance_km: 0,
        };
        let warehouse = StoredWarehouse {
            id: id.clone(),
            name: format!(
                "Default warehouse of {} (ships what inventory sells)",
                self.region
            ),
            region: self.region.clone(),
            shipping_options: vec![
                option(ShippingSpeed::Standard, 5),
                option(ShippingSpeed::Express, 2),
                option(ShippingSpeed::SameDay, 0),
            ],
            active: true,
            ..existing.unwrap_or_default()
        };
        self.store.upsert_warehouse(warehouse).await?;
        tracing::info!(warehouse = %id, region = %self.region, "default warehouse ready");
        Ok(())
    }

    /// The warehouse, or `NotFound`.
    pub async fn warehouse(&self, id: &str) -> Result<StoredWarehouse, WarehouseError> {
        self.store
            .get_warehouse(id)
            .await?
            .ok_or_else(|| WarehouseError::NotFound(format!("warehouse {id:?}")))
    }

    /// Every active warehouse of `region`.
    async fn active_warehouses(&self, region: &str) -> Result<Vec<StoredWarehouse>, WarehouseError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list_warehouses(Some(region), false, cursor.as_deref(), 500)
                .await?;
            all.extend(page.warehouses);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn stock_row(&self, warehouse_id: &str, sku: &str) -> Result<StockRow, WarehouseError> {
        Ok(self
            .store
            .get_stock(&[sku.to_string()], Some(warehouse_id))
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| StockRow {
                sku: sku.to_string(),
                warehouse_id: warehouse_id.to_string(),
                ..StockRow::default()
            }))
    }
}

/// A request (or event) that cannot be acted on, as `INVALID_ARGUMENT`.
fn invalid(message: String) -> WarehouseError {
    WarehouseError::InvalidArgument(tonic::Status::invalid_argument(message))
}

/// `INVALID_ARGUMENT` with a `BadRequest` naming `field`.
fn field_error(field: &str, why: String) -> WarehouseError {
    let mut violations = holdfast_platform::status::FieldViolations::new();
    violations.add(field, why);
    let status = violations
        .into_result()
        .err()
        .unwrap_or_else(|| tonic::Status::invalid_argument(field.to_string()));
    WarehouseError::InvalidArgument(status)
}
