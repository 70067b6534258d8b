//! `holdfast-load soak`: a fixed arrival rate for a duration, to see what time does — latency
//! drift, leaked holds, lost cart writes, charges that go astray.
//!
//! The mix is browse-mix's (about 300 reads to 1 write), plus a share of hold cycles (Reserve
//! one unit, then Release it) and, optionally, a share of checkouts. At the end: the browse
//! checks, every hold released and its stock as found, and (with checkouts) orders, money
//! and stock reconciled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_platform::config::parse_duration;
use holdfast_proto::inventory::v1::{
    ReleaseRequest, ReservationStatus, ReserveLine, ReserveRequest, SetStockRequest,
};
use holdfast_proto::orders::v1::checkout_request::Source;
use holdfast_proto::orders::v1::{CheckoutLine, CheckoutLines, CheckoutRequest};
use tokio::time::Instant;

use crate::audit::{self, Attempted, CheckoutAnswer};
use crate::browse::{Browse, BrowseArgs};
use crate::engine::{self, Arrival, Sample};
use crate::mesh::Mesh;
use crate::report::{Check, RunReport};
use crate::scenario::{RunArgs, Share, request, run_id, sample_list, splitmix, unix_ms, with_retries};

/// Flags of `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Target, load shape (`--rate`; a soak is open loop) and output.
    #[command(flatten)]
    pub run: RunArgs,
    /// How long to keep the rate up.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The browse workload.
    #[command(flatten)]
    pub browse: BrowseArgs,
    /// Share of attempts that Reserve one unit and Release it.
    #[arg(long, default_value = "5%", value_parser = Share::parse)]
    pub hold_share: Share,
    /// Share of attempts that check out one unit (explicit lines, pm_card_visa).
    #[arg(long, default_value = "0%", value_parser = Share::parse)]
    pub checkout_share: Share,
}

/// SKUs the hold cycles and the checkouts use (apart from the browse SKUs, whose stock must
/// stay untouched).
const SIDE_SKUS: u64 = 20;
/// Units of each side SKU.
const SIDE_STOCK: i64 = 1_000_000;
/// TTL of a soak hold: a Release that is lost leaves it this long.
const HOLD_TTL_S: u32 = 30;
/// Price of a checkout SKU, cents.
const BUY_PRICE: i64 = 2_500;

