//! Pooled HTTP/1.1 connections to upstream endpoints.
//!
//! Each worker thread keeps its own pool (a thread-local), so checking a
//! connection out or in takes no lock and no atomic shared with other workers.
//! A connection returns to the pool when its response body has been read to
//! the end; a body dropped half-read takes its connection with it, since the
//! rest of that response would still be on the wire. Pools are keyed by
//! address, so a change in a backend's membership never touches connections
//! to other containers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::backend::endpoint::InFlight;
use crate::backend::Admission;

/// How long an idle pooled connection is trusted. Upstreams commonly close idle
/// keep-alive connections after 60–75 s; staying under that avoids most races.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per endpoint per worker.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// How often each worker drops closed and expired idle connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The request body sent upstream: the client's body streamed through (with
/// the bytes it may still send under the route's `max_body`), or one held in
/// memory (none, or a small body kept so a retry can resend it).
#[derive(Debug)]
pub enum RequestBody {
    Incoming(Incoming, u64),
    Full(Option<Bytes>),
}

/// Why the client's body could not be streamed upstream.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("reading the client's body: {0}")]
    Client(#[source] hyper::Error),
    #[error("the body is over the route's max_body")]
    TooLarge,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            RequestBody::Incoming(body, remaining) => {
                let frame = match std::task::ready!(Pin::new(body).poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Err(error)) => {
                        return Poll::Ready(Some(Err(RequestBodyError::Client(error))))
                    }
                    Some(Ok(frame)) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    let length = data.len() as u64;
                    if length > *remaining {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                    }
                    *remaining -= length;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(body, _) => body.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(body, _) => body.size_hint(),
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A connection checked out of the pool (or freshly opened).
#[derive(Debug)]
pub struct Connection {
    sender: http1::SendRequest<RequestBody>,
    addr: SocketAddr,
    /// True when it came from the pool: it may have been closed by the
    /// upstream while idle, which makes a failure on it worth one retry.
    pub reused: bool,
}

impl Connection {
    pub fn sender(&mut self) -> &mut http1::SendRequest<RequestBody> {
        &mut self.sender
    }
}

/// Why a new connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

#[derive(Debug, Default)]
struct Pool {
    idle: HashMap<SocketAddr, Vec<Idle>>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

fn take_idle(addr: SocketAddr) -> Option<Idle> {
    POOL.with(|pool| pool.borrow_mut().idle.get_mut(&addr).and_then(Vec::pop))
}

/// Returns a connection to this thread's pool, if it is still usable.
fn check_in(connection: Connection) {
    if connection.sender.is_closed() {
        return;
    }
    // try_with: during thread teardown the pool may already be gone.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let idle = pool.idle.entry(connection.addr).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle {
                sender: connection.sender,
                since: Instant::now(),
            });
        }
    });
}

/// Runs on each worker for its lifetime: drops idle connections that the
/// upstream closed or that passed the idle timeout, including those to
/// endpoints that left their backend and will never be checked out again.
///
/// Its periodic timer also keeps the worker's timer wheel non-empty. Without
/// it, arming hyper's per-request header-read timer on an empty wheel unparks
/// the driver: measured at one extra eventfd write per two requests.
pub async fn sweep_idle_connections() {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        POOL.with(|pool| {
            pool.borrow_mut().idle.retain(|_, idle| {
                idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() < IDLE_TIMEOUT);
                !idle.is_empty()
            });
        });
    }
}

/// A ready connection to `addr`: a pooled one if any is alive, else a new one.
pub async fn checkout(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<Connection, ConnectError> {
    while let Some(mut idle) = take_idle(addr) {
        if idle.since.elapsed() >= IDLE_TIMEOUT || idle.sender.is_closed() {
            continue;
        }
        // The previous exchange may still be winding down; ready() waits for
        // that and fails if the upstream has closed the connection meanwhile.
        if idle.sender.ready().await.is_ok() {
            return Ok(Connection {
                sender: idle.sender,
                addr,
                reused: true,
            });
        }
    }
    connect(addr, connect_timeout).await
}

async fn connect(addr: SocketAddr, connect_timeout: Duration) -> Result<Connection, ConnectError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    // Small request/response exchanges must not wait for Nagle.
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            debug!(%addr, %error, "upstream connection ended");
        }
    });
    Ok(Connection {
        sender,
        addr,
        reused: false,
    })
}

/// What an exchange counts against until its response body ends.
#[derive(Debug, Default)]
pub struct Held {
    /// The endpoint's in-flight count (least_conn).
    pub in_flight: Option<InFlight>,
    /// A slot in the backend's bulkhead (max_in_flight).
    pub admission: Option<Admission>,
}

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    #[error("the upstream response body stalled for more than {0:?}")]
    IdleTimeout(Duration),
}

/// An upstream response body that gives its connection back to the pool once
/// read to the end, and gives up on an upstream that stalls mid-body.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    connection: Option<Connection>,
    /// Counters the exchange occupies until its body ends.
    _held: Held,
    idle_timeout: Duration,
    /// Armed on the first stall only: bodies that never wait pay nothing.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PooledBody {
    pub fn new(
        inner: Incoming,
        connection: Connection,
        held: Held,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            connection: Some(connection),
            _held: held,
            idle_timeout,
            idle: None,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(connection) = this.connection.take() {
                    check_in(connection);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = &mut this.idle {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // A broken body means a broken connection: never pool it.
            Poll::Ready(Some(Err(error))) => {
                this.connection = None;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.connection = None;
                    return Poll::Ready(Some(Err(BodyError::IdleTimeout(timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // The server may skip polling a body it knows is empty (e.g. a 204, or
        // Content-Length: 0): such a connection is still clean and reusable.
        if let Some(connection) = self.connection.take() {
            if self.inner.is_end_stream() {
                check_in(connection);
            }
        }
    }
}
