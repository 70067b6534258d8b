//! `flash-sale --regions` end to end on a real Apache Kafka broker: the harness starts the
//! broker and two `holdfast dev --region` processes itself (`--local`), sells a global SKU of
//! 100 units split 50/50 to 150 buyers in `na` and 10 in `eu`, and must pass every world
//! check, `na` selling past its allocation through transfers.

mod common;

use std::process::Command;

use common::holdfast_bin;

#[test]
fn flash_sale_across_two_regions_over_kafka_passes_the_world_checks() {
    let out = std::env::temp_dir().join(format!("holdfast-flash-regions-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .args(["flash-sale", "--regions", "na,eu", "--local", "--holdfast-bin"])
        .arg(holdfast_bin())
        .args(["--units", "100", "--region-split", "50:50"])
        .args(["--buyers", "160", "--region-skew", "15:1", "--concurrency", "8"])
        .args(["--quiet", "--json"])
        .arg(&out)
        .output()
        .expect("running holdfast-load flash-sale --regions");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(out.with_extension("svg"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "every world check must pass\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&json).expect("the JSON result");
    let checks: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or(""),
                c["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for name in [
        "winners",
        "oversell",
        "region-ledgers",
        "conservation",
        "drift",
        "drift-during-sale",
        "patience",
    ] {
        assert!(checks.contains(&(name, "pass")), "{name} must pass: {checks:?}");
    }
    let regions = report["parameters"]["regions"].as_array().expect("regions");
    let winners: i64 = regions.iter().map(|r| r["winners"].as_i64().unwrap_or(0)).sum();
    assert_eq!(winners, 100, "min(100 units, 160 buyers)\n{stdout}");
    let na = &regions[0];
    assert_eq!(na["region"], "na");
    assert!(
        na["winners"].as_i64().unwrap_or(0) > 50 && na["transferred_in"].as_i64().unwrap_or(0) > 0,
        "na sold past its allocation through transfers\n{stdout}"
    );
    assert!(
        report["parameters"]["transfers"]["count"].as_i64().unwrap_or(0) >= 1,
        "{stdout}"
    );
    assert!(
        stdout.contains("transfers: "),
        "the figures are printed\n{stdout}"
    );
}
