//! A token issuer for the auth tests: keys generated here (RSA, P-256,
//! Ed25519), tokens signed with them, and a JWKS server on 127.0.0.1 whose
//! document, availability and fetch count the test controls.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "orders-api";

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RSA key pair `which` (0 or 1) of this test binary: generated once each,
/// since generation is the slow part. The second is for rotation and
/// forged signatures.
fn rsa_pair(which: usize) -> &'static (Vec<u8>, Value) {
    static PAIRS: [OnceLock<(Vec<u8>, Value)>; 2] = [OnceLock::new(), OnceLock::new()];
    PAIRS[which].get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
        let jwk = json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())});
        (der, jwk)
    })
}

fn with_kid(mut jwk: Value, kid: &str, alg: &str) -> Value {
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg);
    jwk["use"] = json!("sig");
    jwk
}

impl SigningKey {
    pub fn rsa(kid: &str) -> Self {
        Self::rsa_from(rsa_pair(0), kid)
    }

    /// Another RSA key (different modulus).
    pub fn rsa_other(kid: &str) -> Self {
        Self::rsa_from(rsa_pair(1), kid)
    }

    fn rsa_from(pair: &(Vec<u8>, Value), kid: &str) -> Self {
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&pair.0),
            jwk: with_kid(pair.1.clone(), kid, "RS256"),
        }
    }

    pub fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        // Uncompressed point: 0x04 || x || y.
        let jwk =
            json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: with_kid(jwk, kid, "ES256"),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key_raw())});
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            jwk: with_kid(jwk, kid, "EdDSA"),
        }
    }

    /// A token with `claims` merged over valid defaults (issuer, audience,
    /// an hour to live, subject `alice`).
    pub fn token(&self, claims: Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.token_with(header, claims)
    }

    pub fn token_with(&self, header: Header, claims: Value) -> String {
        jsonwebtoken::encode(&header, &merged(claims), &self.encoding).unwrap()
    }
}

/// Valid default claims with `claims` on top; a `null` removes a claim.
pub fn merged(claims: Value) -> Value {
    let now = now();
    let mut all =
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 3600, "iat": now});
    for (name, value) in claims.as_object().cloned().unwrap_or_default() {
        if value.is_null() {
            all.as_object_mut().unwrap().remove(&name);
        } else {
            all[name] = value;
        }
    }
    all
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Unpadded base64url, for hand-made tokens.
pub fn encode_part(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

/// A JWKS endpoint the test controls.
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<JwksState>,
}

struct JwksState {
    keys: Mutex<Vec<Value>>,
    up: AtomicBool,
    fetches: AtomicUsize,
}

impl JwksServer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(JwksState {
            keys: Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let state = state.clone();
                        async move {
                            state.fetches.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = if state.up.load(Ordering::SeqCst) {
                                let keys = state.keys.lock().unwrap().clone();
                                (200, json!({ "keys": keys }).to_string())
                            } else {
                                (503, "down".to_owned())
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` fetches were answered.
    pub async fn wait_fetches(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.fetches() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the JWKS was fetched {} times, waited for {n}",
                self.fetches()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
