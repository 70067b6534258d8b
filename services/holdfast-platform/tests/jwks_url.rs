//! `--auth-jwks` by URL against a tiny HTTP server started here (a tokio listener serving
//! whatever JWKS the test puts up): keys rotated at the issuer are picked up on an unknown
//! `kid` and by the periodic refresh, a failed refresh keeps the last good keys, and a URL
//! that does not answer a JWKS at start is a configuration error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use holdfast_platform::auth::remote::RefreshPolicy;
use holdfast_platform::auth::{RemoteJwks, Role, Signer, Verifier};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "holdfast";

/// What the server answers: status and body.
#[derive(Clone)]
struct Served(Arc<Mutex<(u16, String)>>, Arc<AtomicUsize>);

impl Served {
    fn set(&self, status: u16, body: &str) {
        *self.0.lock().expect("lock") = (status, body.to_string());
    }

    fn requests(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }
}

/// Serves `Served` over HTTP/1.1 on a free port; answers the URL.
async fn serve(initial: &str) -> (String, Served) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    let served = Served(
        Arc::new(Mutex::new((200, initial.to_string()))),
        Arc::new(AtomicUsize::new(0)),
    );
    let state = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(request.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
                let (status, body) = state.0.lock().expect("lock").clone();
                state.1.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, served)
}

/// A fresh Ed25519 key: its signer and its JWK.
fn key(kid: &str) -> (Signer, serde_json::Value) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .expect("pair")
        .public_key()
        .as_ref()
        .to_vec();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid, "x": x});
    (
        Signer::from_ed25519_pkcs8(pkcs8.as_ref(), kid, ISSUER, AUDIENCE).expect("signer"),
        jwk,
    )
}

fn jwks(keys: &[&serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

fn token(signer: &Signer) -> String {
    signer
        .mint(Role::Customer, Some("c1"), None, Duration::from_secs(60))
        .expect("mint")
}

/// Polls `condition` until it holds or 10 s pass.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_key_rotated_at_the_issuer_is_accepted_after_an_unknown_kid_fetches_again() {
    let (old, old_jwk) = key("k1");
    let (new, new_jwk) = key("k2");
    let (url, served) = serve(&jwks(&[&old_jwk])).await;
    let policy = RefreshPolicy {
        every: Duration::from_secs(3600),
        min_refetch: Duration::ZERO,
    };
    let remote = RemoteJwks::start(&url, None, policy).await.expect("first fetch");
    let verifier = Verifier::remote(remote, ISSUER, AUDIENCE, Duration::ZERO);
    assert_eq!(
        verifier.verify(&token(&old)).expect("old key").subject.as_deref(),
        Some("c1")
    );
    let new_token = token(&new);
    assert!(verifier.verify(&new_token).is_err(), "k2 is not published yet");

    served.set(200, &jwks(&[&new_jwk]));
    // Each refusal of the unknown kid asks for an early fetch; one of them finds k2.
    eventually("a token signed by the rotated key verifies", || {
        verifier.verify(&new_token).is_ok()
    })
    .await;
    assert!(
        verifier.verify(&token(&old)).is_err(),
        "k1 was withdrawn at the issuer"
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_keys_and_the_period_picks_up_new_ones() {
    let (old, old_jwk) = key("k1");
    let (new, new_jwk) = key("k2");
    let (url, served) = serve(&jwks(&[&old_jwk])).await;
    let policy = RefreshPolicy {
        every: Duration::from_millis(50),
        // Early fetches effectively off: only the period fetches here.
        min_refetch: Duration::from_secs(3600),
    };
    let remote = RemoteJwks::start(&url, None, policy).await.expect("first fetch");
    let verifier = Verifier::remote(remote.clone(), ISSUER, AUDIENCE, Duration::ZERO);
    let old_token = token(&old);
    assert!(verifier.verify(&old_token).is_ok());

    for (status, body) in [(500, "oops"), (200, "not json"), (200, r#"{"keys":[]}"#)] {
        let seen = served.requests();
        served.set(status, body);
        eventually("two refreshes against the broken endpoint", || {
            served.requests() >= seen + 2
        })
        .await;
        assert!(
            verifier.verify(&old_token).is_ok(),
            "the last good keys stay after a refresh answered {status} {body:?}"
        );
    }

    let seen = served.requests();
    served.set(200, &jwks(&[&old_jwk, &new_jwk]));
    eventually("a refresh after the rotation", || served.requests() >= seen + 2).await;
    assert!(
        verifier.verify(&token(&new)).is_ok(),
        "the periodic refresh found k2"
    );
    assert!(verifier.verify(&old_token).is_ok(), "k1 is still published");
}

#[tokio::test]
async fn unknown_kids_fetch_early_at_most_once_per_interval() {
    let (_, jwk) = key("k1");
    let (forger, _) = key("forged");
    let (url, served) = serve(&jwks(&[&jwk])).await;
    let policy = RefreshPolicy {
        every: Duration::from_secs(3600),
        min_refetch: Duration::from_secs(3600),
    };
    let remote = RemoteJwks::start(&url, None, policy).await.expect("first fetch");
    let verifier = Verifier::remote(remote, ISSUER, AUDIENCE, Duration::ZERO);
    assert_eq!(served.requests(), 1);
    for _ in 0..100 {
        assert!(verifier.verify(&token(&forger)).is_err());
    }
    eventually("the one early fetch", || served.requests() == 2).await;
    for _ in 0..100 {
        assert!(verifier.verify(&token(&forger)).is_err());
    }
    // Within the interval no early fetch is asked for at all (the refresher only wakes on
    // one), so the count is final.
    assert_eq!(
        served.requests(),
        2,
        "a flood of unknown kids fetched more than once"
    );
}

#[tokio::test]
async fn a_jwks_url_that_does_not_answer_keys_at_start_is_a_configuration_error() {
    let (url, served) = serve("").await;
    let policy = RefreshPolicy {
        every: Duration::from_secs(3600),
        min_refetch: Duration::from_secs(10),
    };
    served.set(404, "no such page");
    let error = RemoteJwks::start(&url, None, policy).await.expect_err("404");
    assert!(error.to_string().contains("HTTP 404"), "{error}");
    served.set(200, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#);
    assert!(
        RemoteJwks::start(&url, None, policy).await.is_err(),
        "symmetric keys refused"
    );
    // Nothing listens on port 9 of localhost.
    assert!(
        RemoteJwks::start("http://127.0.0.1:9/jwks", None, policy)
            .await
            .is_err()
    );
    assert!(RemoteJwks::start("ftp://idp/jwks", None, policy).await.is_err());
}
