//! `holdfast-load bench cart`: AddItem and GetCart through gRPC against `holdfast dev`
//! (catalog, inventory and cart in one process, embedded redis-server and SQLite), at a fixed
//! concurrency. Each caller is its own shopper with its own cart.
//!
//! The baseline, measured in the same run on a `holdfast dev` of its own, is the same calls in
//! the shape issue 13 started from: `--cart-view rpc` (the cart's hash, then the catalog and
//! inventory asked per SKU over their RPCs, as a Redis Cluster still does) and
//! `--peers-over-grpc` (those calls over loopback gRPC, not in-process). It keeps every other
//! speed-up made since, so the ratio is if anything below the one against issue 13's figures.

use std::path::PathBuf;

use holdfast_proto::cart::v1::cart_owner::Owner;
use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::cart::v1::{AddItemRequest, CartOwner, GetCartRequest, ItemOutcome};
use serde::Serialize;
use tonic::transport::Channel;

use crate::bench_inventory::Side;
use crate::bench_seed::{Products, seed};
use crate::engine::{self, Arrival, LoadResult, Plan, Sample};
use crate::mesh::{Dev, start_dev_with};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct CartBench {
    /// Calls per RPC.
    #[arg(long, default_value_t = 50_000)]
    pub requests: u64,
    /// Concurrent shoppers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// Products in the catalog (each shopper's lines cycle through them).
    #[arg(long, default_value_t = 200)]
    pub products: u64,
    /// The holdfast binary (default: next to this one).
    #[arg(long)]
    pub holdfast_bin: Option<PathBuf>,
}

/// The cart figures.
#[derive(Debug, Clone, Serialize)]
pub struct CartReport {
    /// Calls per RPC.
    pub requests: u64,
    /// Concurrent shoppers.
    pub concurrency: u64,
    /// AddItem (catalog lookup + availability check + script + write-behind).
    pub add_item: Side,
    /// GetCart (Redis read + catalog prices + availability).
    pub get_cart: Side,
    /// The same calls with `--cart-view rpc --peers-over-grpc`, same run: the baseline.
    pub baseline_before: CartSides,
}

/// AddItem and GetCart of one `holdfast dev`.
#[derive(Debug, Clone, Serialize)]
pub struct CartSides {
    /// AddItem.
    pub add_item: Side,
    /// GetCart.
    pub get_cart: Side,
}

/// The SKU of product `i` of the bench's catalog.
fn sku(i: u64) -> String {
    format!("BENCH-{i:04}")
}

fn owner(shopper: u64) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(Owner::CustomerId(format!("bench-shopper-{shopper}"))),
    })
}

/// The baseline's `holdfast dev` flags: the cart as issue 13 found it.
const BEFORE: [&str; 3] = ["--cart-view", "rpc", "--peers-over-grpc"];

/// Runs the cart benchmark on two fresh `holdfast dev`s, the baseline ([`BEFORE`]) and the
/// defaults, side by side: each RPC's baseline calls in two halves, one before and one after
/// the defaults' calls (A B A), so a change in the shared host's speed during the run (the
/// baseline and the defaults one after the other once gave 1.18 and 3.48 in one `make bench`)
/// weighs on both sides alike.
pub async fn run(args: CartBench, bin: PathBuf) -> anyhow::Result<CartReport> {
    println!("cart baseline: holdfast dev {}", BEFORE.join(" "));
    let baseline = Target::start(&args, &bin, &BEFORE).await?;
    println!("cart: holdfast dev with its defaults");
    let script = Target::start(&args, &bin, &[]).await?;
    let (add_item, add_base) = side_by_side(&args, &script, &baseline, Op::AddItem).await?;
    let (get_cart, get_base) = side_by_side(&args, &script, &baseline, Op::GetCart).await?;
    Ok(CartReport {
        requests: args.requests,
        concurrency: args.concurrency,
        add_item,
        get_cart,
        baseline_before: CartSides {
            add_item: add_base,
            get_cart: get_base,
        },
    })
}

/// `op` on the defaults between the two halves of its baseline calls: (defaults, baseline).
async fn side_by_side(
    args: &CartBench,
    script: &Target,
    baseline: &Target,
    op: Op,
) -> anyhow::Result<(Side, Side)> {
    let half = args.requests / 2;
    let first = baseline.drive(args, op, 0, half).await?;
    let measured = script.drive(args, op, 0, args.requests).await?;
    let second = baseline.drive(args, op, half, args.requests - half).await?;
    Ok((Side::of(&measured), merged(&first, &second)))
}

/// The figures of two phases of the same calls as one: their calls over their summed time.
fn merged(first: &LoadResult, second: &LoadResult) -> Side {
    let mut all = first.all.clone();
    // Histograms of one engine share their bounds, so adding cannot fail.
    let _ = all.add(&second.all);
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let seconds = (first.elapsed + second.elapsed).as_secs_f64();
    Side {
        rate: all.len() as f64 / seconds.max(1e-9),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: Some(ms(0.999)),
    }
}

/// The RPC a phase calls.
#[derive(Debug, Clone, Copy)]
enum Op {
    AddItem,
    GetCart,
}

/// A seeded `holdfast dev` and the channels the shoppers call it on.
struct Target {
    channels: Vec<Channel>,
    /// Stops the server when dropped.
    _dev: Dev,
}

