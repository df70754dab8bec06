//! Listeners and worker threads.
//!
//! One worker per core, each a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` listener and its own upstream connection pool: the kernel
//! spreads connections over workers, and nothing on the request path is
//! shared between them except the snapshot pointer and read-mostly data.

pub mod handover;
mod http1;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use self::http1::Served;
use crate::observe::stats::StatsShard;
use crate::proxy::inbound::ClientBody;
use crate::proxy::{upstream, ConnectionContext, Gateway, Scheme};
use crate::tls::{self, HANDSHAKE_TIMEOUT};

const LISTEN_BACKLOG: i32 = 4096;

type Http2Builder = http2::Builder<TokioExecutor>;

/// Client-facing limits of the listener (`limits:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head, in bytes; a larger one is answered 431.
    pub max_header_size: usize,
    /// Time allowed for a request head, from when the connection is ready for
    /// one: on a new connection, and between requests on a kept-alive one.
    pub header_read_timeout: Duration,
    /// Client connections open at once over all workers; more are answered 503.
    pub max_connections: u32,
}

impl Limits {
    /// Smaller would refuse ordinary requests (browsers send several KiB of cookies).
    pub const MIN_HEADER_SIZE: usize = 8 * 1024;
    pub const MAX_HEADER_SIZE: usize = 16 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_size: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// Client connections open now, shared by the workers: one atomic add per
/// connection, never per request.
#[derive(Debug, Default)]
pub struct ConnectionCount(AtomicU32);

/// One client connection counted under the cap, until dropped.
#[derive(Debug)]
struct Counted(Arc<ConnectionCount>);

impl ConnectionCount {
    fn admit(self: &Arc<Self>, max: u32) -> Option<Counted> {
        if self.0.fetch_add(1, Relaxed) >= max {
            self.0.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Counted(self.clone()))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Relaxed);
    }
}

/// The whole answer to a connection over the cap: written raw, since serving
/// HTTP on it would spend what the cap protects.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncontent-length: 32\r\nconnection: close\r\n\r\n\
{\"error\":\"too_many_connections\"}";

/// Binds `count` sockets to the same address with `SO_REUSEPORT` (one per
/// worker, so the kernel spreads connections). Port 0 is resolved by the
/// first bind and reused by the others.
///
/// A port some other socket listens on is refused (`AddrInUse`), as nginx
/// and HAProxy refuse it: `SO_REUSEPORT` alone would let a second rgate
/// join the group and silently take part of the traffic. A restart that
/// keeps the port goes through the handover instead.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        // Without SO_REUSEPORT this bind fails while anyone listens there;
        // SO_REUSEADDR still lets it pass over connections in TIME_WAIT.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into()).map_err(|error| {
            if error.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "the port is in use (by another rgate?); to restart rgate on it without \
                     refusing connections, start the new one with --take-over",
                )
            } else {
                error
            }
        })?;
    }
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// What a worker did when asked to stop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Requests in flight at shutdown that completed.
    pub drained: u64,
    /// Requests still in flight when the drain deadline passed.
    pub aborted: u64,
}

impl std::ops::Add for DrainReport {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            drained: self.drained + other.drained,
            aborted: self.aborted + other.aborted,
        }
    }
}

/// Everything a worker needs.
#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    pub listener: std::net::TcpListener,
    pub gateway: Arc<Gateway>,
    pub shard: Arc<StatsShard>,
    pub shutdown: watch::Receiver<bool>,
    pub drain_timeout: Duration,
    pub limits: Limits,
    pub connections: Arc<ConnectionCount>,
    /// Terminates TLS on `listener` when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A plain-HTTP listener that only redirects to HTTPS.
    pub redirect: Option<RedirectListener>,
}

/// A plain-HTTP listener whose every answer is a redirect to `https_port`.
#[derive(Debug)]
pub struct RedirectListener {
    pub listener: std::net::TcpListener,
    pub https_port: u16,
}

/// The runtime of each of rgate's threads (workers, control, admin): one
/// thread, no work stealing, timers and I/O on.
pub(crate) fn current_thread_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

impl Worker {
    /// Starts the worker on its own thread.
    pub fn spawn(self) -> io::Result<thread::JoinHandle<io::Result<DrainReport>>> {
        thread::Builder::new()
            .name(format!("rgate-worker-{}", self.index))
            .spawn(move || {
                let runtime = current_thread_runtime()?;
                runtime.block_on(self.run())
            })
    }

