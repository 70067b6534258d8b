//! WarehouseService over real gRPC on 127.0.0.1:0: field validation with BadRequest
//! details, not-found and precondition answers, idempotent receipts and shrinkage, and the
//! reconciliation events they announce.

mod common;

use common::*;
use holdfast_platform::{GrpcServer, ServerOptions};
use holdfast_proto::common::v1::{GeoPoint, PageRequest};
use holdfast_proto::events::v1::{ReconciliationEvent, StockChangeCause, reconciliation_event};
use holdfast_proto::warehouse::v1::warehouse_service_client::WarehouseServiceClient;
use holdfast_proto::warehouse::v1::{
    GetWarehouseStockRequest, ListShipmentsRequest, ListWarehousesRequest, MarkDeliveredRequest,
    MarkShippedRequest, ReceiveStockRequest, RecordShrinkageRequest, SetWarehouseStockRequest,
    ShipmentStatus, ShippingOption, ShippingSpeed, ShrinkageReason, StartPickingRequest, StockReceiptLine,
    UpsertWarehouseRequest, Warehouse, list_shipments_request,
};
use holdfast_testkit::SpawnedServer;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

struct Api {
    fx: Fixture,
    client: WarehouseServiceClient<Channel>,
    _server: SpawnedServer,
}

async fn api() -> Api {
    let fx = Fixture::start().await;
    let mut grpc = GrpcServer::new(ServerOptions::default());
    grpc.add_service("warehouse", fx.running.service.clone());
    let server = SpawnedServer::start(grpc).await.expect("server");
    let client = WarehouseServiceClient::new(server.channel().await.expect("connect"));
    Api {
        fx,
        client,
        _server: server,
    }
}

fn warehouse(id: &str, region: &str, active: bool) -> Warehouse {
    Warehouse {
        id: id.into(),
        name: format!("{id} centre"),
        region: region.into(),
        location: Some(GeoPoint {
            latitude: BERLIN.0,
            longitude: BERLIN.1,
        }),
        shipping_options: vec![ShippingOption {
            speed: ShippingSpeed::Standard as i32,
            max_days: 3,
            max_distance_km: 0,
        }],
        active,
        ..Warehouse::default()
    }
}

