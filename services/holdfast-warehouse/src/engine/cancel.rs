//! Cancelling the unshipped part of an order (the `CancelOrderShipments` RPC), decided
//! here where shipment state lives rather than on orders' lagging copy.
//!
//! 1. Close the order's routing: one change takes the [`keys::CANCEL`] and [`keys::ROUTE`]
//!    claims together. If it applies, routing never ran and never will (its own
//!    [`keys::ROUTE`] claim is refused), so nothing can ship. If routing holds
//!    [`keys::ROUTE`], the order's shipments exist once that claim is applied (a ScyllaDB
//!    routing still being written answers `Busy`, and the caller retries).
//! 2. Cancel each open shipment in a change of its own whose shipment write is conditional
//!    on the version read (SQLite: in the change's transaction; ScyllaDB: one lightweight
//!    transaction). `mark_shipped` writes the same row on the same condition, so exactly one
//!    of them moves it: the loser re-reads and sees SHIPPED or CANCELLED.
//! 3. List again until no shipment is open (a shrinkage may have re-routed one meanwhile)
//!    and answer every shipment with the units that left.

use std::collections::BTreeMap;

use holdfast_proto::warehouse::v1::ShipmentStatus;
use holdfast_store::{
    ChangeOutcome, Claim, IfTaken, ShipmentLineRecord, ShipmentWrite, StockDelta, StoredShipment,
    WarehouseChange,
};

use crate::error::WarehouseError;
use crate::{keys, now_ms};

use super::{ATTEMPTS, Engine, WarehouseBackend, is_open, status};

/// What a cancellation found: what shipped, and everything it cancelled or left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// Whether the order had been routed before its routing was closed.
    pub routed: bool,
    /// Every shipment of the order, none open.
    pub shipments: Vec<StoredShipment>,
    /// Units that left a warehouse, one line per SKU, by SKU.
    pub shipped: Vec<ShipmentLineRecord>,
}

impl Cancelled {
    fn of(routed: bool, shipments: Vec<StoredShipment>) -> Self {
        let mut shipped: BTreeMap<String, i64> = BTreeMap::new();
        for shipment in &shipments {
            if matches!(
                status(shipment),
                ShipmentStatus::Shipped | ShipmentStatus::Delivered
            ) {
                for line in &shipment.lines {
                    let units = shipped.entry(line.sku.clone()).or_default();
                    *units = units.saturating_add(line.quantity);
                }
            }
        }
        Self {
            routed,
            shipments,
            shipped: shipped
                .into_iter()
                .map(|(sku, quantity)| ShipmentLineRecord { sku, quantity })
                .collect(),
        }
    }
}

impl<S: WarehouseBackend> Engine<S> {
    /// Cancels every unshipped shipment of `order_id` and closes its routing; see the
    /// module docs. Idempotent.
    pub async fn cancel_unshipped(&self, order_id: &str, reason: &str) -> Result<Cancelled, WarehouseError> {
        if !self.close_routing(order_id).await? {
            return Ok(Cancelled::of(false, Vec::new()));
        }
        let reason = if reason.is_empty() {
            "order cancelled".to_string()
        } else {
            format!("order cancelled: {reason}")
        };
        for _ in 0..ATTEMPTS {
            let shipments = self.store.list_shipments_by_order(order_id).await?;
            let open: Vec<StoredShipment> = shipments.iter().filter(|s| is_open(s)).cloned().collect();
            if open.is_empty() {
                return Ok(Cancelled::of(true, shipments));
            }
            for shipment in open {
                self.cancel_shipment(shipment, &reason).await?;
            }
        }
        Err(WarehouseError::Busy(format!("shipments of order {order_id}")))
    }

    /// Closes the order's routing: `false` if it was never routed (and now never will be),
    /// `true` if routing ran.
    async fn close_routing(&self, order_id: &str) -> Result<bool, WarehouseError> {
        let change = WarehouseChange {
            claims: vec![
                Claim {
                    scope: keys::CANCEL.into(),
                    key: order_id.to_string(),
                    fingerprint: keys::CANCELLED.into(),
                    if_taken: IfTaken::Repeat,
                },
                Claim {
                    scope: keys::ROUTE.into(),
                    key: order_id.to_string(),
                    fingerprint: keys::CANCELLED.into(),
                    if_taken: IfTaken::Repeat,
                },
            ],
            ..WarehouseChange::default()
        };
        match self.apply(change).await? {
            ChangeOutcome::Applied { .. } => Ok(false),
            // Closed by an earlier call.
            ChangeOutcome::Repeated(record) if record.scope == keys::CANCEL => Ok(false),
            ChangeOutcome::Repeated(_) => match self.store.get_claim(keys::ROUTE, order_id).await? {
                // Closed by an order.cancelled event that arrived before the dispatch.
                Some(route) if route.fingerprint == keys::CANCELLED => Ok(false),
                Some(_) => Ok(true),
                // Taken by a routing not yet fully written (ScyllaDB), or let go by one
                // that was refused: look again shortly.
                None => Err(WarehouseError::Busy(format!("routing of order {order_id}"))),
            },
            ChangeOutcome::Refused(_) => Err(WarehouseError::Busy(format!("routing of order {order_id}"))),
        }
    }

    /// One open shipment → CANCELLED, its units allocatable again, `shipment.cancelled`
    /// announced, conditional on the version read. Losing to another writer is no error:
    /// the caller lists the order's shipments again.
    async fn cancel_shipment(&self, shipment: StoredShipment, reason: &str) -> Result<(), WarehouseError> {
        let expected_version = shipment.version;
        let (order_id, shipment_id) = (shipment.order_id.clone(), shipment.id.clone());
        let stock = if self.is_default_warehouse(&shipment.warehouse_id) {
            Vec::new()
        } else {
            shipment
                .lines
                .iter()
                .map(|l| StockDelta {
                    warehouse_id: shipment.warehouse_id.clone(),
                    sku: l.sku.clone(),
                    physical: 0,
                    allocatable: l.quantity,
                    expected_version: None,
                })
                .collect()
        };
        let cancelled = StoredShipment {
            status: ShipmentStatus::Cancelled as i32,
            ..shipment
        };
        let change = WarehouseChange {
            claims: vec![Claim {
                scope: keys::CANCEL_SHIPMENT.into(),
                key: cancelled.id.clone(),
                fingerprint: String::new(),
                if_taken: IfTaken::Repeat,
            }],
            stock,
            outbox: vec![self.events.cancelled(&cancelled, reason, now_ms())],
            shipments: vec![ShipmentWrite::Update {
                shipment: cancelled,
                expected_version,
            }],
        };
        match self.apply(change).await? {
            ChangeOutcome::Applied { .. } => {
                tracing::info!(order = %order_id, shipment = %shipment_id, "shipment cancelled");
            }
            // Cancelled before, or shipped / re-routed meanwhile: the caller looks again.
            ChangeOutcome::Repeated(_) | ChangeOutcome::Refused(_) => {}
        }
        Ok(())
    }
}
