//! Balancing policies through the gateway, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use gateway::*;
use http::Request;
use http_body_util::Full;
use rgate_upstream::Upstream;

async fn upstream(name: &str, latency: Duration) -> Upstream {
    named_upstream(name, |c| c.latency = latency).await
}

fn config(upstreams: &[&Upstream], balance: &str) -> String {
    let servers: Vec<String> = upstreams
        .iter()
        .map(|u| format!("\"{}\"", u.addr()))
        .collect();
    format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\nbackends:\n  - {{name: app, servers: [{}], {balance}}}\n",
        servers.join(", ")
    )
}

fn upstream_name(headers: &http::HeaderMap) -> String {
    headers["x-upstream-name"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn round_robin_gives_each_endpoint_an_equal_turn() {
    let (a, b, c) = (
        upstream("a", Duration::ZERO).await,
        upstream("b", Duration::ZERO).await,
        upstream("c", Duration::ZERO).await,
    );
    let gw = TestGateway::start(&config(&[&a, &b, &c], "balance: round_robin"));
    let mut client = Client::connect(gw.addr).await;
    for _ in 0..300 {
        assert_eq!(client.get("/x").await.0, 200);
    }
    assert_eq!((a.requests(), b.requests(), c.requests()), (100, 100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_steers_load_away_from_a_slow_endpoint() {
    let slow = upstream("slow", Duration::from_millis(100)).await;
    let fast = upstream("fast", Duration::ZERO).await;
    let gw = TestGateway::start(&config(&[&slow, &fast], "balance: least_conn"));
    // 16 concurrent clients, 25 requests each: bounded in count.
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for _ in 0..25 {
                    assert_eq!(client.get("/x").await.0, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let (slow_n, fast_n) = (slow.requests(), fast.requests());
    assert_eq!(slow_n + fast_n, 400);
    // Random would give the slow endpoint about half; least_conn a small share.
    assert!(slow_n < 100, "slow endpoint took {slow_n} of 400 requests");
}

#[tokio::test]
async fn hash_by_header_keeps_each_user_on_one_endpoint() {
    let (a, b, c) = (
        upstream("a", Duration::ZERO).await,
        upstream("b", Duration::ZERO).await,
        upstream("c", Duration::ZERO).await,
    );
    let gw = TestGateway::start(&config(
        &[&a, &b, &c],
        "balance: hash, hash_on: \"header:x-user\"",
    ));
    let mut client = Client::connect(gw.addr).await;
    let mut owners: HashMap<String, String> = HashMap::new();
    for round in 0..5 {
        for user in 0..30 {
            let request = Request::get("/x")
                .header("host", "a")
                .header("x-user", format!("user-{user}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let (status, headers, _) = read(client.send(request).await).await;
            assert_eq!(status, 200);
            let owner = owners
                .entry(format!("user-{user}"))
                .or_insert_with(|| upstream_name(&headers));
            assert_eq!(
                *owner,
                upstream_name(&headers),
                "user-{user} moved in round {round}"
            );
        }
    }
    let used: std::collections::HashSet<&String> = owners.values().collect();
    assert_eq!(
        used.len(),
        3,
        "30 users spread over all three endpoints: {owners:?}"
    );
}

#[tokio::test]
async fn retries_avoid_the_failed_endpoint_under_every_policy() {
    let good = upstream("good", Duration::ZERO).await;
    let dead = closed_port().await;
    for balance in [
        "balance: round_robin",
        "balance: least_conn",
        "balance: weighted",
        "balance: hash, hash_on: ip",
    ] {
        let yaml = format!(
            "routes:\n  - {{path_prefix: /, backend: app}}\nbackends:\n  - {{name: app, servers: [\"{dead}\", \"{}\"], {balance}}}\n",
            good.addr()
        );
        let gw = TestGateway::start(&yaml);
        let mut client = Client::connect(gw.addr).await;
        for _ in 0..10 {
            assert_eq!(client.get("/x").await.0, 200, "{balance}");
        }
    }
}