impl Target {
    /// Starts a `holdfast dev` with `dev_args` and seeds its catalog and stock.
    async fn start(args: &CartBench, bin: &std::path::Path, dev_args: &[&str]) -> anyhow::Result<Self> {
        // Plain channels, no tokens: the benchmark measures the cart, not auth (not yet).
        let mut flags = vec!["--insecure-no-auth"];
        flags.extend_from_slice(dev_args);
        let dev = start_dev_with(bin, &flags)?;
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(
                tonic::transport::Endpoint::from_shared(format!("http://{}", dev.addr))?
                    .connect()
                    .await?,
            );
        }
        seed(
            &channels[0],
            &Products {
                count: args.products,
                sku,
                title: "Bench product",
                price_base: 100,
            },
        )
        .await?;
        Ok(Self { channels, _dev: dev })
    }

    /// Calls `op` `requests` times, attempts `from..from + requests` of the whole run.
    ///
    /// Each shopper adds to its own cart, cycling through products so carts stay under the
    /// line and quantity caps: add k puts product (k / 50) % products, one unit. GetCart
    /// reads carts the AddItem phases filled.
    async fn drive(&self, args: &CartBench, op: Op, from: u64, requests: u64) -> anyhow::Result<LoadResult> {
        let products = args.products;
        match op {
            Op::AddItem => {
                drive(
                    &self.channels,
                    args.concurrency,
                    (from, requests),
                    "AddItem",
                    move |mut client, shopper, k| async move {
                        let sku = sku((shopper * 7 + k / 50) % products);
                        match client
                            .add_item(AddItemRequest {
                                owner: owner(shopper),
                                sku,
                                quantity: 1,
                                expected_version: 0,
                            })
                            .await
                        {
                            Ok(reply) if reply.get_ref().outcome == ItemOutcome::Applied as i32 => {
                                Sample::answer("AddItem", "applied")
                            }
                            Ok(_) => Sample::wrong("AddItem", "not applied"),
                            Err(status) => Sample::error("AddItem", &status),
                        }
                    },
                )
                .await
            }
            Op::GetCart => {
                drive(
                    &self.channels,
                    args.concurrency,
                    (from, requests),
                    "GetCart",
                    |mut client, shopper, _| async move {
                        match client
                            .get_cart(GetCartRequest {
                                owner: owner(shopper),
                            })
                            .await
                        {
                            Ok(reply)
                                if reply.get_ref().cart.as_ref().is_some_and(|c| !c.lines.is_empty()) =>
                            {
                                Sample::answer("GetCart", "ok")
                            }
                            Ok(_) => Sample::wrong("GetCart", "empty cart"),
                            Err(status) => Sample::error("GetCart", &status),
                        }
                    },
                )
                .await
            }
        }
    }
}

/// Closed loop: `concurrency` shoppers making `requests` calls; attempt `j` of the whole
/// run (`from..from + requests`) is shopper `j % concurrency`'s `j / concurrency`-th call.
async fn drive<F, Fut>(
    channels: &[Channel],
    concurrency: u64,
    (from, requests): (u64, u64),
    op: &str,
    call: F,
) -> anyhow::Result<LoadResult>
where
    F: Fn(CartServiceClient<Channel>, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Sample> + Send + 'static,
{
    let channels = channels.to_vec();
    let concurrency = concurrency.max(1);
    let plan = Plan {
        arrival: Arrival::Closed {
            concurrency: concurrency as usize,
        },
        attempts: Some(requests),
        duration: None,
        label: format!("cart {op}"),
        progress: true,
    };
    let result = engine::run(&plan, move |i| {
        let attempt = from + i;
        let shopper = attempt % concurrency;
        let client = CartServiceClient::new(channels[shopper as usize % channels.len()].clone());
        call(client, shopper, attempt / concurrency)
    })
    .await;
    if result.errors > 0 {
        anyhow::bail!(
            "{} of {requests} {op} calls failed: {:?}",
            result.errors,
            result.ops.values().map(|o| &o.errors).collect::<Vec<_>>()
        );
    }
    Ok(result)
}

/// Prints the cart figures, each beside its baseline of the same run ([`BEFORE`]).
pub fn print(report: &CartReport) {
    println!();
    println!(
        "cart, {} calls per RPC, {} concurrent shoppers (holdfast dev: catalog + inventory + cart, embedded redis and SQLite)",
        report.requests, report.concurrency
    );
    println!(
        "{:<38} {:>10} {:>8} {:>8} {:>8}",
        "", "req/s", "p50 ms", "p99 ms", "p999 ms"
    );
    let baseline = &report.baseline_before;
    for (name, side, base) in [
        ("AddItem", &report.add_item, &baseline.add_item),
        ("GetCart", &report.get_cart, &baseline.get_cart),
    ] {
        for (label, side) in [
            (name.to_string(), side),
            (format!("baseline: {name}, rpc view, loopback"), base),
        ] {
            let p999 = side.p999_ms.map_or("-".to_string(), |v| format!("{v:.2}"));
            println!(
                "{label:<38} {:>10.0} {:>8.2} {:>8.2} {:>8}",
                side.rate, side.p50_ms, side.p99_ms, p999
            );
        }
        println!(
            "  {name} ratio to the baseline (same run): {:.2}   target >= 4",
            side.rate / base.rate
        );
    }
}
