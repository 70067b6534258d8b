//! The checks of a multi-region flash sale, extended to the world: from what the buyers saw
//! in each region and every region's reconciliation of the global SKU (`GetReconciliation`,
//! read once the sale settled), each one a [`Check`] of the verdict table.
//!
//! Each region's reconciliation carries every region's latest ledger (allocation, on_hand,
//! sold, units transferred in and out) and the units in flight it counts by transfer id; the
//! checks hold in every region's reconciliation, so regions that disagree fail them too.

use holdfast_proto::inventory::v1::{RegionAvailability, SkuReconciliation};

use crate::region_world::{Tracked, Watched};
use crate::report::Check;
use crate::scenario::sample_list;

/// One region's side of the sale, as its buyers saw it.
#[derive(Debug, Clone)]
pub struct RegionSale {
    /// The region.
    pub region: String,
    /// Buyers who shopped there.
    pub buyers: u64,
    /// Units they reserved and committed.
    pub winners: i64,
}

/// What the world checks read.
#[derive(Debug)]
pub struct WorldInputs<'a> {
    /// The global SKU's world total.
    pub total: i64,
    /// Per region, in `--regions` order.
    pub sales: &'a [RegionSale],
    /// Buyers who got no clear answer (an error after every retry), described.
    pub unresolved: &'a [String],
    /// Each region's reconciliation of the SKU after settling: (observer, reconciliation).
    pub reports: &'a [(String, SkuReconciliation)],
    /// Whether every region reached zero drift, nothing in flight and sold = winners before
    /// the settle deadline.
    pub settled: bool,
    /// How long settling took (or waited), seconds.
    pub settle_s: f64,
}

/// A region's ledger: what its units became must be what it was given.
fn ledger_off(r: &RegionAvailability) -> i64 {
    r.on_hand + r.sold - (r.allocation + r.transferred_in - r.transferred_out)
}

/// Runs `each` over every region's reconciliation; answers the findings, named by observer.
fn in_every<F>(reports: &[(String, SkuReconciliation)], each: F) -> Vec<String>
where
    F: Fn(&SkuReconciliation) -> Vec<String>,
{
    reports
        .iter()
        .flat_map(|(observer, report)| {
            each(report)
                .into_iter()
                .map(move |finding| format!("seen from {observer}: {finding}"))
        })
        .collect()
}

fn check(name: &'static str, asserts: &'static str, findings: Vec<String>, held: String) -> Check {
    let ok = findings.is_empty();
    Check::new(
        name,
        asserts,
        ok,
        if ok { held } else { sample_list(&findings, 4) },
    )
}

