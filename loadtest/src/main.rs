//! `holdfast-load`: benchmarks (and, with the load-harness issue, the SRE scenarios).

mod bench_inventory;

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
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Reserve RPC vs redis-benchmark EVALSHA of the same script; Redis memory per SKU and hold.
    Inventory(bench_inventory::InventoryBench),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = holdfast_platform::config::parse_or_exit::<Cli>();
    match cli.command {
        Command::Bench {
            what: Bench::Inventory(args),
        } => {
            bench_inventory::run(args).await?;
        }
    }
    Ok(())
}
