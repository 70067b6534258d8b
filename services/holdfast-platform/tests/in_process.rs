//! In-process calls between services of one process (`holdfast dev`): no socket, but the
//! same answers as over gRPC for what decides them: the caller's token is authenticated and
//! authorized, the deadline holds, the trace continues, the bound per upstream holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_platform::auth::keys::{DEV_AUDIENCE, DEV_ISSUER};
use holdfast_platform::auth::{AuthzTable, Caller, DevKey, Role, Rule, ServiceCredentials, Verifier};
use holdfast_platform::server::ServerOptions;
use holdfast_platform::telemetry::{self, TracePropagation};
use holdfast_platform::{GrpcServer, LocalServices, PeerChannel, metrics};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use holdfast_proto::inventory::v1::{
    CommitRequest, CommitResponse, GetAvailabilityRequest, GetAvailabilityResponse, ReserveRequest,
    ReserveResponse,
};
use holdfast_testkit::{SpawnedServer, TempDir};
use tokio::sync::{Notify, mpsc};
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

/// Reserve is internal-only here (as in inventory's own table), GetAvailability any token,
/// Commit never answers (an upstream slower than any deadline).
static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.inventory.v1.InventoryService",
    rows: &[
        ("Reserve", Rule::Service),
        ("GetAvailability", Rule::Authenticated),
        ("Commit", Rule::Service),
    ],
};

/// What the inventory double saw of each Reserve: the caller the auth layer put in, and the
/// trace id the handler runs in.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Sighting>>>);

/// One Reserve as the handler saw it: the verified caller and the trace id.
type Sighting = (Option<Caller>, String);

/// An inventory double: Reserve records what it saw, GetAvailability reports that it
/// started and waits to be released, Commit never answers.
#[derive(Clone)]
struct Double {
    seen: Seen,
    started: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl InventoryService for Double {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<ReserveResponse>, Status> {
        let caller = Caller::of(&request).cloned();
        let trace_id = telemetry::current_trace_id();
        self.seen.0.lock().expect("lock").push((caller, trace_id));
        Ok(Response::new(ReserveResponse::default()))
    }

    async fn get_availability(
        &self,
        _: Request<GetAvailabilityRequest>,
    ) -> Result<Response<GetAvailabilityResponse>, Status> {
        let _ = self.started.send(());
        self.release.notified().await;
        Ok(Response::new(GetAvailabilityResponse::default()))
    }

    async fn commit(&self, _: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        std::future::pending().await
    }
}

struct Mesh {
    local: LocalServices,
    seen: Seen,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
    key: DevKey,
    _server: SpawnedServer,
    _dir: TempDir,
}

type Client = InventoryServiceClient<InterceptedService<PeerChannel, TracePropagation>>;

impl Mesh {
    /// The double served with auth on, reachable in-process through `local`.
    async fn start(options: ServerOptions, auth: bool) -> Self {
        let local = LocalServices::default();
        Self::start_on(local, options, auth).await
    }

    async fn start_on(local: LocalServices, options: ServerOptions, auth: bool) -> Self {
        let dir = TempDir::new("in-process").expect("temp dir");
        let key = DevKey::load_or_create(dir.path()).expect("dev key");
        let seen = Seen::default();
        let (started_tx, started) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let mut server = GrpcServer::new(options);
        if auth {
            server.set_auth(Some(Verifier::new(
                key.key_set(),
                DEV_ISSUER,
                DEV_AUDIENCE,
                Duration::from_secs(30),
            )));
        }
        server.authorize(&TABLE).add_service(
            "inventory",
            InventoryServiceServer::new(Double {
                seen: seen.clone(),
                started: started_tx,
                release: release.clone(),
            }),
        );
        server.serve_in_process(&local);
        let server = SpawnedServer::start(server).await.expect("serve");
        Self {
            local,
            seen,
            started,
            release,
            key,
            _server: server,
            _dir: dir,
        }
    }

    fn token(&self, role: Role) -> ServiceCredentials {
        let token = self
            .key
            .signer()
            .mint(role, Some("caller"), None, Duration::from_secs(600))
            .expect("mint");
        ServiceCredentials::fixed(&token).expect("header value")
    }

