//! Who may call which InventoryService RPC: stock levels are set by `admin` and adjusted by
//! `admin` or `service` (orders returns cancelled units);
//! availability, holds (Reserve, ReserveStream, Extend, Release) by any valid token; committing a hold (a
//! sale) by `service` (orders) only. Multi-region: placing a global SKU, reconciling and
//! moving a dead region's units by `admin`; the regional availability by any valid token.

use holdfast_platform::auth::{AuthzTable, Rule};

/// The table the server enforces.
pub static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.inventory.v1.InventoryService",
    rows: &[
        ("SetStock", Rule::Admin),
        ("SetAdmissionLimits", Rule::Admin),
        ("GetAdmissionLimits", Rule::Admin),
        ("AdjustStock", Rule::AdminOrService),
        ("GetAvailability", Rule::Authenticated),
        ("Reserve", Rule::Authenticated),
        ("ReserveStream", Rule::Authenticated),
        ("Commit", Rule::Service),
        ("Release", Rule::Authenticated),
        ("Extend", Rule::Authenticated),
        ("SetGlobalStock", Rule::Admin),
        ("GetRegionalAvailability", Rule::Authenticated),
        ("GetReconciliation", Rule::Admin),
        ("MoveRegionUnits", Rule::Admin),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_as_intended_and_every_rpc_has_one() {
        let (anyone, admin, service) = ([true, true, true], [false, false, true], [false, true, false]);
        let staff = [false, true, true];
        let expected = [
            ("SetStock", admin),
            ("SetAdmissionLimits", admin),
            ("GetAdmissionLimits", admin),
            ("AdjustStock", staff),
            ("GetAvailability", anyone),
            ("Reserve", anyone),
            ("ReserveStream", anyone),
            ("Commit", service),
            ("Release", anyone),
            ("Extend", anyone),
            ("SetGlobalStock", admin),
            ("GetRegionalAvailability", anyone),
            ("GetReconciliation", admin),
            ("MoveRegionUnits", admin),
        ];
        TABLE
            .check(&expected, holdfast_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
