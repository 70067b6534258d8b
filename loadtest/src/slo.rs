//! `--slo` gates: `p99<50ms`, `error_rate<1%`, `throughput>=500/s`, optionally for one
//! operation (`Checkout:p99<200ms`). A missed gate fails the run.

use serde::Serialize;

use crate::summary::LoadSummary;

/// What a gate measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A latency percentile (0..100), milliseconds.
    Percentile(f64),
    /// The slowest attempt, milliseconds.
    Max,
    /// Mean latency, milliseconds.
    Mean,
    /// Failed attempts over attempts, as a fraction.
    ErrorRate,
    /// Completed attempts per second.
    Throughput,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Cmp {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
}

/// One gate, as given on the command line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    /// The text it was parsed from.
    pub text: String,
    /// The operation it applies to; every attempt when unset.
    pub op: Option<String>,
    /// What it measures.
    pub metric: Metric,
    /// How the measure compares with the bound.
    pub cmp: Cmp,
    /// The bound, in the metric's unit (ms, fraction, per second).
    pub bound: f64,
}

/// A gate and what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct SloResult {
    /// The gate as given.
    pub slo: String,
    /// The measured value, in the metric's unit; `None` when the operation never ran.
    pub observed: Option<f64>,
    /// The measured value for people.
    pub observed_text: String,
    /// Whether the gate held.
    pub passed: bool,
}

impl Slo {
    /// Parses `[OP:]METRIC CMP VALUE`, e.g. `p99<50ms`, `p99.9<=0.2s`, `error_rate<1%`,
    /// `throughput>=500/s`, `Checkout:max<2s`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        let (op, rest) = match text.split_once(':') {
            Some((op, rest)) if !op.is_empty() => (Some(op.to_string()), rest),
            _ => (None, text.as_str()),
        };
        let at = rest
            .find(['<', '>'])
            .ok_or_else(|| format!("{raw:?}: expected METRIC<VALUE or METRIC>VALUE, e.g. p99<50ms"))?;
        let (metric, tail) = rest.split_at(at);
        let (cmp, value) = if let Some(v) = tail.strip_prefix("<=") {
            (Cmp::Le, v)
        } else if let Some(v) = tail.strip_prefix(">=") {
            (Cmp::Ge, v)
        } else if let Some(v) = tail.strip_prefix('<') {
            (Cmp::Lt, v)
        } else {
            (Cmp::Gt, &tail[1..])
        };
        let metric = parse_metric(metric).ok_or_else(|| {
            format!("{raw:?}: unknown metric {metric:?}; use p50, p90, p99, p999, max, mean, error_rate or throughput")
        })?;
        let bound = match metric {
            Metric::Percentile(_) | Metric::Max | Metric::Mean => parse_millis(value),
            Metric::ErrorRate => parse_fraction(value),
            Metric::Throughput => value.trim_end_matches("/s").parse::<f64>().ok(),
        }
        .filter(|b| b.is_finite() && *b >= 0.0)
        .ok_or_else(|| format!("{raw:?}: bad value {value:?}"))?;
        Ok(Self {
            text,
            op,
            metric,
            cmp,
            bound,
        })
    }

    /// Checks the gate against a phase's summary.
    pub fn evaluate(&self, load: &LoadSummary) -> SloResult {
        let stats = match &self.op {
            None => Some(&load.all),
            Some(op) => load.ops.get(op),
        };
        let observed = stats.map(|s| match self.metric {
            Metric::Percentile(p) => s.latency_at(p),
            Metric::Max => s.latency_ms.max,
            Metric::Mean => s.latency_ms.mean,
            Metric::ErrorRate => s.error_rate,
            Metric::Throughput => s.count as f64 / load.elapsed_s.max(1e-9),
        });
        let passed = observed.is_some_and(|v| match self.cmp {
            Cmp::Lt => v < self.bound,
            Cmp::Le => v <= self.bound,
            Cmp::Gt => v > self.bound,
            Cmp::Ge => v >= self.bound,
        });
        let observed_text = match (observed, self.metric) {
            (None, _) => format!("no {} attempts in this run", self.op.as_deref().unwrap_or("")),
            (Some(v), Metric::ErrorRate) => format!("{:.3}%", v * 100.0),
            (Some(v), Metric::Throughput) => format!("{v:.0}/s"),
            (Some(v), _) => format!("{v:.2} ms"),
        };
        SloResult {
            slo: self.text.clone(),
            observed,
            observed_text,
            passed,
        }
    }
}

fn parse_metric(raw: &str) -> Option<Metric> {
    match raw.to_ascii_lowercase().as_str() {
        "max" => return Some(Metric::Max),
        "mean" | "avg" => return Some(Metric::Mean),
        "error_rate" | "errors" | "error-rate" => return Some(Metric::ErrorRate),
        "throughput" | "rate" | "rps" => return Some(Metric::Throughput),
        _ => {}
    }
    let digits = raw.strip_prefix(['p', 'P'])?;
    let percentile = if digits.contains('.') || digits.len() <= 2 {
        digits.parse::<f64>().ok()?
    } else {
        // p999 is 99.9, p9999 is 99.99: the digits after the first two are decimals.
        format!("{}.{}", &digits[..2], &digits[2..]).parse::<f64>().ok()?
    };
    (percentile > 0.0 && percentile <= 100.0).then_some(Metric::Percentile(percentile))
}

fn parse_millis(raw: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = raw.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = raw.strip_suffix("µs") {
        (n, 0.001)
    } else if let Some(n) = raw.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = raw.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (raw, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_fraction(raw: &str) -> Option<f64> {
    match raw.strip_suffix('%') {
        Some(n) => n.parse::<f64>().ok().map(|n| n / 100.0),
        None => raw.parse::<f64>().ok().filter(|f| *f <= 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_parses_percentiles_units_and_scopes() {
        let slo = Slo::parse("p99<50ms").unwrap();
        assert_eq!(
            (slo.op, slo.metric, slo.cmp, slo.bound),
            (None, Metric::Percentile(99.0), Cmp::Lt, 50.0)
        );
        assert_eq!(
            Slo::parse("p999 <= 0.2s").unwrap().metric,
            Metric::Percentile(99.9)
        );
        assert_eq!(Slo::parse("p999<=0.2s").unwrap().bound, 200.0);
        assert_eq!(Slo::parse("p99.99<1s").unwrap().metric, Metric::Percentile(99.99));
        let scoped = Slo::parse("Checkout:max<2s").unwrap();
        assert_eq!(scoped.op.as_deref(), Some("Checkout"));
        assert_eq!((scoped.metric, scoped.bound), (Metric::Max, 2000.0));
        let errors = Slo::parse("error_rate<1%").unwrap();
        assert_eq!((errors.metric, errors.bound), (Metric::ErrorRate, 0.01));
        let rate = Slo::parse("throughput>=500/s").unwrap();
        assert_eq!(
            (rate.metric, rate.cmp, rate.bound),
            (Metric::Throughput, Cmp::Ge, 500.0)
        );
    }

    #[test]
    fn slo_rejects_what_it_cannot_judge() {
        for bad in [
            "p99",
            "p99<fast",
            "latency<5ms",
            "error_rate<2",
            "p0<1ms",
            "p<1ms",
            "p100.5<1ms",
        ] {
            assert!(Slo::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
