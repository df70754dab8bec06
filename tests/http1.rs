//! rgate's HTTP/1 server on raw sockets: keep-alive and pipelining, HTTP/1.0
//! clients, `100 Continue`, response framing per client, HEAD answers, and
//! clients that go away mid-request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::time::Duration;

use gateway::*;
use rgate_upstream::{Config as UpstreamConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one response with a `Content-Length` body (or none) off `stream`.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut buffer = [0u8; 8192];
    let read = async {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if pending.len() >= end + 4 + length {
                    let body = pending[end + 4..end + 4 + length].to_vec();
                    pending.drain(..end + 4 + length);
                    return (head, body);
                }
            }
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(pending)
            );
            pending.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a response within 5 s")
}

async fn echo_gateway() -> (TestGateway, Upstream) {
    let up = Upstream::spawn(UpstreamConfig::default()).await.unwrap();
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    (gw, up)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (gw, up) = echo_gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
              GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
    let mut pending = Vec::new();
    for (path, body_len) in [("/one", 0), ("/two", 3), ("/three", 0)] {
        let (head, body) = read_response(&mut stream, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let echo = json(&body.into());
        assert_eq!(echo["path"], path);
        assert_eq!(echo["body_len"], body_len);
    }
    assert_eq!(up.requests(), 3);
    assert_eq!(up.connections(), 1, "one pooled upstream connection");
}

#[tokio::test]
async fn http_1_0_clients_keep_alive_only_when_they_ask() {
    let (gw, _up) = echo_gateway().await;
    let closed = raw(gw.addr, b"GET /plain HTTP/1.0\r\n\r\n").await;
    assert!(closed.starts_with("HTTP/1.1 200 "), "{closed}");
    assert!(closed.contains("connection: close\r\n"), "{closed}");

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut pending = Vec::new();
    for path in ["/first", "/second"] {
        let request = format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut stream, &mut pending).await;
        assert!(head.contains("connection: keep-alive\r\n"), "{head}");
        assert_eq!(json(&body.into())["path"], path);
    }
}

#[tokio::test]
async fn an_unsized_body_is_chunked_for_http_1_1_and_close_delimited_for_http_1_0() {
    let chunked = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let gw = TestGateway::start(&static_config(&[chunked]));
    let to_1_1 = raw(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        to_1_1.contains("transfer-encoding: chunked\r\n"),
        "{to_1_1}"
    );
    assert!(
        to_1_1.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{to_1_1}"
    );
    let to_1_0 = raw(gw.addr, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(!to_1_0.contains("transfer-encoding"), "{to_1_0}");
    assert!(to_1_0.contains("connection: close\r\n"), "{to_1_0}");
    assert!(to_1_0.ends_with("\r\n\r\nhello world"), "{to_1_0}");
}

#[tokio::test]
async fn a_head_answer_keeps_the_upstreams_length_and_sends_no_body() {
    let head_answer = scripted_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n").await;
    let gw = TestGateway::start(&static_config(&[head_answer]));
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0);
        answer.extend_from_slice(&buffer[..n]);
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.contains("content-length: 40\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "no body follows: {answer}");
    // The connection is still in step: rgate's own answer comes next, whole.
    stream
        .write_all(b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(json(&body.into()).get("requests_count").is_some());
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_wanted() {
    let (gw, _up) = echo_gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut interim))
        .await
        .expect("a 100 Continue before the body is sent")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let (head, body) = read_response(&mut stream, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let echo = json(&body.into());
    assert_eq!(echo["body_len"], 5);
    assert!(
        echo["headers"].get("expect").is_none(),
        "the handshake is rgate's, not the upstream's: {echo}"
    );
}

#[tokio::test]
async fn rgates_own_answers_carry_a_date() {
    let (gw, _up) = echo_gateway().await;
    let (status, headers, _) = fetch(gw.addr, "/stats").await;
    assert_eq!(status, 200);
    let date = headers["date"].to_str().unwrap();
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
}

#[tokio::test]
async fn a_client_gone_after_sending_its_body_cancels_the_upstream_request() {
    let up = Upstream::spawn(UpstreamConfig::default()).await.unwrap();
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /slow/30000 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    while up.cancelled() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream never saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, _, body) = fetch(gw.addr, "/stats").await;
    assert_eq!(
        json(&body)["requests_count"],
        serde_json::json!({"success": 0, "error": 1})
    );
}

#[tokio::test]
async fn a_small_body_nobody_read_does_not_cost_the_connection() {
    let (gw, _up) = echo_gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // /stats answers a POST itself, without reading its body.
    stream
        .write_all(b"POST /stats HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_response(&mut stream, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    stream
        .write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(json(&body.into())["path"], "/after");
}
