//! The whole mesh end to end: what a mobile backend (grpc-web) and an internal team (gRPC)
//! see from the same server.

use holdfast_e2e::{DevMesh, grpc_web_call};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{
    GetAvailabilityRequest, ReservationStatus, ReserveLine, ReserveRequest, ReserveResponse, SetStockRequest,
};
use prost::Message;

fn reserve(rid: &str, sku: &str, quantity: i64) -> ReserveRequest {
    ReserveRequest {
        reservation_id: rid.into(),
        lines: vec![ReserveLine {
            sku: sku.into(),
            quantity,
        }],
        ttl_seconds: 60,
    }
}

#[tokio::test]
async fn grpc_web_client_reserves_what_a_grpc_client_stocked() {
    let mesh = DevMesh::start().await.expect("mesh");
    let mut grpc = InventoryServiceClient::new(mesh.channel().await.expect("connect"));
    grpc.set_stock(SetStockRequest {
        sku: "MUG".into(),
        on_hand: 2,
        buckets: 0,
    })
    .await
    .expect("stock");

    let path = "/holdfast.inventory.v1.InventoryService/Reserve";
    let won = grpc_web_call(
        mesh.server.addr(),
        path,
        &reserve("web-1", "MUG", 2).encode_to_vec(),
        Some(&mesh.operator_token(path)),
    )
    .await
    .expect("grpc-web call");
    assert_eq!(won.trailer("grpc-status"), Some("0"), "{won:?}");
    let answer = ReserveResponse::decode(won.message.as_slice()).expect("decodes");
    assert_eq!(answer.status, ReservationStatus::Reserved as i32);

    let lost = grpc_web_call(
        mesh.server.addr(),
        path,
        &reserve("web-2", "MUG", 1).encode_to_vec(),
        Some(&mesh.operator_token(path)),
    )
    .await
    .expect("grpc-web call");
    let answer = ReserveResponse::decode(lost.message.as_slice()).expect("decodes");
    assert_eq!(
        answer.status,
        ReservationStatus::InsufficientStock as i32,
        "out of stock is an answer"
    );
    assert_eq!(answer.shortages[0].available, 0);

    // The gRPC side sees the grpc-web hold.
    let level = grpc
        .get_availability(GetAvailabilityRequest {
            skus: vec!["MUG".into()],
        })
        .await
        .expect("availability")
        .into_inner()
        .levels
        .remove(0);
    assert_eq!((level.reserved, level.available), (2, 0));
}

#[tokio::test]
async fn grpc_web_client_gets_invalid_argument_with_bad_request_details() {
    let mesh = DevMesh::start().await.expect("mesh");
    let bad = grpc_web_call(
        mesh.server.addr(),
        "/holdfast.inventory.v1.InventoryService/Reserve",
        &reserve("", "has space", 0).encode_to_vec(),
        Some(&mesh.operator_token("/holdfast.inventory.v1.InventoryService/Reserve")),
    )
    .await
    .expect("grpc-web call");
    assert_eq!(bad.trailer("grpc-status"), Some("3"), "INVALID_ARGUMENT: {bad:?}");
    let details = bad
        .trailer("grpc-status-details-bin")
        .expect("rich details travel as a trailer");
    let status = tonic::Status::with_details(
        tonic::Code::InvalidArgument,
        "",
        tonic::codegen::Bytes::from(decode_base64(details)),
    );
    use tonic_types::StatusExt;
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["reservation_id", "lines[0].sku", "lines[0].quantity"]);
}

/// Standard base64 without padding, as gRPC sends `-bin` trailers.
fn decode_base64(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = alphabet.iter().position(|a| *a == byte).expect("base64") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[tokio::test]
async fn a_shopper_fills_a_cart_over_grpc_web_at_catalog_prices() {
    use holdfast_proto::cart::v1::{
        AddItemRequest, AddItemResponse, CartOwner, ItemOutcome, cart_owner::Owner,
    };
    use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
    use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
    use holdfast_proto::common::v1::Money;

    let mesh = DevMesh::start().await.expect("mesh");
    let channel = mesh.channel().await.expect("connect");
    CatalogServiceClient::new(channel.clone())
        .upsert_product(UpsertProductRequest {
            product: Some(Product {
                sku: "TEE".into(),
                title: "T-shirt".into(),
                price: Some(Money {
                    amount_minor: 1999,
                    currency: "EUR".into(),
                }),
                category: "apparel".into(),
                active: true,
                ..Default::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("product");
    InventoryServiceClient::new(channel)
        .set_stock(SetStockRequest {
            sku: "TEE".into(),
            on_hand: 3,
            buckets: 0,
        })
        .await
        .expect("stock");

    let add = |quantity| AddItemRequest {
        owner: Some(CartOwner {
            owner: Some(Owner::SessionId("phone-session-1".into())),
        }),
        sku: "TEE".into(),
        quantity,
        expected_version: 0,
    };
    let path = "/holdfast.cart.v1.CartService/AddItem";
    let reply = grpc_web_call(
        mesh.server.addr(),
        path,
        &add(2).encode_to_vec(),
        Some(&mesh.operator_token(path)),
    )
    .await
    .expect("add");
    assert_eq!(reply.trailer("grpc-status"), Some("0"), "{reply:?}");
    let added = AddItemResponse::decode(reply.message.as_slice()).expect("decodes");
    assert_eq!(added.outcome, ItemOutcome::Applied as i32);
    let cart = added.cart.expect("cart");
    let line = &cart.lines[0];
    assert_eq!(
        (
            line.quantity,
            line.snapshot_unit_price.as_ref().map(|m| m.amount_minor)
        ),
        (2, Some(1999))
    );
    assert_eq!(
        cart.totals[0].amount_minor, 3998,
        "the price came from the catalog, not the client"
    );

    // Cart asked inventory: 2 more would exceed the 3 in stock.
    let reply = grpc_web_call(
        mesh.server.addr(),
        path,
        &add(2).encode_to_vec(),
        Some(&mesh.operator_token(path)),
    )
    .await
    .expect("add");
    let refused = AddItemResponse::decode(reply.message.as_slice()).expect("decodes");
    assert_eq!(refused.outcome, ItemOutcome::OutOfStock as i32);
    assert_eq!(refused.available_quantity, 3);
}
