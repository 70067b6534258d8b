//! Token verification: signature against the [`KeySet`], then issuer, audience and expiry
//! (with a clock-skew allowance). Unsigned tokens (`alg: none`) and symmetric algorithms
//! never verify: the header parser knows no `none`, and no key is ever HMAC.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Validation;

use super::AuthError;
use super::claims::{Caller, Claims};
use super::keys::KeySet;
use super::remote::RemoteJwks;

/// Where the verification keys come from.
#[derive(Debug, Clone)]
enum Keys {
    /// Fixed for the process's life (a JWKS file, the dev key).
    Fixed(Arc<KeySet>),
    /// Fetched by URL and refreshed.
    Remote(Arc<RemoteJwks>),
}

/// Verifies bearer tokens.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Keys,
    issuer: String,
    audience: String,
    leeway: Duration,
}

impl Verifier {
    /// Tokens signed by one of `keys`, issued by `issuer` for `audience`; `leeway` is the
    /// clock skew allowed on `exp` and `nbf`.
    pub fn new(keys: KeySet, issuer: &str, audience: &str, leeway: Duration) -> Self {
        Self {
            keys: Keys::Fixed(Arc::new(keys)),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway,
        }
    }

    /// Like [`Verifier::new`], with the keys of a JWKS URL, kept fresh by `remote`.
    pub fn remote(remote: Arc<RemoteJwks>, issuer: &str, audience: &str, leeway: Duration) -> Self {
        Self {
            keys: Keys::Remote(remote),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway,
        }
    }

