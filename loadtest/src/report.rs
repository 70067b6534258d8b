//! What a scenario run tells its SRE: the final table, the correctness checks, the SLO gates,
//! the JSON result and the exit code.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{Arrival, LoadResult};
use crate::slo::{Slo, SloResult};
use crate::summary::{LoadSummary, OpSummary};

/// Exit code when every check and gate held.
pub const EXIT_PASS: i32 = 0;
/// Exit code when the harness could not run (setup failed, target unreachable).
pub const EXIT_ERROR: i32 = 1;
/// Exit code when a correctness check found a violation.
pub const EXIT_VIOLATION: i32 = 3;
/// Exit code when every check held but an `--slo` gate was missed.
pub const EXIT_SLO_MISSED: i32 = 4;

/// Whether a check held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It held.
    Pass,
    /// It was violated (or could not be established, which is reported the same way).
    Fail,
    /// Not exercised by this run (e.g. no checkout with `--pay 0 --cancel 0`).
    Skipped,
}

/// One correctness check, read back through the services' own APIs.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name, e.g. `oversell`.
    pub name: &'static str,
    /// What it asserts.
    pub asserts: &'static str,
    /// Whether it held.
    pub verdict: Verdict,
    /// What was compared, with the numbers.
    pub detail: String,
}

impl Check {
    /// A check that held when `ok`, else a violation.
    pub fn new(name: &'static str, asserts: &'static str, ok: bool, detail: String) -> Self {
        Self {
            name,
            asserts,
            verdict: if ok { Verdict::Pass } else { Verdict::Fail },
            detail,
        }
    }

    /// A check this run did not exercise.
    pub fn skipped(name: &'static str, asserts: &'static str, why: &str) -> Self {
        Self {
            name,
            asserts,
            verdict: Verdict::Skipped,
            detail: why.to_string(),
        }
    }

    /// Whether it failed.
    pub fn failed(&self) -> bool {
        self.verdict == Verdict::Fail
    }
}

/// The whole result of a scenario run: what the JSON file holds.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `flash-sale`, `checkout-storm`, `browse-mix` or `soak`.
    pub scenario: &'static str,
    /// Unique id of the run; every SKU, customer and key it made starts with it.
    pub run_id: String,
    /// The gRPC endpoint loaded.
    pub target: String,
    /// Whether the harness started the mesh itself (`--local`).
    pub local: bool,
    /// When the run started, Unix milliseconds.
    pub started_at_unix_ms: i64,
    /// The scenario's parameters.
    pub parameters: serde_json::Value,
    /// The measured phase.
    pub load: LoadSummary,
    /// Correctness checks.
    pub checks: Vec<Check>,
    /// `--slo` gates.
    pub slos: Vec<SloResult>,
    /// How long the end-state checks waited for the system to settle, seconds.
    pub settle_s: f64,
    /// Things the SRE should know that are not violations (e.g. the generator fell behind).
    pub notes: Vec<String>,
    /// No violation and every gate met.
    pub passed: bool,
}

