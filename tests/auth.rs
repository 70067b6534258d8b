//! Who may touch what, on the whole mesh as `holdfast dev` runs it (auth on, the dev key):
//! customers act only on their own carts, orders and returns; session carts only by the
//! token bound to the session; admin and payments RPCs only with their roles; bad tokens
//! are UNAUTHENTICATED. Over gRPC and grpc-web alike.

use std::time::{Duration, Instant};

use holdfast_e2e::{DevMesh, grpc_web_call};
use holdfast_platform::auth::{Claims, Role, Rule};
use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::cart::v1::{AddItemRequest, CartOwner, GetCartRequest, MergeCartsRequest, cart_owner};
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, SetStockRequest};
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CheckoutLine, CheckoutLines, CheckoutOutcome, CheckoutRequest, GetOrderRequest,
    ListOrdersRequest, checkout_request,
};
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::payments::v1::{GetPaymentRequest, get_payment_request};
use holdfast_proto::warehouse::v1::warehouse_service_client::WarehouseServiceClient;
use holdfast_proto::warehouse::v1::{
    SetWarehouseStockRequest, ShippingOption, ShippingSpeed, UpsertWarehouseRequest, Warehouse,
};
use prost::Message as _;
use tonic::Code;

const SKU: &str = "AUTH-MUG";

fn berlin() -> Option<GeoPoint> {
    Some(GeoPoint {
        latitude: 52.520,
        longitude: 13.405,
    })
}

fn customer_owner(id: &str) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(cart_owner::Owner::CustomerId(id.into())),
    })
}

