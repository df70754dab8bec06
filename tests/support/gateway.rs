//! In-process test harness: start rgate from YAML on 127.0.0.1:0, talk to it
//! over real sockets, and run scripted raw-TCP upstreams.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rgate::app::{self, AdminChoice, Options, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A gateway running in this process; stopped (drained) on drop.
pub struct TestGateway {
    pub running: Option<Running>,
    pub addr: SocketAddr,
}

impl TestGateway {
    pub fn start(yaml: &str) -> Self {
        let config = rgate::config::parse(yaml, Path::new("test.yml")).expect("valid test config");
        Self::launch(config, None, AdminChoice::Off)
    }

    /// Starts from a config file, watched and reloadable like the binary's.
    pub fn start_file(path: &Path) -> Self {
        let config = rgate::config::load(path).expect("valid test config");
        Self::launch(config, Some(path.to_path_buf()), AdminChoice::Off)
    }

    /// Like [`TestGateway::start_file`], with the admin plane on a free loopback port.
    pub fn start_file_with_admin(path: &Path) -> Self {
        let config = rgate::config::load(path).expect("valid test config");
        Self::launch(
            config,
            Some(path.to_path_buf()),
            AdminChoice::Listen(SocketAddr::from(([127, 0, 0, 1], 0))),
        )
    }

    /// The admin plane's address (when started with it).
    pub fn admin(&self) -> SocketAddr {
        self.running()
            .admin_addr()
            .expect("started with the admin plane")
    }

    fn launch(
        config: rgate::config::Config,
        config_path: Option<std::path::PathBuf>,
        admin: AdminChoice,
    ) -> Self {
        let options = Options {
            workers: 2,
            drain_timeout: Duration::from_secs(5),
            config_path,
            admin,
            ..Options::default()
        };
        let running = app::start(config, &options).expect("gateway starts");
        let addr = running.local_addr();
        Self {
            running: Some(running),
            addr,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn shutdown(mut self) -> rgate::server::DrainReport {
        self.running.take().expect("running").shutdown()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        // Draining blocks until client connections close, and those may be
        // driven by the very runtime this drop runs on: drain elsewhere.
        if let Some(running) = self.running.take() {
            std::thread::spawn(move || running.shutdown());
        }
    }
}

/// One HTTP/1.1 client connection (keep-alive) to `addr`.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Self { sender }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        self.sender.ready().await.expect("connection ready");
        self.sender.send_request(request).await.expect("response")
    }

    pub async fn get(&mut self, path: &str) -> (u16, http::HeaderMap, Bytes) {
        let response = self.send(get(path)).await;
        read(response).await
    }
}

/// An HTTP/2 (prior knowledge, cleartext) connection to `addr`.
pub async fn h2_connect(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "gateway.test")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

pub async fn read(response: Response<Incoming>) -> (u16, http::HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status.as_u16(), parts.headers, body)
}

/// A GET to `path` on gateway.test with extra header fields.
pub fn request_with(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(path).header("host", "gateway.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

/// One GET with extra header fields on a fresh connection.
pub async fn fetch_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    let mut client = Client::connect(addr).await;
    read(client.send(request_with(path, headers)).await).await
}

/// One GET on a fresh connection.
pub async fn fetch(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, Bytes) {
    Client::connect(addr).await.get(path).await
}

pub fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// Sends raw bytes and reads until the server closes or `limit` passes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// An in-process stub upstream named `name`, with `configure` applied.
pub async fn named_upstream(
    name: &str,
    configure: impl FnOnce(&mut rgate_upstream::Config),
) -> rgate_upstream::Upstream {
    let mut config = rgate_upstream::Config {
        name: name.into(),
        ..rgate_upstream::Config::default()
    };
    configure(&mut config);
    rgate_upstream::Upstream::spawn(config)
        .await
        .expect("upstream")
}

/// Upstreams "payment" and "orders" behind the routes `/api/payment` and
/// `/api/orders`: the setup for route-escape tests.
pub async fn payment_and_orders() -> (
    rgate_upstream::Upstream,
    rgate_upstream::Upstream,
    TestGateway,
) {
    let payment = named_upstream("payment", |_| {}).await;
    let orders = named_upstream("orders", |_| {}).await;
    let yaml = format!(
        "routes:\n  - {{path_prefix: /api/payment, backend: payment}}\n  - {{path_prefix: /api/orders, backend: orders}}\n\
         backends:\n  - {{name: payment, servers: [\"{}\"]}}\n  - {{name: orders, servers: [\"{}\"]}}\n",
        payment.addr(),
        orders.addr()
    );
    let gw = TestGateway::start(&yaml);
    (payment, orders, gw)
}

/// A port on 127.0.0.1 that refuses connections (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A scripted upstream: reads each request head, then answers every request
/// with the same `reply` bytes (or just closes when `reply` is empty).
pub async fn scripted_upstream(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buffer[..n]),
                    }
                }
                if !reply.is_empty() {
                    let _ = stream.write_all(reply).await;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Config text for one catch-all route to a static backend.
pub fn static_config(servers: &[SocketAddr]) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\nbackends:\n  - {{name: app, servers: [{}]}}\n",
        servers.join(", ")
    )
}
