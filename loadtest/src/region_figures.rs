//! The figures of a multi-region flash sale (`flash-sale --regions`): per region its
//! throughput with transfers on (answers/s, units placed/s), Reserve latency, its ledger
//! and the age of its views of the other regions; the sale's transfers and their
//! debit-to-credit latency (from `GetReconciliation`); the time from the last sale to zero
//! drift everywhere. Printed as a table and kept as JSON in the report's parameters.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::region_world::Tracked;
use crate::world_check::RegionSale;

/// One region's counts, as the sale's buyers and watcher gathered them.
pub struct RegionCounts {
    /// The region, its buyers and their winners (what the world checks read too).
    pub sale: RegionSale,
    /// Buyers who stopped on a sold-out world.
    pub sold_out: u64,
    /// Buyers who ran out of patience.
    pub gave_up: u64,
    /// Reserve calls answered.
    pub reserve_answers: u64,
    /// Commit calls answered.
    pub commit_answers: u64,
    /// Seconds from the start of the sale to the send of its last successful Commit.
    pub last_win_s: f64,
    /// Reserve latency, microseconds.
    pub reserve_latency: Histogram<u64>,
    /// Ages of its views of the other regions, ms.
    pub view_ages_ms: Vec<i64>,
}

/// The figures, as JSON values (the report's parameters hold them).
pub struct Figures {
    /// One object per region.
    pub regions: Vec<Value>,
    /// The transfers of the sale and their debit-to-credit latency.
    pub transfers: Value,
    /// Reconciliation lag: the time from the last sale to zero drift.
    pub lag: Value,
}

impl Figures {
    /// The figures of a sale whose buyers ran for `contest_s` and whose world settled
    /// `settle_s` after the last sale (when `tracked.settled_at` is set).
    pub fn of(counts: &[RegionCounts], tracked: &Tracked, settle_s: f64, contest_s: f64) -> Self {
        let reference = tracked.last.first().map(|(_, r)| r.clone()).unwrap_or_default();
        let regions = counts
            .iter()
            .map(|c| {
                let ages = percentiles(&c.view_ages_ms);
                let ledger = reference
                    .regions
                    .iter()
                    .find(|l| l.region == c.sale.region)
                    .cloned()
                    .unwrap_or_default();
                let ms = |q: f64| c.reserve_latency.value_at_quantile(q) as f64 / 1000.0;
                json!({
                    "region": c.sale.region,
                    "buyers": c.sale.buyers,
                    "winners": c.sale.winners,
                    "sold_out": c.sold_out,
                    "gave_up": c.gave_up,
                    "reserve_answers": c.reserve_answers,
                    "commit_answers": c.commit_answers,
                    "answers_per_s": (c.reserve_answers + c.commit_answers) as f64 / contest_s.max(1e-9),
                    "placed_per_s": if c.last_win_s > 0.0 { c.sale.winners as f64 / c.last_win_s } else { 0.0 },
                    "last_win_s": c.last_win_s,
                    "reserve_p50_ms": ms(0.5),
                    "reserve_p99_ms": ms(0.99),
                    "allocation": ledger.allocation,
                    "transferred_in": ledger.transferred_in,
                    "transferred_out": ledger.transferred_out,
                    "sold": ledger.sold,
                    "on_hand": ledger.on_hand,
                    "view_age_ms": {
                        "p50": ages.0, "p99": ages.1, "max": ages.2, "samples": c.view_ages_ms.len(),
                    },
                })
            })
            .collect();
        Self {
            regions,
            transfers: json!({
                "count": reference.transfers,
                "latency_p50_ms": reference.transfer_latency_p50_ms,
                "latency_p99_ms": reference.transfer_latency_p99_ms,
                "latency_max_ms": reference.transfer_latency_max_ms,
            }),
            lag: json!({
                "last_sale_to_zero_drift_s": tracked.settled_at.map(|_| settle_s),
                "reconciliations_sampled": tracked.samples,
            }),
        }
    }

    /// Prints the region table, the transfers and the lag.
    pub fn print(&self, contest_s: f64) {
        println!();
        println!("regions (the sale took {contest_s:.2} s):");
        println!(
            "{:<8} {:>7} {:>8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>10} {:>9} {:>11} {:>17}",
            "region",
            "buyers",
            "winners",
            "alloc",
            "in",
            "out",
            "sold",
            "on_hand",
            "answers/s",
            "placed/s",
            "reserve p99",
            "view age p50/p99"
        );
        for r in &self.regions {
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            println!(
                "{:<8} {:>7} {:>8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>10.0} {:>9.1} {:>9.1}ms {:>8}/{:>5}ms",
                r["region"].as_str().unwrap_or(""),
                f("buyers"),
                f("winners"),
                f("allocation"),
                f("transferred_in"),
                f("transferred_out"),
                f("sold"),
                f("on_hand"),
                f("answers_per_s"),
                f("placed_per_s"),
                f("reserve_p99_ms"),
                r["view_age_ms"]["p50"],
                r["view_age_ms"]["p99"],
            );
        }
        println!(
            "transfers: {} (debit -> credit p50 {} ms, p99 {} ms, max {} ms; the two regions' clocks)",
            self.transfers["count"],
            self.transfers["latency_p50_ms"],
            self.transfers["latency_p99_ms"],
            self.transfers["latency_max_ms"]
        );
        match self.lag["last_sale_to_zero_drift_s"].as_f64() {
            Some(s) => println!(
                "reconciliation: zero drift, nothing in flight and every sale counted in every region {s:.2} s after the last sale (its Commit sent)"
            ),
            None => println!("reconciliation: never settled at zero drift"),
        }
    }
}

/// (p50, p99, max) of `values` (0s when empty).
fn percentiles(values: &[i64]) -> (i64, i64, i64) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or(0)
    };
    (at(0.5), at(0.99), sorted.last().copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_view_ages() {
        assert_eq!(percentiles(&[]), (0, 0, 0));
        let ages: Vec<i64> = (1..=100).collect();
        assert_eq!(percentiles(&ages), (50, 99, 100));
    }
}
