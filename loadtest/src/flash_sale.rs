//! `holdfast-load flash-sale`: S units of one SKU, A buyers arriving at once.
//!
//! Every buyer tries for one unit. A share **pay** (OrderService.Checkout with explicit lines,
//! pm_card_visa, a unique idempotency key), a share **abandon** (InventoryService.Reserve with a
//! short TTL, then walk away: the hold must lapse) and a share **cancel** (Checkout, then
//! CancelOrder once the contest is over). Then the checks, read back through the services'
//! APIs: exactly min(S, A) winners, zero oversell, `on_hand + sold` conserved, no live hold once
//! the TTLs pass, and (when anyone checked out) orders and charges reconciled.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use holdfast_platform::config::parse_duration;
use holdfast_proto::inventory::v1::{
    AdmissionLimits, RateLimit, ReservationStatus, ReserveLine, ReserveRequest, SetAdmissionLimitsRequest,
    SetStockRequest,
};
use holdfast_proto::orders::v1::checkout_request::Source;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CheckoutLine, CheckoutLines, CheckoutOutcome, CheckoutRequest,
};
use tokio::time::Instant;

use crate::audit::{self, Attempted, CheckoutAnswer};
use crate::engine::{self, Sample};
use crate::flash_admission::{Seen, Tally};
use crate::mesh::Mesh;
use crate::report::{Check, RunReport};
use crate::scenario::{RunArgs, Share, request, sample_list, shuffled_roles, unix_ms, with_retries};

/// Flags of `flash-sale`.
#[derive(Debug, Clone, clap::Args)]
pub struct FlashSaleArgs {
    /// Target, load shape and output.
    #[command(flatten)]
    pub run: RunArgs,
    /// Units of the SKU on sale (S).
    #[arg(long, default_value_t = 1_000)]
    pub units: i64,
    /// Hot-SKU buckets the units are split into (SetStock buckets; 1 for a plain SKU).
    #[arg(long, default_value_t = 1)]
    pub buckets: u32,
    /// Buyers (A), one attempt each.
    #[arg(long, default_value_t = 10_000)]
    pub buyers: u64,
    /// Share of buyers who check out and pay (25% or 0.25).
    #[arg(long, default_value = "70%", value_parser = Share::parse)]
    pub pay: Share,
    /// Share of buyers who check out, then cancel once the contest is over.
    #[arg(long, default_value = "10%", value_parser = Share::parse)]
    pub cancel: Share,
    /// Share of buyers who hold a unit and walk away [default: the rest].
    #[arg(long, value_parser = Share::parse)]
    pub abandon: Option<Share>,
    /// TTL of the abandoners' holds; must outlast the contest, or lapsed units are sold twice
    /// and the winner count is meaningless [default: twice the expected contest, plus 10 s].
    #[arg(long, value_parser = parse_duration)]
    pub hold_ttl: Option<Duration>,
    /// Unit price of the SKU, in cents.
    #[arg(long, default_value_t = 1_999)]
    pub price_minor: i64,
    /// Admission: the SKU's Reserve limit, calls a second (SetAdmissionLimits before the
    /// sale); unset: whatever the mesh is configured with.
    #[arg(long, value_name = "PER_SECOND")]
    pub reserve_limit: Option<f64>,
    /// Admission: the SKU's Checkout limit, calls a second.
    #[arg(long, value_name = "PER_SECOND")]
    pub checkout_limit: Option<f64>,
    /// Admission: the burst of both limits (calls admitted back to back) [default: one
    /// second's worth].
    #[arg(long)]
    pub limit_burst: Option<u32>,
    /// Admission: flag the SKU as a drop, so every checkout goes through the waiting room.
    #[arg(long)]
    pub drop: bool,
    /// Checkouts of a SKU of their own before the sale starts, counted nowhere (a fresh
    /// process and database answer their first requests slowly; see `warmup.rs`).
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// A global SKU sold across regions (`--regions`, see `flash_regions.rs`).
    #[command(flatten)]
    pub regions: crate::flash_regions::RegionArgs,
}

/// The operation refusals by the admission limits are timed under (RESOURCE_EXHAUSTED of
/// Reserve or Checkout), so `Reserve` and `Checkout` time only admitted calls:
/// `--slo Checkout:p99<200ms` gates the admitted, `--slo RateLimited:p99<50ms` the refused.
const RATE_LIMITED: &str = "RateLimited";
/// The operation checkouts through the waiting room are timed under: from the call to the
/// final answer, the wait in the queue included.
const QUEUED: &str = "Queued";