    /// The caller a token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::Invalid(format!("header: {e} (signed RS256, ES256 or EdDSA expected)"))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        let keys = match &self.keys {
            Keys::Fixed(keys) => keys.clone(),
            Keys::Remote(remote) => remote.keys(),
        };
        let mut last = None;
        for key in keys.candidates(header.kid.as_deref(), header.alg) {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims.into()),
                Err(e) => last = Some(e),
            }
        }
        Err(AuthError::Invalid(match last {
            Some(e) => e.to_string(),
            None => {
                // Keys may have rotated at the issuer: fetch again soon (rate-limited).
                if let (Keys::Remote(remote), Some(_)) = (&self.keys, &header.kid) {
                    remote.unknown_kid();
                }
                format!("no key for kid {:?} and alg {:?}", header.kid, header.alg)
            }
        }))
    }

    /// The bearer token of an `authorization` header value.
    pub fn bearer(value: &str) -> Result<&str, AuthError> {
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        Ok(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use holdfast_testkit::TempDir;

    use super::*;
    use crate::auth::claims::Role;
    use crate::auth::keys::{DEV_AUDIENCE, DEV_ISSUER, DevKey, Signer, now_secs};

    fn dev() -> (DevKey, Verifier, TempDir) {
        let dir = TempDir::new("auth").expect("temp dir");
        let key = DevKey::load_or_create(dir.path()).expect("dev key");
        let verifier = Verifier::new(key.key_set(), DEV_ISSUER, DEV_AUDIENCE, Duration::from_secs(30));
        (key, verifier, dir)
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: DEV_ISSUER.into(),
            aud: DEV_AUDIENCE.into(),
            exp,
            iat: now_secs(),
            sub: Some("c1".into()),
            role: Role::Customer,
            sid: None,
        }
    }

    fn refused(verifier: &Verifier, token: &str) -> String {
        match verifier.verify(token) {
            Ok(caller) => panic!("accepted {caller:?}"),
            Err(e) => {
                assert_eq!(
                    tonic::Status::from(e.clone_message()).code(),
                    tonic::Code::Unauthenticated
                );
                e.to_string()
            }
        }
    }

    impl AuthError {
        fn clone_message(&self) -> AuthError {
            match self {
                AuthError::Missing => AuthError::Missing,
                AuthError::Invalid(m) => AuthError::Invalid(m.clone()),
                AuthError::Key(m) => AuthError::Key(m.clone()),
            }
        }
    }

    #[test]
    fn a_dev_token_verifies_and_names_its_caller() {
        let (key, verifier, _dir) = dev();
        let token = key
            .signer()
            .mint(Role::Customer, Some("c1"), Some("s1"), Duration::from_secs(60))
            .expect("mint");
        let caller = verifier.verify(&token).expect("verifies");
        assert_eq!(
            (caller.role, caller.subject.as_deref(), caller.session.as_deref()),
            (Role::Customer, Some("c1"), Some("s1"))
        );
    }

    #[test]
    fn the_dev_key_is_persisted_and_reused() {
        let dir = TempDir::new("auth").expect("temp dir");
        let first = DevKey::load_or_create(dir.path()).expect("create");
        let token = first
            .signer()
            .mint(Role::Admin, Some("ops"), None, Duration::from_secs(60))
            .expect("mint");
        let again = DevKey::load_or_create(dir.path()).expect("reload");
        let verifier = Verifier::new(again.key_set(), DEV_ISSUER, DEV_AUDIENCE, Duration::ZERO);
        assert_eq!(verifier.verify(&token).expect("same key").role, Role::Admin);
        let jwks = std::fs::read_to_string(dir.path().join("auth/dev-jwks.json")).expect("jwks written");
        let from_file = Verifier::new(
            KeySet::from_jwks(&jwks).expect("parses"),
            DEV_ISSUER,
            DEV_AUDIENCE,
            Duration::ZERO,
        );
        assert!(
            from_file.verify(&token).is_ok(),
            "the written JWKS verifies the key's tokens"
        );
    }

    #[test]
    fn expired_tokens_are_refused_beyond_the_leeway_only() {
        let (key, verifier, _dir) = dev();
        let signer = key.signer();
        let within = signer.mint_claims(&claims(now_secs() - 10)).expect("mint");
        assert!(
            verifier.verify(&within).is_ok(),
            "10 s past exp is within 30 s of skew"
        );
        let expired = signer.mint_claims(&claims(now_secs() - 120)).expect("mint");
        assert!(refused(&verifier, &expired).contains("Expired"));
    }

    #[test]
    fn wrong_issuer_and_wrong_audience_are_refused() {
        let (key, verifier, _dir) = dev();
        let signer = key.signer();
        let mut c = claims(now_secs() + 60);
        c.iss = "someone-else".into();
        assert!(refused(&verifier, &signer.mint_claims(&c).expect("mint")).contains("Issuer"));
        let mut c = claims(now_secs() + 60);
        c.aud = "another-api".into();
        assert!(refused(&verifier, &signer.mint_claims(&c).expect("mint")).contains("Audience"));
    }

    #[test]
    fn unsigned_and_foreign_tokens_are_refused() {
        let (_key, verifier, _dir) = dev();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let payload = serde_json::to_string(&claims(now_secs() + 60)).expect("json");
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&payload));
        refused(&verifier, &none);
        let hs = format!("{}.{}.c2ln", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(&payload));
        assert!(refused(&verifier, &hs).contains("no key"));
        // Signed by another Ed25519 key under the same kid.
        let other_dir = TempDir::new("auth").expect("temp dir");
        let other = DevKey::load_or_create(other_dir.path()).expect("other key");
        let forged = other
            .signer()
            .mint_claims(&claims(now_secs() + 60))
            .expect("mint");
        refused(&verifier, &forged);
        refused(&verifier, "not-a-jwt");
    }

    #[test]
    fn es256_keys_from_a_jwks_verify_es256_tokens() {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("p256");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1",
            "x": b64(&point[1..33]), "y": b64(&point[33..65])}]})
        .to_string();
        let verifier = Verifier::new(
            KeySet::from_jwks(&jwks).expect("jwks"),
            "idp",
            "holdfast",
            Duration::ZERO,
        );
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("ec1".into());
        let mut c = claims(now_secs() + 60);
        c.iss = "idp".into();
        let token = jsonwebtoken::encode(
            &header,
            &c,
            &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
        .expect("sign");
        assert_eq!(
            verifier.verify(&token).expect("verifies").subject.as_deref(),
            Some("c1")
        );
        let _ = Signer::from_ed25519_pkcs8(pkcs8.as_ref(), "x", "i", "a").expect_err("not Ed25519");
    }

    #[test]
    fn rs256_keys_from_a_jwks_verify_rs256_tokens() {
        // A fixed 2048-bit test key, PKCS#1 (ring cannot generate RSA keys), and its JWKS.
        let pem = include_str!("testdata/rsa-test-key.pem");
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .expect("pem body");
        let jwks = include_str!("testdata/rsa-test-jwks.json");
        let verifier = Verifier::new(
            KeySet::from_jwks(jwks).expect("jwks"),
            "idp",
            "holdfast",
            Duration::ZERO,
        );
        let mut c = claims(now_secs() + 60);
        c.iss = "idp".into();
        let sign = |kid: &str, claims: &Claims| {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some(kid.into());
            let key = jsonwebtoken::EncodingKey::from_rsa_der(&der);
            jsonwebtoken::encode(&header, claims, &key).expect("sign")
        };
        let caller = verifier.verify(&sign("rsa1", &c)).expect("verifies");
        assert_eq!(
            (caller.role, caller.subject.as_deref()),
            (Role::Customer, Some("c1"))
        );
        refused(&verifier, &sign("other-kid", &c));
        let mut expired = c.clone();
        expired.exp = now_secs() - 120;
        refused(&verifier, &sign("rsa1", &expired));
        let mut foreign = c.clone();
        foreign.iss = "someone-else".into();
        refused(&verifier, &sign("rsa1", &foreign));
        // The same key's token relabelled as another algorithm does not verify either.
        let token = sign("rsa1", &c);
        let (_, rest) = token.split_once('.').expect("jwt");
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        refused(
            &verifier,
            &format!("{}.{rest}", b64(r#"{"alg":"ES256","kid":"rsa1"}"#)),
        );
    }

    #[test]
    fn symmetric_keys_are_refused_in_a_jwks() {
        let jwks = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(KeySet::from_jwks(jwks).is_err());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(Verifier::bearer("Bearer abc").expect("bearer"), "abc");
        assert_eq!(Verifier::bearer("bearer  abc ").expect("bearer"), "abc");
        assert!(Verifier::bearer("Basic abc").is_err());
        assert!(Verifier::bearer("Bearer ").is_err());
    }
}
