//! What every scenario shares: the command-line flags for target, load shape and output, and
//! small helpers (run ids, shares, a seeded shuffle, retries with the same key).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_platform::config::parse_duration;
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::{Address, GeoPoint, Money};
use holdfast_testkit::BearerChannel as Channel;

use crate::engine::{Arrival, Plan};
use crate::mesh::TargetArgs;
use crate::report::{RunReport, output_paths};
use crate::slo::Slo;

/// Flags every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Which mesh.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Open loop: attempts per second, scheduled on a clock (latency from the scheduled time).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many workers back to back, for maximum throughput.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: most attempts in flight; beyond it attempts wait (and the wait is latency).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Deadline of each call.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Retries of a call that failed with UNAVAILABLE or DEADLINE_EXCEEDED, with the same
    /// idempotency key or reservation id.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// How long the end-state checks may wait for the system to settle (holds to lapse,
    /// captures and refunds to land), after any hold TTL.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub settle_timeout: Duration,
    /// Where to write the JSON result [default: target/load/<scenario>.json].
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Where to write the latency plot (SVG) [default: the JSON path with .svg].
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// A gate the run must meet, repeatable: p99<50ms, p999<200ms, max<1s, error_rate<1%,
    /// throughput>=500/s; prefix an operation to scope it: Checkout:p99<300ms.
    #[arg(long = "slo", value_name = "GATE", value_parser = Slo::parse)]
    pub slos: Vec<Slo>,
    /// Seed of the shuffles that assign roles and pick requests.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// No progress bar or progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// The run id every SKU, customer and key of the run starts with [default: a fresh one];
    /// `chaos` sets it so it can find the run's orders again.
    #[arg(long, hide = true)]
    pub run_id: Option<String>,
    /// Told the scenario's name when its measured phase begins, after its setup (`chaos`
    /// starts its faults then); not a flag.
    #[arg(skip)]
    pub load_started: Option<tokio::sync::mpsc::UnboundedSender<&'static str>>,
}

impl RunArgs {
    /// The phase's plan: `--rate` or `--concurrency`, else the scenario's default rate.
    pub fn plan(
        &self,
        label: &str,
        attempts: Option<u64>,
        duration: Option<Duration>,
        default_rate: f64,
    ) -> Plan {
        let arrival = match (self.rate, self.concurrency) {
            (_, Some(concurrency)) => Arrival::Closed { concurrency },
            (rate, None) => Arrival::Open {
                rate: rate.unwrap_or(default_rate),
                max_in_flight: self.max_in_flight,
            },
        };
        Plan {
            arrival,
            attempts,
            duration,
            label: label.to_string(),
            progress: !self.quiet,
        }
    }

    /// `--run-id`, else a fresh [`run_id`].
    pub fn run_id(&self) -> String {
        self.run_id.clone().unwrap_or_else(run_id)
    }

    /// Says the measured phase of `scenario` begins (see `load_started`).
    pub fn began(&self, scenario: &'static str) {
        if let Some(tx) = &self.load_started {
            let _ = tx.send(scenario);
        }
    }

    /// Prints the report, writes the JSON and the plot; answers the exit code.
    pub fn finish(&self, report: &RunReport) -> anyhow::Result<i32> {
        report.print();
        let (json, plot) = output_paths(report.scenario, self.json.as_ref(), self.plot.as_ref());
        report.write(&json, &plot)?;
        Ok(report.exit_code())
    }
}

/// Validates `--rate`.
pub fn check_rate(args: &RunArgs) -> anyhow::Result<()> {
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
    }
    if let Some(c) = args.concurrency {
        anyhow::ensure!(c > 0, "--concurrency must be positive");
    }
    Ok(())
}

/// A share of the attempts, given as `25%` or `0.25`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Share(pub f64);

