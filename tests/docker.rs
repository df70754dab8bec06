//! Docker end-to-end tests: rgate as a black box in front of real containers.
//!
//! Ignored by default (they need a Docker daemon); `scripts/test.sh` runs
//! them with `RGATE_DOCKER_TESTS=1 cargo nextest run --run-ignored all`, and
//! then a Docker that does not answer fails them instead of skipping them.
//! Containers run `rgate-test-upstream:latest` on the host network at
//! 127.0.0.1; see `support/docker.rs` for isolation and clean-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/docker.rs"]
mod support;

#[path = "support/browser.rs"]
mod browser;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    config_yaml, free_port, unique_id, BackendSpec, Client, Container, DockerRun, Gateway,
    DEFAULT_BODY, DEFAULT_STATUS,
};

/// Discovery must see a started, stopped or (un)healthy container within this.
const DISCOVERY: Duration = Duration::from_secs(2);
/// Bound for waits on things the test does not time (initial discovery).
const SETTLE: Duration = Duration::from_secs(10);

/// The contract's label pair for an `app_name` unique to the test.
fn prod(app: &str) -> Vec<String> {
    vec![format!("app_name={app}"), "env=production".to_owned()]
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn container_needs_all_labels_to_get_traffic() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("pay");
    let full = run.container("full").production(&app).start();
    let only_app = run.container("only-app").label("app_name", &app).start();
    let only_env = run.container("only-env").label("env", "production").start();
    let staging = run
        .container("staging")
        .label("app_name", &app)
        .label("env", "staging")
        .start();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("pay", &prod(&app))], ""));

    gw.wait_routed_to("/pay/x", &full.name, Instant::now(), SETTLE);
    let r = gw.get("/pay/x");
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "a routed response carries X-Request-Id: {:?}",
        r.headers
    );
    let counts = gw.tally("/pay/x", 200);
    assert_eq!(
        counts,
        BTreeMap::from([(full.name.clone(), 200)]),
        "only {} carries both labels; {}, {} and {} must get nothing",
        full.name,
        only_app.name,
        only_env.name,
        staging.name
    );

    // "Why is my container not routed?": the admin plane says, per container,
    // once the first listing (partial matches included) is complete.
    let deadline = Instant::now() + SETTLE;
    while gw.admin_json("/readyz")["status"] != "ready" {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let backends = gw.admin_json("/backends");
    let pay = &backends["backends"][0];
    assert_eq!(pay["endpoints"].as_array().unwrap().len(), 1, "{pay}");
    let reasons: BTreeMap<String, String> = pay["excluded"]
        .as_array()
        .unwrap_or_else(|| panic!("no excluded list: {pay}"))
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons.get(&only_app.name).map(String::as_str),
        Some("missing label env=production"),
        "{reasons:?}"
    );
    // Sharing only a later label makes it another service's container.
    assert!(!reasons.contains_key(&only_env.name), "{reasons:?}");
    assert_eq!(
        reasons.get(&staging.name).map(String::as_str),
        Some("label env=staging, wants env=production"),
        "{reasons:?}"
    );
    assert!(!reasons.contains_key(&full.name));

    // Discovery's own counters, labelled by daemon: the first listing.
    assert!(gw.admin_metric("rgate_docker_resyncs_total{host=") >= 1.0);
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn the_dashboard_shows_containers_their_state_and_why_one_is_not_routed() {
    let Some(run) = DockerRun::new() else { return };
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let app = run.unique("shop");
    let routed = run.container("routed").production(&app).start();
    let partial = run.container("partial").label("app_name", &app).start();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("shop", &prod(&app))], ""));
    gw.wait_routed_to("/shop/x", &routed.name, Instant::now(), SETTLE);
    let deadline = Instant::now() + SETTLE;
    while gw.admin_json("/readyz")["status"] != "ready" {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gw.tally("/shop/x", 40).get(&routed.name), Some(&40));

    let url = format!("http://{}/", gw.admin);
    let dom = browser::dom(&chromium, &url);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded its data:\n{dom}"
    );
    let endpoint = browser::row(&dom, "data-endpoint", &routed.name)
        .unwrap_or_else(|| panic!("{} is not listed:\n{dom}", routed.name));
    assert!(endpoint.contains(">healthy<"), "{endpoint}");
    assert!(endpoint.contains("127.0.0.1:"), "{endpoint}");
    let excluded = browser::row(&dom, "data-excluded", &partial.name)
        .unwrap_or_else(|| panic!("{} is not listed as excluded:\n{dom}", partial.name));
    assert!(
        excluded.contains("missing label env=production"),
        "{excluded}"
    );
    // The route's row: its lifetime count (the readiness probes above
    // included) and a p99 from the last minute.
    let route = browser::row(&dom, "data-route", "/shop").unwrap_or_else(|| panic!("{dom}"));
    let lifetime: u64 = route
        .rsplit("<td class=\"num\">")
        .next()
        .and_then(|cell| cell.split('<').next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lifetime count: {route}"));
    assert!(lifetime >= 40, "{route}");
    assert!(route.contains(" ms<"), "{route}");

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    browser::screenshot(&chromium, &url, &shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn requests_spread_randomly_over_three_containers() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("spread");
    let containers: Vec<_> = (1..=3)
        .map(|i| run.container(&format!("c{i}")).production(&app).start())
        .collect();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("spread", &prod(&app))], ""));
    for c in &containers {
        gw.wait_routed_to("/spread/x", &c.name, Instant::now(), SETTLE);
    }

    let n = 300;
    let counts = gw.tally("/spread/x", n);
    let names: BTreeSet<_> = containers.iter().map(|c| c.name.clone()).collect();
    let seen: BTreeSet<_> = counts.keys().cloned().collect();
    assert_eq!(
        seen, names,
        "every answer from one of the 3 containers, each of them: {counts:?}"
    );
    for (name, &count) in &counts {
        assert!(
            count * 100 <= n * 60,
            "{name} got {count} of {n} requests (> 60%): {counts:?}"
        );
    }
    eprintln!("spread of {n} requests: {counts:?}");
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn container_started_while_running_gets_traffic_within_2s() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("late");
    let first = run.container("first").production(&app).start();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("late", &prod(&app))], ""));
    gw.wait_routed_to("/late/x", &first.name, Instant::now(), SETTLE);

    let late = run.container("late").production(&app).start();
    let took = gw.wait_routed_to("/late/x", &late.name, late.started_at, DISCOVERY);
    eprintln!("a container started while rgate runs got traffic {took:?} after docker run");
    // Found through its start event, which discovery counts.
    assert!(gw.admin_metric("rgate_docker_events_total{host=") >= 1.0);
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn stopped_container_gets_no_traffic_and_none_left_answers_503() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("stop");
    let stays = run.container("stays").production(&app).start();
    let goes = run.container("goes").production(&app).start();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("stop", &prod(&app))], ""));
    gw.wait_routed_to("/stop/x", &stays.name, Instant::now(), SETTLE);
    gw.wait_routed_to("/stop/x", &goes.name, Instant::now(), SETTLE);

    goes.stop();
    let stopped = Instant::now();
    let took = gw.wait_only_routed_to("/stop/x", &stays.name, 30, stopped, DISCOVERY);
    eprintln!("traffic went only to the remaining container {took:?} after docker stop");
    let counts = gw.tally("/stop/x", 100);
    assert_eq!(counts, BTreeMap::from([(stays.name.clone(), 100)]));

    stays.stop();
    let r = gw.wait_no_endpoints("/stop/x", "stop", Instant::now(), DISCOVERY);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "no_endpoints", "backend": "stop"}),
        "503 body once no container is left"
    );
    assert!(
        r.elapsed < Duration::from_secs(1),
        "a 503 for an empty backend must be fast, took {:?}",
        r.elapsed
    );
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn docker_stop_under_load_gives_no_client_errors() {
    steady_get_load_survives("stop", Container::stop);
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn docker_kill_under_load_gives_no_client_errors_for_gets() {
    // SIGKILL: requests in flight on the container break mid-exchange; GETs
    // are replayed on another container, so clients see no error.
    steady_get_load_survives("kill", Container::kill);
}

/// Runs a steady, bounded GET load over three containers, applies `disrupt`
/// (named `action` in messages) to one of them mid-load, and asserts that no
/// client request failed.
fn steady_get_load_survives(action: &str, disrupt: fn(&Container)) {
    const THREADS: usize = 2;
    const MAX_PER_THREAD: usize = 4000;
    const MAX_TIME: Duration = Duration::from_secs(8);

    let Some(run) = DockerRun::new() else { return };
    let app = run.unique(action);
    let containers: Vec<_> = (1..=3)
        .map(|i| run.container(&format!("c{i}")).production(&app).start())
        .collect();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("load", &prod(&app))], ""));
    for c in &containers {
        gw.wait_routed_to("/load/x", &c.name, Instant::now(), SETTLE);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load_start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (stop, done, addr) = (Arc::clone(&stop), Arc::clone(&done), gw.addr);
            thread::spawn(move || {
                let mut client = Client::new(addr);
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                let mut errors = Vec::new();
                for _ in 0..MAX_PER_THREAD {
                    if stop.load(Ordering::Relaxed) || load_start.elapsed() > MAX_TIME {
                        break;
                    }
                    match client.get("/load/x") {
                        Ok(r) if r.status == 200 => {
                            let name = r.upstream().unwrap_or("?").to_owned();
                            *counts.entry(name).or_default() += 1;
                        }
                        Ok(r) => {
                            errors.push(format!("{:?}: {}", load_start.elapsed(), r.summary()))
                        }
                        Err(e) => {
                            errors.push(format!("{:?}: {e}", load_start.elapsed()));
                            client = Client::new(addr);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    // A steady load, not a flood: about 1000 req/s per thread at most.
                    thread::sleep(Duration::from_millis(1));
                }
                (counts, errors)
            })
        })
        .collect();

    // Let the load run a little, stop one container, keep the load on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while done.load(Ordering::Relaxed) < 200 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let before_stop = done.load(Ordering::Relaxed);
    let victim = &containers[1];
    disrupt(victim);
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_millis(1500) && load_start.elapsed() < MAX_TIME {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for w in workers {
        let (c, e) = w.join().expect("load thread");
        for (name, n) in c {
            *counts.entry(name).or_default() += n;
        }
        errors.extend(e);
    }
    let total = done.load(Ordering::Relaxed);
    eprintln!(
        "{total} requests ({before_stop} before `docker {action}` of {}), {} errors: {counts:?}",
        victim.name,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} of {total} requests failed around `docker {action} {}` (it returned at {:?} into the load); first ones:\n{}\nrgate log:\n{}",
        errors.len(),
        victim.name,
        stopped.duration_since(load_start),
        errors.iter().take(10).cloned().collect::<Vec<_>>().join("\n"),
        gw.log_text()
    );
    assert!(
        total >= 400,
        "the load was too thin to mean anything: {total} requests"
    );
    assert!(
        counts.get(&victim.name).is_some_and(|&n| n > 0),
        "{} took no traffic before `docker {action}`: {counts:?}",
        victim.name
    );
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn start_again_and_restart_recover_traffic() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("again");
    let c = run.container("c").production(&app).start();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("again", &prod(&app))], ""));
    gw.wait_routed_to("/again/x", &c.name, Instant::now(), SETTLE);

    c.stop();
    gw.wait_no_endpoints("/again/x", "again", Instant::now(), DISCOVERY);
    let started = c.start_again();
    let took = gw.wait_routed_to("/again/x", &c.name, started, DISCOVERY);
    eprintln!("traffic back {took:?} after docker start");

    let restarted = c.restart();
    let took = gw.wait_routed_to("/again/x", &c.name, restarted, DISCOVERY);
    eprintln!("traffic back {took:?} after docker restart");
    let counts = gw.tally("/again/x", 50);
    assert_eq!(counts, BTreeMap::from([(c.name, 50)]));
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn zero_containers_at_start_answers_503_within_1s() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("empty");
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("empty", &prod(&app))], ""));

    let start = Instant::now();
    let r = gw.get("/empty/x");
    let took = start.elapsed();
    assert_eq!(r.status, 503, "{}", r.summary());
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "no_endpoints", "backend": "empty"})
    );
    assert!(took < Duration::from_secs(1), "first request took {took:?}");
    eprintln!("first request to an empty backend: 503 in {took:?}");
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn unreachable_docker_daemon_gives_503_and_rgate_keeps_serving() {
    // Needs no daemon at all: the endpoint is a socket that does not exist.
    let socket = format!("/tmp/rgate-missing-{}.sock", unique_id());
    let extra = format!("docker:\n  endpoint: unix://{socket}\n");
    let mut gw = Gateway::start(&config_yaml(
        &[BackendSpec::new("svc", &prod("svc"))],
        &extra,
    ));

    let r = gw.get("/svc/x");
    assert_eq!(r.status, 503, "{}", r.summary());
    let body = r.json();
    assert_eq!(body["backend"], "svc", "503 body names the backend: {body}");
    assert!(body["error"].is_string(), "503 body says why: {body}");
    assert!(
        r.elapsed < Duration::from_secs(1),
        "503 took {:?}",
        r.elapsed
    );

    let d = gw.get("/elsewhere");
    assert_eq!(
        (d.status, d.text().as_str()),
        (DEFAULT_STATUS, DEFAULT_BODY)
    );

    // Keep asking while rgate retries the daemon in the background.
    let watch = Instant::now();
    let mut rounds = 0_u64;
    while watch.elapsed() < Duration::from_millis(1500) {
        assert_eq!(gw.get("/svc/x").status, 503);
        assert_eq!(gw.get("/stats").status, 200);
        rounds += 1;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(gw.is_running(), "rgate exited:\n{}", gw.log_text());

    let s = gw.get("/stats");
    assert_eq!(s.status, 200, "{}", s.summary());
    let stats = s.json();
    let success = stats["requests_count"]["success"].as_u64();
    let error = stats["requests_count"]["error"].as_u64();
    assert!(success.is_some() && error.is_some(), "/stats: {stats}");
    assert!(
        error.unwrap_or(0) >= rounds + 2,
        "every 503 and the default response count as errors: {stats}"
    );
    for key in ["average", "p95", "p99"] {
        assert!(
            stats["latency_ms"][key].is_number(),
            "/stats latency_ms.{key}: {stats}"
        );
    }
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn healthcheck_starting_or_unhealthy_gets_no_traffic() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("health");
    let plain = run.container("plain").production(&app).start();
    // Healthy only while /tmp/healthy exists and its own /health answers
    // (busybox wget). The long start period keeps it `starting` until the
    // first success; after that one failure makes it `unhealthy`.
    let port = free_port();
    let cmd =
        format!("test -f /tmp/healthy && wget -q -O /dev/null http://127.0.0.1:{port}/health");
    let checked = run
        .container("checked")
        .production(&app)
        .port(port)
        .docker_args(&[
            "--health-cmd",
            &cmd,
            "--health-interval",
            "300ms",
            "--health-timeout",
            "2s",
            "--health-retries",
            "1",
            "--health-start-period",
            "60s",
        ])
        .start();
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("hc", &prod(&app))], ""));
    gw.wait_routed_to("/hc/x", &plain.name, Instant::now(), SETTLE);

    // `starting`: watched for 1.5 s of traffic, none of it to `checked`.
    assert_eq!(checked.health(), "starting");
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(1500) {
        let r = gw.get("/hc/x");
        assert_eq!(
            (r.status, r.upstream()),
            (200, Some(plain.name.as_str())),
            "{} is `starting` and must get no traffic: {}",
            checked.name,
            r.summary()
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(checked.health(), "starting");

    // `healthy`: traffic within 2 s of Docker saying so.
    checked.exec(&["touch", "/tmp/healthy"]);
    checked.wait_health("healthy", SETTLE);
    let took = gw.wait_routed_to("/hc/x", &checked.name, Instant::now(), DISCOVERY);
    eprintln!("healthy container got traffic {took:?} after docker reported it healthy");

    // `unhealthy`: no traffic within 2 s of Docker saying so.
    checked.exec(&["rm", "/tmp/healthy"]);
    checked.wait_health("unhealthy", SETTLE);
    let took = gw.wait_only_routed_to("/hc/x", &plain.name, 30, Instant::now(), DISCOVERY);
    eprintln!("unhealthy container out of rotation {took:?} after docker reported it");
    let counts = gw.tally("/hc/x", 100);
    assert_eq!(counts, BTreeMap::from([(plain.name, 100)]));
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn port_comes_from_label_rgate_port_else_backend_port() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("ports");
    let key_port = free_port();
    // Listens on the backend's `port:`, has no `rgate.port` label.
    let by_key = run
        .container("by-key")
        .production(&app)
        .port(key_port)
        .without_port_label()
        .start();
    // Listens elsewhere, said by its `rgate.port` label, which wins over `port:`.
    let by_label = run.container("by-label").production(&app).start();
    assert_ne!(by_label.port, key_port);
    // Neither label nor backend port, and the image exposes no port: skipped.
    let other = run.unique("noport");
    let _no_port = run
        .container("no-port")
        .production(&other)
        .without_port_label()
        .start();
    let gw = Gateway::start(&config_yaml(
        &[
            BackendSpec::new("ports", &prod(&app)).with_port(key_port),
            BackendSpec::new("noport", &prod(&other)),
        ],
        "",
    ));

    gw.wait_routed_to("/ports/x", &by_key.name, Instant::now(), SETTLE);
    gw.wait_routed_to("/ports/x", &by_label.name, Instant::now(), SETTLE);
    let counts = gw.tally("/ports/x", 100);
    let seen: BTreeSet<_> = counts.keys().cloned().collect();
    assert_eq!(
        seen,
        BTreeSet::from([by_key.name, by_label.name]),
        "{counts:?}"
    );

    let r = gw.get("/noport/x");
    assert_eq!(
        r.status,
        503,
        "a container with no port to dial is skipped: {}",
        r.summary()
    );
    assert_eq!(r.json()["backend"], "noport");
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn weighted_balancing_follows_the_rgate_weight_label() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("weighted");
    let heavy = run
        .container("heavy")
        .production(&app)
        .label("rgate.weight", "3")
        .start();
    let light = run.container("light").production(&app).start();
    let backend = BackendSpec::new("weighted", &prod(&app)).with_balance("weighted");
    let gw = Gateway::start(&config_yaml(&[backend], ""));
    gw.wait_routed_to("/weighted/x", &heavy.name, Instant::now(), SETTLE);
    gw.wait_routed_to("/weighted/x", &light.name, Instant::now(), SETTLE);
    // 400 requests are 100 whole cycles of the 3:1 schedule: exact shares.
    let counts = gw.tally("/weighted/x", 400);
    assert_eq!(
        counts,
        BTreeMap::from([(heavy.name, 300), (light.name, 100)])
    );
}

#[test]
#[ignore = "needs Docker: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn a_reload_keeps_discovered_containers_in_rotation() {
    let Some(run) = DockerRun::new() else { return };
    let app = run.unique("reload");
    let one = run.container("one").production(&app).start();
    let yaml = config_yaml(&[BackendSpec::new("reload", &prod(&app))], "");
    let gw = Gateway::start(&yaml);
    gw.wait_routed_to("/reload/x", &one.name, Instant::now(), SETTLE);

    // A new route to the same backend: the backend keeps its discovered container.
    gw.rewrite_config(&yaml.replacen(
        "routes:\n",
        "routes:\n  - path_prefix: /renamed\n    backend: reload\n",
        1,
    ));
    for path in ["/renamed/x", "/reload/x"] {
        for _ in 0..20 {
            let r = gw.get(path);
            assert_eq!(
                r.status,
                200,
                "{path}: no gap in rotation\n{}",
                gw.log_text()
            );
            assert_eq!(r.header("x-upstream-name"), Some(one.name.as_str()));
        }
    }
    let log = gw.log_text();
    assert!(log.contains("carried=1"), "{log}");
    assert_eq!(
        log.matches("endpoint added").count(),
        1,
        "discovery kept its state; nothing was re-added:\n{log}"
    );
}
