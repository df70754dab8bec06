//! The admin plane over real sockets: health and readiness (Docker listing,
//! drain), `/stats`, `/routes`, `/backends` after traffic, and reloads
//! through `POST /config/reload`, good and refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::*;
use http_body_util::Full;

async fn post(addr: std::net::SocketAddr, path: &str) -> (u16, http::HeaderMap, Bytes) {
    let mut client = Client::connect(addr).await;
    let request = http::Request::post(path)
        .header("host", "admin.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    read(client.send(request).await).await
}

fn write(path: &std::path::Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap();
}

#[tokio::test]
async fn health_stats_routes_and_backends_answer_after_traffic() {
    let (a, b) = (
        named_upstream("a", |_| {}).await,
        named_upstream("b", |_| {}).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    write(
        &path,
        &format!(
            "routes:\n  - {{name: short, path_prefix: /api, backend: a}}\n\
             \x20 - {{name: long, path_prefix: /api/orders, backend: b, methods: [GET], cors: {{allow_origins: [\"https://app.example.com\"]}}}}\n\
             \x20 - {{name: hosted, host: shop.example.com, path_prefix: /, backend: a}}\n\
             backends:\n  - {{name: a, servers: [\"{}\"]}}\n  - {{name: b, servers: [\"{}\"]}}\n",
            a.addr(),
            b.addr()
        ),
    );
    let gw = TestGateway::start_file_with_admin(&path);
    let admin = gw.admin();
    for _ in 0..3 {
        assert_eq!(fetch(gw.addr, "/api/orders/1").await.0, 200);
    }
    assert_eq!(fetch(gw.addr, "/nowhere").await.0, 404);

    let (status, _, body) = fetch(admin, "/healthz").await;
    assert_eq!(
        (status, json(&body)),
        (200, serde_json::json!({"status": "ok"}))
    );
    let (status, _, body) = fetch(admin, "/readyz").await;
    assert_eq!(status, 200, "static backends need no listing: {body:?}");

    // The same document as the main port's /stats.
    let (_, _, main_stats) = fetch(gw.addr, "/stats").await;
    let (status, headers, admin_stats) = fetch(admin, "/stats").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(json(&admin_stats), json(&main_stats));
    assert_eq!(json(&admin_stats)["requests_count"]["success"], 3);

    // Precedence order: the host route, then the longer prefix.
    let (_, _, body) = fetch(admin, "/routes").await;
    let routes = json(&body);
    assert_eq!(routes["version"], 1);
    assert!(routes["loaded_at"].as_u64().unwrap() > 1_700_000_000);
    let names: Vec<&str> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hosted", "long", "short"]);
    let long = &routes["routes"][1];
    assert_eq!(long["backend"], "b");
    assert_eq!(long["methods"], serde_json::json!(["GET"]));
    assert_eq!(long["policy"], serde_json::json!(["cors"]));
    assert_eq!(routes["routes"][0]["host"], "shop.example.com");

    let (_, _, body) = fetch(admin, "/backends").await;
    let backends = json(&body);
    let b_view = &backends["backends"][1];
    assert_eq!(b_view["name"], "b");
    assert_eq!(b_view["source"], "static");
    assert_eq!(b_view["listed"], true);
    let endpoint = &b_view["endpoints"][0];
    assert_eq!(endpoint["address"], b.addr().to_string());
    assert_eq!(endpoint["healthy"], true);
    assert_eq!(endpoint["ejected"], false);
    assert_eq!(endpoint["breaker"], "closed");
    assert_eq!(endpoint["in_flight"], 0);

    // Unknown paths and wrong methods.
    let (status, _, body) = fetch(admin, "/nope").await;
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (404, "not_found".into())
    );
    let (status, headers, _) = post(admin, "/routes").await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, headers, _) = fetch(admin, "/config/reload").await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    // Admin requests are not traffic: the main port's counts did not move.
    let (_, _, after) = fetch(admin, "/stats").await;
    assert_eq!(
        json(&after)["requests_count"],
        json(&admin_stats)["requests_count"]
    );
}

#[tokio::test]
async fn reloads_through_the_admin_plane_apply_or_list_every_problem() {
    let up = named_upstream("a", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    let backend = format!("backends:\n  - {{name: a, servers: [\"{}\"]}}\n", up.addr());
    write(
        &path,
        &format!("routes:\n  - {{path_prefix: /one, backend: a}}\n{backend}"),
    );
    let gw = TestGateway::start_file_with_admin(&path);
    let admin = gw.admin();

    write(
        &path,
        &format!("routes:\n  - {{path_prefix: /one, backend: a}}\n  - {{path_prefix: /two, backend: a}}\n{backend}"),
    );
    let (status, _, body) = post(admin, "/config/reload").await;
    assert_eq!(status, 200, "{body:?}");
    let reloaded = json(&body);
    assert!(reloaded["version"].as_u64().unwrap() >= 2);
    assert_eq!(reloaded["routes"], 2);
    assert_eq!(fetch(gw.addr, "/two").await.0, 200);
    let version = reloaded["version"].clone();

    // Two problems at once: both listed, with file and key path.
    write(
        &path,
        &format!("routes:\n  - {{path_prefix: /one, backend: nope}}\n  - {{path_prefix: two, backend: a}}\n{backend}"),
    );
    let (status, _, body) = post(admin, "/config/reload").await;
    assert_eq!(status, 400, "{body:?}");
    let refused = json(&body);
    assert_eq!(refused["error"], "invalid_config");
    let problems = refused["problems"].as_array().unwrap();
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"routes[0].backend"), "{problems:?}");
    assert!(paths.contains(&"routes[1].path_prefix"), "{problems:?}");
    assert!(problems[0]["file"].as_str().unwrap().ends_with("rgate.yml"));
    // The old config keeps serving, under its version.
    assert_eq!(fetch(gw.addr, "/two").await.0, 200);
    let (_, _, body) = fetch(admin, "/routes").await;
    assert_eq!(json(&body)["version"], version);
}

#[tokio::test]
async fn readiness_waits_for_docker_and_reports_the_drain() {
    let slow = named_upstream("slow", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    // A Docker backend whose daemon does not exist: never listed.
    write(
        &path,
        &format!(
            "docker: {{endpoint: \"unix://{}/no-docker.sock\"}}\n\
             routes:\n  - {{path_prefix: /c, backend: containers}}\n  - {{path_prefix: /, backend: slow}}\n\
             backends:\n  - {{name: containers, match_labels: [app=x]}}\n  - {{name: slow, servers: [\"{}\"]}}\n",
            dir.path().display(),
            slow.addr()
        ),
    );
    let gw = TestGateway::start_file_with_admin(&path);
    let admin = gw.admin();
    let (status, _, body) = fetch(admin, "/readyz").await;
    assert_eq!(status, 503);
    let body = json(&body);
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["reason"].as_str().unwrap().contains("containers"),
        "{body}"
    );
    let (status, _, _) = fetch(admin, "/healthz").await;
    assert_eq!(status, 200, "alive, if not ready");

    // A request in flight holds the drain open; /readyz says so meanwhile.
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { fetch(addr, "/slow/1500").await.0 });
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.requests() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::task::spawn_blocking(move || gw.shutdown());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = fetch(admin, "/readyz").await;
        if status == 503 && json(&body)["reason"] == "draining" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reported draining: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight.await.unwrap(), 200, "the drain lets it finish");
    stopping.await.unwrap();
    // Gone with the gateway.
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}
