//! Who may call which WarehouseService RPC: warehouse management (warehouses, their stock,
//! receiving, shrinkage, shipment lists) needs `admin`; moving a shipment along (picking,
//! shipped, delivered) `admin` or `service` (a carrier integration); cancelling an order's
//! shipments `admin` or `service` (the orders service's cancel saga).

use holdfast_platform::auth::{AuthzTable, Rule};

/// The table the server enforces.
pub static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.warehouse.v1.WarehouseService",
    rows: &[
        ("UpsertWarehouse", Rule::Admin),
        ("ListWarehouses", Rule::Admin),
        ("SetWarehouseStock", Rule::Admin),
        ("ReceiveStock", Rule::Admin),
        ("RecordShrinkage", Rule::Admin),
        ("GetWarehouseStock", Rule::Admin),
        ("ListShipments", Rule::Admin),
        ("StartPicking", Rule::AdminOrService),
        ("MarkShipped", Rule::AdminOrService),
        ("MarkDelivered", Rule::AdminOrService),
        ("CancelOrderShipments", Rule::AdminOrService),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_as_intended_and_every_rpc_has_one() {
        let (admin, staff) = ([false, false, true], [false, true, true]);
        let expected = [
            ("UpsertWarehouse", admin),
            ("ListWarehouses", admin),
            ("SetWarehouseStock", admin),
            ("ReceiveStock", admin),
            ("RecordShrinkage", admin),
            ("GetWarehouseStock", admin),
            ("ListShipments", admin),
            ("StartPicking", staff),
            ("MarkShipped", staff),
            ("MarkDelivered", staff),
            ("CancelOrderShipments", staff),
        ];
        TABLE
            .check(&expected, holdfast_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
