//! Containment over real sockets: a saturated backend refuses at once instead
//! of queueing, and frees its slots when requests finish.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::time::{Duration, Instant};

use gateway::*;
use rgate_upstream::{Config as UpstreamConfig, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulkhead_refuses_excess_requests_at_once() {
    let up = Upstream::spawn(UpstreamConfig::default()).await.unwrap();
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - {{name: app, servers: [\"{}\"], max_in_flight: 2}}\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move { fetch(addr, "/slow/600").await.0 })
        })
        .collect();
    // Wait until both slow requests occupy the bulkhead.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.requests() < 2 {
        assert!(
            Instant::now() < deadline,
            "slow requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..4 {
        let started = Instant::now();
        let (status, _, body) = fetch(gw.addr, "/fast").await;
        assert_eq!(status, 503);
        assert_eq!(
            json(&body),
            serde_json::json!({"error": "backend_saturated", "backend": "app"})
        );
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "refused without queueing"
        );
    }
    for request in slow {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(
        up.requests(),
        2,
        "refused requests never reached the upstream"
    );
    // Slots are free again once the slow responses finished.
    assert_eq!(fetch(gw.addr, "/fast").await.0, 200);
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_after_consecutive_errors_and_rejoins() {
    let bad = named_upstream("bad", |c| c.error_rate = 1.0).await;
    let good = named_upstream("good", |_| {}).await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - name: app\n    servers: [\"{}\", \"{}\"]\n    balance: round_robin\n    \
         outlier: {{consecutive_errors: 3, eject_for: 500ms, max_ejected_percent: 50}}\n",
        bad.addr(),
        good.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    let mut errors = 0;
    for _ in 0..40 {
        if client.get("/x").await.0 == 503 {
            errors += 1;
        }
    }
    assert_eq!(
        bad.requests(),
        3,
        "ejected after its third failure in a row"
    );
    assert_eq!(errors, 3, "only the requests that ejected it failed");
    assert_eq!(good.requests(), 37);

    // After the cooldown the endpoint is back in rotation.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..4 {
        client.get("/x").await;
    }
    assert!(bad.requests() > 3, "rejoined after eject_for");
}

#[tokio::test]
async fn the_circuit_breaker_opens_on_failures_and_closes_after_a_good_probe() {
    let healthy = named_upstream("healthy", |_| {}).await;
    let flaky = closed_port().await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - name: app\n    servers: [\"{flaky}\", \"{}\"]\n    balance: round_robin\n    \
         circuit_breaker: {{error_ratio: 0.5, min_requests: 3, window: 10s, open_for: 400ms, half_open_probes: 1}}\n",
        healthy.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    // Refused connections are retried on the healthy endpoint: clients see no error,
    // while the breaker counts the flaky endpoint's failures and opens.
    for _ in 0..10 {
        assert_eq!(client.get("/x").await.0, 200);
    }
    // The endpoint recovers; its breaker is still open, so it gets nothing yet.
    let listener = tokio::net::TcpListener::bind(flaky).await.unwrap();
    let recovered = Upstream::spawn_with_listener(
        listener,
        UpstreamConfig {
            name: "recovered".into(),
            ..UpstreamConfig::default()
        },
    )
    .unwrap();
    for _ in 0..6 {
        assert_eq!(client.get("/x").await.0, 200);
    }
    assert_eq!(recovered.requests(), 0, "open breaker: no traffic");
    // After open_for, one probe succeeds and closes the breaker: traffic returns.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        assert_eq!(client.get("/x").await.0, 200);
    }
    assert!(
        recovered.requests() >= 4,
        "closed again: {} requests",
        recovered.requests()
    );
}

#[tokio::test]
async fn every_endpoint_unavailable_is_a_fast_503() {
    let failing = named_upstream("failing", |c| c.error_rate = 1.0).await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - name: app\n    servers: [\"{}\"]\n    \
         circuit_breaker: {{min_requests: 2, open_for: 10s}}\n",
        failing.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    assert_eq!(client.get("/x").await.0, 503);
    assert_eq!(client.get("/x").await.0, 503);
    let (status, _, body) = client.get("/x").await;
    assert_eq!(status, 503);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "endpoints_unavailable", "backend": "app"})
    );
    assert_eq!(
        failing.requests(),
        2,
        "the open breaker sends nothing upstream"
    );
}

#[tokio::test]
async fn the_backend_circuit_opens_when_the_backend_fails_as_a_whole_and_recovers() {
    let down = closed_port().await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - name: app\n    servers: [\"{down}\"]\n    \
         backend_circuit_breaker: {{min_requests: 4, open_for: 400ms, half_open_probes: 1}}\n"
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    for _ in 0..4 {
        let (status, _, body) = client.get("/x").await;
        assert_eq!(status, 503);
        assert_eq!(json(&body)["error"], "connect_failed");
    }
    // The backend came back, but its circuit is open: answered at once, nothing sent.
    let listener = tokio::net::TcpListener::bind(down).await.unwrap();
    let back = Upstream::spawn_with_listener(listener, UpstreamConfig::default()).unwrap();
    let (status, _, body) = client.get("/x").await;
    assert_eq!(status, 503);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "circuit_open", "backend": "app"})
    );
    assert_eq!(back.requests(), 0, "an open circuit sends nothing upstream");
    // After open_for, one good probe closes it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..5 {
        assert_eq!(client.get("/x").await.0, 200);
    }
    assert_eq!(back.requests(), 5);
}

