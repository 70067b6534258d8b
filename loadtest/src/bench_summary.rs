//! The one table `make bench` ends with: every issue-13 target, its figure, the baseline it is
//! compared against, the ratio, and `met` / `NOT met`.
//!
//! Baselines are measured in the same run where the run has one (redis-benchmark on the same
//! redis-server; the cart's calls as issue 13 found them, `--cart-view rpc --peers-over-grpc`);
//! otherwise they are the figures the README recorded before issue 13 (2026-11-23),
//! named as such in the `baseline` column.

use serde::Serialize;

use crate::bench_cart::CartReport;
use crate::bench_checkout::CheckoutReport;
use crate::bench_inventory::InventoryReport;

/// Which way a figure has to move to meet its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// The compared value must be at least the limit.
    AtLeast,
    /// The compared value must be at most the limit.
    AtMost,
}

/// Whether the target is judged on the figure itself or on figure / baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// The figure.
    Figure,
    /// figure / baseline.
    Ratio,
}

/// One target row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured.
    pub name: String,
    /// The unit of `figure` and `baseline`.
    pub unit: &'static str,
    /// The figure; `None` when this run did not measure it.
    pub figure: Option<f64>,
    /// What the figure is compared against.
    pub baseline: f64,
    /// Where the baseline comes from.
    pub baseline_from: &'static str,
    /// figure / baseline.
    pub ratio: Option<f64>,
    /// What is compared against the limit.
    pub on: On,
    /// Which side of the limit meets the target.
    pub goal: Goal,
    /// The limit.
    pub limit: f64,
    /// Whether the target is met (`false` when not measured).
    pub met: bool,
    /// With several runs: each run's figure, in run order (this row then holds their median).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<Option<f64>>,
}

/// The README's figures before issue 13.
const README: &str = "README before";
/// Measured in the same run.
const SAME_RUN: &str = "same run";

fn row(
    name: impl Into<String>,
    unit: &'static str,
    figure: Option<f64>,
    (baseline, baseline_from): (f64, &'static str),
    on: On,
    goal: Goal,
    limit: f64,
) -> Row {
    let ratio = figure.map(|f| f / baseline);
    let mut row = Row {
        name: name.into(),
        unit,
        figure,
        baseline,
        baseline_from,
        ratio,
        on,
        goal,
        limit,
        met: false,
        runs: Vec::new(),
    };
    row.met = row.judged();
    row
}

impl Row {
    /// Whether the compared value (figure or ratio) is on the right side of the limit.
    fn judged(&self) -> bool {
        let compared = match self.on {
            On::Figure => self.figure,
            On::Ratio => self.ratio,
        };
        compared.is_some_and(|v| match self.goal {
            Goal::AtLeast => v >= self.limit,
            Goal::AtMost => v <= self.limit,
        })
    }
}

/// The median of the measured values (the mean of the middle two for an even count);
/// `None` when nothing was measured.
fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().flatten().collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// The rows of several runs of the same targets folded into one row each: figure, baseline
/// and ratio are each the median over the runs that measured them (the ratio is the median
/// of the per-run ratios, each taken within its own run), judged again; `runs` keeps every
/// run's figure. Rows are matched by position: every run yields the same targets.
pub fn median_of_runs(runs: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|i| {
            let of_runs = || runs.iter().filter_map(move |rows| rows.get(i));
            let mut row = first[i].clone();
            row.figure = median(of_runs().map(|r| r.figure));
            row.baseline = median(of_runs().map(|r| Some(r.baseline))).unwrap_or(row.baseline);
            row.ratio = median(of_runs().map(|r| r.ratio));
            row.runs = of_runs().map(|r| r.figure).collect();
            row.met = row.judged();
            row
        })
        .collect()
}

/// Event figures of `bench_events` (its `--json` output), when it ran before this one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Events {
    /// Outbox -> broker -> consumer events per second.
    pub per_second: Option<f64>,
    /// Lag p99 from order confirmed to shipment stored, ms.
    pub lag_p99_ms: Option<f64>,
}

impl Events {
    /// Reads `bench_events --json` output; missing or unreadable means not measured.
    pub fn read(path: &std::path::Path) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Self::default();
        };
        Self {
            per_second: value["events_per_second"].as_f64(),
            lag_p99_ms: value["lag_stored_p99_ms"].as_f64(),
        }
    }
}

