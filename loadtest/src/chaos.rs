//! `holdfast-load chaos`: a flash sale and a checkout storm run at once against a mesh this
//! process starts on loopback (redis-server with `appendfsync always`, optionally Apache
//! Kafka, `holdfast dev` on both), while a seeded schedule SIGKILLs and restarts those
//! processes ([`crate::faults`]). Clients retry through the restarts with the same
//! idempotency keys. At the end: both scenarios' checks (oversell, conservation, one charge
//! per key, no order without a charge or charge without an order, no live hold left), and
//! the events' ([`crate::event_audit`]): lost, applied twice, phantom. A verdict table and a
//! JSON result; exit 3 on any violation.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use holdfast_platform::config::parse_duration;
use serde_json::json;
use tokio::time::Instant;

use crate::checkout_storm::{self, CheckoutStormArgs};
use crate::event_audit::{self, EventFindings};
use crate::faults::{self, FaultKind, InfraConfig, Injected};
use crate::flash_sale::{self, FlashSaleArgs};
use crate::mesh::{Mesh, TargetArgs, holdfast_bin};
use crate::report::{Check, EXIT_ERROR, EXIT_PASS, EXIT_VIOLATION, RunReport, Verdict, write_json};

/// Flags of `chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// The holdfast binary the harness runs (default: the one next to this executable).
    #[arg(long, value_name = "PATH")]
    pub holdfast_bin: Option<PathBuf>,
    /// How long the load runs; the flash sale and the storm are sized to it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Faults to inject, at seeded moments between --quiet-start and the last sixth of the load.
    #[arg(long, default_value_t = 4)]
    pub faults: usize,
    /// Fault kinds, comma-separated: holdfast, redis, kafka, redis-no-aof [default: holdfast,
    /// redis, redis-no-aof, and kafka with --kafka]. redis-no-aof restarts Redis empty:
    /// inventory rebuilds its counts from its durable truth, checkouts hold their lost holds
    /// again, and the cart's write-behind brings carts back (see the README).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub kinds: Vec<FaultKind>,
    /// Run the mesh on an Apache Kafka broker (from `make deps`) instead of the in-process bus.
    #[arg(long)]
    pub kafka: bool,
    /// Seed of the fault schedule and the scenarios' shuffles.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// No fault before this far into the load (which begins once both scenarios set up
    /// their SKUs and carts).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub quiet_start: Duration,
    /// Flash sale: units on sale.
    #[arg(long, default_value_t = 50)]
    pub flash_units: i64,
    /// Flash sale: buyers per second (buyers = rate x duration; 80% pay, 20% cancel).
    #[arg(long, default_value_t = 20.0)]
    pub flash_rate: f64,
    /// Checkout storm: customers per second (customers = rate x duration).
    #[arg(long, default_value_t = 10.0)]
    pub storm_rate: f64,
    /// Retries of a call that failed UNAVAILABLE or DEADLINE_EXCEEDED, same key, backing off
    /// up to 1 s: enough to ride out a restart.
    #[arg(long, default_value_t = 60)]
    pub retries: u32,
    /// How long the end-state checks may wait for the system to settle.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub settle_timeout: Duration,
    /// Where to write the JSON result [default: target/load/chaos.json].
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Test only (needs --kafka): after the load, publish this many of the run's
    /// `order.confirmed` changes a second time under new event ids, straight to the broker, as
    /// a relay that published twice would; `events-applied-twice` must then fail.
    #[arg(long, default_value_t = 0, hide = true)]
    pub duplicate_events: usize,
}

/// Parses a scenario's flags as its own subcommand would.
#[derive(Parser)]
struct Wrap<T: clap::Args> {
    #[command(flatten)]
    args: T,
}

fn scenario_args<T: clap::Args>(argv: Vec<String>) -> anyhow::Result<T> {
    let argv = std::iter::once("holdfast-load".to_string()).chain(argv);
    Ok(Wrap::<T>::try_parse_from(argv)?.args)
}

