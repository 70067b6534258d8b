//! The reconciler's arithmetic: from every region's latest snapshot of a SKU (each one read
//! atomically by `region_snapshot.lua`, at different instants) to its drift.
//!
//! Each region's ledger says `on_hand + sold = allocation + credited in - debited out`. The
//! transfer log is the union of the ledgers: a debit whose id the destination's snapshot does
//! not show is in flight; a credit whose debit the source's (older) snapshot does not show yet
//! is "unseen" and counted once, at the destination. Then, whatever the snapshots' instants,
//! `sum(on_hand + sold) + in_flight - unseen = sum(allocations) = global total` unless a unit
//! was minted or lost: that difference is the drift.
//!
//! An operator move (`move/<id>`, `super::moves`) is a transfer whose credit comes first:
//! until the source's snapshot shows its forced debit it is counted once, at the destination
//! (a pending forced debit), whatever the snapshots' instants. A region whose on_hand, less
//! the forced debits it owes, is negative sold units an operator move gave away too: those
//! units are oversold and added to the drift.

use std::collections::{BTreeMap, HashMap, HashSet};

use holdfast_proto::events::v1::RegionSnapshot;
use holdfast_proto::inventory::v1::{RegionAvailability, SkuReconciliation, SkuScope, TransferRecord};

/// Scope numbers in snapshots (`SkuScope`).
pub const SCOPE_REGIONAL: i32 = SkuScope::Regional as i32;
/// See [`SCOPE_REGIONAL`].
pub const SCOPE_GLOBAL: i32 = SkuScope::Global as i32;

/// One region's figures from its snapshot, `now` being the reader's clock (ms).
pub fn region_figures(snapshot: &RegionSnapshot, now: i64, stale_after_ms: i64) -> RegionAvailability {
    let age = (now - snapshot.taken_at_unix_ms).max(0);
    RegionAvailability {
        region: snapshot.region.clone(),
        on_hand: snapshot.on_hand,
        reserved: snapshot.reserved,
        available: (snapshot.on_hand - snapshot.reserved).max(0),
        sold: snapshot.sold,
        age_ms: age,
        stale: age > stale_after_ms,
        allocation: snapshot.allocation,
        transferred_in: snapshot.transfers_in.iter().map(|t| t.units).sum(),
        transferred_out: snapshot.transfers_out.iter().map(|t| t.units).sum(),
    }
}

