//! Warehouse changes: stock deltas, shipments, claims and events applied atomically, once.

use tokio::task::JoinSet;

use crate::{
    ChangeOutcome, Claim, IfTaken, OutboxStore, Refusal, ShipmentLineRecord, ShipmentWrite, StockDelta,
    StockRow, StoredShipment, WarehouseChange, WarehouseStore,
};

use super::{
    T0, namespace,
    outbox::{event, ids_of, pending_under, send_all_under},
    warehouse::{claim, delta, shipment, stock_levels},
};

pub async fn warehouse_change_applies_everything_once_and_repeats_answer_the_first<S>(store: &S)
where
    S: WarehouseStore + OutboxStore,
{
    let ns = namespace("wh-change");
    let (wh, sku_a, sku_b) = (format!("{ns}-w"), format!("{ns}-a"), format!("{ns}-b"));
    let receipt = WarehouseChange {
        claims: vec![claim("receipt", &format!("{ns}-r1"), "fp-1")],
        stock: vec![
            delta(&wh, &sku_a, 10, 10),
            delta(&wh, &sku_b, 4, 4),
            delta(&wh, &sku_a, 2, 2),
        ],
        outbox: vec![event(&format!("{ns}-ev-1"))],
        ..WarehouseChange::default()
    };
    let ChangeOutcome::Applied { stock, shipments } = store
        .apply_warehouse_change(receipt.clone())
        .await
        .expect("apply")
    else {
        panic!("a receipt applies");
    };
    assert!(shipments.is_empty());
    assert_eq!(
        stock_levels(&stock),
        [
            (wh.clone(), sku_a.clone(), 12, 12),
            (wh.clone(), sku_b.clone(), 4, 4)
        ],
        "one row per touched pair, deltas on one row added up, in order of first appearance"
    );
    assert!(stock.iter().all(|row| row.version == 1 && row.updated_at_ms > 0));
    assert_eq!(
        store
            .get_stock(&[sku_b.clone(), sku_a.clone(), sku_a.clone()], Some(&wh))
            .await
            .expect("read"),
        [stock[0].clone(), stock[1].clone()],
        "rows by SKU"
    );
    assert_eq!(ids_of(&pending_under(store, &ns).await), [format!("{ns}-ev-1")]);
    let record = store
        .get_claim("receipt", &format!("{ns}-r1"))
        .await
        .expect("claim")
        .expect("taken");
    assert_eq!((record.fingerprint.as_str(), &record.stock), ("fp-1", &stock));

    // A repeat (even with other contents) writes nothing and answers the first claim.
    let mut repeat = receipt.clone();
    repeat.claims[0].fingerprint = "fp-2".into();
    repeat.outbox = vec![event(&format!("{ns}-ev-2"))];
    assert_eq!(
        store.apply_warehouse_change(repeat).await.expect("repeat"),
        ChangeOutcome::Repeated(record.clone())
    );
    assert_eq!(
        store
            .get_stock(std::slice::from_ref(&sku_a), None)
            .await
            .expect("read"),
        [stock[0].clone()],
        "no second receipt"
    );
    assert_eq!(ids_of(&pending_under(store, &ns).await), [format!("{ns}-ev-1")]);

    // Allocation: a shipment created with its units, under an event claim; an Ignore claim
    // that is already taken does not stop it.
    let order_id = format!("{ns}-o1");
    let created = shipment(&format!("{ns}-s1"), &order_id, &wh, T0, 1);
    let allocate = WarehouseChange {
        claims: vec![
            claim("event:test", &format!("{ns}-e1"), ""),
            Claim {
                if_taken: IfTaken::Ignore,
                ..claim("receipt", &format!("{ns}-r1"), "marker")
            },
        ],
        stock: vec![delta(&wh, &sku_a, 0, -7)],
        shipments: vec![ShipmentWrite::Create(created.clone())],
        outbox: vec![event(&format!("{ns}-ev-3"))],
    };
    let ChangeOutcome::Applied { stock, shipments } =
        store.apply_warehouse_change(allocate).await.expect("allocate")
    else {
        panic!("an allocation within stock applies");
    };
    assert_eq!(stock_levels(&stock), [(wh.clone(), sku_a.clone(), 12, 5)]);
    assert_eq!(stock[0].version, 2);
    assert_eq!(shipments.len(), 1);
    assert_eq!(
        (shipments[0].version, shipments[0].created_at_ms),
        (1, T0),
        "created at version 1, with the caller's creation time"
    );
    assert_eq!(
        StoredShipment {
            version: 0,
            updated_at_ms: 0,
            ..shipments[0].clone()
        },
        created
    );
    assert_eq!(
        store.get_shipment(&created.id).await.expect("get"),
        Some(shipments[0].clone())
    );
    assert_eq!(
        store
            .get_claim("receipt", &format!("{ns}-r1"))
            .await
            .expect("claim")
            .map(|c| c.fingerprint),
        Some("fp-1".into()),
        "an Ignore claim keeps the record it found"
    );

    // Shipping: an update at the read version; the units leave physical stock.
    let shipped = StoredShipment {
        status: 3,
        carrier: "dhl".into(),
        tracking_number: "JD0001".into(),
        shipped_at_ms: T0 + 5,
        ..shipments[0].clone()
    };
    let ChangeOutcome::Applied { stock, shipments } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("ship", &created.id, "")],
            stock: vec![delta(&wh, &sku_a, -7, 0)],
            shipments: vec![ShipmentWrite::Update {
                shipment: shipped.clone(),
                expected_version: 1,
            }],
            ..WarehouseChange::default()
        })
        .await
        .expect("ship")
    else {
        panic!("a shipment at its version updates");
    };
    assert_eq!(stock_levels(&stock), [(wh.clone(), sku_a.clone(), 5, 5)]);
    assert_eq!(
        (
            shipments[0].version,
            shipments[0].status,
            shipments[0].created_at_ms
        ),
        (2, 3, T0)
    );
    assert_eq!(shipments[0].tracking_number, "JD0001");
    assert_eq!(
        ids_of(&pending_under(store, &ns).await),
        [format!("{ns}-ev-1"), format!("{ns}-ev-3")]
    );
    send_all_under(store, &ns).await;
}

