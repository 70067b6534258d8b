//! Prometheus metrics: per-RPC counts, errors by code and latency, served on the admin port.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, register_histogram_vec, register_int_counter_vec,
};
use prost::Message as _;
use tower::{Layer, Service};

/// Buckets for RPC latency, in seconds: 100 µs .. 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[allow(clippy::expect_used)] // registering a static metric can only fail on a duplicate name, a programming error.
static RPC_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_rpc_requests_total",
        "gRPC requests handled, by service and method.",
        &["service", "method"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static RPC_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_rpc_errors_total",
        "gRPC requests that ended with a non-OK status, by service, method and status code.",
        &["service", "method", "code"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static RPC_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "holdfast_rpc_duration_seconds",
        "Time from request to response headers, by service and method.",
        &["service", "method"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Splits `/holdfast.inventory.v1.InventoryService/Reserve` into service and method.
pub fn rpc_labels(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(service), Some(method)) if !service.is_empty() && !method.is_empty() => (service, method),
        _ => ("unknown", "unknown"),
    }
}

/// What every request path that is not an RPC this process serves is counted as.
pub const UNKNOWN_ROUTE: &str = "/unknown/unknown";

/// What a known route is labelled with, built once: no per-call string building.
struct RouteLabels {
    service: String,
    method: String,
    /// `service/method`: the span name.
    span_name: String,
    /// The route's series, made on first use (a route never served exposes none).
    series: OnceLock<(IntCounter, Histogram)>,
}

impl RouteLabels {
    fn new(service: &str, method: &str) -> Self {
        Self {
            service: service.to_string(),
            method: method.to_string(),
            span_name: format!("{service}/{method}"),
            series: OnceLock::new(),
        }
    }

    fn series(&self) -> &(IntCounter, Histogram) {
        self.series.get_or_init(|| {
            let labels = [self.service.as_str(), self.method.as_str()];
            (
                RPC_REQUESTS.with_label_values(&labels),
                RPC_LATENCY.with_label_values(&labels),
            )
        })
    }
}

/// Every `/package.Service/Method` path the server routes: the holdfast services, health and
/// reflection, read from their compiled-in descriptor sets; plus [`UNKNOWN_ROUTE`].
static KNOWN_ROUTES: LazyLock<HashMap<String, RouteLabels>> = LazyLock::new(|| {
    let sets = [
        holdfast_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut routes = HashMap::new();
    routes.insert(UNKNOWN_ROUTE.to_string(), RouteLabels::new("unknown", "unknown"));
    for bytes in sets {
        // The sets are compiled in; one that does not decode simply adds no routes.
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                let qualified = if package.is_empty() {
                    service_name
                } else {
                    format!("{package}.{service_name}")
                };
                for method in service.method {
                    let method = method.name.unwrap_or_default();
                    routes.insert(
                        format!("/{qualified}/{method}"),
                        RouteLabels::new(&qualified, &method),
                    );
                }
            }
        }
    }
    routes
});

/// `path` when it names an RPC this process can serve, else [`UNKNOWN_ROUTE`]: labels made
/// from raw request paths would let any client add metric series (and memory) for ever.
pub fn route(path: &str) -> &'static str {
    KNOWN_ROUTES
        .get_key_value(path)
        .map_or(UNKNOWN_ROUTE, |(known, _)| known.as_str())
}

/// The span name of a [`route`] (`holdfast.inventory.v1.InventoryService/Reserve`), and its
/// service and method.
pub fn route_names(route: &str) -> (&'static str, &'static str, &'static str) {
    match KNOWN_ROUTES.get(route) {
        Some(labels) => (
            labels.span_name.as_str(),
            labels.service.as_str(),
            labels.method.as_str(),
        ),
        None => ("unknown/unknown", "unknown", "unknown"),
    }
}

/// The name of a gRPC code as the `code` label shows it (its `Debug` form).
fn code_label(code: tonic::Code) -> &'static str {
    const NAMES: [&str; 17] = [
        "Ok",
        "Cancelled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(code as usize).copied().unwrap_or("Unknown")
}

