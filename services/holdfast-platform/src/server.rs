//! The gRPC server every holdfast service runs in: one tower stack, health, reflection,
//! grpc-web with CORS for the configured origins, plaintext or TLS, and a graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceBuilder};
use tracing::Instrument;

use crate::auth::{AuthLayer, AuthzTable, Verifier};
use crate::config::CommonArgs;
use crate::cors::AllowedOrigins;
pub use crate::cors::GRPC_EXPOSED_HEADERS;
use crate::drain::Draining;
use crate::metrics::{self, RpcMetricsLayer};
use crate::peer::{LocalServices, LocalStack};
use crate::telemetry;
use crate::tls::ServerTls;

/// Knobs of the server stack.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Longest one RPC may run.
    pub request_timeout: Duration,
    /// RPCs served at once before new ones are shed.
    pub concurrency_limit: usize,
    /// Serving-while-NOT_SERVING period after a shutdown signal.
    pub shutdown_delay: Duration,
    /// How long in-flight calls get once the listener is closed.
    pub drain_timeout: Duration,
    /// Browser origins that get CORS allow headers (default: none).
    pub cors: AllowedOrigins,
    /// TLS on the listener; `None` is plaintext.
    pub tls: Option<ServerTls>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            concurrency_limit: 4096,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            cors: AllowedOrigins::none(),
            tls: None,
        }
    }
}

impl From<&CommonArgs> for ServerOptions {
    fn from(args: &CommonArgs) -> Self {
        Self {
            request_timeout: args.request_timeout,
            concurrency_limit: args.concurrency_limit as usize,
            shutdown_delay: args.shutdown_delay,
            drain_timeout: args.drain_timeout,
            cors: args.cors.allowed(),
            // Loading the files can fail: the caller does it (`TlsArgs::server`) and sets it.
            tls: None,
        }
    }
}

/// Health of every service this process serves, under its short name (`inventory`), its
/// fully-qualified gRPC name, and the empty name (the whole process). All names share one
/// status: a process is ready only when every service in it is.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    names: Arc<std::sync::Mutex<Vec<String>>>,
    // The status every name should show; held while applying so concurrent flips can't interleave.
    status: Arc<tokio::sync::Mutex<ServingStatus>>,
}