pub async fn warehouse_refused_change_writes_nothing<S>(store: &S)
where
    S: WarehouseStore + OutboxStore,
{
    let ns = namespace("wh-refuse");
    let (wh, sku, other_sku) = (format!("{ns}-w"), format!("{ns}-a"), format!("{ns}-b"));
    let ChangeOutcome::Applied { stock, .. } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("receipt", &format!("{ns}-r1"), "")],
            stock: vec![delta(&wh, &sku, 3, 3)],
            ..WarehouseChange::default()
        })
        .await
        .expect("stock up")
    else {
        panic!("stock up applies");
    };
    let stored = stock[0].clone();
    let s1 = shipment(&format!("{ns}-s1"), &format!("{ns}-o"), &wh, T0, 1);
    let over = WarehouseChange {
        claims: vec![claim("route", &format!("{ns}-o"), "")],
        stock: vec![delta(&wh, &other_sku, 5, 5), delta(&wh, &sku, 0, -4)],
        shipments: vec![ShipmentWrite::Create(s1.clone())],
        outbox: vec![event(&format!("{ns}-ev-1"))],
    };
    assert_eq!(
        store.apply_warehouse_change(over.clone()).await.expect("apply"),
        ChangeOutcome::Refused(Refusal::Stock(stored.clone())),
        "more than allocatable: refused with the row as stored"
    );
    let version_moved = WarehouseChange {
        stock: vec![StockDelta {
            expected_version: Some(7),
            ..delta(&wh, &sku, 1, 1)
        }],
        ..over.clone()
    };
    assert_eq!(
        store.apply_warehouse_change(version_moved).await.expect("apply"),
        ChangeOutcome::Refused(Refusal::Stock(stored.clone())),
        "a row not at the expected version"
    );
    let wrong_version = WarehouseChange {
        claims: vec![claim("route", &format!("{ns}-o"), "")],
        stock: vec![delta(&wh, &other_sku, 5, 5)],
        shipments: vec![ShipmentWrite::Update {
            shipment: s1.clone(),
            expected_version: 1,
        }],
        outbox: vec![event(&format!("{ns}-ev-2"))],
    };
    assert_eq!(
        store.apply_warehouse_change(wrong_version).await.expect("apply"),
        ChangeOutcome::Refused(Refusal::Shipment {
            id: s1.id.clone(),
            actual: 0
        }),
        "an update of a shipment that does not exist"
    );
    assert_eq!(
        store.get_claim("route", &format!("{ns}-o")).await.expect("claim"),
        None
    );
    assert_eq!(
        store
            .get_stock(std::slice::from_ref(&other_sku), None)
            .await
            .expect("read"),
        vec![],
        "no delta of a refused change stays"
    );
    assert_eq!(
        store
            .get_stock(std::slice::from_ref(&sku), None)
            .await
            .expect("read"),
        std::slice::from_ref(&stored)
    );
    assert_eq!(store.get_shipment(&s1.id).await.expect("get"), None);
    assert_eq!(
        pending_under(store, &ns).await,
        vec![],
        "no event of a refused change"
    );

    // A loss that keeps the allocated units allocated cannot take more than the rest.
    let ChangeOutcome::Applied { .. } = store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("route", &format!("{ns}-other"), "")],
            stock: vec![delta(&wh, &sku, 0, -3)],
            ..WarehouseChange::default()
        })
        .await
        .expect("allocate all")
    else {
        panic!("allocating what is there applies");
    };
    assert!(
        matches!(
            store
                .apply_warehouse_change(WarehouseChange {
                    stock: vec![delta(&wh, &sku, -1, -1)],
                    ..WarehouseChange::default()
                })
                .await
                .expect("apply"),
            ChangeOutcome::Refused(Refusal::Stock(StockRow {
                physical: 3,
                allocatable: 0,
                ..
            }))
        ),
        "physical cannot drop below what is allocated"
    );

    // The refused change applies once the units are there; a second create of its
    // shipment is refused.
    store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("receipt", &format!("{ns}-r2"), "")],
            stock: vec![delta(&wh, &sku, 4, 4)],
            ..WarehouseChange::default()
        })
        .await
        .expect("receive");
    assert!(matches!(
        store.apply_warehouse_change(over).await.expect("apply"),
        ChangeOutcome::Applied { .. }
    ));
    assert_eq!(
        store
            .apply_warehouse_change(WarehouseChange {
                shipments: vec![ShipmentWrite::Create(s1.clone())],
                ..WarehouseChange::default()
            })
            .await
            .expect("apply"),
        ChangeOutcome::Refused(Refusal::Shipment {
            id: s1.id.clone(),
            actual: 1
        }),
        "a create of an existing id"
    );
    send_all_under(store, &ns).await;
}

