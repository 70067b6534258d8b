//! The store a service holds: one backend chosen at startup, every trait by delegation.

use crate::carts::{CartStore, StoredCart};
use crate::idempotency::{IdempotencyRecord, IdempotencyStore, KeyClaim};
use crate::orders::{OrderPage, OrderStore, StoredOrder};
use crate::outbox::{OutboxMessage, OutboxStore};
use crate::products::{Product, ProductPage, ProductStore};
use crate::sagas::{SagaRecord, SagaStore, SagaTransition};
use crate::stock_truth::{SaleRecord, StockTruth, StockTruthStore, StockWrite};
use crate::waiting_room::{Enqueued, QueuedEntry, WaitingRoomStore};
use crate::warehouse::{
    ChangeOutcome, ClaimRecord, ShipmentPage, StockRow, StoredShipment, StoredWarehouse, WarehouseChange,
    WarehousePage, WarehouseStore,
};
use crate::{ScyllaStore, SqliteStore, StoreError};

/// A durable store on one of the backends. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded default.
    Sqlite(SqliteStore),
    /// The production backend.
    Scylla(ScyllaStore),
}

impl Store {
    /// Makes the store ready to serve at once: ScyllaDB prepares every statement (see
    /// [`ScyllaStore::prepare`]); SQLite is ready when open.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Scylla(store) => store.prepare().await,
        }
    }
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Self::Sqlite(store)
    }
}

impl From<ScyllaStore> for Store {
    fn from(store: ScyllaStore) -> Self {
        Self::Scylla(store)
    }
}

impl ProductStore for Store {
    async fn upsert_product_announced(
        &self,
        product: Product,
        expected_version: Option<u64>,
        outbox: Vec<crate::OutboxMessage>,
    ) -> Result<Product, StoreError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .upsert_product_announced(product, expected_version, outbox)
                    .await
            }
            Self::Scylla(store) => {
                store
                    .upsert_product_announced(product, expected_version, outbox)
                    .await
            }
        }
    }

    async fn scan_products(&self, after_sku: Option<&str>, limit: u32) -> Result<Vec<Product>, StoreError> {
        match self {
            Self::Sqlite(store) => store.scan_products(after_sku, limit).await,
            Self::Scylla(store) => store.scan_products(after_sku, limit).await,
        }
    }

    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_product(sku).await,
            Self::Scylla(store) => store.get_product(sku).await,
        }
    }

    async fn get_products(&self, skus: &[String]) -> Result<Vec<Product>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_products(skus).await,
            Self::Scylla(store) => store.get_products(skus).await,
        }
    }

    async fn list_products_by_category(
        &self,
        category: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        match self {
            Self::Sqlite(store) => store.list_products_by_category(category, cursor, limit).await,
            Self::Scylla(store) => store.list_products_by_category(category, cursor, limit).await,
        }
    }
}

impl CartStore for Store {
    async fn save_cart(&self, cart: StoredCart) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.save_cart(cart).await,
            Self::Scylla(store) => store.save_cart(cart).await,
        }
    }

    async fn load_cart(&self, owner: &str) -> Result<Option<StoredCart>, StoreError> {
        match self {
            Self::Sqlite(store) => store.load_cart(owner).await,
            Self::Scylla(store) => store.load_cart(owner).await,
        }
    }

    async fn delete_cart(&self, owner: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.delete_cart(owner).await,
            Self::Scylla(store) => store.delete_cart(owner).await,
        }
    }
}

impl OrderStore for Store {
    async fn create_order(&self, order: StoredOrder) -> Result<StoredOrder, StoreError> {
        match self {
            Self::Sqlite(store) => store.create_order(order).await,
            Self::Scylla(store) => store.create_order(order).await,
        }
    }

