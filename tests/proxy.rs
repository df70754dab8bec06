//! The request path over real sockets: forwarding, headers, pooling, errors,
//! retries, normalisation, stats. Upstreams run in-process (no Docker).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gateway::*;
use http::Request;
use http_body_util::Full;
use rgate_upstream::{Config as UpstreamConfig, Upstream};

async fn upstream(name: &str) -> Upstream {
    Upstream::spawn(UpstreamConfig {
        name: name.into(),
        ..UpstreamConfig::default()
    })
    .await
    .expect("upstream")
}

#[tokio::test]
async fn forwards_method_path_query_body_and_headers() {
    let up = upstream("echo").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let mut client = Client::connect(gw.addr).await;
    let request = Request::post("/api/things/7?a=1&b=two")
        .header("host", "shop.test")
        .header("x-custom", "kept")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    let (status, headers, body) = read(client.send(request).await).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream-name"], "echo");
    let echo = json(&body);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/things/7");
    assert_eq!(echo["query"], "a=1&b=two");
    assert_eq!(echo["body_len"], 1000);
    assert_eq!(echo["headers"]["x-custom"], "kept");
    assert_eq!(echo["headers"]["host"], "shop.test");
    assert_eq!(echo["headers"]["content-type"], "text/plain");
}

#[tokio::test]
async fn upstream_status_and_headers_come_back_unchanged() {
    let up = upstream("s").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    for code in [201u16, 204, 302, 404, 418, 500, 503] {
        let (status, headers, _) = fetch(gw.addr, &format!("/status/{code}")).await;
        assert_eq!(status, code);
        assert_eq!(headers["x-upstream-name"], "s");
    }
}

#[tokio::test]
async fn sets_forwarding_headers_and_request_ids() {
    let up = upstream("echo").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let mut client = Client::connect(gw.addr).await;

    let (_, headers, body) = client.get("/x").await;
    let echo = json(&body);
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-forwarded-host"], "gateway.test");
    let id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(
        echo["headers"]["x-request-id"],
        id.as_str(),
        "upstream sees the same id"
    );

    let request = Request::get("/x")
        .header("host", "gateway.test")
        .header("x-request-id", "client-chosen-1")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, headers, body) = read(client.send(request).await).await;
    let echo = json(&body);
    assert_eq!(headers["x-request-id"], "client-chosen-1");
    assert_eq!(echo["headers"]["x-request-id"], "client-chosen-1");
    // The client is no trusted proxy (none is by default): its claim is replaced.
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let up = upstream("echo").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let response = raw(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close, x-private\r\nX-Private: secret\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
          Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    let body = &response[response.find("\r\n\r\n").expect("head") + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).expect("echo json");
    let seen = echo["headers"].as_object().unwrap();
    for name in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(!seen.contains_key(name), "{name} was forwarded: {seen:?}");
    }
    assert_eq!(seen["x-kept"], "yes");
    assert_ne!(
        seen.get("connection").and_then(|v| v.as_str()),
        Some("close, x-private")
    );
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_returned() {
    let up = scripted_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-up-private\r\nX-Up-Private: 1\r\n\
          Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Up-Kept: 1\r\n\r\nok",
    )
    .await;
    let gw = TestGateway::start(&static_config(&[up]));
    let (status, headers, body) = fetch(gw.addr, "/x").await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    for name in ["x-up-private", "keep-alive", "proxy-authenticate"] {
        assert!(!headers.contains_key(name), "{name} returned: {headers:?}");
    }
    assert_eq!(headers["x-up-kept"], "1");
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let up = upstream("pool").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    // 1000 sequential requests over 10 client connections (spread over both workers).
    for _ in 0..10 {
        let mut client = Client::connect(gw.addr).await;
        for _ in 0..100 {
            let (status, _, _) = client.get("/x").await;
            assert_eq!(status, 200);
        }
    }
    assert_eq!(up.requests(), 1000);
    // One pool per worker: at most one connection each for sequential traffic.
    assert!(
        up.connections() <= 2,
        "opened {} upstream connections",
        up.connections()
    );
}