/// Runs `chaos`; answers the exit code.
pub async fn run(args: ChaosArgs) -> anyhow::Result<i32> {
    let mut kinds = args.kinds.clone();
    if kinds.is_empty() {
        kinds = vec![FaultKind::Holdfast, FaultKind::Redis, FaultKind::RedisNoAof];
        if args.kafka {
            kinds.push(FaultKind::Kafka);
        }
    }
    kinds.sort();
    kinds.dedup();
    anyhow::ensure!(
        args.kafka || !kinds.contains(&FaultKind::Kafka),
        "--kinds kafka needs --kafka"
    );
    anyhow::ensure!(
        args.kafka || args.duplicate_events == 0,
        "--duplicate-events needs --kafka"
    );
    anyhow::ensure!(
        args.flash_rate > 0.0 && args.storm_rate > 0.0 && args.duration >= Duration::from_secs(10),
        "--flash-rate and --storm-rate must be positive, --duration at least 10s"
    );
    let until = args.duration.mul_f64(5.0 / 6.0);
    anyhow::ensure!(
        until > args.quiet_start,
        "--quiet-start leaves no time for faults"
    );
    let plan = faults::plan(args.seed, &kinds, args.faults, args.quiet_start, until);
    let dir = std::env::temp_dir().join(format!("holdfast-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = InfraConfig {
        holdfast_bin: holdfast_bin(args.holdfast_bin.as_ref())?,
        kafka: args.kafka,
        dir: dir.clone(),
    };
    println!(
        "chaos: seed {}, {:.0} s of load, {} faults of {} planned at {}; data in {}",
        args.seed,
        args.duration.as_secs_f64(),
        plan.len(),
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        plan.iter()
            .map(|f| format!("{:.1}s {}", f.at_s, f.kind.name()))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    );
    let (go, go_rx) = mpsc::channel();
    let infra = faults::start(config, plan.clone(), go_rx).await?;
    println!(
        "chaos: mesh on {}{}",
        infra.endpoint,
        infra
            .kafka
            .as_ref()
            .map_or(String::new(), |k| format!(", Kafka on {k}"))
    );

    // `holdfast dev` enforces auth: the scenarios present tokens minted from its dev key.
    let tokens = holdfast_testkit::DevTokens::new(&dir.join("holdfast"))?;
    let service_token = tokens.mint(holdfast_platform::auth::Role::Service, Some("chaos"), None);
    let admin_token = tokens.mint(holdfast_platform::auth::Role::Admin, Some("chaos"), None);

    let secs = args.duration.as_secs_f64();
    let flash_id = format!("ch{}f", crate::scenario::run_id());
    let storm_id = format!("ch{}s", crate::scenario::run_id());
    let flash_buyers = (args.flash_rate * secs).ceil() as u64;
    let storm_customers = (args.storm_rate * secs).ceil() as u64;
    let common = |run_id: &str, rate: f64, name: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "--target",
            infra.endpoint.as_str(),
            "--rate",
            &rate.to_string(),
            "--retries",
            &args.retries.to_string(),
            "--settle-timeout",
            &format!("{}s", args.settle_timeout.as_secs()),
            "--seed",
            &args.seed.to_string(),
            "--run-id",
            run_id,
            "--token",
            service_token.as_str(),
            "--admin-token",
            admin_token.as_str(),
            "--json",
        ]
        .map(String::from)
        .to_vec();
        v.push(dir.join(format!("{name}.json")).display().to_string());
        if args.quiet {
            v.push("--quiet".into());
        }
        v
    };
    let mut flash_argv = common(&flash_id, args.flash_rate, "flash-sale");
    flash_argv.extend(
        [
            "--units",
            &args.flash_units.to_string(),
            "--buyers",
            &flash_buyers.to_string(),
        ]
        .map(String::from),
    );
    flash_argv.extend(["--pay", "80%", "--cancel", "20%", "--hold-ttl", "5s"].map(String::from));
    let mut storm_argv = common(&storm_id, args.storm_rate, "checkout-storm");
    storm_argv.extend(["--customers".to_string(), storm_customers.to_string()]);
    let mut flash: FlashSaleArgs = scenario_args(flash_argv)?;
    let mut storm: CheckoutStormArgs = scenario_args(storm_argv)?;
    // The fault clock starts once both scenarios set up and began their load.
    let (began, mut loads) = tokio::sync::mpsc::unbounded_channel();
    flash.run.load_started = Some(began.clone());
    storm.run.load_started = Some(began);
    let gate = async move {
        let mut waiting = 2;
        while waiting > 0 && loads.recv().await.is_some() {
            waiting -= 1;
        }
        let _ = go.send(std::time::Instant::now());
    };

    let started = Instant::now();
    let (flash_report, storm_report, ()) = tokio::join!(
        flash_sale::run_report(flash),
        checkout_storm::run_report(storm),
        gate
    );
    let injected = match infra.done.await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("the fault thread died")),
    };

    // Events, once every fault ran and the scenarios settled.
    let customers: Vec<String> = (0..flash_buyers)
        .map(|i| format!("{flash_id}-buyer-{i}"))
        .chain((0..storm_customers).map(|c| format!("{storm_id}-cust-{c}")))
        .collect();
    let events = match &injected {
        Ok(_) => {
            let mesh = Mesh::connect(&TargetArgs {
                target: Some(infra.endpoint.clone()),
                local: false,
                holdfast_bin: None,
                connections: 4,
                token: Some(service_token.clone()),
                admin_token: Some(admin_token.clone()),
                dev_args: Vec::new(),
            })
            .await?;
            if let Some(brokers) = infra.kafka.as_deref().filter(|_| args.duplicate_events > 0) {
                duplicate_confirmations(&mesh, brokers, &customers, args.duplicate_events).await?;
            }
            event_audit::check_events(&mesh, &customers, Instant::now() + args.settle_timeout).await
        }
        Err(_) => Err(anyhow::anyhow!("not checked: a restart failed")),
    };
    let elapsed = started.elapsed();
    let _ = infra.stop.send(());
    let _ = tokio::task::spawn_blocking(move || infra.thread.join()).await;

    let verdict = Outcome {
        args: &args,
        kinds: &kinds,
        injected,
        reports: [("flash-sale", flash_report), ("checkout-storm", storm_report)],
        events,
        elapsed,
    };
    let code = verdict.print_and_write()?;
    if code == EXIT_PASS {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("chaos: data and logs kept in {}", dir.display());
    }
    Ok(code)
}