    /// A client over an in-process channel (`concurrency` calls at once), presenting `credentials`.
    fn client(&self, credentials: ServiceCredentials, concurrency: usize) -> Client {
        let channel = self.local.channel("inventory", concurrency);
        assert!(channel.is_in_process());
        InventoryServiceClient::with_interceptor(channel, TracePropagation::with_credentials(credentials))
    }
}

fn reserve() -> ReserveRequest {
    ReserveRequest {
        reservation_id: "r1".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_customer_token_cannot_call_an_internal_rpc_in_process() {
    let mesh = Mesh::start(ServerOptions::default(), true).await;

    let customer = mesh
        .client(mesh.token(Role::Customer), 8)
        .reserve(reserve())
        .await;
    assert_eq!(customer.expect_err("refused").code(), Code::PermissionDenied);

    let anonymous = mesh
        .client(ServiceCredentials::default(), 8)
        .reserve(reserve())
        .await;
    assert_eq!(anonymous.expect_err("refused").code(), Code::Unauthenticated);

    // A Caller the caller makes up does not cross: only the verified token counts.
    let mut forged = Request::new(reserve());
    forged.extensions_mut().insert(Caller {
        role: Role::Service,
        subject: Some("forged".into()),
        session: None,
    });
    let forged = mesh.client(mesh.token(Role::Customer), 8).reserve(forged).await;
    assert_eq!(forged.expect_err("refused").code(), Code::PermissionDenied);
    assert!(
        mesh.seen.0.lock().expect("lock").is_empty(),
        "no refused call reached the handler"
    );

    mesh.client(mesh.token(Role::Service), 8)
        .reserve(reserve())
        .await
        .expect("a service token passes");
    let seen = mesh.seen.0.lock().expect("lock").clone();
    let callers: Vec<_> = seen.into_iter().map(|(caller, _)| caller).collect();
    assert_eq!(
        callers,
        [Some(Caller {
            role: Role::Service,
            subject: Some("caller".into()),
            session: None,
        })],
        "the handler sees the verified caller"
    );

    // Counted like any RPC, refusals by code.
    let text = metrics::render();
    assert!(
        text.contains(
            r#"holdfast_rpc_errors_total{code="PermissionDenied",method="Reserve",service="holdfast.inventory.v1.InventoryService"} 2"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn without_auth_a_forged_caller_does_not_reach_the_handler() {
    let mesh = Mesh::start(ServerOptions::default(), false).await;
    let mut forged = Request::new(reserve());
    forged.extensions_mut().insert(Caller {
        role: Role::Admin,
        subject: Some("forged".into()),
        session: None,
    });
    mesh.client(ServiceCredentials::default(), 8)
        .reserve(forged)
        .await
        .expect("auth is off");
    let seen = mesh.seen.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, None, "extensions do not cross the in-process call");
}

#[tokio::test]
async fn an_upstream_slower_than_the_deadline_answers_deadline_exceeded() {
    let mesh = Mesh::start(ServerOptions::default(), true).await;
    let mut client = mesh.client(mesh.token(Role::Service), 8);

    let mut request = Request::new(CommitRequest {
        reservation_id: "r1".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let status = client.commit(request).await.expect_err("never answers");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Without a deadline of its own, the server's --request-timeout caps the call.
    let capped = Mesh::start(
        ServerOptions {
            request_timeout: Duration::from_millis(150),
            ..ServerOptions::default()
        },
        true,
    )
    .await;
    let status = capped
        .client(capped.token(Role::Service), 8)
        .commit(CommitRequest {
            reservation_id: "r1".into(),
            ..Default::default()
        })
        .await
        .expect_err("never answers");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn in_process_calls_continue_the_callers_trace() {
    let _telemetry = telemetry::init_with_log_filter("test", "pretty", "warn").expect("telemetry");
    let mesh = Mesh::start(ServerOptions::default(), true).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("header"),
    );
    let span = tracing::info_span!("checkout");
    telemetry::continue_trace(&span, &headers);
    let mut client = mesh.client(mesh.token(Role::Service), 8);
    async move { client.reserve(reserve()).await }
        .instrument(span)
        .await
        .expect("reserve");
    let seen = mesh.seen.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, trace_id, "the handler runs in the caller's trace");
}

#[tokio::test]
async fn a_full_upstream_makes_callers_wait_within_their_deadline() {
    let mut mesh = Mesh::start(ServerOptions::default(), true).await;
    let credentials = mesh.token(Role::Service);
    // One call at a time to this upstream: the first is held in the handler.
    let mut first = mesh.client(credentials.clone(), 1);
    let held = tokio::spawn(async move { first.get_availability(GetAvailabilityRequest::default()).await });
    mesh.started.recv().await.expect("first call started");

    let mut waiting = Request::new(GetAvailabilityRequest::default());
    waiting.set_timeout(Duration::from_millis(100));
    let status = mesh
        .client(credentials.clone(), 1)
        .get_availability(waiting)
        .await
        .expect_err("no slot within its deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        mesh.started.try_recv().is_err(),
        "the second call never entered the handler"
    );

    // A caller that waits long enough gets the slot once the first call is done.
    let mut patient = mesh.client(credentials, 1);
    let second =
        tokio::spawn(async move { patient.get_availability(GetAvailabilityRequest::default()).await });
    mesh.release.notify_one();
    held.await.expect("join").expect("first answered");
    mesh.started
        .recv()
        .await
        .expect("second call started once the slot freed");
    mesh.release.notify_one();
    second.await.expect("join").expect("second answered");
}

#[tokio::test]
async fn a_call_made_before_the_server_serves_waits_for_it() {
    let local = LocalServices::default();
    let channel = local.channel("inventory", 8);
    let call = tokio::spawn(async move { InventoryServiceClient::new(channel).reserve(reserve()).await });
    let mesh = Mesh::start_on(local, ServerOptions::default(), false).await;
    call.await.expect("join").expect("answered once serving");
    assert_eq!(mesh.seen.0.lock().expect("lock").len(), 1);
}
