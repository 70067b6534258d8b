//! Authentication at the process level: `serve` refuses to start without it (unless told
//! `--insecure-no-auth`, which it logs loudly), and `holdfast dev` enforces it with a dev
//! key whose tokens `holdfast token` prints.

use std::io::{BufRead, BufReader, Read as _};
use std::process::{Child, Command, Stdio};

use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::cart::v1::{CartOwner, GetCartRequest, cart_owner};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::reserve_stream_response::Outcome;
use holdfast_proto::inventory::v1::{ReserveLine, ReserveRequest, ReserveStreamRequest};
use holdfast_testkit::{RedisServer, TempDir};
use tokio_stream::StreamExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// Spawns `holdfast <args>` and waits for its "serving" line; answers the child and the gRPC address.
async fn spawn_serving(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("HOLDFAST_REDIS_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn holdfast");
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
        .unwrap_or_else(|| panic!("no serving line: {line:?}"))
        .to_string();
    (child, addr)
}

/// SIGTERMs `child` and waits for it to exit, off the runtime: a client connection dropped
/// just before is closed by a task of this (single-threaded) runtime, and a server still
/// holding it open would wait out its drain timeout (30 s).
async fn stop(child: Child) -> String {
    tokio::task::spawn_blocking(move || stop_blocking(child))
        .await
        .expect("join")
}

fn stop_blocking(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    stderr
}

fn get_cart(customer: &str, token: Option<&str>) -> tonic::Request<GetCartRequest> {
    let mut request = tonic::Request::new(GetCartRequest {
        owner: Some(CartOwner {
            owner: Some(cart_owner::Owner::CustomerId(customer.into())),
        }),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

/// A ReserveStream carrying one Reserve, with `token` if any.
fn one_reserve(
    token: Option<&str>,
) -> tonic::Request<impl tokio_stream::Stream<Item = ReserveStreamRequest> + Send + 'static> {
    let mut request = tonic::Request::new(tokio_stream::iter([ReserveStreamRequest {
        reserve: Some(ReserveRequest {
            reservation_id: "auth-stream-1".into(),
            lines: vec![ReserveLine {
                sku: "AUTH-NONE".into(),
                quantity: 1,
            }],
            ttl_seconds: 60,
        }),
    }]));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

#[test]
fn serve_without_auth_configured_refuses_to_start() {
    let port = holdfast_platform::process::free_port().expect("port").to_string();
    let output = Command::new(BIN)
        .args([
            "serve",
            "inventory",
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .env_remove("HOLDFAST_AUTH_JWKS")
        .env_remove("HOLDFAST_INSECURE_NO_AUTH")
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--auth-jwks") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn serve_with_insecure_no_auth_starts_and_says_so_loudly() {
    let redis = RedisServer::start().expect("redis");
    let (child, addr) = spawn_serving(
        &[
            "serve",
            "inventory",
            "--redis-url",
            &redis.url().to_string(),
            "--insecure-no-auth",
        ],
        &[("RUST_LOG", "warn"), ("HOLDFAST_LOG_FORMAT", "json")],
    )
    .await;
    // Serving, and open: an availability read without any token answers.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut inventory =
        holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient::new(channel);
    inventory
        .get_availability(holdfast_proto::inventory::v1::GetAvailabilityRequest {
            skus: vec!["MUG".into()],
        })
        .await
        .expect("open without a token");
    drop(inventory); // no open connection holds up the drain
    let stderr = stop(child).await;
    assert!(
        stderr.contains("AUTHENTICATION IS OFF"),
        "logged loudly: {stderr}"
    );
    assert!(stderr.contains("\"level\":\"ERROR\""), "at error level: {stderr}");
}

#[tokio::test]
async fn dev_enforces_tokens_that_holdfast_token_mints() {
    let data = TempDir::new("auth-dev").expect("dir");
    let data_dir = data.path().to_str().expect("utf-8 path").to_string();
    let (child, addr) = spawn_serving(&["dev", "--data-dir", &data_dir], &[("RUST_LOG", "warn")]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let cart_channel = channel.clone();
    let mut cart = CartServiceClient::new(channel);

    let refused = cart.get_cart(get_cart("c1", None)).await.expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let output = Command::new(BIN)
        .args(["token", "--customer", "c1", "--data-dir", &data_dir])
        .output()
        .expect("holdfast token");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    cart.get_cart(get_cart("c1", Some(&token)))
        .await
        .expect("own cart");
    let other = cart
        .get_cart(get_cart("c2", Some(&token)))
        .await
        .expect_err("another's cart");
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");

    assert!(
        holdfast_platform::auth::DevKey::path(data.path()).exists(),
        "the dev key is kept in the data dir"
    );
    // A stream of Reserves needs a token as Reserve does, and any valid one may open it.
    let mut inventory = InventoryServiceClient::new(cart_channel.clone());
    let refused = inventory
        .reserve_stream(one_reserve(None))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut answers = inventory
        .reserve_stream(one_reserve(Some(&token)))
        .await
        .expect("a customer may reserve")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("no stream error");
    assert_eq!(answer.reservation_id, "auth-stream-1");
    assert!(
        matches!(answer.outcome, Some(Outcome::Reply(_))),
        "an unstocked SKU is an answer, not an error: {answer:?}"
    );
    drop((inventory, answers, cart_channel));

    drop(cart); // no open connection holds up the drain
    let _ = stop(child).await;

    let missing = Command::new(BIN)
        .args(["token", "--admin", "--data-dir", "/nonexistent/holdfast"])
        .output()
        .expect("holdfast token");
    assert_eq!(missing.status.code(), Some(64));
}
