//! Routing, allocation and the shipment lifecycle through the consumer and the engine, on a
//! real SQLite file; what the warehouse announces is read back from the in-process bus its
//! relay publishes to.

mod common;

use std::collections::HashSet;

use common::*;
use holdfast_platform::events::HandleError;
use holdfast_proto::events::v1::{
    FulfillmentEvent, ReconciliationEvent, StockChangeCause, fulfillment_event, reconciliation_event,
    shipment_event,
};
use holdfast_proto::warehouse::v1::{ShipmentStatus, ShippingSpeed};
use holdfast_store::SqliteStore;
use holdfast_warehouse::WarehouseOptions;
use holdfast_warehouse::engine::Shrinkage;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_sends_the_order_to_the_closest_warehouse_that_has_every_line() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.warehouse("ham", HAMBURG).await;
    fx.warehouse("muc", MUNICH).await;
    fx.stock("ber", "tee", 10).await; // closest, but no mugs
    fx.stock("ham", "tee", 10).await;
    fx.stock("ham", "mug", 10).await;
    fx.stock("muc", "tee", 10).await;
    fx.stock("muc", "mug", 10).await;

    fx.handle(&dispatch(
        "ord-1",
        &[("tee", 2), ("mug", 1)],
        POTSDAM,
        ShippingSpeed::Express,
    ))
    .await
    .expect("routed");
    let shipments = fx.shipments_of("ord-1").await;
    assert_eq!(
        shapes(&shipments),
        shape(&[("ham", &[("tee", 2), ("mug", 1)])]),
        "Hamburg is the closest with both lines"
    );
    let shipment = &shipments[0];
    assert_eq!(shipment.status, ShipmentStatus::Created as i32);
    assert_eq!(shipment.shipping_speed, ShippingSpeed::Express as i32);
    assert_eq!(
        shipment.promised_by_ms,
        1_700_000_000_000 + 86_400_000,
        "express from Hamburg promises one day from the order"
    );
    assert_eq!(
        fx.levels("ham", "tee").await,
        (10, 8),
        "allocated, still on the shelf"
    );
    assert_eq!(fx.levels("ham", "mug").await, (10, 9));
    assert_eq!(
        fx.levels("ber", "tee").await,
        (10, 10),
        "the partial warehouse is untouched"
    );

    let (event_type, event) = next_shipment(&mut fx.shipments).await;
    assert_eq!(event_type, "shipment.created");
    let Some(shipment_event::Event::Created(created)) = event.event else {
        panic!("a created event");
    };
    assert_eq!(
        (
            created.shipment_id.as_str(),
            created.order_id.as_str(),
            created.warehouse_id.as_str()
        ),
        (shipment.id.as_str(), "ord-1", "ham")
    );
    assert_eq!(created.shipments_in_order, 1);
    assert_eq!(created.promised_by_unix_ms, shipment.promised_by_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_splits_into_the_fewest_shipments_not_the_closest_ones() {
    let mut fx = Fixture::start().await;
    for (id, at) in [
        ("ber", BERLIN),
        ("pot", POTSDAM),
        ("ham", HAMBURG),
        ("muc", MUNICH),
    ] {
        fx.warehouse(id, at).await;
    }
    // Taking each line from the closest warehouse that has it would make three shipments
    // (ber, pot, ham); ber and muc make two.
    fx.stock("ber", "a", 5).await;
    fx.stock("pot", "b", 5).await;
    fx.stock("ham", "c", 5).await;
    fx.stock("muc", "b", 5).await;
    fx.stock("muc", "c", 5).await;

    fx.handle(&dispatch(
        "ord-split",
        &[("a", 1), ("b", 2), ("c", 3)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed");
    assert_eq!(
        shapes(&fx.shipments_of("ord-split").await),
        shape(&[("ber", &[("a", 1)]), ("muc", &[("b", 2), ("c", 3)])]),
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (_, event) = next_shipment(&mut fx.shipments).await;
        let Some(shipment_event::Event::Created(created)) = event.event else {
            panic!("created events");
        };
        assert_eq!(created.shipments_in_order, 2, "both know the order has two");
        seen.push(created.warehouse_id);
    }
    assert_eq!(seen, ["ber", "muc"], "closest first");
    assert_eq!(fx.levels("pot", "b").await, (5, 5));
    assert_eq!(fx.levels("muc", "b").await, (5, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_day_promise_excludes_far_warehouses_and_backorders_the_rest() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.warehouse("ham", HAMBURG).await;
    fx.stock("ber", "tee", 1).await;
    fx.stock("ham", "tee", 50).await;

    // Same day reaches 40 km: Hamburg (255 km) has the stock but cannot keep the promise.
    fx.handle(&dispatch(
        "ord-today",
        &[("tee", 3)],
        POTSDAM,
        ShippingSpeed::SameDay,
    ))
    .await
    .expect("routed");
    assert_eq!(
        shapes(&fx.shipments_of("ord-today").await),
        shape(&[("ber", &[("tee", 1)])])
    );
    assert_eq!(fx.levels("ham", "tee").await, (50, 50));
    let backorder = next(&mut fx.fulfillment).await;
    assert_eq!(backorder.event_type, "fulfillment.backorder_raised");
    assert_eq!(backorder.key, "ord-today");
    let Some(fulfillment_event::Event::BackorderRaised(raised)) =
        FulfillmentEvent::decode(backorder.payload.as_slice())
            .expect("decodes")
            .event
    else {
        panic!("a backorder");
    };
    assert_eq!(raised.order_id, "ord-today");
    assert_eq!(raised.region, "eu");
    assert_eq!(
        raised
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.requested, l.missing))
            .collect::<Vec<_>>(),
        [("tee", 3, 2)]
    );

    // The same order at standard speed: Hamburg ships it all.
    fx.handle(&dispatch(
        "ord-later",
        &[("tee", 3)],
        POTSDAM,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed");
    assert_eq!(
        shapes(&fx.shipments_of("ord-later").await),
        shape(&[("ham", &[("tee", 3)])])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_nobody_has_are_backordered_not_dropped() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.warehouse("par", PARIS).await;
    fx.stock("ber", "lamp", 2).await;
    fx.stock("par", "lamp", 1).await;
    // Sofas were stocked once and are sold out: known, but short.
    fx.stock("par", "sofa", 1).await;
    fx.stock("par", "sofa", 0).await;

    fx.handle(&dispatch(
        "ord-short",
        &[("lamp", 5), ("sofa", 1)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed");
    assert_eq!(
        shapes(&fx.shipments_of("ord-short").await),
        shape(&[("ber", &[("lamp", 2)]), ("par", &[("lamp", 1)])])
    );
    let backorder = next(&mut fx.fulfillment).await;
    let Some(fulfillment_event::Event::BackorderRaised(raised)) =
        FulfillmentEvent::decode(backorder.payload.as_slice())
            .expect("decodes")
            .event
    else {
        panic!("a backorder");
    };
    assert_eq!(
        raised
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.requested, l.missing))
            .collect::<Vec<_>>(),
        [("lamp", 5, 2), ("sofa", 1, 1)],
        "every unit routed or backordered"
    );
    // The backorder is our own event on the topic we consume: reading it back is a no-op.
    fx.handle(&backorder)
        .await
        .expect("our own backorder is not poison");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_routed_once_whatever_is_redelivered() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "tee", 10).await;

    let first = dispatch("ord-once", &[("tee", 2)], BERLIN, ShippingSpeed::Standard);
    fx.handle(&first).await.expect("routed");
    fx.handle(&first).await.expect("the same event again");
    // A second dispatch of the same order under another event id (a re-run saga step).
    fx.handle(&dispatch(
        "ord-once",
        &[("tee", 2)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("another event for the order");
    assert_eq!(fx.shipments_of("ord-once").await.len(), 1);
    assert_eq!(fx.levels("ber", "tee").await, (10, 8), "allocated once");
    let (event_type, _) = next_shipment(&mut fx.shipments).await;
    assert_eq!(event_type, "shipment.created");
    assert!(fx.shipments.try_recv().is_err(), "one shipment.created, no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_racing_for_the_last_units_never_both_get_them() {
    // Two engines on two handles of one SQLite file stand in for two processes: only the
    // store's transaction keeps them from handing out the same units.
    let fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "last", 5).await;
    let second_store = SqliteStore::open(fx.dir.path().join("holdfast.db"))
        .await
        .expect("second handle");
    let second = holdfast_warehouse::start(
        second_store,
        std::sync::Arc::new(fx.bus.clone()),
        "eu",
        WarehouseOptions::default(),
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let engine = if i % 2 == 0 {
            fx.running.engine.clone()
        } else {
            second.engine.clone()
        };
        tasks.spawn(async move {
            // Each order wants 2: 32 wanted, 5 there.
            let event = dispatch(
                &format!("ord-race-{i}"),
                &[("last", 2)],
                BERLIN,
                ShippingSpeed::Standard,
            );
            holdfast_warehouse::consumer::handle(&engine, &event).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("every order is routed or backordered");
    }
    let mut allocated = 0;
    let mut ids = HashSet::new();
    for i in 0..16 {
        for shipment in fx.shipments_of(&format!("ord-race-{i}")).await {
            allocated += shipment.lines.iter().map(|l| l.quantity).sum::<i64>();
            assert!(ids.insert(shipment.id));
        }
    }
    assert_eq!(allocated, 5, "every unit shipped once, none twice");
    assert_eq!(fx.levels("ber", "last").await, (5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_moves_from_created_to_delivered_and_stock_leaves_when_it_ships() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "tee", 10).await;
    fx.handle(&dispatch(
        "ord-life",
        &[("tee", 4)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed");
    let id = fx.shipments_of("ord-life").await[0].id.clone();
    let _ = next_shipment(&mut fx.shipments).await;
    let engine = &fx.running.engine;

    let picking = engine.start_picking(&id).await.expect("pick");
    assert_eq!(picking.status, ShipmentStatus::Picking as i32);
    assert_eq!(
        engine.start_picking(&id).await.expect("again").version,
        picking.version
    );

    let shipped = engine.mark_shipped(&id, "dhl", "JJD0001").await.expect("ship");
    assert_eq!(shipped.status, ShipmentStatus::Shipped as i32);
    assert!(shipped.shipped_at_ms > 0);
    assert_eq!(
        fx.levels("ber", "tee").await,
        (6, 6),
        "shipped units left the shelf"
    );
    let again = engine.mark_shipped(&id, "dhl", "JJD0001").await.expect("repeat");
    assert_eq!(again, shipped, "a repeat answers the shipment");
    assert_eq!(fx.levels("ber", "tee").await, (6, 6), "and takes nothing twice");
    let other = engine
        .mark_shipped(&id, "ups", "1Z999")
        .await
        .expect_err("other tracking");
    assert!(matches!(
        other,
        holdfast_warehouse::WarehouseError::Precondition {
            kind: "SHIPPED_WITH_OTHER_TRACKING",
            ..
        }
    ));
    let (event_type, event) = next_shipment(&mut fx.shipments).await;
    assert_eq!(event_type, "shipment.shipped");
    let Some(shipment_event::Event::Shipped(event)) = event.event else {
        panic!("shipped");
    };
    assert_eq!(
        (event.carrier.as_str(), event.tracking_number.as_str()),
        ("dhl", "JJD0001")
    );

    assert!(
        engine.start_picking(&id).await.is_err(),
        "no picking after shipping"
    );
    let delivered = engine.mark_delivered(&id, 0).await.expect("deliver");
    assert_eq!(delivered.status, ShipmentStatus::Delivered as i32);
    assert_eq!(engine.mark_delivered(&id, 0).await.expect("again"), delivered);
    assert!(
        engine.mark_shipped(&id, "dhl", "JJD0001").await.is_err(),
        "not after delivery"
    );
    let (event_type, _) = next_shipment(&mut fx.shipments).await;
    assert_eq!(event_type, "shipment.delivered");
    assert!(fx.shipments.try_recv().is_err(), "one event per transition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_returns_allocations_and_an_early_cancel_stops_routing() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.warehouse("ham", HAMBURG).await;
    fx.stock("ber", "a", 3).await;
    fx.stock("ham", "b", 3).await;
    fx.handle(&dispatch(
        "ord-c",
        &[("a", 2), ("b", 1)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed");
    let shipments = fx.shipments_of("ord-c").await;
    assert_eq!(shipments.len(), 2);
    fx.running
        .engine
        .mark_shipped(&shipments[1].id, "dhl", "T1")
        .await
        .expect("ship the Hamburg part");

    let cancel = cancelled("ord-c");
    fx.handle(&cancel).await.expect("cancelled");
    fx.handle(&cancel).await.expect("again: a no-op");
    let after = fx.shipments_of("ord-c").await;
    assert_eq!(after[0].status, ShipmentStatus::Cancelled as i32);
    assert_eq!(
        after[1].status,
        ShipmentStatus::Shipped as i32,
        "what shipped stays shipped"
    );
    assert_eq!(fx.levels("ber", "a").await, (3, 3), "allocation returned once");
    assert_eq!(fx.levels("ham", "b").await, (2, 2));
    let mut types = Vec::new();
    for _ in 0..4 {
        types.push(next_shipment(&mut fx.shipments).await.0);
    }
    assert_eq!(
        types,
        [
            "shipment.created",
            "shipment.created",
            "shipment.shipped",
            "shipment.cancelled"
        ]
    );

    // Cancelled before its dispatch arrives (the two come on different topics).
    fx.handle(&cancelled("ord-early")).await.expect("cancel first");
    fx.handle(&dispatch(
        "ord-early",
        &[("a", 1)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("then the dispatch");
    assert!(fx.shipments_of("ord-early").await.is_empty(), "never routed");
    assert_eq!(fx.levels("ber", "a").await, (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_return_restocks_its_warehouse_once_and_tells_inventory() {
    let mut fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "tee", 1).await;
    let _stock_take = next(&mut fx.reconciliation).await;

    fx.handle(&returned("ord-r", "rma-1", "ber", &[("tee", 2)], false))
        .await
        .expect("a failed inspection restocks nothing");
    assert_eq!(fx.levels("ber", "tee").await, (1, 1));
    let passed = returned("ord-r", "rma-1", "ber", &[("tee", 2)], true);
    fx.handle(&passed).await.expect("restocked");
    fx.handle(&passed).await.expect("redelivered");
    fx.handle(&returned("ord-r", "rma-1", "ber", &[("tee", 2)], true))
        .await
        .expect("the same return under another event id");
    assert_eq!(fx.levels("ber", "tee").await, (3, 3), "restocked once");

    let event = next(&mut fx.reconciliation).await;
    assert_eq!(
        (event.event_type.as_str(), event.key.as_str()),
        ("reconciliation.warehouse_stock_changed", "tee")
    );
    let Some(reconciliation_event::Event::WarehouseStockChanged(changed)) =
        ReconciliationEvent::decode(event.payload.as_slice())
            .expect("decodes")
            .event
    else {
        panic!("a stock change");
    };
    assert_eq!(
        (
            changed.region.as_str(),
            changed.delta,
            changed.change_id.as_str(),
            changed.cause
        ),
        ("eu", 2, "return:rma-1:tee", StockChangeCause::Return as i32)
    );
    assert!(fx.reconciliation.try_recv().is_err(), "one change for one return");

    let unknown = fx
        .handle(&returned("ord-r", "rma-2", "nowhere", &[("tee", 1)], true))
        .await;
    assert!(
        matches!(unknown, Err(HandleError::Poison(ref reason)) if reason.contains("nowhere")),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinkage_of_allocated_units_reroutes_the_newest_shipment() {
    let fx = Fixture::start().await;
    fx.warehouse("ber", BERLIN).await;
    fx.warehouse("ham", HAMBURG).await;
    fx.stock("ber", "tee", 4).await;
    fx.stock("ber", "mug", 1).await;
    fx.stock("ham", "tee", 10).await;
    fx.stock("ham", "mug", 10).await;
    fx.handle(&dispatch(
        "ord-old",
        &[("tee", 2)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed");
    fx.handle(&dispatch(
        "ord-new",
        &[("tee", 2), ("mug", 1)],
        BERLIN,
        ShippingSpeed::Standard,
    ))
    .await
    .expect("routed");
    assert_eq!(fx.levels("ber", "tee").await, (4, 0));

    // One allocated unit is lost: the newest shipment gives its units back and is routed
    // again (Hamburg has everything).
    let loss = Shrinkage {
        id: "loss-1".into(),
        warehouse_id: "ber".into(),
        sku: "tee".into(),
        quantity: 1,
        reason: 1,
        note: "dropped a box".into(),
    };
    let (row, duplicate) = fx.running.engine.shrink(&loss).await.expect("shrink");
    assert!(!duplicate);
    assert_eq!(
        (row.physical, row.allocatable),
        (3, 1),
        "2 still allocated to the old order"
    );
    assert_eq!(
        fx.levels("ber", "mug").await,
        (1, 1),
        "the cancelled shipment's mug is free again"
    );
    let new = fx.shipments_of("ord-new").await;
    assert_eq!(new.len(), 2);
    assert_eq!(new[0].status, ShipmentStatus::Cancelled as i32);
    assert_eq!(shapes(&new[1..]), shape(&[("ham", &[("tee", 2), ("mug", 1)])]));
    assert_eq!(
        fx.shipments_of("ord-old").await[0].status,
        ShipmentStatus::Created as i32
    );

    let again = fx.running.engine.shrink(&loss).await.expect("repeat");
    assert_eq!(again, (row.clone(), true), "a repeat answers the first answer");
    let other = Shrinkage {
        quantity: 2,
        ..loss.clone()
    };
    assert!(
        fx.running.engine.shrink(&other).await.is_err(),
        "same id, other payload"
    );
    assert_eq!(fx.levels("ber", "tee").await, (3, 1));
}
