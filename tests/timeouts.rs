//! Upstream timeouts over real sockets: response head (504), connect (503),
//! and a body that stalls mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::*;
use rgate_upstream::{Config as UpstreamConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

fn one_route(server: SocketAddr, route_extra: &str, backend_extra: &str) -> String {
    format!(
        "routes:\n  - {{path_prefix: /, backend: app{route_extra}}}\n\
         backends:\n  - {{name: app, servers: [\"{server}\"]{backend_extra}}}\n"
    )
}

#[tokio::test]
async fn a_slow_response_head_is_a_504_after_the_route_timeout_and_not_retried() {
    let up = Upstream::spawn(UpstreamConfig::default()).await.unwrap();
    let gw = TestGateway::start(&one_route(up.addr(), ", timeout: 200ms", ""));
    let started = Instant::now();
    let (status, headers, body) = fetch(gw.addr, "/slow/3000").await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "upstream_timeout", "backend": "app"})
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(up.requests(), 1, "a timed-out request is never replayed");
    // A fast request on the same route is unaffected.
    assert_eq!(fetch(gw.addr, "/fast").await.0, 200);
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so
/// connecting hangs instead of being refused.
async fn unresponsive_listener() -> (TcpListener, Vec<std::net::TcpStream>, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => return (listener, fillers, addr),
        }
    }
    panic!("the accept queue never filled up");
}

#[tokio::test]
async fn an_endpoint_that_does_not_accept_is_a_503_after_the_connect_timeout() {
    let (_listener, _fillers, addr) = unresponsive_listener().await;
    let gw = TestGateway::start(&one_route(addr, "", ", connect_timeout: 250ms"));
    let started = Instant::now();
    let (status, _, body) = fetch(gw.addr, "/x").await;
    let took = started.elapsed();
    assert_eq!(status, 503);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "connect_timeout", "backend": "app"})
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off_after_the_idle_timeout() {
    // Sends the head and 7 of the 100 promised bytes, then holds the connection open.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let mut buffer = [0u8; 4096];
        let _ = stream.read(&mut buffer).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let gw = TestGateway::start(&one_route(addr, ", idle_timeout: 300ms", ""));
    let started = Instant::now();
    let response = raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let took = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with("partial"),
        "the client gets what arrived, then the close: {response}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
