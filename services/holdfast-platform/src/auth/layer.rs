//! The tower layer that authenticates every RPC: it reads `authorization: Bearer <jwt>`
//! (gRPC and grpc-web alike: grpc-web translation runs before it), verifies it, checks the
//! role the RPC's table row asks for and puts the [`Caller`] into the request's extensions,
//! where handlers read it with [`Caller::of`].

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, Either};
use tonic::Status;
use tower::{Layer, Service};

use super::claims::Caller;
use super::table::{AuthzTable, PUBLIC_SERVICES, Rule};
use super::verify::Verifier;

/// Authenticates and authorizes every RPC; a layer without a verifier lets everything through.
#[derive(Clone, Default)]
pub struct AuthLayer {
    policy: Option<Arc<Policy>>,
}

struct Policy {
    verifier: Verifier,
    rules: HashMap<String, Rule>,
}

impl AuthLayer {
    /// Enforces `tables` with `verifier`; `None` means auth is off.
    pub fn new(verifier: Option<Verifier>, tables: &[&'static AuthzTable]) -> Self {
        Self {
            policy: verifier.map(|verifier| {
                Arc::new(Policy {
                    verifier,
                    rules: tables.iter().flat_map(|t| t.paths()).collect(),
                })
            }),
        }
    }

    /// Whether requests are checked.
    pub fn enforcing(&self) -> bool {
        self.policy.is_some()
    }
}

impl Policy {
    /// The caller, or the status to answer with.
    fn admit(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Caller>, Status> {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        if PUBLIC_SERVICES.contains(&service) {
            return Ok(None);
        }
        let rule = self.rules.get(path).copied();
        if rule == Some(Rule::Public) {
            return Ok(None);
        }
        let header = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(super::AuthError::Missing)?;
        let caller = self.verifier.verify(Verifier::bearer(header)?)?;
        match rule {
            Some(rule) if rule.allows(caller.role) => Ok(Some(caller)),
            Some(rule) => Err(Status::permission_denied(format!(
                "{path} needs {rule:?}; this token's role is {}",
                caller.role.as_str()
            ))),
            None => Err(Status::permission_denied(format!(
                "{path}: no authorization rule"
            ))),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    policy: Option<Arc<Policy>>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Auth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(policy) = &self.policy else {
            return Either::Left(self.inner.call(request));
        };
        match policy.admit(request.uri().path(), request.headers()) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Either::Left(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "rpc refused by auth");
                Either::Right(Box::pin(std::future::ready(Ok(status.into_http()))))
            }
        }
    }
}
