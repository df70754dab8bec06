//! The access log over real sockets: one JSON line per request with its
//! fields, and a writer that cannot keep up dropping (and counting) lines
//! while requests go on unharmed. SIGUSR1 reopening is in `tests/cli.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::*;
use http_body_util::Full;

/// Waits (bounded) until the file holds at least `n` lines.
fn lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} lines, waited for {n}",
            text.lines().count()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn each_request_leaves_one_json_line_with_its_fields() {
    let up = named_upstream("a", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    std::fs::write(
        &path,
        format!(
            "access_log: {{path: access.log}}\n\
             routes:\n  - {{name: api, path_prefix: /api, backend: a}}\n\
             \x20 - {{path_prefix: /down, backend: down}}\n\
             backends:\n  - {{name: a, servers: [\"{}\"]}}\n  - {{name: down, servers: [\"{}\"]}}\n",
            up.addr(),
            closed_port().await
        ),
    )
    .unwrap();
    let gw = TestGateway::start_file(&path);
    let mut client = Client::connect(gw.addr).await;
    let request = http::Request::post("/api/orders?x=1")
        .header("host", "shop.example.com")
        .header("x-request-id", "req-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let sent = std::time::SystemTime::now();
    let (status, _, _) = read(client.send(request).await).await;
    let answered = std::time::SystemTime::now();
    assert_eq!(status, 200);
    assert_eq!(fetch(gw.addr, "/down").await.0, 503);
    assert_eq!(fetch(gw.addr, "/nowhere").await.0, 404);
    fetch(gw.addr, "/stats").await;

    let log = lines(&dir.path().join("access.log"), 3);
    assert_eq!(log.len(), 3, "/stats is not logged: {log:?}");
    let api = &log[0];
    assert_eq!(api["method"], "POST");
    assert_eq!(api["host"], "shop.example.com");
    assert_eq!(api["path"], "/api/orders?x=1");
    assert_eq!(api["status"], 200);
    assert_eq!(api["bytes_in"], 5);
    assert!(api["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(api["request_id"], "req-42");
    assert_eq!(api["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(api["client_ip"], "127.0.0.1");
    assert_eq!(api["upstream"], up.addr().to_string());
    assert_eq!(api["route"], "api");
    assert_eq!(api["backend"], "a");
    assert_eq!(api["attempts"], 1);
    assert!(api["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(api["time"].as_str().unwrap().ends_with('Z'));
    // When the head arrived, to the millisecond (the stamp truncates).
    let time = humantime::parse_rfc3339(api["time"].as_str().unwrap()).unwrap();
    assert!(
        time + std::time::Duration::from_millis(1) >= sent && time <= answered,
        "{time:?} not within {sent:?}..{answered:?}"
    );
    let down = &log[1];
    assert_eq!(down["status"], 503);
    assert_eq!(down["error"], "connect_failed");
    assert_eq!(down["backend"], "down");
    let nowhere = &log[2];
    assert_eq!(nowhere["status"], 404);
    assert_eq!(nowhere["route"], serde_json::Value::Null);

    // Under concurrent load no line is lost: 4 clients × 100 requests.
    let addr = gw.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for _ in 0..100 {
                    assert_eq!(client.get("/api/load").await.0, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let log = lines(&dir.path().join("access.log"), 403);
    assert_eq!(log.len(), 403);
}

#[tokio::test]
async fn a_stalled_writer_drops_and_counts_lines_and_never_slows_requests() {
    let up = named_upstream("a", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A reader that opens the pipe and never reads: once the pipe's buffer
    // is full, every write blocks. Opening blocks until rgate opens it too.
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || std::fs::File::open(reader_path).unwrap());
    let path = dir.path().join("rgate.yml");
    std::fs::write(
        &path,
        format!(
            "access_log: {{path: access.fifo, buffer: 4}}\n\
             routes:\n  - {{path_prefix: /, backend: a}}\n\
             backends:\n  - {{name: a, servers: [\"{}\"]}}\n",
            up.addr()
        ),
    )
    .unwrap();
    let gw = TestGateway::start_file_with_admin(&path);
    let held = reader.join().unwrap();

    let long_path = format!("/{}", "x".repeat(400));
    let mut client = Client::connect(gw.addr).await;
    let started = Instant::now();
    for _ in 0..1000 {
        let (status, _, _) = client.get(&long_path).await;
        assert_eq!(status, 200);
    }
    // 1000 lines of ~600 bytes are far more than a 64 KiB pipe and 4 slots.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "requests were held up: {took:?}"
    );
    let (_, _, body) = fetch(gw.admin(), "/metrics").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rgate_access_log_dropped_total "))
        .expect("the dropped counter")
        .parse()
        .unwrap();
    assert!(dropped >= 500.0, "dropped {dropped}");
    drop(held);
}
