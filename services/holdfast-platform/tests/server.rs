//! The server stack end to end on real sockets: health transitions, graceful drain, load
//! shedding, deadlines, grpc-web, metrics and W3C trace propagation between two services.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_platform::cors::AllowedOrigins;
use holdfast_platform::server::ServerOptions;
use holdfast_platform::telemetry::{self, TracePropagation};
use holdfast_platform::{GrpcServer, metrics};
use holdfast_proto::catalog::v1::catalog_service_server::{CatalogService, CatalogServiceServer};
use holdfast_proto::catalog::v1::{GetProductRequest, GetProductResponse, Product};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, GetAvailabilityResponse};
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::payments::v1::payments_service_server::{PaymentsService, PaymentsServiceServer};
use holdfast_proto::payments::v1::{AuthorizeRequest, AuthorizeResponse};
use holdfast_testkit::SpawnedServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A payments double whose Authorize reports that it started, then waits to be released:
/// a call we can hold in flight for as long as a test needs.
#[derive(Clone)]
struct HeldAuthorize {
    started: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl PaymentsService for HeldAuthorize {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let _ = self.started.send(());
        self.release.notified().await;
        Ok(Response::new(AuthorizeResponse {
            payment_id: format!("pay_{}", request.into_inner().idempotency_key),
            ..Default::default()
        }))
    }
}

fn held_payments(options: ServerOptions) -> (GrpcServer, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let mut server = GrpcServer::new(options);
    server.add_service(
        "payments",
        PaymentsServiceServer::new(HeldAuthorize {
            started,
            release: release.clone(),
        }),
    );
    (server, started_rx, release)
}

fn authorize(key: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.into(),
        ..Default::default()
    }
}

async fn check(channel: tonic::transport::Channel, service: &str) -> Result<i32, Status> {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(reply.into_inner().status)
}

#[tokio::test]
async fn health_is_not_serving_until_ready_then_serving_then_not_serving_on_drain() {
    let (server, _started, _release) = held_payments(ServerOptions::default());
    let health = server.health();
    let mut spawned = SpawnedServer::start_with(server, false).await.expect("server");
    let channel = spawned.channel().await.expect("connect");

    for name in ["payments", "holdfast.payments.v1.PaymentsService", ""] {
        assert_eq!(
            check(channel.clone(), name).await.expect("check"),
            ServingStatus::NotServing as i32,
            "{name:?} before ready"
        );
    }
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "payments".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first: HealthCheckResponse = watch.message().await.expect("stream").expect("first status");
    assert_eq!(first.status, ServingStatus::NotServing as i32);

    health.ready().await;
    let next = watch.message().await.expect("stream").expect("serving status");
    assert_eq!(next.status, ServingStatus::Serving as i32);
    assert_eq!(
        check(channel.clone(), "payments").await.expect("check"),
        ServingStatus::Serving as i32
    );

    // Unknown names are NOT_FOUND, so a typo in a probe fails loudly.
    let unknown = check(channel.clone(), "nope").await.expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    spawned.begin_shutdown();
    let last = watch.message().await.expect("stream").expect("draining status");
    assert_eq!(
        last.status,
        ServingStatus::NotServing as i32,
        "health flips before the drain"
    );
}

#[tokio::test]
async fn drain_finishes_in_flight_call_and_refuses_new_ones() {
    let (server, mut started, release) = held_payments(ServerOptions::default());
    let mut spawned = SpawnedServer::start(server).await.expect("server");
    let endpoint = spawned.endpoint();
    let mut client = PaymentsServiceClient::new(spawned.channel().await.expect("connect"));

    let in_flight = tokio::spawn(async move { client.authorize(authorize("k1")).await });
    started.recv().await.expect("call reached the handler");

    spawned.begin_shutdown();
    // The listener closes as the drain starts: wait for the port to refuse connections.
    let addr = spawned.addr();
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => break,
            // A connection caught in the accept backlog as the listener closes is reset:
            // the listener is going away; look again until it is gone.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                tokio::task::yield_now().await
            }
            Err(error) => panic!("unexpected connect error while draining: {error}"),
            Ok(accepted_before_close) => {
                drop(accepted_before_close);
                tokio::task::yield_now().await;
            }
        }
    }
    let refused = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect_err("a new call cannot connect while draining");
    assert!(refused.to_string().contains("transport error"), "{refused}");

    release.notify_one();
    let reply = in_flight
        .await
        .expect("join")
        .expect("in-flight call finished OK");
    assert_eq!(reply.into_inner().payment_id, "pay_k1");
    spawned.shutdown().await.expect("drained cleanly");
}

