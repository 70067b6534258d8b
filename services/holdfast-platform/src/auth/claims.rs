//! The claims holdfast reads from a token, the roles they name and the [`Caller`] handlers
//! check ownership against.

use serde::{Deserialize, Serialize};
use tonic::Status;

/// What a caller may do, from the token's `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A shopper: `sub` is the customer id; an anonymous shopper has no `sub` and a `sid`
    /// (the session its cart belongs to). Acts only on their own cart, orders and returns.
    Customer,
    /// An internal caller (another holdfast service, a mobile backend's server side): may act
    /// for any customer; the only role the payments RPCs accept.
    Service,
    /// An operator: stock, catalog writes, warehouse management, receiving returns; may read
    /// and act for any customer.
    Admin,
}

impl Role {
    /// The claim's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

/// The claims of a holdfast token. `iss`, `aud` and `exp` are checked by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: u64,
    /// Subject: the customer id for `customer` tokens, the caller's name otherwise; absent
    /// in an anonymous (session-only) token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The role.
    pub role: Role,
    /// The anonymous session this token is bound to (its session cart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Who is calling, as the auth layer put it into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The role.
    pub role: Role,
    /// The customer id (customer tokens) or the caller's name; `None` for anonymous tokens.
    pub subject: Option<String>,
    /// The session bound in the token, if any.
    pub session: Option<String>,
}

impl From<Claims> for Caller {
    fn from(claims: Claims) -> Self {
        Self {
            role: claims.role,
            subject: claims.sub.filter(|s| !s.is_empty()),
            session: claims.sid.filter(|s| !s.is_empty()),
        }
    }
}

impl Caller {
    /// The caller of `request`; `None` when the server runs without auth.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Caller> {
        request.extensions().get::<Caller>()
    }

    /// Services and admins act for anyone.
    fn privileged(&self) -> bool {
        matches!(self.role, Role::Service | Role::Admin)
    }

    /// The customer id a customer token acts as: its `sub`, or for an anonymous token its
    /// session id (a guest's orders are filed under the session).
    pub fn customer_id(&self) -> Option<&str> {
        match self.role {
            Role::Customer => self.subject.as_deref().or(self.session.as_deref()),
            _ => None,
        }
    }

    /// OK if `caller` may act for customer `customer_id`: no caller (auth off), a service or
    /// admin, or a customer token acting as that id ([`Caller::customer_id`]).
    /// PERMISSION_DENIED otherwise.
    pub fn check_customer(caller: Option<&Caller>, customer_id: &str) -> Result<(), Status> {
        match caller {
            None => Ok(()),
            Some(c) if c.privileged() || c.customer_id() == Some(customer_id) => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "this token may not act for customer {customer_id:?}"
            ))),
        }
    }

    /// OK if `caller` may act on anonymous session `session_id`'s cart: no caller, a service
    /// or admin, or a customer token bound to that session (`sid`).
    pub fn check_session(caller: Option<&Caller>, session_id: &str) -> Result<(), Status> {
        match caller {
            None => Ok(()),
            Some(c) if c.privileged() || c.session.as_deref() == Some(session_id) => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "this token is not bound to session {session_id:?}"
            ))),
        }
    }
}

/// OK if `caller` may act on the cart of `owner`: a customer's cart per
/// [`Caller::check_customer`], a session cart per [`Caller::check_session`]. An unset owner
/// passes (the handler answers INVALID_ARGUMENT for it).
pub fn check_cart_owner(
    caller: Option<&Caller>,
    owner: Option<&holdfast_proto::cart::v1::CartOwner>,
) -> Result<(), Status> {
    use holdfast_proto::cart::v1::cart_owner::Owner;
    match owner.and_then(|o| o.owner.as_ref()) {
        Some(Owner::CustomerId(id)) => Caller::check_customer(caller, id),
        Some(Owner::SessionId(id)) => Caller::check_session(caller, id),
        None => Ok(()),
    }
}

/// The caller of `request` and its message (handlers that take the message by value).
pub fn split<T>(request: tonic::Request<T>) -> (Option<Caller>, T) {
    let caller = Caller::of(&request).cloned();
    (caller, request.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(sub: Option<&str>, sid: Option<&str>) -> Caller {
        Caller {
            role: Role::Customer,
            subject: sub.map(String::from),
            session: sid.map(String::from),
        }
    }

    #[test]
    fn a_customer_acts_only_for_themselves_and_their_session() {
        let a = customer(Some("a"), Some("s1"));
        assert!(Caller::check_customer(Some(&a), "a").is_ok());
        let denied = Caller::check_customer(Some(&a), "b").expect_err("other customer");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(Caller::check_session(Some(&a), "s1").is_ok());
        assert_eq!(
            Caller::check_session(Some(&a), "s2")
                .expect_err("other session")
                .code(),
            tonic::Code::PermissionDenied
        );
        let anonymous = customer(None, Some("s1"));
        assert!(
            Caller::check_customer(Some(&anonymous), "").is_err(),
            "no sub is no customer"
        );
    }

    #[test]
    fn services_and_admins_act_for_anyone_and_no_caller_means_auth_is_off() {
        for role in [Role::Service, Role::Admin] {
            let c = Caller {
                role,
                subject: Some("orders".into()),
                session: None,
            };
            assert!(Caller::check_customer(Some(&c), "anyone").is_ok());
            assert!(Caller::check_session(Some(&c), "any").is_ok());
        }
        assert!(Caller::check_customer(None, "x").is_ok());
    }
}
