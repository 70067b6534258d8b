//! TLS and CORS on real sockets: a CA, server and client certificates generated here; a
//! tonic client and grpcurl over TLS, plaintext refused, the certificate replaced on disk
//! and served without a restart, mutual TLS, and CORS preflights from allowed and unknown
//! origins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_platform::GrpcServer;
use holdfast_platform::cors::AllowedOrigins;
use holdfast_platform::server::ServerOptions;
use holdfast_platform::tls::{ServerTls, TlsArgs};
use holdfast_testkit::SpawnedServer;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A test CA that signs server and client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// A signed certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IPs), with common name `cn`.
    fn sign(&self, cn: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Files in a temporary directory.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("dir"))
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.path().join(name);
        // Write then rename, as a secret mount or cert-manager would swap the file.
        let tmp = self.0.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

async fn serve(options: ServerOptions) -> SpawnedServer {
    SpawnedServer::start(GrpcServer::new(options))
        .await
        .expect("server")
}

fn tls_options(tls: ServerTls) -> ServerOptions {
    ServerOptions {
        tls: Some(tls),
        ..ServerOptions::default()
    }
}

/// Health/Check over `endpoint` (`https://localhost:port`), with `tls` when given.
async fn health_check(endpoint: String, tls: Option<ClientTlsConfig>) -> Result<ServingStatus, String> {
    let mut endpoint = Endpoint::from_shared(endpoint).expect("endpoint");
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("tls config");
    }
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.into_inner().status())
}

