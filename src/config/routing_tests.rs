//! Routing and shaping keys: each refusal names the file, the key path and
//! the problem; one bad key hides nothing else; typos get a suggestion.

use std::path::Path;

use super::tests::{errors, refused};
use super::*;
use crate::path::rewrite::PrefixRewrite;
use crate::router::HostMatch;

const BACKEND: &str = "backends:\n  - {name: b, servers: [\"127.0.0.1:1\"]}\n";

fn with_route(route: &str) -> String {
    format!("routes:\n  - {route}\n{BACKEND}")
}

#[test]
fn every_routing_and_shaping_key_compiles() {
    let yaml = format!(
        "trusted_proxies: [192.0.2.0/24, \"::1\"]\n\
         routes:\n\
         \x20 - name: shop-api\n\
         \x20   host: \"*.Example.com\"\n\
         \x20   path_prefix: /api\n\
         \x20   methods: [GET, POST]\n\
         \x20   headers: {{X-Canary: \"1\"}}\n\
         \x20   rewrite_prefix: /v2\n\
         \x20   backend: b\n\
         \x20   request_headers: {{remove: [Cookie], set: {{X-Client: \"{{client_ip}}\"}}, add: {{Via: rgate}}}}\n\
         \x20   response_headers: {{set: {{X-Frame-Options: DENY}}}}\n\
         \x20   cors: {{allow_origins: [\"https://app.example.com\"], allow_headers: [X-Token], max_age: 1m}}\n\
         {BACKEND}"
    );
    let config = parse(&yaml, Path::new("cfg.yml")).unwrap();
    let route = &config.snapshot.router.routes()[0];
    assert_eq!(&*route.name, "shop-api");
    assert_eq!(route.host, HostMatch::Wildcard(".example.com".into()));
    assert_eq!(route.rewrite, Some(PrefixRewrite::Replace("/v2".into())));
    assert_eq!(route.headers.len(), 1);
    let policy = route.policy.as_ref().unwrap();
    assert!(policy.request_headers.is_some() && policy.response_headers.is_some());
    let cors = policy.cors.as_ref().unwrap();
    // No allow_methods: the route's methods.
    assert_eq!(cors.methods_value, "GET, POST");
    assert_eq!(cors.max_age.as_ref().unwrap(), "60");
    // A route without shaping keys carries no policy at all.
    let plain = parse(
        &with_route("{path_prefix: /, backend: b}"),
        Path::new("c.yml"),
    )
    .unwrap();
    assert!(plain.snapshot.router.routes()[0].policy.is_none());
    assert_eq!(&*plain.snapshot.router.routes()[0].name, "/");
}

#[test]
fn matching_keys_are_checked() {
    refused(
        &with_route("{path_prefix: /, backend: b, host: \"a b\"}"),
        "routes[0].host",
        "not a host name",
    );
    refused(
        &with_route("{path_prefix: /, backend: b, host: \"x.*.com\"}"),
        "routes[0].host",
        "not a host name",
    );
    refused(
        &with_route("{path_prefix: /, backend: b, methods: [get]}"),
        "routes[0].methods[0]",
        "upper case",
    );
    refused(
        &with_route("{path_prefix: /, backend: b, methods: []}"),
        "routes[0].methods",
        "at least one",
    );
    refused(
        &with_route("{path_prefix: /, backend: b, headers: {\"bad name\": x}}"),
        "routes[0].headers.bad name",
        "not a header name",
    );
    refused(
        &with_route("{path_prefix: /, backend: b, headers: {X-A: \"1\", x-a: \"2\"}}"),
        "routes[0].headers.x-a",
        "named twice",
    );
    let twice = format!(
        "routes:\n  - {{name: n, path_prefix: /a, backend: b}}\n  - {{name: n, path_prefix: /b, backend: b}}\n{BACKEND}"
    );
    refused(&twice, "routes[1].name", "duplicate route name");
}

#[test]
fn ties_name_both_routes_and_distinct_conditions_are_fine() {
    let tie = format!(
        "routes:\n  - {{path_prefix: /a, backend: b, methods: [GET]}}\n  - {{path_prefix: /a, backend: b, methods: [GET, PUT]}}\n{BACKEND}"
    );
    refused(&tie, "routes[1]", "matches the same requests as routes[0]");
    let split = format!(
        "routes:\n  - {{path_prefix: /a, backend: b, methods: [GET]}}\n  - {{path_prefix: /a, backend: b, methods: [PUT]}}\n\
         \x20 - {{path_prefix: /a, backend: b, host: x.test}}\n  - {{path_prefix: /a, backend: b}}\n{BACKEND}"
    );
    assert!(parse(&split, Path::new("c.yml")).is_ok());
}

