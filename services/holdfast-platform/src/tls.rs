//! TLS for the public listener (rustls over ring) and for the channels services call each
//! other on: the `--tls-*` flags ([`TlsArgs`]), the server side ([`ServerTls`], whose
//! certificate reloads when its files change) and the peer side ([`PeerTls`]).
//!
//! Without `--tls-cert` the listener speaks plaintext gRPC and grpc-web, as `holdfast dev`
//! always has. With it, every connection is TLS (ALPN `h2` and `http/1.1`, so grpc-web from
//! browsers works too); with `--tls-client-ca` as well, every caller must present a
//! certificate that CA signed (mutual TLS: for a process only other services call).

mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::duration::parse_duration;

pub use server::{ServerTls, TlsIncoming};

/// The `--tls-*` flags: the listener's certificate, the CA its callers' certificates must
/// chain to (mutual TLS), and what this process presents and trusts when it calls its peers.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain for the gRPC listener (leaf first). With --tls-key, the listener
    /// speaks TLS only; the files are re-read when they change (no restart).
    #[arg(long, env = "HOLDFAST_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "HOLDFAST_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): when set, every caller must present a client certificate
    /// signed by one of them (mutual TLS; for processes only other services call).
    #[arg(
        long,
        env = "HOLDFAST_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the certificate files are checked for a change.
    #[arg(long, env = "HOLDFAST_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// PEM CA certificate(s) that `https://` peer URLs (and this process's own TLS listener,
    /// when its services call each other) are verified against.
    #[arg(long, env = "HOLDFAST_TLS_PEER_CA", value_name = "FILE")]
    pub tls_peer_ca: Option<PathBuf>,

    /// PEM client certificate this process presents to `https://` peers (their
    /// --tls-client-ca must trust it).
    #[arg(long, env = "HOLDFAST_TLS_PEER_CERT", value_name = "FILE", requires_all = ["tls_peer_key", "tls_peer_ca"])]
    pub tls_peer_cert: Option<PathBuf>,

    /// PEM private key of --tls-peer-cert.
    #[arg(
        long,
        env = "HOLDFAST_TLS_PEER_KEY",
        value_name = "FILE",
        requires = "tls_peer_cert"
    )]
    pub tls_peer_key: Option<PathBuf>,

    /// Name this process's own certificate is verified against when its services call each
    /// other over its TLS listener (peer URLs left unset).
    #[arg(
        long,
        env = "HOLDFAST_TLS_SELF_NAME",
        default_value = "localhost",
        value_name = "NAME"
    )]
    pub tls_self_name: String,
}

/// A TLS file that cannot be used: names the flag and the file.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {reason}", path.display())]
pub struct TlsError {
    /// The flag that named the file.
    pub flag: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsError {
    fn new(flag: &'static str, path: &Path, reason: impl std::fmt::Display) -> Self {
        Self {
            flag,
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl TlsArgs {
    /// The listener's TLS, loaded and checked (the key matches the certificate), or `None`
    /// for plaintext.
    pub fn server(&self) -> Result<Option<ServerTls>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        ServerTls::load(cert, key, self.tls_client_ca.as_deref(), self.tls_reload_interval).map(Some)
    }

    /// How this process calls its peers. `listener_tls` says whether its own listener speaks
    /// TLS (then services here call each other over it, verifying --tls-self-name).
    pub fn peers(&self, listener_tls: bool) -> Result<PeerTls, TlsError> {
        let client = match &self.tls_peer_ca {
            None => None,
            Some(ca) => {
                let pem = read_certs("--tls-peer-ca", ca)?.1;
                let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
                if let (Some(cert), Some(key)) = (&self.tls_peer_cert, &self.tls_peer_key) {
                    let cert_pem = read_certs("--tls-peer-cert", cert)?.1;
                    let key_pem = read_key("--tls-peer-key", key)?.1;
                    config = config.identity(Identity::from_pem(cert_pem, key_pem));
                }
                Some(config)
            }
        };
        Ok(PeerTls {
            client,
            self_name: listener_tls.then(|| self.tls_self_name.clone()),
        })
    }
}

/// How a process's services reach the services they call: which TLS `https://` peers get,
/// and whether calls to this very process (peer URLs left unset) go over TLS.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    client: Option<ClientTlsConfig>,
    self_name: Option<String>,
}

impl PeerTls {
    /// Plaintext everywhere (`holdfast dev` and tests).
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// An endpoint for `url` (a peer flag), or for this process at `self_addr` when unset.
    pub fn endpoint(
        &self,
        url: Option<&str>,
        self_addr: std::net::SocketAddr,
    ) -> anyhow::Result<tonic::transport::Endpoint> {
        let (url, self_name) = match (url, &self.self_name) {
            (Some(url), _) => (url.to_string(), None),
            (None, None) => (format!("http://{self_addr}"), None),
            (None, Some(name)) => {
                // A wildcard listen address is reachable on loopback.
                let mut addr = self_addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                (format!("https://{addr}"), Some(name.clone()))
            }
        };
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let Some(client) = self.client.clone() else {
            anyhow::bail!("calling {url} over TLS needs --tls-peer-ca (the CA that signed its certificate)");
        };
        let client = match self_name {
            Some(name) => client.domain_name(name),
            None => client,
        };
        Ok(endpoint.tls_config(client)?)
    }
}

/// Reads a PEM file of one or more certificates: the parsed chain and the raw text.
fn read_certs(flag: &'static str, path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::new(flag, path, e))?;
    let certs = parse_certs(&pem).map_err(|reason| TlsError::new(flag, path, reason))?;
    Ok((certs, pem))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// Reads a PEM private key: the parsed key and the raw text.
fn read_key(flag: &'static str, path: &Path) -> Result<(PrivateKeyDer<'static>, Vec<u8>), TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::new(flag, path, e))?;
    let key = parse_key(&pem).map_err(|reason| TlsError::new(flag, path, reason))?;
    Ok((key, pem))
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no PEM private key in it: {e}"))
}

/// The one crypto provider: ring, as tonic's `tls-ring` feature uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(parse_certs(b"hello").is_err());
        assert!(parse_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }

    #[test]
    fn https_peer_without_a_ca_is_a_config_error() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 50051));
        let plain = PeerTls::plaintext();
        assert!(plain.endpoint(None, addr).is_ok());
        assert!(plain.endpoint(Some("http://catalog:50051"), addr).is_ok());
        let error = plain
            .endpoint(Some("https://catalog:50051"), addr)
            .expect_err("no CA");
        assert!(error.to_string().contains("--tls-peer-ca"), "{error}");
        let over_tls = PeerTls {
            client: None,
            self_name: Some("localhost".into()),
        };
        assert!(
            over_tls.endpoint(None, addr).is_err(),
            "self over TLS needs a CA too"
        );
    }
}
