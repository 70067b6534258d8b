//! Who may call which PaymentsService RPC: `service` only. Money moves when orders says so,
//! never at a customer's or an operator's direct call.

use holdfast_platform::auth::{AuthzTable, Rule};

/// The table the server enforces.
pub static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.payments.v1.PaymentsService",
    rows: &[
        ("Authorize", Rule::Service),
        ("Capture", Rule::Service),
        ("Void", Rule::Service),
        ("Refund", Rule::Service),
        ("GetPayment", Rule::Service),
        ("ListLedgerEntries", Rule::Service),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_as_intended_and_every_rpc_has_one() {
        let service = [false, true, false];
        let expected = [
            ("Authorize", service),
            ("Capture", service),
            ("Void", service),
            ("Refund", service),
            ("GetPayment", service),
            ("ListLedgerEntries", service),
        ];
        TABLE
            .check(&expected, holdfast_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
