//! Shipments from picking to delivery.

use holdfast_proto::warehouse::v1::ShipmentStatus;
use holdfast_store::{
    ChangeOutcome, Claim, IfTaken, Refusal, ShipmentWrite, StockDelta, StoredShipment, WarehouseChange,
};

use crate::error::WarehouseError;
use crate::{keys, now_ms};

use super::{ATTEMPTS, Engine, WarehouseBackend, field_error, status};

impl<S: WarehouseBackend> Engine<S> {
    /// The shipment, or `NotFound`.
    pub async fn shipment(&self, id: &str) -> Result<StoredShipment, WarehouseError> {
        self.store
            .get_shipment(id)
            .await?
            .ok_or_else(|| WarehouseError::NotFound(format!("shipment {id:?}")))
    }

    /// CREATED → PICKING; idempotent on PICKING.
    pub async fn start_picking(&self, id: &str) -> Result<StoredShipment, WarehouseError> {
        for _ in 0..ATTEMPTS {
            let shipment = self.shipment(id).await?;
            match status(&shipment) {
                ShipmentStatus::Picking => return Ok(shipment),
                ShipmentStatus::Created => {}
                other => return Err(wrong_status(id, other, "start picking")),
            }
            let expected_version = shipment.version;
            let change = WarehouseChange {
                shipments: vec![ShipmentWrite::Update {
                    shipment: StoredShipment {
                        status: ShipmentStatus::Picking as i32,
                        ..shipment
                    },
                    expected_version,
                }],
                ..WarehouseChange::default()
            };
            if let ChangeOutcome::Applied { mut shipments, .. } = self.apply(change).await?
                && let Some(picked) = shipments.pop()
            {
                return Ok(picked);
            }
        }
        Err(WarehouseError::Busy(format!("shipment {id}")))
    }

    /// CREATED or PICKING → SHIPPED with a carrier and tracking number: the units leave
    /// physical stock and `shipment.shipped` is announced. A repeat with the same carrier
    /// and tracking number answers the shipment.
    pub async fn mark_shipped(
        &self,
        id: &str,
        carrier: &str,
        tracking: &str,
    ) -> Result<StoredShipment, WarehouseError> {
        for _ in 0..ATTEMPTS {
            let shipment = self.shipment(id).await?;
            match status(&shipment) {
                ShipmentStatus::Shipped
                    if shipment.carrier == carrier && shipment.tracking_number == tracking =>
                {
                    return Ok(shipment);
                }
                ShipmentStatus::Shipped => {
                    return Err(WarehouseError::precondition(
                        "SHIPPED_WITH_OTHER_TRACKING",
                        id,
                        format!(
                            "shipment {id} already shipped with {} tracking number {}",
                            shipment.carrier, shipment.tracking_number
                        ),
                    ));
                }
                ShipmentStatus::Created | ShipmentStatus::Picking => {}
                other => return Err(wrong_status(id, other, "ship")),
            }
            let expected_version = shipment.version;
            let shipped = StoredShipment {
                status: ShipmentStatus::Shipped as i32,
                carrier: carrier.to_string(),
                tracking_number: tracking.to_string(),
                shipped_at_ms: now_ms(),
                ..shipment
            };
            let change = WarehouseChange {
                claims: vec![Claim {
                    scope: keys::SHIP.into(),
                    key: id.to_string(),
                    fingerprint: keys::fingerprint([carrier, tracking]),
                    if_taken: IfTaken::Repeat,
                }],
                // The default warehouse keeps no stock rows: inventory counted these units
                // as sold when the order committed.
                stock: shipped
                    .lines
                    .iter()
                    .filter(|_| !self.is_default_warehouse(&shipped.warehouse_id))
                    .map(|l| StockDelta {
                        warehouse_id: shipped.warehouse_id.clone(),
                        sku: l.sku.clone(),
                        physical: -l.quantity,
                        allocatable: 0,
                        expected_version: None,
                    })
                    .collect(),
                outbox: vec![self.events.shipped(&shipped)],
                shipments: vec![ShipmentWrite::Update {
                    shipment: shipped,
                    expected_version,
                }],
            };
            match self.apply(change).await? {
                ChangeOutcome::Applied { mut shipments, .. } => {
                    if let Some(shipped) = shipments.pop() {
                        return Ok(shipped);
                    }
                }
                ChangeOutcome::Refused(Refusal::Stock(row)) => {
                    // A cancellation that won gave the units back: answer that, not a
                    // missing stock.
                    if self.shipment(id).await?.version != expected_version {
                        continue;
                    }
                    return Err(WarehouseError::precondition(
                        "STOCK_MISSING",
                        &row.sku,
                        format!(
                            "{} has fewer units of {} than the shipment holds",
                            row.warehouse_id, row.sku
                        ),
                    ));
                }
                // Shipped meanwhile, or the shipment moved: look again.
                ChangeOutcome::Repeated(_) | ChangeOutcome::Refused(_) => {}
            }
        }
        Err(WarehouseError::Busy(format!("shipment {id}")))
    }

