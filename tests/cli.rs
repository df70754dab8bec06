//! The `rgate` binary as users run it: flags, `check`, config refusals,
//! signals, and bounded memory while streaming.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

use process::{http_get, write_config, Gateway, RGATE};

/// Runs `rgate check PATH`.
fn check(path: &std::path::Path) -> std::process::Output {
    Command::new(RGATE).arg("check").arg(path).output().unwrap()
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(RGATE).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--port",
        "--config",
        "--bind",
        "--workers",
        "--drain-timeout",
        "--log-level",
        "--admin",
        "--handover-socket",
        "--take-over",
        "check",
        "stats",
        "healthcheck",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn check_accepts_the_contract_config() {
    let file = write_config(
        "routes:\n  - path_prefix: /api/payment\n    backend: payment\n  - path_prefix: /api/orders\n    backend: orders\n\
         default_response:\n  body: \"This is not reachable\"\n  status_code: 403\n\
         backends:\n  - name: payment\n    match_labels:\n      - app_name=payment\n      - env=production\n\
         \x20 - name: orders\n    match_labels:\n      - app_name=orders\n      - env=production\n",
    );
    let output = check(file.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("ok (2 routes, 2 backends)"), "{stderr}");
}

#[test]
fn check_and_serve_refuse_a_bad_config_naming_file_and_key() {
    let file = write_config(
        "routes:\n  - {path_prefix: /a, backend: ordrs}\nbackends:\n  - {name: orders, match_labels: [app_name]}\n",
    );
    let path = file.path().display().to_string();
    let output = check(file.path());
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}: routes[0].backend: unknown backend \"ordrs\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}: backends[0].match_labels[0]")),
        "{stderr}"
    );

    let started = Instant::now();
    let output = Command::new(RGATE)
        .args(["--port", "0", "--bind", "127.0.0.1", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused within a second"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown backend"));
}

#[test]
fn check_lists_every_problem_once_with_a_suggestion_for_a_typo() {
    let file = write_config(
        "routes:\n  - {path_prefix: /a, backend: b, timeout: 30, methods: [get]}\n\
         \x20 - {path_prefix: /a, backend: b}\n  - {path_prefix: /a, backend: b}\n\
         backends:\n  - {name: b, servers: [\"127.0.0.1:1\"], balanse: random}\n",
    );
    let path = file.path().display().to_string();
    let output = check(file.path());
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in [
        format!("{path}: routes[0].timeout: \"30\" has no unit"),
        format!("{path}: routes[0].methods[0]: \"get\" is not a method"),
        format!("{path}: routes[2]: matches the same requests as routes[1]"),
        format!("{path}: backends[0].balanse: unknown field `balanse`; did you mean `balance`?"),
    ] {
        assert_eq!(stderr.matches(&line).count(), 1, "{line}\n{stderr}");
    }
    assert!(stderr.contains("invalid config (4 problems)"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_refused() {
    let output = Command::new(RGATE)
        .args(["--port", "0", "--config", "/nonexistent/rgate.yml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/rgate.yml: cannot read"));
}

#[test]
fn sigterm_stops_the_gateway_with_exit_code_zero() {
    let file = write_config("routes: []\ndefault_response: {body: hi, status_code: 200}\n");
    let mut gateway = Gateway::start(file.path());
    assert!(http_get(gateway.addr, "/").ends_with("hi"));
    gateway.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "rgate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_50_mib_response_streams_through_in_bounded_memory() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = runtime
        .block_on(rgate_upstream::Upstream::spawn(
            rgate_upstream::Config::default(),
        ))
        .unwrap();
    let file = write_config(&format!(
        "routes:\n  - {{path_prefix: /, backend: big}}\nbackends:\n  - {{name: big, servers: [\"{}\"]}}\n",
        upstream.addr()
    ));
    let gateway = Gateway::start(file.path());
    let baseline = gateway.peak_rss_kib();

    const SIZE: usize = 50 * 1024 * 1024;
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    write!(
        stream,
        "GET /bytes/{SIZE} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // A slow start: if rgate buffered whole bodies it would now hold all 50 MiB.
    std::thread::sleep(Duration::from_millis(500));
    let mut received = 0usize;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(received > SIZE, "received {received} bytes (head + body)");
    let growth_mib = (gateway.peak_rss_kib().saturating_sub(baseline)) / 1024;
    // Measured: a fixed 10-17 MiB of first-use growth (runtime, allocator
    // arenas), the same for 5 MiB and 200 MiB bodies. Buffering would cost
    // the whole body.
    assert!(
        growth_mib < (SIZE / 2 / 1024 / 1024) as u64,
        "rgate's peak memory grew by {growth_mib} MiB while streaming 50 MiB"
    );
}

/// Waits (bounded) until `path` holds at least `n` lines; returns them.
fn lines_of(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, waited for {n}",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigusr1_reopens_the_access_log_for_logrotate() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let config = dir.path().join("rgate.yml");
    std::fs::write(
        &config,
        "routes: []\ndefault_response: {body: hi, status_code: 200}\naccess_log: {path: access.log}\n",
    )
    .unwrap();
    let gateway = Gateway::start(&config);
    assert!(http_get(gateway.addr, "/one").ends_with("hi"));
    let first: serde_json::Value = serde_json::from_str(&lines_of(&log, 1)[0]).unwrap();
    assert_eq!(first["path"], "/one");
    assert_eq!(first["status"], 200);

    // logrotate moves the file; rgate keeps writing to it until told.
    std::fs::rename(&log, &rotated).unwrap();
    http_get(gateway.addr, "/two");
    assert_eq!(lines_of(&rotated, 2).len(), 2);
    gateway.signal("USR1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(Instant::now() < deadline, "SIGUSR1 did not reopen the log");
        std::thread::sleep(Duration::from_millis(10));
    }
    http_get(gateway.addr, "/three");
    let third: serde_json::Value = serde_json::from_str(&lines_of(&log, 1)[0]).unwrap();
    assert_eq!(third["path"], "/three");
    assert_eq!(
        lines_of(&rotated, 2).len(),
        2,
        "nothing more in the rotated file"
    );
}

#[test]
fn healthcheck_asks_the_admin_plane() {
    let file = write_config("routes: []\ndefault_response: {body: hi, status_code: 200}\n");
    let gateway = Gateway::start_with(file.path(), &["--admin", "127.0.0.1:0"]);
    let admin = gateway.admin.unwrap().to_string();
    let healthy = Command::new(RGATE)
        .args(["healthcheck", "--admin", &admin])
        .output()
        .unwrap();
    assert!(healthy.status.success(), "{healthy:?}");

    // Nothing listening there: exit 1, and why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let unhealthy = Command::new(RGATE)
        .args(["healthcheck", "--admin", &addr])
        .output()
        .unwrap();
    assert_eq!(unhealthy.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unhealthy.stderr);
    assert!(
        stderr.contains("unhealthy") && stderr.contains(&addr),
        "{stderr}"
    );
}
