//! What a measured phase came to: latency percentiles and spectra per operation, answers,
//! errors and throughput. The report, the SLO gates and the plot all read it.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::{Arrival, LoadResult, OpTally, TimelinePoint};

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// One point of a percentile spectrum: `percentile` of attempts answered within `latency_ms`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SpectrumPoint {
    /// 0..100.
    pub percentile: f64,
    /// Milliseconds.
    pub latency_ms: f64,
}

/// The figures of one operation (or of every attempt).
#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    /// Attempts.
    pub count: u64,
    /// Failed attempts.
    pub errors: u64,
    /// errors / count.
    pub error_rate: f64,
    /// Answers by label (business outcomes such as `insufficient_stock` included).
    pub answers: BTreeMap<String, u64>,
    /// Failures by gRPC code or label.
    pub error_kinds: BTreeMap<String, u64>,
    /// Latency percentiles, ms.
    pub latency_ms: Percentiles,
    /// The percentile spectrum, for plotting.
    pub spectrum: Vec<SpectrumPoint>,
    #[serde(skip)]
    histogram: Histogram<u64>,
}

impl OpSummary {
    fn new(
        latency: &Histogram<u64>,
        answers: BTreeMap<String, u64>,
        error_kinds: BTreeMap<String, u64>,
    ) -> Self {
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        let count = latency.len();
        let errors: u64 = error_kinds.values().sum();
        Self {
            count,
            errors,
            error_rate: if count == 0 {
                0.0
            } else {
                errors as f64 / count as f64
            },
            answers,
            error_kinds,
            latency_ms: Percentiles {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                p9999: ms(0.9999),
                max: latency.max() as f64 / 1000.0,
                mean: latency.mean() / 1000.0,
            },
            spectrum: spectrum(latency),
            histogram: latency.clone(),
        }
    }

    fn from_tally(tally: &OpTally) -> Self {
        Self::new(
            &tally.latency,
            tally.answers.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            tally.errors.clone(),
        )
    }

    /// The latency at `percentile` (0..100), ms.
    pub fn latency_at(&self, percentile: f64) -> f64 {
        self.histogram.value_at_quantile(percentile / 100.0) as f64 / 1000.0
    }
}

/// The percentile spectrum of a histogram: HdrHistogram's percentile distribution, a point
/// each time the distance to 100% halves (5 ticks per half), plus the maximum.
fn spectrum(latency: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if latency.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<SpectrumPoint> = latency
        .iter_quantiles(5)
        .map(|v| SpectrumPoint {
            percentile: v.quantile_iterated_to() * 100.0,
            latency_ms: latency.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
        })
        .collect();
    points.dedup_by(|b, a| a.percentile == b.percentile);
    points
}

/// One measured phase, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    /// How attempts arrived.
    pub arrival: Arrival,
    /// From the first scheduled attempt to the last answer, seconds.
    pub elapsed_s: f64,
    /// Completed attempts per second.
    pub throughput_per_s: f64,
    /// How far behind schedule the latest attempt was sent, ms (open loop).
    pub max_send_lag_ms: f64,
    /// Every attempt.
    pub all: OpSummary,
    /// Per operation.
    pub ops: BTreeMap<String, OpSummary>,
    /// Per second.
    pub timeline: Vec<TimelinePoint>,
}

impl LoadSummary {
    /// Summarises a phase.
    pub fn new(result: &LoadResult) -> Self {
        let mut answers = BTreeMap::new();
        let mut error_kinds = BTreeMap::new();
        for (op, tally) in &result.ops {
            for (label, n) in &tally.answers {
                *answers.entry(format!("{op}.{label}")).or_default() += n;
            }
            for (label, n) in &tally.errors {
                *error_kinds.entry(format!("{op}.{label}")).or_default() += n;
            }
        }
        Self {
            arrival: result.arrival,
            elapsed_s: result.elapsed.as_secs_f64(),
            throughput_per_s: result.throughput(),
            max_send_lag_ms: result.max_send_lag.as_secs_f64() * 1000.0,
            all: OpSummary::new(&result.all, answers, error_kinds),
            ops: result
                .ops
                .iter()
                .map(|(op, tally)| (op.to_string(), OpSummary::from_tally(tally)))
                .collect(),
            timeline: result.timeline.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectrum_rises_to_the_maximum() {
        let mut h = crate::engine::histogram();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let points = spectrum(&h);
        assert!(points.len() > 20);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].percentile < w[1].percentile && w[0].latency_ms <= w[1].latency_ms)
        );
        let last = points.last().unwrap();
        assert_eq!(last.percentile, 100.0);
        assert!((last.latency_ms - 100.0).abs() < 0.1, "{}", last.latency_ms);
    }
}