/// What a buyer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Pay = 0,
    Abandon = 1,
    Cancel = 2,
}

const ROLES: [Role; 3] = [Role::Pay, Role::Abandon, Role::Cancel];

/// What a buyer came away with.
#[derive(Debug, Clone)]
enum Got {
    Held,
    Refused,
    /// Checkout's answer; `true` when it went through the waiting room (PENDING first).
    Checkout(CheckoutAnswer, bool),
    /// RESOURCE_EXHAUSTED by the admission limits (or a full waiting room): nothing held.
    RateLimited,
    Failed(String),
}

impl Got {
    fn won(&self) -> bool {
        match self {
            Got::Held => true,
            Got::Checkout(answer, _) => answer.order_id().is_some(),
            _ => false,
        }
    }

    fn seen(&self) -> Seen {
        let (queued, sold_out) = match self {
            Got::RateLimited => return Seen::RateLimited,
            Got::Refused => (false, true),
            Got::Checkout(answer, queued) => (*queued, matches!(answer, CheckoutAnswer::OutOfStock)),
            Got::Held | Got::Failed(_) => (false, false),
        };
        Seen::Admitted { queued, sold_out }
    }
}

/// Levels sampled during the contest that broke `0 <= reserved <= on_hand`,
/// `available = on_hand - reserved` or `on_hand + sold = S`.
#[derive(Debug, Default)]
struct Monitor {
    samples: u64,
    broken: Vec<String>,
}

pub async fn run(args: FlashSaleArgs) -> anyhow::Result<i32> {
    let run = args.run.clone();
    let report = if args.regions.regions.is_empty() {
        run_report(args).await?
    } else {
        crate::flash_regions::run_report(crate::flash_regions::RegionSaleArgs {
            run: args.run,
            regions: args.regions,
            units: args.units,
            buyers: args.buyers,
            buckets: args.buckets,
            hold_ttl: args.hold_ttl,
        })
        .await?
    };
    run.finish(&report)
}

