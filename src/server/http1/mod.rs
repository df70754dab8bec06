//! rgate's HTTP/1 server: one client connection's loop, in the connection's
//! own task: read a head, hand the request to the gateway, write the answer,
//! and again while the connection is kept alive.
//!
//! Purpose-built rather than a general server: heads are parsed in place and
//! shared by the request (no copies), a response head and a small body leave
//! in one write, and the timers are lazy: the header-read deadline is one
//! timer per connection, re-armed only when it fires, not one per request.
//!
//! HTTP/2 is hyper's: a connection that opens with the HTTP/2 preface is
//! handed over, with what has been read of it ([`Prefixed`]).

mod codec;
pub(crate) mod date;
mod inbound;
mod prefixed;

use std::future::poll_fn;
use std::io;
use std::pin::{pin, Pin};
use std::time::Duration;

use http::{Method, Request, Response, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::error::GatewayError;
use crate::proxy::inbound::{ClientBody, ReadBody as _};
use crate::proxy::tunnel::Tunnel;
use crate::proxy::{ConnectionContext, Gateway};
use crate::response::ResponseBody;
use crate::wire::chunked::{encode_chunk_size, LAST_CHUNK};

use self::codec::{HeadError, RequestHead, ResponseFraming, ResponsePlan};
use self::inbound::Inbound;
pub(crate) use self::prefixed::Prefixed;
use super::Limits;

/// How long a connection closed in the middle of a request body keeps
/// reading (and discarding) what the client still sends, so that the
/// kernel does not answer those bytes with a reset that destroys the answer.
const LINGER: Duration = Duration::from_secs(2);
/// Bodies up to this size are copied behind their head, to leave in one write.
const COPY_LIMIT: usize = 16 * 1024;
/// Opens every HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection's HTTP/1 service ended.
pub(crate) enum Served<I> {
    Closed,
    /// The client speaks HTTP/2: serve it with what was read so far.
    Http2(Prefixed<I>),
}

/// Serves a client connection until it closes, fails, times out waiting for
/// a head, or is told to drain (see [`read_head`] for when that closes it).
pub(crate) async fn serve<I>(
    io: I,
    ctx: &ConnectionContext,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
) -> Served<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut conn = Inbound::new(io);
    let mut out = Vec::with_capacity(1024);
    let draining = drain.clone();
    let mut drain_started = pin!(async move {
        // An error means the worker is gone: drain too.
        let _ = drain.wait_for(|&draining| draining).await;
    });
    // One timer for the connection's life, re-armed lazily (see `read_head`).
    let mut head_timer = pin!(tokio::time::sleep(limits.header_read_timeout));
    let mut waiting = Waiting {
        first: true,
        drained: false,
    };
    loop {
        let deadline = Instant::now() + limits.header_read_timeout;
        let head = match read_head(
            &mut conn,
            &limits,
            deadline,
            head_timer.as_mut(),
            drain_started.as_mut(),
            &mut waiting,
        )
        .await
        {
            Ok(Next::Request(head)) => head,
            Ok(Next::Http2) => return Served::Http2(Prefixed::new(conn.io, conn.buf)),
            Ok(Next::Close) => return Served::Closed,
            Err(error) => {
                let response = match error {
                    HeadError::Bad(bad) => GatewayError::BadRequest(bad),
                    HeadError::TooLarge => GatewayError::HeadTooLarge,
                }
                .into_response();
                let plan = ResponsePlan::new(
                    response.status(),
                    response.headers(),
                    response.body().size_hint().exact(),
                    &Method::GET,
                    Version::HTTP_11,
                    false,
                );
                if write_response(&mut conn.io, &mut out, response, plan, Version::HTTP_11)
                    .await
                    .is_ok()
                {
                    linger(&mut conn.io).await;
                }
                return Served::Closed;
            }
        };
        waiting.first = false;
        let RequestHead {
            parts,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        let method = parts.method.clone();
        let version = parts.version;
        conn.start_body(framing, expect_continue);
        let response = if conn.body_done() {
            // Nothing borrows the connection: watch it for the client going away.
            // Pinned where it is made: moving a request's future copies all of it.
            let handled = pin!(Gateway::handle(
                ctx,
                Request::from_parts(parts, ClientBody::Empty)
            ));
            tokio::select! {
                biased;
                response = handled => response,
                () = poll_fn(|cx| conn.poll_gone(cx)) => return Served::Closed,
            }
        } else {
            let body = ClientBody::Http1(&mut conn);
            Gateway::handle(ctx, Request::from_parts(parts, body)).await
        };
        let body_done = conn.skip_buffered_body();
        let keep_alive = keep_alive
            && body_done
            && !*draining.borrow()
            && !codec::asks_to_close(response.headers());
        let plan = ResponsePlan::new(
            response.status(),
            response.headers(),
            response.body().size_hint().exact(),
            &method,
            version,
            keep_alive,
        );
        match write_response(&mut conn.io, &mut out, response, plan, version).await {
            Ok(Some(tunnel)) => {
                tunnel.run(&mut conn.io, &conn.buf).await;
                return Served::Closed;
            }
            Ok(None) if plan.keep_alive => {}
            Ok(None) => {
                if body_done {
                    let _ = conn.io.shutdown().await;
                } else {
                    linger(&mut conn.io).await;
                }
                return Served::Closed;
            }
            Err(error) => {
                debug!(%error, "writing a response failed");
                return Served::Closed;
            }
        }
    }
}

/// What a connection waits for between requests.
struct Waiting {
    /// No request yet on this connection.
    first: bool,
    /// The worker is draining.
    drained: bool,
}

// Returned once per request: boxing the head would allocate each time.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(RequestHead),
    Http2,
    Close,
}