/// Runs grpcurl without blocking the runtime the server under test runs on.
async fn grpcurl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("grpcurl")
        .args(["-max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("grpcurl is installed (see README: tools)")
}

#[tokio::test]
async fn tls_listener_answers_tonic_and_grpcurl_and_refuses_plaintext() {
    let ca = Ca::new("holdfast test CA");
    let server_cert = ca.sign("holdfast", &["localhost", "127.0.0.1"]);
    let files = Files::new();
    let (cert, key) = (
        files.write("tls.crt", &server_cert.cert),
        files.write("tls.key", &server_cert.key),
    );
    let ca_path = files.write("ca.crt", &ca.pem);
    let tls = ServerTls::load(&cert, &key, None, Duration::from_secs(10)).expect("load");
    let server = serve(tls_options(tls)).await;
    let port = server.addr().port();

    // A tonic client trusting the CA.
    let client_tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
    let status = health_check(format!("https://localhost:{port}"), Some(client_tls.clone()))
        .await
        .expect("TLS call succeeds");
    assert_eq!(status, ServingStatus::Serving);

    // The channel services build to call each other (`--tls-peer-ca`), by IP this time.
    let args = TlsArgs {
        tls_peer_ca: Some(ca_path.clone()),
        ..TlsArgs::default()
    };
    let peers = args.peers(false).expect("peer TLS");
    let url = format!("https://127.0.0.1:{port}");
    let channel = peers
        .endpoint(Some(&url), server.addr())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("peer call");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);

    // A client that does not trust the CA is refused at the handshake.
    let stranger = Ca::new("another CA");
    let untrusted = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&stranger.pem));
    assert!(
        health_check(format!("https://localhost:{port}"), Some(untrusted))
            .await
            .is_err()
    );

    // Plaintext gRPC gets nothing from a TLS listener.
    let plaintext = health_check(format!("http://127.0.0.1:{port}"), None).await;
    assert!(plaintext.is_err(), "plaintext must be refused: {plaintext:?}");
    let text = holdfast_platform::metrics::render();
    assert!(
        text.contains("holdfast_tls_handshake_failures_total "),
        "failed handshakes are counted: {text}"
    );

    // grpcurl, through reflection, verifying the server against the CA.
    let target = format!("localhost:{port}");
    let ca_arg = ca_path.to_str().expect("utf-8 path");
    let out = grpcurl(&[
        "-cacert",
        ca_arg,
        "-d",
        "{}",
        &target,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcurl over TLS: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SERVING"), "{stdout}");
    let out = grpcurl(&[
        "-connect-timeout",
        "2",
        "-plaintext",
        "-d",
        "{}",
        &target,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    assert!(
        !out.status.success(),
        "grpcurl -plaintext must fail against a TLS listener"
    );
    let out = grpcurl(&[
        "-connect-timeout",
        "2",
        "-d",
        "{}",
        &target,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    assert!(
        !out.status.success(),
        "grpcurl without the CA must not trust the test certificate"
    );
}

/// The certificate a fresh TLS connection to `addr` is shown.
async fn presented_cert(addr: SocketAddr, ca: &CertificateDer<'static>) -> CertificateDer<'static> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("server certificate")[0].clone()
}

#[tokio::test]
async fn replaced_certificate_files_are_served_without_a_restart_and_a_bad_pair_is_ignored() {
    let ca = Ca::new("holdfast test CA");
    let first = ca.sign("first", &["localhost"]);
    let files = Files::new();
    let (cert, key) = (
        files.write("tls.crt", &first.cert),
        files.write("tls.key", &first.key),
    );
    let tls = ServerTls::load(&cert, &key, None, Duration::from_millis(50)).expect("load");
    let server = serve(tls_options(tls.clone())).await;
    assert_eq!(presented_cert(server.addr(), &ca.der).await, first.der);

    // Rotate: key first, then certificate (a watcher may see the half-written pair).
    let second = ca.sign("second", &["localhost"]);
    files.write("tls.key", &second.key);
    files.write("tls.crt", &second.cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if presented_cert(server.addr(), &ca.der).await == second.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        tokio::task::yield_now().await;
    }

    let text = holdfast_platform::metrics::render();
    assert!(
        text.contains(r#"holdfast_tls_certificate_reloads_total{result="loaded"}"#),
        "{text}"
    );

    // A broken certificate is refused; the one that works keeps being served.
    files.write(
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    assert!(tls.reload().is_err(), "a bad certificate is refused");
    assert_eq!(presented_cert(server.addr(), &ca.der).await, second.der);
    let status = health_check(
        format!("https://localhost:{}", server.addr().port()),
        Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem))),
    )
    .await
    .expect("still serving");
    assert_eq!(status, ServingStatus::Serving);
}

#[tokio::test]
async fn mutual_tls_refuses_a_caller_without_a_client_certificate() {
    let ca = Ca::new("holdfast test CA");
    let server_cert = ca.sign("holdfast", &["localhost"]);
    let client_ca = Ca::new("holdfast services CA");
    let orders = client_ca.sign("orders", &["orders.holdfast.internal"]);
    let files = Files::new();
    let (cert, key) = (
        files.write("tls.crt", &server_cert.cert),
        files.write("tls.key", &server_cert.key),
    );
    let client_ca_path = files.write("clients.crt", &client_ca.pem);
    let tls = ServerTls::load(&cert, &key, Some(&client_ca_path), Duration::from_secs(10)).expect("load");
    assert!(tls.mutual());
    let server = serve(tls_options(tls)).await;
    let endpoint = format!("https://localhost:{}", server.addr().port());
    let trust = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));

    let anonymous = health_check(endpoint.clone(), Some(trust.clone())).await;
    assert!(
        anonymous.is_err(),
        "no client certificate: refused, got {anonymous:?}"
    );

    // A certificate from a CA the server does not trust for clients.
    let stranger = ca.sign("stranger", &["stranger"]);
    let wrong = health_check(
        endpoint.clone(),
        Some(
            trust
                .clone()
                .identity(Identity::from_pem(&stranger.cert, &stranger.key)),
        ),
    )
    .await;
    assert!(
        wrong.is_err(),
        "client certificate from an untrusted CA: refused, got {wrong:?}"
    );

    let status = health_check(
        endpoint.clone(),
        Some(trust.identity(Identity::from_pem(&orders.cert, &orders.key))),
    )
    .await
    .expect("client certificate accepted");
    assert_eq!(status, ServingStatus::Serving);

    // The peer flags services use: --tls-peer-ca, --tls-peer-cert, --tls-peer-key.
    let args = TlsArgs {
        tls_peer_ca: Some(files.write("ca.crt", &ca.pem)),
        tls_peer_cert: Some(files.write("orders.crt", &orders.cert)),
        tls_peer_key: Some(files.write("orders.key", &orders.key)),
        ..TlsArgs::default()
    };
    let channel = args
        .peers(false)
        .expect("peer TLS")
        .endpoint(Some(&endpoint), server.addr())
        .expect("endpoint")
        .connect()
        .await
        .expect("mutual TLS connect");
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("peer call with a client certificate");
}

#[test]
fn unreadable_or_mismatched_files_are_config_errors_naming_the_flag() {
    let ca = Ca::new("holdfast test CA");
    let a = ca.sign("a", &["localhost"]);
    let b = ca.sign("b", &["localhost"]);
    let files = Files::new();
    let args = |cert: &Path, key: &Path| TlsArgs {
        tls_cert: Some(cert.to_path_buf()),
        tls_key: Some(key.to_path_buf()),
        ..TlsArgs::default()
    };
    let missing = args(&files.path("nope.crt"), &files.path("nope.key"))
        .server()
        .expect_err("missing");
    assert_eq!(missing.flag, "--tls-cert");
    let (cert, key) = (files.write("a.crt", &a.cert), files.write("b.key", &b.key));
    let mismatch = args(&cert, &key).server().expect_err("mismatch");
    assert_eq!(mismatch.flag, "--tls-key");
    assert!(TlsArgs::default().server().expect("plaintext").is_none());
}

/// Sends one HTTP/1.1 request on `stream` and returns the response head, lower-cased.
async fn http1<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> String {
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).to_lowercase();
    text.split("\r\n\r\n").next().unwrap_or_default().to_string()
}

fn preflight(addr: SocketAddr, origin: &str) -> String {
    format!(
        "OPTIONS /holdfast.catalog.v1.CatalogService/GetProduct HTTP/1.1\r\nhost: {addr}\r\norigin: {origin}\r\n\
access-control-request-method: POST\r\naccess-control-request-headers: content-type,x-grpc-web,authorization\r\n\
connection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn cors_preflight_is_allowed_only_for_configured_origins() {
    let server = serve(ServerOptions {
        cors: AllowedOrigins::list(["https://shop.example", "http://localhost:*"]).expect("origins"),
        ..ServerOptions::default()
    })
    .await;
    for origin in ["https://shop.example", "http://localhost:5173"] {
        let tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let head = http1(tcp, &preflight(server.addr(), origin)).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains(&format!("access-control-allow-origin: {origin}")),
            "{origin}: {head}"
        );
        assert!(
            head.contains("access-control-allow-headers: content-type,x-grpc-web,authorization"),
            "{head}"
        );
    }
    for origin in [
        "https://evil.example",
        "http://shop.example",
        "https://shop.example.evil.example",
        "null",
    ] {
        let tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let head = http1(tcp, &preflight(server.addr(), origin)).await;
        assert!(
            !head.contains("access-control-allow-origin"),
            "{origin} must get no allow headers: {head}"
        );
    }

    // No origin configured (`holdfast serve`'s default): nobody gets them.
    let closed = serve(ServerOptions::default()).await;
    let tcp = tokio::net::TcpStream::connect(closed.addr())
        .await
        .expect("connect");
    let head = http1(tcp, &preflight(closed.addr(), "http://localhost:5173")).await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[tokio::test]
async fn grpc_web_preflight_over_tls_from_an_allowed_origin() {
    let ca = Ca::new("holdfast test CA");
    let server_cert = ca.sign("holdfast", &["localhost"]);
    let files = Files::new();
    let (cert, key) = (
        files.write("tls.crt", &server_cert.cert),
        files.write("tls.key", &server_cert.key),
    );
    let server = serve(ServerOptions {
        cors: AllowedOrigins::list(["https://shop.example"]).expect("origins"),
        tls: Some(ServerTls::load(&cert, &key, None, Duration::from_secs(10)).expect("load")),
        ..ServerOptions::default()
    })
    .await;
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A browser's grpc-web over HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    for (origin, allowed) in [("https://shop.example", true), ("https://evil.example", false)] {
        let tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        let head = http1(tls, &preflight(server.addr(), origin)).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(
            head.contains(&format!("access-control-allow-origin: {origin}")),
            allowed,
            "{origin}: {head}"
        );
    }
}

#[tokio::test]
async fn tls_listener_closes_when_the_server_drains() {
    let ca = Ca::new("holdfast test CA");
    let server_cert = ca.sign("holdfast", &["localhost"]);
    let files = Files::new();
    let (cert, key) = (
        files.write("tls.crt", &server_cert.cert),
        files.write("tls.key", &server_cert.key),
    );
    let server = serve(tls_options(
        ServerTls::load(&cert, &key, None, Duration::from_millis(50)).expect("load"),
    ))
    .await;
    let addr = server.addr();
    assert_eq!(presented_cert(addr, &ca.der).await, server_cert.der);
    server.shutdown().await.expect("drained");
    // The accept loop is aborted with the server's incoming stream: the port stops answering.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the TLS listener still accepts after the drain"
        );
        tokio::task::yield_now().await;
    }
}