#[test]
fn rewrites_are_checked() {
    refused(
        &with_route("{path_prefix: /a, backend: b, strip_prefix: true, rewrite_prefix: /v2}"),
        "routes[0].rewrite_prefix",
        "cannot be used with strip_prefix",
    );
    refused(
        &with_route("{path_prefix: /a, backend: b, rewrite_prefix: v2}"),
        "routes[0].rewrite_prefix",
        "must start with '/'",
    );
    refused(
        &with_route("{path_prefix: /a, backend: b, rewrite_prefix: /v2/../x}"),
        "routes[0].rewrite_prefix",
        "normalised",
    );
    refused(
        &with_route("{path_prefix: /a, backend: b, rewrite_prefix: \"/v2?x=1\"}"),
        "routes[0].rewrite_prefix",
        "only a path",
    );
}

#[test]
fn header_rules_refuse_framing_fields_and_bad_templates() {
    for (side, name, needle) in [
        ("request_headers", "Content-Length", "framing"),
        ("request_headers", "Transfer-Encoding", "framing"),
        ("request_headers", "Connection", "framing"),
        ("request_headers", "X-Forwarded-For", "set by rgate"),
        ("response_headers", "Host", "no meaning"),
        ("response_headers", "Content-Length", "framing"),
    ] {
        refused(
            &with_route(&format!(
                "{{path_prefix: /, backend: b, {side}: {{set: {{{name}: x}}}}}}"
            )),
            &format!("routes[0].{side}.set.{name}"),
            needle,
        );
    }
    refused(
        &with_route("{path_prefix: /, backend: b, request_headers: {remove: [Transfer-Encoding]}}"),
        "routes[0].request_headers.remove[0]",
        "framing",
    );
    refused(
        &with_route("{path_prefix: /, backend: b, request_headers: {add: {X-A: \"{clientip}\"}}}"),
        "routes[0].request_headers.add.X-A",
        "unknown placeholder",
    );
}

#[test]
fn cors_is_checked() {
    let cors = |body: &str| with_route(&format!("{{path_prefix: /, backend: b, cors: {body}}}"));
    refused(
        &cors("{allow_origins: [\"*\"], allow_credentials: true}"),
        "routes[0].cors.allow_origins",
        "cannot be used with allow_credentials",
    );
    refused(
        &cors("{allow_origins: [\"https://a.test\"], allow_headers: [\"*\"], allow_credentials: true}"),
        "routes[0].cors.allow_headers",
        "cannot be used with allow_credentials",
    );
    refused(
        &cors("{allow_origins: []}"),
        "routes[0].cors.allow_origins",
        "at least one",
    );
    refused(
        &cors("{allow_origins: [app.example.com]}"),
        "routes[0].cors.allow_origins[0]",
        "not an origin",
    );
    refused(
        &cors("{allow_origins: [\"https://a.test/path\"]}"),
        "routes[0].cors.allow_origins[0]",
        "no path",
    );
    refused(
        &cors("{allow_origins: [\"https://x*.test\"]}"),
        "routes[0].cors.allow_origins[0]",
        "a wildcard only as",
    );
    refused(
        &cors("{allow_origins: [\"https://*x.test\"]}"),
        "routes[0].cors.allow_origins[0]",
        "whole label",
    );
    refused(
        &cors("{allow_origins: [\"*\", \"https://a.test\"]}"),
        "routes[0].cors.allow_origins",
        "nothing beside",
    );
}

#[test]
fn trusted_proxies_must_be_networks() {
    refused(
        &format!("trusted_proxies: [192.0.2.0/24, proxy.internal]\n{BACKEND}"),
        "trusted_proxies[1]",
        "not a CIDR block",
    );
}

#[test]
fn one_type_error_hides_no_other_problem() {
    let errors = errors(
        "routes:\n\
         \x20 - {path_prefix: /a, backend: b, timeout: 30, retries: {attempts: 9}}\n\
         \x20 - {path_prefix: /b, backend: nope}\n\
         \x20 - {backend: b}\n\
         \x20 - {path_prefix: /c, backend: b, idle_timeout: 2}\n\
         backends:\n\
         \x20 - {name: b, servers: [\"127.0.0.1:1\"], connect_timeout: 1, balanse: random}\n\
         limits: {max_connections: lots, header_read_timeout: 5}\n",
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "routes[0].timeout",
        "routes[0].retries.attempts",
        "routes[1].backend",
        "routes[2]",
        "routes[3].idle_timeout",
        "backends[0].connect_timeout",
        "backends[0].balanse",
        "limits.max_connections",
        "limits.header_read_timeout",
    ] {
        assert_eq!(
            paths.iter().filter(|p| **p == expected).count(),
            1,
            "{expected} reported once in {errors:#?}"
        );
    }
    let timeout = errors
        .iter()
        .find(|e| e.path == "routes[0].timeout")
        .unwrap();
    assert!(timeout.problem.contains("no unit"), "{timeout:?}");
    let missing = errors.iter().find(|e| e.path == "routes[2]").unwrap();
    assert!(
        missing.problem.contains("missing field `path_prefix`"),
        "{missing:?}"
    );
}

