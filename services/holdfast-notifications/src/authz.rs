//! Who may call which NotificationService RPC: a customer reads and sets only their own
//! (the handler checks `customer_id` against the token); services and admins anyone's.

use holdfast_platform::auth::{AuthzTable, Rule};

/// The table the server enforces (the ownership half is checked in the handlers).
pub static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.notifications.v1.NotificationService",
    rows: &[("ListNotifications", Rule::Owner), ("SetPreference", Rule::Owner)],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_as_intended_and_every_rpc_has_one() {
        let anyone = [true, true, true];
        let expected = [("ListNotifications", anyone), ("SetPreference", anyone)];
        TABLE
            .check(&expected, holdfast_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