/// Records one finished RPC under the labels of `path` as given; callers pass [`route`]'s
/// answer so unknown paths share one series.
pub fn record_rpc(path: &str, code: tonic::Code, elapsed_seconds: f64) {
    let (service, method) = match KNOWN_ROUTES.get(path) {
        Some(labels) => {
            let (requests, latency) = labels.series();
            requests.inc();
            latency.observe(elapsed_seconds);
            (labels.service.as_str(), labels.method.as_str())
        }
        None => {
            let (service, method) = rpc_labels(path);
            RPC_REQUESTS.with_label_values(&[service, method]).inc();
            RPC_LATENCY
                .with_label_values(&[service, method])
                .observe(elapsed_seconds);
            (service, method)
        }
    };
    if code != tonic::Code::Ok {
        RPC_ERRORS
            .with_label_values(&[service, method, code_label(code)])
            .inc();
    }
}

/// The gRPC status of a response: from `grpc-status` in the headers (tonic answers errors of
/// unary calls trailers-only), else OK, since a unary success carries its status in trailers.
pub fn response_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Text exposition of every registered metric.
pub fn render() -> String {
    let families = prometheus::gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|e| format!("# encode error: {e}\n"))
}

/// Tower layer recording [`record_rpc`] for every request that reaches a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
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
        let path = route(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response_code(response),
                Err(_) => tonic::Code::Unknown,
            };
            record_rpc(path, code, started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_split_service_and_method() {
        assert_eq!(
            rpc_labels("/holdfast.inventory.v1.InventoryService/Reserve"),
            ("holdfast.inventory.v1.InventoryService", "Reserve")
        );
        assert_eq!(rpc_labels("/"), ("unknown", "unknown"));
        assert_eq!(rpc_labels("/only"), ("unknown", "unknown"));
    }

    #[test]
    fn record_rpc_counts_errors_by_code() {
        let path = "/test.Svc/Method";
        record_rpc(path, tonic::Code::Ok, 0.001);
        record_rpc(path, tonic::Code::InvalidArgument, 0.001);
        let text = render();
        assert!(
            text.contains(r#"holdfast_rpc_requests_total{method="Method",service="test.Svc"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"holdfast_rpc_errors_total{code="InvalidArgument",method="Method",service="test.Svc"} 1"#
            ),
            "{text}"
        );
    }

    /// The number of distinct `holdfast_rpc_requests_total` series exposed now.
    fn request_series() -> usize {
        render()
            .lines()
            .filter(|l| l.starts_with("holdfast_rpc_requests_total{"))
            .count()
    }

    #[tokio::test]
    async fn rpc_metrics_collapse_unknown_paths_into_one_series() {
        use tower::ServiceExt as _;
        let inner = tower::service_fn(|_request: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let mut service = RpcMetricsLayer.layer(inner);
        let call = |path: String| http::Request::builder().uri(path).body(()).expect("request");
        // One bogus path first, so the shared `unknown` series exists before counting.
        service
            .ready()
            .await
            .expect("ready")
            .call(call("/warmup.S/M".into()))
            .await
            .expect("call");
        let before = request_series();
        for i in 0..1_000 {
            service
                .ready()
                .await
                .expect("ready")
                .call(call(format!("/a{i}.S/M{i}")))
                .await
                .expect("call");
        }
        assert_eq!(request_series(), before, "bogus paths must not add series");
        assert!(
            render().contains(r#"holdfast_rpc_requests_total{method="unknown",service="unknown"} 1001"#),
            "{}",
            render()
        );

        let known = "/holdfast.inventory.v1.InventoryService/Reserve";
        service
            .ready()
            .await
            .expect("ready")
            .call(call(known.into()))
            .await
            .expect("call");
        assert!(
            render().contains(
                r#"holdfast_rpc_requests_total{method="Reserve",service="holdfast.inventory.v1.InventoryService"} 1"#
            ),
            "{}",
            render()
        );
    }

    #[test]
    fn route_knows_every_served_rpc_and_nothing_else() {
        for known in [
            "/holdfast.catalog.v1.CatalogService/GetProduct",
            "/holdfast.orders.v1.OrderService/Checkout",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(route(known), known);
        }
        for unknown in [
            "/",
            "/x",
            "/holdfast.catalog.v1.CatalogService/Nope",
            "/a.B/GetProduct",
        ] {
            assert_eq!(route(unknown), UNKNOWN_ROUTE);
        }
    }

    #[test]
    fn response_code_reads_trailers_only_status() {
        let mut response = http::Response::new(());
        assert_eq!(response_code(&response), tonic::Code::Ok);
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(response_code(&response), tonic::Code::InvalidArgument);
    }
}
