//! `holdfast-load bench cart`: AddItem and GetCart through gRPC against `holdfast dev`
//! (catalog, inventory and cart in one process, embedded redis-server and SQLite), at a fixed
//! concurrency. Each caller is its own shopper with its own cart.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
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

struct Dev {
    child: Child,
    addr: String,
    _data: TempData,
}

struct TempData(PathBuf);

impl Drop for TempData {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_dev(bin: &std::path::Path) -> anyhow::Result<Dev> {
    let data = TempData(std::env::temp_dir().join(format!("holdfast-bench-dev-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&data.0);
    let mut child = Command::new(bin)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--concurrency-limit",
            "100000",
        ])
        .arg("--data-dir")
        .arg(&data.0)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .with_context(|| format!("unexpected ready line {line:?}"))?
        .to_string();
    Ok(Dev {
        child,
        addr,
        _data: data,
    })
}

fn owner(shopper: u64) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(Owner::CustomerId(format!("bench-shopper-{shopper}"))),
    })
}

/// Runs the cart benchmark against a fresh `holdfast dev`.
pub async fn run(args: CartBench, bin: PathBuf) -> anyhow::Result<CartReport> {
    let dev = start_dev(&bin)?;
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
        move |mut client, shopper, k| async move {
            let sku = format!("BENCH-{:04}", (shopper * 7 + k / 50) % products);
            let reply = client
                .add_item(AddItemRequest {
                    owner: owner(shopper),
                    sku,
                    quantity: 1,
                    expected_version: 0,
                })
                .await?
                .into_inner();
            if reply.outcome != ItemOutcome::Applied as i32 {
                bail!("add was not applied: {reply:?}");
            }
            Ok(())
        },
    )
    .await?;
    let get_cart = drive(
        &channels,
        args.concurrency,
        args.requests,
        |mut client, shopper, _| async move {
            let reply = client
                .get_cart(GetCartRequest {
                    owner: owner(shopper),
                })
                .await?
                .into_inner();
            if reply.cart.is_none_or(|c| c.lines.is_empty()) {
                bail!("shopper {shopper} has an empty cart");
            }
            Ok(())
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

async fn drive<F, Fut>(channels: &[Channel], concurrency: u64, requests: u64, call: F) -> anyhow::Result<Side>
where
    F: Fn(CartServiceClient<Channel>, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let shoppers = (0..concurrency).map(|shopper| {
        let client = CartServiceClient::new(channels[shopper as usize % channels.len()].clone());
        let (call, next) = (call.clone(), next.clone());
        tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds are valid");
            let mut k = 0;
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let sent = Instant::now();
                call(client.clone(), shopper, k).await?;
                histogram.saturating_record(sent.elapsed().as_micros() as u64);
                k += 1;
            }
            Ok::<_, anyhow::Error>(histogram)
        })
    });
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for shopper in futures::future::join_all(shoppers).await {
        total.add(shopper??)?;
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Ok(Side {
        rate: requests as f64 / started.elapsed().as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: Some(ms(0.999)),
    })
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
