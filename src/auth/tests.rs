use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use proptest::prelude::*;
use serde_json::json;

use super::keys::KeySet;
use super::*;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base(algorithms: &[Algorithm]) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.to_vec();
    validation.validate_aud = false;
    validation.set_issuer(&["iss"]);
    validation
}

/// An Ed25519 key pair: (JWK, signing key).
fn ed_key(kid: &str) -> (serde_json::Value, EncodingKey) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key_raw()), "kid": kid});
    (jwk, EncodingKey::from_ed_der(&pair.serialize_der()))
}

fn provider(algorithms: &[Algorithm], keys: Option<KeySet>) -> Provider {
    let provider = Provider::new(
        "p".into(),
        String::new(),
        KeySource::Url("http://127.0.0.1:1/jwks".parse().unwrap()),
        Duration::from_secs(600),
        base(algorithms),
        Box::default(),
        false,
    );
    provider.set_keys(keys.map(Arc::new));
    provider
}

fn token(kid: Option<&str>, key: &EncodingKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn claims() -> serde_json::Value {
    json!({"iss": "iss", "exp": 4_000_000_000u64, "sub": "alice"})
}

#[test]
fn bearer_tokens_are_read_from_the_authorization_field() {
    let mut headers = HeaderMap::new();
    assert_eq!(bearer_token(&headers), None);
    for (value, expected) in [
        ("Bearer abc", Some("abc")),
        ("bearer abc", Some("abc")),
        ("BEARER  abc ", Some("abc")),
        ("Basic abc", None),
        ("Bearer ", None),
        ("Bearer", None),
    ] {
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        assert_eq!(bearer_token(&headers), expected, "{value:?}");
    }
}

#[test]
fn claims_become_header_values_when_they_can() {
    assert_eq!(claim_value(&json!("alice")).unwrap(), "alice");
    assert_eq!(claim_value(&json!(42)).unwrap(), "42");
    assert_eq!(claim_value(&json!(["a", "b"])).unwrap(), r#"["a","b"]"#);
    assert_eq!(claim_value(&json!(null)), None);
    assert_eq!(claim_value(&json!("line\nbreak")), None);
}

#[test]
fn keys_carry_only_the_algorithms_of_their_type() {
    let (ed, _) = ed_key("ed");
    let rsa = json!({"kty": "RSA", "kid": "rsa", "n": b64(&[0xc5; 256]), "e": "AQAB"});
    let ec_p384 =
        json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": b64(&[1; 48]), "y": b64(&[2; 48])});
    let document = json!({"keys": [
        ed,
        rsa,
        ec_p384,
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(&[0xc5; 256]), "e": "AQAB"},
        {"kty": "oct", "kid": "secret", "k": b64(b"published secrets are ignored")},
        {"kty": "RSA", "kid": "named", "alg": "PS256", "n": b64(&[0xc5; 256]), "e": "AQAB"},
        {"kty": "XYZ", "kid": "unknown-type"},
        "not even an object"
    ]});
    let all = [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ];
    let set = KeySet::from_jwks(document.to_string().as_bytes(), &base(&all)).unwrap();
    let algs = |kid: &str| {
        set.keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .map(|k| k.validation.algorithms.clone())
    };
    assert_eq!(algs("ed"), Some(vec![Algorithm::EdDSA]));
    assert_eq!(algs("rsa"), Some(vec![Algorithm::RS256, Algorithm::PS256]));
    assert_eq!(
        algs("named"),
        Some(vec![Algorithm::PS256]),
        "the JWK's alg narrows"
    );
    assert_eq!(algs("p384"), None, "no ES384 in the provider's list");
    assert_eq!(algs("enc"), None);
    assert_eq!(algs("secret"), None);
    assert_eq!(set.keys.len(), 3);

    let only_es = base(&[Algorithm::ES256]);
    let refused = KeySet::from_jwks(
        json!({"keys": [rsa_jwk()]}).to_string().as_bytes(),
        &only_es,
    );
    assert!(matches!(
        refused,
        Err(keys::KeysError::NoUsableKey { skipped: 1 })
    ));
    assert!(matches!(
        KeySet::from_jwks(b"{\"not\":\"jwks\"}", &only_es),
        Err(keys::KeysError::NotJwks(_))
    ));
}

fn rsa_jwk() -> serde_json::Value {
    json!({"kty": "RSA", "kid": "rsa", "n": b64(&[0xc5; 256]), "e": "AQAB"})
}

#[tokio::test]
async fn verification_outcomes() {
    let (jwk, key) = ed_key("k1");
    let set = KeySet::from_jwks(
        json!({"keys": [jwk]}).to_string().as_bytes(),
        &base(&[Algorithm::EdDSA]),
    )
    .unwrap();
    let p = provider(&[Algorithm::EdDSA], Some(set));
    let verified = p.verify(&token(Some("k1"), &key, &claims())).await.unwrap();
    assert_eq!(verified.claims["sub"], "alice");
    // Without a kid, the key that verifies the algorithm.
    assert!(p.verify(&token(None, &key, &claims())).await.is_ok());
    let mut expired = claims();
    expired["exp"] = json!(1);
    assert_eq!(
        p.verify(&token(Some("k1"), &key, &expired)).await.err(),
        Some(Failure::Invalid("expired"))
    );
    let mut issuer = claims();
    issuer["iss"] = json!("other");
    assert_eq!(
        p.verify(&token(Some("k1"), &key, &issuer)).await.err(),
        Some(Failure::Invalid("issuer"))
    );
    let big = "a".repeat(MAX_TOKEN + 1);
    assert_eq!(
        p.verify(&big).await.err(),
        Some(Failure::Invalid("too_large"))
    );

    let no_keys = provider(&[Algorithm::EdDSA], None);
    assert_eq!(
        no_keys
            .verify(&token(Some("k1"), &key, &claims()))
            .await
            .err(),
        Some(Failure::Unavailable)
    );
}

#[tokio::test]
async fn verified_tokens_are_cached_per_worker_until_they_expire_or_keys_change() {
    let (jwk, key) = ed_key("k1");
    let document = json!({"keys": [jwk]}).to_string();
    let algs = [Algorithm::EdDSA];
    let p = provider(
        &algs,
        Some(KeySet::from_jwks(document.as_bytes(), &base(&algs)).unwrap()),
    );
    let token = token(Some("k1"), &key, &claims());
    let first = p.verify(&token).await.unwrap();
    let again = p.verify(&token).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the second is a cache hit");
    // A refreshed key set (even with the same keys) verifies once more.
    p.set_keys(Some(Arc::new(
        KeySet::from_jwks(document.as_bytes(), &base(&algs)).unwrap(),
    )));
    let after_refresh = p.verify(&token).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &after_refresh));
    // Another provider never takes this provider's entry.
    let other = provider(
        &algs,
        Some(KeySet::from_jwks(document.as_bytes(), &base(&algs)).unwrap()),
    );
    assert!(!Arc::ptr_eq(
        &other.verify(&token).await.unwrap(),
        &after_refresh
    ));
    // An expired entry is not served, whatever the cache holds.
    let keys = p.keys().unwrap();
    let stale = Arc::new(Verified {
        claims: Claims::new(),
        exp: cache::now_secs() - 100,
        nbf: None,
        fields: Box::default(),
    });
    cache::put(p.id, keys.clone(), "stale-token", stale, 16);
    assert!(cache::get(p.id, &keys, "stale-token", 30).is_none());
    assert!(
        cache::get(p.id, &keys, "stale-token", 200).is_some(),
        "within the leeway"
    );
}

