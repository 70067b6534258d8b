//! `holdfast-load bench cart`: AddItem and GetCart through gRPC against `holdfast dev`
//! (catalog, inventory and cart in one process, embedded redis-server and SQLite), at a fixed
//! concurrency. Each caller is its own shopper with its own cart.

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
}

fn owner(shopper: u64) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(Owner::CustomerId(format!("bench-shopper-{shopper}"))),
    })
}

/// Runs the cart benchmark against a fresh `holdfast dev`.
pub async fn run(args: CartBench, bin: PathBuf) -> anyhow::Result<CartReport> {
    // Plain channels, no tokens: the benchmark measures the cart, not auth (not yet).
    let dev = start_dev_with(&bin, &["--insecure-no-auth"])?;
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
    Ok(CartReport {
        requests: args.requests,
        concurrency: args.concurrency,
        add_item,
        get_cart,
    })
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

/// Prints the cart figures next to the inventory baseline of the same run.
pub fn print(report: &CartReport, baseline_rate: Option<f64>) {
    println!();
    println!(
        "cart, {} calls per RPC, {} concurrent shoppers (holdfast dev: catalog + inventory + cart, embedded redis and SQLite)",
        report.requests, report.concurrency
    );
    println!(
        "{:<38} {:>10} {:>8} {:>8} {:>8}",
        "", "req/s", "p50 ms", "p99 ms", "p999 ms"
    );
    for (name, side) in [("AddItem", &report.add_item), ("GetCart", &report.get_cart)] {
        let p999 = side.p999_ms.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{name:<38} {:>10.0} {:>8.2} {:>8.2} {:>8}",
            side.rate, side.p50_ms, side.p99_ms, p999
        );
        if let Some(baseline) = baseline_rate {
            println!(
                "  ratio to the redis-benchmark reserve baseline above: {:.3}",
                side.rate / baseline
            );
        }
    }
}