/// Reconciles one SKU over `regions` (every region of the deployment) from `snapshots`
/// (latest per region; regions missing are reported, not guessed).
pub fn reconcile(
    sku: &str,
    regions: &[String],
    snapshots: &BTreeMap<String, RegionSnapshot>,
    now: i64,
    stale_after_ms: i64,
) -> SkuReconciliation {
    let mut report = SkuReconciliation {
        sku: sku.to_string(),
        ..SkuReconciliation::default()
    };
    let scope = snapshots
        .values()
        .map(|s| s.scope)
        .find(|scope| *scope == SCOPE_GLOBAL)
        .or_else(|| snapshots.values().map(|s| s.scope).find(|scope| *scope != 0))
        .unwrap_or(0);
    report.scope = scope;
    for snapshot in snapshots.values() {
        report.regions.push(region_figures(snapshot, now, stale_after_ms));
        report.on_hand += snapshot.on_hand;
        report.reserved += snapshot.reserved;
        report.sold += snapshot.sold;
    }
    if scope != SCOPE_GLOBAL {
        // A regional SKU lives in one region's ledger: nothing to compare across regions but
        // who claims it.
        let homes: std::collections::BTreeSet<&str> = snapshots
            .values()
            .filter(|s| s.scope == SCOPE_REGIONAL)
            .map(|s| s.home_region.as_str())
            .collect();
        if homes.len() > 1 {
            report
                .problems
                .push(format!("regions disagree on its home: {homes:?}"));
        }
        return report;
    }

    for region in regions {
        if !snapshots.contains_key(region) {
            report.problems.push(format!(
                "no snapshot from region {region}: cannot confirm its ledger"
            ));
        }
    }
    let home = snapshots
        .values()
        .find(|s| s.home_region == s.region && s.scope == SCOPE_GLOBAL)
        .or_else(|| snapshots.values().find(|s| s.scope == SCOPE_GLOBAL));
    report.global_total = home.map_or(0, |s| s.global_total);

    // Each region's own ledger, exact (one atomic read).
    let mut allocated = 0;
    for s in snapshots.values() {
        allocated += s.allocation;
        let inn: i64 = s.transfers_in.iter().map(|t| t.units).sum();
        let out: i64 = s.transfers_out.iter().map(|t| t.units).sum();
        let off = s.on_hand + s.sold - (s.allocation + inn - out);
        if off != 0 {
            report.problems.push(format!(
                "region {}: on_hand {} + sold {} is {off:+} off its ledger (allocation {} + in {inn} - out {out})",
                s.region, s.on_hand, s.sold, s.allocation
            ));
        }
    }
    if snapshots.len() == regions.len() && allocated != report.global_total {
        report.problems.push(format!(
            "allocations sum to {allocated}, the global total is {}",
            report.global_total
        ));
    }

    // The transfer log: every debit against its credit.
    let credits: HashMap<&str, (&RegionSnapshot, i64, i64)> = snapshots
        .values()
        .flat_map(|s| {
            s.transfers_in
                .iter()
                .map(move |t| (t.transfer_id.as_str(), (s, t.units, t.credited_at_unix_ms)))
        })
        .collect();
    let mut debited: HashSet<&str> = HashSet::new();
    let mut in_flight = 0;
    let mut oldest = 0;
    let mut latencies = Vec::new();
    for s in snapshots.values() {
        for t in &s.transfers_out {
            debited.insert(t.transfer_id.as_str());
            report.transfers += 1;
            match credits.get(t.transfer_id.as_str()) {
                Some((at, units, credited_at)) => {
                    if !super::keys::is_move(&t.transfer_id) {
                        latencies.push(credited_at - t.debited_at_unix_ms);
                    }
                    if at.region != t.region {
                        report.problems.push(format!(
                            "transfer {} from {} to {} was credited in {}",
                            t.transfer_id, s.region, t.region, at.region
                        ));
                    }
                    if *units != t.units {
                        report.problems.push(format!(
                            "transfer {}: {} debited {}, {} credited {units}",
                            t.transfer_id, s.region, t.units, at.region
                        ));
                    }
                }
                None => {
                    in_flight += t.units;
                    oldest = oldest.max(now - t.debited_at_unix_ms);
                    report.in_flight_transfers.push(TransferRecord {
                        transfer_id: t.transfer_id.clone(),
                        from_region: s.region.clone(),
                        to_region: t.region.clone(),
                        units: t.units,
                        debited_at_unix_ms: t.debited_at_unix_ms,
                        credited: false,
                    });
                }
            }
        }
    }
    let mut unseen = 0;
    let mut owed: HashMap<&str, i64> = HashMap::new();
    for s in snapshots.values() {
        for t in &s.transfers_in {
            if debited.contains(t.transfer_id.as_str()) {
                continue;
            }
            if super::keys::is_move(&t.transfer_id) {
                // Credited first by design: the source applies the forced debit when back.
                unseen += t.units;
                *owed.entry(t.region.as_str()).or_default() += t.units;
                report.pending_forced_debits.push(TransferRecord {
                    transfer_id: t.transfer_id.clone(),
                    from_region: t.region.clone(),
                    to_region: s.region.clone(),
                    units: t.units,
                    debited_at_unix_ms: t.debited_at_unix_ms,
                    credited: true,
                });
                continue;
            }
            let source_newer = snapshots
                .get(&t.region)
                .is_some_and(|src| src.taken_at_unix_ms > t.debited_at_unix_ms);
            if source_newer {
                // The source's ledger was read after the debit and does not have it: minted.
                report.problems.push(format!(
                    "transfer {}: {} credited {} units that {} never debited",
                    t.transfer_id, s.region, t.units, t.region
                ));
            } else {
                unseen += t.units;
            }
        }
    }
    latencies.sort_unstable();
    report.transfer_latency_p99_ms = percentile(&latencies, 0.99);
    report.transfer_latency_p50_ms = percentile(&latencies, 0.5);
    report.transfer_latency_max_ms = percentile(&latencies, 1.0);
    report.in_flight = in_flight;
    report.oldest_in_flight_ms = oldest.max(0);
    let mut oversold = 0;
    for s in snapshots.values() {
        let owes = owed.get(s.region.as_str()).copied().unwrap_or(0);
        let left = s.on_hand - owes;
        if left < 0 {
            oversold -= left;
            report.problems.push(format!(
                "region {}: on_hand {} less {owes} owed to operator moves is {left}: {} units sold there were given away by a move too (oversold)",
                s.region, s.on_hand, -left
            ));
        }
    }
    report.drift = report.on_hand + report.sold + in_flight - unseen - report.global_total + oversold;
    if snapshots.len() < regions.len() {
        // A missing region's units are unknown, not lost: no figure, only the problem above.
        report.drift = 0;
    }
    report
}

