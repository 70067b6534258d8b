//! `chaos` must catch a system that applies a change twice: a short run on Apache Kafka
//! (no faults) in which the harness publishes two of the run's `order.confirmed` changes a
//! second time under new event ids — as a relay that published twice would — exits 3 and
//! names the two duplicates; the verdict table and the JSON say so.

mod common;

use std::process::Command;

use common::holdfast_bin;

#[test]
fn chaos_names_events_applied_twice_and_exits_3() {
    let out = std::env::temp_dir().join(format!("holdfast-chaos-dup-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .arg("chaos")
        .arg("--holdfast-bin")
        .arg(holdfast_bin())
        .args(["--kafka", "--faults", "0", "--duration", "10s", "--quiet"])
        .args(["--flash-units", "10", "--flash-rate", "5", "--storm-rate", "3"])
        .args(["--settle-timeout", "30s", "--duplicate-events", "2"])
        .arg("--json")
        .arg(&out)
        .output()
        .expect("running holdfast-load chaos");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    // A failed verdict keeps the run's data for a post-mortem; this one was failed on purpose.
    if let Some(kept) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("chaos: data and logs kept in "))
        .filter(|d| d.contains("holdfast-chaos-"))
    {
        let _ = std::fs::remove_dir_all(kept.trim());
    }
    assert_eq!(
        output.status.code(),
        Some(3),
        "expected the violation exit code\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("VIOLATION events events-applied-twice: 4 applied twice"),
        "two changes, each on two channels, must be named\n{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("events-applied-twice"))
        .unwrap_or_default();
    assert!(row.trim_end().ends_with(" 4"), "verdict row {row:?}\n{stdout}");
    // Nothing else broke: the duplicate is the only violation.
    assert_eq!(stdout.matches("VIOLATION").count(), 1, "{stdout}");
    let value: serde_json::Value = serde_json::from_str(&json).expect("the JSON result");
    assert_eq!(value["passed"], false);
    assert_eq!(value["violations"][0]["check"], "events-applied-twice");
}