/// Runs the scenario; answers its report (not yet printed or written).
pub async fn run_report(args: FlashSaleArgs) -> anyhow::Result<RunReport> {
    crate::scenario::check_rate(&args.run)?;
    anyhow::ensure!(args.units >= 0, "--units must be >= 0");
    anyhow::ensure!((1..=64).contains(&args.buckets), "--buckets is 1..64");
    anyhow::ensure!(args.buyers > 0, "--buyers must be positive");
    let abandon = args
        .abandon
        .unwrap_or(Share((1.0 - args.pay.0 - args.cancel.0).max(0.0)));
    anyhow::ensure!(
        (args.pay.0 + args.cancel.0 + abandon.0 - 1.0).abs() < 1e-6,
        "--pay, --cancel and --abandon must add up to 100% (they add up to {:.1}%)",
        (args.pay.0 + args.cancel.0 + abandon.0) * 100.0
    );
    let a = args.buyers;
    let n_pay = args.pay.of(a).min(a);
    let n_cancel = args.cancel.of(a).min(a - n_pay);
    let n_abandon = a - n_pay - n_cancel;
    let checkout_used = n_pay + n_cancel > 0;
    let default_rate = 1_000.0;
    let plan = args.run.plan("flash-sale", Some(a), None, default_rate);
    let hold_ttl = args.hold_ttl.unwrap_or_else(|| match plan.arrival {
        engine::Arrival::Open { rate, .. } => Duration::from_secs_f64(2.0 * a as f64 / rate + 10.0),
        engine::Arrival::Closed { .. } => Duration::from_secs(60),
    });
    let ttl_seconds = hold_ttl.as_secs().clamp(1, 3600) as u32;

    let mesh = Arc::new(Mesh::connect(&args.run.target).await?);
    let run_id = args.run.run_id();
    let started_ms = unix_ms();
    let sku = format!("{run_id}-FLASH");
    let s = args.units;
    println!(
        "flash-sale {run_id}: {s} units of {sku} in {} bucket(s), {a} buyers ({n_pay} pay, {n_abandon} abandon, {n_cancel} cancel), holds {ttl_seconds} s, against {}",
        args.buckets, mesh.endpoint
    );

    if checkout_used {
        crate::scenario::upsert_product(
            &mut mesh.catalog(0),
            &sku,
            "Flash sale item",
            args.price_minor,
            "load/flash-sale",
        )
        .await?;
    }
    mesh.inventory(0)
        .set_stock(SetStockRequest {
            sku: sku.clone(),
            on_hand: s,
            buckets: args.buckets,
        })
        .await
        .map_err(|e| anyhow::anyhow!("SetStock {sku}: {e}"))?;
    let limits = admission_limits(&args, &sku)?;
    if let Some(limits) = limits.clone() {
        mesh.inventory(0)
            .set_admission_limits(SetAdmissionLimitsRequest { limits: Some(limits) })
            .await
            .map_err(|e| anyhow::anyhow!("SetAdmissionLimits {sku}: {e}"))?;
    }

    let warmup = if args.warmup > 0 {
        let warm_id = crate::warmup::run_id(&run_id);
        let (mesh, warm_id, timeout, retries) = (&mesh, &warm_id, args.run.timeout, args.run.retries);
        Some(
            crate::warmup::checkouts(
                mesh,
                warm_id,
                args.warmup,
                args.price_minor,
                |i, sku| async move {
                    match buy(mesh, i, warm_id, &sku, timeout, retries).await.1 {
                        Got::Checkout(answer, _) if answer.order_id().is_some() => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await?,
        )
    } else {
        None
    };

    let roles: Arc<Vec<Role>> = Arc::new(
        shuffled_roles(&[n_pay, n_abandon, n_cancel], args.run.seed)
            .into_iter()
            .map(|r| ROLES[r])
            .collect(),
    );
    let got: Arc<Vec<OnceLock<Got>>> = Arc::new((0..a).map(|_| OnceLock::new()).collect());

    // The stock invariant, sampled while the sale runs.
    let monitor = Arc::new(Mutex::new(Monitor::default()));
    let (stop_monitor, mut monitor_stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor_task = {
        let (mesh, monitor, sku, buckets) = (mesh.clone(), monitor.clone(), sku.clone(), args.buckets);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = &mut monitor_stopped => return,
                }
                let Ok(levels) = audit::availability(&mesh, std::slice::from_ref(&sku)).await else {
                    continue;
                };
                let mut m = monitor.lock().expect("lock");
                m.samples += 1;
                for l in levels {
                    // One bucket is read atomically; across buckets only what a transfer of
                    // free units cannot skew: held plus sold never exceeds S.
                    let broken = if buckets == 1 {
                        l.reserved < 0
                            || l.reserved > l.on_hand
                            || l.available != l.on_hand - l.reserved
                            || l.on_hand + l.sold != s
                    } else {
                        l.reserved < 0 || l.reserved + l.sold > s
                    };
                    if broken {
                        m.broken.push(format!(
                            "on_hand {} reserved {} available {} sold {}",
                            l.on_hand, l.reserved, l.available, l.sold
                        ));
                    }
                }
            }
        })
    };

    let timeout = args.run.timeout;
    let retries = args.run.retries;
    args.run.began("flash-sale");
    let result = {
        let (mesh, roles, got, sku, run_id) = (
            mesh.clone(),
            roles.clone(),
            got.clone(),
            sku.clone(),
            run_id.clone(),
        );
        engine::run(&plan, move |i| {
            let (mesh, roles, got, sku, run_id) = (
                mesh.clone(),
                roles.clone(),
                got.clone(),
                sku.clone(),
                run_id.clone(),
            );
            async move {
                let role = roles[i as usize];
                let (sample, outcome) = match role {
                    Role::Abandon => hold(&mesh, i, &run_id, &sku, ttl_seconds, timeout, retries).await,
                    Role::Pay | Role::Cancel => buy(&mesh, i, &run_id, &sku, timeout, retries).await,
                };
                let _ = got[i as usize].set(outcome);
                sample
            }
        })
        .await
    };
    let contest = result.elapsed;
    let _ = stop_monitor.send(());
    let _ = monitor_task.await;

    // The contest, as the buyers saw it.
    let outcomes: Vec<(Role, Got)> = roles
        .iter()
        .zip(got.iter())
        .map(|(r, g)| (*r, g.get().cloned().unwrap_or(Got::Failed("never ran".into()))))
        .collect();
    let won = |role: Role| outcomes.iter().filter(|(r, g)| *r == role && g.won()).count() as i64;
    let (won_pay, won_abandon, won_cancel) = (won(Role::Pay), won(Role::Abandon), won(Role::Cancel));
    let winners = won_pay + won_abandon + won_cancel;
    let tally = Tally::of(outcomes.iter().map(|(_, g)| g.seen())).with_latencies(
        &result,
        &["Reserve", "Checkout"],
        RATE_LIMITED,
    );
    println!("{}", tally.line());
    let unresolved: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, (_, g))| match g {
            Got::Failed(e) => Some(format!("buyer {i}: {e}")),
            Got::Checkout(CheckoutAnswer::Unknown(e), _) => Some(format!("buyer {i}: {e}")),
            _ => None,
        })
        .collect();

    // Cancellers cancel now that the contest is over.
    let to_cancel: Vec<String> = outcomes
        .iter()
        .filter_map(|(r, g)| match (r, g) {
            (Role::Cancel, Got::Checkout(answer, _)) => answer.order_id().map(str::to_string),
            _ => None,
        })
        .collect();
    let cancel_failures = Mutex::new(Vec::new());
    crate::scenario::for_each_concurrent(to_cancel.iter().enumerate(), 16, |(i, order_id)| {
        let (mesh, cancel_failures) = (&mesh, &cancel_failures);
        async move {
            let (result, _) = with_retries(retries, |_| {
                let mut client = mesh.orders(i as u64);
                let order_id = order_id.clone();
                async move {
                    client
                        .cancel_order(request(
                            CancelOrderRequest {
                                order_id,
                                reason: "holdfast-load flash-sale canceller".into(),
                            },
                            timeout,
                        ))
                        .await
                }
            })
            .await;
            if let Err(status) = result {
                cancel_failures
                    .lock()
                    .expect("lock")
                    .push(format!("{order_id}: {}", status.message()));
            }
            Ok(())
        }
    })
    .await?;
    let cancel_failures = cancel_failures.into_inner().expect("lock");

    // Settle and read back.
    let settle_started = Instant::now();
    let mut checks = Vec::new();
    // Buyers the admission limits turned away took no part: A counts those admitted.
    let admitted = tally.admitted as i64;
    let expected_winners = s.min(admitted);
    let ttl_outlasted = n_abandon > 0 && contest >= Duration::from_secs(u64::from(ttl_seconds));
    checks.push(if ttl_outlasted {
        Check::new(
            "winners",
            "exactly min(S, A) buyers won a unit",
            false,
            format!(
                "inconclusive: the contest took {:.1} s, longer than the {ttl_seconds} s holds, so lapsed units could be won twice; raise --hold-ttl above the contest",
                contest.as_secs_f64()
            ),
        )
    } else {
        Check::new(
            "winners",
            "exactly min(S, A) buyers won a unit",
            winners == expected_winners && unresolved.is_empty(),
            format!(
                "{winners} winners (expected min({s}, {admitted} admitted of {a}) = {expected_winners}): {won_pay} paid, {won_abandon} held and walked away, {won_cancel} ordered then cancelled{}",
                if unresolved.is_empty() {
                    String::new()
                } else {
                    format!("; {} buyers got no answer after retries: {}", unresolved.len(), sample_list(&unresolved, 3))
                }
            ),
        )
    });

    let monitor = std::mem::take(&mut *monitor.lock().expect("lock"));
    // The last hold was taken at the latest as the contest ended.
    let settle_deadline =
        Instant::now() + Duration::from_secs(u64::from(ttl_seconds)) + args.run.settle_timeout;
    let checkout_audit = if checkout_used {
        let attempted: Vec<Attempted> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, (r, g))| match g {
                Got::Checkout(answer, _) => Some(Attempted {
                    customer: customer(&run_id, i as u64),
                    key: key(&run_id, i as u64),
                    answer: answer.clone(),
                    cancelled: *r == Role::Cancel && answer.order_id().is_some(),
                }),
                Got::Failed(e) if *r != Role::Abandon => Some(Attempted {
                    customer: customer(&run_id, i as u64),
                    key: key(&run_id, i as u64),
                    answer: CheckoutAnswer::Unknown(e.clone()),
                    cancelled: false,
                }),
                _ => None,
            })
            .collect();
        Some(audit::audit_checkouts(&mesh, &attempted, &run_id, started_ms, settle_deadline).await?)
    } else {
        None
    };
    let (levels, holds_gone) =
        audit::wait_no_holds(&mesh, std::slice::from_ref(&sku), settle_deadline).await?;
    // Conservation: every unit is on the shelf or sold. Units sold and then returned by a
    // cancellation come back to on_hand, so on_hand + sold = S + returned, where returned is
    // what was sold beyond the live orders, and only cancellations return anything. Bucket
    // levels are read one bucket at a time, so a transfer between buckets in flight can skew
    // one read: re-read until it balances or the deadline passes.
    let live = checkout_audit
        .as_ref()
        .map_or(0, |audit| audit.live_units.get(&sku).copied().unwrap_or(0));
    let cancelled_units = won_cancel;
    let balanced = |l: &holdfast_proto::inventory::v1::StockLevel| {
        let returned = l.sold - live;
        l.on_hand + l.sold == s + returned
            && (0..=cancelled_units).contains(&returned)
            && l.on_hand == s - live
    };
    let mut level = levels.first().cloned().unwrap_or_default();
    while !balanced(&level) && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        level = audit::availability(&mesh, std::slice::from_ref(&sku))
            .await?
            .first()
            .cloned()
            .unwrap_or_default();
    }
    let settle_s = settle_started.elapsed().as_secs_f64();

    let sold_ok = level.sold <= s;
    checks.push(Check::new(
        "oversell",
        "zero oversell: no more units granted or sold than exist",
        winners <= s && sold_ok && monitor.broken.is_empty(),
        format!(
            "{winners} units granted of {s}{}; sold {} <= {s}: {}; stock invariant held in {} of {} samples during the sale{}",
            if winners > s { format!(" (OVERSOLD by {})", winners - s) } else { String::new() },
            level.sold,
            if sold_ok { "yes" } else { "NO" },
            monitor.samples - monitor.broken.len() as u64,
            monitor.samples,
            if monitor.broken.is_empty() {
                String::new()
            } else {
                format!(": broken at {}", sample_list(&monitor.broken, 3))
            }
        ),
    ));
    let returned = level.sold - live;
    checks.push(Check::new(
        "conservation",
        "on_hand + sold = S + units returned by cancellations, and on_hand = S - units in live orders",
        balanced(&level),
        format!(
            "on_hand {} + sold {} = {} (S {s} + {returned} returned of {cancelled_units} cancelled); live order units {live}",
            level.on_hand,
            level.sold,
            level.on_hand + level.sold,
        ),
    ));
    checks.push(audit::live_holds_check(
        &levels,
        holds_gone,
        settle_started.elapsed(),
    ));
    if tally.queued > 0 {
        let queued: Vec<(String, CheckoutAnswer)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, (_, g))| match g {
                Got::Checkout(answer, true) => Some((key(&run_id, i as u64), answer.clone())),
                _ => None,
            })
            .collect();
        checks.push(crate::flash_admission::drained_check(&mesh, &queued, timeout).await);
    }
    match checkout_audit {
        Some(audit) => {
            checks.push(Check::new(
                "cancellations",
                "every canceller's order was cancelled",
                cancel_failures.is_empty(),
                if cancel_failures.is_empty() {
                    format!("{} orders cancelled", to_cancel.len())
                } else {
                    format!(
                        "{} CancelOrder calls failed: {}",
                        cancel_failures.len(),
                        sample_list(&cancel_failures, 3)
                    )
                },
            ));
            checks.extend(audit.checks);
        }
        None => checks.extend(audit::skipped_checkout_checks(
            "nobody checked out (--pay 0 --cancel 0)",
        )),
    }

    let report = RunReport::new(
        "flash-sale",
        run_id,
        mesh.endpoint.clone(),
        args.run.target.local,
        started_ms,
        serde_json::json!({
            "sku": sku,
            "units": s,
            "buckets": args.buckets,
            "buyers": a,
            "pay": n_pay,
            "abandon": n_abandon,
            "cancel": n_cancel,
            "hold_ttl_s": ttl_seconds,
            "winners": winners,
            "admission": tally.json(),
            "warmup": warmup.as_ref().map(crate::warmup::Warmup::json),
            "live_order_units": live,
            "final_level": {
                "on_hand": level.on_hand,
                "reserved": level.reserved,
                "available": level.available,
                "sold": level.sold,
            },
        }),
        &result,
        checks,
        &args.run.slos,
        settle_s,
    );
    Ok(report)
}

