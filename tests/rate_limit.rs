//! Per-route rate limits over real sockets: the burst, the 429 and its
//! fields, keys, trusted proxies, CORS on refusals, and buckets that survive
//! a reload. Upstreams run in-process and count what reaches them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use bytes::Bytes;
use gateway::*;
use http::Request;
use http_body_util::Full;

fn config(upstream: std::net::SocketAddr, limit: &str, extra: &str) -> String {
    format!(
        "{extra}routes:\n  - path_prefix: /\n    backend: a\n    rate_limit: {limit}\n\
         backends:\n  - {{name: a, servers: [\"{upstream}\"]}}\n"
    )
}

#[tokio::test]
async fn a_burst_passes_then_429s_reach_no_upstream() {
    let up = named_upstream("a", |_| {}).await;
    let gw = TestGateway::start(&config(
        up.addr(),
        "{requests: 1, per: 1m, burst: 3, key: route}",
        "",
    ));
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = fetch_with(gw.addr, "/x", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(headers["ratelimit-limit"], "3");
        assert_eq!(headers["ratelimit-remaining"], remaining);
        assert!(
            headers["ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
    }
    let (status, headers, body) = fetch_with(gw.addr, "/x", &[]).await;
    assert_eq!(status, 429);
    assert_eq!(json(&body)["error"], "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-reset"], headers["retry-after"]);
    assert_eq!(
        up.requests(),
        3,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn each_key_has_its_own_bucket() {
    let up = named_upstream("a", |_| {}).await;
    let by_header = TestGateway::start(&config(
        up.addr(),
        "{requests: 1, per: 1m, key: \"header:X-Api-Key\"}",
        "",
    ));
    let status = |addr: std::net::SocketAddr, key: &'static str| async move {
        fetch_with(addr, "/x", &[("x-api-key", key)]).await.0
    };
    assert_eq!(status(by_header.addr, "alice").await, 200);
    assert_eq!(status(by_header.addr, "alice").await, 429);
    assert_eq!(status(by_header.addr, "bob").await, 200);

    // By client address: behind a trusted proxy, the client it names.
    let by_ip = TestGateway::start(&config(
        up.addr(),
        "{requests: 1, per: 1m}",
        "trusted_proxies: [127.0.0.1]\n",
    ));
    let from = |addr: std::net::SocketAddr, client: &'static str| async move {
        fetch_with(addr, "/x", &[("x-forwarded-for", client)])
            .await
            .0
    };
    assert_eq!(from(by_ip.addr, "203.0.113.1").await, 200);
    assert_eq!(from(by_ip.addr, "203.0.113.1").await, 429);
    assert_eq!(from(by_ip.addr, "203.0.113.2").await, 200);
}

#[tokio::test]
async fn a_429_on_a_cors_route_carries_cors_fields() {
    let up = named_upstream("a", |_| {}).await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - path_prefix: /\n    backend: a\n    rate_limit: {{requests: 1, per: 1m, key: route}}\n\
         \x20   cors: {{allow_origins: [\"https://app.test\"]}}\n\
         backends:\n  - {{name: a, servers: [\"{}\"]}}\n",
        up.addr()
    ));
    let origin = [("origin", "https://app.test")];
    assert_eq!(fetch_with(gw.addr, "/x", &origin).await.0, 200);
    let (status, headers, _) = fetch_with(gw.addr, "/x", &origin).await;
    assert_eq!(status, 429);
    assert_eq!(headers["access-control-allow-origin"], "https://app.test");
    // A browser's preflight comes before the limit: answered, not refused.
    let mut client = Client::connect(gw.addr).await;
    let preflight = Request::options("/x")
        .header("host", "gateway.test")
        .header("origin", "https://app.test")
        .header("access-control-request-method", "GET")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, _) = read(client.send(preflight).await).await;
    assert_eq!(status, 204);
    assert_eq!(headers["access-control-allow-origin"], "https://app.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_buckets_of_an_unchanged_limit() {
    let up = named_upstream("a", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    let text = config(up.addr(), "{requests: 2, per: 1m, key: route}", "");
    std::fs::write(&path, &text).unwrap();
    let gw = TestGateway::start_file(&path);
    assert_eq!(fetch_with(gw.addr, "/x", &[]).await.0, 200);
    assert_eq!(fetch_with(gw.addr, "/x", &[]).await.0, 200);
    assert_eq!(fetch_with(gw.addr, "/x", &[]).await.0, 429);
    std::fs::write(&path, format!("{text}# touched\n")).unwrap();
    gw.running().reload().await.unwrap();
    assert_eq!(
        fetch_with(gw.addr, "/x", &[]).await.0,
        429,
        "no fresh burst after a reload"
    );
    // A changed limit starts afresh.
    std::fs::write(
        &path,
        config(up.addr(), "{requests: 3, per: 1m, key: route}", ""),
    )
    .unwrap();
    gw.running().reload().await.unwrap();
    assert_eq!(fetch_with(gw.addr, "/x", &[]).await.0, 200);
}
