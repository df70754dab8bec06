//! Upstream response bodies: decoded from the connection as the client reads
//! them, and the connection returned to the pool at their end.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::codec::{BodyFramingError, ChunkedDecoder, Decoded, ResponseFraming};
use super::exchange::Framing;
use super::{check_in, Connection, Held, READ_CHUNK};
use crate::response::ResponseBody;

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the upstream response body: {0}")]
    Read(#[from] std::io::Error),
    #[error("the upstream closed the connection before the end of the body")]
    Truncated,
    #[error(transparent)]
    Framing(#[from] BodyFramingError),
    #[error("the upstream response body stalled for more than {0:?}")]
    IdleTimeout(Duration),
}

/// The body that follows a response head. A body already read in full with
/// its head (the common small response) is handed over as bytes at once: its
/// connection goes back to the pool before the client sees the head.
pub fn response_body(
    framing: Framing,
    mut connection: Connection,
    held: Held,
    idle_timeout: Duration,
) -> ResponseBody {
    let decoder = match framing.framing {
        ResponseFraming::Empty => {
            finish(connection, framing.keep_alive);
            return ResponseBody::Full(None);
        }
        ResponseFraming::Length(length) if connection.read_buf.len() as u64 >= length => {
            // `length` fits in usize: it is at most the buffer's length.
            let bytes = connection.read_buf.split_to(length as usize).freeze();
            finish(connection, framing.keep_alive);
            return ResponseBody::Full(Some(bytes));
        }
        ResponseFraming::Length(length) => Decoder::Length(length),
        ResponseFraming::Chunked => Decoder::Chunked(ChunkedDecoder::Size),
        ResponseFraming::UntilClose => Decoder::UntilClose,
    };
    ResponseBody::Upstream(PooledBody {
        connection: Some(connection),
        decoder,
        keep_alive: framing.keep_alive,
        _held: held,
        idle_timeout,
        idle: None,
    })
}

/// A connection whose exchange is over: pooled if the upstream allows.
fn finish(connection: Connection, keep_alive: bool) {
    if keep_alive {
        check_in(connection);
    }
}

#[derive(Debug)]
enum Decoder {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// An upstream response body streamed to the client. It gives its connection
/// back to the pool once read to the end, and gives up on an upstream that
/// stalls mid-body; dropped half-read, it closes the connection, since the
/// rest of that response would still be on the wire.
#[derive(Debug)]
pub struct PooledBody {
    /// `None` once the body has ended.
    connection: Option<Connection>,
    decoder: Decoder,
    keep_alive: bool,
    /// Counters the exchange occupies until its body ends.
    _held: Held,
    idle_timeout: Duration,
    /// Armed on the first stall only: bodies that never wait pay nothing.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// One step of decoding.
enum Step {
    Data(Bytes),
    End,
    Read,
}

impl PooledBody {
    /// Decodes from what is buffered: data, the end, or a need for more bytes.
    fn step(&mut self) -> Result<Step, BodyError> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(Step::End);
        };
        let buf = &mut connection.read_buf;
        match &mut self.decoder {
            Decoder::Length(0) => Ok(Step::End),
            Decoder::Length(_) | Decoder::UntilClose if buf.is_empty() => Ok(Step::Read),
            Decoder::Length(remaining) => {
                let take = (*remaining).min(buf.len() as u64);
                *remaining -= take;
                // `take` fits in usize: it is at most the buffer's length.
                Ok(Step::Data(buf.split_to(take as usize).freeze()))
            }
            Decoder::UntilClose => Ok(Step::Data(buf.split().freeze())),
            Decoder::Chunked(decoder) => match decoder.decode(buf)? {
                Decoded::Data(data) => Ok(Step::Data(data)),
                Decoded::End => Ok(Step::End),
                Decoded::Incomplete => Ok(Step::Read),
            },
        }
    }

    /// Whether every byte of the body has been handed out.
    fn complete(&self) -> bool {
        matches!(self.decoder, Decoder::Length(0))
    }

    fn end(&mut self) {
        if let Some(connection) = self.connection.take() {
            if !matches!(self.decoder, Decoder::UntilClose) {
                finish(connection, self.keep_alive);
            }
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, std::io::Error>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let buf = &mut connection.read_buf;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut connection.stream), cx, buf)
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
        loop {
            match this.step() {
                Ok(Step::Data(data)) => {
                    // The last bytes: pool the connection now, before the
                    // server asks again (it may not, knowing the length).
                    if this.complete() {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(Step::Read) => {}
                // A broken body means a broken connection: never pool it.
                Err(error) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            match this.poll_read(cx) {
                Poll::Ready(Ok(0)) if matches!(this.decoder, Decoder::UntilClose) => {
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(BodyError::Truncated)));
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(idle) = &mut this.idle {
                        idle.as_mut()
                            .reset(tokio::time::Instant::now() + this.idle_timeout);
                    }
                }
                Poll::Ready(Err(error)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error.into())));
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
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}
