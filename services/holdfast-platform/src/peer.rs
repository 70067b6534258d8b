//! Channels to the services a service calls ([`PeerChannel`]): real gRPC to a peer named by a
//! URL flag, or an in-process call when the peer runs in this process ([`LocalServices`]).
//!
//! An in-process call skips TCP, HTTP/2 and the listener's stack, not the checks: it runs
//! the peer's gRPC service (protobuf encoding included) behind the layers that decide the
//! answer, in this order:
//!
//! 1. the deadline: the caller's `grpc-timeout`, capped by the server's `--request-timeout`;
//!    past it the call answers DEADLINE_EXCEEDED (and is counted as such);
//! 2. a bounded semaphore per upstream (`--peer-concurrency`): a call beyond the bound
//!    *waits* for a slot, within its deadline, instead of being shed. The caller is a saga
//!    step or a cart call that already passed the listener's load-shedding; shedding it here
//!    would fail work that was admitted, so the bound only keeps one upstream from taking
//!    every worker, and the deadline turns a long wait into DEADLINE_EXCEEDED;
//! 3. the RPC span, a child of the caller's `traceparent` (the client interceptor writes it
//!    as over the network);
//! 4. the per-RPC metrics;
//! 5. authentication and authorization of the caller's token (the process's `service`
//!    token), which puts the verified [`crate::auth::Caller`] into the extensions.
//!
//! The request's extensions are cleared first, as the network would: a caller cannot hand
//! the callee a `Caller` of its own making. CORS, grpc-web and the listener's global
//! concurrency limit do not apply (no browser and no connection is involved).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, watch};
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt as _};

use crate::metrics;

type Request = http::Request<Body>;
type Response = http::Response<Body>;

/// A channel to a peer service; every generated client works over it
/// (`InventoryServiceClient::with_interceptor(channel, ctx.outbound())`).
#[derive(Clone)]
pub struct PeerChannel {
    inner: BoxCloneSyncService<Request, Response, BoxError>,
    in_process: bool,
}

impl std::fmt::Debug for PeerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerChannel")
            .field("in_process", &self.in_process)
            .finish_non_exhaustive()
    }
}

impl PeerChannel {
    /// Whether calls stay in this process.
    pub fn is_in_process(&self) -> bool {
        self.in_process
    }
}

impl From<tonic::transport::Channel> for PeerChannel {
    fn from(channel: tonic::transport::Channel) -> Self {
        Self {
            inner: BoxCloneSyncService::new(channel.map_err(BoxError::from)),
            in_process: false,
        }
    }
}

impl Service<Request> for PeerChannel {
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.inner.call(request)
    }
}

/// The stack an in-process call enters: trace, metrics, auth, the routes.
pub(crate) type LocalStack = BoxCloneSyncService<Request, Response, Infallible>;

#[derive(Clone)]
struct Installed {
    stack: LocalStack,
    request_timeout: Duration,
}

/// This process's gRPC services as in-process channels reach them. The server installs its
/// stack when it starts serving ([`crate::GrpcServer::serve`]); a call made before waits for
/// that, within its deadline, as a call to a bound but not yet accepting socket would.
#[derive(Clone)]
pub struct LocalServices {
    installed: Arc<watch::Sender<Option<Installed>>>,
    limits: Arc<Mutex<HashMap<&'static str, Arc<Semaphore>>>>,
}

impl Default for LocalServices {
    fn default() -> Self {
        Self {
            installed: Arc::new(watch::Sender::new(None)),
            limits: Arc::default(),
        }
    }
}

impl std::fmt::Debug for LocalServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServices")
            .field("serving", &self.installed.borrow().is_some())
            .finish_non_exhaustive()
    }
}

/// The wait for the server when the caller set no deadline (the server's default).
const UNBOUNDED_WAIT: Duration = Duration::from_secs(10);

