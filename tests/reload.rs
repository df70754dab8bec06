//! Hot reload over real sockets: a new config serves within a second of the
//! file changing, nothing in flight is dropped, a broken file is refused while
//! the old config keeps serving, and backends that stay keep their endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use gateway::*;
use rgate::control::ReloadError;

fn two_backends(route_to: &str, old: SocketAddr, new: SocketAddr) -> String {
    format!(
        "routes:\n  - {{path_prefix: /, backend: {route_to}}}\n\
         backends:\n  - {{name: old, servers: [\"{old}\"]}}\n  - {{name: new, servers: [\"{new}\"]}}\n"
    )
}

fn write(path: &Path, text: &str) {
    // Written in place, as most tools do; the watcher debounces partial writes.
    std::fs::write(path, text).unwrap();
}

fn name(headers: &http::HeaderMap) -> String {
    headers["x-upstream-name"].to_str().unwrap().to_owned()
}

/// Upstreams "old" and "new", and a gateway routing everything to "old"
/// from a config file in the returned directory.
async fn old_and_new() -> (
    rgate_upstream::Upstream,
    rgate_upstream::Upstream,
    tempfile::TempDir,
    TestGateway,
) {
    let old = named_upstream("old", |_| {}).await;
    let new = named_upstream("new", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    write(&path, &two_backends("old", old.addr(), new.addr()));
    let gw = TestGateway::start_file(&path);
    (old, new, dir, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_serves_within_a_second_and_drops_nothing_in_flight() {
    let (old, new, dir, gw) = old_and_new().await;
    let path = dir.path().join("rgate.yml");
    let addr = gw.addr;

    // Slow requests that start on the old table must finish there.
    let slow: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { fetch(addr, "/slow/700").await }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while old.requests() < 20 {
        assert!(Instant::now() < deadline, "slow requests never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Steady load across the reload: bounded in count and time.
    let load: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut answered = Vec::new();
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && answered.len() < 3000 {
                    let (status, headers, _) = client.get("/x").await;
                    answered.push((status, name(&headers), Instant::now()));
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    write(&path, &two_backends("new", old.addr(), new.addr()));

    let mut first_new = None;
    let mut total = 0;
    for task in load {
        for (status, upstream, at) in task.await.unwrap() {
            total += 1;
            assert_eq!(status, 200, "no request fails across a reload");
            assert!(upstream == "old" || upstream == "new", "{upstream}");
            if upstream == "new" {
                first_new = Some(first_new.map_or(at, |t: Instant| t.min(at)));
            }
        }
    }
    for request in slow {
        let (status, headers, _) = request.await.unwrap();
        assert_eq!((status, name(&headers).as_str()), (200, "old"));
    }
    let switched = first_new.expect("the new table served") - written;
    assert!(
        switched < Duration::from_secs(1),
        "reload took {switched:?}"
    );
    assert!(total > 100, "the load ran: {total} requests");
    println!("{total} requests across the reload; new table after {switched:?}");
}

#[tokio::test]
async fn a_broken_file_is_refused_and_the_current_config_keeps_serving() {
    let (old, new, dir, gw) = old_and_new().await;
    let path = dir.path().join("rgate.yml");

    write(&path, &two_backends("nowhere", old.addr(), new.addr()));
    match gw.running().reload().await {
        Err(ReloadError::Invalid(errors)) => {
            let text = errors.to_string();
            assert!(text.contains("routes[0].backend"), "{text}");
        }
        other => panic!("refused, not {other:?}"),
    }
    let (status, headers, _) = fetch(gw.addr, "/x").await;
    assert_eq!((status, name(&headers).as_str()), (200, "old"));

    write(&path, "routes: [unclosed\n");
    assert!(gw.running().reload().await.is_err());
    assert_eq!(name(&fetch(gw.addr, "/x").await.1), "old");

    write(&path, &two_backends("new", old.addr(), new.addr()));
    let report = gw.running().reload().await.unwrap();
    assert_eq!((report.routes, report.backends, report.carried), (1, 2, 2));
    assert_eq!(name(&fetch(gw.addr, "/x").await.1), "new");
}

#[tokio::test]
async fn a_backend_that_stays_keeps_its_endpoints_their_state_and_pooled_connections() {
    let bad = named_upstream("bad", |c| c.error_rate = 1.0).await;
    let good = named_upstream("good", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    let config = |prefix: &str, extra: &str| {
        format!(
            "routes:\n  - {{path_prefix: {prefix}, backend: app, retries: {{attempts: 1}}}}\n\
             backends:\n  - name: app\n    servers: [\"{}\", \"{}\"]\n    balance: round_robin\n    \
             outlier: {{consecutive_errors: 1, eject_for: 1h}}\n{extra}",
            bad.addr(),
            good.addr()
        )
    };
    write(&path, &config("/", ""));
    let gw = TestGateway::start_file(&path);
    let mut client = Client::connect(gw.addr).await;
    let mut failed = 0;
    for _ in 0..10 {
        if client.get("/x").await.0 != 200 {
            failed += 1;
        }
    }
    assert_eq!(
        (bad.requests(), failed),
        (1, 1),
        "ejected after its first failure"
    );
    let connections = good.connections();

    // Routes change; the backend does not.
    write(
        &path,
        &config("/api", "default_response: {status_code: 418}\n"),
    );
    let report = gw.running().reload().await.unwrap();
    assert_eq!(report.carried, 1);
    assert_eq!(client.get("/x").await.0, 418, "the new table serves");
    for _ in 0..20 {
        assert_eq!(client.get("/api/x").await.0, 200);
    }
    assert_eq!(
        bad.requests(),
        1,
        "still ejected: the endpoint's state carried over"
    );
    assert_eq!(
        good.connections(),
        connections,
        "pooled upstream connections survived the reload"
    );
}

#[test]
fn sighup_reloads_the_running_binary() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    write(&path, "default_response: {status_code: 200}\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgate"))
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--workers",
            "1",
            "--admin",
            "off",
        ])
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => return String::new(),
            }
        }
    };
    let listening = wait_for("rgate listening");
    let hangup = Command::new("kill")
        .args(["-s", "HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let reloaded = wait_for("config reloaded");
    let _ = child.kill();
    let _ = child.wait();
    assert!(!listening.is_empty(), "rgate started");
    assert!(hangup.success());
    assert!(
        reloaded.contains("SIGHUP"),
        "reloaded on SIGHUP: {reloaded:?}"
    );
}
