//! A watch on the raw HTTP/1 byte stream of a client connection, for the one
//! framing fault hyper resolves out of sight: a request with both
//! `Content-Length` and `Transfer-Encoding`. hyper drops the length and reads
//! the chunked body (RFC 9112 §6.3), so the request rgate sees looks clean.
//! rgate refuses such a request instead (400, connection closed): a message
//! that two parsers could frame differently is a smuggling attempt.
//!
//! The watch follows the stream's framing as hyper will read it (heads, then
//! bodies by length or chunks) without copying it, and records which request
//! on the connection carried both fields. It steps aside for good wherever
//! hyper itself ends the HTTP/1 conversation: HTTP/2, an upgrade, CONNECT,
//! or framing hyper will refuse.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the watch and the request path share for one connection.
#[derive(Debug)]
pub struct FramingRecord {
    /// Requests handed to rgate so far.
    requests: AtomicU64,
    /// The index of the first request that carried both fields, or `u64::MAX`.
    conflict: AtomicU64,
}

impl Default for FramingRecord {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            conflict: AtomicU64::new(u64::MAX),
        }
    }
}

impl FramingRecord {
    /// Called once per request, in order: whether this one carried both fields.
    /// hyper hands requests over in the order their heads arrived, and the
    /// watch has seen each head before hyper parses it.
    pub fn next_request_conflicts(&self) -> bool {
        let index = self.requests.fetch_add(1, Relaxed);
        self.conflict.load(Relaxed) == index
    }
}

/// Marks a request whose head carried both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug, Clone, Copy)]
pub struct ConflictingLengths;