#[test]
fn unknown_keys_suggest_the_nearest_known_one() {
    refused(
        "routes: []\nbackends:\n  - {name: b, servers: [\"127.0.0.1:1\"], balanse: random}\n",
        "backends[0].balanse",
        "did you mean `balance`?",
    );
    refused(
        &with_route("{path_prefix: /, backend: b, strip_prefx: true}"),
        "routes[0].strip_prefx",
        "did you mean `strip_prefix`?",
    );
    refused(
        "trusted_proxy: []\n",
        "trusted_proxy",
        "did you mean `trusted_proxies`?",
    );
    // Nothing close: the list of known keys instead.
    refused(
        &with_route("{path_prefix: /, backend: b, zzzzzz: 1}"),
        "routes[0].zzzzzz",
        "expected one of",
    );
}

#[test]
fn a_refused_backend_is_not_reported_again_by_its_routes() {
    let errors = errors(
        "routes:\n  - {path_prefix: /a, backend: pay}\n  - {path_prefix: /b, backend: gone}\n\
         backends:\n  - {name: pay, match_labels: [broken]}\n  - {name: pay2, servers: [1], port: x}\n",
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"backends[0].match_labels[0]"),
        "{errors:#?}"
    );
    assert!(!paths.contains(&"routes[0].backend"), "{errors:#?}");
    assert!(paths.contains(&"routes[1].backend"), "{errors:#?}");
}

#[test]
fn per_route_state_follows_the_route_id_across_a_reload() {
    let text = |budget: &str| {
        format!(
            "routes:\n  - {{name: api, path_prefix: /api, backend: b, retries: {{budget: {budget}}}}}\n\
             \x20 - {{path_prefix: /web, host: w.test, backend: b}}\n  - {{path_prefix: /gone, backend: b}}\n{BACKEND}"
        )
    };
    let old = parse(&text("0.2"), Path::new("c.yml")).unwrap().snapshot;
    let mut new = parse(&text("0.2"), Path::new("c.yml")).unwrap().snapshot;
    new.carry_over(&old);
    for (old, new) in old.router.routes().iter().zip(new.router.routes()) {
        assert_eq!(old.id, new.id);
        assert!(
            std::sync::Arc::ptr_eq(&old.retry.budget, &new.retry.budget),
            "{}",
            new.id
        );
    }
    // A changed share starts a fresh budget.
    let mut changed = parse(&text("0.5"), Path::new("c.yml")).unwrap().snapshot;
    changed.carry_over(&old);
    let api = |s: &crate::snapshot::Snapshot| {
        s.router
            .routes()
            .iter()
            .find(|r| &*r.name == "api")
            .unwrap()
            .retry
            .budget
            .clone()
    };
    assert!(!std::sync::Arc::ptr_eq(&api(&old), &api(&changed)));
}

#[test]
fn rate_limits_are_checked() {
    let limit = |body: &str| {
        with_route(&format!(
            "{{path_prefix: /, backend: b, rate_limit: {body}}}"
        ))
    };
    assert!(parse(
        &limit("{requests: 100, per: 1s, burst: 20, key: \"header:X-Key\"}"),
        Path::new("c.yml")
    )
    .is_ok());
    assert!(parse(&limit("{requests: 5, per: 1m}"), Path::new("c.yml")).is_ok());
    refused(
        &limit("{requests: 0, per: 1s}"),
        "routes[0].rate_limit.requests",
        "at least 1",
    );
    refused(
        &limit("{requests: 1, per: 0s}"),
        "routes[0].rate_limit.per",
        "greater than zero",
    );
    refused(
        &limit("{requests: 1, per: 1}"),
        "routes[0].rate_limit.per",
        "no unit",
    );
    refused(
        &limit("{requests: 1, per: 1s, burst: 0}"),
        "routes[0].rate_limit.burst",
        "at least 1",
    );
    refused(
        &limit("{requests: 1, per: 1s, key: user}"),
        "routes[0].rate_limit.key",
        "not one of",
    );
    refused(
        &limit("{requests: 1, per: 1s, key: \"header:bad name\"}"),
        "routes[0].rate_limit.key",
        "not a header name",
    );
    refused(
        &limit("{requests: 1, per: 1s, key: \"claim:sub\"}"),
        "routes[0].rate_limit.key",
        "needs the route to verify a token",
    );
    refused(
        &limit("{requests: 1, per: 1s, max_keys: 0}"),
        "routes[0].rate_limit.max_keys",
        "at least 1",
    );
}