/// Reads the next request head. Closes the connection when the client
/// does, when `deadline` passes before a whole head, or when the worker
/// drains while the connection is idle between requests. A connection that
/// has not sent its first request yet is still waited for (up to the
/// deadline) during a drain: it may be one the listener had queued, whose
/// request is on its way.
///
/// `timer` is the connection's one timer. Arming a timer per request costs
/// a timer-wheel insert and removal each time; instead, a timer that fires
/// before the current deadline is simply re-armed to it.
async fn read_head<I: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Inbound<I>,
    limits: &Limits,
    deadline: Instant,
    mut timer: Pin<&mut tokio::time::Sleep>,
    mut drain_started: Pin<&mut impl std::future::Future<Output = ()>>,
    waiting: &mut Waiting,
) -> Result<Next, HeadError> {
    loop {
        if waiting.first
            && conn
                .buf
                .starts_with(&H2_PREFACE[..conn.buf.len().min(H2_PREFACE.len())])
        {
            if conn.buf.len() >= H2_PREFACE.len() {
                return Ok(Next::Http2);
            }
        } else if let Some(head) =
            codec::parse_request_head(&mut conn.buf, limits.max_header_size, &mut conn.spans)?
        {
            return Ok(Next::Request(head));
        }
        let idle = conn.buf.is_empty() && !waiting.first;
        if waiting.drained && idle {
            return Ok(Next::Close);
        }
        tokio::select! {
            biased;
            read = poll_fn(|cx| conn.poll_read_more(cx)) => match read {
                Ok(0) | Err(_) => return Ok(Next::Close),
                Ok(_) => {}
            },
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return Ok(Next::Close);
                }
                timer.as_mut().reset(deadline);
            }
            () = drain_started.as_mut(), if !waiting.drained => waiting.drained = true,
        }
    }
}

/// Writes a response; returns the tunnel to run next if it switched protocols.
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    response: Response<ResponseBody>,
    plan: ResponsePlan,
    client_version: Version,
) -> io::Result<Option<Box<Tunnel>>> {
    let (parts, body) = response.into_parts();
    out.clear();
    codec::encode_response_head(parts.status, &parts.headers, plan, client_version, out);
    match body {
        ResponseBody::Tunnel(tunnel) => {
            io.write_all(out).await?;
            io.flush().await?;
            Ok(Some(tunnel))
        }
        ResponseBody::Full(Some(bytes)) if plan.send_body => {
            if bytes.len() <= COPY_LIMIT {
                out.extend_from_slice(&bytes);
                io.write_all(out).await?;
            } else {
                io.write_all_buf(&mut bytes::Buf::chain(out.as_slice(), bytes))
                    .await?;
            }
            io.flush().await?;
            Ok(None)
        }
        ResponseBody::Upstream(body) if plan.send_body => {
            stream_body(io, out, body, plan.framing == ResponseFraming::Chunked).await?;
            Ok(None)
        }
        ResponseBody::Full(_) | ResponseBody::Upstream(_) => {
            io.write_all(out).await?;
            io.flush().await?;
            Ok(None)
        }
    }
}

/// Streams an upstream's body after the head waiting in `out`, which leaves
/// with the first piece. A body that breaks off ends the response short: the
/// connection then closes, which tells the client.
async fn stream_body<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    mut body: crate::proxy::upstream::PooledBody,
    chunked: bool,
) -> io::Result<()> {
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(error)) => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                }
                io.flush().await?;
                return Err(io::Error::other(error));
            }
            // Trailer fields are not passed on.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        if chunked {
            encode_chunk_size(data.len(), out);
        }
        if data.len() <= COPY_LIMIT {
            out.extend_from_slice(&data);
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            io.write_all(out).await?;
            out.clear();
        } else {
            io.write_all_buf(&mut bytes::Buf::chain(out.as_slice(), data))
                .await?;
            out.clear();
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
        io.flush().await?;
    }
    if chunked {
        out.extend_from_slice(LAST_CHUNK);
    }
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.flush().await
}

/// Closes a connection whose client may still be sending: the answer goes
/// out with a FIN, then what the client sends is read and dropped for up to
/// [`LINGER`], as nginx does.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(read) = io.read(&mut scratch).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
}