impl LocalServices {
    /// Makes `stack` what in-process calls reach; `request_timeout` caps their deadlines.
    pub(crate) fn install(&self, stack: LocalStack, request_timeout: Duration) {
        self.installed.send_replace(Some(Installed {
            stack,
            request_timeout,
        }));
    }

    /// An in-process channel to `upstream` (its short name: `inventory`), at most
    /// `concurrency` calls in flight to it from this process (shared by every channel to it).
    pub fn channel(&self, upstream: &'static str, concurrency: usize) -> PeerChannel {
        let limit = {
            let mut limits = self
                .limits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                limits
                    .entry(upstream)
                    .or_insert_with(|| Arc::new(Semaphore::new(concurrency.max(1)))),
            )
        };
        PeerChannel {
            inner: BoxCloneSyncService::new(InProcess {
                installed: self.installed.subscribe(),
                limit,
            }),
            in_process: true,
        }
    }
}

#[derive(Clone)]
struct InProcess {
    installed: watch::Receiver<Option<Installed>>,
    limit: Arc<Semaphore>,
}

impl Service<Request> for InProcess {
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The semaphore is waited for in `call`, under the call's deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // As over the network: nothing but headers and the body reaches the callee.
        *request.extensions_mut() = http::Extensions::new();
        let asked = grpc_timeout(request.headers());
        let mut installed = self.installed.clone();
        let limit = Arc::clone(&self.limit);
        Box::pin(async move {
            let started = Instant::now();
            let path = metrics::route(request.uri().path());
            let ready = installed.borrow().clone();
            let Installed {
                mut stack,
                request_timeout,
            } = match ready {
                Some(ready) => ready,
                None => {
                    let wait = asked.unwrap_or(UNBOUNDED_WAIT);
                    match tokio::time::timeout(wait, installed.wait_for(Option::is_some)).await {
                        Ok(Ok(ready)) => ready.clone().ok_or("not serving")?,
                        Ok(Err(_)) => return Ok(unavailable()),
                        Err(_) => return Ok(deadline_exceeded(path, started)),
                    }
                }
            };
            let deadline = asked.map_or(request_timeout, |asked| asked.min(request_timeout));
            let remaining = deadline.saturating_sub(started.elapsed());
            let call = async move {
                let _permit = limit.acquire_owned().await.map_err(|_| "closed")?;
                let Ok(response) = stack.ready().await?.call(request).await;
                Ok::<_, BoxError>(response)
            };
            // The callee runs in a task of its own, as a gRPC stream's handler does: the
            // caller's task never holds the callee's future (a saga step nesting a whole
            // handler is a deep future; suspected to overflow a worker's stack with the
            // ScyllaDB store), and the two can run on different cores. Dropping the call
            // (deadline, caller gone) aborts it.
            let task = tokio::spawn(call);
            let _abort = AbortOnDrop(task.abort_handle());
            match tokio::time::timeout(remaining, task).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(failed)) => Err(failed.into()),
                Err(_) => Ok(deadline_exceeded(path, started)),
            }
        })
    }
}

/// Aborts the in-process call's task when the call is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn deadline_exceeded(path: &'static str, started: Instant) -> Response {
    let status = tonic::Status::deadline_exceeded("deadline exceeded before the in-process call answered");
    metrics::record_rpc(path, status.code(), started.elapsed().as_secs_f64());
    status.into_http()
}

fn unavailable() -> Response {
    tonic::Status::unavailable("this process stopped serving").into_http()
}

/// The `grpc-timeout` of a request (`<up to 8 digits><H|M|S|m|u|n>`), if it has a valid one.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().expect("header"));
        headers
    }

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_the_rest() {
        assert_eq!(grpc_timeout(&headers("250m")), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&headers("2S")), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(&headers("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(&headers("3M")), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(&headers("10u")), Some(Duration::from_micros(10)));
        assert_eq!(
            grpc_timeout(&headers("99999999n")),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(&headers(bad)), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
