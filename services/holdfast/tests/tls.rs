//! `holdfast dev` over TLS as an operator runs it: certificates from files given as flags,
//! mutual TLS, a tonic client and grpcurl, services in the process calling each other over
//! the same TLS listener, and bad TLS files refused at start-up with exit 64.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use holdfast_proto::cart::v1::cart_owner::Owner;
use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::cart::v1::{AddItemRequest, CartOwner};
use holdfast_testkit::TempDir;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// A CA that writes its certificate and the ones it signs (PEM) into a directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs a certificate for `names`; answers (certificate PEM, key PEM).
    fn sign(&self, cn: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

/// A running `holdfast dev`, killed on drop.
struct Dev {
    child: Child,
    addr: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_dev(data: &Path, extra: &[&str]) -> Dev {
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("HOLDFAST_REDIS_URL")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn holdfast dev");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        line
    })
    .await
    .expect("join");
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Dev { child, addr }
}

async fn health(endpoint: &str, tls: ClientTlsConfig) -> Result<ServingStatus, String> {
    let channel = Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(answer.into_inner().status())
}

#[tokio::test]
async fn dev_over_mutual_tls_serves_tonic_and_grpcurl_and_calls_itself_over_tls() {
    let dir = TempDir::new("tls").expect("dir");
    let ca = Ca::new("holdfast test CA");
    let clients = Ca::new("holdfast services CA");
    let (server_cert, server_key) = ca.sign("holdfast", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = clients.sign("orders", &["orders.holdfast.internal"]);
    let files = dir.path();
    let ca_file = write(files, "ca.crt", &ca.pem);
    let paths = [
        ("--tls-cert", write(files, "tls.crt", &server_cert)),
        ("--tls-key", write(files, "tls.key", &server_key)),
        ("--tls-client-ca", write(files, "clients.crt", &clients.pem)),
        ("--tls-peer-ca", ca_file.clone()),
        ("--tls-peer-cert", write(files, "client.crt", &client_cert)),
        ("--tls-peer-key", write(files, "client.key", &client_key)),
    ];
    let mut args = Vec::new();
    for (flag, path) in &paths {
        args.push(flag.to_string());
        args.push(path.to_str().expect("utf-8").to_string());
    }
    // Services call each other over the listener (not in-process), so the self-calls below
    // go through TLS.
    args.push("--peers-over-grpc".to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = start_dev(&files.join("data"), &args).await;
    let port = dev.addr.rsplit(':').next().expect("port");
    let endpoint = format!("https://localhost:{port}");
    let trust = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
    let identity = Identity::from_pem(&client_cert, &client_key);

    // tonic, with and without a client certificate.
    let status = health(&endpoint, trust.clone().identity(identity.clone()))
        .await
        .expect("mTLS call succeeds");
    assert_eq!(status, ServingStatus::Serving);
    let anonymous = health(&endpoint, trust.clone()).await;
    assert!(
        anonymous.is_err(),
        "no client certificate: refused, got {anonymous:?}"
    );

    // Cart asks catalog (same process, unset --catalog-url) over the TLS listener, presenting
    // --tls-peer-cert: an unknown SKU is FAILED_PRECONDITION from the catalog's answer, not
    // UNAVAILABLE from a failed call.
    let channel = Endpoint::from_shared(endpoint.clone())
        .expect("endpoint")
        .tls_config(trust.identity(identity))
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    // Auth is on under `holdfast dev`: the customer's token from the dev key in its data dir.
    let token = holdfast_testkit::DevTokens::new(&files.join("data"))
        .expect("dev key")
        .customer("c-tls");
    let refused = CartServiceClient::new(holdfast_testkit::BearerChannel::fixed(channel, token))
        .add_item(AddItemRequest {
            owner: Some(CartOwner {
                owner: Some(Owner::CustomerId("c-tls".into())),
            }),
            sku: "NO-SUCH-SKU".into(),
            quantity: 1,
            expected_version: 0,
        })
        .await
        .expect_err("unknown SKU");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");

    // grpcurl, verifying the server against the CA and presenting the client certificate.
    let target = format!("localhost:{port}");
    let path = |flag: &str| {
        paths
            .iter()
            .find(|(f, _)| *f == flag)
            .expect("flag")
            .1
            .to_str()
            .expect("utf-8")
            .to_string()
    };
    let out = tokio::process::Command::new("grpcurl")
        .args(["-max-time", "10", "-cacert"])
        .arg(&ca_file)
        .args(["-cert", &path("--tls-peer-cert"), "-key", &path("--tls-peer-key")])
        .args([
            "-d",
            r#"{"service":"catalog"}"#,
            &target,
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .await
        .expect("grpcurl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SERVING"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new("grpcurl")
        .args(["-max-time", "10", "-connect-timeout", "2", "-cacert"])
        .arg(&ca_file)
        .args(["-d", "{}", &target, "grpc.health.v1.Health/Check"])
        .output()
        .await
        .expect("grpcurl");
    assert!(
        !out.status.success(),
        "grpcurl without a client certificate must be refused"
    );
}

#[test]
fn unusable_tls_files_exit_64_naming_the_flag() {
    let dir = TempDir::new("tls-bad").expect("dir");
    let ca = Ca::new("holdfast test CA");
    let (cert, _) = ca.sign("a", &["localhost"]);
    let (_, other_key) = ca.sign("b", &["localhost"]);
    let cert = write(dir.path(), "tls.crt", &cert);
    let key = write(dir.path(), "tls.key", &other_key);
    let missing = dir.path().join("missing.crt");
    for (cert, key, flag) in [(&missing, &key, "--tls-cert"), (&cert, &key, "--tls-key")] {
        let output = Command::new(BIN)
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env_remove("HOLDFAST_REDIS_URL")
            .output()
            .expect("run holdfast");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(flag), "{flag} in {stderr}");
    }
    // --tls-key without --tls-cert is a usage error too.
    let output = Command::new(BIN)
        .args(["dev", "--tls-key"])
        .arg(&key)
        .output()
        .expect("run holdfast");
    assert_eq!(output.status.code(), Some(64));
}