impl RunReport {
    /// Puts a run together and evaluates the gates.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &'static str,
        run_id: String,
        target: String,
        local: bool,
        started_at_unix_ms: i64,
        parameters: serde_json::Value,
        load: &LoadResult,
        checks: Vec<Check>,
        slos: &[Slo],
        settle_s: f64,
    ) -> Self {
        let load = LoadSummary::new(load);
        let slos: Vec<SloResult> = slos.iter().map(|s| s.evaluate(&load)).collect();
        let mut notes = Vec::new();
        if let Arrival::Open { rate, .. } = load.arrival {
            if load.max_send_lag_ms > 100.0 {
                notes.push(format!(
                    "attempts went out up to {:.0} ms behind schedule: the target (or this generator) \
                     could not sustain {rate}/s, and the latencies include that wait",
                    load.max_send_lag_ms
                ));
            }
            if load.throughput_per_s < 0.9 * rate && load.all.latency_ms.p50 > 1000.0 / rate * 10.0 {
                notes.push(format!(
                    "offered {rate}/s but answers came at {:.0}/s with a median of {:.0} ms: the target \
                     is saturated and requests queued (open loop charges the queueing to latency)",
                    load.throughput_per_s, load.all.latency_ms.p50
                ));
            }
        }
        let passed = !checks.iter().any(Check::failed) && slos.iter().all(|s| s.passed);
        Self {
            scenario,
            run_id,
            target,
            local,
            started_at_unix_ms,
            parameters,
            load,
            checks,
            slos,
            settle_s,
            notes,
            passed,
        }
    }

    /// The process exit code for this result.
    pub fn exit_code(&self) -> i32 {
        if self.checks.iter().any(Check::failed) {
            EXIT_VIOLATION
        } else if self.slos.iter().any(|s| !s.passed) {
            EXIT_SLO_MISSED
        } else {
            EXIT_PASS
        }
    }

    /// Prints the final table, the checks, the gates and the verdict.
    pub fn print(&self) {
        let load = &self.load;
        println!();
        println!(
            "{} against {}{} — {}, {} attempts in {:.2} s ({:.0}/s)",
            self.scenario,
            self.target,
            if self.local { " (--local)" } else { "" },
            load.arrival,
            load.all.count,
            load.elapsed_s,
            load.throughput_per_s
        );
        println!(
            "{:<18} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let row = |name: &str, s: &OpSummary| {
            println!(
                "{:<18} {:>9} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name,
                s.count,
                s.errors,
                s.latency_ms.p50,
                s.latency_ms.p90,
                s.latency_ms.p99,
                s.latency_ms.p999,
                s.latency_ms.max
            )
        };
        for (op, s) in &load.ops {
            row(op, s);
        }
        row("all", &load.all);
        let answers: Vec<String> = load.all.answers.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("answers: {}", answers.join(", "));
        if !load.all.error_kinds.is_empty() {
            let errors: Vec<String> = load
                .all
                .error_kinds
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("errors: {}", errors.join(", "));
        }
        for note in &self.notes {
            println!("note: {note}");
        }
        println!();
        println!(
            "checks (read back through the services' APIs, settled after {:.1} s):",
            self.settle_s
        );
        for check in &self.checks {
            let tag = match check.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Skipped => "SKIP",
            };
            println!("  {tag} {}: {} — {}", check.name, check.asserts, check.detail);
        }
        if !self.slos.is_empty() {
            println!("slo gates:");
            for slo in &self.slos {
                println!(
                    "  {} {}: measured {}",
                    if slo.passed { "MET   " } else { "MISSED" },
                    slo.slo,
                    slo.observed_text
                );
            }
        }
        println!();
        for check in self.checks.iter().filter(|c| c.failed()) {
            println!("VIOLATION {}: {}", check.name, check.detail);
        }
        for slo in self.slos.iter().filter(|s| !s.passed) {
            println!("SLO MISSED {}: measured {}", slo.slo, slo.observed_text);
        }
        let violations = self.checks.iter().filter(|c| c.failed()).count();
        let missed = self.slos.iter().filter(|s| !s.passed).count();
        if self.passed {
            println!(
                "PASS: {} held — {} checks passed, {} gates met",
                self.scenario,
                self.checks.iter().filter(|c| c.verdict == Verdict::Pass).count(),
                self.slos.len()
            );
        } else {
            println!(
                "FAIL: {} — {violations} violation(s), {missed} SLO gate(s) missed",
                self.scenario
            );
        }
    }

    /// Writes the JSON result and the latency plot.
    pub fn write(&self, json: &Path, plot: &Path) -> anyhow::Result<()> {
        write_json(json, self)?;
        crate::plot::write_svg(plot, self.scenario, &self.load)?;
        println!("plot: {}", plot.display());
        Ok(())
    }
}

/// Writes `value` as pretty JSON, creating the directory.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    println!("json: {}", path.display());
    Ok(())
}

/// The JSON and plot paths: as given, else `target/load/<scenario>.json` and the JSON path
/// with `.svg`.
pub fn output_paths(scenario: &str, json: Option<&PathBuf>, plot: Option<&PathBuf>) -> (PathBuf, PathBuf) {
    let json = json
        .cloned()
        .unwrap_or_else(|| PathBuf::from(format!("target/load/{scenario}.json")));
    let plot = plot.cloned().unwrap_or_else(|| json.with_extension("svg"));
    (json, plot)
}