#[tokio::test]
async fn one_sick_endpoint_that_retries_absorb_never_opens_the_backend_circuit() {
    let sick = named_upstream("sick", |c| c.error_rate = 1.0).await;
    let first = named_upstream("first", |_| {}).await;
    let second = named_upstream("second", |_| {}).await;
    // A third of the attempts fail, above the 30% threshold; but clients get
    // the retries' answers, and those are what the backend circuit judges.
    let yaml = format!(
        "routes:\n  - path_prefix: /\n    backend: app\n    \
         retries: {{attempts: 2, on: [503], budget: 1.0}}\n\
         backends:\n  - name: app\n    servers: [\"{}\", \"{}\", \"{}\"]\n    balance: round_robin\n    \
         backend_circuit_breaker: {{error_ratio: 0.3, min_requests: 5}}\n",
        sick.addr(),
        first.addr(),
        second.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    for _ in 0..60 {
        assert_eq!(client.get("/x").await.0, 200);
    }
    assert!(
        sick.requests() >= 15,
        "the sick endpoint kept its share of first attempts: {}",
        sick.requests()
    );
}

/// Which upstream answered each of `n` GETs.
async fn answered_by(client: &mut Client, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let (_, headers, _) = client.get("/x").await;
        names.push(headers["x-upstream-name"].to_str().unwrap().to_owned());
    }
    names
}

#[tokio::test]
async fn an_endpoint_failing_its_health_check_gets_no_traffic() {
    // Error injection applies to /status/200, so "sick" fails its probes.
    let sick = named_upstream("sick", |c| c.error_rate = 1.0).await;
    let well = named_upstream("well", |_| {}).await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - name: app\n    servers: [\"{}\", \"{}\"]\n    balance: round_robin\n    \
         health_check: {{path: /status/200, interval: 100ms, timeout: 500ms, unhealthy_after: 2, healthy_after: 1}}\n",
        sick.addr(),
        well.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    // Within a few probe intervals the sick endpoint leaves the rotation.
    let deadline = Instant::now() + Duration::from_secs(3);
    while answered_by(&mut client, 4)
        .await
        .iter()
        .any(|n| n == "sick")
    {
        assert!(
            Instant::now() < deadline,
            "the sick endpoint was never taken out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = answered_by(&mut client, 20).await;
    assert!(names.iter().all(|n| n == "well"), "{names:?}");
}

#[tokio::test]
async fn wait_healthy_keeps_new_endpoints_out_until_they_pass() {
    let first = named_upstream("first", |_| {}).await;
    let second = named_upstream("second", |_| {}).await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - name: app\n    servers: [\"{}\", \"{}\"]\n    \
         health_check: {{interval: 1s, timeout: 500ms, healthy_after: 2, wait_healthy: true}}\n",
        first.addr(),
        second.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    // Before two passing probes (about one interval), nothing may take traffic.
    let (status, _, body) = client.get("/x").await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"], "endpoints_unavailable");
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        if client.get("/x").await.0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoints never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = answered_by(&mut client, 40).await;
    assert!(
        names.iter().any(|n| n == "first") && names.iter().any(|n| n == "second"),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_passing_health_probe_ends_an_ejection_early() {
    // Real traffic fails (error injection) while /health, spared by the stub, passes.
    let flaky = named_upstream("flaky", |c| c.error_rate = 1.0).await;
    let well = named_upstream("well", |_| {}).await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\n\
         backends:\n  - name: app\n    servers: [\"{}\", \"{}\"]\n    balance: round_robin\n    \
         outlier: {{consecutive_errors: 1, eject_for: 1h, max_ejected_percent: 50}}\n    \
         health_check: {{path: /health, interval: 1s, healthy_after: 1}}\n",
        flaky.addr(),
        well.addr()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = Client::connect(gw.addr).await;
    // Start right after the first probe round, a full interval before the next.
    let deadline = Instant::now() + Duration::from_secs(3);
    while flaky.requests() == 0 {
        assert!(Instant::now() < deadline, "no health probe arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first request to "flaky" fails and ejects it for an hour...
    let names = answered_by(&mut client, 6).await;
    assert_eq!(
        names.iter().filter(|n| *n == "flaky").count(),
        1,
        "{names:?}"
    );
    // ...yet the next passing probe brings it back well before that.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !answered_by(&mut client, 2)
        .await
        .iter()
        .any(|n| n == "flaky")
    {
        assert!(
            Instant::now() < deadline,
            "a passing probe did not readmit the endpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
