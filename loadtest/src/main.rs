//! `holdfast-load`: benchmarks (and, with the load-harness issue, the SRE scenarios).

mod bench_cart;
mod bench_inventory;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Measure a holdfast mesh: throughput, tail latency and correctness.
#[derive(Debug, Parser)]
#[command(name = "holdfast-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks against baselines measured in the same run.
    Bench {
        /// Where to write the JSON result.
        #[arg(long, global = true, default_value = "target/bench/bench.json")]
        json: PathBuf,
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Reserve RPC vs redis-benchmark EVALSHA of the same script; Redis memory per SKU and hold.
    Inventory(bench_inventory::InventoryBench),
    /// AddItem and GetCart against `holdfast dev`.
    Cart(bench_cart::CartBench),
    /// Both, in one run: the cart figures next to the inventory baseline.
    All {
        #[command(flatten)]
        inventory: bench_inventory::InventoryBench,
        /// Cart calls per RPC.
        #[arg(long, default_value_t = 50_000)]
        cart_requests: u64,
    },
}

fn write_json(path: &PathBuf, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    println!("\njson: {}", path.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = holdfast_platform::config::parse_or_exit::<Cli>();
    let Command::Bench { json, what } = cli.command;
    match what {
        Bench::Inventory(args) => {
            let report = bench_inventory::run(&args).await?;
            write_json(&json, &serde_json::json!({ "inventory": report }))
        }
        Bench::Cart(args) => {
            let bin = bench_inventory::holdfast_bin(args.holdfast_bin.as_ref())?;
            let report = bench_cart::run(args, bin).await?;
            bench_cart::print(&report, None);
            write_json(&json, &serde_json::json!({ "cart": report }))
        }
        Bench::All {
            inventory,
            cart_requests,
        } => {
            let bin = bench_inventory::holdfast_bin(inventory.holdfast_bin.as_ref())?;
            let inventory_report = bench_inventory::run(&inventory).await?;
            let cart = bench_cart::CartBench {
                requests: cart_requests,
                concurrency: inventory.concurrency,
                products: 200,
                holdfast_bin: Some(bin.clone()),
            };
            let cart_report = bench_cart::run(cart, bin).await?;
            bench_cart::print(&cart_report, Some(inventory_report.baseline_evalsha.rate));
            write_json(
                &json,
                &serde_json::json!({ "inventory": inventory_report, "cart": cart_report }),
            )
        }
    }
}