/// Runs `soak`; answers the exit code.
pub async fn run(args: SoakArgs) -> anyhow::Result<i32> {
    crate::scenario::check_rate(&args.run)?;
    anyhow::ensure!(
        args.run.concurrency.is_none(),
        "a soak holds a fixed rate: use --rate, not --concurrency"
    );
    anyhow::ensure!(
        args.hold_share.0 + args.checkout_share.0 <= 1.0,
        "--hold-share and --checkout-share add up to more than 100%"
    );
    let mesh = Arc::new(Mesh::connect(&args.run.target).await?);
    let run_id = run_id();
    let started_ms = unix_ms();
    let plan = args.run.plan("soak", None, Some(args.duration), 200.0);
    let Arrival::Open { rate, .. } = plan.arrival else {
        unreachable!("checked above")
    };
    println!(
        "soak {run_id}: {rate}/s for {:.0} s ({:.1}% hold cycles, {:.1}% checkouts, the rest browse-mix) against {}",
        args.duration.as_secs_f64(),
        args.hold_share.0 * 100.0,
        args.checkout_share.0 * 100.0,
        mesh.endpoint
    );
    let browse = Browse::setup(&mesh, &run_id, &args.browse, &args.run).await?;
    let hold_skus: Arc<Vec<String>> =
        Arc::new((0..SIDE_SKUS).map(|i| format!("{run_id}-HOLD{i:02}")).collect());
    let buy_skus: Arc<Vec<String>> =
        Arc::new((0..SIDE_SKUS).map(|i| format!("{run_id}-BUY{i:02}")).collect());
    let checkouts = args.checkout_share.0 > 0.0;
    for (i, sku) in hold_skus.iter().chain(buy_skus.iter()).enumerate() {
        if checkouts && i >= SIDE_SKUS as usize {
            crate::scenario::upsert_product(&mut mesh.catalog(0), sku, "Soak item", BUY_PRICE, "load/soak")
                .await?;
        }
        mesh.inventory(0)
            .set_stock(SetStockRequest {
                sku: sku.clone(),
                on_hand: SIDE_STOCK,
                buckets: 1,
            })
            .await
            .map_err(|e| anyhow::anyhow!("SetStock {sku}: {e}"))?;
    }

    let attempted: Arc<Mutex<Vec<Attempted>>> = Arc::new(Mutex::new(Vec::new()));
    let hold_trouble: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let (hold_share, checkout_share, seed) = (args.hold_share.0, args.checkout_share.0, args.run.seed);
    let (timeout, retries) = (args.run.timeout, args.run.retries);
    let result = {
        let (mesh, browse, hold_skus, buy_skus, attempted, hold_trouble, run_id) = (
            mesh.clone(),
            browse.clone(),
            hold_skus.clone(),
            buy_skus.clone(),
            attempted.clone(),
            hold_trouble.clone(),
            run_id.clone(),
        );
        engine::run(&plan, move |i| {
            let (mesh, browse, hold_skus, buy_skus, attempted, hold_trouble, run_id) = (
                mesh.clone(),
                browse.clone(),
                hold_skus.clone(),
                buy_skus.clone(),
                attempted.clone(),
                hold_trouble.clone(),
                run_id.clone(),
            );
            async move {
                let draw = (splitmix(seed ^ (i << 1) ^ 0xA5A5) % 1_000_000) as f64 / 1_000_000.0;
                if draw < hold_share {
                    let sku = &hold_skus[(i % SIDE_SKUS) as usize];
                    hold_cycle(&mesh, i, &run_id, sku, timeout, retries, &hold_trouble).await
                } else if draw < hold_share + checkout_share {
                    let sku = &buy_skus[(i % SIDE_SKUS) as usize];
                    let (sample, attempt) = checkout(&mesh, i, &run_id, sku, timeout, retries).await;
                    attempted.lock().expect("lock").push(attempt);
                    sample
                } else {
                    browse.call(&mesh, i).await
                }
            }
        })
        .await
    };

    let settle_started = Instant::now();
    let mut checks = browse.audit(&mesh).await?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(HOLD_TTL_S)) + args.run.settle_timeout;
    let trouble = hold_trouble.lock().expect("lock").clone();
    checks.push(Check::new(
        "hold-cycles",
        "every Reserve was granted and its Release gave the unit back",
        trouble.is_empty(),
        if trouble.is_empty() {
            format!(
                "{} hold cycles",
                result.ops.get("Reserve+Release").map_or(0, |o| o.count())
            )
        } else {
            format!(
                "{} cycles went wrong: {}",
                trouble.len(),
                sample_list(&trouble, 3)
            )
        },
    ));
    let (levels, gone) = audit::wait_no_holds(&mesh, &hold_skus, deadline).await?;
    checks.push(audit::live_holds_check(&levels, gone, settle_started.elapsed()));
    let changed: Vec<String> = levels
        .iter()
        .filter(|l| l.on_hand != SIDE_STOCK || l.sold != 0)
        .map(|l| format!("{} on_hand {} sold {}", l.sku, l.on_hand, l.sold))
        .collect();
    checks.push(Check::new(
        "conservation",
        "hold cycles leave on_hand + sold as found",
        changed.is_empty(),
        if changed.is_empty() {
            format!("{} hold SKUs at on_hand {SIDE_STOCK}, sold 0", levels.len())
        } else {
            format!("{} SKUs changed: {}", changed.len(), sample_list(&changed, 3))
        },
    ));
    let attempted = attempted.lock().expect("lock").clone();
    if checkouts {
        let audit = audit::audit_checkouts(&mesh, &attempted, &run_id, started_ms, deadline).await?;
        let (levels, gone) = audit::wait_no_holds(&mesh, &buy_skus, deadline).await?;
        let wrong: Vec<String> = levels
            .iter()
            .filter(|l| {
                let live = audit.live_units.get(&l.sku).copied().unwrap_or(0);
                l.on_hand + l.sold != SIDE_STOCK || l.sold != live || l.reserved != 0
            })
            .map(|l| {
                format!(
                    "{} on_hand {} sold {} reserved {} (live order units {})",
                    l.sku,
                    l.on_hand,
                    l.sold,
                    l.reserved,
                    audit.live_units.get(&l.sku).copied().unwrap_or(0)
                )
            })
            .collect();
        checks.push(Check::new(
            "checkout-stock",
            "checkout SKUs: on_hand + sold conserved, sold = units in live orders, no hold left",
            wrong.is_empty() && gone,
            if wrong.is_empty() {
                format!(
                    "{} checkout SKUs reconcile with {} orders",
                    levels.len(),
                    audit.orders
                )
            } else {
                format!("{} SKUs do not: {}", wrong.len(), sample_list(&wrong, 3))
            },
        ));
        checks.extend(audit.checks);
    } else {
        checks.extend(audit::skipped_checkout_checks(
            "no checkouts in this soak (--checkout-share 0%)",
        ));
    }

    let mut report = RunReport::new(
        "soak",
        run_id,
        mesh.endpoint.clone(),
        args.run.target.local,
        started_ms,
        serde_json::json!({
            "rate": rate,
            "duration_s": args.duration.as_secs_f64(),
            "products": args.browse.products,
            "shoppers": args.browse.shoppers,
            "reads_per_write": args.browse.reads_per_write,
            "hold_share": args.hold_share.0,
            "checkout_share": args.checkout_share.0,
            "checkouts": attempted.len(),
        }),
        &result,
        checks,
        &args.run.slos,
        settle_started.elapsed().as_secs_f64(),
    );
    if let Some(note) = drift(&report.load.timeline) {
        report.notes.push(note);
    }
    args.run.finish(&report)
}