/// Publishes `n` of the customers' `order.confirmed` changes again under new event ids.
async fn duplicate_confirmations(
    mesh: &Mesh,
    brokers: &str,
    customers: &[String],
    n: usize,
) -> anyhow::Result<()> {
    use holdfast_platform::events::{Event, EventBus, KafkaBus};
    use holdfast_proto::events::v1::{OrderConfirmed, OrderEvent, order_event};
    use prost::Message;
    let orders = crate::audit::orders_of(mesh, customers).await?;
    let mut confirmed: Vec<_> = orders
        .into_values()
        .flatten()
        .filter(|o| {
            o.status_history
                .iter()
                .any(|c| c.status == holdfast_proto::orders::v1::OrderStatus::Fulfilling as i32)
        })
        .collect();
    confirmed.sort_by(|a, b| a.id.cmp(&b.id));
    anyhow::ensure!(
        confirmed.len() >= n,
        "only {} confirmed orders to duplicate",
        confirmed.len()
    );
    let events: Vec<Event> = confirmed
        .iter()
        .take(n)
        .map(|order| {
            let id = format!("chaos-duplicate-{}", order.id);
            Event {
                id: id.clone(),
                topic: event_audit::ORDERS_TOPIC.into(),
                key: order.id.clone(),
                event_type: event_audit::CONFIRMED.into(),
                region: "local".into(),
                payload: OrderEvent {
                    event_id: id,
                    event: Some(order_event::Event::Confirmed(OrderConfirmed {
                        order_id: order.id.clone(),
                        customer_id: order.customer_id.clone(),
                        total: order.total.clone(),
                        ..Default::default()
                    })),
                }
                .encode_to_vec(),
                traceparent: None,
            }
        })
        .collect();
    KafkaBus::new(brokers)?.publish(events).await?;
    println!("chaos: published {n} order.confirmed events a second time (--duplicate-events)");
    Ok(())
}

