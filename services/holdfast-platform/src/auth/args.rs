//! `--auth-*`: where the verification keys are, whose tokens to accept, and the token this
//! process presents when it calls other services.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::AuthError;
use super::credentials::ServiceCredentials;
use super::keys::{DevKey, KeySet, Signer};
use super::verify::Verifier;
use crate::config::parse_duration;

/// Authentication of callers (bearer JWTs) and of this process's own outbound calls.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// JWKS with the keys tokens are verified against (RS256, ES256, EdDSA): a file, or an
    /// `https://` / `http://` URL fetched at start and refreshed (--auth-jwks-refresh, and
    /// early on an unknown `kid`). Required by `holdfast serve` unless --insecure-no-auth;
    /// `holdfast dev` uses its own dev key when unset.
    #[arg(long, env = "HOLDFAST_AUTH_JWKS", value_name = "FILE|URL")]
    pub auth_jwks: Option<String>,

    /// How often a JWKS URL is fetched again (a failed fetch keeps the last good keys).
    #[arg(long, env = "HOLDFAST_AUTH_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub auth_jwks_refresh: Duration,

    /// The least time between two early fetches of a JWKS URL caused by unknown `kid`s.
    #[arg(long, env = "HOLDFAST_AUTH_JWKS_MIN_REFETCH", default_value = "10s", value_parser = parse_duration)]
    pub auth_jwks_min_refetch: Duration,

    /// PEM CA bundle trusted for an `https://` JWKS URL [default: SSL_CERT_FILE, else the
    /// system bundle].
    #[arg(long, env = "HOLDFAST_AUTH_JWKS_CA", value_name = "FILE")]
    pub auth_jwks_ca: Option<PathBuf>,

    /// The `iss` tokens must carry (required with --auth-jwks).
    #[arg(long, env = "HOLDFAST_AUTH_ISSUER", value_name = "ISSUER")]
    pub auth_issuer: Option<String>,

    /// The `aud` tokens must carry.
    #[arg(
        long,
        env = "HOLDFAST_AUTH_AUDIENCE",
        default_value = "holdfast",
        value_name = "AUDIENCE"
    )]
    pub auth_audience: String,

    /// Clock skew allowed on a token's `exp` and `nbf`.
    #[arg(long, env = "HOLDFAST_AUTH_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub auth_leeway: Duration,

    /// File holding the `service` token this process presents to the services it calls.
    #[arg(long, env = "HOLDFAST_AUTH_SERVICE_TOKEN_FILE", value_name = "FILE")]
    pub auth_service_token_file: Option<PathBuf>,

    /// Ed25519 PKCS#8 DER key to mint this process's own `service` tokens with (instead of
    /// --auth-service-token-file); its public half must be in the JWKS under --auth-signing-kid.
    #[arg(long, env = "HOLDFAST_AUTH_SIGNING_KEY", value_name = "FILE")]
    pub auth_signing_key: Option<PathBuf>,

    /// The `kid` of --auth-signing-key in the JWKS.
    #[arg(
        long,
        env = "HOLDFAST_AUTH_SIGNING_KID",
        default_value = "holdfast-dev",
        value_name = "KID"
    )]
    pub auth_signing_kid: String,

    /// Serve without authentication: anyone who reaches the port may call every RPC.
    /// Logged at error level on every start. Never in production.
    #[arg(long, env = "HOLDFAST_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// What [`AuthArgs::resolve`] built.
#[derive(Debug, Clone, Default)]
pub struct AuthSetup {
    /// Verifies callers; `None` when auth is off.
    pub verifier: Option<Verifier>,
    /// What this process presents to the services it calls.
    pub credentials: ServiceCredentials,
}

impl AuthArgs {
    /// Builds the verifier and outbound credentials. `dev` falls back to the dev key in
    /// `data_dir` (generated on first start); `serve` without --auth-jwks and without
    /// --insecure-no-auth is an error. `name` is the subject of minted service tokens.
    pub async fn resolve(&self, dev: bool, data_dir: &Path, name: &str) -> Result<AuthSetup, AuthError> {
        if self.insecure_no_auth {
            tracing::error!(
                "--insecure-no-auth: AUTHENTICATION IS OFF; anyone who can reach this port may call every RPC"
            );
            return Ok(AuthSetup::default());
        }
        let Some(jwks) = &self.auth_jwks else {
            if !dev {
                return Err(AuthError::Key(
                    "no authentication configured: give --auth-jwks and --auth-issuer (HOLDFAST_AUTH_JWKS, \
                     HOLDFAST_AUTH_ISSUER), or --insecure-no-auth to serve without it"
                        .into(),
                ));
            }
            let key = DevKey::load_or_create(data_dir)?;
            tracing::info!(key = %DevKey::path(data_dir).display(), "auth: dev signing key (mint tokens with `holdfast token`)");
            let verifier = Verifier::new(
                key.key_set(),
                super::keys::DEV_ISSUER,
                super::keys::DEV_AUDIENCE,
                self.auth_leeway,
            );
            return Ok(AuthSetup {
                verifier: Some(verifier),
                credentials: ServiceCredentials::minted(key.signer(), name),
            });
        };
        let issuer = self
            .auth_issuer
            .as_deref()
            .ok_or_else(|| AuthError::Key("--auth-jwks needs --auth-issuer (HOLDFAST_AUTH_ISSUER)".into()))?;
        let verifier = if super::remote::is_url(jwks) {
            let policy = super::remote::RefreshPolicy {
                every: self.auth_jwks_refresh,
                min_refetch: self.auth_jwks_min_refetch,
            };
            let remote = super::RemoteJwks::start(jwks, self.auth_jwks_ca.as_deref(), policy).await?;
            Verifier::remote(remote, issuer, &self.auth_audience, self.auth_leeway)
        } else {
            Verifier::new(
                KeySet::from_jwks_file(Path::new(jwks))?,
                issuer,
                &self.auth_audience,
                self.auth_leeway,
            )
        };
        let credentials = match (&self.auth_service_token_file, &self.auth_signing_key) {
            (Some(file), _) => {
                let token = std::fs::read_to_string(file)
                    .map_err(|e| AuthError::Key(format!("reading {}: {e}", file.display())))?;
                ServiceCredentials::fixed(&token)
                    .ok_or_else(|| AuthError::Key(format!("{}: not a token", file.display())))?
            }
            (None, Some(key)) => {
                let der = std::fs::read(key)
                    .map_err(|e| AuthError::Key(format!("reading {}: {e}", key.display())))?;
                let signer =
                    Signer::from_ed25519_pkcs8(&der, &self.auth_signing_kid, issuer, &self.auth_audience)?;
                ServiceCredentials::minted(signer, name)
            }
            (None, None) => {
                tracing::warn!(
                    "auth: no --auth-service-token-file or --auth-signing-key; calls to other services carry no token"
                );
                ServiceCredentials::default()
            }
        };
        Ok(AuthSetup {
            verifier: Some(verifier),
            credentials,
        })
    }
}
