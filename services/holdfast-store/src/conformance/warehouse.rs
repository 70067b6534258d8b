//! Warehouses and shipments: upserts, listings, refused requests.

use crate::{
    ChangeOutcome, Claim, IfTaken, OutboxMessage, ShipmentLineRecord, ShipmentWrite, ShippingOptionRecord,
    StockDelta, StockRow, StoreError, StoredShipment, StoredWarehouse, WarehouseChange, WarehousePage,
    WarehouseStore,
};

use super::{T0, namespace};

pub(super) fn warehouse(id: &str, region: &str, active: bool) -> StoredWarehouse {
    StoredWarehouse {
        id: id.to_string(),
        name: format!("Warehouse {id} — Zürich"),
        region: region.to_string(),
        latitude: 47.37,
        longitude: 8.54,
        shipping_options: vec![
            ShippingOptionRecord {
                speed: 1,
                max_days: 5,
                max_distance_km: 0,
            },
            ShippingOptionRecord {
                speed: 3,
                max_days: 0,
                max_distance_km: 50,
            },
        ],
        active,
        ..StoredWarehouse::default()
    }
}

/// A warehouse without the times the store sets.
pub(super) fn timeless(warehouse: &StoredWarehouse) -> StoredWarehouse {
    StoredWarehouse {
        created_at_ms: 0,
        updated_at_ms: 0,
        ..warehouse.clone()
    }
}

pub(super) fn delta(warehouse_id: &str, sku: &str, physical: i64, allocatable: i64) -> StockDelta {
    StockDelta {
        warehouse_id: warehouse_id.to_string(),
        sku: sku.to_string(),
        physical,
        allocatable,
        expected_version: None,
    }
}

pub(super) fn claim(scope: &str, key: &str, fingerprint: &str) -> Claim {
    Claim {
        scope: scope.to_string(),
        key: key.to_string(),
        fingerprint: fingerprint.to_string(),
        if_taken: IfTaken::Repeat,
    }
}

pub(super) fn shipment(
    id: &str,
    order_id: &str,
    warehouse_id: &str,
    created_at_ms: i64,
    status: i32,
) -> StoredShipment {
    StoredShipment {
        id: id.to_string(),
        order_id: order_id.to_string(),
        warehouse_id: warehouse_id.to_string(),
        lines: vec![ShipmentLineRecord {
            sku: format!("{order_id}-sku"),
            quantity: 2,
        }],
        status,
        ship_to: b"encoded address".to_vec(),
        shipping_speed: 2,
        promised_by_ms: created_at_ms + 86_400_000,
        created_at_ms,
        ..StoredShipment::default()
    }
}

/// (warehouse, sku, physical, allocatable) of each row.
pub(super) fn stock_levels(rows: &[StockRow]) -> Vec<(String, String, i64, i64)> {
    rows.iter()
        .map(|r| (r.warehouse_id.clone(), r.sku.clone(), r.physical, r.allocatable))
        .collect()
}

pub(super) fn warehouse_ids(page: &WarehousePage) -> Vec<String> {
    page.warehouses.iter().map(|w| w.id.clone()).collect()
}

pub(super) fn shipment_ids(shipments: &[StoredShipment]) -> Vec<String> {
    shipments.iter().map(|s| s.id.clone()).collect()
}

