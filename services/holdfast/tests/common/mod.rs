//! Shared by the crash tests: a `holdfast dev` child process and an operator's channel to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use holdfast_testkit::{BearerChannel, DevTokens};

/// Spawns `command` (a `holdfast dev` whose `--data-dir` is `data`), waits for its ready
/// line, and connects with an operator's tokens from the dev key it keeps in `data`.
#[allow(dead_code)] // used by some test binaries only
pub async fn spawn_dev(command: Command, data: &Path) -> (Child, BearerChannel) {
    spawn_dev_with(command, data, Stdio::null()).await
}

/// [`spawn_dev`], its stderr (the logs) appended to `log`.
#[allow(dead_code)] // used by some test binaries only
pub async fn spawn_dev_logged(command: Command, data: &Path, log: std::fs::File) -> (Child, BearerChannel) {
    spawn_dev_with(command, data, Stdio::from(log)).await
}

async fn spawn_dev_with(mut command: Command, data: &Path, stderr: Stdio) -> (Child, BearerChannel) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn holdfast dev");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("ready line");
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let tokens = DevTokens::new(data).expect("dev key");
    let channel = BearerChannel::new(channel, tokens.operator(&holdfast::authz_tables()));
    (child, channel)
}
