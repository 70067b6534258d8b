//! The warehouse statements, prepared once per store.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::*;
use crate::StoreError;

/// The warehouse statements, prepared.
pub(in crate::scylladb) struct WarehouseStatements {
    pub(super) get_warehouse: PreparedStatement,
    pub(super) insert_warehouse_if_absent: PreparedStatement,
    pub(super) update_warehouse: PreparedStatement,
    pub(super) list_warehouses: PreparedStatement,
    pub(super) get_stock: PreparedStatement,
    pub(super) get_stock_serial: PreparedStatement,
    pub(super) stock_change: PreparedStatement,
    pub(super) set_stock_if_version: PreparedStatement,
    pub(super) insert_stock_change: PreparedStatement,
    pub(super) index_stock: PreparedStatement,
    pub(super) stock_warehouses: PreparedStatement,
    pub(super) get_shipment: PreparedStatement,
    pub(super) get_shipment_serial: PreparedStatement,
    pub(super) insert_shipment_if_absent: PreparedStatement,
    pub(super) update_shipment_if_version: PreparedStatement,
    pub(super) delete_shipment_if_version: PreparedStatement,
    pub(super) index_by_order: PreparedStatement,
    pub(super) index_by_warehouse: PreparedStatement,
    pub(super) list_by_order: PreparedStatement,
    pub(super) list_by_warehouse: PreparedStatement,
    pub(super) get_claim: PreparedStatement,
    pub(super) insert_claim_if_absent: PreparedStatement,
    pub(super) mark_claim_applied: PreparedStatement,
    pub(super) delete_claim_if_pending: PreparedStatement,
}

impl WarehouseStatements {
    pub(in crate::scylladb) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        let get_stock = prepare(
            format!(
                "SELECT physical, allocatable, version, updated_at_ms FROM {ks}.warehouse_stock \
                 WHERE warehouse_id = ? AND sku = ? LIMIT 1"
            ),
            true,
        )
        .await?;
        let get_shipment = prepare(
            format!("SELECT {SHIPMENT_COLUMNS} FROM {ks}.shipments WHERE id = ?"),
            true,
        )
        .await?;
        let get_claim = prepare(
            format!(
                "SELECT fingerprint, state, anchor, change, stock, created_at_ms FROM {ks}.warehouse_claims \
                 WHERE scope = ? AND key = ?"
            ),
            true,
        )
        .await?;
        Ok(Self {
            get_warehouse: prepare(
                format!("SELECT {WAREHOUSE_COLUMNS} FROM {ks}.warehouses WHERE shard = {SHARD} AND id = ?"),
                true,
            )
            .await?,
            insert_warehouse_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.warehouses (shard, {WAREHOUSE_COLUMNS}) \
                     VALUES ({SHARD}, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            update_warehouse: prepare(
                format!(
                    "UPDATE {ks}.warehouses SET name = ?, region = ?, latitude = ?, longitude = ?, \
                     shipping_options = ?, active = ?, updated_at_ms = ? WHERE shard = {SHARD} AND id = ?"
                ),
                true,
            )
            .await?,
            list_warehouses: prepare(
                format!(
                    "SELECT {WAREHOUSE_COLUMNS} FROM {ks}.warehouses WHERE shard = {SHARD} AND id > ? LIMIT ?"
                ),
                true,
            )
            .await?,
            get_stock_serial: serial(&get_stock),
            get_stock,
            stock_change: prepare(
                format!(
                    "SELECT change_id FROM {ks}.warehouse_stock WHERE warehouse_id = ? AND sku = ? AND change_id = ?"
                ),
                true,
            )
            .await?,
            set_stock_if_version: prepare(
                format!(
                    "UPDATE {ks}.warehouse_stock SET physical = ?, allocatable = ?, version = ?, updated_at_ms = ? \
                     WHERE warehouse_id = ? AND sku = ? IF version = ?"
                ),
                false,
            )
            .await?,
            insert_stock_change: prepare(
                format!(
                    "INSERT INTO {ks}.warehouse_stock (warehouse_id, sku, change_id) VALUES (?, ?, ?) \
                     USING TTL {CHANGE_MEMORY_SECONDS}"
                ),
                false,
            )
            .await?,
            index_stock: prepare(
                format!("INSERT INTO {ks}.warehouse_stock_by_sku (sku, warehouse_id) VALUES (?, ?)"),
                true,
            )
            .await?,
            stock_warehouses: prepare(
                format!("SELECT warehouse_id FROM {ks}.warehouse_stock_by_sku WHERE sku = ?"),
                true,
            )
            .await?,
            get_shipment_serial: serial(&get_shipment),
            get_shipment,
            insert_shipment_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.shipments ({SHIPMENT_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            update_shipment_if_version: prepare(
                format!(
                    "UPDATE {ks}.shipments SET status = ?, lines = ?, carrier = ?, tracking_number = ?, \
                     ship_to = ?, shipping_speed = ?, promised_by_ms = ?, shipped_at_ms = ?, \
                     delivered_at_ms = ?, updated_at_ms = ?, version = ? WHERE id = ? IF version = ?"
                ),
                false,
            )
            .await?,
            delete_shipment_if_version: prepare(
                format!("DELETE FROM {ks}.shipments WHERE id = ? IF version = ?"),
                false,
            )
            .await?,
            index_by_order: prepare(
                format!("INSERT INTO {ks}.shipments_by_order (order_id, created_at_ms, id) VALUES (?, ?, ?)"),
                true,
            )
            .await?,
            index_by_warehouse: prepare(
                format!(
                    "INSERT INTO {ks}.shipments_by_warehouse (warehouse_id, created_at_ms, id) VALUES (?, ?, ?)"
                ),
                true,
            )
            .await?,
            list_by_order: prepare(
                format!("SELECT id FROM {ks}.shipments_by_order WHERE order_id = ?"),
                true,
            )
            .await?,
            list_by_warehouse: prepare(
                format!(
                    "SELECT created_at_ms, id FROM {ks}.shipments_by_warehouse \
                     WHERE warehouse_id = ? AND (created_at_ms, id) > (?, ?) LIMIT ?"
                ),
                true,
            )
            .await?,
            get_claim: serial(&get_claim),
            insert_claim_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.warehouse_claims (scope, key, fingerprint, state, anchor, change, stock, \
                     created_at_ms) VALUES (?, ?, ?, 'pending', ?, ?, '[]', ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            mark_claim_applied: prepare(
                format!(
                    "UPDATE {ks}.warehouse_claims SET state = 'applied', stock = ? WHERE scope = ? AND key = ?"
                ),
                true,
            )
            .await?,
            delete_claim_if_pending: prepare(
                format!(
                    "DELETE FROM {ks}.warehouse_claims WHERE scope = ? AND key = ? IF state = 'pending' AND anchor = ?"
                ),
                false,
            )
            .await?,
        })
    }
}