/// The world checks: winners, oversell (world and per region), each region's ledger,
/// conservation with units in flight counted once, and zero drift once settled.
pub fn world_checks(x: &WorldInputs<'_>) -> Vec<Check> {
    let buyers: u64 = x.sales.iter().map(|s| s.buyers).sum();
    let winners: i64 = x.sales.iter().map(|s| s.winners).sum();
    let expected = x.total.min(buyers as i64);
    let per_region = x
        .sales
        .iter()
        .map(|s| format!("{} {} of {} buyers", s.region, s.winners, s.buyers))
        .collect::<Vec<_>>()
        .join(", ");
    let mut checks = vec![Check::new(
        "winners",
        "exactly min(global stock, buyers) buyers won a unit, worldwide",
        winners == expected && x.unresolved.is_empty(),
        format!(
            "{winners} winners (expected min({}, {buyers}) = {expected}): {per_region}{}",
            x.total,
            if x.unresolved.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} buyers got no answer: {}",
                    x.unresolved.len(),
                    sample_list(x.unresolved, 3)
                )
            }
        ),
    )];

    let mut oversold = in_every(x.reports, |report| {
        let mut found = Vec::new();
        if report.sold > x.total {
            found.push(format!("the world sold {} of {}", report.sold, x.total));
        }
        for r in &report.regions {
            let may_sell = r.allocation + r.transferred_in - r.transferred_out;
            if r.sold > may_sell || r.on_hand < 0 || r.reserved > r.on_hand {
                found.push(format!(
                    "region {} sold {} of allocation {} + in {} - out {} = {may_sell} (on_hand {}, reserved {})",
                    r.region, r.sold, r.allocation, r.transferred_in, r.transferred_out, r.on_hand, r.reserved
                ));
            }
        }
        found
    });
    if winners > x.total {
        oversold.push(format!("{winners} buyers won {} units", x.total));
    }
    checks.push(check(
        "oversell",
        "no region sold more than its allocation + credited - debited transfers; the world no more than its total",
        oversold,
        format!("{winners} units sold of {}, every region within its ledger", x.total),
    ));

    let ledgers = in_every(x.reports, |report| {
        let mut found = Vec::new();
        for r in &report.regions {
            let off = ledger_off(r);
            if off != 0 {
                found.push(format!(
                    "region {}: on_hand {} + sold {} is {off:+} off allocation {} + in {} - out {}",
                    r.region, r.on_hand, r.sold, r.allocation, r.transferred_in, r.transferred_out
                ));
            }
            if let Some(sale) = x.sales.iter().find(|s| s.region == r.region)
                && sale.winners != r.sold
            {
                found.push(format!(
                    "region {} sold {} but its buyers won {}",
                    r.region, r.sold, sale.winners
                ));
            }
        }
        for sale in x.sales {
            if !report.regions.iter().any(|r| r.region == sale.region) {
                found.push(format!("no ledger of region {}", sale.region));
            }
        }
        found
    });
    checks.push(check(
        "region-ledgers",
        "each region: on_hand + sold = allocation + transferred in - out, and sold = units its buyers won",
        ledgers,
        x.sales
            .iter()
            .filter_map(|s| {
                let r = x
                    .reports
                    .first()?
                    .1
                    .regions
                    .iter()
                    .find(|r| r.region == s.region)?;
                Some(format!(
                    "{}: {} + {} = {} + {} - {}",
                    r.region, r.on_hand, r.sold, r.allocation, r.transferred_in, r.transferred_out
                ))
            })
            .collect::<Vec<_>>()
            .join("; "),
    ));

    let conservation = in_every(x.reports, |report| {
        let sum = |f: fn(&RegionAvailability) -> i64| report.regions.iter().map(f).sum::<i64>();
        let (kept, allocated) = (sum(|r| r.on_hand + r.sold), sum(|r| r.allocation));
        let moving = sum(|r| r.transferred_out) - sum(|r| r.transferred_in);
        let mut found = Vec::new();
        if kept + report.in_flight != x.total {
            found.push(format!(
                "sum(on_hand + sold) {kept} + in flight {} = {}, not the total {}",
                report.in_flight,
                kept + report.in_flight,
                x.total
            ));
        }
        if report.in_flight != moving {
            found.push(format!(
                "{} units counted in flight, but debits exceed credits by {moving}",
                report.in_flight
            ));
        }
        if allocated != x.total {
            found.push(format!("allocations sum to {allocated}, not {}", x.total));
        }
        found
    });
    checks.push(check(
        "conservation",
        "sum over regions(on_hand + sold) + in flight = global total, units in flight counted once",
        conservation,
        x.reports.first().map_or(String::new(), |(_, r)| {
            format!(
                "on_hand {} + sold {} + in flight {} = {} in every region's reconciliation",
                r.on_hand, r.sold, r.in_flight, x.total
            )
        }),
    ));

    let mut drift = in_every(x.reports, |report| {
        let mut found = Vec::new();
        if report.drift != 0 || !report.problems.is_empty() {
            found.push(format!("drift {} {:?}", report.drift, report.problems));
        }
        if report.in_flight != 0 {
            found.push(format!(
                "{} units still in flight ({} transfers)",
                report.in_flight,
                report.in_flight_transfers.len()
            ));
        }
        found
    });
    if !x.settled {
        drift.push(format!("not settled within {:.1} s", x.settle_s));
    }
    if x.reports.len() != x.sales.len() {
        drift.push(format!(
            "{} of {} regions answered GetReconciliation",
            x.reports.len(),
            x.sales.len()
        ));
    }
    checks.push(check(
        "drift",
        "every region's reconciliation at zero drift, no problem, nothing in flight, once settled",
        drift,
        format!(
            "zero drift in all {} regions, settled {:.1} s after the last sale",
            x.reports.len(),
            x.settle_s
        ),
    ));
    checks
}

