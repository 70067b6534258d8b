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
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::Money;
use holdfast_proto::inventory::v1::SetStockRequest;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::bench_inventory::Side;
use crate::engine::{self, Arrival, Plan, Sample};
use crate::mesh::start_dev_with;

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

fn owner(shopper: u64) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(Owner::CustomerId(format!("bench-shopper-{shopper}"))),
    })
}

/// The baseline's `holdfast dev` flags: the cart as issue 13 found it.
const BEFORE: [&str; 3] = ["--cart-view", "rpc", "--peers-over-grpc"];

/// Runs the cart benchmark: the baseline ([`BEFORE`]), then the defaults, each against a
/// fresh `holdfast dev`.
pub async fn run(args: CartBench, bin: PathBuf) -> anyhow::Result<CartReport> {
    println!("cart baseline: holdfast dev {}", BEFORE.join(" "));
    let baseline = measure(&args, &bin, &BEFORE).await?;
    println!("cart: holdfast dev with its defaults");
    let script = measure(&args, &bin, &[]).await?;
    Ok(CartReport {
        requests: args.requests,
        concurrency: args.concurrency,
        add_item: script.add_item,
        get_cart: script.get_cart,
        baseline_before: baseline,
    })
}

/// AddItem then GetCart against a fresh `holdfast dev` started with `dev_args`.
async fn measure(args: &CartBench, bin: &std::path::Path, dev_args: &[&str]) -> anyhow::Result<CartSides> {
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
    let mut catalog = CatalogServiceClient::new(channels[0].clone());
    let mut inventory = InventoryServiceClient::new(channels[0].clone());
    for i in 0..args.products {
        let sku = format!("BENCH-{i:04}");
        catalog
            .upsert_product(UpsertProductRequest {
                product: Some(Product {
                    sku: sku.clone(),
                    title: format!("Bench product {i}"),
                    price: Some(Money {
                        amount_minor: 100 + i as i64,
                        currency: "EUR".into(),
                    }),
                    category: "bench".into(),
                    active: true,
                    ..Default::default()
                }),
                expected_version: 0,
            })
            .await?;
        inventory
            .set_stock(SetStockRequest {
                sku,
                on_hand: 1_000_000_000,
                buckets: 1,
            })
            .await?;
    }

    // Each shopper adds to its own cart, cycling through products so carts stay under the
    // line and quantity caps: add k puts product (k / 50) % products, one unit.
    let products = args.products;
    let add_item = drive(
        &channels,
        args.concurrency,
        args.requests,
        "AddItem",
        move |mut client, shopper, k| async move {
            let sku = format!("BENCH-{:04}", (shopper * 7 + k / 50) % products);
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
    .await?;
    let get_cart = drive(
        &channels,
        args.concurrency,
        args.requests,
        "GetCart",
        |mut client, shopper, _| async move {
            match client
                .get_cart(GetCartRequest {
                    owner: owner(shopper),
                })
                .await
            {
                Ok(reply) if reply.get_ref().cart.as_ref().is_some_and(|c| !c.lines.is_empty()) => {
                    Sample::answer("GetCart", "ok")
                }
                Ok(_) => Sample::wrong("GetCart", "empty cart"),
                Err(status) => Sample::error("GetCart", &status),
            }
        },
    )
    .await?;
    drop(dev);
    Ok(CartSides { add_item, get_cart })
}

/// Closed loop: `concurrency` shoppers; attempt `i` is shopper `i % concurrency`'s
/// `i / concurrency`-th call.
async fn drive<F, Fut>(
    channels: &[Channel],
    concurrency: u64,
    requests: u64,
    op: &str,
    call: F,
) -> anyhow::Result<Side>
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
        let shopper = i % concurrency;
        let client = CartServiceClient::new(channels[shopper as usize % channels.len()].clone());
        call(client, shopper, i / concurrency)
    })
    .await;
    if result.errors > 0 {
        anyhow::bail!(
            "{} of {requests} {op} calls failed: {:?}",
            result.errors,
            result.ops.values().map(|o| &o.errors).collect::<Vec<_>>()
        );
    }
    Ok(Side::of(&result))
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
