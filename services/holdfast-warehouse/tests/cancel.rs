//! Cancelling an order where shipment state lives (`Engine::cancel_unshipped`, the
//! CancelOrderShipments RPC): racing MarkShipped, each shipment ends SHIPPED or CANCELLED,
//! never both, and the answer says exactly what left. Also what routing does with lines no
//! warehouse stocks: backordered with a reason, or shipped by the default warehouse.

mod common;

use std::collections::BTreeMap;

use common::*;
use holdfast_proto::events::v1::{FulfillmentEvent, fulfillment_event};
use holdfast_proto::warehouse::v1::{ShipmentStatus, ShippingSpeed};
use holdfast_warehouse::{WarehouseError, WarehouseOptions};
use prost::Message;
use tokio::task::JoinSet;

/// Orders raced, each split over two warehouses.
const ORDERS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_mark_shipped_never_both_ships_and_cancels() {
    let fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.warehouse("ham", HAMBURG).await;
    let total = ORDERS as i64 * 2;
    fx.stock("ber", "tee", total).await;
    fx.stock("ham", "mug", total).await;
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        let order_id = format!("ord-race-{i}");
        fx.handle(&dispatch(
            &order_id,
            &[("tee", 2), ("mug", 1)],
            BERLIN,
            ShippingSpeed::Standard,
        ))
        .await
        .expect("routed");
        let shipments = fx.shipments_of(&order_id).await;
        assert_eq!(shipments.len(), 2, "split: tee from Berlin, mug from Hamburg");
        orders.push((order_id, shipments));
    }

    let mut tasks = JoinSet::new();
    for (i, (order_id, shipments)) in orders.iter().enumerate() {
        let cancel = {
            let (engine, order_id) = (fx.running.engine.clone(), order_id.clone());
            async move {
                let answer = engine.cancel_unshipped(&order_id, "changed my mind").await;
                (order_id, None, Some(answer))
            }
        };
        // Half the orders start their cancellation first, half their shipping.
        let mut cancel = Some(cancel);
        if i % 2 == 0
            && let Some(cancel) = cancel.take()
        {
            tasks.spawn(cancel);
        }
        for shipment in shipments {
            let (engine, id) = (fx.running.engine.clone(), shipment.id.clone());
            tasks.spawn(async move {
                let shipped = engine.mark_shipped(&id, "dhl", &format!("T-{id}")).await;
                (id, Some(shipped), None)
            });
        }
        if let Some(cancel) = cancel {
            tasks.spawn(cancel);
        }
    }
    let mut ship_results = BTreeMap::new();
    let mut answers = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            (id, Some(shipped), None) => {
                ship_results.insert(id, shipped);
            }
            (order_id, None, Some(answer)) => {
                answers.insert(order_id, answer.expect("cancel answers"));
            }
            _ => unreachable!(),
        }
    }

    let (mut tees_shipped, mut mugs_shipped, mut cancelled) = (0, 0, 0);
    for (order_id, _) in &orders {
        let answer = &answers[order_id];
        assert!(answer.routed);
        let mut left: BTreeMap<String, i64> = BTreeMap::new();
        for shipment in fx.shipments_of(order_id).await {
            let status = ShipmentStatus::try_from(shipment.status).expect("status");
            match (&ship_results[&shipment.id], status) {
                (Ok(shipped), ShipmentStatus::Shipped) => {
                    assert_eq!(shipped.status, ShipmentStatus::Shipped as i32);
                    for line in &shipment.lines {
                        *left.entry(line.sku.clone()).or_default() += line.quantity;
                    }
                }
                (Err(WarehouseError::Precondition { kind, .. }), ShipmentStatus::Cancelled) => {
                    assert_eq!(*kind, "SHIPMENT_CANCELLED", "the shipper is told why");
                    cancelled += 1;
                }
                (result, status) => panic!("{}: ship answered {result:?}, ended {status:?}", shipment.id),
            }
        }
        let answered: BTreeMap<String, i64> = answer
            .shipped
            .iter()
            .map(|l| (l.sku.clone(), l.quantity))
            .collect();
        assert_eq!(answered, left, "{order_id}: the answer is exactly what left");
        assert!(
            answer
                .shipments
                .iter()
                .all(|s| s.status == ShipmentStatus::Shipped as i32
                    || s.status == ShipmentStatus::Cancelled as i32),
            "no shipment left open"
        );
        tees_shipped += left.get("tee").copied().unwrap_or(0);
        mugs_shipped += left.get("mug").copied().unwrap_or(0);
    }
    assert_eq!(
        fx.levels("ber", "tee").await,
        (total - tees_shipped, total - tees_shipped),
        "shipped units left the shelf, cancelled ones are allocatable again"
    );
    assert_eq!(
        fx.levels("ham", "mug").await,
        (total - mugs_shipped, total - mugs_shipped)
    );
    println!("race: {cancelled} shipments cancelled, {tees_shipped} tees and {mugs_shipped} mugs shipped");

    // A repeat answers the same and cancels nothing more.
    let (order_id, _) = &orders[0];
    let again = fx
        .running
        .engine
        .cancel_unshipped(order_id, "again")
        .await
        .expect("repeat");
    assert_eq!(again, answers[order_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cancelled_before_routing_is_never_routed() {
    let fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "tee", 5).await;
    let answer = fx
        .running
        .engine
        .cancel_unshipped("ord-early", "")
        .await
        .expect("cancel");
    assert!(!answer.routed && answer.shipments.is_empty() && answer.shipped.is_empty());
    fx.handle(&dispatch(
        "ord-early",
        &[("tee", 1)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("the late dispatch is a no-op");
    assert!(fx.shipments_of("ord-early").await.is_empty(), "never routed");
    assert_eq!(fx.levels("ber", "tee").await, (5, 5));
    let again = fx
        .running
        .engine
        .cancel_unshipped("ord-early", "")
        .await
        .expect("repeat");
    assert_eq!(again, answer);
}

fn backorder_lines(event: &holdfast_platform::events::Event) -> Vec<(String, i64, String)> {
    let Some(fulfillment_event::Event::BackorderRaised(raised)) =
        FulfillmentEvent::decode(event.payload.as_slice())
            .expect("decodes")
            .event
    else {
        panic!("a backorder");
    };
    raised
        .lines
        .into_iter()
        .map(|l| (l.sku, l.missing, l.reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sku_no_warehouse_stocks_is_backordered_with_a_reason_not_poison() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "tee", 5).await;
    fx.handle(&dispatch(
        "ord-ghost",
        &[("tee", 1), ("ghost", 2)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed, not dead-lettered");
    assert_eq!(
        shapes(&fx.shipments_of("ord-ghost").await),
        shape(&[("ber", &[("tee", 1)])])
    );
    let lines = backorder_lines(&next(&mut fx.fulfillment).await);
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].0.as_str(), lines[0].1), ("ghost", 2));
    assert!(lines[0].2.contains("stocks ghost"), "{}", lines[0].2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_warehouse_ships_what_no_other_warehouse_can() {
    let mut fx = Fixture::start_with(WarehouseOptions {
        default_warehouse: Some(holdfast_warehouse::default_warehouse_id("eu")),
        ..WarehouseOptions::default()
    })
    .await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "tee", 1).await;
    fx.handle(&dispatch(
        "ord-d",
        &[("tee", 3), ("ghost", 1)],
        POTSDAM,
        ShippingSpeed::Express,
    ))
    .await
    .expect("routed");
    let shipments = fx.shipments_of("ord-d").await;
    assert_eq!(
        shapes(&shipments),
        shape(&[
            ("ber", &[("tee", 1)]),
            ("default-eu", &[("tee", 2), ("ghost", 1)])
        ]),
        "real stock first, the rest from the default warehouse"
    );
    assert!(fx.fulfillment.try_recv().is_err(), "nothing backordered");
    assert_eq!(
        fx.row("default-eu", "ghost").await.version,
        0,
        "the default warehouse keeps no stock rows"
    );
    let default = shipments
        .iter()
        .find(|s| s.warehouse_id == "default-eu")
        .expect("default");
    fx.running
        .engine
        .mark_shipped(&default.id, "dhl", "T-D")
        .await
        .expect("ships without a stock row");
    let refused = fx.running.engine.set_stock("default-eu", "tee", 5).await;
    assert!(
        matches!(
            refused,
            Err(WarehouseError::Precondition {
                kind: "DEFAULT_WAREHOUSE",
                ..
            })
        ),
        "{refused:?}"
    );
    let answer = fx
        .running
        .engine
        .cancel_unshipped("ord-d", "")
        .await
        .expect("cancel");
    assert_eq!(
        answer
            .shipped
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        [("ghost", 1), ("tee", 2)]
    );
    assert_eq!(fx.levels("ber", "tee").await, (1, 1), "Berlin's unit given back");
}
