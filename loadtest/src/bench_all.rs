//! `bench all`: the inventory, cart and checkout benchmarks, run `--runs` times, each run's
//! targets table, and the table of their medians (what the README reports: run-to-run
//! spread here is about ±10%, so one run proves little).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::{bench_cart, bench_checkout, bench_inventory, bench_summary, mesh, report};

/// Flags of `bench all`.
#[derive(Debug, Args)]
pub struct AllBench {
    #[command(flatten)]
    pub inventory: bench_inventory::InventoryBench,
    /// Cart calls per RPC.
    #[arg(long, default_value_t = 50_000)]
    pub cart_requests: u64,
    /// Checkouts per closed-loop phase.
    #[arg(long, default_value_t = 5_000)]
    pub checkouts: u64,
    /// Open-loop checkout rate (per second, for 10 s).
    #[arg(long, default_value_t = 150.0)]
    pub checkout_rate: f64,
    /// How many times to run every benchmark; the summary reports each figure's median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub runs: u32,
    /// `bench_events --json` output, one per events run (repeat the flag), for the events
    /// rows of the summary: run i takes the i-th file (missing: those rows read "not run").
    #[arg(long)]
    pub events_json: Vec<PathBuf>,
}

/// Runs every benchmark `runs` times, prints each run's targets and their medians, and
/// writes every report, every run's targets and the medians to `json`.
pub async fn run(args: AllBench, json: &Path) -> anyhow::Result<()> {
    let bin = mesh::holdfast_bin(args.inventory.holdfast_bin.as_ref())?;
    let runs = args.runs as usize;
    let mut reports = Vec::with_capacity(runs);
    let mut targets = Vec::with_capacity(runs);
    for i in 0..runs {
        if runs > 1 {
            println!("\n=== bench all: run {} of {runs} ===", i + 1);
        }
        let inventory = bench_inventory::run(&args.inventory).await?;
        let cart = bench_cart::CartBench {
            requests: args.cart_requests,
            concurrency: args.inventory.concurrency,
            products: 200,
            holdfast_bin: Some(bin.clone()),
        };
        let cart = bench_cart::run(cart, bin.clone()).await?;
        let checkout = bench_checkout::CheckoutBench {
            checkouts: args.checkouts,
            concurrency: 32,
            rate: args.checkout_rate,
            open_for: Duration::from_secs(10),
            psp_latency: Duration::from_millis(50),
            holdfast_bin: Some(bin.clone()),
            dev_args: Vec::new(),
        };
        let checkout = bench_checkout::run(checkout, bin.clone()).await?;
        bench_cart::print(&cart);
        bench_checkout::print(&checkout);
        let events_file = args.events_json.get(i);
        let events = events_file
            .map(|p| bench_summary::Events::read(p))
            .unwrap_or_default();
        let rows = bench_summary::rows(&inventory, &cart, &checkout, events);
        bench_summary::print(&format!("run {} of {runs}", i + 1), &rows);
        reports.push(serde_json::json!({
            "inventory": inventory,
            "cart": cart,
            "checkout": checkout,
            "events": events_file.and_then(|p| read_json(p)),
            "targets": rows,
        }));
        targets.push(rows);
    }
    let medians = bench_summary::median_of_runs(&targets);
    if runs > 1 {
        bench_summary::print(&format!("median of {runs} runs"), &medians);
    }
    println!();
    report::write_json(json, &serde_json::json!({ "runs": reports, "targets": medians }))
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}