pub async fn warehouse_upsert_get_and_list_by_region<S: WarehouseStore>(store: &S) {
    let ns = namespace("wh");
    let region = format!("{ns}-eu");
    let (stored, created) = store
        .upsert_warehouse(warehouse(&format!("{ns}-b"), &region, true))
        .await
        .expect("create");
    assert!(created);
    assert_eq!(timeless(&stored), warehouse(&format!("{ns}-b"), &region, true));
    assert!(stored.created_at_ms > 0 && stored.updated_at_ms >= stored.created_at_ms);
    assert_eq!(
        store.get_warehouse(&stored.id).await.expect("get"),
        Some(stored.clone())
    );

    let mut moved = warehouse(&stored.id, &region, false);
    moved.name = "renamed".into();
    let (again, created) = store.upsert_warehouse(moved.clone()).await.expect("replace");
    assert!(!created, "a second upsert replaces");
    assert_eq!(again.created_at_ms, stored.created_at_ms, "created_at is kept");
    assert_eq!(timeless(&again), moved);
    assert_eq!(store.get_warehouse(&stored.id).await.expect("get"), Some(again));

    for id in ["a", "c", "d"] {
        store
            .upsert_warehouse(warehouse(&format!("{ns}-{id}"), &region, true))
            .await
            .expect("create");
    }
    store
        .upsert_warehouse(warehouse(&format!("{ns}-e"), &format!("{ns}-us"), true))
        .await
        .expect("other region");
    assert_eq!(store.get_warehouse(&format!("{ns}-zz")).await.expect("get"), None);

    let active = store
        .list_warehouses(Some(&region), false, None, 500)
        .await
        .expect("list");
    assert_eq!(
        warehouse_ids(&active),
        [format!("{ns}-a"), format!("{ns}-c"), format!("{ns}-d")],
        "active ones of the region, by id"
    );
    assert_eq!(active.next_cursor, None);
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_warehouses(Some(&region), true, cursor.as_deref(), 1)
            .await
            .expect("page");
        assert!(page.warehouses.len() <= 1);
        listed.extend(warehouse_ids(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        listed,
        ["a", "b", "c", "d"].map(|id| format!("{ns}-{id}")),
        "pages of one, inactive included, each once"
    );
}

pub async fn warehouse_shipments_list_by_order_and_by_warehouse<S: WarehouseStore>(store: &S) {
    let ns = namespace("wh-list");
    let wh = format!("{ns}-w");
    let order_a = format!("{ns}-oa");
    let mut writes = Vec::new();
    for (i, (created_at, status)) in [(T0 + 3, 1), (T0 + 1, 3), (T0 + 2, 1), (T0 + 2, 5), (T0 + 5, 2)]
        .into_iter()
        .enumerate()
    {
        let order_id = if i < 2 {
            order_a.clone()
        } else {
            format!("{ns}-o{i}")
        };
        writes.push(ShipmentWrite::Create(shipment(
            &format!("{ns}-s{i}"),
            &order_id,
            &wh,
            created_at,
            status,
        )));
    }
    writes.push(ShipmentWrite::Create(shipment(
        &format!("{ns}-x"),
        &order_a,
        &format!("{ns}-other"),
        T0,
        1,
    )));
    let ChangeOutcome::Applied { .. } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("route", &order_a, "")],
            shipments: writes,
            ..WarehouseChange::default()
        })
        .await
        .expect("create")
    else {
        panic!("creates apply");
    };
    assert_eq!(
        shipment_ids(&store.list_shipments_by_order(&order_a).await.expect("by order")),
        [format!("{ns}-x"), format!("{ns}-s1"), format!("{ns}-s0")],
        "an order's shipments oldest first, across warehouses"
    );
    assert_eq!(
        store
            .list_shipments_by_order(&format!("{ns}-none"))
            .await
            .expect("none"),
        vec![]
    );

    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_shipments_by_warehouse(&wh, &[], cursor.as_deref(), 2)
            .await
            .expect("page");
        assert!(page.shipments.len() <= 2);
        listed.extend(shipment_ids(&page.shipments));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        listed,
        ["s1", "s2", "s3", "s0", "s4"].map(|s| format!("{ns}-{s}")),
        "by creation time, ties by id, each once"
    );
    let open = store
        .list_shipments_by_warehouse(&wh, &[2, 1], None, 500)
        .await
        .expect("open ones");
    assert_eq!(
        shipment_ids(&open.shipments),
        ["s2", "s0", "s4"].map(|s| format!("{ns}-{s}"))
    );
    assert_eq!(open.next_cursor, None);
}

pub async fn warehouse_bad_requests_are_refused<S: WarehouseStore>(store: &S) {
    let ns = namespace("wh-bad");
    let invalid =
        |result: Result<ChangeOutcome, StoreError>| matches!(result, Err(StoreError::InvalidArgument(_)));
    assert!(matches!(
        store.upsert_warehouse(warehouse("", "eu", true)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store
            .upsert_warehouse(warehouse(&format!("{ns}-w"), "", true))
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    let mut nan = warehouse(&format!("{ns}-w"), "eu", true);
    nan.latitude = f64::NAN;
    assert!(matches!(
        store.upsert_warehouse(nan).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list_warehouses(None, false, None, 0).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list_warehouses(None, false, Some("garbage"), 5).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_stock(&[], None).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list_shipments_by_warehouse("", &[], None, 5).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_claim("", "k").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                claims: vec![claim("route", "", "")],
                ..WarehouseChange::default()
            })
            .await
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                stock: vec![delta("", "sku", 1, 1)],
                ..WarehouseChange::default()
            })
            .await
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                shipments: vec![ShipmentWrite::Create(shipment("", "o", "w", T0, 1))],
                ..WarehouseChange::default()
            })
            .await
    ));
    assert!(invalid(
        store
            .apply_warehouse_change(WarehouseChange {
                outbox: vec![OutboxMessage::default()],
                ..WarehouseChange::default()
            })
            .await
    ));
}
