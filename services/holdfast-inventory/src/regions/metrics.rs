//! Multi-region metrics (`holdfast_inventory_region_*`).

use std::sync::LazyLock;

use prometheus::{Histogram, IntCounterVec, IntGauge, IntGaugeVec};

#[allow(clippy::expect_used)] // a static metric fails to register only on a duplicate name: a bug.
mod defs {
    use super::*;
    use prometheus::{
        register_histogram, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    };

    pub static TRANSFERRED: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "holdfast_inventory_region_transfer_units_total",
            "Units of global SKUs moved between regions, by direction (out: debited here, in: credited here).",
            &["direction"]
        )
        .expect("registers once")
    });
    pub static LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
        register_histogram!(
            "holdfast_inventory_region_transfer_latency_seconds",
            "Debit at the source to first credit here (the two regions' clocks).",
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
            ]
        )
        .expect("registers once")
    });
    pub static DRIFT: LazyLock<IntGauge> = LazyLock::new(|| {
        register_int_gauge!(
            "holdfast_inventory_region_drift_units",
            "Units minted or lost across regions (sum of |drift| over SKUs) at the last reconciliation."
        )
        .expect("registers once")
    });
    pub static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
        register_int_gauge!(
            "holdfast_inventory_region_transfers_in_flight_units",
            "Units debited at a source and not yet credited, at the last reconciliation."
        )
        .expect("registers once")
    });
    pub static OLDEST: LazyLock<IntGauge> = LazyLock::new(|| {
        register_int_gauge!(
            "holdfast_inventory_region_oldest_in_flight_ms",
            "Age of the oldest transfer in flight at the last reconciliation, ms."
        )
        .expect("registers once")
    });
    pub static SNAPSHOT_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
        register_int_gauge_vec!(
            "holdfast_inventory_region_snapshot_age_ms",
            "Age of the newest snapshot heard from each region, ms, at the last reconciliation.",
            &["region"]
        )
        .expect("registers once")
    });
}

/// Units moved (`out` or `in`).
pub fn transfer(direction: &str, units: i64) {
    defs::TRANSFERRED
        .with_label_values(&[direction])
        .inc_by(u64::try_from(units).unwrap_or(0));
}

/// One transfer's debit-to-credit time.
pub fn observe_transfer_latency(ms: i64) {
    defs::LATENCY.observe(ms.max(0) as f64 / 1000.0);
}

/// The last reconciliation's figures.
pub fn reconciled(drift_units: i64, in_flight: i64, oldest_ms: i64, ages: &[(String, i64)]) {
    defs::DRIFT.set(drift_units);
    defs::IN_FLIGHT.set(in_flight);
    defs::OLDEST.set(oldest_ms);
    for (region, age) in ages {
        defs::SNAPSHOT_AGE.with_label_values(&[region]).set(*age);
    }
}
