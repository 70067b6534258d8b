//! The cancel-versus-ship transition: a shipment that a cancellation and a MarkShipped
//! both read CREATED ends CANCELLED or SHIPPED, never both, whatever the interleaving.
//! Each side is the change the warehouse engine makes (its claim, the shipment update
//! conditional on the version read, its stock delta and event); exactly one applies.

use tokio::task::JoinSet;

use crate::{
    ChangeOutcome, OutboxStore, Refusal, ShipmentWrite, StoredShipment, WarehouseChange, WarehouseStore,
};

use super::{
    T0, namespace,
    outbox::{event, pending_under, send_all_under},
    warehouse::{claim, delta, shipment},
};

/// `ShipmentStatus` numbers (holdfast.warehouse.v1).
const CREATED: i32 = 1;
const SHIPPED: i32 = 3;
const CANCELLED: i32 = 5;
/// Shipments raced, each by one shipper and one canceller.
const SHIPMENTS: usize = 12;

pub async fn warehouse_cancel_and_ship_race_one_winner_per_shipment<S>(store: &S)
where
    S: WarehouseStore + OutboxStore + Clone + 'static,
{
    let ns = namespace("wh-cancel-ship");
    let (wh, sku) = (format!("{ns}-w"), format!("{ns}-sku"));
    let units = 2_i64;
    let physical = units * SHIPMENTS as i64;
    // Stock for every shipment, all of it allocated to the shipments.
    let mut setup = WarehouseChange {
        claims: vec![claim("route", &format!("{ns}-setup"), "")],
        stock: vec![delta(&wh, &sku, physical, 0)],
        ..WarehouseChange::default()
    };
    let mut created = Vec::new();
    for i in 0..SHIPMENTS {
        let mut s = shipment(&format!("{ns}-s{i:02}"), &format!("{ns}-o{i}"), &wh, T0, CREATED);
        s.lines[0].sku = sku.clone();
        s.lines[0].quantity = units;
        setup.shipments.push(ShipmentWrite::Create(s.clone()));
        created.push(s);
    }
    assert!(matches!(
        store.apply_warehouse_change(setup).await.expect("set up"),
        ChangeOutcome::Applied { .. }
    ));

    let mut tasks = JoinSet::new();
    for s in created {
        for ships in [true, false] {
            let (store, ns, wh, sku, s) = (store.clone(), ns.clone(), wh.clone(), sku.clone(), s.clone());
            tasks.spawn(async move {
                let (scope, status, stock) = if ships {
                    ("ship", SHIPPED, delta(&wh, &sku, -units, 0))
                } else {
                    ("cancel_shipment", CANCELLED, delta(&wh, &sku, 0, units))
                };
                let change = WarehouseChange {
                    claims: vec![claim(scope, &s.id, "")],
                    stock: vec![stock],
                    outbox: vec![event(&format!("{ns}-ev-{}-{scope}", s.id))],
                    shipments: vec![ShipmentWrite::Update {
                        shipment: StoredShipment { status, ..s.clone() },
                        expected_version: 1,
                    }],
                };
                let outcome = store.apply_warehouse_change(change).await.expect("apply");
                (s.id, ships, outcome)
            });
        }
    }
    let mut winners: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut events = 0;
    while let Some(done) = tasks.join_next().await {
        let (id, ships, outcome) = done.expect("task");
        match outcome {
            ChangeOutcome::Applied { shipments, .. } => {
                assert_eq!(shipments[0].status, if ships { SHIPPED } else { CANCELLED });
                assert!(
                    winners.insert(id.clone(), ships).is_none(),
                    "shipment {id} both shipped and cancelled"
                );
                events += 1;
            }
            ChangeOutcome::Refused(Refusal::Shipment { id: refused, actual }) => {
                assert_eq!(
                    (refused.as_str(), actual),
                    (id.as_str(), 2),
                    "lost to the other side"
                );
            }
            // The loser may be refused on the stock row first: the winner already shipped
            // the units (a cancel would give back what left) or gave them back (a ship
            // would take units no longer allocated). Either way nothing of it is written.
            ChangeOutcome::Refused(Refusal::Stock(_)) => {}
            other => panic!("unexpected outcome for {id}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), SHIPMENTS, "every shipment has exactly one winner");
    let mut shipped = 0;
    for (id, ships) in &winners {
        let stored = store.get_shipment(id).await.expect("read").expect("exists");
        assert_eq!(stored.status, if *ships { SHIPPED } else { CANCELLED }, "{id}");
        assert_eq!(stored.version, 2, "{id} moved once");
        if *ships {
            shipped += units;
        }
    }
    let rows = store.get_stock(&[sku], Some(&wh)).await.expect("read stock");
    assert_eq!(rows[0].physical, physical - shipped, "only shipped units left");
    assert_eq!(
        rows[0].allocatable, rows[0].physical,
        "every allocation was either shipped or given back, once"
    );
    assert_eq!(
        pending_under(store, &ns).await.len(),
        events,
        "one event per winner"
    );
    send_all_under(store, &ns).await;
}
