//! After checkout: cancel (void or refund, restock) and returns (received and refunded,
//! rejected, lost), each refunding at most once.

mod common;

use common::*;
use holdfast_proto::events::v1::{
    ShipmentCreated, ShipmentDelivered, ShipmentEvent, ShipmentLine, ShipmentShipped, shipment_event,
};
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CheckoutOutcome, InspectionResult, MarkReturnLostRequest, Order, OrderStatus,
    ReceiveReturnRequest, RequestReturnRequest, ReturnLine,
};
use holdfast_proto::payments::v1::LedgerEntryKind;
use tonic::Code;

async fn place(fx: &Fixture, key: &str, lines: &[(&str, i64)]) -> Order {
    let response = fx
        .orders
        .clone()
        .checkout(checkout(key, "olivia", lines, "pm_card_visa"))
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(response.outcome, CheckoutOutcome::Placed as i32, "{response:?}");
    response.order.expect("order")
}

/// Ships the whole order from one warehouse and delivers it, through shipment events.
async fn deliver(fx: &Fixture, order: &Order) {
    let engine = &fx.orders_running.engine;
    let shipment = format!("shp-{}", order.id);
    let events = [
        shipment_event::Event::Created(ShipmentCreated {
            shipment_id: shipment.clone(),
            order_id: order.id.clone(),
            warehouse_id: "w1".into(),
            lines: order
                .lines
                .iter()
                .map(|l| ShipmentLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
            shipments_in_order: 1,
            ..Default::default()
        }),
        shipment_event::Event::Shipped(ShipmentShipped {
            shipment_id: shipment.clone(),
            order_id: order.id.clone(),
            warehouse_id: "w1".into(),
            carrier: "ups".into(),
            tracking_number: "1Z999".into(),
            ..Default::default()
        }),
        shipment_event::Event::Delivered(ShipmentDelivered {
            shipment_id: shipment.clone(),
            order_id: order.id.clone(),
            warehouse_id: "w1".into(),
            ..Default::default()
        }),
    ];
    for (i, event) in events.into_iter().enumerate() {
        holdfast_orders::shipments::apply(
            engine,
            &ShipmentEvent {
                event_id: format!("{shipment}-{i}"),
                event: Some(event),
            },
        )
        .await
        .expect("apply shipment event");
    }
    let delivered = fx.order(&order.id).await;
    assert_eq!(delivered.status, OrderStatus::Delivered as i32);
    assert_eq!(delivered.suborders[0].tracking_number, "1Z999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_refunds_once_and_restocks_then_is_idempotent() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let order = place(&fx, "k-cancel", &[("mug", 3)]).await;
    assert_eq!(fx.level("mug").await.on_hand, 7);

    for _ in 0..2 {
        let cancelled = fx
            .orders
            .clone()
            .cancel_order(CancelOrderRequest {
                order_id: order.id.clone(),
                reason: "changed my mind".into(),
            })
            .await
            .expect("cancel")
            .into_inner()
            .order
            .expect("order");
        assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
        assert_eq!(
            cancelled.status_history.last().map(|c| c.reason.as_str()),
            Some("changed my mind")
        );
    }
    let refunds = fx.ledger(&order.id, LedgerEntryKind::Refund).await;
    assert_eq!(refunds.len(), 1, "refunded exactly once");
    assert_eq!(refunds[0].amount, Some(usd(3750)));
    let mug = fx.level("mug").await;
    assert_eq!((mug.on_hand, mug.available), (10, 10), "restocked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipped_orders_cannot_be_cancelled() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let order = place(&fx, "k-shipped", &[("mug", 1)]).await;
    deliver(&fx, &order).await;
    let error = fx
        .orders
        .clone()
        .cancel_order(CancelOrderRequest {
            order_id: order.id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("too late");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(fx.ledger(&order.id, LedgerEntryKind::Refund).await.is_empty());
    let missing = fx
        .orders
        .clone()
        .cancel_order(CancelOrderRequest {
            order_id: "ord_nope".into(),
            reason: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passed_return_refunds_the_returned_lines_once() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    fx.product("tea", 400, 10).await;
    let order = place(&fx, "k-return", &[("mug", 2), ("tea", 1)]).await;

    // Not delivered yet: no return.
    let early = fx
        .orders
        .clone()
        .request_return(RequestReturnRequest {
            order_id: order.id.clone(),
            lines: vec![],
            reason: "x".into(),
        })
        .await
        .expect_err("not delivered");
    assert_eq!(early.code(), Code::FailedPrecondition);

    deliver(&fx, &order).await;
    let lines = vec![ReturnLine {
        sku: "mug".into(),
        quantity: 1,
    }];
    let requested = fx
        .orders
        .clone()
        .request_return(RequestReturnRequest {
            order_id: order.id.clone(),
            lines: lines.clone(),
            reason: "chipped".into(),
        })
        .await
        .expect("request return")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(requested.status, OrderStatus::ReturnRequested as i32);
    let ret = requested.order_return.clone().expect("return");
    assert!(ret.return_id.starts_with("rma_"));
    assert_eq!(ret.lines[0].line_total, Some(usd(1250)));
    // Idempotent with the same lines; other lines or too many units refused.
    let again = fx
        .orders
        .clone()
        .request_return(RequestReturnRequest {
            order_id: order.id.clone(),
            lines: lines.clone(),
            reason: "chipped".into(),
        })
        .await
        .expect("repeat")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(
        again.order_return.map(|r| r.return_id),
        Some(ret.return_id.clone())
    );
    let too_many = fx
        .orders
        .clone()
        .request_return(RequestReturnRequest {
            order_id: order.id.clone(),
            lines: vec![ReturnLine {
                sku: "mug".into(),
                quantity: 3,
            }],
            reason: String::new(),
        })
        .await
        .expect_err("more than ordered");
    assert_eq!(too_many.code(), Code::FailedPrecondition);

    let receive = ReceiveReturnRequest {
        order_id: order.id.clone(),
        return_id: ret.return_id.clone(),
        inspection: InspectionResult::Passed as i32,
        inspection_note: "fine".into(),
        warehouse_id: "w1".into(),
    };
    for _ in 0..2 {
        let received = fx
            .orders
            .clone()
            .receive_return(receive.clone())
            .await
            .expect("receive")
            .into_inner()
            .order
            .expect("order");
        assert_eq!(received.status, OrderStatus::Refunded as i32);
        let ret = received.order_return.expect("return");
        assert_eq!(ret.refund_amount, Some(usd(1250)));
        assert!(!ret.refund_id.is_empty());
    }
    let refunds = fx.ledger(&order.id, LedgerEntryKind::Refund).await;
    assert_eq!(refunds.len(), 1, "one refund for one return");
    assert_eq!(refunds[0].amount, Some(usd(1250)));
    let other = fx
        .orders
        .clone()
        .receive_return(ReceiveReturnRequest {
            inspection: InspectionResult::Failed as i32,
            ..receive
        })
        .await
        .expect_err("inspected differently");
    assert_eq!(other.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_parcel_refunds_nothing_and_a_failed_inspection_is_rejected() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let order = place(&fx, "k-lost", &[("mug", 1)]).await;
    deliver(&fx, &order).await;
    let requested = fx
        .orders
        .clone()
        .request_return(RequestReturnRequest {
            order_id: order.id.clone(),
            lines: vec![],
            reason: "wrong colour".into(),
        })
        .await
        .expect("request")
        .into_inner()
        .order
        .expect("order");
    let return_id = requested.order_return.expect("return").return_id;
    for _ in 0..2 {
        let lost = fx
            .orders
            .clone()
            .mark_return_lost(MarkReturnLostRequest {
                order_id: order.id.clone(),
                reason: "carrier lost it".into(),
            })
            .await
            .expect("lost")
            .into_inner()
            .order
            .expect("order");
        assert_eq!(lost.status, OrderStatus::ReturnLost as i32);
    }
    // The parcel turns up late, damaged.
    let rejected = fx
        .orders
        .clone()
        .receive_return(ReceiveReturnRequest {
            order_id: order.id.clone(),
            return_id: return_id.clone(),
            inspection: InspectionResult::Failed as i32,
            inspection_note: "smashed".into(),
            warehouse_id: "w1".into(),
        })
        .await
        .expect("receive")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(rejected.status, OrderStatus::ReturnRejected as i32);
    assert!(fx.ledger(&order.id, LedgerEntryKind::Refund).await.is_empty());
    let wrong_id = fx
        .orders
        .clone()
        .receive_return(ReceiveReturnRequest {
            order_id: order.id.clone(),
            return_id: "rma_other".into(),
            inspection: InspectionResult::Failed as i32,
            inspection_note: String::new(),
            warehouse_id: String::new(),
        })
        .await
        .expect_err("wrong return id");
    assert_eq!(wrong_id.code(), Code::FailedPrecondition);
    let lost_again = fx
        .orders
        .clone()
        .mark_return_lost(MarkReturnLostRequest {
            order_id: order.id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("already rejected");
    assert_eq!(lost_again.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn return_quantities_summing_past_i64_are_invalid_argument() {
    let fx = Fixture::start().await;
    fx.product("mug", 1250, 10).await;
    let order = place(&fx, "k-overflow", &[("mug", 1)]).await;
    deliver(&fx, &order).await;
    let error = fx
        .orders
        .clone()
        .request_return(RequestReturnRequest {
            order_id: order.id.clone(),
            lines: vec![
                ReturnLine {
                    sku: "mug".into(),
                    quantity: 1,
                },
                ReturnLine {
                    sku: "mug".into(),
                    quantity: i64::MAX,
                },
            ],
            reason: String::new(),
        })
        .await
        .expect_err("overflowing quantities");
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(fx.order(&order.id).await.status, OrderStatus::Delivered as i32);
}
