//! Stats that survive restarts, with the real binary: a graceful stop loses
//! nothing, a `kill -9` at most the last flush interval; `/stats` breaks the
//! figures down by route and backend and answers `?window=`; `rgate stats`
//! prints the store without a gateway; an unusable store file is logged,
//! left as it is, and the gateway serves with in-memory stats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use process::{get_json, http_get, write_config, ConfigFile, Gateway, RGATE};
use rgate::observe::stats::Store;

fn upstream() -> (tokio::runtime::Runtime, rgate_upstream::Upstream) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = runtime
        .block_on(rgate_upstream::Upstream::spawn(
            rgate_upstream::Config::default(),
        ))
        .unwrap();
    (runtime, upstream)
}

fn config(upstream: &rgate_upstream::Upstream, stats: &str) -> ConfigFile {
    write_config(&format!(
        "routes:\n  - {{name: api, path_prefix: /api, backend: app}}\n\
         backends:\n  - {{name: app, servers: [\"{}\"]}}\n\
         default_response: {{body: nope, status_code: 404}}\n{stats}",
        upstream.addr()
    ))
}

fn with_admin(config: &Path) -> Gateway {
    Gateway::start_with(config, &["--admin", "127.0.0.1:0"])
}

/// `n` GETs of `path`, each checked for `status`.
fn send(gateway: &Gateway, path: &str, n: usize, status: u16) {
    for _ in 0..n {
        let response = http_get(gateway.addr, path);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{response}"
        );
    }
}

/// (success, error) of the whole gateway as the store holds them.
fn stored(path: &Path) -> (u64, u64) {
    let lifetime = Store::open_read_only(path).unwrap().lifetime().unwrap();
    (lifetime.all.success, lifetime.all.error)
}

/// Waits (bounded) until the store holds `want`.
fn wait_stored(path: &Path, want: (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(path) != want {
        assert!(
            Instant::now() < deadline,
            "store holds {:?}, waited for {want:?}",
            stored(path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn counts(document: &serde_json::Value) -> (u64, u64) {
    let count = &document["requests_count"];
    (
        count["success"].as_u64().unwrap(),
        count["error"].as_u64().unwrap(),
    )
}

#[test]
fn stats_survive_a_graceful_restart_and_a_kill_9() {
    let (_runtime, upstream) = upstream();
    let config = config(&upstream, "stats: {flush_interval: 200ms}\n");
    let store = config.dir().join("rgate.stats.db");

    let mut gateway = with_admin(config.path());
    send(&gateway, "/api/a", 10, 200);
    send(&gateway, "/nope", 3, 404);
    gateway.signal("TERM");
    assert_eq!(gateway.wait_exit(Duration::from_secs(10)), Some(0));
    // A graceful stop writes everything, however short the run.
    assert_eq!(stored(&store), (10, 3));

    let gateway = with_admin(config.path());
    let stats = get_json(gateway.addr, "/stats");
    assert_eq!(counts(&stats), (10, 3), "{stats}");
    assert_eq!(counts(&stats["routes"]["api"]), (10, 0), "{stats}");
    assert_eq!(stats["routes"]["api"]["backend"], "app");
    assert_eq!(counts(&stats["backends"]["app"]), (10, 0), "{stats}");
    assert!(
        stats["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
    assert!(
        stats["routes"]["api"]["latency_ms"]["p95"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    send(&gateway, "/api/b", 5, 200);
    wait_stored(&store, (15, 3));
    // Requests after the last flush are what a kill -9 may lose, and no more.
    send(&gateway, "/api/c", 5, 200);
    drop(gateway); // SIGKILL
    let gateway = with_admin(config.path());
    let (success, error) = counts(&get_json(gateway.addr, "/stats"));
    assert!((15..=20).contains(&success), "{success} after kill -9");
    assert_eq!(error, 3);

    // The admin plane gives the same document, and a recent window.
    let admin = gateway.admin.unwrap();
    assert_eq!(counts(&get_json(admin, "/stats")), (success, 3));
    let window = get_json(admin, "/stats?window=1h");
    assert_eq!(window["window"], "1h");
    assert_eq!(counts(&window), (success, 3), "{window}");
    assert_eq!(counts(&window["routes"]["api"]).0, success);
    let main_window = get_json(gateway.addr, "/stats?window=5m");
    assert_eq!(counts(&main_window), (success, 3));

    // `rgate stats` reads the same file while the gateway runs.
    let output = Command::new(RGATE)
        .args(["stats", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).unwrap();
    let api = table
        .lines()
        .find(|line| line.starts_with("route") && line.contains(" api "))
        .unwrap_or_else(|| panic!("no api row:\n{table}"));
    let numbers: Vec<&str> = api.split_whitespace().collect();
    assert_eq!(numbers[2], success.to_string(), "{table}");
    assert!(table
        .lines()
        .any(|l| l.starts_with("backend") && l.contains(" app ")));
}

#[test]
fn a_window_that_is_not_a_duration_is_a_clear_400() {
    let (_runtime, upstream) = upstream();
    let config = config(&upstream, "stats: {store: none}\n");
    let gateway = with_admin(config.path());
    for addr in [gateway.addr, gateway.admin.unwrap()] {
        let response = http_get(addr, "/stats?window=forever");
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        assert!(response.contains("\"error\":\"bad_query\""), "{response}");
        assert!(response.contains("window=forever"), "{response}");
    }
    // `none` keeps nothing on disk, and still answers windows from memory.
    send(&gateway, "/api/x", 2, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts(&get_json(gateway.addr, "/stats?window=5m")) != (2, 0) {
        assert!(
            Instant::now() < deadline,
            "the window never showed 2 requests"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let files: Vec<_> = std::fs::read_dir(config.dir()).unwrap().collect();
    assert_eq!(files.len(), 1, "only the config file: {files:?}");
}

#[test]
fn an_unusable_store_is_logged_left_alone_and_the_gateway_serves() {
    let (_runtime, upstream) = upstream();
    let config = config(&upstream, "");
    let store = config.dir().join("rgate.stats.db");
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&store, &garbage).unwrap();

    let gateway = with_admin(config.path());
    send(&gateway, "/api/x", 4, 200);
    send(&gateway, "/nope", 1, 404);
    assert_eq!(counts(&get_json(gateway.addr, "/stats")), (4, 1));
    let log = gateway.stderr_text();
    assert_eq!(
        log.matches("the stats store cannot be used").count(),
        1,
        "{log}"
    );
    assert!(log.contains("not a database"), "{log}");
    drop(gateway);
    assert_eq!(
        std::fs::read(&store).unwrap(),
        garbage,
        "the file was changed"
    );

    let output = Command::new(RGATE)
        .args(["stats", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a database"));
}
