//! `--auth-jwks https://...`: a JWKS fetched by URL (hyper 1 over tokio, rustls for
//! `https`), fetched once at start (a failure there is a configuration error), then again
//! every `--auth-jwks-refresh` and when a token names a `kid` the set does not know (at most
//! once per `--auth-jwks-min-refetch`, so a flood of forged kids cannot turn into a flood of
//! fetches). A failed refresh is logged and the last good key set stays in force.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::AuthError;
use super::keys::KeySet;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// One fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the system's CA bundle usually is (Debian/Ubuntu, then Fedora/RHEL); `SSL_CERT_FILE`
/// first when set.
const SYSTEM_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// How often to fetch.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Fetch again this long after the last fetch.
    pub every: Duration,
    /// An unknown `kid` fetches early, at most this often.
    pub min_refetch: Duration,
}

/// A JWKS kept fresh from a URL.
pub struct RemoteJwks {
    url: hyper::Uri,
    tls: Option<tokio_rustls::TlsConnector>,
    keys: RwLock<Arc<KeySet>>,
    kick: tokio::sync::Notify,
    last_kick: Mutex<Option<Instant>>,
    policy: RefreshPolicy,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

/// Whether `--auth-jwks` names a URL rather than a file.
pub fn is_url(value: &str) -> bool {
    value.starts_with("https://") || value.starts_with("http://")
}

impl RemoteJwks {
    /// Fetches `url` once (an error if that fails or holds no usable key) and starts the
    /// refresher on the current tokio runtime. `ca` is a PEM bundle trusted for `https`
    /// (default: `SSL_CERT_FILE`, else the system bundle).
    pub async fn start(url: &str, ca: Option<&Path>, policy: RefreshPolicy) -> Result<Arc<Self>, AuthError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| AuthError::Key(format!("--auth-jwks {url:?}: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("https") => Some(connector(ca)?),
            Some("http") => None,
            _ => {
                return Err(AuthError::Key(format!(
                    "--auth-jwks {url:?}: http:// or https:// expected"
                )));
            }
        };
        if uri.host().is_none() {
            return Err(AuthError::Key(format!("--auth-jwks {url:?}: no host")));
        }
        let first = fetch(&uri, tls.as_ref()).await?;
        tracing::info!(url, keys = ?first, "auth: JWKS fetched");
        let remote = Arc::new(Self {
            url: uri,
            tls,
            keys: RwLock::new(Arc::new(first)),
            kick: tokio::sync::Notify::new(),
            last_kick: Mutex::new(None),
            policy,
        });
        tokio::spawn(refresh_loop(remote.clone()));
        Ok(remote)
    }

    /// The key set in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A token named a `kid` no key has: fetch early, unless that was done too recently.
    pub fn unknown_kid(&self) {
        let mut last = self.last_kick.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.policy.min_refetch) {
            return;
        }
        *last = Some(now);
        self.kick.notify_one();
    }

    async fn refresh(&self) {
        match fetch(&self.url, self.tls.as_ref()).await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, ?keys, "auth: JWKS refreshed");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "auth: JWKS refresh failed; keeping the last good keys")
            }
        }
    }
}

/// Refreshes for the life of the runtime: every `policy.every`, or at once when kicked.
async fn refresh_loop(remote: Arc<RemoteJwks>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(remote.policy.every) => {}
            _ = remote.kick.notified() => {}
        }
        remote.refresh().await;
    }
}

fn connector(ca: Option<&Path>) -> Result<tokio_rustls::TlsConnector, AuthError> {
    let path = match ca {
        Some(path) => path.to_path_buf(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                SYSTEM_CA_BUNDLES
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|p| p.exists())
            })
            .ok_or_else(|| AuthError::Key("https JWKS: no CA bundle found; give --auth-jwks-ca".into()))?,
    };
    let pem = std::fs::read(&path).map_err(|e| AuthError::Key(format!("reading {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        // A bundle may hold certificates rustls cannot use; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(AuthError::Key(format!(
            "{}: no CA certificate in it",
            path.display()
        )));
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| AuthError::Key(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One GET of the JWKS, parsed.
async fn fetch(url: &hyper::Uri, tls: Option<&tokio_rustls::TlsConnector>) -> Result<KeySet, AuthError> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, get(url, tls))
        .await
        .map_err(|_| AuthError::Key(format!("GET {url}: no answer within {FETCH_TIMEOUT:?}")))??;
    let json = std::str::from_utf8(&body).map_err(|e| AuthError::Key(format!("GET {url}: {e}")))?;
    KeySet::from_jwks(json)
}

async fn get(url: &hyper::Uri, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Bytes, AuthError> {
    let err = |what: &str, e: &dyn std::fmt::Display| AuthError::Key(format!("GET {url}: {what}: {e}"));
    let host = url
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| err("connect", &e))?;
    let request = hyper::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, url.authority().map_or(host, |a| a.as_str()))
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| err("request", &e))?;
    match tls {
        Some(tls) => {
            let name = ServerName::try_from(host.to_string()).map_err(|e| err("server name", &e))?;
            let stream = tls.connect(name, tcp).await.map_err(|e| err("TLS", &e))?;
            send(stream, request, url).await
        }
        None => send(tcp, request, url).await,
    }
}

async fn send<T>(io: T, request: hyper::Request<Empty<Bytes>>, url: &hyper::Uri) -> Result<Bytes, AuthError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let err = |what: &str, e: &dyn std::fmt::Display| AuthError::Key(format!("GET {url}: {what}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| err("HTTP", &e))?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| err("HTTP", &e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| err("body", &*e))?
        .to_bytes();
    connection.abort();
    if !status.is_success() {
        return Err(AuthError::Key(format!("GET {url}: HTTP {status}")));
    }
    Ok(body)
}
