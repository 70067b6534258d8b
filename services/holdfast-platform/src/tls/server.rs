//! The listener's side: a certificate resolver whose certificate is swapped atomically when
//! its files change, and the stream of TLS connections the gRPC server serves.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use super::{TlsError, parse_certs, parse_key, provider, read_certs};

/// How long a client gets to finish its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[allow(clippy::expect_used)] // registering a static metric can only fail on a duplicate name, a programming error.
static RELOADS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "holdfast_tls_certificate_reloads_total",
        "Changed certificate files: loaded (served to new connections) or refused (the previous one kept).",
        &["result"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static HANDSHAKE_FAILURES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "holdfast_tls_handshake_failures_total",
        "Connections dropped before their TLS handshake completed (plaintext callers, untrusted or missing client certificates, timeouts)."
    )
    .expect("metric registers once")
});

/// The listener's TLS: the rustls configuration (ALPN `h2`, `http/1.1`; client certificates
/// required when a client CA is configured) over a certificate that reloads from its files.
/// Cheap to clone; every clone shares the certificate.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    resolver: Arc<Reloading>,
    interval: Duration,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.resolver.cert_path)
            .field("key", &self.resolver.key_path)
            .field("mutual", &self.mutual())
            .finish_non_exhaustive()
    }
}

/// The current certificate and the files it came from.
#[derive(Debug)]
struct Reloading {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents last tried (loaded or refused), so a bad pair is reported once.
    last_seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

/// A certificate chain and a key that belongs to it.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = parse_certs(cert_pem)?;
    let key = parse_key(key_pem)?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("certificate and key do not go together: {e}"))
}

impl ServerTls {
    /// Loads `cert` and `key` (and `client_ca`: callers must then present a certificate it
    /// signed); the files are checked every `interval` once serving.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        interval: Duration,
    ) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read(cert).map_err(|e| TlsError::new("--tls-cert", cert, e))?;
        let key_pem = std::fs::read(key).map_err(|e| TlsError::new("--tls-key", key, e))?;
        parse_certs(&cert_pem).map_err(|e| TlsError::new("--tls-cert", cert, e))?;
        parse_key(&key_pem).map_err(|e| TlsError::new("--tls-key", key, e))?;
        let certified = certified_key(&cert_pem, &key_pem).map_err(|e| TlsError::new("--tls-key", key, e))?;
        let resolver = Arc::new(Reloading {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
            last_seen: Mutex::new((cert_pem, key_pem)),
        });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("--tls-cert", cert, e))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("--tls-client-ca", ca)?.0 {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::new("--tls-client-ca", ca, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::new("--tls-client-ca", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        // gRPC over HTTP/2; grpc-web from browsers may arrive over HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            resolver,
            interval,
            mutual: client_ca.is_some(),
        })
    }

    /// Whether callers must present a client certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// Re-reads the files: a changed, valid pair replaces the certificate served to new
    /// connections (`Ok(true)`); a changed, bad pair is refused and the old one kept.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let r = &self.resolver;
        let cert_pem =
            std::fs::read(&r.cert_path).map_err(|e| TlsError::new("--tls-cert", &r.cert_path, e))?;
        let key_pem = std::fs::read(&r.key_path).map_err(|e| TlsError::new("--tls-key", &r.key_path, e))?;
        {
            let mut last = r
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.0 == cert_pem && last.1 == key_pem {
                return Ok(false);
            }
            *last = (cert_pem.clone(), key_pem.clone());
        }
        let certified =
            certified_key(&cert_pem, &key_pem).map_err(|e| TlsError::new("--tls-cert", &r.cert_path, e))?;
        *r.current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(certified);
        Ok(true)
    }

    /// Checks the files every interval until dropped, logging each swap and each refusal
    /// (once per bad pair: a half-written pair is retried when the other file lands).
    async fn watch(self) {
        // A zero interval would make tokio's timer panic; ten milliseconds is plenty eager.
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => {
                    RELOADS.with_label_values(&["loaded"]).inc();
                    tracing::info!(cert = %self.resolver.cert_path.display(), "TLS certificate reloaded");
                }
                Ok(false) => {}
                Err(error) => {
                    RELOADS.with_label_values(&["refused"]).inc();
                    tracing::error!(%error, "TLS certificate not reloaded; still serving the previous one");
                }
            }
        }
    }

    /// Accepts on `listener` and hands the server each connection once its handshake is
    /// done; handshakes run concurrently, so a slow client holds up no one else. Also
    /// watches the certificate files. Everything stops when the stream is dropped.
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        let (tx, rx) = mpsc::channel(256);
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let accept = tokio::spawn(accept_loop(listener, acceptor, tx));
        let watch = tokio::spawn(self.clone().watch());
        TlsIncoming {
            rx,
            tasks: [accept, watch],
        }
    }
}

type Accepted = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>;

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, tx: mpsc::Sender<Accepted>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // The server stopped taking connections: close the listener now.
            () = tx.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without TCP_NODELAY a small response waits for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                // Plaintext callers, scanners, clients without a certificate under mTLS:
                // theirs to see, not an error of ours.
                Ok(Err(error)) => {
                    HANDSHAKE_FAILURES.inc();
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => {
                    HANDSHAKE_FAILURES.inc();
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// TLS connections ready to serve (see [`ServerTls::incoming`]).
pub struct TlsIncoming {
    rx: mpsc::Receiver<Accepted>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl futures::Stream for TlsIncoming {
    type Item = Accepted;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Reloading {
    #[cfg(test)]
    fn serial(&self) -> Vec<u8> {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current.cert[0].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_bad_new_pair_is_refused_and_the_old_one_kept_until_a_good_one_lands() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (first_cert, first_key) = pair("first.test");
        std::fs::write(&cert, &first_cert).expect("write");
        std::fs::write(&key, &first_key).expect("write");
        let tls = ServerTls::load(&cert, &key, None, Duration::from_secs(1)).expect("load");
        let first = tls.resolver.serial();
        assert!(!tls.reload().expect("unchanged"), "nothing changed");

        // Half a rotation: a new certificate next to the old key.
        let (second_cert, second_key) = pair("second.test");
        std::fs::write(&cert, &second_cert).expect("write");
        let error = tls.reload().expect_err("mismatched pair");
        assert!(error.to_string().contains("do not go together"), "{error}");
        assert_eq!(
            tls.resolver.serial(),
            first,
            "the old certificate is still served"
        );
        assert!(
            !tls.reload().expect("same bad pair"),
            "a bad pair is reported once"
        );

        std::fs::write(&key, &second_key).expect("write");
        assert!(tls.reload().expect("good pair"));
        assert_ne!(tls.resolver.serial(), first, "the new certificate is served");

        std::fs::write(&cert, "garbage").expect("write");
        assert!(tls.reload().is_err());
        assert_ne!(tls.resolver.serial(), first);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, pair("a.test").0).expect("write");
        std::fs::write(&key, pair("b.test").1).expect("write");
        let error = ServerTls::load(&cert, &key, None, Duration::from_secs(1)).expect_err("mismatch");
        assert_eq!(error.flag, "--tls-key");
    }
}