/// p99 over the first and the last tenth of the run (medians of the per-second p99s).
fn drift(timeline: &[engine::TimelinePoint]) -> Option<String> {
    if timeline.len() < 10 {
        return None;
    }
    let tenth = timeline.len() / 10;
    let median = |points: &[engine::TimelinePoint]| {
        let mut p99: Vec<f64> = points.iter().map(|p| p.p99_ms).collect();
        p99.sort_by(f64::total_cmp);
        p99[p99.len() / 2]
    };
    let (first, last) = (
        median(&timeline[..tenth]),
        median(&timeline[timeline.len() - tenth..]),
    );
    Some(format!(
        "p99 drift: {first:.2} ms over the first tenth of the run, {last:.2} ms over the last ({:+.0}%)",
        (last / first.max(1e-6) - 1.0) * 100.0
    ))
}

/// Reserve one unit, then Release it.
async fn hold_cycle(
    mesh: &Mesh,
    i: u64,
    run_id: &str,
    sku: &str,
    timeout: Duration,
    retries: u32,
    trouble: &Mutex<Vec<String>>,
) -> Sample {
    const OP: &str = "Reserve+Release";
    let id = format!("{run_id}-soak-hold-{i}");
    let reserve = ReserveRequest {
        reservation_id: id.clone(),
        lines: vec![ReserveLine {
            sku: sku.to_string(),
            quantity: 1,
        }],
        ttl_seconds: HOLD_TTL_S,
    };
    let (reserved, _) = with_retries(retries, |_| {
        let (mut client, reserve) = (mesh.inventory(i), reserve.clone());
        async move { client.reserve(request(reserve, timeout)).await }
    })
    .await;
    match reserved {
        Ok(reply) if reply.get_ref().status == ReservationStatus::Reserved as i32 => {}
        Ok(reply) => {
            trouble
                .lock()
                .expect("lock")
                .push(format!("{id}: refused with {:?}", reply.get_ref().shortages));
            return Sample::wrong(OP, "refused");
        }
        Err(status) => return Sample::error(OP, &status),
    }
    let (released, _) = with_retries(retries, |_| {
        let (mut client, id) = (mesh.inventory(i), id.clone());
        async move {
            client
                .release(request(ReleaseRequest { reservation_id: id }, timeout))
                .await
        }
    })
    .await;
    match released {
        Ok(reply) if reply.get_ref().released_units == 1 => Sample::answer(OP, "released"),
        Ok(reply) => {
            trouble.lock().expect("lock").push(format!(
                "{id}: Release gave back {} units",
                reply.get_ref().released_units
            ));
            Sample::wrong(OP, "released wrong units")
        }
        Err(status) => Sample::error(OP, &status),
    }
}

/// One checkout of one unit by a customer of its own.
async fn checkout(
    mesh: &Mesh,
    i: u64,
    run_id: &str,
    sku: &str,
    timeout: Duration,
    retries: u32,
) -> (Sample, Attempted) {
    let customer = format!("{run_id}-soak-c{i}");
    let key = format!("{run_id}-soak-k{i}");
    let message = CheckoutRequest {
        idempotency_key: key.clone(),
        customer_id: customer.clone(),
        source: Some(Source::Lines(CheckoutLines {
            lines: vec![CheckoutLine {
                sku: sku.to_string(),
                quantity: 1,
                expected_unit_price: None,
            }],
        })),
        shipping_address: Some(crate::scenario::address(&customer)),
        payment_method: "pm_card_visa".into(),
        ..Default::default()
    };
    let (result, _) = with_retries(retries, |_| {
        let (mut client, message) = (mesh.orders(i), message.clone());
        async move { client.checkout(request(message, timeout)).await }
    })
    .await;
    let (sample, answer) = match result {
        Ok(reply) => {
            let answer = CheckoutAnswer::of(reply.get_ref());
            (Sample::answer("Checkout", answer.label()), answer)
        }
        Err(status) => (
            Sample::error("Checkout", &status),
            CheckoutAnswer::Unknown(engine::code_name(status.code()).to_string()),
        ),
    };
    (
        sample,
        Attempted {
            customer,
            key,
            answer,
            cancelled: false,
        },
    )
}
