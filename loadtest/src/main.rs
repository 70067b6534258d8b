//! `holdfast-load`: the SRE load harness (`flash-sale`, `checkout-storm`, `browse-mix`,
//! `soak`, `chaos`) and the benchmarks behind `make bench`.
//!
//! Exit codes: 0 every check and gate held; 1 the harness could not run; 3 a correctness
//! check found a violation; 4 an `--slo` gate was missed; 64 a bad flag.

mod audit;
mod bench_all;
mod bench_cart;
mod bench_checkout;
mod bench_inventory;
mod bench_search;
mod bench_seed;
mod bench_summary;
mod browse;
mod bus_drain;
mod chaos;
mod checkout_storm;
mod engine;
mod event_audit;
mod faults;
mod flash_admission;
mod flash_regions;
mod flash_sale;
mod mesh;
mod pinning;
mod plot;
mod reconcile;
mod region_figures;
mod region_world;
mod report;
mod reserve_streams;
mod scenario;
mod slo;
mod soak;
mod summary;
mod warmup;
mod world_check;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// The harness shares the machine's cores with the mesh it measures, so its own CPU per call
// is taken from the server's: every answer it decodes is a burst of small allocations across
// tokio's worker threads, the shape glibc malloc handles worst (the server's reason too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure a holdfast mesh: throughput, tail latency and correctness.
#[derive(Debug, Parser)]
#[command(name = "holdfast-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// S units of one SKU, A buyers at once: who pays, who abandons a hold, who cancels;
    /// checks exactly min(S, A) winners, zero oversell, stock conserved, one charge per key.
    /// With --regions: one global SKU across regions, the checks extended to the world.
    FlashSale(flash_sale::FlashSaleArgs),
    /// N customers with carts check out at once, some losing their first answer and retrying
    /// with the same key, some with failing cards; checks orders, charges, stock and carts.
    CheckoutStorm(checkout_storm::CheckoutStormArgs),
    /// About 300 reads to 1 write across availability, product and cart reads; checks every
    /// read against what was written and that no acknowledged cart write is lost.
    BrowseMix(browse::BrowseMixArgs),
    /// A fixed rate for a duration (browse-mix plus hold cycles and, optionally, checkouts);
    /// the same checks at the end, and the latency drift.
    Soak(soak::SoakArgs),
    /// A flash sale and a checkout storm while holdfast, redis-server and (with --kafka) the
    /// Kafka broker are SIGKILLed and restarted at seeded moments; the scenarios' checks plus
    /// events lost or applied twice, as a verdict table. Exit 3 on any violation.
    Chaos(chaos::ChaosArgs),
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
    /// A sold-out SKU hammered by the same callers: answers per second, none a grant.
    FlashSaleSoldout(bench_inventory::InventoryBench),
    /// AddItem and GetCart against `holdfast dev`.
    Cart(bench_cart::CartBench),
    /// Whole checkouts against `holdfast dev` at PSP latency 0 and 50 ms, next to the Reserve RPC.
    Checkout(bench_checkout::CheckoutBench),
    /// The embedded search index: products/s indexed, known answers and query p99 at 1M products.
    Search(bench_search::SearchBench),
    /// Inventory, cart and checkout, `--runs` times: every issue-13 target with its baseline,
    /// ratio and `met`/`NOT met`, per run and as the median of the runs.
    All(bench_all::AllBench),
}

fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    println!();
    report::write_json(path, value)
}

fn main() {
    // The services' runtime (the LIFO slot off): the load generator's connections then
    // write the requests its callers hand them together, as the server writes its answers.
    let runtime = holdfast_platform::runtime::multi_thread().unwrap_or_else(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        std::process::exit(1);
    });
    runtime.block_on(run());
}

async fn run() {
    let cli = holdfast_platform::config::parse_or_exit::<Cli>();
    let code = match cli.command {
        Command::FlashSale(args) => flash_sale::run(args).await,
        Command::CheckoutStorm(args) => checkout_storm::run(args).await,
        Command::BrowseMix(args) => browse::run(args).await,
        Command::Soak(args) => soak::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Bench { json, what } => bench(json, what).await.map(|()| report::EXIT_PASS),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(report::EXIT_ERROR);
        }
    }
}

async fn bench(json: PathBuf, what: Bench) -> anyhow::Result<()> {
    match what {
        Bench::Inventory(args) => {
            let report = bench_inventory::run(&args).await?;
            write_json(&json, &serde_json::json!({ "inventory": report }))
        }
        Bench::FlashSaleSoldout(args) => {
            let soldout = bench_inventory::run_soldout(&args).await?;
            write_json(&json, &serde_json::json!({ "flash_sale_soldout": soldout }))
        }
        Bench::Cart(args) => {
            let bin = mesh::holdfast_bin(args.holdfast_bin.as_ref())?;
            let report = bench_cart::run(args, bin).await?;
            bench_cart::print(&report);
            write_json(&json, &serde_json::json!({ "cart": report }))
        }
        Bench::Checkout(args) => {
            let bin = mesh::holdfast_bin(args.holdfast_bin.as_ref())?;
            let report = bench_checkout::run(args, bin).await?;
            bench_checkout::print(&report);
            write_json(&json, &serde_json::json!({ "checkout": report }))
        }
        Bench::Search(args) => {
            let report = bench_search::run(&args).await?;
            write_json(&json, &serde_json::json!({ "search": report }))
        }
        Bench::All(args) => bench_all::run(args, &json).await,
    }
}