/// How long a connection closed in the middle of a request body keeps
/// reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// An IO stream whose incoming bytes are watched (see the module docs).
///
/// Its shutdown is a lingering close when the client is still sending a
/// request body (an upstream answered early, or rgate refused the request):
/// closing a socket with unread data makes the kernel send a reset, which
/// can destroy the answer before the client reads it. So rgate sends its FIN
/// first, then reads and discards until the client closes too, for at most
/// [`LINGER`].
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    scanner: Scanner,
    record: Arc<FramingRecord>,
    /// Set once the write side is shut down, while lingering.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Watched<S> {
    /// `max_line`: the longest head line worth following; hyper refuses
    /// larger heads (431) on its own.
    pub fn new(inner: S, record: Arc<FramingRecord>, max_line: usize) -> Self {
        Self {
            inner,
            scanner: Scanner::new(max_line),
            record,
            linger: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(index) = this.scanner.scan(&buf.filled()[before..]) {
            this.record.conflict.store(index, Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            if !this.scanner.mid_body() {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 4096];
        loop {
            if let Some(deadline) = &mut this.linger {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
            }
            let mut discard = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut discard) {
                Poll::Ready(Ok(())) if discard.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Where in the stream the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    RequestLine,
    Fields,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    /// CRLF after chunk data: how many of its two bytes are still to come.
    ChunkDataEnd(u8),
    Trailers,
    /// Not following any more.
    Off,
}

/// What the head being read has declared so far.
#[derive(Debug, Default, Clone, Copy)]
struct Head {
    content_length: Option<u64>,
    transfer_encoding: bool,
    upgrade: bool,
}

/// The framing state machine behind [`Watched`].
#[derive(Debug)]
struct Scanner {
    state: State,
    head: Head,
    /// A line split across reads (rare: heads mostly arrive whole).
    partial: Vec<u8>,
    max_line: usize,
    /// Request heads completed so far.
    requests: u64,
    /// The watch stopped on a refused request whose body may still be coming.
    refused_with_body: bool,
}

impl Scanner {
    fn new(max_line: usize) -> Self {
        Self {
            state: State::RequestLine,
            head: Head::default(),
            partial: Vec::new(),
            max_line,
            requests: 0,
            refused_with_body: false,
        }
    }

    /// Whether the client is in the middle of sending a request body.
    fn mid_body(&self) -> bool {
        self.refused_with_body
            || matches!(
                self.state,
                State::Body(_)
                    | State::ChunkSize
                    | State::ChunkData(_)
                    | State::ChunkDataEnd(_)
                    | State::Trailers
            )
    }

    /// Follows `bytes`; returns the index of a request that carried both
    /// `Content-Length` and `Transfer-Encoding`, if its head ended here.
    fn scan(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return None,
                State::Body(left) | State::ChunkData(left) => {
                    let take = left.min(bytes.len() as u64);
                    // `take` fits in usize: it is at most bytes.len().
                    bytes = &bytes[take as usize..];
                    self.state = match (self.state, left - take) {
                        (State::Body(_), 0) => State::RequestLine,
                        (_, 0) => State::ChunkDataEnd(2),
                        (State::Body(_), left) => State::Body(left),
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::ChunkDataEnd(left) => {
                    let take = usize::from(left).min(bytes.len());
                    bytes = &bytes[take..];
                    // `take` is at most 2.
                    self.state = match left - take as u8 {
                        0 => State::ChunkSize,
                        left => State::ChunkDataEnd(left),
                    };
                }
                State::RequestLine | State::Fields | State::ChunkSize | State::Trailers => {
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        self.partial.extend_from_slice(bytes);
                        if self.partial.len() > self.max_line {
                            self.state = State::Off;
                        }
                        return None;
                    };
                    let conflict = if self.partial.is_empty() {
                        self.line(&bytes[..end])
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(&bytes[..end]);
                        let conflict = self.line(&line);
                        line.clear();
                        self.partial = line;
                        conflict
                    };
                    bytes = &bytes[end + 1..];
                    if conflict.is_some() {
                        return conflict;
                    }
                }
            }
        }
        None
    }

    /// Follows one line (without its LF).
    fn line(&mut self, line: &[u8]) -> Option<u64> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.state {
            // Empty lines before a request line are allowed (RFC 9112 §2.2).
            State::RequestLine if line.is_empty() => {}
            State::RequestLine => {
                self.head = Head {
                    upgrade: line.starts_with(b"CONNECT "),
                    ..Head::default()
                };
                self.state = if line.starts_with(b"PRI * HTTP/2.0") {
                    State::Off
                } else {
                    State::Fields
                };
            }
            State::Fields if line.is_empty() => return self.end_of_head(),
            State::Fields => self.field(line),
            State::ChunkSize => {
                let digits = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                self.state = match (digits, parse_hex(&line[..digits])) {
                    (1..=16, Some(0)) => State::Trailers,
                    (1..=16, Some(size)) => State::ChunkData(size),
                    // hyper refuses it and closes the connection.
                    _ => State::Off,
                };
            }
            State::Trailers if line.is_empty() => self.state = State::RequestLine,
            State::Trailers => {}
            State::Body(_) | State::ChunkData(_) | State::ChunkDataEnd(_) | State::Off => {}
        }
        None
    }

    fn field(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_decimal(value) {
                Some(length) => self.head.content_length = Some(length),
                // hyper refuses it and closes the connection.
                None => self.state = State::Off,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.head.upgrade = true;
        }
    }

    fn end_of_head(&mut self) -> Option<u64> {
        let index = self.requests;
        self.requests += 1;
        let head = self.head;
        if head.content_length.is_some() && head.transfer_encoding {
            // Refused by rgate, and the connection closed after the answer.
            self.state = State::Off;
            self.refused_with_body = true;
            return Some(index);
        }
        self.state = match (head.content_length, head.transfer_encoding) {
            // The stream may become another protocol.
            _ if head.upgrade => State::Off,
            (_, true) => State::ChunkSize,
            (Some(0) | None, false) => State::RequestLine,
            (Some(length), false) => State::Body(length),
        };
        None
    }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, digit| {
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &digit| {
        let value = (digit as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(value))
    })
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