    async fn get_order(&self, id: &str) -> Result<Option<StoredOrder>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_order(id).await,
            Self::Scylla(store) => store.get_order(id).await,
        }
    }

    async fn update_order(
        &self,
        order: StoredOrder,
        expected_version: u64,
        outbox: Vec<OutboxMessage>,
    ) -> Result<StoredOrder, StoreError> {
        match self {
            Self::Sqlite(store) => store.update_order(order, expected_version, outbox).await,
            Self::Scylla(store) => store.update_order(order, expected_version, outbox).await,
        }
    }

    async fn list_orders_by_customer(
        &self,
        customer_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .list_orders_by_customer(customer_id, statuses, cursor, limit)
                    .await
            }
            Self::Scylla(store) => {
                store
                    .list_orders_by_customer(customer_id, statuses, cursor, limit)
                    .await
            }
        }
    }
}

impl SagaStore for Store {
    async fn create_saga(&self, saga: SagaRecord) -> Result<SagaRecord, StoreError> {
        match self {
            Self::Sqlite(store) => store.create_saga(saga).await,
            Self::Scylla(store) => store.create_saga(saga).await,
        }
    }

    async fn get_saga(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_saga(id).await,
            Self::Scylla(store) => store.get_saga(id).await,
        }
    }

    async fn transition_saga(
        &self,
        id: &str,
        expected_version: u64,
        transition: SagaTransition,
        outbox: Vec<OutboxMessage>,
    ) -> Result<SagaRecord, StoreError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .transition_saga(id, expected_version, transition, outbox)
                    .await
            }
            Self::Scylla(store) => {
                store
                    .transition_saga(id, expected_version, transition, outbox)
                    .await
            }
        }
    }

    async fn list_stalled_sagas(&self, now_ms: i64, limit: u32) -> Result<Vec<SagaRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => store.list_stalled_sagas(now_ms, limit).await,
            Self::Scylla(store) => store.list_stalled_sagas(now_ms, limit).await,
        }
    }
}

impl IdempotencyStore for Store {
    async fn claim_key(&self, record: IdempotencyRecord) -> Result<KeyClaim, StoreError> {
        match self {
            Self::Sqlite(store) => store.claim_key(record).await,
            Self::Scylla(store) => store.claim_key(record).await,
        }
    }

    async fn get_key(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_key(scope, key).await,
            Self::Scylla(store) => store.get_key(scope, key).await,
        }
    }

    async fn complete_key(&self, scope: &str, key: &str, response: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.complete_key(scope, key, response).await,
            Self::Scylla(store) => store.complete_key(scope, key, response).await,
        }
    }

    async fn purge_expired_keys(&self, now_ms: i64) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => store.purge_expired_keys(now_ms).await,
            Self::Scylla(store) => store.purge_expired_keys(now_ms).await,
        }
    }
}

impl OutboxStore for Store {
    async fn append_outbox(&self, messages: Vec<OutboxMessage>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.append_outbox(messages).await,
            Self::Scylla(store) => store.append_outbox(messages).await,
        }
    }

    async fn pending_outbox_except(
        &self,
        limit: u32,
        skip: &[&str],
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        match self {
            Self::Sqlite(store) => store.pending_outbox_except(limit, skip).await,
            Self::Scylla(store) => store.pending_outbox_except(limit, skip).await,
        }
    }

    async fn mark_outbox_sent(&self, ids: &[String]) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.mark_outbox_sent(ids).await,
            Self::Scylla(store) => store.mark_outbox_sent(ids).await,
        }
    }
}

impl WarehouseStore for Store {
    async fn upsert_warehouse(
        &self,
        warehouse: StoredWarehouse,
    ) -> Result<(StoredWarehouse, bool), StoreError> {
        match self {
            Self::Sqlite(store) => store.upsert_warehouse(warehouse).await,
            Self::Scylla(store) => store.upsert_warehouse(warehouse).await,
        }
    }

