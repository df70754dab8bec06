//! Routing and request shaping over real sockets: hosts, methods, headers,
//! rewrites, header rules, trusted proxies and CORS, and a rule changed by a
//! reload under traffic. Upstreams run in-process and echo what they see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::*;
use http::{Method, Request};
use http_body_util::Full;

/// Upstreams named `a`, `b` and `c`, and config text naming them as backends.
async fn three() -> (Vec<rgate_upstream::Upstream>, String) {
    let mut upstreams = Vec::new();
    let mut backends = String::from("backends:\n");
    for name in ["a", "b", "c"] {
        let up = named_upstream(name, |_| {}).await;
        backends.push_str(&format!(
            "  - {{name: {name}, servers: [\"{}\"]}}\n",
            up.addr()
        ));
        upstreams.push(up);
    }
    (upstreams, backends)
}

fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", "gateway.test");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

/// Sends one request; returns status, headers and body.
async fn send(
    gw: &TestGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    let mut client = Client::connect(gw.addr).await;
    read(client.send(request(method, path, headers)).await).await
}

fn upstream_name(headers: &http::HeaderMap) -> &str {
    headers
        .get("x-upstream-name")
        .map_or("(rgate)", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn hosts_share_one_port_with_exact_names_before_wildcards() {
    let (_ups, backends) = three().await;
    let gw = TestGateway::start(&format!(
        "routes:\n\
         \x20 - {{path_prefix: /, host: shop.example.com, backend: a}}\n\
         \x20 - {{path_prefix: /, host: \"*.example.com\", backend: b}}\n\
         \x20 - {{path_prefix: /, backend: c}}\n{backends}"
    ));
    for (host, expected) in [
        ("shop.example.com", "a"),
        ("SHOP.example.com:8080", "a"),
        ("api.example.com", "b"),
        ("deep.api.example.com", "b"),
        ("example.com", "c"),
        ("other.test", "c"),
    ] {
        let (status, headers, _) = send(&gw, Method::GET, "/x", &[("host", host)]).await;
        assert_eq!(status, 200, "{host}");
        assert_eq!(upstream_name(&headers), expected, "{host}");
    }
}

#[tokio::test]
async fn methods_and_headers_split_one_prefix_and_unmatched_requests_get_the_default() {
    let (_ups, backends) = three().await;
    let gw = TestGateway::start(&format!(
        "routes:\n\
         \x20 - {{path_prefix: /api, methods: [GET, HEAD], backend: a}}\n\
         \x20 - {{path_prefix: /api, methods: [POST], backend: b}}\n\
         \x20 - {{path_prefix: /api, methods: [GET], headers: {{X-Canary: \"1\"}}, backend: c}}\n\
         default_response: {{status_code: 403, body: nope}}\n{backends}"
    ));
    let at = |method, headers: &'static [(&'static str, &'static str)]| {
        let gw = &gw;
        async move {
            let (status, h, body) = send(gw, method, "/api/items", headers).await;
            (status, upstream_name(&h).to_owned(), body)
        }
    };
    assert_eq!(at(Method::GET, &[]).await.1, "a");
    assert_eq!(at(Method::POST, &[]).await.1, "b");
    assert_eq!(at(Method::GET, &[("x-canary", "1")]).await.1, "c");
    // The canary header on a method the canary route does not take.
    assert_eq!(at(Method::POST, &[("x-canary", "1")]).await.1, "b");
    assert_eq!(at(Method::GET, &[("x-canary", "0")]).await.1, "a");
    // No route takes DELETE on this path: the contract's default response.
    let (status, who, body) = at(Method::DELETE, &[]).await;
    assert_eq!(
        (status, who.as_str(), &body[..]),
        (403, "(rgate)", &b"nope"[..])
    );
}

#[tokio::test]
async fn strip_and_rewrite_change_only_what_the_upstream_sees() {
    let (_ups, backends) = three().await;
    let gw = TestGateway::start(&format!(
        "routes:\n\
         \x20 - {{path_prefix: /api/payment, path_match: segment, strip_prefix: true, backend: a}}\n\
         \x20 - {{path_prefix: /api/orders/, rewrite_prefix: /v2, backend: b}}\n{backends}"
    ));
    for (path, seen_path, seen_query, prefix) in [
        (
            "/api/payment/charge/7?x=1&y=2",
            "/charge/7",
            "x=1&y=2",
            "/api/payment",
        ),
        ("/api/payment", "/", "", "/api/payment"),
        ("/api/payment/", "/", "", "/api/payment"),
        // Normalised first, then rewritten once.
        ("/api/payment/a/../b", "/b", "", "/api/payment"),
        (
            "/api/orders/list?page=3",
            "/v2/list",
            "page=3",
            "/api/orders",
        ),
    ] {
        let (status, _, body) =
            send(&gw, Method::GET, path, &[("x-forwarded-prefix", "/forged")]).await;
        assert_eq!(status, 200, "{path}");
        let echo = json(&body);
        assert_eq!(echo["path"], seen_path, "{path}");
        assert_eq!(echo["query"], seen_query, "{path}");
        assert_eq!(echo["headers"]["x-forwarded-prefix"], prefix, "{path}");
    }
}

#[tokio::test]
async fn header_rules_apply_in_order_with_placeholders_on_both_sides() {
    let (_ups, backends) = three().await;
    let gw = TestGateway::start(&format!(
        "routes:\n\
         \x20 - name: shop\n\
         \x20   path_prefix: /\n\
         \x20   backend: a\n\
         \x20   request_headers:\n\
         \x20     remove: [X-Internal]\n\
         \x20     set: {{X-Client: \"{{client_ip}}\", X-Route: \"{{route}}\", X-Trace: \"id-{{request_id}}\"}}\n\
         \x20     add: {{X-Tag: \"{{host}}\"}}\n\
         \x20   response_headers:\n\
         \x20     remove: [X-Upstream-Name]\n\
         \x20     set: {{X-Served-By: rgate}}\n\
         \x20     add: {{Cache-Control: no-store}}\n{backends}"
    ));
    let (status, headers, body) = send(
        &gw,
        Method::GET,
        "/x",
        &[
            ("x-internal", "secret"),
            ("x-route", "forged"),
            ("x-tag", "client"),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let echo = json(&body);
    let seen = &echo["headers"];
    assert!(seen.get("x-internal").is_none(), "{seen}");
    assert_eq!(seen["x-client"], "127.0.0.1");
    assert_eq!(seen["x-route"], "shop");
    assert_eq!(seen["x-trace"], "id-req-42");
    assert_eq!(seen["x-tag"], "client, gateway.test");
    assert!(headers.get("x-upstream-name").is_none());
    assert_eq!(headers["x-served-by"], "rgate");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-request-id"], "req-42");
}

#[tokio::test]
async fn forwarded_for_is_replaced_unless_the_peer_is_a_trusted_proxy() {
    let (_ups, backends) = three().await;
    let untrusted = TestGateway::start(&format!(
        "routes:\n  - {{path_prefix: /, backend: a, request_headers: {{set: {{X-Client: \"{{client_ip}}\"}}}}}}\n{backends}"
    ));
    let trusted = TestGateway::start(&format!(
        "trusted_proxies: [127.0.0.0/8]\n\
         routes:\n  - {{path_prefix: /, backend: a, request_headers: {{set: {{X-Client: \"{{client_ip}}\"}}}}}}\n{backends}"
    ));
    let forged = [("x-forwarded-for", "203.0.113.9, 198.51.100.1")];
    let (_, _, body) = send(&untrusted, Method::GET, "/x", &forged).await;
    let echo = json(&body);
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-client"], "127.0.0.1");

    let (_, _, body) = send(&trusted, Method::GET, "/x", &forged).await;
    let echo = json(&body);
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        "203.0.113.9, 198.51.100.1, 127.0.0.1"
    );
    // 198.51.100.1 is not in the trusted list: it is the client.
    assert_eq!(echo["headers"]["x-client"], "198.51.100.1");
}

const CORS_ROUTE: &str = "    cors:\n\
     \x20     allow_origins: [\"https://app.example.com\", \"https://*.example.org\"]\n\
     \x20     allow_methods: [GET, PUT]\n\
     \x20     allow_headers: [X-Token, Content-Type]\n\
     \x20     expose_headers: [X-Upstream-Name]\n\
     \x20     allow_credentials: true\n\
     \x20     max_age: 10m\n";

#[tokio::test]
async fn cors_preflights_are_answered_by_rgate_and_answers_carry_cors_fields() {
    let up = named_upstream("a", |_| {}).await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - path_prefix: /api\n    methods: [GET, PUT]\n    backend: a\n{CORS_ROUTE}\
         backends:\n  - {{name: a, servers: [\"{}\"]}}\n",
        up.addr()
    ));
    let before = up.requests();
    // The route takes GET and PUT only, yet the preflight (OPTIONS) is answered.
    let (status, headers, body) = send(
        &gw,
        Method::OPTIONS,
        "/api/items",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-token,content-type"),
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert!(body.is_empty());
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-methods"], "GET, PUT");
    assert_eq!(
        headers["access-control-allow-headers"],
        "x-token, content-type"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-max-age"], "600");
    assert!(headers["vary"].to_str().unwrap().contains("origin"));

    // Disallowed: no CORS fields at all, and certainly no reflected origin.
    for (origin, method) in [
        ("https://evil.test", "PUT"),
        ("https://app.example.com", "DELETE"),
    ] {
        let (status, headers, _) = send(
            &gw,
            Method::OPTIONS,
            "/api/items",
            &[
                ("origin", origin),
                ("access-control-request-method", method),
            ],
        )
        .await;
        assert_eq!(status, 204);
        assert!(
            headers.get("access-control-allow-origin").is_none(),
            "{origin} {method}"
        );
    }
    assert_eq!(up.requests(), before, "preflights never reach the upstream");

    // The actual request: forwarded, and its answer carries the fields.
    let (status, headers, _) = send(
        &gw,
        Method::PUT,
        "/api/items",
        &[("origin", "https://shop.example.org")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example.org"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-expose-headers"], "x-upstream-name");
    assert_eq!(headers["vary"], "origin");
    let (_, headers, _) = send(
        &gw,
        Method::GET,
        "/api/items",
        &[("origin", "https://evil.test")],
    )
    .await;
    assert!(headers.get("access-control-allow-origin").is_none());
    assert_eq!(up.requests(), before + 2);
}

#[tokio::test]
async fn rgates_own_errors_on_a_cors_route_carry_cors_fields() {
    let dead = closed_port().await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - path_prefix: /api\n    backend: a\n    retries: {{attempts: 1}}\n{CORS_ROUTE}\
         backends:\n  - {{name: a, servers: [\"{dead}\"]}}\n"
    ));
    let (status, headers, body) = send(
        &gw,
        Method::GET,
        "/api/x",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"], "connect_failed");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["vary"], "origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_a_rule_under_traffic_without_a_failed_request() {
    let (_ups, backends) = three().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    let config = |value: &str| {
        format!(
            "routes:\n  - {{name: api, path_prefix: /api, strip_prefix: true, backend: a, \
             request_headers: {{set: {{X-Version: \"{value}\"}}}}}}\n{backends}"
        )
    };
    std::fs::write(&path, config("one")).unwrap();
    let gw = TestGateway::start_file(&path);
    let addr = gw.addr;
    let load: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut seen = Vec::new();
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until && seen.len() < 2000 {
                    let (status, _, body) = client.get("/api/x").await;
                    assert_eq!(status, 200, "no request fails across the reload");
                    let echo = json(&body);
                    assert_eq!(echo["path"], "/x");
                    seen.push(echo["headers"]["x-version"].as_str().unwrap().to_owned());
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&path, config("two")).unwrap();
    gw.running().reload().await.unwrap();
    let mut versions = Vec::new();
    for task in load {
        versions.extend(task.await.unwrap());
    }
    assert!(versions.iter().any(|v| v == "one"));
    assert!(
        versions.iter().any(|v| v == "two"),
        "the new rule serves after the reload"
    );
    // After the reload has returned, every new request has the new rule.
    let (_, _, body) = fetch(addr, "/api/x").await;
    assert_eq!(json(&body)["headers"]["x-version"], "two");
}

#[tokio::test]
async fn http2_requests_route_by_their_authority() {
    let (_ups, backends) = three().await;
    let gw = TestGateway::start(&format!(
        "routes:\n\
         \x20 - {{path_prefix: /, host: \"*.example.com\", backend: a, strip_prefix: true}}\n\
         \x20 - {{path_prefix: /, backend: b}}\n{backends}"
    ));
    let mut sender = h2_connect(gw.addr).await;
    // HTTP/2 carries the host as :authority, not as a Host field.
    for (authority, expected) in [("API.example.com:8443", "a"), ("other.test", "b")] {
        let request = Request::get(format!("http://{authority}/x?y=1"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, headers, body) = read(sender.send_request(request).await.unwrap()).await;
        assert_eq!(status, 200, "{authority}");
        assert_eq!(upstream_name(&headers), expected, "{authority}");
        assert_eq!(json(&body)["query"], "y=1");
    }
}

#[tokio::test]
async fn the_upstream_gets_a_traceparent_continuing_the_clients_trace_or_a_new_one() {
    let up = named_upstream("a", |_| {}).await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - {{path_prefix: /, backend: a}}\nbackends:\n  - {{name: a, servers: [\"{}\"]}}\n",
        up.addr()
    ));
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = |body: &bytes::Bytes| json(body)["headers"].clone();
    let mut client = Client::connect(gw.addr).await;
    let request = request_with(
        "/x",
        &[("traceparent", incoming), ("tracestate", "vendor=abc")],
    );
    let (_, _, body) = read(client.send(request).await).await;
    let headers = seen(&body);
    let sent = headers["traceparent"].as_str().unwrap();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert_ne!(
        &sent[36..52],
        "00f067aa0ba902b7",
        "rgate's own span is the parent"
    );
    assert!(sent.ends_with("-01"));
    assert_eq!(headers["tracestate"], "vendor=abc", "passed through");

    // Invalid (upper-case hex): a new trace, and the old state dropped.
    let upper = incoming.to_uppercase();
    let request = request_with(
        "/x",
        &[("traceparent", &upper), ("tracestate", "vendor=abc")],
    );
    let (_, _, body) = read(client.send(request).await).await;
    let headers = seen(&body);
    let sent = headers["traceparent"].as_str().unwrap();
    assert_eq!(sent.len(), 55);
    assert!(!sent.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(headers.get("tracestate").is_none());

    // None at all: a new trace each time.
    let (_, _, first) = fetch(gw.addr, "/x").await;
    let (_, _, second) = fetch(gw.addr, "/x").await;
    let (a, b) = (
        seen(&first)["traceparent"].clone(),
        seen(&second)["traceparent"].clone(),
    );
    assert_ne!(a.as_str().unwrap()[3..35], b.as_str().unwrap()[3..35]);
}