impl Health {
    fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            names: Arc::new(std::sync::Mutex::new(vec![String::new()])),
            status: Arc::new(tokio::sync::Mutex::new(ServingStatus::NotServing)),
        }
    }

    fn register(&self, names: &[&str]) {
        let mut all = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.extend(names.iter().map(|n| n.to_string()));
    }

    /// Sets every registered name to `status`.
    pub async fn set_all(&self, status: ServingStatus) {
        let mut current = self.status.lock().await;
        *current = status;
        self.apply(status).await;
    }

    async fn apply(&self, status: ServingStatus) {
        let names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for name in names {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Publishes the current status under every registered name (at serve time).
    async fn publish(&self) {
        let current = self.status.lock().await;
        self.apply(*current).await;
    }

    /// Whether every name is SERVING (the admin port's `/readyz`).
    pub async fn is_serving(&self) -> bool {
        *self.status.lock().await == ServingStatus::Serving
    }

    /// Marks everything SERVING: call once scripts are loaded and producers are ready.
    pub async fn ready(&self) {
        self.set_all(ServingStatus::Serving).await;
    }
}

/// A gRPC server under construction: add services, then [`GrpcServer::serve`].
pub struct GrpcServer {
    routes: RoutesBuilder,
    health: Health,
    options: ServerOptions,
    verifier: Option<Verifier>,
    tables: Vec<&'static AuthzTable>,
    local: Option<LocalServices>,
    draining: Draining,
}

impl GrpcServer {
    /// A server with health (everything NOT_SERVING) and reflection registered.
    pub fn new(options: ServerOptions) -> Self {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Self {
            routes,
            health: Health::new(reporter),
            options,
            verifier: None,
            tables: Vec::new(),
            local: None,
            draining: Draining::default(),
        }
    }

    /// Starts `draining` when this server stops accepting calls (after its shutdown delay), so
    /// the handlers that hold it end their long-lived streams instead of riding out the drain
    /// timeout.
    pub fn drain_with(&mut self, draining: &Draining) -> &mut Self {
        self.draining = draining.clone();
        self
    }

    /// Serves the in-process channels of `local` too, once [`GrpcServer::serve`] starts:
    /// through the same routes, authentication, metrics and trace layers, without a socket
    /// (see [`crate::peer`]).
    pub fn serve_in_process(&mut self, local: &LocalServices) -> &mut Self {
        self.local = Some(local.clone());
        self
    }

    /// Authenticates every RPC with `verifier` against the services' authorization tables
    /// ([`GrpcServer::authorize`]); `None` (the default) serves without authentication.
    pub fn set_auth(&mut self, verifier: Option<Verifier>) -> &mut Self {
        self.verifier = verifier;
        self
    }

    /// Adds a service's authorization table. With auth on, an RPC without a row is refused.
    pub fn authorize(&mut self, table: &'static AuthzTable) -> &mut Self {
        self.tables.push(table);
        self
    }

    /// Registers `service` under its gRPC name and the short `name` for health checks.
    pub fn add_service<S>(&mut self, name: &'static str, service: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.health.register(&[name, S::NAME]);
        self.routes.add_service(service);
        self
    }

    /// Serves TLS (or plaintext with `None`) instead of what the options said.
    pub fn set_tls(&mut self, tls: Option<ServerTls>) -> &mut Self {
        self.options.tls = tls;
        self
    }

    /// Handle to flip health; clone it before calling [`GrpcServer::serve`].
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: health goes NOT_SERVING,
    /// the server keeps answering for `shutdown_delay`, closes the listener, and gives
    /// in-flight calls up to `drain_timeout`.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        #[allow(clippy::expect_used)]
        // the descriptor sets are compiled in; failing to decode them is a build bug.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(holdfast_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so grpcurl and other reflective clients decode BadRequest.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("descriptor sets decode");
        #[allow(clippy::expect_used)]
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(holdfast_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("descriptor sets decode");
        self.routes.add_service(reflection);
        self.routes.add_service(reflection_alpha);

        let health = self.health.clone();
        // Every name answers from the first request: NOT_SERVING until `ready`, never NOT_FOUND.
        health.publish().await;
        let delay = self.options.shutdown_delay;
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let draining = self.draining.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown signal: health NOT_SERVING, draining");
            health.set_all(ServingStatus::NotServing).await;
            tokio::time::sleep(delay).await;
            draining.start();
            let _ = draining_tx.send(());
        };

        let auth = AuthLayer::new(self.verifier.take(), &self.tables);
        if !auth.enforcing() {
            tracing::warn!(
                "serving WITHOUT authentication: every RPC is open to anyone who reaches the port"
            );
        }
        let routes = self.routes.routes();
        if let Some(local) = &self.local {
            local.install(
                in_process_stack(routes.clone(), auth.clone()),
                self.options.request_timeout,
            );
        }
        let router = serve_stack(&self.options, auth).add_routes(routes);
        let server: BoxFuture<'_, Result<(), tonic::transport::Error>> = match &self.options.tls {
            // Handshakes happen off the accept loop; the certificate reloads while serving.
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(tls.incoming(listener), signal)),
            None => {
                // serve_with_incoming ignores the builder's TCP settings: without TCP_NODELAY a
                // small response waits for the peer's delayed ACK (~40 ms on Linux).
                let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
                    accepted.inspect(|stream| {
                        let _ = stream.set_nodelay(true);
                    })
                });
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
        };

        let drain_timeout = self.options.drain_timeout;
        tokio::select! {
            result = server => result,
            () = async move {
                if draining_rx.await.is_ok() {
                    tokio::time::sleep(drain_timeout).await;
                } else {
                    futures::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(?drain_timeout, "drain timed out; abandoning in-flight calls");
                Ok(())
            }
        }
    }
}

/// The concrete type of [`serve_stack`]'s layers, outermost first.
type ServerStack = Stack<
    AuthLayer,
    Stack<
        RpcMetricsLayer,
        Stack<
            tower::limit::GlobalConcurrencyLimitLayer,
            Stack<
                tower::load_shed::LoadShedLayer,
                Stack<
                    tower::timeout::TimeoutLayer,
                    Stack<
                        StatusOnErrorLayer,
                        Stack<
                            RpcTraceLayer,
                            Stack<tonic_web::GrpcWebLayer, Stack<tower_http::cors::CorsLayer, Identity>>,
                        >,
                    >,
                >,
            >,
        >,
    >,
>;

