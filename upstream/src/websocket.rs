//! `/ws`: a WebSocket echo, for proxying tests and demos of protocol upgrades.

use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderValue, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::body::Body;
use crate::reply::response;
use crate::Shared;

const WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// Accepts a WebSocket upgrade with `101` and echoes every text and binary
/// message on a task of its own; anything else gets `426 Upgrade Required`.
///
/// The session runs on past the HTTP connection's task: it ends when the peer
/// closes it (tungstenite answers close frames and pings by itself), or when
/// the server stops (`stop` turns true or its sender is gone).
pub(crate) fn accept(
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let headers = req.headers();
    let wants_websocket = headers
        .get(UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = match headers.get(SEC_WEBSOCKET_KEY) {
        Some(key) if wants_websocket => key,
        _ => {
            let mut resp = response(
                shared,
                StatusCode::UPGRADE_REQUIRED,
                HeaderValue::from_static("text/plain; charset=utf-8"),
                Body::full("/ws: expected a WebSocket upgrade\n"),
            );
            resp.headers_mut().insert(UPGRADE, WEBSOCKET);
            return resp;
        }
    };
    let accept_key = HeaderValue::from_str(&derive_accept_key(key.as_bytes()));
    let Ok(accept_key) = accept_key else {
        return response(
            shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderValue::from_static("text/plain; charset=utf-8"),
            Body::empty(),
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        // Err: the client went away before the switch completed.
        if let Ok(upgraded) = upgrade.await {
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            tokio::select! {
                () = echo(socket) => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        }
    });
    let mut resp = response(
        shared,
        StatusCode::SWITCHING_PROTOCOLS,
        WEBSOCKET,
        Body::empty(),
    );
    let headers = resp.headers_mut();
    headers.remove(CONTENT_TYPE);
    headers.insert(UPGRADE, WEBSOCKET);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept_key);
    resp
}

async fn echo<S>(mut socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = socket.next().await {
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            break;
        }
    }
}
