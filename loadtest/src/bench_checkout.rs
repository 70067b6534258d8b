//! `holdfast-load bench checkout`: whole checkouts (validate and re-price, reserve, risk,
//! authorize, order, commit, capture, dispatch through the outbox) against `holdfast dev`
//! on the embedded store (SQLite) with the simulated PSP, at PSP latency 0 and 50 ms.
//!
//! Baseline, measured in the same run on the same mesh: the Reserve RPC alone at the same
//! concurrency, i.e. the one contended step every checkout contains. The ratio says how
//! many Reserve calls' worth of work a whole checkout costs.
//!
//! After the closed loop at PSP latency 0 it waits until the mesh's event consumers have
//! handled every event the loop's checkouts published ([`crate::bus_drain`]) and reports how
//! long that took: a rate whose downstream work fell behind is not a rate the mesh sustains.

use std::path::PathBuf;
use std::time::Duration;

use holdfast_proto::common::v1::{Address, GeoPoint};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{ReservationStatus, ReserveLine, ReserveRequest};
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::orders::v1::{
    CheckoutLine, CheckoutLines, CheckoutOutcome, CheckoutRequest, checkout_request,
};
use serde::Serialize;
use tonic::transport::Channel;

use crate::bench_inventory::Side;
use crate::bench_seed::{Products, seed};
use crate::bus_drain::{self, Drain};
use crate::engine::{self, Arrival, Plan, Sample};
use crate::mesh::start_dev_with;

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckoutBench {
    /// Checkouts per closed-loop phase.
    #[arg(long, default_value_t = 5_000)]
    pub checkouts: u64,
    /// Concurrent shoppers in the closed-loop phases.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u64,
    /// Arrival rate of the open-loop phase at PSP latency 0: a rate this machine sustains
    /// (the 500/s target saturates it: an open loop above capacity only measures the queue).
    #[arg(long, default_value_t = 150.0)]
    pub rate: f64,
    /// How long the open-loop phase runs.
    #[arg(long, default_value = "10s", value_parser = holdfast_platform::config::parse_duration)]
    pub open_for: Duration,
    /// PSP latency of the second closed-loop phase.
    #[arg(long, default_value = "50ms", value_parser = holdfast_platform::config::parse_duration)]
    pub psp_latency: Duration,
    /// The holdfast binary (default: next to this one).
    #[arg(long)]
    pub holdfast_bin: Option<PathBuf>,
    /// An extra flag for both `holdfast dev` meshes (repeat it), e.g.
    /// `--dev-arg=--peers-over-grpc` to measure the mesh's peer calls over loopback gRPC.
    #[arg(long = "dev-arg", allow_hyphen_values = true)]
    pub dev_args: Vec<String>,
}

/// The checkout figures.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutReport {
    /// Concurrent shoppers of the closed-loop phases.
    pub concurrency: u64,
    /// Baseline: Reserve RPC alone, closed loop, PSP latency 0 mesh.
    pub baseline_reserve: Side,
    /// Checkout, closed loop, PSP latency 0.
    pub checkout_psp_0: Side,
    /// How far the event consumers were behind when that loop ended, and how long they took
    /// to catch up.
    pub downstream_psp_0: Drain,
    /// Checkout, open loop at `rate`, PSP latency 0 (latency from the scheduled time).
    pub checkout_open_psp_0: Side,
    /// The open-loop rate.
    pub rate: f64,
    /// Checkout, closed loop, PSP latency `psp_latency_ms`.
    pub checkout_psp_latency: Side,
    /// The PSP latency of that phase.
    pub psp_latency_ms: u64,
    /// checkout_psp_0.rate / baseline_reserve.rate.
    pub ratio_to_reserve: f64,
}

const PRODUCTS: u64 = 50;

async fn connect(addr: &str) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// The SKU of product `i` of the bench's catalog.
fn sku(i: u64) -> String {
    format!("CO-{i:03}")
}

async fn stock(channel: &Channel) -> anyhow::Result<()> {
    seed(
        channel,
        &Products {
            count: PRODUCTS,
            sku,
            title: "Checkout bench product",
            price_base: 500,
        },
    )
    .await
}

fn request(run: &str, i: u64) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: format!("{run}-{i}"),
        // One customer per checkout: the velocity rule would send repeat buyers to review.
        customer_id: format!("{run}-customer-{i}"),
        source: Some(checkout_request::Source::Lines(CheckoutLines {
            lines: vec![
                CheckoutLine {
                    sku: sku(i % PRODUCTS),
                    quantity: 1,
                    expected_unit_price: None,
                },
                CheckoutLine {
                    sku: sku((i * 7 + 3) % PRODUCTS),
                    quantity: 2,
                    expected_unit_price: None,
                },
            ],
        })),
        shipping_address: Some(Address {
            name: "Bench Buyer".into(),
            line1: "1 Load St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
            location: Some(GeoPoint {
                latitude: 52.53,
                longitude: 13.38,
            }),
            ..Address::default()
        }),
        payment_method: "pm_card_visa".into(),
        ..CheckoutRequest::default()
    }
}

async fn checkout_phase(channels: &[Channel], plan: Plan, run: &'static str) -> anyhow::Result<Side> {
    let channels = channels.to_vec();
    let result = engine::run(&plan, move |i| {
        let mut client = OrderServiceClient::new(channels[i as usize % channels.len()].clone());
        async move {
            match client.checkout(request(run, i)).await {
                Ok(reply) if reply.get_ref().outcome == CheckoutOutcome::Placed as i32 => {
                    Sample::answer("Checkout", "placed")
                }
                Ok(_) => Sample::wrong("Checkout", "not placed"),
                Err(status) => Sample::error("Checkout", &status),
            }
        }
    })
    .await;
    if result.errors > 0 {
        anyhow::bail!(
            "{} checkouts of {} failed: {:?}",
            result.errors,
            result.completed(),
            result.ops.values().map(|o| &o.errors).collect::<Vec<_>>()
        );
    }
    Ok(Side::of(&result))
}

