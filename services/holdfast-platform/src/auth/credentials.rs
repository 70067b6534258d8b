//! The token a service presents when it calls another (orders -> inventory, payments, cart,
//! catalog; cart -> catalog, inventory): a fixed one read from `--auth-service-token-file`, or
//! one minted from a signing key (`--auth-signing-key`, the dev key under `holdfast dev`) for
//! an hour and re-minted ten minutes before it expires.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};

use super::claims::Role;
use super::keys::{Signer, now_secs};

const MINTED_TTL: Duration = Duration::from_secs(3600);
const REMINT_BEFORE: u64 = 600;

/// Outbound service credentials; the default carries none (auth off).
#[derive(Clone, Default)]
pub struct ServiceCredentials(Option<Arc<Source>>);

enum Source {
    Fixed(MetadataValue<Ascii>),
    Minted {
        signer: Signer,
        name: String,
        cached: Mutex<Option<(MetadataValue<Ascii>, u64)>>,
    },
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0.as_deref() {
            None => "none",
            Some(Source::Fixed(_)) => "fixed",
            Some(Source::Minted { .. }) => "minted",
        };
        f.debug_tuple("ServiceCredentials").field(&kind).finish()
    }
}

impl ServiceCredentials {
    /// A fixed token. `None` if it cannot be a header value.
    pub fn fixed(token: &str) -> Option<Self> {
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim())).ok()?;
        Some(Self(Some(Arc::new(Source::Fixed(value)))))
    }

    /// `service` tokens with subject `name`, minted by `signer`.
    pub fn minted(signer: Signer, name: &str) -> Self {
        Self(Some(Arc::new(Source::Minted {
            signer,
            name: name.into(),
            cached: Mutex::new(None),
        })))
    }

    /// The `authorization` value to send, if any.
    pub fn authorization(&self) -> Option<MetadataValue<Ascii>> {
        match self.0.as_deref()? {
            Source::Fixed(value) => Some(value.clone()),
            Source::Minted { signer, name, cached } => {
                let mut cached = cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = now_secs();
                if let Some((value, exp)) = cached.as_ref()
                    && now + REMINT_BEFORE < *exp
                {
                    return Some(value.clone());
                }
                match signer.mint(Role::Service, Some(name), None, MINTED_TTL) {
                    Ok(token) => {
                        let value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
                        *cached = Some((value.clone(), now + MINTED_TTL.as_secs()));
                        Some(value)
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot mint the service token; calling without one");
                        None
                    }
                }
            }
        }
    }
}