impl Share {
    /// Parses `25%`, `0.25`, `0` or `1`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = match raw.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => raw.trim().parse::<f64>(),
        }
        .map_err(|_| format!("expected a share like 25% or 0.25, got {raw:?}"))?;
        if !(0.0..=1.0).contains(&value) {
            return Err(format!("a share is between 0% and 100%, got {raw:?}"));
        }
        Ok(Self(value))
    }

    /// How many of `n` (rounded to the nearest whole one).
    pub fn of(self, n: u64) -> u64 {
        ((n as f64) * self.0).round() as u64
    }
}

/// A unique id for this run; every SKU, customer and key the run makes starts with it, so
/// runs against the same mesh never meet.
pub fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "lt{:x}{:04x}",
        now.as_millis() % 0x10_0000_0000,
        std::process::id() & 0xffff
    )
}

/// Unix milliseconds now.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// SplitMix64: a fixed, seedable stream of numbers for role shuffles and request picks.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `counts[k]` copies of `k` for every `k`, shuffled with `seed` (Fisher-Yates): exact
/// shares, spread over the run.
pub fn shuffled_roles(counts: &[u64], seed: u64) -> Vec<usize> {
    let mut roles: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(role, n)| std::iter::repeat_n(role, *n as usize))
        .collect();
    let mut state = seed;
    for i in (1..roles.len()).rev() {
        state = splitmix(state);
        let j = (state % (i as u64 + 1)) as usize;
        roles.swap(i, j);
    }
    roles
}

/// Whether a failed call may be retried with the same key: the contracts say UNAVAILABLE and
/// DEADLINE_EXCEEDED are safe to retry; so are ABORTED (a lost race, see below) and a call the transport lost (the connection
/// reset under it, e.g. the server crashed: tonic reports UNKNOWN or CANCELLED with the
/// transport error as its source, where a status the server sent has none), since every call here carries
/// its idempotency key or reservation id.
pub fn retryable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        // Checkout answers ABORTED "another worker took this saga over; retry" when a
        // recovering worker won its saga (not in its documented errors); the key makes the
        // retry safe.
        tonic::Code::Aborted => true,
        // The connection failed under the call (reset, or dropped before it went out).
        tonic::Code::Unknown | tonic::Code::Cancelled if std::error::Error::source(status).is_some() => true,
        // tonic's server answers its own deadline (grpc-timeout) so, where gRPC says
        // DEADLINE_EXCEEDED.
        tonic::Code::Cancelled => status.message() == "Timeout expired",
        _ => false,
    }
}

/// Calls `call(attempt)` until it answers, fails with a code that is not retryable, or
/// `retries` retries are spent; backs off 25 ms, 50 ms, ... (at most 1 s) in between, as a
/// polite client would. Answers the last result and the retries used.
pub async fn with_retries<T, F, Fut>(retries: u32, mut call: F) -> (Result<T, tonic::Status>, u32)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut attempt = 0;
    loop {
        match call(attempt).await {
            Err(status) if retryable(&status) && attempt < retries => {
                let backoff = Duration::from_millis(25u64 << attempt.min(5)).min(Duration::from_secs(1));
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            result => return (result, attempt),
        }
    }
}

/// A request with a deadline.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The currency every product of a run is priced in.
pub const CURRENCY: &str = "EUR";

/// `amount_minor` in [`CURRENCY`].
pub fn eur(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: CURRENCY.into(),
    }
}

/// A shipping address checkout accepts (every required field set).
pub fn address(customer: &str) -> Address {
    Address {
        name: format!("Load test {customer}"),
        line1: "Alexanderplatz 1".into(),
        line2: String::new(),
        city: "Berlin".into(),
        region: "BE".into(),
        postal_code: "10178".into(),
        country: "DE".into(),
        location: Some(GeoPoint {
            latitude: 52.5219,
            longitude: 13.4132,
        }),
    }
}

