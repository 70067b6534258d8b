//! Clients that present bearer tokens: a channel that adds `authorization: Bearer <token>`
//! to every call, the token picked per RPC path (so one client can call an admin RPC with an
//! admin token and a payments RPC with a service token, as a test's "operator" does).

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;

/// Picks the token for an RPC path (`/holdfast.cart.v1.CartService/GetCart`); `None` sends none.
pub type TokenPicker = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A [`Channel`] whose every request carries the token [`TokenPicker`] picks for its path.
#[derive(Clone)]
pub struct BearerChannel {
    inner: Channel,
    pick: TokenPicker,
}

impl std::fmt::Debug for BearerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerChannel").finish_non_exhaustive()
    }
}

impl BearerChannel {
    /// Every call on `inner` carries `pick(path)`.
    pub fn new(inner: Channel, pick: TokenPicker) -> Self {
        Self { inner, pick }
    }

    /// Every call on `inner` carries `token`.
    pub fn fixed(inner: Channel, token: impl Into<String>) -> Self {
        let token = token.into();
        Self::new(inner, Arc::new(move |_| Some(token.clone())))
    }
}

impl tower::Service<http::Request<Body>> for BearerChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(token) = (self.pick)(request.uri().path())
            && let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            request.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        tower::Service::call(&mut self.inner, request)
    }
}

/// Tokens minted by the dev key of a `holdfast dev` data dir, for tests and tools.
#[derive(Debug, Clone)]
pub struct DevTokens {
    signer: holdfast_platform::auth::Signer,
}

impl DevTokens {
    /// The dev key in `data_dir` (created by `holdfast dev` there, or now).
    pub fn new(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let key = holdfast_platform::auth::DevKey::load_or_create(data_dir)?;
        Ok(Self { signer: key.signer() })
    }

    /// A token for `role` (`sub` = `subject`, `sid` = `session`), valid for an hour.
    pub fn mint(
        &self,
        role: holdfast_platform::auth::Role,
        subject: Option<&str>,
        session: Option<&str>,
    ) -> String {
        #[allow(clippy::expect_used)] // Ed25519 signing of a small claim set does not fail
        self.signer
            .mint(role, subject, session, std::time::Duration::from_secs(3600))
            .expect("mint a dev token")
    }

    /// A customer's token.
    pub fn customer(&self, id: &str) -> String {
        self.mint(holdfast_platform::auth::Role::Customer, Some(id), None)
    }

    /// The signer (for expired or foreign claims).
    pub fn signer(&self) -> &holdfast_platform::auth::Signer {
        &self.signer
    }

    /// An operator's picker: for each RPC a token of a role its row in `tables` lets
    /// through (admin for admin rows, service otherwise), so one client calls everything.
    pub fn operator(&self, tables: &[&'static holdfast_platform::auth::AuthzTable]) -> TokenPicker {
        use holdfast_platform::auth::Role;
        let admin = self.mint(Role::Admin, Some("test-admin"), None);
        let service = self.mint(Role::Service, Some("test-service"), None);
        let rules: std::collections::HashMap<String, holdfast_platform::auth::Rule> =
            tables.iter().flat_map(|t| t.paths()).collect();
        Arc::new(move |path| {
            let role = rules.get(path).map_or(Role::Service, |r| r.sufficient_role());
            Some(if role == Role::Admin {
                admin.clone()
            } else {
                service.clone()
            })
        })
    }
}
