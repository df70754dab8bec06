//! `jwt` providers and route `auth`: what compiles and what is refused.

use std::path::Path;

use super::tests::{errors, refused};
use super::*;
use crate::auth::KeySource;

const BACKEND: &str = "backends:\n  - {name: b, servers: [\"127.0.0.1:1\"]}\n";

fn with(provider: &str, route: &str) -> String {
    format!("jwt:\n  - {provider}\nroutes:\n  - {route}\n{BACKEND}")
}

const URL: &str =
    "name: main, issuer: https://issuer.test, jwks_url: \"https://issuer.test/jwks.json\"";

#[test]
fn a_provider_and_a_route_using_it_compile() {
    let yaml = with(
        &format!("{{{URL}, audiences: [api], algorithms: [RS256, EdDSA], leeway: 5s, refresh: 1m, forward_claims: {{sub: X-User-Id}}}}"),
        "{path_prefix: /, backend: b, auth: {provider: main, required: false}, rate_limit: {requests: 1, per: 1s, key: \"claim:sub\"}}",
    );
    let config = parse(&yaml, Path::new("cfg.yml")).unwrap();
    let provider = &config.snapshot.providers[0];
    assert!(matches!(provider.source, KeySource::Url(_)));
    assert_eq!(
        provider.base.algorithms,
        [
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::EdDSA
        ]
    );
    assert_eq!(provider.base.leeway, 5);
    assert!(
        provider.keys().is_none(),
        "URL keys come from the background fetch"
    );
    let policy = config.snapshot.router.routes()[0].policy.as_ref().unwrap();
    let auth = policy.auth.as_ref().unwrap();
    assert!(!auth.required);
    assert_eq!(&*auth.provider.forward_claims[0].0, "sub");
    assert_eq!(
        policy.rate_limit.as_ref().unwrap().key,
        crate::policy::rate_limit::LimitKey::Claim("sub".into())
    );
}

#[test]
fn key_sources_are_exactly_one_and_must_be_usable() {
    let route = "{path_prefix: /, backend: b}";
    refused(
        &with("{name: m, issuer: i}", route),
        "jwt[0]",
        "exactly one of jwks_url, jwks_file, secret_file",
    );
    refused(
        &with(&format!("{{{URL}, secret_file: s}}"), route),
        "jwt[0]",
        "exactly one",
    );
    refused(
        &with("{name: m, issuer: i, jwks_url: \"ftp://x/jwks\"}", route),
        "jwt[0].jwks_url",
        "http:// or https://",
    );
    refused(
        &with(
            "{name: m, issuer: i, jwks_file: /nonexistent/jwks.json}",
            route,
        ),
        "jwt[0].jwks_file",
        "cannot read",
    );
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too short\n").unwrap();
    refused(
        &with(
            &format!(
                "{{name: m, issuer: i, secret_file: \"{}\"}}",
                short.display()
            ),
            route,
        ),
        "jwt[0].secret_file",
        "at least 32",
    );
}

#[test]
fn algorithms_never_mix_secrets_with_public_keys_and_never_none() {
    let route = "{path_prefix: /, backend: b}";
    refused(
        &with(&format!("{{{URL}, algorithms: [RS256, HS256]}}"), route),
        "jwt[0].algorithms[1]",
        "needs secret_file",
    );
    refused(
        &with(&format!("{{{URL}, algorithms: [none]}}"), route),
        "jwt[0].algorithms[0]",
        "unsigned tokens are never accepted",
    );
    refused(
        &with(&format!("{{{URL}, algorithms: [RS999]}}"), route),
        "jwt[0].algorithms[0]",
        "is not one of",
    );
    refused(
        &with(&format!("{{{URL}, algorithms: []}}"), route),
        "jwt[0].algorithms",
        "at least one",
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    refused(
        &with(
            &format!(
                "{{name: m, issuer: i, secret_file: \"{}\", algorithms: [ES256]}}",
                secret.display()
            ),
            route,
        ),
        "jwt[0].algorithms[0]",
        "HS256, HS384 or HS512 only",
    );
}

#[test]
fn routes_name_known_providers_and_claims_need_auth() {
    refused(
        &with(
            &format!("{{{URL}}}"),
            "{path_prefix: /, backend: b, auth: {provider: other}}",
        ),
        "routes[0].auth.provider",
        "unknown jwt provider \"other\"",
    );
    refused(
        &with(
            &format!("{{{URL}}}"),
            "{path_prefix: /, backend: b, rate_limit: {requests: 1, per: 1s, key: \"claim:sub\"}}",
        ),
        "routes[0].rate_limit.key",
        "needs the route to verify a token",
    );
    refused(
        &with(
            &format!("{{{URL}, forward_claims: {{sub: Content-Length}}}}"),
            "{path_prefix: /, backend: b}",
        ),
        "jwt[0].forward_claims.sub",
        "framing",
    );
    refused(
        &with(
            &format!("{{{URL}, forward_claims: {{sub: Authorization}}}}"),
            "{path_prefix: /, backend: b}",
        ),
        "jwt[0].forward_claims.sub",
        "cannot carry a claim",
    );
    // A provider refused for its own problems is not reported again by its routes.
    let problems = errors(&with(
        "{name: main, issuer: i}",
        "{path_prefix: /, backend: b, auth: {provider: main}}",
    ));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    // Two providers with one name.
    refused(
        &format!("jwt:\n  - {{{URL}}}\n  - {{{URL}}}\nroutes: []\n{BACKEND}"),
        "jwt[1].name",
        "duplicate provider name",
    );
}

#[test]
fn the_rate_limit_store_is_memory_or_redis() {
    let route = "{path_prefix: /, backend: b, name: r, rate_limit: {requests: 1, per: 1s}}";
    let yaml = |store: &str| format!("rate_limit_store: {store}\nroutes:\n  - {route}\n{BACKEND}");
    let memory = parse(&yaml("memory"), Path::new("cfg.yml")).unwrap();
    let limit = |config: &Config| {
        config.snapshot.router.routes()[0]
            .policy
            .as_ref()
            .unwrap()
            .rate_limit
            .clone()
            .unwrap()
    };
    assert!(limit(&memory).shared.is_none());
    let redis = parse(
        &yaml("{url: \"redis://127.0.0.1:6379/0\", timeout: 20ms, on_error: local}"),
        Path::new("cfg.yml"),
    )
    .unwrap();
    let shared = limit(&redis);
    let shared = shared.shared.as_ref().unwrap();
    assert_eq!(&*shared.namespace, "name:r");
    assert_eq!(shared.store.timeout, std::time::Duration::from_millis(20));
    assert_eq!(
        shared.store.on_error,
        crate::policy::shared_limit::OnError::Local
    );
    refused(
        &yaml("{url: \"http://127.0.0.1:6379\"}"),
        "rate_limit_store.url",
        "must be a redis:// URL",
    );
    refused(
        &yaml("{url: \"redis://127.0.0.1:6379\", on_error: maybe}"),
        "rate_limit_store.on_error",
        "not one of allow, deny, local",
    );
    refused(
        &yaml("{url: \"redis://127.0.0.1:6379\", timeout: 0s}"),
        "rate_limit_store.timeout",
        "greater than zero",
    );
    refused(&yaml("disk"), "rate_limit_store", "must be `memory`");
}
