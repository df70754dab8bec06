//! Stub HTTP/1 upstream for rgate's tests and benchmarks: echo, fixed bodies, latency and error injection.
//!
//! The same server runs in two ways:
//! - in-process, as a mock upstream of rgate's integration tests, through
//!   [`Upstream::spawn`], whose counters ([`Upstream::connections`],
//!   [`Upstream::requests`], [`Upstream::cancelled`]) let a test prove
//!   keep-alive pooling or see a client go away;
//! - as the `rgate-upstream` binary (a thin wrapper around [`serve`]), in
//!   containers of the Docker end-to-end tests and as the benchmark's upstream.
//!
//! Routes (every response carries `x-upstream-name: NAME`):
//! - `/health` → 200 `ok`;
//! - `/__stats` → `{"name","connections","requests","cancelled"}`;
//! - `/bytes/N` → 200 with exactly N bytes, streamed in 64 KiB frames;
//! - `/status/N` → empty response with status N (200..=599);
//! - `/slow/MS` → waits MS milliseconds, then answers like any other path;
//! - `/ws` → a WebSocket echo of text and binary messages (`426` unless the
//!   request is a WebSocket upgrade);
//! - any other path → the fixed body if [`Config::fixed_body_size`] is set,
//!   else a JSON echo `{"name","method","path","query","headers","body_len"}`.
//!
//! Latency and error injection apply to every route but `/health`,
//! `/__stats` and `/ws`. Whether a request fails is the next draw of a random generator
//! seeded with [`Config::seed`]: for a given seed, the k-th such request
//! always gets the same outcome.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

mod body;
mod handler;
mod reply;
mod websocket;

/// Behaviour of a stub upstream.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sent in the `x-upstream-name` header and in JSON bodies.
    pub name: String,
    /// When set, paths without a dedicated route answer exactly this many
    /// bytes of JSON-ish text instead of the echo.
    pub fixed_body_size: Option<usize>,
    /// Added before answering every request but `/health` and `/__stats`.
    pub latency: Duration,
    /// Fraction (0.0–1.0) of those requests answered with `error_status`.
    pub error_rate: f64,
    /// Status of injected errors.
    pub error_status: u16,
    /// Seed of the error-injection draws.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "upstream".to_owned(),
            fixed_body_size: None,
            latency: Duration::ZERO,
            error_rate: 0.0,
            error_status: 503,
            seed: 1,
        }
    }
}

/// Runs the stub on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (idle keep-alive connections are
/// closed at once) and returns.
///
/// Fails only if `cfg` is invalid (`name` not a valid header value,
/// `error_status` not in 100..=999, `error_rate` not in 0.0..=1.0).
pub async fn serve(
    listener: TcpListener,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let shared = Shared::new(cfg, Arc::default())?;
    run(listener, Arc::new(shared), shutdown).await;
    Ok(())
}

/// Handle to a stub upstream running on the current tokio runtime.
///
/// Dropping it aborts the server at once: the listener and every connection
/// (WebSocket sessions too) are closed, in-flight requests are abandoned. [`Upstream::shutdown`] stops
/// it gracefully instead.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

// === impl Upstream ===

impl Upstream {
    /// Binds `127.0.0.1:0` and serves on tasks of the current runtime.
    pub async fn spawn(cfg: Config) -> io::Result<Upstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Upstream::spawn_with_listener(listener, cfg)
    }

    /// Serves on an already bound `listener`, on tasks of the current runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn_with_listener(listener: TcpListener, cfg: Config) -> io::Result<Upstream> {
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared::new(cfg, Arc::clone(&counters))?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, shared, async {
            // A dropped sender also means stop.
            drop(stopped.await);
        }));
        Ok(Upstream {
            addr,
            counters,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Relaxed)
    }

    /// Requests received so far (counted when their head is parsed).
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Relaxed)
    }

    /// Requests abandoned before their response was produced, because the
    /// client went away (connection closed, or request body broken).
    ///
    /// Counted when hyper notices the disconnect, shortly after it happens:
    /// tests should poll it.
    pub fn cancelled(&self) -> u64 {
        self.counters.cancelled.load(Relaxed)
    }

    /// Stops accepting (the listener is closed before this returns), lets
    /// in-flight requests finish, closes idle connections, and waits for all
    /// of it to be done.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            // Err only if the server already ended; nothing to stop then.
            stop.send(()).ok();
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other),
            None => Ok(()),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Counters shared by the accept loop, the handlers and [`Upstream`].
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    cancelled: AtomicU64,
}