/// The SKU's admission limits the flags ask for; `None` when they ask for none.
fn admission_limits(args: &FlashSaleArgs, sku: &str) -> anyhow::Result<Option<AdmissionLimits>> {
    if args.reserve_limit.is_none() && args.checkout_limit.is_none() && !args.drop {
        return Ok(None);
    }
    let limit = |per_second: Option<f64>, flag: &str| -> anyhow::Result<Option<RateLimit>> {
        let Some(per_second) = per_second else {
            return Ok(None);
        };
        anyhow::ensure!(
            per_second.is_finite() && per_second > 0.0,
            "{flag} must be a positive rate"
        );
        let burst = args
            .limit_burst
            .unwrap_or_else(|| per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        Ok(Some(RateLimit { per_second, burst }))
    };
    Ok(Some(AdmissionLimits {
        sku: sku.to_string(),
        reserve: limit(args.reserve_limit, "--reserve-limit")?,
        checkout: limit(args.checkout_limit, "--checkout-limit")?,
        drop: args.drop,
    }))
}

fn customer(run_id: &str, i: u64) -> String {
    format!("{run_id}-buyer-{i}")
}

fn key(run_id: &str, i: u64) -> String {
    format!("{run_id}-key-{i}")
}

/// An abandoner: hold one unit for `ttl_seconds` and walk away.
async fn hold(
    mesh: &Mesh,
    i: u64,
    run_id: &str,
    sku: &str,
    ttl_seconds: u32,
    timeout: Duration,
    retries: u32,
) -> (Sample, Got) {
    let message = ReserveRequest {
        reservation_id: format!("{run_id}-hold-{i}"),
        lines: vec![ReserveLine {
            sku: sku.to_string(),
            quantity: 1,
        }],
        ttl_seconds,
    };
    let (result, _) = with_retries(retries, |_| {
        let mut client = mesh.inventory(i);
        let message = message.clone();
        async move { client.reserve(request(message, timeout)).await }
    })
    .await;
    match result {
        Ok(reply) if reply.get_ref().status == ReservationStatus::Reserved as i32 => {
            (Sample::answer("Reserve", "reserved"), Got::Held)
        }
        Ok(reply) if reply.get_ref().status == ReservationStatus::InsufficientStock as i32 => {
            (Sample::answer("Reserve", "insufficient_stock"), Got::Refused)
        }
        Ok(reply) => (
            Sample::wrong("Reserve", "unknown status"),
            Got::Failed(format!("Reserve answered status {}", reply.get_ref().status)),
        ),
        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
            (Sample::answer(RATE_LIMITED, "reserve"), Got::RateLimited)
        }
        Err(status) => (
            Sample::error("Reserve", &status),
            Got::Failed(format!("Reserve: {}", engine::code_name(status.code()))),
        ),
    }
}