/// What the watchers and the tracker saw while the sale ran: every sampled reconciliation
/// consistent (the reconciler counts units in flight and credits its snapshots cannot
/// confirm yet, so drift is 0 at every instant) and every local level sane.
pub fn during_check(watched: &[(String, Watched)], tracked: &Tracked) -> Check {
    let mut found = tracked.inconsistent.clone();
    let mut levels = 0;
    for (region, w) in watched {
        levels += w.view_ages_ms.len();
        found.extend(w.broken_levels.iter().map(|f| format!("{region}: {f}")));
    }
    check(
        "drift-during-sale",
        "every reconciliation sampled during the sale consistent, every local level 0 <= reserved <= on_hand",
        found,
        format!(
            "{} reconciliations and {levels} views sampled, all consistent",
            tracked.samples
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    fn region(
        name: &str,
        on_hand: i64,
        sold: i64,
        transferred_in: i64,
        transferred_out: i64,
    ) -> RegionAvailability {
        RegionAvailability {
            region: name.into(),
            allocation: 500,
            on_hand,
            sold,
            transferred_in,
            transferred_out,
            ..RegionAvailability::default()
        }
    }

    fn settled(regions: Vec<RegionAvailability>, in_flight: i64) -> SkuReconciliation {
        SkuReconciliation {
            sku: "DROP".into(),
            global_total: 1000,
            on_hand: regions.iter().map(|r| r.on_hand).sum(),
            sold: regions.iter().map(|r| r.sold).sum(),
            in_flight,
            regions,
            ..SkuReconciliation::default()
        }
    }

    fn sales(na: i64, eu: i64) -> Vec<RegionSale> {
        vec![
            RegionSale {
                region: "na".into(),
                buyers: 1500,
                winners: na,
            },
            RegionSale {
                region: "eu".into(),
                buyers: 100,
                winners: eu,
            },
        ]
    }

    /// The verdicts by check name, failed ones only.
    fn failed(sales: &[RegionSale], report: SkuReconciliation) -> Vec<&'static str> {
        let reports = vec![("na".to_string(), report.clone()), ("eu".to_string(), report)];
        let checks = world_checks(&WorldInputs {
            total: 1000,
            sales,
            unresolved: &[],
            reports: &reports,
            settled: true,
            settle_s: 1.0,
        });
        checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn world_checks_pass_a_sale_that_moved_units_and_balances() {
        // eu gave na 400; na sold its 500 and the 400, eu kept 100 for its 100 buyers.
        let report = settled(
            vec![region("eu", 0, 100, 0, 400), region("na", 0, 900, 400, 0)],
            0,
        );
        assert_eq!(failed(&sales(900, 100), report), Vec::<&str>::new());
    }

    #[test]
    fn world_checks_catch_an_oversold_region() {
        // na sold one unit it did not have: on_hand -1, 901 sold of 500 + 400.
        let report = settled(
            vec![region("eu", 0, 100, 0, 400), region("na", -1, 901, 400, 0)],
            0,
        );
        let failed = failed(&sales(901, 100), report);
        assert!(failed.contains(&"oversell"), "{failed:?}");
        assert!(failed.contains(&"winners"), "{failed:?}");
    }

    #[test]
    fn world_checks_catch_a_lost_unit() {
        // A unit vanished from na's shelf: its ledger is off by one, the world short by one.
        let report = settled(
            vec![region("eu", 0, 100, 0, 400), region("na", 0, 899, 400, 0)],
            0,
        );
        let failed = failed(&sales(899, 100), report);
        assert!(failed.contains(&"region-ledgers"), "{failed:?}");
        assert!(failed.contains(&"conservation"), "{failed:?}");
        assert!(failed.contains(&"winners"), "{failed:?}");
    }

    #[test]
    fn world_checks_catch_units_in_flight_counted_twice() {
        // The 400 were credited in na, yet still counted in flight.
        let report = settled(
            vec![region("eu", 0, 100, 0, 400), region("na", 0, 900, 400, 0)],
            400,
        );
        let failed = failed(&sales(900, 100), report);
        assert!(failed.contains(&"conservation"), "{failed:?}");
        assert!(failed.contains(&"drift"), "{failed:?}");
        assert!(!failed.contains(&"oversell"), "{failed:?}");
    }

    #[test]
    fn world_checks_catch_a_sale_the_buyers_did_not_see_and_drift() {
        // na's ledger shows 900 sold, its buyers won 899: one sale nobody was told of.
        let mut report = settled(
            vec![region("eu", 0, 100, 0, 400), region("na", 0, 900, 400, 0)],
            0,
        );
        report.drift = 1;
        report.problems.push("region na: off".into());
        let failed = failed(&sales(899, 100), report);
        assert!(failed.contains(&"region-ledgers"), "{failed:?}");
        assert!(failed.contains(&"drift"), "{failed:?}");
    }

    #[test]
    fn during_check_fails_on_a_drifting_sample_or_a_broken_level() {
        let ok = Watched {
            view_ages_ms: vec![10, 20],
            ..Watched::default()
        };
        let clean = Tracked {
            samples: 3,
            ..Tracked::default()
        };
        assert_eq!(during_check(&[("na".into(), ok)], &clean).verdict, Verdict::Pass);
        let drifting = Tracked {
            samples: 3,
            inconsistent: vec!["eu: drift 5 []".into()],
            ..Tracked::default()
        };
        let check = during_check(&[], &drifting);
        assert_eq!(check.verdict, Verdict::Fail);
        assert!(check.detail.contains("eu: drift 5"), "{}", check.detail);
        let broken = Watched {
            broken_levels: vec!["on_hand 0 reserved 1".into()],
            ..Watched::default()
        };
        assert_eq!(
            during_check(&[("na".into(), broken)], &clean).verdict,
            Verdict::Fail
        );
    }
}
