//! Exercises the library server over real sockets: routes, counters, keep-alive, injection, shutdown.

// Test helpers outside #[test] fns are not covered by clippy's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rgate_upstream::{Config, Upstream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// One HTTP/1 client connection (keep-alive) to `addr`.
async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(sender: &mut SendRequest<Full<Bytes>>, path: &str) -> Reply {
    let req = Request::get(path)
        .header("host", "upstream.test")
        .body(Full::default())
        .unwrap();
    send(sender, req).await
}

/// Polls `cond` for up to two seconds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn health_answers_ok_with_name_header() {
    let up = Upstream::spawn(Config {
        name: "alpha".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut c = connect(up.addr()).await;
    let r = get(&mut c, "/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "ok");
    assert_eq!(r.headers["x-upstream-name"], "alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_reports_method_path_query_headers_and_body_len() {
    let up = Upstream::spawn(Config {
        name: "echo".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut c = connect(up.addr()).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/payment/x?a=1&b=2")
        .header("host", "upstream.test")
        .header("X-Forwarded-For", "203.0.113.1")
        .header("x-forwarded-for", "203.0.113.2")
        .body(Full::new(Bytes::from(vec![b'z'; 100_000])))
        .unwrap();
    let r = send(&mut c, req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-upstream-name"], "echo");
    let v = r.json();
    assert_eq!(v["name"], "echo");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/api/payment/x");
    assert_eq!(v["query"], "a=1&b=2");
    assert_eq!(v["body_len"], 100_000);
    assert_eq!(v["headers"]["host"], "upstream.test");
    assert_eq!(v["headers"]["x-forwarded-for"], "203.0.113.1, 203.0.113.2");
    assert_eq!(v["headers"]["content-length"], "100000");

    let v = get(&mut c, "/").await.json();
    assert_eq!(v["query"], "", "no query is reported as an empty string");
    assert_eq!(v["body_len"], 0);
}

#[tokio::test]
async fn echo_counts_a_chunked_request_body() {
    let up = Upstream::spawn(Config::default()).await.unwrap();
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /up HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["body_len"], 11);
    assert_eq!(v["headers"]["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn fixed_body_size_answers_exactly_n_bytes() {
    let cfg = Config {
        fixed_body_size: Some(1234),
        ..Config::default()
    };
    let up = Upstream::spawn(cfg).await.unwrap();
    let mut c = connect(up.addr()).await;
    let r = get(&mut c, "/anything?x=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 1234);
    assert_eq!(r.headers["content-length"], "1234");
    assert_eq!(r.headers["content-type"], "application/json");
    r.json();
}

#[tokio::test]
async fn bytes_route_sends_exact_lengths() {
    let up = Upstream::spawn(Config::default()).await.unwrap();
    let mut c = connect(up.addr()).await;
    for n in [0usize, 1, 65_535, 65_536, 65_537, 1_000_000] {
        let r = get(&mut c, &format!("/bytes/{n}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.len(), n);
        assert_eq!(r.headers["content-length"], n.to_string().as_str());
        assert!(r.body.iter().all(|&b| b == b'x'));
    }
    assert_eq!(up.connections(), 1, "all on one keep-alive connection");
    assert_eq!(
        get(&mut c, "/bytes/lots").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn status_route_answers_the_requested_status() {
    let up = Upstream::spawn(Config {
        name: "s".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut c = connect(up.addr()).await;
    for n in [200u16, 204, 302, 404, 418, 500, 503, 599] {
        let r = get(&mut c, &format!("/status/{n}")).await;
        assert_eq!(r.status.as_u16(), n);
        assert!(r.body.is_empty());
        assert_eq!(r.headers["x-upstream-name"], "s");
    }
    for bad in ["/status/600", "/status/100", "/status/abc"] {
        assert_eq!(
            get(&mut c, bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn counters_show_keep_alive_and_stats_route_reports_them() {
    let up = Upstream::spawn(Config {
        name: "cnt".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut c1 = connect(up.addr()).await;
    get(&mut c1, "/a").await;
    get(&mut c1, "/b").await;
    assert_eq!(
        (up.connections(), up.requests()),
        (1, 2),
        "two requests, one connection"
    );

    let mut c2 = connect(up.addr()).await;
    get(&mut c2, "/c").await;
    assert_eq!((up.connections(), up.requests()), (2, 3));

    let v = get(&mut c1, "/__stats").await.json();
    assert_eq!(v["name"], "cnt");
    assert_eq!(v["connections"], 2);
    assert_eq!(v["requests"], 4, "the stats request counts itself");
    assert_eq!(v["cancelled"], 0);
}

/// Statuses of `n` sequential requests to a fresh upstream.
async fn statuses(cfg: Config, n: usize) -> Vec<u16> {
    let up = Upstream::spawn(cfg).await.unwrap();
    let mut c = connect(up.addr()).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(get(&mut c, &format!("/r/{i}")).await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn error_injection_is_deterministic_for_a_seed() {
    let cfg = |seed| Config {
        error_rate: 0.3,
        error_status: 502,
        seed,
        ..Config::default()
    };
    let a = statuses(cfg(42), 300).await;
    assert_eq!(a, statuses(cfg(42), 300).await, "same seed, same outcomes");
    assert_ne!(
        a,
        statuses(cfg(43), 300).await,
        "another seed, other outcomes"
    );
    let errors = a.iter().filter(|&&s| s == 502).count();
    assert!(
        (50..=130).contains(&errors),
        "{errors} errors for rate 0.3 over 300"
    );
    assert!(a.iter().all(|&s| s == 200 || s == 502));

    let all = statuses(
        Config {
            error_rate: 1.0,
            ..Config::default()
        },
        20,
    )
    .await;
    assert!(all.iter().all(|&s| s == 503));
    let none = statuses(
        Config {
            error_rate: 0.0,
            ..Config::default()
        },
        20,
    )
    .await;
    assert!(none.iter().all(|&s| s == 200));
}

#[tokio::test]
async fn injection_spares_health_and_stats_and_has_a_json_body() {
    let cfg = Config {
        name: "bad".into(),
        error_rate: 1.0,
        ..Config::default()
    };
    let up = Upstream::spawn(cfg).await.unwrap();
    let mut c = connect(up.addr()).await;
    assert_eq!(get(&mut c, "/health").await.status, StatusCode::OK);
    assert_eq!(get(&mut c, "/__stats").await.status, StatusCode::OK);
    let r = get(&mut c, "/bytes/10").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["x-upstream-name"], "bad");
    assert_eq!(r.json()["error"], "injected");
}

#[tokio::test]
async fn latency_delays_data_routes() {
    let cfg = Config {
        latency: Duration::from_millis(60),
        ..Config::default()
    };
    let up = Upstream::spawn(cfg).await.unwrap();
    let mut c = connect(up.addr()).await;
    let start = Instant::now();
    get(&mut c, "/x").await;
    assert!(start.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn slow_route_counts_a_client_that_went_away() {
    let up = Upstream::spawn(Config::default()).await.unwrap();
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream
        .write_all(b"GET /slow/10000 HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    eventually("the request to arrive", || up.requests() == 1).await;
    assert_eq!(up.cancelled(), 0);
    drop(stream);
    eventually("the request to be cancelled", || up.cancelled() == 1).await;

    // A completed /slow request is not cancelled.
    let mut c = connect(up.addr()).await;
    let r = get(&mut c, "/slow/20").await;
    assert_eq!(r.json()["path"], "/slow/20");
    assert_eq!(up.cancelled(), 1);
}

#[tokio::test]
async fn ws_echoes_websocket_messages_and_refuses_plain_requests() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let up = Upstream::spawn(Config::default()).await.unwrap();
    let (mut socket, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", up.addr()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for message in [Message::text("hi"), Message::binary(vec![0u8, 255])] {
        socket.send(message.clone()).await.unwrap();
        let echoed = timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap();
        assert_eq!(echoed.unwrap().unwrap(), message);
    }
    socket.close(None).await.unwrap();

    let mut c = connect(up.addr()).await;
    let r = get(&mut c, "/ws").await;
    assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(r.headers["upgrade"], "websocket");
    drop(c);

    // An open session ends with the server.
    let (mut open, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", up.addr()))
        .await
        .unwrap();
    up.shutdown().await.unwrap();
    let end = timeout(Duration::from_secs(5), open.next()).await.unwrap();
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_refuses() {
    let up = Upstream::spawn(Config::default()).await.unwrap();
    let addr = up.addr();
    let mut busy = connect(addr).await;
    let mut idle = connect(addr).await;
    get(&mut idle, "/warm").await;
    let in_flight = tokio::spawn(async move { get(&mut busy, "/slow/300").await.status });
    eventually("the slow request to arrive", || up.requests() == 2).await;

    timeout(Duration::from_secs(3), up.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    assert!(
        idle.is_closed() || idle.ready().await.is_err(),
        "idle connection closed"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let up = Upstream::spawn(Config::default()).await.unwrap();
    let addr = up.addr();
    drop(up);
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn spawn_with_listener_serves_on_the_given_socket() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Upstream::spawn_with_listener(listener, Config::default()).unwrap();
    assert_eq!(up.addr(), addr);
    let mut c = connect(addr).await;
    assert_eq!(get(&mut c, "/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn invalid_config_fails_to_spawn() {
    let err = Upstream::spawn(Config {
        error_rate: 2.0,
        ..Config::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