#[tokio::test]
async fn over_the_concurrency_limit_calls_are_shed_with_unavailable() {
    let (server, mut started, release) = held_payments(ServerOptions {
        concurrency_limit: 1,
        ..ServerOptions::default()
    });
    let spawned = SpawnedServer::start(server).await.expect("server");
    let channel = spawned.channel().await.expect("connect");
    let mut first = PaymentsServiceClient::new(channel.clone());
    let held = tokio::spawn(async move { first.authorize(authorize("a")).await });
    started.recv().await.expect("first call in flight");

    let shed = PaymentsServiceClient::new(channel.clone())
        .authorize(authorize("b"))
        .await
        .expect_err("second call is shed");
    assert_eq!(shed.code(), tonic::Code::Unavailable, "{shed:?}");

    release.notify_one();
    held.await.expect("join").expect("first call still succeeds");
    let text = metrics::render();
    assert!(
        text.contains(r#"holdfast_rpc_errors_total{code="Unavailable",method="Authorize",service="holdfast.payments.v1.PaymentsService"}"#),
        "shed calls are counted:\n{text}"
    );
}

#[tokio::test]
async fn slow_call_gets_deadline_exceeded_at_the_server_timeout() {
    let (server, _started, _release) = held_payments(ServerOptions {
        request_timeout: Duration::from_millis(100),
        ..ServerOptions::default()
    });
    let spawned = SpawnedServer::start(server).await.expect("server");
    let status = PaymentsServiceClient::new(spawned.channel().await.expect("connect"))
        .authorize(authorize("slow"))
        .await
        .expect_err("held call times out");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn grpc_web_health_check_answers_grpc_status_zero() {
    let (server, _started, _release) = held_payments(ServerOptions {
        cors: AllowedOrigins::list(["http://shop.example"]).expect("origin"),
        ..ServerOptions::default()
    });
    let spawned = SpawnedServer::start(server).await.expect("server");
    // HealthCheckRequest { service: "payments" } as one grpc-web frame.
    let message = [&[0x0a, 8][..], b"payments"].concat();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let request = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc-web+proto\r\n\
x-grpc-web: 1\r\norigin: http://shop.example\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        spawned.addr(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(spawned.addr())
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write head");
    stream.write_all(&body).await.expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("content-type: application/grpc-web+proto"),
        "{text}"
    );
    assert!(
        text.contains("access-control-allow-origin: http://shop.example"),
        "CORS for browsers: {text}"
    );
    assert!(
        text.contains("access-control-expose-headers: grpc-status,grpc-message,grpc-status-details-bin"),
        "a cross-origin page must be able to read a trailers-only status: {text}"
    );
    assert!(
        text.contains("grpc-status:0"),
        "trailers frame carries OK: {text}"
    );
    // The message frame holds status SERVING (field 1 = 1).
    assert!(response.windows(2).any(|w| w == [0x08, 0x01]), "{text}");
}

/// Inventory double that records the `traceparent` it was called with.
#[derive(Clone, Default)]
struct RecordsTraceparent(Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl InventoryService for RecordsTraceparent {
    async fn get_availability(
        &self,
        request: Request<GetAvailabilityRequest>,
    ) -> Result<Response<GetAvailabilityResponse>, Status> {
        let header = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.0.lock().expect("lock").push(header);
        Ok(Response::new(GetAvailabilityResponse::default()))
    }
}

/// Catalog double that calls inventory the way every holdfast service calls another.
#[derive(Clone)]
struct CallsInventory(tonic::transport::Channel);

#[tonic::async_trait]
impl CatalogService for CallsInventory {
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        let sku = request.into_inner().sku;
        InventoryServiceClient::with_interceptor(self.0.clone(), TracePropagation::default())
            .get_availability(GetAvailabilityRequest {
                skus: vec![sku.clone()],
            })
            .await?;
        Ok(Response::new(GetProductResponse {
            product: Some(Product {
                sku,
                title: telemetry::current_trace_id(),
                ..Default::default()
            }),
        }))
    }
}

#[tokio::test]
async fn traceparent_propagates_from_caller_through_one_service_to_the_next_even_with_quiet_logs() {
    // Logs at warn must not switch tracing off: propagation does not depend on RUST_LOG.
    let _telemetry = telemetry::init_with_log_filter("test", "pretty", "warn").expect("telemetry");
    let seen = RecordsTraceparent::default();
    let mut inventory = GrpcServer::new(ServerOptions::default());
    inventory.add_service("inventory", InventoryServiceServer::new(seen.clone()));
    let inventory = SpawnedServer::start(inventory).await.expect("inventory");

    let mut catalog = GrpcServer::new(ServerOptions::default());
    catalog.add_service(
        "catalog",
        CatalogServiceServer::new(CallsInventory(inventory.channel().await.expect("connect"))),
    );
    let catalog = SpawnedServer::start(catalog).await.expect("catalog");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = Request::new(GetProductRequest { sku: "SKU-1".into() });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().expect("header"),
    );
    let product = holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient::new(
        catalog.channel().await.expect("connect"),
    )
    .get_product(request)
    .await
    .expect("call")
    .into_inner()
    .product
    .expect("product");

    assert_eq!(
        product.title, trace_id,
        "the catalog handler ran inside the caller's trace"
    );
    let headers = seen.0.lock().expect("lock").clone();
    assert_eq!(headers.len(), 1);
    let parts: Vec<&str> = headers[0].split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {headers:?}");
    assert_eq!(parts[1], trace_id, "inventory continues the same trace");
    assert_ne!(
        parts[2], caller_span,
        "with the catalog server span as parent, not the caller's"
    );
}

/// GET `path` on `addr` over HTTP/1.1; answers the status line.
async fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

// Kubelet probes cannot speak gRPC over TLS: /readyz on the plaintext admin port carries the
// same status as gRPC health.
#[tokio::test]
async fn admin_readyz_follows_grpc_health() {
    let server = GrpcServer::new(ServerOptions::default());
    let health = server.health();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(holdfast_platform::server::serve_admin(
        listener,
        health.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    assert!(
        admin_get(addr, "/readyz").await.contains(" 503 "),
        "NOT_SERVING until ready"
    );
    assert!(
        admin_get(addr, "/healthz").await.contains(" 200 "),
        "alive all along"
    );
    health.ready().await;
    assert!(admin_get(addr, "/readyz").await.contains(" 200 "));
    health.set_all(tonic_health::ServingStatus::NotServing).await;
    assert!(admin_get(addr, "/readyz").await.contains(" 503 "), "draining");
    let _ = stop.send(());
    admin.await.expect("join").expect("admin served");
}
