//! Who is calling and what they may touch: bearer JWTs verified against configured keys
//! ([`keys`], [`verify`]), the caller they name ([`claims`]), one authorization table per
//! service ([`table`]) enforced by a tower layer in the server stack ([`layer`]), the
//! service token internal calls carry ([`credentials`]) and the `--auth-*` flags ([`args`]).
//!
//! The layer answers UNAUTHENTICATED for a missing, malformed, unsigned (`alg: none`),
//! expired, wrong-issuer or wrong-audience token and PERMISSION_DENIED when the caller's role
//! is not the one the RPC's row asks for; it puts the [`Caller`] into the request's
//! extensions. Ownership (a customer acts only on their own cart, orders, returns) needs the
//! decoded message, so the handlers check it with [`Caller::check_customer`] and friends.
//! A server built without a verifier (tests of one service, `--insecure-no-auth`) puts no
//! caller in and every check passes.

pub mod args;
pub mod claims;
pub mod credentials;
pub mod keys;
pub mod layer;
pub mod remote;
pub mod table;
pub mod verify;

pub use args::AuthArgs;
pub use claims::{Caller, Claims, Role, check_cart_owner, split};
pub use credentials::ServiceCredentials;
pub use keys::{DevKey, KeySet, Signer};
pub use layer::AuthLayer;
pub use remote::RemoteJwks;
pub use table::{AuthzTable, Rule};
pub use verify::Verifier;

/// Why a token or key was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer ...` header.
    #[error("missing bearer token (authorization: Bearer <jwt>)")]
    Missing,
    /// The token did not verify: malformed, unsigned, bad signature, expired, wrong
    /// issuer or audience.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A key file could not be read or holds no usable key.
    #[error("key: {0}")]
    Key(String),
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid(_) => tonic::Status::unauthenticated(error.to_string()),
            AuthError::Key(_) => tonic::Status::internal("authentication is misconfigured"),
        }
    }
}
