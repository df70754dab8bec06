//! Rate limits shared through a real Redis: two gateways enforce one limit,
//! and Redis down or stalled never holds a request past the store's timeout.
//! Run by `scripts/test.sh` (which starts Redis) with `RGATE_REDIS_TESTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/redis.rs"]
mod redis;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::*;
use redis::{unique_route, OwnRedis};

fn config(upstream: SocketAddr, route: &str, url: &str, store: &str, limit: &str) -> String {
    format!(
        "rate_limit_store: {{url: \"{url}\"{store}}}\n\
         routes:\n  - name: {route}\n    path_prefix: /\n    backend: a\n    rate_limit: {limit}\n\
         backends:\n  - {{name: a, servers: [\"{upstream}\"]}}\n"
    )
}

/// Status and time taken of one GET.
async fn timed(gw: &TestGateway, path: &str) -> (u16, Duration, http::HeaderMap) {
    let started = Instant::now();
    let (status, headers, _) = fetch(gw.addr, path).await;
    (status, started.elapsed(), headers)
}

#[tokio::test]
#[ignore = "needs Redis: run with RGATE_REDIS_TESTS=1 --run-ignored all"]
async fn two_gateways_enforce_one_limit_between_them() {
    let Some(url) = redis::shared_url() else {
        return;
    };
    let up = named_upstream("a", |_| {}).await;
    let route = unique_route("shared");
    let yaml = config(
        up.addr(),
        &route,
        &url,
        "",
        "{requests: 10, per: 1m, key: route}",
    );
    let (first, second) = (TestGateway::start(&yaml), TestGateway::start(&yaml));
    let mut admitted = 0;
    for i in 0..30 {
        let gw = if i % 2 == 0 { &first } else { &second };
        let (status, headers, _) = fetch(gw.addr, "/x").await;
        match status {
            200 => admitted += 1,
            429 => assert!(headers.contains_key("retry-after")),
            other => panic!("unexpected {other}"),
        }
        assert_eq!(headers["ratelimit-limit"], "10");
    }
    assert_eq!(
        admitted, 10,
        "one limit of 10 over both gateways, not 10 each"
    );
    assert_eq!(up.requests(), 10);
}

#[tokio::test]
#[ignore = "needs Redis: run with RGATE_REDIS_TESTS=1 --run-ignored all"]
async fn keys_are_counted_apart_and_by_remaining() {
    let Some(url) = redis::shared_url() else {
        return;
    };
    let up = named_upstream("a", |_| {}).await;
    let route = unique_route("keyed");
    let gw = TestGateway::start(&config(
        up.addr(),
        &route,
        &url,
        "",
        "{requests: 3, per: 1m, key: \"header:X-Api-Key\"}",
    ));
    let mut client = Client::connect(gw.addr).await;
    let mut remaining = Vec::new();
    for key in ["a", "a", "a", "a", "b"] {
        let request = http::Request::get("/x")
            .header("host", "gateway.test")
            .header("x-api-key", key)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let (status, headers, _) = read(client.send(request).await).await;
        remaining.push((
            status,
            headers["ratelimit-remaining"].to_str().unwrap().to_owned(),
        ));
    }
    let expect = |s: u16, r: &str| (s, r.to_owned());
    assert_eq!(
        remaining,
        [
            expect(200, "2"),
            expect(200, "1"),
            expect(200, "0"),
            expect(429, "0"),
            expect(200, "2")
        ]
    );
}

#[tokio::test]
#[ignore = "needs Redis: run with RGATE_REDIS_TESTS=1 --run-ignored all"]
async fn redis_down_decides_per_on_error_and_comes_back() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let up = named_upstream("a", |_| {}).await;
    let limit = "{requests: 2, per: 1m, key: route}";
    let allow = TestGateway::start(&config(
        up.addr(),
        "allow",
        &redis.url(),
        ", timeout: 50ms, on_error: allow",
        limit,
    ));
    let deny = TestGateway::start(&config(
        up.addr(),
        "deny",
        &redis.url(),
        ", timeout: 50ms, on_error: deny",
        limit,
    ));
    let local = TestGateway::start(&config(
        up.addr(),
        "local",
        &redis.url(),
        ", timeout: 50ms, on_error: local",
        limit,
    ));
    // Shared while Redis answers: the third is refused.
    for gw in [&allow, &deny, &local] {
        let statuses: Vec<u16> = [
            timed(gw, "/x").await,
            timed(gw, "/x").await,
            timed(gw, "/x").await,
        ]
        .iter()
        .map(|(s, _, _)| *s)
        .collect();
        assert_eq!(statuses, [200, 200, 429]);
    }

    redis.stop();
    for _ in 0..5 {
        let (status, took, _) = timed(&allow, "/x").await;
        assert_eq!(status, 200, "on_error: allow lets requests through");
        assert!(took < Duration::from_millis(500), "waited {took:?}");
        let (status, took, headers) = timed(&deny, "/x").await;
        assert_eq!(status, 429, "on_error: deny refuses");
        assert_eq!(headers["retry-after"], "1");
        assert!(took < Duration::from_millis(500), "waited {took:?}");
    }
    // on_error: local applies the route's limit in this process alone.
    let statuses: Vec<u16> = [
        timed(&local, "/x").await,
        timed(&local, "/x").await,
        timed(&local, "/x").await,
    ]
    .iter()
    .map(|(s, _, _)| *s)
    .collect();
    assert_eq!(statuses, [200, 200, 429]);

    // Back: the background reconnect restores shared decisions (a fresh
    // Redis has no buckets, so the route's burst is whole again).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Until the deny gateway is admitted again, it is not using Redis.
        if timed(&deny, "/x").await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = timed(&deny, "/x").await;
    assert_eq!(status, 200, "second of the burst");
    let (status, _, _) = timed(&deny, "/x").await;
    assert_eq!(status, 429, "the shared limit holds again");
}

#[tokio::test]
#[ignore = "needs Redis: run with RGATE_REDIS_TESTS=1 --run-ignored all"]
async fn a_stalled_redis_never_holds_a_request_past_the_timeout() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let up = named_upstream("a", |_| {}).await;
    let gw = TestGateway::start(&config(
        up.addr(),
        "stalled",
        &redis.url(),
        ", timeout: 50ms, on_error: allow",
        "{requests: 100, per: 1s, key: route}",
    ));
    // Connected and deciding.
    assert_eq!(timed(&gw, "/x").await.0, 200);
    // Redis stops answering every client for 2 s.
    assert!(redis
        .command("CLIENT PAUSE 2000 ALL")
        .unwrap()
        .starts_with("+OK"));
    let started = Instant::now();
    for _ in 0..5 {
        let (status, took, _) = timed(&gw, "/x").await;
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_millis(500),
            "waited {took:?} on a stalled Redis"
        );
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
}
