//! An accepted protocol switch (e.g. a WebSocket): once the client has the
//! upstream's 101, the two connections are spliced both ways until both sides
//! have closed (a side that closes has its close passed on).
//!
//! The tunnel is in-flight work on the backend: it keeps its bulkhead slot
//! (and its least_conn count) for its whole life. Its upstream connection now
//! carries another protocol, so it never returns to the pool. A tunnel with
//! no bytes either way for the route's `idle_timeout` is closed, so a
//! forgotten one cannot hold its slot for ever.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use super::upstream::{Connection, Held};

/// The upstream side of a switched connection, carried to the client
/// connection as the body of the 101 response.
#[derive(Debug)]
pub struct Tunnel {
    upstream: TcpStream,
    /// Bytes the upstream sent right behind its 101: the new protocol's.
    early: BytesMut,
    idle_timeout: Duration,
    _held: Held,
}

impl Tunnel {
    pub(crate) fn new(connection: Connection, held: Held, idle_timeout: Duration) -> Self {
        let (upstream, early) = connection.into_io();
        Self {
            upstream,
            early,
            idle_timeout,
            _held: held,
        }
    }

    /// Splices `client` with the upstream. `client_early` holds what the
    /// client sent right behind its request head, already read by rgate.
    pub async fn run<C>(mut self, client: &mut C, client_early: &[u8])
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let activity = Activity::new();
        let relayed = async {
            client.write_all(&self.early).await?;
            client.flush().await?;
            self.upstream.write_all(client_early).await?;
            let mut client = Active {
                io: client,
                activity: &activity,
            };
            let mut upstream = Active {
                io: &mut self.upstream,
                activity: &activity,
            };
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
        };
        tokio::select! {
            relayed = relayed => if let Err(error) = relayed {
                debug!(%error, "tunnel ended with an error");
            },
            () = activity.idle_for(self.idle_timeout) => debug!("idle tunnel closed"),
        }
    }
}

/// When a tunnel last carried bytes, in milliseconds since it opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(since, Relaxed);
    }

    /// Completes once no bytes have passed for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let due = self.opened + Duration::from_millis(self.last.load(Relaxed)) + timeout;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// One side of a tunnel, noting each read that carries bytes.
struct Active<'a, S> {
    io: &'a mut S,
    activity: &'a Activity,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut *this.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}