    async fn get_warehouse(&self, id: &str) -> Result<Option<StoredWarehouse>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_warehouse(id).await,
            Self::Scylla(store) => store.get_warehouse(id).await,
        }
    }

    async fn list_warehouses(
        &self,
        region: Option<&str>,
        include_inactive: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<WarehousePage, StoreError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .list_warehouses(region, include_inactive, cursor, limit)
                    .await
            }
            Self::Scylla(store) => {
                store
                    .list_warehouses(region, include_inactive, cursor, limit)
                    .await
            }
        }
    }

    async fn get_stock(
        &self,
        skus: &[String],
        warehouse_id: Option<&str>,
    ) -> Result<Vec<StockRow>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_stock(skus, warehouse_id).await,
            Self::Scylla(store) => store.get_stock(skus, warehouse_id).await,
        }
    }

    async fn get_shipment(&self, id: &str) -> Result<Option<StoredShipment>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_shipment(id).await,
            Self::Scylla(store) => store.get_shipment(id).await,
        }
    }

    async fn list_shipments_by_order(&self, order_id: &str) -> Result<Vec<StoredShipment>, StoreError> {
        match self {
            Self::Sqlite(store) => store.list_shipments_by_order(order_id).await,
            Self::Scylla(store) => store.list_shipments_by_order(order_id).await,
        }
    }

    async fn list_shipments_by_warehouse(
        &self,
        warehouse_id: &str,
        statuses: &[i32],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ShipmentPage, StoreError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .list_shipments_by_warehouse(warehouse_id, statuses, cursor, limit)
                    .await
            }
            Self::Scylla(store) => {
                store
                    .list_shipments_by_warehouse(warehouse_id, statuses, cursor, limit)
                    .await
            }
        }
    }

    async fn get_claim(&self, scope: &str, key: &str) -> Result<Option<ClaimRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_claim(scope, key).await,
            Self::Scylla(store) => store.get_claim(scope, key).await,
        }
    }

    async fn apply_warehouse_change(&self, change: WarehouseChange) -> Result<ChangeOutcome, StoreError> {
        match self {
            Self::Sqlite(store) => store.apply_warehouse_change(change).await,
            Self::Scylla(store) => store.apply_warehouse_change(change).await,
        }
    }
}

impl StockTruthStore for Store {
    async fn record_stock(&self, writes: Vec<StockWrite>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.record_stock(writes).await,
            Self::Scylla(store) => store.record_stock(writes).await,
        }
    }

    async fn record_sales(&self, sales: Vec<SaleRecord>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.record_sales(sales).await,
            Self::Scylla(store) => store.record_sales(sales).await,
        }
    }

    async fn get_stock_truth(&self, sku: &str) -> Result<Option<StockTruth>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get_stock_truth(sku).await,
            Self::Scylla(store) => store.get_stock_truth(sku).await,
        }
    }

    async fn sales_of(&self, sku: &str, reservation_ids: &[String]) -> Result<Vec<SaleRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => store.sales_of(sku, reservation_ids).await,
            Self::Scylla(store) => store.sales_of(sku, reservation_ids).await,
        }
    }

    async fn scan_stock_truth(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StockTruth>, StoreError> {
        match self {
            Self::Sqlite(store) => store.scan_stock_truth(after_sku, limit).await,
            Self::Scylla(store) => store.scan_stock_truth(after_sku, limit).await,
        }
    }
}

impl WaitingRoomStore for Store {
    async fn enqueue(
        &self,
        queue: &str,
        key: &str,
        payload: Vec<u8>,
        max_depth: u64,
    ) -> Result<Enqueued, StoreError> {
        match self {
            Self::Sqlite(store) => store.enqueue(queue, key, payload, max_depth).await,
            Self::Scylla(store) => store.enqueue(queue, key, payload, max_depth).await,
        }
    }

    async fn queue_position(&self, queue: &str, key: &str) -> Result<Option<(QueuedEntry, u64)>, StoreError> {
        match self {
            Self::Sqlite(store) => store.queue_position(queue, key).await,
            Self::Scylla(store) => store.queue_position(queue, key).await,
        }
    }

    async fn queue_head(&self, queue: &str, limit: u32) -> Result<Vec<QueuedEntry>, StoreError> {
        match self {
            Self::Sqlite(store) => store.queue_head(queue, limit).await,
            Self::Scylla(store) => store.queue_head(queue, limit).await,
        }
    }

    async fn dequeue(&self, queue: &str, key: &str) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(store) => store.dequeue(queue, key).await,
            Self::Scylla(store) => store.dequeue(queue, key).await,
        }
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => store.queue_depth(queue).await,
            Self::Scylla(store) => store.queue_depth(queue).await,
        }
    }
}