#[test]
fn the_token_cache_is_bounded() {
    let keys = Arc::new(KeySet::default());
    let verified = Arc::new(Verified {
        claims: Claims::new(),
        exp: u64::MAX / 2,
        nbf: None,
        fields: Box::default(),
    });
    for i in 0..500 {
        cache::put(
            usize::MAX,
            keys.clone(),
            &format!("token-{i}"),
            verified.clone(),
            64,
        );
    }
    assert!(cache::len() <= 64, "{}", cache::len());
}

#[test]
fn unknown_kids_ask_for_one_fetch_per_interval() {
    let p = provider(&[Algorithm::EdDSA], Some(KeySet::default()));
    assert!(p.request_fetch(), "the first asks for a fetch");
    assert!(p.fetching.load(Ordering::Acquire));
    assert!(p.request_fetch(), "while it runs, others wait for it");
    // The fetch ends; another kid within MIN_REFETCH does not fetch again.
    p.fetching.store(false, Ordering::Release);
    assert!(!p.request_fetch());
}

#[test]
fn audience_failures_are_forbidden_and_the_rest_unauthorized() {
    assert_eq!(
        classify(&ErrorKind::InvalidAudience),
        Failure::Forbidden("audience")
    );
    assert_eq!(
        classify(&ErrorKind::MissingRequiredClaim("aud".into())),
        Failure::Forbidden("audience")
    );
    assert_eq!(
        classify(&ErrorKind::MissingRequiredClaim("exp".into())),
        Failure::Invalid("missing_claim")
    );
    assert_eq!(
        classify(&ErrorKind::InvalidSignature),
        Failure::Invalid("signature")
    );
    assert_eq!(
        classify(&ErrorKind::InvalidToken),
        Failure::Invalid("malformed")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Hostile tokens never panic and never pass.
    #[test]
    fn arbitrary_tokens_are_refused_without_panicking(
        parts in proptest::collection::vec("[A-Za-z0-9_\\-=+/!.]{0,300}", 0..5),
        header in "\\{[ -~]{0,80}\\}",
    ) {
        let (jwk, _) = ed_key("k1");
        let set = KeySet::from_jwks(
            json!({"keys": [jwk]}).to_string().as_bytes(),
            &base(&[Algorithm::EdDSA]),
        )
        .unwrap();
        let p = provider(&[Algorithm::EdDSA], Some(set));
        let joined = parts.join(".");
        let with_header = format!("{}.{}", b64(header.as_bytes()), joined);
        for candidate in [joined, with_header] {
            let outcome = p.verify_now(&candidate);
            prop_assert!(!matches!(outcome, Ok(Ok(_))));
        }
    }
}