/// Every issue-13 target of one `bench all` run.
pub fn rows(
    inventory: &InventoryReport,
    cart: &CartReport,
    checkout: &CheckoutReport,
    events: Events,
) -> Vec<Row> {
    use Goal::{AtLeast, AtMost};
    use On::{Figure, Ratio};
    let callers = inventory.concurrency;
    let evalsha = &inventory.baseline_evalsha;
    vec![
        row(
            format!("Reserve RPC / EVALSHA reserve.lua, {callers} callers"),
            "req/s",
            Some(inventory.reserve_rpc.rate),
            (evalsha.rate, SAME_RUN),
            Ratio,
            AtLeast,
            1.0,
        ),
        row(
            format!("Reserve over ReserveStream / EVALSHA, {callers} callers, a stream each"),
            "req/s",
            Some(inventory.reserve_stream.rate),
            (evalsha.rate, SAME_RUN),
            Ratio,
            AtLeast,
            1.0,
        ),
        row(
            format!("Reserve RPC / EVALSHA, {callers} callers, load generator pinned apart"),
            "req/s",
            inventory.pinned.as_ref().map(|p| p.reserve_rpc.rate),
            (
                inventory
                    .pinned
                    .as_ref()
                    .map_or(f64::NAN, |p| p.baseline_evalsha.rate),
                SAME_RUN,
            ),
            Ratio,
            AtLeast,
            1.0,
        ),
        row(
            format!("Reserve p99, {callers} callers (baseline: EVALSHA p99)"),
            "ms",
            Some(inventory.reserve_rpc.p99_ms),
            (evalsha.p99_ms, SAME_RUN),
            Figure,
            AtMost,
            5.0,
        ),
        row(
            format!("flash sale, sold-out SKU, answers/s, {callers} callers, one Reserve call each"),
            "answers/s",
            inventory.soldout.as_ref().map(|s| s.rate),
            (evalsha.rate, SAME_RUN),
            Figure,
            AtLeast,
            50_000.0,
        ),
        row(
            format!("flash sale, sold-out SKU, answers/s, {callers} callers on ReserveStream"),
            "answers/s",
            inventory.soldout_stream.as_ref().map(|s| s.rate),
            (evalsha.rate, SAME_RUN),
            Figure,
            AtLeast,
            50_000.0,
        ),
        row(
            format!(
                "Redis bytes per live hold, {} holds on {} SKUs",
                inventory.holds,
                inventory.holds.div_ceil(10).min(inventory.skus).max(1)
            ),
            "B",
            Some(inventory.bytes_per_live_hold),
            (446.0, README),
            Figure,
            AtMost,
            100.0,
        ),
        row(
            format!("Redis bytes per live hold, {} holds on one SKU", inventory.holds),
            "B",
            inventory.bytes_per_live_hold_hot_sku,
            (446.0, README),
            Figure,
            AtMost,
            150.0,
        ),
        row(
            format!("Redis bytes per idle SKU, {} SKUs", inventory.skus),
            "B",
            Some(inventory.bytes_per_idle_sku),
            (169.0, README),
            Figure,
            AtMost,
            200.0,
        ),
        row(
            format!("Checkout closed loop, {} shoppers, PSP 0", checkout.concurrency),
            "/s",
            Some(checkout.checkout_psp_0.rate),
            (290.0, README),
            Figure,
            AtLeast,
            1_000.0,
        ),
        row(
            format!("Checkout p99, {} shoppers, PSP 0", checkout.concurrency),
            "ms",
            Some(checkout.checkout_psp_0.p99_ms),
            (171.0, README),
            Figure,
            AtMost,
            100.0,
        ),
        row(
            format!("cart AddItem, {} shoppers (>= 4x)", cart.concurrency),
            "req/s",
            Some(cart.add_item.rate),
            (cart.baseline_before.add_item.rate, SAME_RUN),
            Ratio,
            AtLeast,
            4.0,
        ),
        row(
            format!("cart GetCart, {} shoppers (>= 4x)", cart.concurrency),
            "req/s",
            Some(cart.get_cart.rate),
            (cart.baseline_before.get_cart.rate, SAME_RUN),
            Ratio,
            AtLeast,
            4.0,
        ),
        row(
            "events outbox -> broker -> consumer",
            "events/s",
            events.per_second,
            (2_380.0, README),
            Figure,
            AtLeast,
            10_000.0,
        ),
        row(
            "events lag p99 (confirmed -> shipment stored)",
            "ms",
            events.lag_p99_ms,
            (71.0, README),
            Figure,
            AtMost,
            100.0,
        ),
    ]
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Prints the table, under `title` (which run, or the median of how many).
pub fn print(title: &str, rows: &[Row]) {
    println!();
    println!("issue 13 targets, {title} (baseline: same run, or the README's figure before issue 13)");
    println!(
        "{:<56} {:>12} {:>12} {:<13} {:>7} {:>16}  result",
        "target", "figure", "baseline", "from", "ratio", "goal"
    );
    for r in rows {
        let figure = r
            .figure
            .map_or("not run".into(), |f| format!("{} {}", number(f), r.unit));
        let ratio = r.ratio.map_or("-".into(), |v| format!("{v:.3}"));
        let op = match r.goal {
            Goal::AtLeast => ">=",
            Goal::AtMost => "<=",
        };
        let goal = match r.on {
            On::Ratio => format!("ratio {op} {}", number(r.limit)),
            On::Figure => format!("{op} {} {}", number(r.limit), r.unit),
        };
        let result = if r.met { "met" } else { "NOT met" };
        println!(
            "{:<56} {:>12} {:>12} {:<13} {:>7} {:>16}  {result}",
            r.name,
            figure,
            number(r.baseline),
            r.baseline_from,
            ratio,
            goal
        );
        if r.runs.len() > 1 {
            let each: Vec<String> = r
                .runs
                .iter()
                .map(|f| f.map_or("not run".into(), number))
                .collect();
            println!("{:<56} runs: {}", "", each.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_target_is_judged_on_figure_over_baseline() {
        let r = row(
            "x",
            "req/s",
            Some(9_000.0),
            (10_000.0, SAME_RUN),
            On::Ratio,
            Goal::AtLeast,
            1.0,
        );
        assert_eq!(r.ratio, Some(0.9));
        assert!(!r.met);
        let r = row(
            "x",
            "req/s",
            Some(10_000.0),
            (10_000.0, SAME_RUN),
            On::Ratio,
            Goal::AtLeast,
            1.0,
        );
        assert!(r.met);
    }

    #[test]
    fn an_at_most_target_is_met_at_or_under_the_limit_and_unmeasured_is_not_met() {
        let r = row(
            "x",
            "B",
            Some(100.0),
            (446.0, README),
            On::Figure,
            Goal::AtMost,
            100.0,
        );
        assert!(r.met);
        let r = row(
            "x",
            "B",
            Some(100.5),
            (446.0, README),
            On::Figure,
            Goal::AtMost,
            100.0,
        );
        assert!(!r.met);
        let r = row("x", "B", None, (446.0, README), On::Figure, Goal::AtMost, 100.0);
        assert!(!r.met);
        assert_eq!(r.ratio, None);
    }

    #[test]
    fn several_runs_fold_into_their_median_judged_again_with_every_run_kept() {
        let run = |figure: Option<f64>, baseline: f64| {
            vec![row(
                "reserve",
                "req/s",
                figure,
                (baseline, SAME_RUN),
                On::Ratio,
                Goal::AtLeast,
                1.0,
            )]
        };
        // Ratios 1.2, 0.8, 0.9: one run meets the target, the median (0.9) does not.
        let runs = [
            run(Some(12_000.0), 10_000.0),
            run(Some(8_000.0), 10_000.0),
            run(Some(9_900.0), 11_000.0),
        ];
        assert!(runs[0][0].met);
        let folded = median_of_runs(&runs);
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].figure, Some(9_900.0));
        assert_eq!(folded[0].baseline, 10_000.0);
        assert!((folded[0].ratio.expect("ratio") - 0.9).abs() < 1e-9);
        assert!(!folded[0].met);
        assert_eq!(folded[0].runs, [Some(12_000.0), Some(8_000.0), Some(9_900.0)]);

        // An unmeasured run is left out of the median; an even count takes the middle mean.
        let runs = [
            run(Some(10_000.0), 10_000.0),
            run(None, 10_000.0),
            run(Some(12_000.0), 10_000.0),
        ];
        let folded = median_of_runs(&runs);
        assert_eq!(folded[0].figure, Some(11_000.0));
        assert!(folded[0].met);
        assert_eq!(median_of_runs(&[run(None, 1.0)])[0].figure, None);
        assert!(median_of_runs(&[]).is_empty());
    }

    #[test]
    fn events_come_from_the_bench_events_json_and_a_missing_file_means_not_run() {
        let dir = std::env::temp_dir().join(format!("holdfast-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("events.json");
        std::fs::write(
            &path,
            r#"{"events":20000,"events_per_second":12345,"lag_stored_p99_ms":42.5}"#,
        )
        .expect("write");
        let events = Events::read(&path);
        assert_eq!(events.per_second, Some(12_345.0));
        assert_eq!(events.lag_p99_ms, Some(42.5));
        let missing = Events::read(&dir.join("absent.json"));
        assert_eq!(missing.per_second, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