    async fn run(mut self) -> io::Result<DrainReport> {
        crate::observe::metrics::set_worker(self.index);
        let listener = TcpListener::from_std(self.listener)?;
        let (redirect, https_port) = match self.redirect {
            Some(redirect) => (
                Some(TcpListener::from_std(redirect.listener)?),
                redirect.https_port,
            ),
            None => (None, 0),
        };
        let tls = self.tls.map(TlsAcceptor::from);
        let scheme = if tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let limits = self.limits;
        // The redirect port's tiny service runs on hyper's server (both protocols).
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(limits.max_header_size)
            .header_read_timeout(limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        tokio::spawn(upstream::sweep_idle_connections());

        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
        let http2 = Arc::new(http2);
        tokio::spawn(http1::date::keep_current());

        let drain = self.shutdown.clone();
        let serve = |stream: TcpStream, peer: SocketAddr| {
            let Some(counted) = self.connections.admit(limits.max_connections) else {
                tokio::spawn(refuse(stream));
                return;
            };
            let ctx = Arc::new(ConnectionContext::new(
                self.gateway.clone(),
                self.shard.clone(),
                peer,
                scheme,
            ));
            // Taken now, so a drain that starts during the handshake still waits for this connection.
            let in_drain = graceful.watcher();
            let drain = drain.clone();
            let tls = tls.clone();
            let http2 = http2.clone();
            // The handshake runs in the connection's task, never in the accept loop.
            tokio::spawn(async move {
                match tls {
                    None => serve_client(stream, ctx, &http2, limits, drain).await,
                    Some(acceptor) => {
                        let Some(stream) = handshake(&acceptor, stream, peer).await else {
                            return;
                        };
                        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            serve_http2(stream, ctx, &http2, drain).await;
                        } else {
                            serve_client(stream, ctx, &http2, limits, drain).await;
                        }
                    }
                }
                drop(in_drain);
                drop(counted);
            });
        };

        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Some((stream, peer)) = accepted_connection(accepted).await {
                        serve(stream, peer);
                    }
                }
                accepted = accept_if_listening(redirect.as_ref()) => {
                    let Some((stream, peer)) = accepted_connection(accepted).await else {
                        continue;
                    };
                    let Some(counted) = self.connections.admit(limits.max_connections) else {
                        tokio::spawn(refuse(stream));
                        continue;
                    };
                    let service = service_fn(move |request| async move {
                        Ok::<_, Infallible>(tls::redirect::answer(&request, https_port))
                    });
                    let connection = graceful.watch(
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned(),
                    );
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            debug!(%peer, %error, "redirect connection ended with an error");
                        }
                        drop(counted);
                    });
                }
                _ = self.shutdown.changed() => break,
            }
        }

        // Stop accepting at once; then let in-flight requests finish. Closing a
        // listener resets the connections in its accept queue, so those are
        // taken and served first.
        drop(redirect);
        for (stream, peer) in take_queued(listener) {
            serve(stream, peer);
        }
        let in_flight = self.shard.in_flight();
        let drained_in_time = tokio::time::timeout(self.drain_timeout, graceful.shutdown())
            .await
            .is_ok();
        let aborted = if drained_in_time {
            0
        } else {
            self.shard.in_flight()
        };
        Ok(DrainReport {
            drained: in_flight.saturating_sub(aborted),
            aborted,
        })
    }
}

/// Serves a client connection: rgate's own HTTP/1 server, handing over to
/// hyper's HTTP/2 when the client opens with the HTTP/2 preface.
async fn serve_client<I>(
    io: I,
    ctx: Arc<ConnectionContext>,
    http2: &Http2Builder,
    limits: Limits,
    drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match http1::serve(io, &ctx, limits, drain.clone()).await {
        Served::Closed => {}
        Served::Http2(io) => serve_http2(io, ctx, http2, drain).await,
    }
}

/// Serves an HTTP/2 connection until it ends or, once the worker drains,
/// until its open streams are done (it is sent a GOAWAY).
async fn serve_http2<I>(
    io: I,
    ctx: Arc<ConnectionContext>,
    http2: &Http2Builder,
    mut drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: http::Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            let request = request.map(ClientBody::Http2);
            Ok::<_, Infallible>(Gateway::handle(&ctx, request).await)
        }
    });
    let mut conn = std::pin::pin!(http2.serve_connection(TokioIo::new(io), service));
    let drained = async {
        // An error means the worker is gone: drain too.
        let _ = drain.wait_for(|&draining| draining).await;
    };
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = drained => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = served {
        debug!(%error, "HTTP/2 connection ended with an error");
    }
}

/// Answers a connection over the cap with 503 and closes it, without reading
/// the request; bounded so a client that never reads cannot hold it open.
async fn refuse(mut stream: TcpStream) {
    let write = async {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await
    };
    if let Err(error) = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    {
        debug!(%error, "refusing a connection over the cap");
    }
}

/// The accepted connection, ready to serve; `None` after a failed accept.
async fn accepted_connection(
    accepted: io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok((stream, peer)) => {
            if let Err(error) = stream.set_nodelay(true) {
                debug!(%error, "set_nodelay failed");
            }
            Some((stream, peer))
        }
        Err(error) => {
            // Typically EMFILE: back off briefly instead of spinning.
            warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        }
    }
}

/// Closes `listener` and returns the connections the kernel had already
/// completed on it. Without this they would be reset by the close: with
/// `SO_REUSEPORT`, during a rolling restart, connections the kernel steered
/// to the old process just before it stopped would fail.
///
/// Handshakes still in progress at the close are reset by the kernel all the
/// same (unless `net.ipv4.tcp_migrate_req` is 1); this shrinks the window to
/// the few microseconds between the last accept and the close.
fn take_queued(listener: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut queued = Vec::new();
    // A std listener, so `accept` asks the kernel rather than tokio's cached readiness.
    let Ok(listener) = listener.into_std() else {
        return queued;
    };
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(stream) => {
                        if let Err(error) = stream.set_nodelay(true) {
                            debug!(%error, "set_nodelay failed");
                        }
                        queued.push((stream, peer));
                    }
                    Err(error) => debug!(%error, "cannot serve a queued connection"),
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => {
                debug!(%error, "accept failed while closing the listener");
                break;
            }
        }
    }
    queued
}

/// Accepts on `listener`, or waits forever when there is none.
async fn accept_if_listening(
    listener: Option<&TcpListener>,
) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// The TLS handshake, bounded so a client that never finishes it cannot hold
/// a connection and its buffers forever.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_capacity_answer_declares_its_exact_length() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn the_connection_cap_admits_up_to_its_limit_and_frees_on_drop() {
        let count = Arc::new(ConnectionCount::default());
        let first = count.admit(2).unwrap();
        let _second = count.admit(2).unwrap();
        assert!(count.admit(2).is_none());
        drop(first);
        assert!(count.admit(2).is_some());
    }
}
