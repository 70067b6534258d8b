//! Authorization tables: one per service, next to it (`holdfast_<svc>::authz::TABLE`), one
//! row per RPC naming the role it needs. The auth layer enforces the role; rows marked
//! [`Rule::Owner`] also have the handler check that the customer or session the request
//! names is the caller's own.

use super::claims::Role;

/// What an RPC asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token needed (health checks, reflection).
    Public,
    /// Any valid token (catalog reads, availability).
    Authenticated,
    /// Any valid token, and the handler checks that a customer acts only on their own
    /// customer id or bound session; services and admins act for anyone.
    Owner,
    /// `admin` only.
    Admin,
    /// `service` only (internal callers).
    Service,
    /// `admin` or `service`.
    AdminOrService,
}

impl Rule {
    /// Whether a caller with `role` passes the role check of this row.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Rule::Public | Rule::Authenticated | Rule::Owner => true,
            Rule::Admin => role == Role::Admin,
            Rule::Service => role == Role::Service,
            Rule::AdminOrService => matches!(role, Role::Admin | Role::Service),
        }
    }

    /// A role this row lets through (tests pick the token to call it with).
    pub fn sufficient_role(self) -> Role {
        match self {
            Rule::Public | Rule::Authenticated | Rule::Owner | Rule::Service => Role::Service,
            Rule::Admin | Rule::AdminOrService => Role::Admin,
        }
    }
}

/// One service's rows.
#[derive(Debug, Clone, Copy)]
pub struct AuthzTable {
    /// The fully-qualified gRPC service name (`holdfast.cart.v1.CartService`).
    pub service: &'static str,
    /// `(method, rule)` for every RPC of the service.
    pub rows: &'static [(&'static str, Rule)],
}

impl AuthzTable {
    /// The rule of `method`, if the table has a row for it.
    pub fn rule(&self, method: &str) -> Option<Rule> {
        self.rows.iter().find(|(m, _)| *m == method).map(|(_, r)| *r)
    }

    /// Every `(path, rule)`, paths as `/service/method`.
    pub fn paths(&self) -> impl Iterator<Item = (String, Rule)> + '_ {
        self.rows
            .iter()
            .map(|(m, r)| (format!("/{}/{m}", self.service), *r))
    }
}

/// Services every server answers without a token: health checks (load balancers, kubelet)
/// and reflection (grpcurl's `list` and `describe`).
pub const PUBLIC_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_pass_exactly_the_rows_meant_for_them() {
        use Role::*;
        let cases = [
            (Rule::Admin, [false, false, true]),
            (Rule::Service, [false, true, false]),
            (Rule::AdminOrService, [false, true, true]),
            (Rule::Owner, [true, true, true]),
            (Rule::Authenticated, [true, true, true]),
        ];
        for (rule, expected) in cases {
            let got = [Customer, Service, Admin].map(|r| rule.allows(r));
            assert_eq!(got, expected, "{rule:?}");
            assert!(rule.allows(rule.sufficient_role()));
        }
    }
}