pub async fn warehouse_concurrent_allocations_from_12_tasks_never_share_units<S>(store: &S)
where
    S: WarehouseStore + OutboxStore + Clone + 'static,
{
    let ns = namespace("wh-race");
    let (wh, sku) = (format!("{ns}-w"), format!("{ns}-a"));
    store
        .apply_warehouse_change(WarehouseChange {
            claims: vec![claim("receipt", &format!("{ns}-r"), "")],
            stock: vec![delta(&wh, &sku, 5, 5)],
            ..WarehouseChange::default()
        })
        .await
        .expect("stock up");
    let mut tasks = JoinSet::new();
    for task in 0..12_i64 {
        let (store, ns, wh, sku) = (store.clone(), ns.clone(), wh.clone(), sku.clone());
        tasks.spawn(async move {
            let order_id = format!("{ns}-o{task}");
            // Even tasks want 1 unit, odd ones 2: 18 wanted, 5 there.
            let units = 1 + task % 2;
            let change = WarehouseChange {
                claims: vec![claim("route", &order_id, "")],
                stock: vec![delta(&wh, &sku, 0, -units)],
                shipments: vec![ShipmentWrite::Create(StoredShipment {
                    lines: vec![ShipmentLineRecord {
                        sku: sku.clone(),
                        quantity: units,
                    }],
                    ..shipment(&format!("{ns}-s{task}"), &order_id, &wh, T0, 1)
                })],
                outbox: vec![event(&format!("{ns}-ev-{task:02}"))],
            };
            store
                .apply_warehouse_change(change)
                .await
                .map(|outcome| (units, outcome))
        });
    }
    let (mut allocated, mut winners) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.expect("task").expect("apply") {
            (units, ChangeOutcome::Applied { .. }) => {
                allocated += units;
                winners += 1;
            }
            (units, ChangeOutcome::Refused(Refusal::Stock(row))) => {
                assert!(row.allocatable < units, "refused only when short: {row:?}");
            }
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    let rows = store.get_stock(&[sku], Some(&wh)).await.expect("read");
    assert_eq!(rows[0].physical, 5);
    assert_eq!(rows[0].allocatable, 5 - allocated, "every unit allocated once");
    assert!((4..=5).contains(&allocated), "the stock is used up: {allocated}");
    assert_eq!(
        pending_under(store, &ns).await.len(),
        winners,
        "one event per winning allocation, none for the losers"
    );
    send_all_under(store, &ns).await;
}
