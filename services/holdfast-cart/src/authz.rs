//! Who may call which CartService RPC. Every RPC is the cart owner's: a customer token acts
//! on its own customer cart (`sub`) and on the session cart its token is bound to (`sid`);
//! `MergeCarts` needs both; services and admins act on any cart. A request naming another
//! owner is PERMISSION_DENIED.

use holdfast_platform::auth::{AuthzTable, Rule};

/// The table the server enforces (the ownership half is checked in the handlers).
pub static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.cart.v1.CartService",
    rows: &[
        ("GetCart", Rule::Owner),
        ("AddItem", Rule::Owner),
        ("UpdateItem", Rule::Owner),
        ("RemoveItem", Rule::Owner),
        ("MergeCarts", Rule::Owner),
        ("ClearCart", Rule::Owner),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    const ANYONE: [bool; 3] = [true, true, true];

    #[test]
    fn every_row_as_intended_and_every_rpc_has_one() {
        let expected = [
            ("GetCart", ANYONE),
            ("AddItem", ANYONE),
            ("UpdateItem", ANYONE),
            ("RemoveItem", ANYONE),
            ("MergeCarts", ANYONE),
            ("ClearCart", ANYONE),
        ];
        TABLE
            .check(&expected, holdfast_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
