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

impl AuthzTable {
    /// Checks the table row by row against `expected` (`method`, whether `[customer,
    /// service, admin]` pass) and against the service's RPCs in `descriptor_set` (a row for
    /// every RPC, no row for an RPC that does not exist). The error names every mismatch.
    pub fn check(&self, expected: &[(&str, [bool; 3])], descriptor_set: &[u8]) -> Result<(), String> {
        use prost::Message as _;
        let mut problems = Vec::new();
        for (method, want) in expected {
            match self.rule(method) {
                None => problems.push(format!("{method}: no row")),
                Some(rule) => {
                    let got = [Role::Customer, Role::Service, Role::Admin].map(|r| rule.allows(r));
                    if got != *want {
                        problems.push(format!(
                            "{method}: {rule:?} lets [customer, service, admin] {got:?}, expected {want:?}"
                        ));
                    }
                }
            }
        }
        let set = prost_types::FileDescriptorSet::decode(descriptor_set).map_err(|e| e.to_string())?;
        let methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
            .filter(|(package, s)| format!("{package}.{}", s.name()) == self.service)
            .flat_map(|(_, s)| s.method.iter().map(|m| m.name().to_string()))
            .collect();
        if methods.is_empty() {
            problems.push(format!("{} is not in the descriptor set", self.service));
        }
        for method in &methods {
            if self.rule(method).is_none() {
                problems.push(format!("{method}: RPC without a row"));
            }
            if !expected.iter().any(|(m, _)| m == method) {
                problems.push(format!("{method}: RPC not in the expectations"));
            }
        }
        for (method, _) in self.rows {
            if !methods.iter().any(|m| m == method) {
                problems.push(format!("{method}: row for an RPC the service does not have"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
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