/// Creates (or replaces) an active product.
pub async fn upsert_product(
    catalog: &mut CatalogServiceClient<Channel>,
    sku: &str,
    title: &str,
    price_minor: i64,
    category: &str,
) -> anyhow::Result<()> {
    catalog
        .upsert_product(UpsertProductRequest {
            product: Some(Product {
                sku: sku.to_string(),
                title: title.to_string(),
                price: Some(eur(price_minor)),
                category: category.to_string(),
                active: true,
                ..Default::default()
            }),
            expected_version: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!("UpsertProduct {sku}: {s}"))?;
    Ok(())
}

/// Runs `f` over `items` with at most `concurrency` at once; the first error wins.
pub async fn for_each_concurrent<I, T, F, Fut>(items: I, concurrency: usize, f: F) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use futures::StreamExt;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(items)
        .map(f)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Up to `limit` items as a short list for a report line.
pub fn sample_list<T: std::fmt::Display>(items: &[T], limit: usize) -> String {
    let mut shown: Vec<String> = items.iter().take(limit).map(|i| i.to_string()).collect();
    if items.len() > limit {
        shown.push(format!("… {} more", items.len() - limit));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_parses_percent_and_fraction() {
        assert_eq!(Share::parse("25%").unwrap(), Share(0.25));
        assert_eq!(Share::parse("0.25").unwrap(), Share(0.25));
        assert_eq!(Share::parse("0").unwrap(), Share(0.0));
        assert!(Share::parse("120%").is_err());
        assert!(Share::parse("2").is_err());
        assert_eq!(Share(0.1).of(2000), 200);
    }

    #[test]
    fn shuffled_roles_keep_exact_counts_and_spread_them() {
        let roles = shuffled_roles(&[1400, 400, 200], 7);
        assert_eq!(roles.len(), 2000);
        for (role, n) in [(0, 1400), (1, 400), (2, 200)] {
            assert_eq!(roles.iter().filter(|r| **r == role).count(), n);
            // Spread: the first quarter holds roughly a quarter of each role.
            let early = roles[..500].iter().filter(|r| **r == role).count();
            assert!(
                early > n / 4 - n / 10 && early < n / 4 + n / 10,
                "{role}: {early}"
            );
        }
        assert_eq!(roles, shuffled_roles(&[1400, 400, 200], 7));
        assert_ne!(roles, shuffled_roles(&[1400, 400, 200], 8));
    }

    #[test]
    fn a_call_the_transport_lost_is_retryable_an_unknown_answer_is_not() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let lost = tonic::Status::from_error(Box::new(reset));
        assert_eq!(lost.code(), tonic::Code::Unknown);
        assert!(retryable(&lost));
        assert!(!retryable(&tonic::Status::unknown("the server said so")));
        assert!(retryable(&tonic::Status::unavailable("restarting")));
        assert!(!retryable(&tonic::Status::invalid_argument("no")));
        assert!(retryable(&tonic::Status::aborted(
            "another worker took this saga over; retry"
        )));
        assert!(retryable(&tonic::Status::cancelled("Timeout expired")));
        assert!(!retryable(&tonic::Status::cancelled("the client went away")));
    }

    #[tokio::test(start_paused = true)]
    async fn with_retries_retries_only_what_is_safe() {
        let (result, used) = with_retries(3, |attempt| async move {
            if attempt < 2 {
                Err(tonic::Status::unavailable("shed"))
            } else {
                Ok(attempt)
            }
        })
        .await;
        assert_eq!((result.unwrap(), used), (2, 2));
        let (result, used) = with_retries(3, |_| async {
            Err::<(), _>(tonic::Status::failed_precondition("no"))
        })
        .await;
        assert_eq!(
            (result.unwrap_err().code(), used),
            (tonic::Code::FailedPrecondition, 0)
        );
        let (result, used) = with_retries(2, |_| async {
            Err::<(), _>(tonic::Status::deadline_exceeded("slow"))
        })
        .await;
        assert_eq!(
            (result.unwrap_err().code(), used),
            (tonic::Code::DeadlineExceeded, 2)
        );
    }
}
