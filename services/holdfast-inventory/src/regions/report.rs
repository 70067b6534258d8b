//! How `holdfast reconcile` prints a reconciliation: a table for people, then one JSON
//! document for scripts.

use holdfast_proto::inventory::v1::{GetReconciliationResponse, MoveRegionUnitsResponse, SkuScope};
use serde_json::json;

/// The table: one row per SKU and region, then the SKU's totals and findings.
pub fn table(report: &GetReconciliationResponse) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
        "SKU", "REGION", "ALLOCATED", "ON_HAND", "RESERVED", "SOLD", "IN_FLIGHT", "AGE_MS"
    );
    for sku in &report.skus {
        for r in &sku.regions {
            out += &format!(
                "{:<24} {:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
                sku.sku, r.region, r.allocation, r.on_hand, r.reserved, r.sold, "", r.age_ms
            );
        }
        out += &format!(
            "{:<24} {:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}  drift {:+}\n",
            sku.sku,
            "TOTAL",
            sku.global_total,
            sku.on_hand,
            sku.reserved,
            sku.sold,
            sku.in_flight,
            "",
            sku.drift
        );
        for problem in &sku.problems {
            out += &format!("  ! {problem}\n");
        }
        for t in &sku.pending_forced_debits {
            out += &format!(
                "  ~ {}: {} units moved from {} to {}, {}'s forced debit pending\n",
                t.transfer_id, t.units, t.from_region, t.to_region, t.from_region
            );
        }
    }
    out += &format!(
        "{} SKUs, drift {} units: {}\n",
        report.skus.len(),
        report.drift_units,
        if report.consistent {
            "consistent"
        } else {
            "NOT consistent"
        }
    );
    out
}

/// The JSON document.
pub fn json(report: &GetReconciliationResponse) -> serde_json::Value {
    json!({
        "consistent": report.consistent,
        "drift_units": report.drift_units,
        "skus": report.skus.iter().map(|sku| json!({
            "sku": sku.sku,
            "scope": SkuScope::try_from(sku.scope).map_or("unspecified", |s| match s {
                SkuScope::Global => "global",
                SkuScope::Regional => "regional",
                SkuScope::Unspecified => "unspecified",
            }),
            "global_total": sku.global_total,
            "on_hand": sku.on_hand,
            "reserved": sku.reserved,
            "sold": sku.sold,
            "in_flight": sku.in_flight,
            "oldest_in_flight_ms": sku.oldest_in_flight_ms,
            "transfers": sku.transfers,
            "transfer_latency_p50_ms": sku.transfer_latency_p50_ms,
            "transfer_latency_p99_ms": sku.transfer_latency_p99_ms,
            "transfer_latency_max_ms": sku.transfer_latency_max_ms,
            "drift": sku.drift,
            "problems": sku.problems,
            "regions": sku.regions.iter().map(|r| json!({
                "region": r.region, "allocation": r.allocation, "on_hand": r.on_hand,
                "reserved": r.reserved, "available": r.available, "sold": r.sold,
                "age_ms": r.age_ms, "stale": r.stale,
                "transferred_in": r.transferred_in, "transferred_out": r.transferred_out,
            })).collect::<Vec<_>>(),
            "in_flight_transfers": sku.in_flight_transfers.iter().map(|t| json!({
                "transfer_id": t.transfer_id, "from": t.from_region, "to": t.to_region,
                "units": t.units, "debited_at_unix_ms": t.debited_at_unix_ms,
            })).collect::<Vec<_>>(),
            "pending_forced_debits": sku.pending_forced_debits.iter().map(|t| json!({
                "transfer_id": t.transfer_id, "from": t.from_region, "to": t.to_region,
                "units": t.units, "moved_at_unix_ms": t.debited_at_unix_ms,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// What `holdfast regions move` prints: the move as the receiving region recorded it.
pub fn moved(answer: &MoveRegionUnitsResponse) -> serde_json::Value {
    let local = answer.local.clone().unwrap_or_default();
    json!({
        "transfer_id": answer.transfer_id,
        "moved_now": answer.moved_now,
        "units": answer.units,
        "moved_at_unix_ms": answer.moved_at_unix_ms,
        "operator": answer.operator,
        "region": local.region,
        "on_hand": local.on_hand,
        "available": local.available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::inventory::v1::SkuReconciliation;

    #[test]
    fn report_prints_drift_and_problems_in_both_forms() {
        let report = GetReconciliationResponse {
            skus: vec![SkuReconciliation {
                sku: "DROP".into(),
                scope: SkuScope::Global as i32,
                global_total: 1000,
                drift: -3,
                problems: vec!["region eu: lost".into()],
                ..SkuReconciliation::default()
            }],
            drift_units: 3,
            consistent: false,
        };
        let text = table(&report);
        assert!(text.contains("drift -3"), "{text}");
        assert!(text.contains("! region eu: lost"));
        assert!(text.contains("NOT consistent"));
        let doc = json(&report);
        assert_eq!(doc["skus"][0]["drift"], -3);
        assert_eq!(doc["skus"][0]["scope"], "global");
        assert_eq!(doc["consistent"], false);
    }
}
