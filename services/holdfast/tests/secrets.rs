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
fn unreachable_scylla_error_hides_the_password() {
    let url = format!("scylla://cass:{SECRET}@127.0.0.1:{}", free_port());
    let (code, out) = stderr_of(&["migrate", "--store", &url]);
    assert_eq!(code, Some(69), "{out}");
    assert!(!out.contains(SECRET), "password printed: {out}");
}