/// Everything the verdict is made of.
struct Outcome<'a> {
    args: &'a ChaosArgs,
    kinds: &'a [FaultKind],
    injected: anyhow::Result<Vec<Injected>>,
    reports: [(&'static str, anyhow::Result<RunReport>); 2],
    events: anyhow::Result<EventFindings>,
    elapsed: Duration,
}

/// A verdict row: the check and, per column, its verdict.
fn cell(check: Option<&Check>, count: Option<usize>) -> String {
    match (check.map(|c| c.verdict), count) {
        (None, _) => "-".into(),
        (Some(Verdict::Skipped), _) => "skip".into(),
        (Some(Verdict::Pass), _) => "0".into(),
        (Some(Verdict::Fail), Some(n)) => n.to_string(),
        (Some(Verdict::Fail), None) => "FAIL".into(),
    }
}

impl Outcome<'_> {
    fn print_and_write(&self) -> anyhow::Result<i32> {
        for (_, report) in &self.reports {
            if let Ok(report) = report {
                report.print();
            }
        }
        let event_checks = self
            .events
            .as_ref()
            .map(EventFindings::checks)
            .unwrap_or_default();
        let mut errors: Vec<String> = Vec::new();
        if let Err(e) = &self.injected {
            errors.push(format!("faults: {e:#}"));
        }
        for (name, report) in &self.reports {
            if let Err(e) = report {
                errors.push(format!("{name}: {e:#}"));
            }
        }
        if let Err(e) = &self.events {
            errors.push(format!("events: {e:#}"));
        }

        println!();
        println!(
            "chaos verdict — seed {}, {:.0} s of load ({:.0} s with the checks), {}",
            self.args.seed,
            self.args.duration.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            if self.args.kafka {
                "Apache Kafka"
            } else {
                "in-process bus"
            }
        );
        let injected = self.injected.as_deref().unwrap_or_default();
        let by_kind: Vec<String> = self
            .kinds
            .iter()
            .map(|k| {
                let hits: Vec<&Injected> = injected.iter().filter(|f| f.planned.kind == *k).collect();
                let slowest = hits.iter().map(|f| f.restart_s).fold(0.0, f64::max);
                format!("{} {} (slowest restart {slowest:.1} s)", k.name(), hits.len())
            })
            .collect();
        println!("faults injected: {} — {}", injected.len(), by_kind.join(", "));
        for (name, report) in &self.reports {
            if let Ok(r) = report {
                let answers: Vec<String> = r
                    .load
                    .all
                    .answers
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                println!(
                    "operations: {name} {} ({}; {} errors after retries)",
                    r.load.all.count,
                    answers.join(", "),
                    r.load.all.errors
                );
            }
        }
        let mut names: Vec<&'static str> = Vec::new();
        for (_, report) in &self.reports {
            if let Ok(r) = report {
                for c in &r.checks {
                    if !names.contains(&c.name) {
                        names.push(c.name);
                    }
                }
            }
        }
        let counts = |name: &str| -> Option<usize> {
            let f = self.events.as_ref().ok()?;
            Some(match name {
                "events-lost" => f.lost.len(),
                "events-applied-twice" => f.twice.len(),
                "events-phantom" => f.phantom.len(),
                _ => return None,
            })
        };
        println!(
            "{:<24} {:>12} {:>15} {:>8}",
            "violations", "flash-sale", "checkout-storm", "events"
        );
        let find = |i: usize, name: &str| {
            self.reports[i]
                .1
                .as_ref()
                .ok()
                .and_then(|r| r.checks.iter().find(|c| c.name == name))
        };
        for name in &names {
            println!(
                "{:<24} {:>12} {:>15} {:>8}",
                name,
                cell(find(0, name), None),
                cell(find(1, name), None),
                "-"
            );
        }
        for check in &event_checks {
            println!(
                "{:<24} {:>12} {:>15} {:>8}",
                check.name,
                "-",
                "-",
                cell(Some(check), counts(check.name))
            );
        }
        let mut violations: Vec<(String, &Check)> = Vec::new();
        for (name, report) in &self.reports {
            if let Ok(r) = report {
                violations.extend(
                    r.checks
                        .iter()
                        .filter(|c| c.failed())
                        .map(|c| (name.to_string(), c)),
                );
            }
        }
        violations.extend(
            event_checks
                .iter()
                .filter(|c| c.failed())
                .map(|c| ("events".to_string(), c)),
        );
        for (scope, check) in &violations {
            println!("VIOLATION {scope} {}: {}", check.name, check.detail);
        }
        for error in &errors {
            println!("HARNESS ERROR {error}");
        }
        let code = if !violations.is_empty() {
            EXIT_VIOLATION
        } else if !errors.is_empty() {
            EXIT_ERROR
        } else {
            EXIT_PASS
        };
        println!(
            "{}: chaos — {} violation(s), {} harness error(s)",
            if code == EXIT_PASS { "PASS" } else { "FAIL" },
            violations.len(),
            errors.len()
        );

        let path = self
            .args
            .json
            .clone()
            .unwrap_or_else(|| PathBuf::from("target/load/chaos.json"));
        let reports: serde_json::Map<String, serde_json::Value> = self
            .reports
            .iter()
            .map(|(name, r)| {
                (
                    name.to_string(),
                    match r {
                        Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                        Err(e) => json!({ "error": format!("{e:#}") }),
                    },
                )
            })
            .collect();
        write_json(
            &path,
            &json!({
                "scenario": "chaos",
                "seed": self.args.seed,
                "duration_s": self.args.duration.as_secs_f64(),
                "elapsed_s": self.elapsed.as_secs_f64(),
                "kafka": self.args.kafka,
                "kinds": self.kinds,
                "faults": injected,
                "faults_by_kind": self.kinds.iter().map(|k| (k.name(), injected.iter().filter(|f| f.planned.kind == *k).count())).collect::<std::collections::BTreeMap<_, _>>(),
                "reports": reports,
                "events": self.events.as_ref().ok(),
                "event_checks": event_checks,
                "violations": violations.iter().map(|(scope, c)| json!({ "scope": scope, "check": c.name, "detail": c.detail })).collect::<Vec<_>>(),
                "harness_errors": errors,
                "passed": code == EXIT_PASS,
            }),
        )?;
        Ok(code)
    }
}