/// Everything a request handler reads, derived once from [`Config`].
#[derive(Debug)]
struct Shared {
    name: String,
    name_header: HeaderValue,
    fixed_body: Option<Bytes>,
    latency: Duration,
    error_rate: f64,
    error_status: StatusCode,
    /// Error-injection draws; only locked when `0 < error_rate < 1`, and never across an await.
    rng: Mutex<fastrand::Rng>,
    counters: Arc<Counters>,
}

// === impl Shared ===

impl Shared {
    fn new(cfg: Config, counters: Arc<Counters>) -> io::Result<Shared> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        let name_header = HeaderValue::from_str(&cfg.name)
            .map_err(|_| invalid(format!("name {:?} is not a valid header value", cfg.name)))?;
        let error_status = StatusCode::from_u16(cfg.error_status).map_err(|_| {
            invalid(format!(
                "error status {} is not in 100..=999",
                cfg.error_status
            ))
        })?;
        if !(0.0..=1.0).contains(&cfg.error_rate) {
            return Err(invalid(format!(
                "error rate {} is not in 0.0..=1.0",
                cfg.error_rate
            )));
        }
        Ok(Shared {
            name_header,
            fixed_body: cfg.fixed_body_size.map(fixed_body),
            latency: cfg.latency,
            error_rate: cfg.error_rate,
            error_status,
            rng: Mutex::new(fastrand::Rng::with_seed(cfg.seed)),
            name: cfg.name,
            counters,
        })
    }

    /// Whether the next request subject to error injection fails.
    fn draw_error(&self) -> bool {
        if self.error_rate <= 0.0 {
            false
        } else if self.error_rate >= 1.0 {
            true
        } else {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            rng.f64() < self.error_rate
        }
    }
}

/// A body of exactly `len` bytes that is valid JSON whenever `len >= 2`:
/// `{"pad":"xxx…"}` from 10 bytes up, else `{}` padded with spaces.
fn fixed_body(len: usize) -> Bytes {
    const OPEN: &str = r#"{"pad":""#;
    const CLOSE: &str = r#""}"#;
    let mut body = String::with_capacity(len);
    if len >= OPEN.len() + CLOSE.len() {
        body.push_str(OPEN);
        body.extend(std::iter::repeat_n('x', len - OPEN.len() - CLOSE.len()));
        body.push_str(CLOSE);
    } else {
        if len >= 2 {
            body.push_str("{}");
        }
        body.extend(std::iter::repeat_n(' ', len - body.len()));
    }
    Bytes::from(body)
}

/// The accept loop: one task per connection, in a [`JoinSet`] so that
/// aborting the loop's task also aborts every connection.
async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.counters.connections.fetch_add(1, Relaxed);
                    conns.spawn(serve_connection(stream, Arc::clone(&shared), stop_rx.clone()));
                }
                // Per-connection failures (ECONNABORTED) or fd exhaustion
                // (EMFILE): keep serving, but do not spin on a persistent error.
                Err(err) => {
                    eprintln!("rgate-upstream: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Small responses must not wait for Nagle; failing to set it only costs latency.
    drop(stream.set_nodelay(true));
    let sessions = stop.clone();
    let service =
        service_fn(move |req| handler::handle(Arc::clone(&shared), sessions.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        // `/ws` takes the connection over after its 101.
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    // Connection errors (client gone, malformed request) end only this connection.
    tokio::select! {
        res = conn.as_mut() => drop(res),
        // The flag only ever changes once, to true (or its sender is gone: stop too).
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            drop(conn.await);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_body_has_exact_len_and_is_json_from_two_bytes() {
        for len in [0, 1, 2, 5, 9, 10, 11, 100, 4096] {
            let body = fixed_body(len);
            assert_eq!(body.len(), len);
            if len >= 2 {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .unwrap_or_else(|e| panic!("len {len}: {e}"));
            }
        }
    }

    #[test]
    fn error_draws_follow_the_seed() {
        let draws = |seed| {
            let cfg = Config {
                error_rate: 0.5,
                seed,
                ..Config::default()
            };
            let shared = Shared::new(cfg, Arc::default()).unwrap();
            (0..64).map(|_| shared.draw_error()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn invalid_config_is_rejected() {
        let bad = [
            Config {
                name: "a\nb".into(),
                ..Config::default()
            },
            Config {
                error_status: 42,
                ..Config::default()
            },
            Config {
                error_rate: 1.5,
                ..Config::default()
            },
            Config {
                error_rate: f64::NAN,
                ..Config::default()
            },
        ];
        for cfg in bad {
            let err = Shared::new(cfg.clone(), Arc::default()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{cfg:?}");
        }
    }
}
