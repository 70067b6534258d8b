//! Who may call which CatalogService RPC: reads need any valid token (a storefront's
//! anonymous token will do); writes need `admin`.

use holdfast_platform::auth::{AuthzTable, Rule};

/// The table the server enforces.
pub static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.catalog.v1.CatalogService",
    rows: &[
        ("UpsertProduct", Rule::Admin),
        ("GetProduct", Rule::Authenticated),
        ("BatchGetProducts", Rule::Authenticated),
        ("ListProducts", Rule::Authenticated),
        ("Search", Rule::Authenticated),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_as_intended_and_every_rpc_has_one() {
        let (anyone, admin) = ([true, true, true], [false, false, true]);
        let expected = [
            ("UpsertProduct", admin),
            ("GetProduct", anyone),
            ("BatchGetProducts", anyone),
            ("ListProducts", anyone),
            ("Search", anyone),
        ];
        TABLE
            .check(&expected, holdfast_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