fn closed(concurrency: u64, attempts: u64, label: &str) -> Plan {
    Plan {
        arrival: Arrival::Closed {
            concurrency: concurrency.max(1) as usize,
        },
        attempts: Some(attempts),
        duration: None,
        label: label.to_string(),
        progress: true,
    }
}

/// Runs every phase: two fresh `holdfast dev` meshes (PSP latency 0, then the configured one).
pub async fn run(args: CheckoutBench, bin: PathBuf) -> anyhow::Result<CheckoutReport> {
    let dev = |latency: &str| {
        let mut flags = vec!["--payments-latency", latency, "--insecure-no-auth"];
        flags.extend(args.dev_args.iter().map(String::as_str));
        start_dev_with(&bin, &flags)
    };
    let fast = dev("0s")?;
    let channels = connect(&fast.addr).await?;
    stock(&channels[0]).await?;

    // Baseline: the Reserve RPC alone on this mesh, same concurrency.
    let reserve_channels = channels.clone();
    let reserved = engine::run(
        &closed(args.concurrency, args.checkouts * 2, "baseline Reserve"),
        move |i| {
            let mut client =
                InventoryServiceClient::new(reserve_channels[i as usize % reserve_channels.len()].clone());
            async move {
                let request = ReserveRequest {
                    reservation_id: format!("bench-reserve-{i}"),
                    lines: vec![ReserveLine {
                        sku: sku(i % PRODUCTS),
                        quantity: 1,
                    }],
                    ttl_seconds: 600,
                };
                match client.reserve(request).await {
                    Ok(reply) if reply.get_ref().status == ReservationStatus::Reserved as i32 => {
                        Sample::answer("Reserve", "reserved")
                    }
                    Ok(_) => Sample::wrong("Reserve", "not reserved"),
                    Err(status) => Sample::error("Reserve", &status),
                }
            }
        },
    )
    .await;
    anyhow::ensure!(
        reserved.errors == 0,
        "{} baseline reserves failed",
        reserved.errors
    );
    let baseline_reserve = Side::of(&reserved);

    let checkout_psp_0 = checkout_phase(
        &channels,
        closed(args.concurrency, args.checkouts, "checkout, PSP 0 ms"),
        "bench-closed",
    )
    .await?;
    let downstream_psp_0 = bus_drain::wait_caught_up(&fast.admin, Duration::from_secs(300)).await?;
    let open = Plan {
        arrival: Arrival::Open {
            rate: args.rate,
            max_in_flight: 4096,
        },
        attempts: None,
        duration: Some(args.open_for),
        label: format!("checkout at {} /s, PSP 0 ms", args.rate),
        progress: true,
    };
    let checkout_open_psp_0 = checkout_phase(&channels, open, "bench-open").await?;
    drop(fast);

    let latency = format!("{}ms", args.psp_latency.as_millis());
    let slow = dev(&latency)?;
    let channels = connect(&slow.addr).await?;
    stock(&channels[0]).await?;
    let checkout_psp_latency = checkout_phase(
        &channels,
        closed(
            args.concurrency,
            args.checkouts,
            &format!("checkout, PSP {latency}"),
        ),
        "bench-slow",
    )
    .await?;
    drop(slow);

    Ok(CheckoutReport {
        concurrency: args.concurrency,
        ratio_to_reserve: checkout_psp_0.rate / baseline_reserve.rate,
        baseline_reserve,
        checkout_psp_0,
        downstream_psp_0,
        checkout_open_psp_0,
        rate: args.rate,
        checkout_psp_latency,
        psp_latency_ms: args.psp_latency.as_millis() as u64,
    })
}

/// Prints the figures.
pub fn print(report: &CheckoutReport) {
    println!();
    println!(
        "checkout (holdfast dev: embedded redis-server + SQLite store + simulated PSP; {} shoppers closed loop)",
        report.concurrency
    );
    println!(
        "{:<44} {:>10} {:>8} {:>8} {:>8}",
        "", "req/s", "p50 ms", "p99 ms", "p999 ms"
    );
    let rows = [
        (
            "baseline: Reserve RPC alone".to_string(),
            &report.baseline_reserve,
        ),
        ("Checkout, PSP latency 0".to_string(), &report.checkout_psp_0),
        (
            format!("Checkout, open loop {}/s, PSP latency 0", report.rate),
            &report.checkout_open_psp_0,
        ),
        (
            format!("Checkout, PSP latency {} ms", report.psp_latency_ms),
            &report.checkout_psp_latency,
        ),
    ];
    for (name, side) in rows {
        let p999 = side.p999_ms.map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{name:<44} {:>10.0} {:>8.1} {:>8.1} {:>8}",
            side.rate, side.p50_ms, side.p99_ms, p999
        );
    }
    println!(
        "ratio checkout / Reserve (same mesh, same concurrency): {:.3}",
        report.ratio_to_reserve
    );
    println!(
        "events of the PSP-0 closed loop: {} published and not yet handled when it ended (outbox rows not counted), all handled {:.0} ms later",
        report.downstream_psp_0.behind_at_end, report.downstream_psp_0.caught_up_ms
    );
}
