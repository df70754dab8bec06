//! Upstream response bodies: decoded from the connection as the client reads
//! them, and the connection returned to the pool at their end.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::codec::ResponseFraming;
use super::exchange::Framing;
use super::{check_in, Connection, Held, READ_CHUNK};
use crate::response::ResponseBody;
use crate::wire::chunked::{BodyFramingError, ChunkedDecoder, Decoded};

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
        failed: None,
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
    /// An error held back for one poll (see [`PooledBody::fail`]).
    failed: Option<BodyError>,
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

    /// Ends the body with `error` on the next poll, not this one. hyper
    /// drops a connection whose body fails without flushing what it has
    /// buffered, so data handed out in this same poll (often the head and
    /// the first bytes) would never reach the client; one `Pending` lets
    /// hyper flush first. A broken body means a broken connection: it is
    /// never pooled.
    fn fail(
        &mut self,
        error: BodyError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.connection = None;
        self.failed = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
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
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
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
                Err(error) => return this.fail(error, cx),
            }
            match this.poll_read(cx) {
                Poll::Ready(Ok(0)) if matches!(this.decoder, Decoder::UntilClose) => {
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(BodyError::Truncated, cx),
                Poll::Ready(Ok(_)) => {
                    if let Some(idle) = &mut this.idle {
                        idle.as_mut()
                            .reset(tokio::time::Instant::now() + this.idle_timeout);
                    }
                }
                Poll::Ready(Err(error)) => return this.fail(error.into(), cx),
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
        self.connection.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[tokio::test]
    async fn a_failure_right_after_data_waits_one_poll_so_the_data_is_flushed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut upstream, _) = accepted.unwrap();
        upstream.write_all(b"only-ten-b").await.unwrap();
        drop(upstream);
        let mut connection = Connection::new(client.unwrap(), addr);
        // The bytes and the close are both at hand before the body is polled.
        while connection
            .stream
            .read_buf(&mut connection.read_buf)
            .await
            .unwrap()
            > 0
        {}
        let framing = Framing {
            framing: ResponseFraming::Length(100),
            keep_alive: true,
        };
        let body = response_body(framing, connection, Held::default(), Duration::from_secs(5));
        let ResponseBody::Upstream(mut body) = body else {
            panic!("a 100-byte body with 10 bytes at hand streams");
        };
        let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        assert!(
            matches!(&first, Poll::Ready(Some(Ok(frame))) if frame.data_ref().unwrap() == "only-ten-b")
        );
        let second = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        assert!(second.is_pending(), "the error waits one poll");
        assert!(!body.is_end_stream());
        let third = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        assert!(matches!(
            third,
            Poll::Ready(Some(Err(BodyError::Truncated)))
        ));
        assert!(body.is_end_stream());
    }
}