/// The `q` quantile of sorted `values` (nearest rank), 0 when empty.
pub fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::events::v1::SnapshotTransfer;

    fn snap(region: &str, allocation: i64, on_hand: i64, sold: i64, at: i64) -> RegionSnapshot {
        RegionSnapshot {
            sku: "DROP".into(),
            region: region.into(),
            scope: SCOPE_GLOBAL,
            home_region: "na".into(),
            global_total: 1000,
            allocation,
            on_hand,
            sold,
            taken_at_unix_ms: at,
            ..RegionSnapshot::default()
        }
    }
    fn xfer(id: &str, region: &str, units: i64, at: i64) -> SnapshotTransfer {
        SnapshotTransfer {
            transfer_id: id.into(),
            region: region.into(),
            units,
            debited_at_unix_ms: at,
            credited_at_unix_ms: if at > 0 { at + 50 } else { 0 },
        }
    }
    fn regions() -> Vec<String> {
        vec!["na".into(), "eu".into()]
    }
    fn run(snaps: Vec<RegionSnapshot>) -> SkuReconciliation {
        let map = snaps.into_iter().map(|s| (s.region.clone(), s)).collect();
        reconcile("DROP", &regions(), &map, 10_000, 5_000)
    }

    #[test]
    fn audit_counts_a_debit_not_yet_credited_as_in_flight() {
        let mut eu = snap("eu", 500, 300, 0, 9_000);
        eu.transfers_out.push(xfer("t1", "na", 200, 8_000));
        let na = snap("na", 500, 100, 400, 9_500);
        let report = run(vec![na, eu]);
        assert_eq!(report.in_flight, 200);
        assert_eq!(report.drift, 0, "{:?}", report.problems);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.oldest_in_flight_ms, 2_000);
    }

    #[test]
    fn audit_reports_transfer_count_and_latency_p99() {
        let mut eu = snap("eu", 500, 300, 0, 9_000);
        eu.transfers_out.push(xfer("t1", "na", 200, 8_000));
        let mut na = snap("na", 500, 300, 400, 9_500);
        na.transfers_in.push(xfer("t1", "eu", 200, 8_000));
        let report = run(vec![na, eu]);
        assert_eq!((report.transfers, report.transfer_latency_p99_ms), (1, 50));
        assert_eq!(
            (report.transfer_latency_p50_ms, report.transfer_latency_max_ms),
            (50, 50)
        );
        let figures: Vec<(i64, i64)> = report
            .regions
            .iter()
            .map(|r| (r.transferred_in, r.transferred_out))
            .collect();
        assert_eq!(figures, vec![(0, 200), (200, 0)], "eu then na");
        assert_eq!(report.drift, 0, "{:?}", report.problems);
        assert_eq!(percentile(&[1, 2, 3, 4, 100], 0.99), 100);
        assert_eq!(percentile(&[], 0.99), 0);
    }

    #[test]
    fn audit_counts_a_credit_once_when_the_source_snapshot_is_older() {
        // eu's snapshot predates its debit; na's shows the credit.
        let eu = snap("eu", 500, 500, 0, 7_000);
        let mut na = snap("na", 500, 200, 500, 9_500);
        na.transfers_in.push(xfer("t1", "eu", 200, 8_000));
        let report = run(vec![na, eu]);
        assert_eq!(report.drift, 0, "{:?}", report.problems);
        assert!(report.problems.is_empty());
    }

    #[test]
    fn audit_reports_a_credit_twice_or_without_a_debit_as_drift() {
        // eu's snapshot is newer than the debit time yet has no such debit: minted units.
        let eu = snap("eu", 500, 500, 0, 9_000);
        let mut na = snap("na", 500, 200, 500, 9_500);
        na.transfers_in.push(xfer("t1", "eu", 200, 8_000));
        let report = run(vec![na, eu]);
        assert_eq!(report.drift, 200);
        assert!(
            report.problems.iter().any(|p| p.contains("never debited")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn audit_reports_a_ledger_off_by_lost_units() {
        let eu = snap("eu", 500, 490, 0, 9_000);
        let na = snap("na", 500, 500, 0, 9_000);
        let report = run(vec![na, eu]);
        assert_eq!(report.drift, -10);
        assert!(
            report.problems.iter().any(|p| p.contains("region eu")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn audit_counts_an_operator_move_once_before_and_after_the_forced_debit() {
        // eu is back (its snapshot newer than the move) but has not applied the debit yet.
        let eu = snap("eu", 500, 500, 0, 9_900);
        let mut na = snap("na", 500, 600, 0, 9_500);
        na.transfers_in.push(xfer("move/m1", "eu", 100, 9_000));
        let report = run(vec![na.clone(), eu]);
        assert_eq!(report.drift, 0, "{:?}", report.problems);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.pending_forced_debits.len(), 1);
        assert_eq!(report.pending_forced_debits[0].from_region, "eu");
        // Applied: matched by id, nothing pending, no latency figure for a move.
        let mut eu = snap("eu", 500, 400, 0, 9_950);
        eu.transfers_out.push(xfer("move/m1", "na", 100, 9_000));
        let report = run(vec![na, eu]);
        assert_eq!(report.drift, 0, "{:?}", report.problems);
        assert!(report.pending_forced_debits.is_empty());
        assert_eq!(report.transfer_latency_p99_ms, 0);
    }

    #[test]
    fn audit_reports_units_a_move_took_from_a_region_that_sold_them_as_drift() {
        // eu sold all 500 while unreachable; na was given 100 of them and sold 600.
        let eu = snap("eu", 500, 0, 500, 9_900);
        let mut na = snap("na", 500, 0, 600, 9_500);
        na.transfers_in.push(xfer("move/m1", "eu", 100, 9_000));
        let pending = run(vec![na.clone(), eu]);
        assert_eq!(pending.drift, 100, "{:?}", pending.problems);
        let mut eu = snap("eu", 500, -100, 500, 9_950);
        eu.transfers_out.push(xfer("move/m1", "na", 100, 9_000));
        let applied = run(vec![na, eu]);
        assert_eq!(applied.drift, 100);
        assert!(
            applied
                .problems
                .iter()
                .any(|p| p.contains("region eu") && p.contains("oversold")),
            "{:?}",
            applied.problems
        );
        assert_eq!(
            applied.on_hand + applied.sold + applied.in_flight,
            1000,
            "the ledger still balances"
        );
    }

    #[test]
    fn audit_names_a_region_never_heard_from_without_guessing_drift() {
        let na = snap("na", 500, 500, 0, 9_000);
        let report = run(vec![na]);
        assert_eq!(report.drift, 0);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("no snapshot from region eu"))
        );
    }
}
