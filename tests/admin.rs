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
    // By route and backend: the longer prefix took the three GETs.
    let by_route = &json(&admin_stats)["routes"];
    assert_eq!(by_route["long"]["requests_count"]["success"], 3);
    assert_eq!(by_route["long"]["backend"], "b");
    assert_eq!(by_route["short"]["requests_count"]["success"], 0);
    assert_eq!(
        json(&admin_stats)["backends"]["b"]["requests_count"]["success"],
        3
    );

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

    // The dashboard: one page, nothing loaded from elsewhere.
    let (status, headers, page) = fetch(admin, "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("fetch(path"),
        "the page reads the JSON endpoints"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external asset"
    );

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

/// `promtool check metrics` on `text`; `None` (skipped) when promtool is
/// missing and `RGATE_PROMTOOL_TESTS` is not `1`.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let required = std::env::var("RGATE_PROMTOOL_TESTS").is_ok_and(|v| v == "1");
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(
                !required,
                "RGATE_PROMTOOL_TESTS=1 but promtool cannot run: {error}"
            );
            eprintln!("skipped the promtool check: {error}; set RGATE_PROMTOOL_TESTS=1 to make this a failure");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

/// The value of the sample `series` (name and labels exactly as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_traffic_refusals_endpoints_and_reloads_and_pass_promtool() {
    let up = named_upstream("a", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "an HMAC secret of at least thirty-two bytes";
    std::fs::write(dir.path().join("secret"), secret).unwrap();
    let path = dir.path().join("rgate.yml");
    write(
        &path,
        &format!(
            "jwt:\n  - {{name: hs, issuer: https://issuer.test, secret_file: secret}}\n\
             routes:\n  - {{name: open, path_prefix: /open, backend: a, rate_limit: {{requests: 2, per: 1m, key: route}}}}\n\
             \x20 - {{name: closed, path_prefix: /closed, backend: a, auth: {{provider: hs}}}}\n\
             \x20 - {{name: broken, path_prefix: /broken, backend: bad, retries: {{attempts: 1}}}}\n\
             backends:\n  - {{name: a, servers: [\"{}\"]}}\n\
             \x20 - name: bad\n    servers: [\"{}\", \"{}\"]\n\
             \x20   outlier: {{consecutive_errors: 1, max_ejected_percent: 50}}\n\
             \x20   circuit_breaker: {{min_requests: 1, error_ratio: 0.5}}\n\
             \x20   backend_circuit_breaker: {{min_requests: 1, error_ratio: 0.5}}\n",
            up.addr(),
            closed_port().await,
            closed_port().await
        ),
    );
    let gw = TestGateway::start_file_with_admin(&path);
    let admin = gw.admin();
    // A refused connection: the breaker of that endpoint opens and outlier
    // detection ejects it (at most half of the two).
    assert_eq!(fetch(gw.addr, "/broken").await.0, 503);
    for _ in 0..3 {
        fetch(gw.addr, "/open/x").await; // 200, 200, 429
    }
    fetch(gw.addr, "/closed/x").await; // 401 missing
    let mut client = Client::connect(gw.addr).await;
    let request = http::Request::get("/closed/x")
        .header("host", "gateway.test")
        .header("authorization", "Bearer not.a.token")
        .body(Full::new(Bytes::new()))
        .unwrap();
    read(client.send(request).await).await; // 401 malformed
    let (status, _, _) = post(admin, "/config/reload").await;
    assert_eq!(status, 200);

    let (status, headers, body) = fetch(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    let series = |name: &str| sample(&text, name);
    // Each series after the traffic above (the 429 and the 401s reached no
    // upstream; a refused connection sends nothing).
    for (name, want) in [
        (
            r#"rgate_requests_total{route="open",backend="a",code="2xx"}"#,
            2.0,
        ),
        (
            r#"rgate_requests_total{route="open",backend="a",code="4xx"}"#,
            1.0,
        ),
        (
            r#"rgate_requests_total{route="closed",backend="a",code="4xx"}"#,
            2.0,
        ),
        (r#"rgate_rate_limited_total{route="open"}"#, 1.0),
        (
            r#"rgate_auth_failures_total{route="closed",reason="missing"}"#,
            1.0,
        ),
        (
            r#"rgate_auth_failures_total{route="closed",reason="malformed"}"#,
            1.0,
        ),
        (
            r#"rgate_request_duration_seconds_count{route="open",backend="a"}"#,
            3.0,
        ),
        (
            r#"rgate_request_duration_seconds_bucket{le="+Inf",route="open",backend="a"}"#,
            3.0,
        ),
        (r#"rgate_upstream_requests_total{backend="a"}"#, 2.0),
        (r#"rgate_retries_total{backend="a"}"#, 0.0),
        (r#"rgate_retry_budget_exhausted_total{backend="a"}"#, 0.0),
        (r#"rgate_upstream_requests_total{backend="bad"}"#, 0.0),
        (r#"rgate_outlier_ejections_total{backend="bad"}"#, 1.0),
        (
            r#"rgate_circuit_breaker_transitions_total{backend="bad",to="open"}"#,
            1.0,
        ),
        (
            r#"rgate_circuit_breaker_transitions_total{backend="a",to="open"}"#,
            0.0,
        ),
        (
            r#"rgate_backend_circuit_transitions_total{backend="bad",to="open"}"#,
            1.0,
        ),
        (r#"rgate_config_reloads_total{result="applied"}"#, 1.0),
    ] {
        assert_eq!(series(name), want, "{name}");
    }

    let endpoint = format!(r#"{{backend="a",endpoint="{}"}}"#, up.addr());
    assert_eq!(series(&format!("rgate_endpoint_up{endpoint}")), 1.0);
    assert_eq!(series(&format!("rgate_circuit_open{endpoint}")), 0.0);
    let opened = series(r#"rgate_upstream_connections_opened_total{backend="a"}"#);
    assert!((1.0..=2.0).contains(&opened), "{opened}");
    assert_eq!(series("rgate_config_version"), 2.0);
    assert_eq!(series("rgate_requests_in_flight"), 0.0);
    assert!(series("process_resident_memory_bytes") > 0.0);
    assert!(series("process_open_fds") > 0.0);
    // Bounded labels: no path or client data reaches a label.
    assert!(!text.contains("/open/x") && !text.contains("not.a.token"));

    if let Some((ok, said)) = promtool_check(&text) {
        assert!(ok, "promtool check metrics:\n{said}\n{text}");
    }

    // Prometheus itself asks for OpenMetrics.
    let mut client = Client::connect(admin).await;
    let request = http::Request::get("/metrics")
        .header("host", "admin.test")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = read(client.send(request).await).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
}
