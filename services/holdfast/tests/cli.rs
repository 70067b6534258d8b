//! The `holdfast` binary as an operator meets it: bad config, an unreachable Redis, and a
//! whole `holdfast dev` mesh from start to SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use holdfast_testkit::TempDir;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        // Start from no HOLDFAST_REDIS_URL so the machine's env can't leak in; then the test's.
        .env_remove("HOLDFAST_REDIS_URL")
        .envs(env.iter().copied())
        .output()
        .expect("run holdfast")
}

fn assert_one_line_exit(output: &std::process::Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line, got: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_listen_address_exits_64_naming_the_flag() {
    let output = run(&["dev", "--listen", "not-an-address"], &[]);
    assert_one_line_exit(&output, 64, "--listen");
}

#[test]
fn bad_env_value_exits_64_naming_the_flag() {
    let output = run(&["serve", "inventory"], &[("HOLDFAST_REDIS_URL", "http://nope")]);
    assert_one_line_exit(&output, 64, "--redis-url");
}

#[test]
fn unknown_service_exits_64() {
    let output = run(&["serve", "billing"], &[]);
    assert_one_line_exit(&output, 64, "billing");
}

#[test]
fn serve_without_redis_url_exits_64() {
    let output = run(&["serve", "inventory"], &[]);
    assert_one_line_exit(&output, 64, "--redis-url");
}

#[test]
fn serve_catalog_without_store_exits_64() {
    let output = Command::new(BIN)
        .args(["serve", "catalog", "--redis-url", "redis://127.0.0.1:6399"])
        .env_remove("HOLDFAST_STORE")
        .output()
        .expect("run");
    assert_one_line_exit(&output, 64, "--store");
}

#[test]
fn migrate_creates_a_sqlite_store_and_can_run_again() {
    let dir = TempDir::new("migrate").expect("dir");
    let url = format!("sqlite://{}", dir.path().join("nested/holdfast.db").display());
    for _ in 0..2 {
        let output = run(&["migrate", "--store", &url], &[]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("schema"));
    }
    assert!(dir.path().join("nested/holdfast.db").exists());
}

#[test]
fn migrate_against_an_unreachable_scylla_exits_69_with_one_line() {
    let port = holdfast_platform::process::free_port().expect("port").to_string();
    let output = run(
        &["migrate", "--store", &format!("scylla://127.0.0.1:{port}")],
        &[("RUST_LOG", "off")],
    );
    assert_one_line_exit(&output, 69, "cannot open store");
}

#[test]
fn unreachable_redis_exits_69_with_one_line() {
    let port = holdfast_platform::process::free_port().expect("port").to_string();
    let url = format!("redis://127.0.0.1:{port}");
    let output = run(
        &[
            "serve",
            "inventory",
            "--redis-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            // Past the auth check (the last configuration check) to the connection.
            "--insecure-no-auth",
        ],
        &[("RUST_LOG", "off")],
    );
    assert_one_line_exit(&output, 69, "cannot reach redis");
}

#[test]
fn help_names_both_commands_and_env_vars() {
    let output = run(&["--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in ["dev", "serve", "HOLDFAST_REDIS_URL"] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
    let serve_help = String::from_utf8_lossy(&run(&["serve", "--help"], &[]).stdout).to_string();
    for needle in [
        "inventory",
        "--redis-url",
        "HOLDFAST_REDIS_URL",
        "--store",
        "--kafka-brokers",
        "--region",
    ] {
        assert!(serve_help.contains(needle), "{needle} in {serve_help}");
    }
}

#[tokio::test]
async fn dev_serves_every_service_then_drains_on_sigterm() {
    let data = TempDir::new("dev").expect("dir");
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
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
    // "holdfast serving <names> on <addr> (gRPC + grpc-web), admin on <addr>"
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect(&line)
        .to_string();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    for name in [
        "inventory",
        "cart",
        "catalog",
        "orders",
        "warehouse",
        "payments",
        "",
    ] {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: name.into() })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{name:?}");
    }

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.message().await.expect("stream").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "holdfast.inventory.v1.InventoryService",
        "holdfast.catalog.v1.CatalogService",
        "holdfast.cart.v1.CartService",
        "holdfast.orders.v1.OrderService",
        "holdfast.warehouse.v1.WarehouseService",
        "holdfast.payments.v1.PaymentsService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }

    // `holdfast regions move` mints an admin token with the data dir's key and reaches the
    // RPC; a one-region server refuses it, and the command exits non-zero saying why.
    let moved = Command::new(BIN)
        .args(["regions", "move", "--target", &format!("http://{addr}")])
        .args(["--sku", "DROP", "--from", "eu", "--to", "na", "--units", "1"])
        .args(["--reason", "cli test", "--move-id", "m-1", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("holdfast regions move");
    let stderr = String::from_utf8_lossy(&moved.stderr);
    assert!(!moved.status.success(), "{stderr}");
    assert!(
        stderr.contains("move m-1 refused: FailedPrecondition") && stderr.contains("one region"),
        "{stderr}"
    );

    // SIGTERM: a clean exit, and the embedded redis-server goes with it.
    assert!(
        data.path().join("redis/appendonlydir").exists(),
        "embedded redis keeps its data under --data-dir"
    );
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status}");
}
