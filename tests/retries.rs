//! Retry policy over real sockets: retried conditions, idempotency rules,
//! and the budget that keeps retries from amplifying an outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use bytes::Bytes;
use gateway::*;
use http::Request;
use http_body_util::Full;
use rgate_upstream::Upstream;

async fn upstream(name: &str, error_rate: f64) -> Upstream {
    named_upstream(name, |c| c.error_rate = error_rate).await
}

fn config(servers: &[std::net::SocketAddr], retries: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "routes:\n  - {{path_prefix: /, backend: app, retries: {retries}}}\n\
         backends:\n  - {{name: app, servers: [{}], balance: round_robin}}\n",
        servers.join(", ")
    )
}

#[tokio::test]
async fn retried_statuses_go_to_another_endpoint_within_the_budget() {
    let failing = upstream("failing", 1.0).await;
    let healthy = upstream("healthy", 0.0).await;
    let gw = TestGateway::start(&config(
        &[failing.addr(), healthy.addr()],
        "{attempts: 2, on: [503], budget: 0.2}",
    ));
    let mut client = Client::connect(gw.addr).await;
    let requests = 400u64;
    let mut errors = 0u64;
    for _ in 0..requests {
        if client.get("/x").await.0 != 200 {
            errors += 1;
        }
    }
    let upstream_requests = failing.requests() + healthy.requests();
    let retries = upstream_requests - requests;
    // Half the first attempts fail; the budget allows 20% of requests plus a reserve of 10.
    assert!(
        retries <= requests / 5 + 10,
        "{retries} retries for {requests} requests"
    );
    assert!(retries >= requests / 5, "the budget was used: {retries}");
    assert_eq!(
        errors,
        failing.requests() - retries,
        "failures the budget could not cover reach the client"
    );
    assert!(
        upstream_requests as f64 / requests as f64 <= 1.2 + 10.0 / requests as f64,
        "amplification {upstream_requests}/{requests}"
    );
}

#[tokio::test]
async fn a_post_is_never_replayed_but_an_idempotency_key_allows_it() {
    let failing = upstream("failing", 1.0).await;
    let healthy = upstream("healthy", 0.0).await;
    let gw = TestGateway::start(&config(&[failing.addr(), healthy.addr()], "{on: [503]}"));
    let mut client = Client::connect(gw.addr).await;
    let post = |key: Option<&str>| {
        let mut request = Request::post("/orders").header("host", "a");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    // Round robin: the first request of each pair goes to the failing endpoint.
    let (status, _, _) = read(client.send(post(None)).await).await;
    assert_eq!(status, 503, "a plain POST that failed is answered as is");
    assert_eq!(healthy.requests(), 0);
    assert_eq!(client.get("/skip").await.0, 200, "advance the rotation");
    let (status, headers, _) = read(client.send(post(Some("order-7"))).await).await;
    assert_eq!(status, 200, "a keyed POST is replayed on another endpoint");
    assert_eq!(headers["x-upstream-name"], "healthy");
}

#[tokio::test]
async fn attempts_1_disables_retries() {
    let dead = closed_port().await;
    let healthy = upstream("healthy", 0.0).await;
    let gw = TestGateway::start(&config(&[dead, healthy.addr()], "{attempts: 1}"));
    let mut client = Client::connect(gw.addr).await;
    let statuses: Vec<u16> = [(); 4].iter().map(|_| 0).collect();
    let mut seen = statuses;
    for status in &mut seen {
        *status = client.get("/x").await.0;
    }
    assert_eq!(
        seen,
        [503, 200, 503, 200],
        "round robin alternates; nothing is retried"
    );
}

#[tokio::test]
async fn a_small_body_is_kept_and_resent_when_the_connection_breaks() {
    let breaking = scripted_upstream(b"").await;
    let healthy = upstream("healthy", 0.0).await;
    let gw = TestGateway::start(&config(
        &[breaking, healthy.addr()],
        "{budget: 1.0, replay_body_limit: 1024}",
    ));
    let mut client = Client::connect(gw.addr).await;
    let put = |size: usize| {
        Request::put("/doc")
            .header("host", "a")
            .body(Full::new(Bytes::from(vec![b'x'; size])))
            .unwrap()
    };
    // Round robin: each PUT first meets the breaking endpoint, then is resent.
    for _ in 0..3 {
        let (status, _, body) = read(client.send(put(1000)).await).await;
        assert_eq!(status, 200, "{body:?}");
        assert_eq!(
            json(&body)["body_len"],
            1000,
            "the replay carried the whole body"
        );
        assert_eq!(client.get("/skip").await.0, 200, "advance the rotation");
    }
    // Over the limit the body streams upstream and cannot be resent.
    let (status, _, body) = read(client.send(put(2000)).await).await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"], "upstream_reset");
}
