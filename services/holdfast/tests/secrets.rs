//! Credentials in connection URLs never reach stderr: an operator's error line or log must
//! say where holdfast could not connect, not with which password.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const SECRET: &str = "hunter2-s3cret";

fn stderr_of(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("HOLDFAST_REDIS_URL")
        // Logs on, so anything a log line would print is checked too.
        .env("RUST_LOG", "debug")
        .output()
        .expect("run holdfast");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout),
    )
}

fn free_port() -> String {
    holdfast_platform::process::free_port().expect("port").to_string()
}

#[test]
fn unreachable_redis_error_hides_the_password() {
    let url = format!("redis://app:{SECRET}@127.0.0.1:{}/0", free_port());
    let (code, out) = stderr_of(&[
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
    ]);
    assert_eq!(code, Some(69), "{out}");
    assert!(out.contains("cannot reach redis"), "{out}");
    assert!(out.contains("127.0.0.1"), "still says where: {out}");
    assert!(!out.contains(SECRET), "password printed: {out}");
}

#[test]
fn bad_redis_url_error_hides_the_password() {
    let url = format!("redis://app:{SECRET}@127.0.0.1:notaport");
    let (code, out) = stderr_of(&["serve", "inventory", "--redis-url", &url]);
    assert_eq!(code, Some(64), "{out}");
    assert!(!out.contains(SECRET), "password printed: {out}");
}

#[test]
fn credentials_where_none_are_supported_are_refused_without_echoing_them() {
    // ScyllaDB contact points and Kafka brokers take no credentials: refused at parse time
    // (the driver would otherwise resolve `user:pass@host` and print it in its error).
    let port = free_port();
    for args in [
        vec![
            "migrate".to_string(),
            "--store".into(),
            format!("scylla://cass:{SECRET}@127.0.0.1:{port}"),
        ],
        vec![
            "serve".into(),
            "inventory".into(),
            "--redis-url".into(),
            format!("redis-cluster://app:{SECRET}@127.0.0.1:{port}"),
        ],
        vec![
            "dev".into(),
            "--kafka-brokers".into(),
            format!("k:{SECRET}@127.0.0.1:{port}"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = stderr_of(&args);
        assert_eq!(code, Some(64), "{args:?}: {out}");
        assert!(
            out.contains(args[args.len() - 2]),
            "names the flag: {args:?}: {out}"
        );
        assert!(!out.contains(SECRET), "password printed: {out}");
    }
}
