//! HTTP/1.1 upgrades through the gateway over real sockets: a WebSocket
//! client talks to the stub's `/ws` echo through rgate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gateway::*;
use http::Request;
use http_body_util::Full;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Waits up to 5 s for `done`, checking every 10 ms.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_message(socket: &mut Socket) -> Message {
    tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a message within 5 s")
        .expect("the socket is open")
        .expect("a valid message")
}

fn upgrade_request(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "gateway.test")
        .header("connection", "keep-alive, Upgrade, x-secret")
        .header("upgrade", "websocket")
        .header("keep-alive", "timeout=5")
        .header("x-secret", "1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn a_websocket_echoes_through_the_gateway_and_counts_in_stats() {
    let up = named_upstream("ws", |_| {}).await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));

    let (mut socket, response) = connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("the upgrade goes through");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-upstream-name"], "ws");
    assert_eq!(response.headers()["x-request-id"].len(), 32);

    let messages = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 254, 255]),
        Message::text("é".repeat(40_000)),
        Message::binary(vec![7u8; 200_000]),
    ];
    for message in &messages {
        socket.send(message.clone()).await.unwrap();
    }
    for message in &messages {
        assert_eq!(&next_message(&mut socket).await, message);
    }
    socket.close(None).await.unwrap();
    assert!(
        matches!(next_message(&mut socket).await, Message::Close(_)),
        "the upstream answers the close"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
    assert!(
        matches!(end, Ok(None | Some(Err(WsError::ConnectionClosed)))),
        "the tunnel closes after the close handshake: {end:?}"
    );

    let (_, _, stats) = fetch(gw.addr, "/stats").await;
    let stats = json(&stats);
    assert_eq!(stats["requests_count"]["success"], 1, "{stats}");
    assert_eq!(stats["requests_count"]["error"], 0, "{stats}");

    // Ordinary requests still work: the tunnel's connection never went back to the pool.
    let mut client = Client::connect(gw.addr).await;
    for _ in 0..3 {
        let (status, _, body) = client.get("/after").await;
        assert_eq!(status, 200);
        assert_eq!(json(&body)["path"], "/after");
    }
}

#[tokio::test]
async fn an_open_tunnel_holds_its_bulkhead_slot_until_it_closes() {
    let up = named_upstream("ws", |_| {}).await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\nbackends:\n  - {{name: app, servers: [\"{}\"], max_in_flight: 1}}\n",
        up.addr()
    ));
    let (mut socket, _) = connect_async(format!("ws://{}/ws", gw.addr)).await.unwrap();
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(next_message(&mut socket).await, Message::text("ping"));

    let (status, _, body) = fetch(gw.addr, "/while-open").await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"], "backend_saturated");

    socket.close(None).await.unwrap();
    drop(socket);
    eventually("the slot is free once the tunnel closed", async || {
        fetch(gw.addr, "/after").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn an_upstream_refusing_the_upgrade_is_relayed_as_an_ordinary_response() {
    let up = named_upstream("plain", |_| {}).await;
    let gw = TestGateway::start(&static_config(&[up.addr()]));
    let mut client = Client::connect(gw.addr).await;

    // The stub ignores Upgrade on ordinary paths and echoes what it received.
    let (status, _, body) = read(client.send(upgrade_request("/echo")).await).await;
    assert_eq!(status, 200);
    let headers = &json(&body)["headers"];
    assert_eq!(headers["upgrade"], "websocket", "{headers}");
    assert_eq!(headers["connection"], "upgrade", "{headers}");
    assert!(headers.get("keep-alive").is_none(), "{headers}");
    assert!(headers.get("x-secret").is_none(), "{headers}");

    let (status, _, _) = read(client.send(upgrade_request("/status/404")).await).await;
    assert_eq!(status, 404);
    // The same client connection, and the upstream's, still serve requests.
    let (status, _, _) = client.get("/after").await;
    assert_eq!(status, 200);

    match connect_async(format!("ws://{}/status/404", gw.addr)).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected the upstream's 404, got {other:?}"),
    }
    // `/ws` without an upgrade: the stub's 426 comes back.
    let (status, _, _) = client.get("/ws").await;
    assert_eq!(status, 426);
}

#[tokio::test]
async fn an_upgrade_request_is_never_replayed_once_sent() {
    let a = named_upstream("a", |_| {}).await;
    let b = named_upstream("b", |_| {}).await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - path_prefix: /\n    backend: app\n    retries: {{attempts: 2, on: [reset, 503]}}\nbackends:\n  - {{name: app, servers: [\"{}\", \"{}\"], balance: round_robin}}\n",
        a.addr(),
        b.addr()
    ));
    let sent = || a.requests() + b.requests();
    let mut client = Client::connect(gw.addr).await;

    let (status, _, _) = client.get("/status/503").await;
    assert_eq!(status, 503);
    assert_eq!(sent(), 2, "an ordinary GET is retried on a 503");

    let (status, _, _) = read(client.send(upgrade_request("/status/503")).await).await;
    assert_eq!(status, 503);
    assert_eq!(sent(), 3, "the upgrade request reached one upstream only");
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_routes_idle_timeout() {
    let up = named_upstream("ws", |_| {}).await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /, backend: app, idle_timeout: 300ms}}\n\
         backends:\n  - {{name: app, servers: [\"{}\"]}}\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml);
    let (mut socket, _) = connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("the upgrade goes through");
    // Traffic keeps it open past the timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        socket.send(Message::text("ping")).await.unwrap();
        assert_eq!(next_message(&mut socket).await, Message::text("ping"));
    }
    // ...silence closes it.
    let silent = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the idle tunnel is closed within 5 s");
    assert!(
        matches!(end, None | Some(Err(_))),
        "closed, not a message: {end:?}"
    );
    let after = silent.elapsed();
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(2),
        "{after:?}"
    );
}