fn session_owner(id: &str) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(cart_owner::Owner::SessionId(id.into())),
    })
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// A sellable product in stock, as an operator sets it up.
async fn seed(mesh: &DevMesh) {
    let channel = mesh.channel().await.expect("connect");
    CatalogServiceClient::new(channel.clone())
        .upsert_product(UpsertProductRequest {
            product: Some(Product {
                sku: SKU.into(),
                title: "Auth mug".into(),
                price: Some(Money {
                    amount_minor: 900,
                    currency: "EUR".into(),
                }),
                category: "e2e".into(),
                active: true,
                ..Product::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("product");
    let mut warehouse = WarehouseServiceClient::new(channel.clone());
    warehouse
        .upsert_warehouse(UpsertWarehouseRequest {
            warehouse: Some(Warehouse {
                id: "auth-ber".into(),
                name: "Berlin".into(),
                region: "local".into(),
                location: berlin(),
                shipping_options: vec![ShippingOption {
                    speed: ShippingSpeed::Standard as i32,
                    max_days: 3,
                    max_distance_km: 0,
                }],
                active: true,
                ..Warehouse::default()
            }),
        })
        .await
        .expect("warehouse");
    warehouse
        .set_warehouse_stock(SetWarehouseStockRequest {
            warehouse_id: "auth-ber".into(),
            sku: SKU.into(),
            physical: 100,
        })
        .await
        .expect("stock");
    let mut inventory = InventoryServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let levels = inventory
            .get_availability(GetAvailabilityRequest {
                skus: vec![SKU.into()],
            })
            .await
            .expect("availability")
            .into_inner()
            .levels;
        if levels.first().is_some_and(|l| l.available == 100) {
            break;
        }
        assert!(Instant::now() < deadline, "stock never became available");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn checkout(key: &str, customer: &str, source: checkout_request::Source) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: key.into(),
        customer_id: customer.into(),
        source: Some(source),
        shipping_address: Some(Address {
            name: "Ada Lovelace".into(),
            line1: "Unter den Linden 1".into(),
            city: "Berlin".into(),
            postal_code: "10117".into(),
            country: "DE".into(),
            location: berlin(),
            ..Address::default()
        }),
        payment_method: "pm_card_visa".into(),
        shipping_speed: ShippingSpeed::Standard as i32,
        ..CheckoutRequest::default()
    }
}

fn lines() -> checkout_request::Source {
    checkout_request::Source::Lines(CheckoutLines {
        lines: vec![CheckoutLine {
            sku: SKU.into(),
            quantity: 1,
            expected_unit_price: None,
        }],
    })
}

#[tokio::test]
async fn a_customer_cannot_read_or_change_anothers_cart_orders_or_payments() {
    customers_act_only_on_their_own(&[]).await;
}

// The same with the services calling each other over loopback gRPC instead of in-process.
#[tokio::test]
async fn a_customer_cannot_read_or_change_anothers_cart_orders_or_payments_with_peers_over_grpc() {
    customers_act_only_on_their_own(&["--peers-over-grpc"]).await;
}

async fn customers_act_only_on_their_own(flags: &[&str]) {
    let mesh = DevMesh::start_with(flags).await.expect("mesh");
    seed(&mesh).await;
    let tokens = mesh.tokens();
    let (alice, bob) = (tokens.customer("alice"), tokens.customer("bob"));
    let as_alice = mesh.channel_as(&alice).await.expect("connect");
    let as_bob = mesh.channel_as(&bob).await.expect("connect");

    // Carts: Bob's own works; Alice reading or adding to Bob's is refused.
    let mut bob_cart = CartServiceClient::new(as_bob.clone());
    bob_cart
        .add_item(AddItemRequest {
            owner: customer_owner("bob"),
            sku: SKU.into(),
            quantity: 1,
            expected_version: 0,
        })
        .await
        .expect("bob adds to his cart");
    let mut alice_cart = CartServiceClient::new(as_alice.clone());
    let read = alice_cart
        .get_cart(GetCartRequest {
            owner: customer_owner("bob"),
        })
        .await;
    assert_eq!(code(read), Code::PermissionDenied);
    let change = alice_cart
        .add_item(AddItemRequest {
            owner: customer_owner("bob"),
            sku: SKU.into(),
            quantity: 5,
            expected_version: 0,
        })
        .await;
    assert_eq!(code(change), Code::PermissionDenied);
    let bobs = bob_cart
        .get_cart(GetCartRequest {
            owner: customer_owner("bob"),
        })
        .await
        .expect("bob reads his cart")
        .into_inner()
        .cart
        .expect("cart");
    assert_eq!(bobs.lines[0].quantity, 1, "Alice's refused add changed nothing");

    // Orders: Bob places one; Alice can neither list, read nor cancel it, nor order as Bob.
    let mut bob_orders = OrderServiceClient::new(as_bob.clone());
    let placed = bob_orders
        .checkout(checkout("auth-bob-1", "bob", lines()))
        .await
        .expect("bob checks out")
        .into_inner();
    assert_eq!(placed.outcome, CheckoutOutcome::Placed as i32, "{placed:?}");
    let order_id = placed.order.expect("order").id;
    let mut alice_orders = OrderServiceClient::new(as_alice.clone());
    let listed = alice_orders
        .list_orders(ListOrdersRequest {
            customer_id: "bob".into(),
            ..ListOrdersRequest::default()
        })
        .await;
    assert_eq!(code(listed), Code::PermissionDenied);
    let read = alice_orders
        .get_order(GetOrderRequest {
            order_id: order_id.clone(),
        })
        .await;
    assert_eq!(code(read), Code::PermissionDenied);
    let cancel = alice_orders
        .cancel_order(CancelOrderRequest {
            order_id: order_id.clone(),
            reason: "not mine".into(),
        })
        .await;
    assert_eq!(code(cancel), Code::PermissionDenied);
    let as_bob_checkout = alice_orders
        .checkout(checkout("auth-alice-1", "bob", lines()))
        .await;
    assert_eq!(code(as_bob_checkout), Code::PermissionDenied);
    let order = bob_orders
        .get_order(GetOrderRequest { order_id })
        .await
        .expect("bob reads his order")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(order.customer_id, "bob");

    // Payments: a customer's token reads none, Bob's own included; a service's does.
    for token in [&alice, &bob] {
        let mut payments = PaymentsServiceClient::new(mesh.channel_as(token).await.expect("connect"));
        let read = payments
            .get_payment(GetPaymentRequest {
                lookup: Some(get_payment_request::Lookup::PaymentId(order.payment_id.clone())),
            })
            .await;
        assert_eq!(code(read), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn a_session_cart_belongs_to_the_token_bound_to_the_session() {
    let mesh = DevMesh::start().await.expect("mesh");
    seed(&mesh).await;
    let tokens = mesh.tokens();
    let guest = tokens.mint(Role::Customer, None, Some("sess-1"));
    let other_guest = tokens.mint(Role::Customer, None, Some("sess-2"));
    let alice = tokens.customer("alice");
    let alice_signed_in_from_sess_1 = tokens.mint(Role::Customer, Some("alice"), Some("sess-1"));

    let mut cart = CartServiceClient::new(mesh.channel_as(&guest).await.expect("connect"));
    cart.add_item(AddItemRequest {
        owner: session_owner("sess-1"),
        sku: SKU.into(),
        quantity: 2,
        expected_version: 0,
    })
    .await
    .expect("the guest fills its session cart");

    for token in [&other_guest, &alice] {
        let channel = mesh.channel_as(token).await.expect("connect");
        let read = CartServiceClient::new(channel.clone())
            .get_cart(GetCartRequest {
                owner: session_owner("sess-1"),
            })
            .await;
        assert_eq!(
            code(read),
            Code::PermissionDenied,
            "reading another's session cart"
        );
        let source = checkout_request::Source::Cart(session_owner("sess-1").expect("owner"));
        let customer = if token == &alice { "alice" } else { "sess-2" };
        let checkout = OrderServiceClient::new(channel)
            .checkout(checkout("auth-steal-sess-1", customer, source))
            .await;
        assert_eq!(
            code(checkout),
            Code::PermissionDenied,
            "checking out another's session cart"
        );
    }

    // MergeCarts needs the customer and the session both in the token.
    let merge = MergeCartsRequest {
        session_id: "sess-1".into(),
        customer_id: "alice".into(),
    };
    for token in [&alice, &guest] {
        let refused = CartServiceClient::new(mesh.channel_as(token).await.expect("connect"))
            .merge_carts(merge.clone())
            .await;
        assert_eq!(code(refused), Code::PermissionDenied);
    }
    let merged = CartServiceClient::new(
        mesh.channel_as(&alice_signed_in_from_sess_1)
            .await
            .expect("connect"),
    )
    .merge_carts(merge)
    .await
    .expect("customer + session merge")
    .into_inner()
    .cart
    .expect("cart");
    assert_eq!(merged.lines[0].quantity, 2);

    // The guest checks out its own session cart (as itself: the session id).
    let source = checkout_request::Source::Cart(session_owner("sess-1").expect("owner"));
    let own = OrderServiceClient::new(mesh.channel_as(&guest).await.expect("connect"))
        .checkout(checkout("auth-own-sess-1", "sess-1", source))
        .await;
    assert_ne!(
        code(own),
        Code::PermissionDenied,
        "its own session cart is the guest's to check out"
    );
}

/// Every RPC of every holdfast service, from the descriptor set, with its table row.
fn every_rpc() -> Vec<(String, Rule)> {
    let set =
        prost_types::FileDescriptorSet::decode(holdfast_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let tables = holdfast::authz_tables();
    let mut rpcs = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                let rule = tables
                    .iter()
                    .find(|t| t.service == full)
                    .and_then(|t| t.rule(method.name()))
                    .unwrap_or_else(|| panic!("{full}/{} has no authorization row", method.name()));
                rpcs.push((format!("/{full}/{}", method.name()), rule));
            }
        }
    }
    rpcs
}

#[tokio::test]
async fn every_admin_and_service_rpc_refuses_every_other_role_and_every_rpc_needs_a_token() {
    let mesh = DevMesh::start().await.expect("mesh");
    let tokens = mesh.tokens();
    let token = |role: Role| match role {
        Role::Customer => tokens.customer("alice"),
        Role::Service => tokens.mint(Role::Service, Some("svc"), None),
        Role::Admin => tokens.mint(Role::Admin, Some("ops"), None),
    };
    let rpcs = every_rpc();
    let (mut admin_rows, mut service_rows) = (0, 0);
    for (path, rule) in &rpcs {
        // grpc-web, as a browser or mobile backend calls: status in the trailers.
        let status = |reply: holdfast_e2e::WebReply| reply.trailer("grpc-status").map(String::from);
        let anonymous = grpc_web_call(mesh.server.addr(), path, &[], None)
            .await
            .expect("call");
        assert_eq!(status(anonymous).as_deref(), Some("16"), "{path} without a token");
        for role in [Role::Customer, Role::Service, Role::Admin] {
            if rule.allows(role) {
                continue;
            }
            let reply = grpc_web_call(mesh.server.addr(), path, &[], Some(&token(role)))
                .await
                .expect("call");
            assert_eq!(
                status(reply).as_deref(),
                Some("7"),
                "{path} ({rule:?}) as {role:?}"
            );
        }
        admin_rows += usize::from(*rule == Rule::Admin);
        service_rows += usize::from(*rule == Rule::Service);
    }
    assert!(
        admin_rows >= 10,
        "stock, catalog writes, warehouses and returns are admin RPCs: {admin_rows}"
    );
    assert!(service_rows >= 6, "payments are service RPCs: {service_rows}");
}

#[tokio::test]
async fn expired_foreign_issuer_or_audience_and_unsigned_tokens_are_unauthenticated() {
    let mesh = DevMesh::start().await.expect("mesh");
    let signer = mesh.tokens().signer();
    let now = holdfast_platform::auth::keys::now_secs();
    let claims = Claims {
        iss: "holdfast-dev".into(),
        aud: "holdfast".into(),
        exp: now + 600,
        iat: now,
        sub: Some("ops".into()),
        role: Role::Admin,
        sid: None,
    };
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let bad = [
        (
            "expired",
            signer
                .mint_claims(&Claims {
                    exp: now - 3600,
                    ..claims.clone()
                })
                .expect("mint"),
        ),
        (
            "wrong issuer",
            signer
                .mint_claims(&Claims {
                    iss: "evil".into(),
                    ..claims.clone()
                })
                .expect("mint"),
        ),
        (
            "wrong audience",
            signer
                .mint_claims(&Claims {
                    aud: "other".into(),
                    ..claims.clone()
                })
                .expect("mint"),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&serde_json::to_string(&claims).expect("json"))
            ),
        ),
        ("garbage", "not.a.token".to_string()),
    ];
    let good = signer.mint_claims(&claims).expect("mint");
    let set_stock = SetStockRequest {
        sku: SKU.into(),
        on_hand: 1,
        buckets: 0,
    };
    InventoryServiceClient::new(mesh.channel_as(&good).await.expect("connect"))
        .set_stock(set_stock.clone())
        .await
        .expect("the good token works");
    for (what, token) in bad {
        let refused = InventoryServiceClient::new(mesh.channel_as(&token).await.expect("connect"))
            .set_stock(set_stock.clone())
            .await;
        assert_eq!(code(refused), Code::Unauthenticated, "{what}");
        let web = grpc_web_call(
            mesh.server.addr(),
            "/holdfast.inventory.v1.InventoryService/SetStock",
            &set_stock.encode_to_vec(),
            Some(&token),
        )
        .await
        .expect("grpc-web call");
        assert_eq!(web.trailer("grpc-status"), Some("16"), "{what} over grpc-web");
    }
}