/// The one server stack. Outermost layer first; every request passes them in this order.
fn serve_stack(
    options: &ServerOptions,
    auth: AuthLayer,
) -> tonic::transport::Server<Stack<ServerStack, Identity>> {
    let stack = ServiceBuilder::new()
        // CORS first: browsers' preflight OPTIONS must be answered before any gRPC handling.
        // Only the configured origins get allow headers; a trailers-only error carries its
        // status in headers, which a cross-origin page can read only when they are exposed.
        .layer(options.cors.layer())
        // grpc-web translation next, so every layer below sees plain gRPC and its status codes.
        .layer(tonic_web::GrpcWebLayer::new())
        // Trace: one span per RPC, child of the caller's W3C traceparent; wraps everything
        // below, so shed and timed-out calls are traced too.
        .layer(RpcTraceLayer)
        // Turn timeout and shed errors into gRPC statuses (and count them) instead of
        // dropping the HTTP/2 stream.
        .layer(StatusOnErrorLayer)
        // Timeout outside the limit: a call waiting on the limit still gets its deadline.
        .timeout(options.request_timeout)
        // Shed instead of queueing when the limit is reached: a flash sale wants a fast
        // UNAVAILABLE (clients retry with backoff), not a growing queue.
        .load_shed()
        // One limit for the whole process, not per connection: grpc-web clients open many.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            options.concurrency_limit,
        ))
        // Metrics innermost: latency is service time, labels are the RPC the routes serve.
        .layer(RpcMetricsLayer)
        // Auth innermost: refusals are counted and traced by route like any answer; the
        // caller it verified rides in the request's extensions to the handler.
        .layer(auth)
        .into_inner();
    tonic::transport::Server::builder()
        // grpc-web from browsers arrives as HTTP/1.1.
        .accept_http1(true)
        .layer(stack)
}

/// What an in-process call enters (its deadline and per-upstream bound are the channel's,
/// [`crate::peer`]): the trace span, metrics and authentication of the listener's stack, over
/// the same routes. No CORS or grpc-web (no browser), no global limit (no connection).
fn in_process_stack(routes: tonic::service::Routes, auth: AuthLayer) -> LocalStack {
    let stack = ServiceBuilder::new()
        .layer(RpcTraceLayer)
        .layer(RpcMetricsLayer)
        .layer(auth)
        .service(routes);
    BoxCloneSyncService::new(stack)
}

#[derive(Debug, Clone, Copy)]
struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

#[derive(Debug, Clone)]
struct RpcTrace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // Names built once per route (`metrics::route_names`): no string building per call.
        let (name, service, method) = metrics::route_names(metrics::route(request.uri().path()));
        let span = tracing::info_span!(
            "rpc",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, request.headers());
        let started = Instant::now();
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = response.await;
                if let Ok(response) = &result {
                    let code = metrics::response_code(response);
                    tracing::Span::current().record("rpc.grpc.status_code", code as i32);
                    tracing::debug!(
                        ?code,
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "rpc done"
                    );
                }
                result
            }
            .instrument(span),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct StatusOnErrorLayer;

impl<S> Layer<S> for StatusOnErrorLayer {
    type Service = StatusOnError<S>;
    fn layer(&self, inner: S) -> Self::Service {
        StatusOnError { inner }
    }
}

#[derive(Debug, Clone)]
struct StatusOnError<S> {
    inner: S,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for StatusOnError<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness errors surface on `call` through the inner future; load-shed is always ready.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = metrics::route(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => Ok(response),
                Err(error) => {
                    let error: BoxError = error.into();
                    let status = if error.is::<tower::timeout::error::Elapsed>() {
                        tonic::Status::deadline_exceeded("request timed out on the server")
                    } else if error.is::<tower::load_shed::error::Overloaded>() {
                        tonic::Status::unavailable("server is at its concurrency limit; retry with backoff")
                    } else {
                        tracing::error!(%error, "rpc failed below the service");
                        tonic::Status::internal("internal error")
                    };
                    metrics::record_rpc(path, status.code(), started.elapsed().as_secs_f64());
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}

/// Serves the admin endpoint: `/metrics` (Prometheus text), `/healthz` (process liveness)
/// and `/readyz` (200 while `health` is SERVING, 503 otherwise: the gRPC health status for
/// probes that cannot speak gRPC over TLS, such as the kubelet's).
pub async fn serve_admin(
    listener: TcpListener,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics::render(),
                )
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let health = health.clone();
                async move {
                    if health.is_serving().await {
                        (http::StatusCode::OK, "ready\n")
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