    /// SHIPPED → DELIVERED at `delivered_at_ms` (0: now): `shipment.delivered` is
    /// announced. Idempotent on DELIVERED.
    pub async fn mark_delivered(
        &self,
        id: &str,
        delivered_at_ms: i64,
    ) -> Result<StoredShipment, WarehouseError> {
        for _ in 0..ATTEMPTS {
            let shipment = self.shipment(id).await?;
            match status(&shipment) {
                ShipmentStatus::Delivered => return Ok(shipment),
                ShipmentStatus::Shipped => {}
                other => return Err(wrong_status(id, other, "deliver")),
            }
            let now = now_ms();
            let at = if delivered_at_ms == 0 {
                now
            } else {
                delivered_at_ms
            };
            if at < shipment.shipped_at_ms {
                return Err(field_error(
                    "delivered_at_unix_ms",
                    format!(
                        "must not be before the shipment shipped ({})",
                        shipment.shipped_at_ms
                    ),
                ));
            }
            let expected_version = shipment.version;
            let delivered = StoredShipment {
                status: ShipmentStatus::Delivered as i32,
                delivered_at_ms: at,
                ..shipment
            };
            let change = WarehouseChange {
                claims: vec![Claim {
                    scope: keys::DELIVER.into(),
                    key: id.to_string(),
                    fingerprint: String::new(),
                    if_taken: IfTaken::Repeat,
                }],
                outbox: vec![self.events.delivered(&delivered)],
                shipments: vec![ShipmentWrite::Update {
                    shipment: delivered,
                    expected_version,
                }],
                ..WarehouseChange::default()
            };
            if let ChangeOutcome::Applied { mut shipments, .. } = self.apply(change).await?
                && let Some(delivered) = shipments.pop()
            {
                return Ok(delivered);
            }
        }
        Err(WarehouseError::Busy(format!("shipment {id}")))
    }
}

/// The answer to a shipment in `status`, which `what` cannot act on.
fn wrong_status(id: &str, status: ShipmentStatus, what: &str) -> WarehouseError {
    let (kind, name) = match status {
        ShipmentStatus::Created => ("SHIPMENT_NOT_PICKED", "CREATED"),
        ShipmentStatus::Picking => ("SHIPMENT_PICKING", "PICKING"),
        ShipmentStatus::Shipped => ("SHIPMENT_SHIPPED", "SHIPPED"),
        ShipmentStatus::Delivered => ("SHIPMENT_DELIVERED", "DELIVERED"),
        ShipmentStatus::Cancelled => ("SHIPMENT_CANCELLED", "CANCELLED"),
        ShipmentStatus::Unspecified => ("SHIPMENT_STATUS_UNKNOWN", "UNSPECIFIED"),
    };
    WarehouseError::precondition(kind, id, format!("cannot {what} shipment {id}: it is {name}"))
}