#[tokio::test]
async fn default_response_answers_unrouted_paths() {
    let up = upstream("payment").await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /api/payment, backend: payment}}\n\
         default_response:\n  body: \"This is not reachable\"\n  status_code: 403\n\
         backends:\n  - {{name: payment, servers: [\"{}\"]}}\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml);
    let (status, _, body) = fetch(gw.addr, "/api/other").await;
    assert_eq!((status, &body[..]), (403, &b"This is not reachable"[..]));
    let (status, _, _) = fetch(gw.addr, "/").await;
    assert_eq!(status, 403);
    assert_eq!(up.requests(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn without_default_response_unrouted_paths_get_a_json_404() {
    let gw = TestGateway::start("routes: []\n");
    let (status, headers, body) = fetch(gw.addr, "/nowhere").await;
    assert_eq!(status, 404);
    assert_eq!(headers.get("content-type"), None);
    assert_eq!(json(&body)["error"], "no_route");
}

#[tokio::test]
async fn longest_prefix_and_literal_prefix_semantics() {
    let short = upstream("short").await;
    let long = upstream("long").await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /api, backend: short}}\n  - {{path_prefix: /api/payment, backend: long}}\n\
         backends:\n  - {{name: short, servers: [\"{}\"]}}\n  - {{name: long, servers: [\"{}\"]}}\n",
        short.addr(),
        long.addr()
    );
    let gw = TestGateway::start(&yaml);
    let name = |h: &http::HeaderMap| h["x-upstream-name"].to_str().unwrap().to_owned();
    assert_eq!(name(&fetch(gw.addr, "/api/payment/charge").await.1), "long");
    assert_eq!(name(&fetch(gw.addr, "/api/orders").await.1), "short");
    // The contract's literal "starts with": /api/payment also takes /api/paymentsX.
    assert_eq!(name(&fetch(gw.addr, "/api/paymentsX").await.1), "long");
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_route() {
    let (payment, _orders, gw) = payment_and_orders().await;
    for path in [
        "/api/payment/../orders/1",
        "/api/payment/%2e%2e/orders/1",
        "//api//orders/./1",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let response = raw(gw.addr, request.as_bytes()).await;
        assert!(
            response.contains("x-upstream-name: orders"),
            "{path}: {response}"
        );
        assert!(
            response.contains(r#""path":"/api/orders/1""#),
            "{path} forwarded normalised: {response}"
        );
    }
    assert_eq!(payment.requests(), 0);
}

#[tokio::test]
async fn a_refusing_endpoint_answers_503_json() {
    let dead = closed_port().await;
    let gw = TestGateway::start(&static_config(&[dead]));
    let (status, headers, body) = fetch(gw.addr, "/x").await;
    assert_eq!(status, 503);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "connect_failed", "backend": "app"})
    );
}

#[tokio::test]
async fn a_backend_without_endpoints_answers_503_no_endpoints_fast() {
    let yaml = "routes:\n  - {path_prefix: /api/payment, backend: payment}\n\
                backends:\n  - {name: payment, match_labels: [app_name=payment]}\n\
                docker: {endpoint: \"unix:///nonexistent/docker.sock\"}\n";
    let gw = TestGateway::start(yaml);
    let started = std::time::Instant::now();
    let (status, _, body) = fetch(gw.addr, "/api/payment/x").await;
    assert_eq!(status, 503);
    assert_eq!(
        &body[..],
        br#"{"error":"no_endpoints","backend":"payment"}"#
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint_for_any_method() {
    let good = upstream("good").await;
    let dead = closed_port().await;
    let gw = TestGateway::start(&static_config(&[dead, good.addr()]));
    let mut client = Client::connect(gw.addr).await;
    for i in 0..40 {
        let request = Request::post(format!("/p{i}"))
            .header("host", "a")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let (status, _, body) = read(client.send(request).await).await;
        assert_eq!(status, 200, "request {i}: {body:?}");
        assert_eq!(json(&body)["body_len"], 7);
    }
    assert_eq!(good.requests(), 40);
}

#[tokio::test]
async fn a_connection_broken_before_the_response_is_retried_for_idempotent_requests_only() {
    let good = upstream("good").await;
    let breaker = scripted_upstream(b"").await;
    // Half the requests hit the breaking endpoint; a full budget lets every
    // one of them be replayed (the default budget's bound is tested in retries.rs).
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app, retries: {{budget: 1.0}}}}\n\
         backends:\n  - {{name: app, servers: [\"{breaker}\", \"{}\"]}}\n",
        good.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    for i in 0..30 {
        let (status, _, body) = client.get(&format!("/g{i}")).await;
        assert_eq!(status, 200, "GET {i}: {body:?}");
    }
    drop(gw);

    // A POST with a body is never replayed: it may have reached the upstream.
    let gw = TestGateway::start(&static_config(&[breaker]));
    let request = Request::post("/p")
        .header("host", "a")
        .body(Full::new(Bytes::from_static(b"once")))
        .unwrap();
    let (status, _, body) = read(Client::connect(gw.addr).await.send(request).await).await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"], "upstream_reset");
}

#[tokio::test]
async fn an_invalid_upstream_response_is_a_502() {
    let garbage = scripted_upstream(b"this is not http\r\n\r\n").await;
    let gw = TestGateway::start(&static_config(&[garbage]));
    let (status, _, body) = fetch(gw.addr, "/x").await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"], "bad_response");
    // The gateway keeps serving.
    let (status, _, body) = fetch(gw.addr, "/stats").await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["requests_count"]["error"], 1);
}

#[tokio::test]
async fn stats_count_success_and_errors_but_not_themselves() {
    let up = upstream("s").await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /ok, backend: app}}\n\
         default_response: {{body: nope, status_code: 403}}\n\
         backends:\n  - {{name: app, servers: [\"{}\"]}}\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    for _ in 0..7 {
        assert_eq!(client.get("/ok").await.0, 200);
    }
    assert_eq!(
        client.get("/ok/../status/302").await.0,
        403,
        "normalised to /status/302: unrouted"
    );
    for _ in 0..3 {
        assert_eq!(client.get("/elsewhere").await.0, 403);
    }
    for _ in 0..2 {
        let (status, headers, body) = client.get("/stats").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        let stats = json(&body);
        assert_eq!(
            stats["requests_count"],
            serde_json::json!({"success": 7, "error": 4})
        );
        let latency = stats["latency_ms"].as_object().unwrap();
        assert_eq!(
            latency.keys().collect::<Vec<_>>(),
            ["average", "p95", "p99"]
        );
        assert!(
            latency.values().all(|v| v.as_f64().unwrap() > 0.0),
            "{latency:?}"
        );
    }
}

#[tokio::test]
async fn large_bodies_stream_in_both_directions() {
    let up = upstream("big").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let mut client = Client::connect(gw.addr).await;
    let (status, _, body) = client.get("/bytes/5000000").await;
    assert_eq!((status, body.len()), (200, 5_000_000));
    let upload = Request::put("/up")
        .header("host", "a")
        .body(Full::new(Bytes::from(vec![7u8; 3_000_000])))
        .unwrap();
    let (status, _, body) = read(client.send(upload).await).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["body_len"], 3_000_000);
}

#[tokio::test]
async fn http2_clients_are_served_over_cleartext() {
    let up = upstream("h2").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let mut sender = h2_connect(gw.addr).await;
    let request = Request::get(format!("http://{}/h2/path?q=1", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = read(sender.send_request(request).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-request-id"));
    let echo = json(&body);
    assert_eq!(echo["path"], "/h2/path");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(
        echo["headers"]["host"],
        gw.addr.to_string().as_str(),
        "authority becomes Host"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let up = upstream("slow").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let addr: SocketAddr = gw.addr;
    let in_flight = tokio::spawn(async move { fetch(addr, "/slow/400").await });
    // Wait until the upstream has the request, then stop the gateway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.requests() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = tokio::task::spawn_blocking(move || gw.shutdown())
        .await
        .unwrap();
    let (status, _, _) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completed");
    assert_eq!((report.drained, report.aborted), (1, 0));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// Waits up to 5 s for `done`, checking every 5 ms.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let up = upstream("slow").await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /slow/30000 HTTP/1.1\r\nhost: gateway.test\r\n\r\n",
    )
    .await
    .unwrap();
    eventually("the upstream has the request", || up.requests() == 1).await;
    assert_eq!(up.cancelled(), 0);
    let started = std::time::Instant::now();
    drop(stream);
    eventually("the upstream sees the cancellation", || up.cancelled() == 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Counted as an error, and the gateway's pool still serves.
    let (status, _, body) = fetch(gw.addr, "/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["requests_count"],
        serde_json::json!({"success": 0, "error": 1})
    );
    for _ in 0..3 {
        assert_eq!(fetch(gw.addr, "/after").await.0, 200);
    }
    assert_eq!(up.cancelled(), 1);
}
