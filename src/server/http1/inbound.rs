//! The read side of a client connection: the bytes read ahead of the parser,
//! and the body of the request being handled, which the request path reads
//! through [`ReadBody`] while the connection lends it its socket.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::SizeHint;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::proxy::inbound::{ClientBodyError, ReadBody};
use crate::wire::chunked::{ChunkedDecoder, Decoded};
use crate::wire::FieldSpan;

use super::codec::BodyFraming;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes read ahead (a pipelined next request) while a request is in
/// flight; past this, rgate stops reading until the response is out.
const READ_AHEAD: usize = 64 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[derive(Debug)]
pub(super) struct Inbound<I> {
    pub(super) io: I,
    /// Bytes read and not consumed yet: the next head, or body bytes.
    pub(super) buf: BytesMut,
    /// Where the fields of the head being parsed lie; kept to be reused.
    pub(super) spans: Vec<FieldSpan>,
    body: Body,
    /// Bytes of the `100 Continue` answer still to write, when the client
    /// waits for one before sending its body.
    continue_left: usize,
}

/// What is left of the current request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
    /// Cut short or malformed: nothing more is read from the connection.
    Broken,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Inbound<I> {
    pub(super) fn new(io: I) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            spans: Vec::new(),
            body: Body::Done,
            continue_left: 0,
        }
    }

    /// Starts reading a new request's body.
    pub(super) fn start_body(&mut self, framing: BodyFraming, expect_continue: bool) {
        self.body = match framing {
            BodyFraming::Empty => Body::Done,
            BodyFraming::Length(length) => Body::Length(length),
            BodyFraming::Chunked => Body::Chunked(ChunkedDecoder::Size),
        };
        self.continue_left = if expect_continue { CONTINUE.len() } else { 0 };
    }

    /// Whether the current request's body has been read to its end.
    pub(super) fn body_done(&self) -> bool {
        self.body == Body::Done
    }

    /// Drops what is left of a body nobody read, if all of it has already
    /// arrived (the common small body, sent with its head): the connection
    /// can then carry the next request. Never waits for more.
    pub(super) fn skip_buffered_body(&mut self) -> bool {
        while let Ok(Some(_)) = self.take_data() {}
        self.body_done()
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Writes what is left of the `100 Continue` answer.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.continue_left > 0 {
            let from = CONTINUE.len() - self.continue_left;
            let written =
                ready!(std::pin::Pin::new(&mut self.io).poll_write(cx, &CONTINUE[from..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_left -= written;
        }
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    /// The body bytes at hand, if any; updates what is left.
    fn take_data(&mut self) -> Result<Option<Bytes>, ClientBodyError> {
        match &mut self.body {
            Body::Done | Body::Broken => Ok(None),
            Body::Length(left) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let take = (*left).min(self.buf.len() as u64);
                *left -= take;
                if *left == 0 {
                    self.body = Body::Done;
                }
                // `take` fits in usize: it is at most buf.len().
                Ok(Some(self.buf.split_to(take as usize).freeze()))
            }
            Body::Chunked(decoder) => match decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(data)) => Ok(Some(data)),
                Ok(Decoded::End) => {
                    self.body = Body::Done;
                    Ok(None)
                }
                Ok(Decoded::Incomplete) => Ok(None),
                Err(error) => {
                    // Nothing after a framing error can be trusted.
                    self.body = Body::Broken;
                    Err(error.into())
                }
            },
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send> ReadBody for Inbound<I> {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ClientBodyError>>> {
        loop {
            match self.take_data() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(None) if self.is_end_stream() => return Poll::Ready(None),
                Ok(None) => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
            if let Err(error) = ready!(self.poll_continue(cx)) {
                return Poll::Ready(Some(Err(error.into())));
            }
            match ready!(self.poll_read_more(cx)) {
                Ok(0) => {
                    self.body = Body::Broken;
                    return Poll::Ready(Some(Err(ClientBodyError::Truncated)));
                }
                Ok(_) => {}
                Err(error) => {
                    self.body = Body::Broken;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.body, Body::Done | Body::Broken)
    }

    fn size_hint(&self) -> SizeHint {
        match self.body {
            Body::Length(left) => SizeHint::with_exact(left),
            Body::Chunked(_) => SizeHint::default(),
            Body::Done | Body::Broken => SizeHint::with_exact(0),
        }
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.body != Body::Done {
            return Poll::Pending;
        }
        while self.buf.len() < READ_AHEAD {
            match ready!(self.poll_read_more(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
        Poll::Pending
    }
}
