//! Logs and traces.
//!
//! Logs go to stderr (pretty or JSON). Spans always carry OpenTelemetry context, so the W3C
//! `traceparent` of an incoming call continues into every outgoing call even when nothing is
//! exported; spans are exported over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! Without an exporter, a span is not recorded unless its caller asked for it (the
//! `ParentBased(AlwaysOff)` sampler): its context still carries the trace id on, with a fresh
//! span id, but no span data is built only to be dropped.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider alive; flushes pending spans when dropped.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Best effort: a collector that went away must not block shutdown.
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber. `service` names the process in exported spans.
///
/// Log level comes from `RUST_LOG` (default `info`). Safe to call more than once (tests): later
/// calls keep the first subscriber.
pub fn init(service: &str, log_format: &str) -> anyhow::Result<TelemetryGuard> {
    let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    init_with_log_filter(service, log_format, &log_filter)
}

/// Like [`init`], with the log filter given (an `EnvFilter` directive such as `warn`).
pub fn init_with_log_filter(
    service: &str,
    log_format: &str,
    log_filter: &str,
) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let exporter = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| anyhow::anyhow!("otlp exporter: {e}"))?,
        )
    } else {
        None
    };
    let exporting = exporter.is_some();
    let provider = tracer_provider(service, exporter);
    let tracer = provider.tracer("holdfast");
    opentelemetry::global::set_tracer_provider(provider.clone());

    // RUST_LOG filters what is logged, never what is traced: with a global filter, `warn`
    // would disable the per-RPC span and silently stop traceparent propagation.
    let log_filter = EnvFilter::try_new(log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if log_format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed()
    };
    let traces = spans_layer(tracer, exporting).with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry().with(fmt).with(traces).try_init();
    Ok(TelemetryGuard { provider })
}

/// The layer that gives spans their OpenTelemetry context. Without an exporter nothing reads
/// a span's attributes, so it records none of its own (source location, thread, target),
/// keeps no busy/idle clock and does not attach its context on every poll (nothing here reads
/// `opentelemetry::Context::current`: propagation reads the span's own context). On Reserve
/// this took the layer from ≈6.5% to ≈4.5% of the server's CPU (docs/performance.md); the rest
/// is the span's own fields and building the unsampled span on close.
fn spans_layer<S>(
    tracer: opentelemetry_sdk::trace::Tracer,
    exporting: bool,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(exporting)
        .with_threads(exporting)
        .with_target(exporting)
        .with_tracked_inactivity(exporting)
        .with_context_activation(exporting)
}

/// The tracer provider: with an exporter, every span is sampled unless its caller said not to
/// (the SDK default); without one, no span is recorded unless its caller asked for it.
fn tracer_provider(service: &str, exporter: Option<opentelemetry_otlp::SpanExporter>) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(format!("holdfast-{service}"))
            .build(),
    );
    match exporter {
        Some(exporter) => builder
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_batch_exporter(exporter)
            .build(),
        None => builder
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build(),
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Makes `span` a child of the W3C trace context in `headers`, if there is one.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        // Nothing to continue: the span is a root (no extraction, no context switch).
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// A bare W3C `traceparent` value, as carried in a Kafka header.
struct TraceparentExtractor<'a>(Option<&'a str>);

impl Extractor for TraceparentExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case("traceparent") {
            self.0
        } else {
            None
        }
    }
    fn keys(&self) -> Vec<&str> {
        self.0.map(|_| vec!["traceparent"]).unwrap_or_default()
    }
}

/// Makes `span` a child of the W3C `traceparent` value (an event header), if there is one.
/// Call it before the span is first entered.
pub fn continue_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if traceparent.is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&TraceparentExtractor(traceparent));
    let _ = span.set_parent(parent);
}

/// The current span's W3C `traceparent`, for stamping on an event; `None` outside any trace.
pub fn current_traceparent() -> Option<String> {
    struct One(Option<String>);
    impl Injector for One {
        fn set(&mut self, key: &str, value: String) {
            if key.eq_ignore_ascii_case("traceparent") {
                self.0 = Some(value);
            }
        }
    }
    let mut one = One(None);
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut one);
    one.0
}

/// Writes the current span's W3C trace context into outgoing gRPC metadata.
pub fn inject_trace(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// A tonic client interceptor that propagates the caller's trace to the callee. Wrap every
/// client channel a service builds with it: `FooClient::with_interceptor(channel, ctx.outbound())`.
/// It also presents the process's `service` token when it has one
/// ([`TracePropagation::with_credentials`], [`crate::Context::outbound`]).
#[derive(Debug, Clone, Default)]
pub struct TracePropagation {
    credentials: crate::auth::ServiceCredentials,
}

impl TracePropagation {
    /// Propagates the trace and presents `credentials`.
    pub fn with_credentials(credentials: crate::auth::ServiceCredentials) -> Self {
        Self { credentials }
    }
}

impl tonic::service::Interceptor for TracePropagation {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace(request.metadata_mut());
        if let Some(value) = self.credentials.authorization() {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// The trace id of the current span, as 32 hex digits (all zeros outside any trace).
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    /// Runs `f` under a subscriber wired like [`init`]'s, on a provider without an exporter.
    fn without_exporter<R>(f: impl FnOnce() -> R) -> R {
        let provider = tracer_provider("test", None);
        let subscriber = tracing_subscriber::registry().with(spans_layer(provider.tracer("holdfast"), false));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn headers(traceparent: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().expect("header"));
        headers
    }

    #[test]
    fn without_an_exporter_a_root_span_is_not_recorded_but_has_a_valid_context() {
        without_exporter(|| {
            let span = tracing::info_span!("rpc");
            let cx = span.context();
            let otel = cx.span();
            assert!(!otel.is_recording(), "no span data built without an exporter");
            assert!(otel.span_context().is_valid(), "ids exist to propagate");
            assert!(!otel.span_context().is_sampled());
        });
    }

    #[test]
    fn without_an_exporter_an_unsampled_caller_continues_its_trace_unrecorded() {
        without_exporter(|| {
            let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
            let span = tracing::info_span!("rpc");
            continue_trace(&span, &headers(&format!("00-{trace_id}-00f067aa0ba902b7-00")));
            let cx = span.context();
            let otel = cx.span();
            assert!(!otel.is_recording());
            assert_eq!(otel.span_context().trace_id().to_string(), trace_id);
            let child = span.in_scope(current_traceparent).expect("a traceparent");
            assert!(child.starts_with(&format!("00-{trace_id}-")), "{child}");
            assert!(
                !child.contains("00f067aa0ba902b7"),
                "a span id of its own: {child}"
            );
        });
    }

    #[test]
    fn without_an_exporter_a_sampled_caller_keeps_its_sampled_flag_downstream() {
        without_exporter(|| {
            let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
            let span = tracing::info_span!("rpc");
            continue_trace(&span, &headers(&format!("00-{trace_id}-00f067aa0ba902b7-01")));
            let child = span.in_scope(current_traceparent).expect("a traceparent");
            assert!(child.starts_with(&format!("00-{trace_id}-")), "{child}");
            assert!(
                child.ends_with("-01"),
                "the caller's sampling decision travels on: {child}"
            );
        });
    }
}