fn receipt(id: &str, warehouse_id: &str, lines: &[(&str, i64)]) -> ReceiveStockRequest {
    ReceiveStockRequest {
        receipt_id: id.into(),
        warehouse_id: warehouse_id.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| StockReceiptLine {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
    }
}

fn shrinkage(id: &str, quantity: i64) -> RecordShrinkageRequest {
    RecordShrinkageRequest {
        shrinkage_id: id.into(),
        warehouse_id: "ber".into(),
        sku: "tee".into(),
        quantity,
        reason: ShrinkageReason::Damaged as i32,
        note: "forklift".into(),
    }
}

/// The fields a status's BadRequest names.
fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

fn precondition_kind(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    status
        .get_details_precondition_failure()
        .expect("PreconditionFailure details")
        .violations[0]
        .r#type
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouses_are_upserted_and_listed_by_region_in_pages() {
    let Api {
        mut client,
        _server,
        fx: _fx,
    } = api().await;
    for (id, region, active) in [
        ("b", "eu", true),
        ("a", "eu", true),
        ("c", "eu", false),
        ("d", "us", true),
    ] {
        let response = client
            .upsert_warehouse(UpsertWarehouseRequest {
                warehouse: Some(warehouse(id, region, active)),
            })
            .await
            .expect("upsert")
            .into_inner();
        assert!(response.created);
        let stored = response.warehouse.expect("warehouse");
        assert!(stored.created_at_unix_ms > 0);
        assert_eq!(stored.shipping_options.len(), 1);
    }
    let again = client
        .upsert_warehouse(UpsertWarehouseRequest {
            warehouse: Some(warehouse("b", "eu", true)),
        })
        .await
        .expect("upsert again")
        .into_inner();
    assert!(!again.created, "idempotent: a second upsert replaces");

    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_warehouses(ListWarehousesRequest {
                region: "eu".into(),
                include_inactive: false,
                page: Some(PageRequest {
                    page_size: 1,
                    page_token: token.clone(),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        listed.extend(page.warehouses.into_iter().map(|w| w.id));
        token = page.page.expect("page").next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, ["a", "b"], "active ones of eu, by id, a page at a time");
    let all = client
        .list_warehouses(ListWarehousesRequest {
            include_inactive: true,
            ..ListWarehousesRequest::default()
        })
        .await
        .expect("list all")
        .into_inner();
    assert_eq!(all.warehouses.len(), 4);

    let bad_token = client
        .list_warehouses(ListWarehousesRequest {
            page: Some(PageRequest {
                page_size: 5,
                page_token: "not-a-cursor".into(),
            }),
            ..ListWarehousesRequest::default()
        })
        .await
        .expect_err("garbage token");
    assert_eq!(bad_fields(&bad_token), ["page.page_token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_bad_fields_with_bad_request_details() {
    let Api {
        mut client,
        _server,
        fx: _fx,
    } = api().await;
    let mut bad_warehouse = warehouse("Bad Id", "EU", true);
    bad_warehouse.location = Some(GeoPoint {
        latitude: 95.0,
        longitude: 0.0,
    });
    bad_warehouse.shipping_options.push(ShippingOption {
        speed: ShippingSpeed::Standard as i32,
        max_days: 61,
        max_distance_km: 0,
    });
    let status = client
        .upsert_warehouse(UpsertWarehouseRequest {
            warehouse: Some(bad_warehouse),
        })
        .await
        .expect_err("bad warehouse");
    assert_eq!(
        bad_fields(&status),
        [
            "warehouse.id",
            "warehouse.region",
            "warehouse.location.latitude",
            "warehouse.shipping_options[1].speed",
            "warehouse.shipping_options[1].max_days",
        ]
    );
    let status = client
        .upsert_warehouse(UpsertWarehouseRequest { warehouse: None })
        .await
        .expect_err("no warehouse");
    assert_eq!(bad_fields(&status), ["warehouse"]);

    let status = client
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: String::new(),
            sku: "a b".into(),
            physical: -1,
        })
        .await
        .expect_err("bad stock take");
    assert_eq!(bad_fields(&status), ["warehouse_id", "sku", "physical"]);

    let mut too_many = receipt("r", "ber", &[]);
    too_many.lines = (0..101)
        .map(|i| StockReceiptLine {
            sku: format!("s{i}"),
            quantity: 1,
        })
        .collect();
    let status = client.receive_stock(too_many).await.expect_err("101 lines");
    assert_eq!(bad_fields(&status), ["lines"]);
    let status = client
        .receive_stock(receipt("", "ber", &[("a", 0), ("", 1_000_001)]))
        .await
        .expect_err("bad receipt");
    assert_eq!(
        bad_fields(&status),
        [
            "receipt_id",
            "lines[0].quantity",
            "lines[1].sku",
            "lines[1].quantity"
        ]
    );

    let status = client
        .record_shrinkage(RecordShrinkageRequest {
            reason: ShrinkageReason::Unspecified as i32,
            note: "n".repeat(1001),
            ..shrinkage("s", 0)
        })
        .await
        .expect_err("bad shrinkage");
    assert_eq!(bad_fields(&status), ["quantity", "reason", "note"]);

    let status = client
        .get_warehouse_stock(GetWarehouseStockRequest {
            skus: vec![],
            warehouse_id: "UPPER".into(),
        })
        .await
        .expect_err("bad read");
    assert_eq!(bad_fields(&status), ["skus", "warehouse_id"]);

    let status = client
        .list_shipments(ListShipmentsRequest::default())
        .await
        .expect_err("no filter");
    assert_eq!(bad_fields(&status), ["filter"]);
    let status = client
        .list_shipments(ListShipmentsRequest {
            filter: Some(list_shipments_request::Filter::OrderId("o".into())),
            statuses: vec![ShipmentStatus::Shipped as i32, 99],
            page: Some(PageRequest {
                page_size: 600,
                page_token: "x".into(),
            }),
        })
        .await
        .expect_err("bad listing");
    assert_eq!(
        bad_fields(&status),
        ["statuses[1]", "page.page_size", "statuses", "page.page_token"]
    );

    let status = client
        .start_picking(StartPickingRequest {
            shipment_id: String::new(),
        })
        .await
        .expect_err("no id");
    assert_eq!(bad_fields(&status), ["shipment_id"]);
    let status = client
        .mark_shipped(MarkShippedRequest {
            shipment_id: "s".into(),
            carrier: String::new(),
            tracking_number: "t".repeat(129),
        })
        .await
        .expect_err("bad shipping");
    assert_eq!(bad_fields(&status), ["carrier", "tracking_number"]);
    let status = client
        .mark_delivered(MarkDeliveredRequest {
            shipment_id: "s".into(),
            delivered_at_unix_ms: i64::MAX,
        })
        .await
        .expect_err("future delivery");
    assert_eq!(bad_fields(&status), ["delivered_at_unix_ms"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_booked_once_per_receipt_id_and_flow_to_inventory_once() {
    let Api {
        mut fx,
        mut client,
        _server,
    } = api().await;
    fx.warehouse("ber", BERLIN).await;

    let first = client
        .receive_stock(receipt("DN-1", "ber", &[("tee", 3), ("mug", 2), ("tee", 1)]))
        .await
        .expect("receive")
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(
        first
            .stocks
            .iter()
            .map(|s| (s.sku.as_str(), s.physical, s.allocatable))
            .collect::<Vec<_>>(),
        [("tee", 4, 4), ("mug", 2, 2)],
        "lines of one SKU summed, rows in order of first appearance"
    );
    let repeat = client
        .receive_stock(receipt("DN-1", "ber", &[("tee", 3), ("mug", 2), ("tee", 1)]))
        .await
        .expect("repeat")
        .into_inner();
    assert!(repeat.duplicate);
    assert_eq!(repeat.stocks, first.stocks, "the first answer, nothing added");
    let reused = client
        .receive_stock(receipt("DN-1", "ber", &[("tee", 5)]))
        .await
        .expect_err("other payload");
    assert_eq!(precondition_kind(&reused), "RECEIPT_ID_REUSED");
    let unknown = client
        .receive_stock(receipt("DN-2", "nowhere", &[("tee", 5)]))
        .await
        .expect_err("unknown warehouse");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(fx.levels("ber", "tee").await, (4, 4));

    let mut changes = Vec::new();
    for _ in 0..2 {
        let event = next(&mut fx.reconciliation).await;
        let Some(reconciliation_event::Event::WarehouseStockChanged(changed)) =
            ReconciliationEvent::decode(event.payload.as_slice())
                .expect("decodes")
                .event
        else {
            panic!("a stock change");
        };
        assert_eq!(event.key, changed.sku, "keyed by SKU");
        assert_eq!(changed.cause, StockChangeCause::Receipt as i32);
        changes.push((changed.sku, changed.delta, changed.change_id));
    }
    assert_eq!(
        changes,
        [
            ("tee".to_string(), 4, "receipt:DN-1:tee".to_string()),
            ("mug".to_string(), 2, "receipt:DN-1:mug".to_string())
        ]
    );
    assert!(
        fx.reconciliation.try_recv().is_err(),
        "a repeat announces nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinkage_is_booked_once_and_never_exceeds_the_shelf() {
    let Api {
        mut fx,
        mut client,
        _server,
    } = api().await;
    fx.warehouse("ber", BERLIN).await;
    fx.stock("ber", "tee", 5).await;
    let _take = next(&mut fx.reconciliation).await;

    let first = client
        .record_shrinkage(shrinkage("S-1", 2))
        .await
        .expect("shrink")
        .into_inner();
    assert!(!first.duplicate);
    let row = first.stock.clone().expect("row");
    assert_eq!((row.physical, row.allocatable), (3, 3));
    let repeat = client
        .record_shrinkage(shrinkage("S-1", 2))
        .await
        .expect("repeat")
        .into_inner();
    assert!(repeat.duplicate);
    assert_eq!(repeat.stock, first.stock);
    let reused = client
        .record_shrinkage(shrinkage("S-1", 1))
        .await
        .expect_err("other payload");
    assert_eq!(precondition_kind(&reused), "SHRINKAGE_ID_REUSED");
    let too_much = client
        .record_shrinkage(shrinkage("S-2", 4))
        .await
        .expect_err("more than physical");
    assert_eq!(precondition_kind(&too_much), "EXCEEDS_PHYSICAL");
    assert_eq!(fx.levels("ber", "tee").await, (3, 3));

    let event = next(&mut fx.reconciliation).await;
    let Some(reconciliation_event::Event::WarehouseStockChanged(changed)) =
        ReconciliationEvent::decode(event.payload.as_slice())
            .expect("decodes")
            .event
    else {
        panic!("a stock change");
    };
    assert_eq!(
        (changed.delta, changed.change_id.as_str(), changed.cause),
        (-2, "shrinkage:S-1:tee", StockChangeCause::Shrinkage as i32)
    );
    assert!(fx.reconciliation.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_takes_keep_allocated_units_and_shipments_refuse_wrong_moves() {
    let Api {
        fx,
        mut client,
        _server,
    } = api().await;
    fx.warehouse("ber", BERLIN).await;
    let take = client
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "ber".into(),
            sku: "tee".into(),
            physical: 5,
        })
        .await
        .expect("take")
        .into_inner();
    assert_eq!(take.delta, 5);
    let again = client
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "ber".into(),
            sku: "tee".into(),
            physical: 5,
        })
        .await
        .expect("same count")
        .into_inner();
    assert_eq!(
        (again.delta, again.stock),
        (0, take.stock),
        "idempotent by nature"
    );
    let unknown = client
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "nowhere".into(),
            sku: "tee".into(),
            physical: 5,
        })
        .await
        .expect_err("unknown warehouse");
    assert_eq!(unknown.code(), Code::NotFound);

    fx.handle(&dispatch("ord-1", &[("tee", 4)], BERLIN, ShippingSpeed::Standard))
        .await
        .expect("routed");
    let below = client
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "ber".into(),
            sku: "tee".into(),
            physical: 3,
        })
        .await
        .expect_err("below allocated");
    assert_eq!(precondition_kind(&below), "BELOW_ALLOCATED");
    let recount = client
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "ber".into(),
            sku: "tee".into(),
            physical: 7,
        })
        .await
        .expect("recount")
        .into_inner();
    let row = recount.stock.expect("row");
    assert_eq!(
        (recount.delta, row.physical, row.allocatable),
        (2, 7, 3),
        "4 stay allocated"
    );

    let shipments = client
        .list_shipments(ListShipmentsRequest {
            filter: Some(list_shipments_request::Filter::OrderId("ord-1".into())),
            ..ListShipmentsRequest::default()
        })
        .await
        .expect("by order")
        .into_inner()
        .shipments;
    assert_eq!(shipments.len(), 1);
    let shipment = &shipments[0];
    assert_eq!(shipment.status, ShipmentStatus::Created as i32);
    assert_eq!(
        shipment
            .ship_to
            .as_ref()
            .and_then(|a| a.location.as_ref())
            .map(|l| l.latitude),
        Some(BERLIN.0),
        "the ship-to address comes back whole"
    );
    let open = client
        .list_shipments(ListShipmentsRequest {
            filter: Some(list_shipments_request::Filter::WarehouseId("ber".into())),
            statuses: vec![ShipmentStatus::Created as i32],
            page: None,
        })
        .await
        .expect("by warehouse")
        .into_inner()
        .shipments;
    assert_eq!(open, shipments);

    let early = client
        .mark_delivered(MarkDeliveredRequest {
            shipment_id: shipment.id.clone(),
            delivered_at_unix_ms: 0,
        })
        .await
        .expect_err("not shipped yet");
    assert_eq!(precondition_kind(&early), "SHIPMENT_NOT_PICKED");
    let missing = client
        .start_picking(StartPickingRequest {
            shipment_id: "shp_missing".into(),
        })
        .await
        .expect_err("unknown shipment");
    assert_eq!(missing.code(), Code::NotFound);
    let shipped = client
        .mark_shipped(MarkShippedRequest {
            shipment_id: shipment.id.clone(),
            carrier: "dhl".into(),
            tracking_number: "JJD1".into(),
        })
        .await
        .expect("ship")
        .into_inner()
        .shipment
        .expect("shipment");
    let before_shipping = client
        .mark_delivered(MarkDeliveredRequest {
            shipment_id: shipment.id.clone(),
            delivered_at_unix_ms: shipped.shipped_at_unix_ms - 1,
        })
        .await
        .expect_err("delivered before it shipped");
    assert_eq!(bad_fields(&before_shipping), ["delivered_at_unix_ms"]);
    let delivered = client
        .mark_delivered(MarkDeliveredRequest {
            shipment_id: shipment.id.clone(),
            delivered_at_unix_ms: shipped.shipped_at_unix_ms,
        })
        .await
        .expect("deliver")
        .into_inner()
        .shipment
        .expect("shipment");
    assert_eq!(delivered.delivered_at_unix_ms, shipped.shipped_at_unix_ms);
    let stock = client
        .get_warehouse_stock(GetWarehouseStockRequest {
            skus: vec!["tee".into(), "never".into()],
            warehouse_id: String::new(),
        })
        .await
        .expect("read")
        .into_inner()
        .stocks;
    assert_eq!(
        stock
            .iter()
            .map(|s| (s.sku.as_str(), s.warehouse_id.as_str(), s.physical, s.allocatable))
            .collect::<Vec<_>>(),
        [("tee", "ber", 3, 3)],
        "shipped units left; a SKU never held is absent"
    );
}
