//! `with-cassandra -- COMMAND [ARGS...]`: starts an Apache Cassandra node (the testkit's
//! [`CassandraNode`]: free loopback ports, storage in a temp dir), runs COMMAND with
//! `SCYLLA_NODES=127.0.0.1:<port>` and `HOLDFAST_STORE=scylla://127.0.0.1:<port>` in its
//! environment, stops the node and exits with COMMAND's status. For make targets that run
//! whole programs (`holdfast dev` under the load harness) against the ScyllaDB backend.

use std::process::{Command, ExitCode};

use holdfast_testkit::CassandraNode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => &args[..],
    };
    let Some((program, rest)) = command.split_first() else {
        eprintln!("usage: with-cassandra -- COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let node = match CassandraNode::start() {
        Ok(node) => node,
        Err(e) => {
            eprintln!("with-cassandra: cannot start cassandra: {e:#}");
            return ExitCode::from(1);
        }
    };
    let contact = node.contact_point();
    eprintln!("with-cassandra: node on {contact} (pid {})", node.pid());
    let status = Command::new(program)
        .args(rest)
        .env("SCYLLA_NODES", &contact)
        .env("HOLDFAST_STORE", format!("scylla://{contact}"))
        .status();
    drop(node);
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("with-cassandra: {program} {status}");
            ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1).max(1))
        }
        Err(e) => {
            eprintln!("with-cassandra: cannot run {program}: {e}");
            ExitCode::from(1)
        }
    }
}
