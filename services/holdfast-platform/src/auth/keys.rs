//! Keys: the verification keys of a JWKS (RS256, ES256 on P-256, EdDSA on Ed25519; no
//! symmetric keys), the Ed25519 signing key that mints tokens, and `holdfast dev`'s own
//! signing key, generated once in its data dir and reused on every restart.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::KeyPair as _;

use super::AuthError;
use super::claims::{Claims, Role};

/// Issuer of the tokens `holdfast dev` mints.
pub const DEV_ISSUER: &str = "holdfast-dev";
/// Audience of the tokens `holdfast dev` mints (and the default `--auth-audience`).
pub const DEV_AUDIENCE: &str = "holdfast";
/// Key id of the dev key.
const DEV_KID: &str = "holdfast-dev";

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid`, when the JWKS names one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// The keys tokens are verified against.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (k.kid.clone(), k.algorithm)).collect();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys of other types (symmetric `oct`,
    /// other curves) are refused: a JWKS naming only those is an error.
    pub fn from_jwks(json: &str) -> Result<Self, AuthError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| AuthError::Key(format!("JWKS: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            keys.push(verify_key(jwk)?);
        }
        if keys.is_empty() {
            return Err(AuthError::Key("the JWKS holds no keys".into()));
        }
        Ok(Self { keys })
    }

    /// Reads a JWKS file.
    pub fn from_jwks_file(path: &Path) -> Result<Self, AuthError> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Key(format!("reading JWKS {}: {e}", path.display())))?;
        Self::from_jwks(&json)
    }

    /// The keys that may verify a token whose header says `kid` and `alg`.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> impl Iterator<Item = &VerifyKey> {
        self.keys.iter().filter(move |k| {
            k.algorithm == alg && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
        })
    }
}

fn verify_key(jwk: &Jwk) -> Result<VerifyKey, AuthError> {
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        other => {
            return Err(AuthError::Key(format!(
                "unsupported JWK {other:?}: RSA (RS256), EC P-256 (ES256) or OKP Ed25519 (EdDSA) only"
            )));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Key(format!("JWK: {e}")))?;
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}

/// Mints tokens with an Ed25519 key (EdDSA).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    kid: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer over an Ed25519 PKCS#8 DER key.
    pub fn from_ed25519_pkcs8(
        pkcs8: &[u8],
        kid: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, AuthError> {
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| AuthError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(Self {
            key: EncodingKey::from_ed_der(pkcs8),
            kid: kid.into(),
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// Reads an Ed25519 PKCS#8 DER key file (as `holdfast dev` writes it).
    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        let der =
            std::fs::read(path).map_err(|e| AuthError::Key(format!("reading {}: {e}", path.display())))?;
        Self::from_ed25519_pkcs8(&der, DEV_KID, issuer, audience)
    }

    /// A token for `role`, valid for `ttl`.
    pub fn mint(
        &self,
        role: Role,
        subject: Option<&str>,
        session: Option<&str>,
        ttl: std::time::Duration,
    ) -> Result<String, AuthError> {
        let now = now_secs();
        self.mint_claims(&Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs(),
            iat: now,
            sub: subject.map(String::from),
            role,
            sid: session.map(String::from),
        })
    }

    /// A token with exactly `claims` (tests mint expired or foreign ones with it).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| AuthError::Key(format!("signing: {e}")))
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `holdfast dev`'s signing key: Ed25519, PKCS#8 DER in `<data-dir>/auth/dev-signing-key.der`
/// (mode 0600), with its public half as a JWKS next to it (`dev-jwks.json`), so a
/// `holdfast serve` can be pointed at the same pair.
#[derive(Debug, Clone)]
pub struct DevKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    dir: PathBuf,
}

impl DevKey {
    /// Where the key lives under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("auth").join("dev-signing-key.der")
    }

    /// Loads the key from `data_dir`, generating and persisting it on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, AuthError> {
        let path = Self::path(data_dir);
        if path.exists() {
            return Self::load(data_dir);
        }
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| AuthError::Key(format!("generating the dev key: {e}")))?;
        let dir = path.parent().unwrap_or(data_dir).to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| AuthError::Key(format!("creating {}: {e}", dir.display())))?;
        write_private(&path, pkcs8.as_ref())?;
        let key = Self::from_pkcs8(pkcs8.as_ref().to_vec(), dir)?;
        let jwks = dir_file(&key.dir, "dev-jwks.json");
        std::fs::write(&jwks, key.jwks())
            .map_err(|e| AuthError::Key(format!("writing {}: {e}", jwks.display())))?;
        Ok(key)
    }

    /// Loads the key `holdfast dev` generated in `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Self, AuthError> {
        let path = Self::path(data_dir);
        let pkcs8 = std::fs::read(&path).map_err(|e| {
            AuthError::Key(format!(
                "reading the dev key {} (start `holdfast dev` with this --data-dir once): {e}",
                path.display()
            ))
        })?;
        Self::from_pkcs8(pkcs8, path.parent().unwrap_or(data_dir).to_path_buf())
    }

    fn from_pkcs8(pkcs8: Vec<u8>, dir: PathBuf) -> Result<Self, AuthError> {
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| AuthError::Key(format!("the dev key is not Ed25519 PKCS#8: {e}")))?;
        Ok(Self {
            public: pair.public_key().as_ref().to_vec(),
            pkcs8,
            dir,
        })
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> String {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public);
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": DEV_KID, "x": x}]})
            .to_string()
    }

    /// The keys that verify this key's tokens.
    pub fn key_set(&self) -> KeySet {
        KeySet {
            keys: vec![VerifyKey {
                kid: Some(DEV_KID.into()),
                algorithm: Algorithm::EdDSA,
                key: DecodingKey::from_ed_der(&self.public),
            }],
        }
    }

    /// A signer minting dev tokens (issuer [`DEV_ISSUER`], audience [`DEV_AUDIENCE`]).
    pub fn signer(&self) -> Signer {
        Signer {
            key: EncodingKey::from_ed_der(&self.pkcs8),
            kid: DEV_KID.into(),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
        }
    }
}

fn dir_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AuthError::Key(format!("writing {}: {e}", path.display())))?;
    file.write_all(bytes)
        .map_err(|e| AuthError::Key(format!("writing {}: {e}", path.display())))
}
