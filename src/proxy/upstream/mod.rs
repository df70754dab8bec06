//! The upstream leg: pooled HTTP/1.1 connections to upstream endpoints, and
//! the exchange of one request and response over them.
//!
//! rgate speaks HTTP/1.1 to upstreams itself (the [`codec`] module) instead of
//! through a general-purpose client: an exchange runs inside the request's
//! own task, with no channel to a per-connection task and no wake-ups between
//! the two, and a small response arrives with its head already read in full.
//!
//! Each worker thread keeps its own pool (a thread-local), so checking a
//! connection out or in takes no lock and no atomic shared with other workers.
//! A connection returns to the pool when its response body has been read to
//! the end; a body dropped half-read takes its connection with it, since the
//! rest of that response would still be on the wire. Pools are keyed by
//! address, so a change in a backend's membership never touches connections
//! to other containers.

mod body;
pub(crate) mod codec;
mod exchange;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

pub use self::body::{response_body, BodyError, PooledBody};
pub use self::codec::HeadError;
pub use self::exchange::{Failed, Framing, SendError};
pub use crate::wire::chunked::BodyFramingError;

use crate::backend::endpoint::InFlight;
use crate::backend::Admission;
use crate::proxy::inbound::{ClientBody, ClientBodyError};

/// How long an idle pooled connection is trusted, in sweeps (seconds).
/// Upstreams commonly close idle keep-alive connections after 60–75 s;
/// staying under that avoids most races.
const IDLE_SWEEPS: u64 = 50;
/// Idle connections kept per endpoint per worker.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// How often each worker drops closed and expired idle connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// The request body sent upstream: the client's body streamed through (with
/// the bytes it may still send under the route's `max_body`), or one held in
/// memory (none, or a small body kept so a retry can resend it).
#[derive(Debug)]
pub enum RequestBody<'a> {
    Incoming(ClientBody<'a>, u64),
    Full(Option<Bytes>),
}

/// Why the client's body could not be streamed upstream.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("reading the client's body: {0}")]
    Client(#[source] ClientBodyError),
    #[error("the body is over the route's max_body")]
    TooLarge,
}

impl Body for RequestBody<'_> {
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

/// A connection to an upstream endpoint, checked out of the pool (or freshly
/// opened). Its buffers live as long as it does, so an exchange on a pooled
/// connection allocates nothing for its head.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read from the upstream and not consumed yet.
    read_buf: BytesMut,
    /// The request head (and a small in-memory body) being written.
    write_buf: Vec<u8>,
    /// Where the fields of the response head being parsed lie.
    spans: Vec<crate::wire::FieldSpan>,
    /// Bounds each exchange by its route's deadline; one per connection,
    /// re-armed lazily (see [`Connection::send`]).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    addr: SocketAddr,
    /// True when it came from the pool: it may have been closed by the
    /// upstream while idle, which makes a failure on it worth one retry.
    pub reused: bool,
}

impl Connection {
    fn new(stream: TcpStream, addr: SocketAddr) -> Self {
        Self {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: Vec::with_capacity(1024),
            spans: Vec::new(),
            timer: None,
            addr,
            reused: false,
        }
    }

    /// Whether an idle connection can carry a request: the upstream has
    /// neither closed it nor sent anything unasked. Reads the readiness the
    /// runtime already has; a syscall only when the socket looks readable.
    fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Ok(())) => matches!(
                self.stream.try_read(&mut [0; 1]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock
            ),
            Poll::Ready(Err(_)) => false,
        }
    }

    /// The raw stream and any bytes already read from it, for a tunnel.
    pub fn into_io(self) -> (TcpStream, BytesMut) {
        (self.stream, self.read_buf)
    }
}

/// Why a new connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    #[error("connect timed out")]
    Timeout,
}

#[derive(Debug)]
struct Idle {
    connection: Connection,
    /// The pool's sweep count when it was checked in.
    since: u64,
}

#[derive(Debug, Default)]
struct Pool {
    /// Keyed by endpoint addresses, which rgate chose: no need for a
    /// collision-resistant (and slower) hash.
    idle: HashMap<SocketAddr, Vec<Idle>, rustc_hash::FxBuildHasher>,
    /// Sweeps so far: the pool's clock, so ageing connections reads none.
    sweeps: u64,
}

impl Idle {
    fn is_fresh(&self, sweeps: u64) -> bool {
        sweeps - self.since < IDLE_SWEEPS && self.connection.is_usable()
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// An idle connection to `addr` that is still fit for use, if any.
fn take_idle(addr: SocketAddr) -> Option<Connection> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let sweeps = pool.sweeps;
        let idle = pool.idle.get_mut(&addr)?;
        while let Some(candidate) = idle.pop() {
            if candidate.is_fresh(sweeps) {
                return Some(candidate.connection);
            }
        }
        None
    })
}

/// Returns a connection whose exchange is complete to this thread's pool, if
/// the upstream left it fit for another one.
fn check_in(mut connection: Connection) {
    // Bytes after the response's end: the upstream is out of step.
    if !connection.read_buf.is_empty() {
        return;
    }
    connection.reused = true;
    // try_with: during thread teardown the pool may already be gone.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let since = pool.sweeps;
        let idle = pool.idle.entry(connection.addr).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle { connection, since });
        }
    });
}

/// Runs on each worker for its lifetime: drops idle connections that the
/// upstream closed or that passed the idle timeout, including those to
/// endpoints that left their backend and will never be checked out again.
///
/// Its periodic timer also keeps the worker's timer wheel non-empty. Without
/// it, arming a request's route timeout on an empty wheel unparks the
/// driver: measured at one extra eventfd write per two requests.
pub async fn sweep_idle_connections() {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.sweeps += 1;
            let sweeps = pool.sweeps;
            pool.idle.retain(|_, idle| {
                idle.retain(|c| c.is_fresh(sweeps));
                !idle.is_empty()
            });
        });
    }
}

/// A connection to `addr`: a pooled one if any is alive, else a new one.
pub async fn checkout(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<Connection, ConnectError> {
    if let Some(connection) = take_idle(addr) {
        return Ok(connection);
    }
    // Boxed: every request's future would otherwise carry the connect
    // future's space, and copy it around, for what pooling makes rare.
    Box::pin(connect(addr, connect_timeout)).await
}

async fn connect(addr: SocketAddr, connect_timeout: Duration) -> Result<Connection, ConnectError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    // Small request/response exchanges must not wait for Nagle.
    stream.set_nodelay(true)?;
    Ok(Connection::new(stream, addr))
}

/// What an exchange counts against until its response body ends.
#[derive(Debug, Default)]
pub struct Held {
    /// The endpoint's in-flight count (least_conn).
    pub in_flight: Option<InFlight>,
    /// A slot in the backend's bulkhead (max_in_flight).
    pub admission: Option<Admission>,
}
