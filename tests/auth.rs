//! JWT auth over real sockets: keys generated here (RSA, P-256, Ed25519),
//! served by a JWKS endpoint inside the test, tokens checked by rgate in
//! front of an echoing upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/jwt.rs"]
mod jwt;

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::*;
use jsonwebtoken::{Algorithm, Header};
use jwt::*;
use serde_json::json;

/// GET /api/x with `token` on an open connection.
async fn bearer(client: &mut Client, token: &str) -> (u16, http::HeaderMap, Bytes) {
    let auth = format!("Bearer {token}");
    read(
        client
            .send(request_with("/api/x", &[("authorization", &auth)]))
            .await,
    )
    .await
}

async fn with_token(gw: &TestGateway, path: &str, token: &str) -> (u16, http::HeaderMap, Bytes) {
    fetch_with(
        gw.addr,
        path,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// A provider `main` on `jwks_url`, routes `/api` (token required, `sub`
/// and `tenant` forwarded) and `/open` (token optional).
fn config(upstream: std::net::SocketAddr, jwks_url: &str, provider_extra: &str) -> String {
    format!(
        "jwt:\n  - name: main\n    issuer: {ISSUER}\n    jwks_url: {jwks_url}\n    audiences: [{AUDIENCE}]\n\
         \x20   algorithms: [RS256, ES256, EdDSA]\n    forward_claims: {{sub: X-User-Id, tenant: X-Tenant-Id}}\n{provider_extra}\
         routes:\n  - {{path_prefix: /api, backend: a, auth: {{provider: main}}}}\n\
         \x20 - {{path_prefix: /open, backend: a, auth: {{provider: main, required: false}}}}\n\
         backends:\n  - {{name: a, servers: [\"{upstream}\"]}}\n"
    )
}

/// Waits until a request with `token` passes: the provider's first fetch has landed.
async fn until_keys(gw: &TestGateway, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = with_token(gw, "/api/ready", token).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no keys after 10 s: {status} {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn valid_tokens_pass_with_their_identity_and_forged_fields_never_do() {
    let up = named_upstream("a", |_| {}).await;
    let (rsa, ec, ed) = (
        SigningKey::rsa("rsa-1"),
        SigningKey::ec("ec-1"),
        SigningKey::ed25519("ed-1"),
    );
    let issuer = JwksServer::start(&[&rsa, &ec, &ed]).await;
    let gw = TestGateway::start(&config(up.addr(), &issuer.url(), ""));
    until_keys(&gw, &rsa.token(json!({}))).await;

    for key in [&rsa, &ec, &ed] {
        let token = key.token(json!({"sub": format!("user-{}", key.kid), "tenant": 42}));
        let forged = format!("Bearer {token}");
        let (status, _, body) = fetch_with(
            gw.addr,
            "/api/orders",
            &[
                ("authorization", forged.as_str()),
                ("x-user-id", "admin"),
                ("x-tenant-id", "0"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{}: {body:?}", key.kid);
        let seen = &json(&body)["headers"];
        assert_eq!(seen["x-user-id"], format!("user-{}", key.kid));
        assert_eq!(seen["x-tenant-id"], "42", "non-string claims as JSON text");
        assert!(
            seen.get("authorization").is_none(),
            "the token is not forwarded"
        );
    }

    // Optional auth: anonymous passes, but forged identity fields are removed.
    let (status, _, body) = fetch_with(gw.addr, "/open/x", &[("x-user-id", "admin")]).await;
    assert_eq!(status, 200);
    assert!(json(&body)["headers"].get("x-user-id").is_none());
    // ...and a token that is present must still be valid.
    let expired = rsa.token(json!({"exp": now() - 3600}));
    let (status, _, _) = with_token(&gw, "/open/x", &expired).await;
    assert_eq!(status, 401);

    // Required auth without a token: 401 and a bare challenge (RFC 6750 §3.1).
    let before = up.requests();
    let (status, headers, body) =
        fetch_with(gw.addr, "/api/orders", &[("x-user-id", "admin")]).await;
    assert_eq!(status, 401);
    assert_eq!(&body[..], br#"{"error":"unauthorized"}"#);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(
        up.requests(),
        before,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn every_bad_token_is_refused_and_wrong_audiences_are_forbidden() {
    let up = named_upstream("a", |_| {}).await;
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let issuer = JwksServer::start(&[&rsa, &ec]).await;
    let gw = TestGateway::start(&config(up.addr(), &issuer.url(), "    leeway: 5s\n"));
    until_keys(&gw, &rsa.token(json!({}))).await;
    let before = up.requests();

    // Signed by a key rgate does not have, under a published kid.
    let forged = SigningKey::rsa_other("rsa-1").token(json!({}));
    // HS256 with the RSA public key as the secret: algorithm confusion.
    let n = rsa.jwk["n"].as_str().unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &merged(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    // `alg: none`, hand-made.
    let none = format!(
        "{}.{}.",
        encode_part(&json!({"alg": "none", "kid": "rsa-1"})),
        encode_part(&merged(json!({})))
    );
    // An EC token claiming to be RS256 with the EC key's kid.
    let mut lying = Header::new(Algorithm::ES256);
    lying.kid = Some("rsa-1".into());
    let alg_mismatch = ec.token_with(lying, json!({}));
    let unknown_kid = SigningKey::rsa("nobody").token(json!({}));
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(20_000),
        "b".repeat(10),
        "c".repeat(10)
    );

    let cases = [
        ("expired", rsa.token(json!({"exp": now() - 60}))),
        ("not yet valid", rsa.token(json!({"nbf": now() + 600}))),
        ("no exp", rsa.token(json!({"exp": null}))),
        (
            "wrong issuer",
            rsa.token(json!({"iss": "https://evil.test"})),
        ),
        ("no issuer", rsa.token(json!({"iss": null}))),
        ("forged signature", forged),
        ("alg confusion", confused),
        ("alg none", none),
        ("alg mismatch", alg_mismatch),
        ("unknown kid", unknown_kid),
        ("garbage", "not-a-token".into()),
        ("two parts", "a.b".into()),
        ("bad base64", "!!!.###.$$$".into()),
        ("huge", huge),
        ("empty parts", "..".into()),
    ];
    for (what, token) in &cases {
        let (status, headers, body) = with_token(&gw, "/api/x", token).await;
        assert_eq!(status, 401, "{what}: {body:?}");
        assert_eq!(&body[..], br#"{"error":"unauthorized"}"#, "{what}");
        assert_eq!(
            headers["www-authenticate"], r#"Bearer error="invalid_token""#,
            "{what}"
        );
    }
    // Within the leeway, expiry is forgiven.
    let (status, _, _) = with_token(&gw, "/api/x", &rsa.token(json!({"exp": now() - 2}))).await;
    assert_eq!(status, 200, "within the leeway");

    // Valid signature, another audience (or none): 403.
    for claims in [json!({"aud": "billing-api"}), json!({"aud": null})] {
        let (status, _, body) = with_token(&gw, "/api/x", &rsa.token(claims.clone())).await;
        assert_eq!(status, 403, "{claims}");
        assert_eq!(&body[..], br#"{"error":"forbidden"}"#);
    }
    assert_eq!(
        up.requests(),
        before + 1,
        "only the token within the leeway got through"
    );

    // The process keeps serving.
    let (status, _, _) = with_token(&gw, "/api/x", &ec.token(json!({}))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rotation_under_load_fetches_once_and_fails_nothing() {
    let up = named_upstream("a", |_| {}).await;
    let old = SigningKey::rsa("2026-old");
    let new = SigningKey::ec("2026-new");
    let issuer = JwksServer::start(&[&old]).await;
    // A long refresh: only an unknown kid can cause the second fetch.
    let gw = TestGateway::start(&config(up.addr(), &issuer.url(), "    refresh: 1h\n"));
    until_keys(&gw, &old.token(json!({}))).await;
    assert_eq!(issuer.fetches(), 1);

    issuer.publish(&[&old, &new]);
    let old_token = old.token(json!({}));
    let new_token = new.token(json!({}));
    let addr = gw.addr;
    // Bounded load: 4 clients × 50 requests, old and new tokens interleaved.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (old_token, new_token) = (old_token.clone(), new_token.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut worst = Duration::ZERO;
                for i in 0..50 {
                    let token = if (i + c) % 2 == 0 {
                        &old_token
                    } else {
                        &new_token
                    };
                    let started = Instant::now();
                    let (status, _, body) = bearer(&mut client, token).await;
                    worst = worst.max(started.elapsed());
                    assert_eq!(status, 200, "client {c} request {i}: {body:?}");
                }
                worst
            })
        })
        .collect();
    for client in clients {
        let worst = client.await.unwrap();
        assert!(
            worst < Duration::from_millis(1500),
            "a request stalled {worst:?}"
        );
    }
    assert_eq!(issuer.fetches(), 2, "the new kid caused exactly one fetch");

    // The old key leaves the set: its tokens keep working until rgate
    // refetches, which only a new unknown kid (or the refresh) causes.
    issuer.publish(&[&new]);
    let (status, _, _) = with_token(&gw, "/api/x", &old_token).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_kids_cannot_hammer_the_issuer() {
    let up = named_upstream("a", |_| {}).await;
    let key = SigningKey::rsa("k1");
    let issuer = JwksServer::start(&[&key]).await;
    let gw = TestGateway::start(&config(up.addr(), &issuer.url(), "    refresh: 1h\n"));
    until_keys(&gw, &key.token(json!({}))).await;
    let first = issuer.fetches();
    let addr = gw.addr;
    let started = Instant::now();
    let floods: Vec<_> = (0..40)
        .map(|i| {
            let token = SigningKey::rsa(&format!("junk-{i}")).token(json!({}));
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let started = Instant::now();
                let (status, _, _) = bearer(&mut client, &token).await;
                (status, started.elapsed())
            })
        })
        .collect();
    for flood in floods {
        let (status, took) = flood.await.unwrap();
        assert_eq!(status, 401);
        assert!(took < Duration::from_millis(1500), "waited {took:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        issuer.fetches() - first,
        1,
        "40 junk kids at once: one fetch (single flight, and at most one per 5 s)"
    );
}

#[tokio::test]
async fn the_issuer_down_keeps_the_last_keys_and_no_keys_answers_503() {
    let up = named_upstream("a", |_| {}).await;
    let key = SigningKey::rsa("k1");
    let issuer = JwksServer::start(&[&key]).await;
    let gw = TestGateway::start(&config(up.addr(), &issuer.url(), "    refresh: 1s\n"));
    let token = key.token(json!({}));
    until_keys(&gw, &token).await;

    issuer.set_up(false);
    let failed_from = issuer.fetches();
    issuer.wait_fetches(failed_from + 2).await;
    let (status, _, _) = with_token(&gw, "/api/x", &token).await;
    assert_eq!(
        status, 200,
        "stale keys keep serving while the issuer is down"
    );

    // Back up with a new key: picked up by the background refresh.
    let next = SigningKey::ec("k2");
    issuer.publish(&[&key, &next]);
    issuer.set_up(true);
    until_keys(&gw, &next.token(json!({}))).await;

    // A provider that never had keys cannot judge a token: 503, never a hang.
    let down = closed_port().await;
    let never = TestGateway::start(&config(up.addr(), &format!("http://{down}/jwks.json"), ""));
    let started = Instant::now();
    let (status, headers, body) = with_token(&never, "/api/x", &token).await;
    assert_eq!(status, 503);
    assert_eq!(&body[..], br#"{"error":"auth_unavailable"}"#);
    assert_eq!(headers["retry-after"], "1");
    let (status, _, _) = fetch_with(never.addr, "/api/x", &[]).await;
    assert_eq!(status, 401, "no token: unauthorized, keys or not");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn shared_secrets_and_local_key_files_verify_too() {
    let up = named_upstream("a", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "an HMAC secret of at least thirty-two bytes";
    std::fs::write(dir.path().join("secret"), format!("{secret}\n")).unwrap();
    let key = SigningKey::ed25519("file-1");
    std::fs::write(
        dir.path().join("jwks.json"),
        json!({"keys": [key.jwk]}).to_string(),
    )
    .unwrap();
    let path = dir.path().join("rgate.yml");
    std::fs::write(
        &path,
        format!(
            "jwt:\n  - {{name: hs, issuer: {ISSUER}, secret_file: secret}}\n\
             \x20 - {{name: file, issuer: {ISSUER}, jwks_file: jwks.json, algorithms: [EdDSA]}}\n\
             routes:\n  - {{path_prefix: /hs, backend: a, auth: {{provider: hs}}}}\n\
             \x20 - {{path_prefix: /file, backend: a, auth: {{provider: file}}}}\n\
             backends:\n  - {{name: a, servers: [\"{}\"]}}\n",
            up.addr()
        ),
    )
    .unwrap();
    let gw = TestGateway::start_file(&path);
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &merged(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let (status, _, body) = with_token(&gw, "/hs/x", &hs).await;
    assert_eq!(status, 200, "{body:?}");
    let (status, _, _) = with_token(&gw, "/file/x", &key.token(json!({}))).await;
    assert_eq!(status, 200, "a jwks_file serves from the first request");
    // Another provider's token, and a public-key token on the HMAC route.
    let (status, _, _) = with_token(&gw, "/file/x", &hs).await;
    assert_eq!(status, 401);
    let (status, _, _) = with_token(&gw, "/hs/x", &key.token(json!({}))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_rate_limit_keyed_by_a_claim_counts_each_subject() {
    let up = named_upstream("a", |_| {}).await;
    let key = SigningKey::rsa("k1");
    let issuer = JwksServer::start(&[&key]).await;
    let gw = TestGateway::start(&format!(
        "jwt:\n  - {{name: main, issuer: {ISSUER}, jwks_url: \"{}\"}}\n\
         routes:\n  - path_prefix: /\n    backend: a\n    auth: {{provider: main}}\n\
         \x20   rate_limit: {{requests: 2, per: 1m, key: \"claim:sub\"}}\n\
         backends:\n  - {{name: a, servers: [\"{}\"]}}\n",
        issuer.url(),
        up.addr()
    ));
    let alice = key.token(json!({"sub": "alice"}));
    let bob = key.token(json!({"sub": "bob"}));
    // The first call may wait for the keys; it still counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_token(&gw, "/x", &alice).await.0 == 503 {
        assert!(Instant::now() < deadline, "no keys after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(with_token(&gw, "/x", &alice).await.0, 200);
    let (status, headers, _) = with_token(&gw, "/x", &alice).await;
    assert_eq!(status, 429, "alice's two are used");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(with_token(&gw, "/x", &bob).await.0, 200, "bob has his own");
    // A refused token is refused before the limit: it spends nothing.
    assert_eq!(with_token(&gw, "/x", "junk").await.0, 401);
}