/// A payer or canceller: check out one unit with explicit lines and a unique key, retrying
/// with the same key when the answer is lost.
async fn buy(mesh: &Mesh, i: u64, run_id: &str, sku: &str, timeout: Duration, retries: u32) -> (Sample, Got) {
    let buyer = customer(run_id, i);
    let message = CheckoutRequest {
        idempotency_key: key(run_id, i),
        customer_id: buyer.clone(),
        source: Some(Source::Lines(CheckoutLines {
            lines: vec![CheckoutLine {
                sku: sku.to_string(),
                quantity: 1,
                expected_unit_price: None,
            }],
        })),
        shipping_address: Some(crate::scenario::address(&buyer)),
        payment_method: "pm_card_visa".into(),
        ..Default::default()
    };
    let (result, _) = with_retries(retries, |_| {
        let mut client = mesh.orders(i);
        let message = message.clone();
        async move { client.checkout(request(message, timeout)).await }
    })
    .await;
    let queued = matches!(&result, Ok(reply) if reply.get_ref().outcome == CheckoutOutcome::Pending as i32);
    let result = match result {
        // Admitted to the waiting room: poll the key until it ran.
        Ok(reply) if queued => {
            crate::flash_admission::wait_for_turn(mesh, i, &reply.get_ref().idempotency_key, timeout).await
        }
        other => other.map(tonic::Response::into_inner),
    };
    match result {
        Ok(reply) => {
            let answer = CheckoutAnswer::of(&reply);
            let sample = match answer {
                CheckoutAnswer::Unknown(_) if queued => Sample::wrong(QUEUED, "unknown outcome"),
                CheckoutAnswer::Unknown(_) => Sample::wrong("Checkout", "unknown outcome"),
                _ if queued => Sample::answer(QUEUED, answer.label()),
                _ => Sample::answer("Checkout", answer.label()),
            };
            (sample, Got::Checkout(answer, queued))
        }
        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
            (Sample::answer(RATE_LIMITED, "checkout"), Got::RateLimited)
        }
        Err(status) => (
            Sample::error(if queued { QUEUED } else { "Checkout" }, &status),
            Got::Checkout(
                CheckoutAnswer::Unknown(format!(
                    "Checkout: {} {}",
                    engine::code_name(status.code()),
                    status.message()
                )),
                queued,
            ),
        ),
    }
}
