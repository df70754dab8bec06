//! The client's request body, whichever server read the request: rgate's own
//! HTTP/1 connection, which lends its socket to the body while the request is
//! handled, or hyper's HTTP/2, whose streams carry their own bodies.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::wire::chunked::BodyFramingError;

/// A request body read from an HTTP/1 client connection.
pub trait ReadBody: Send {
    /// The next piece of the body; `None` after its last byte.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ClientBodyError>>>;
    fn is_end_stream(&self) -> bool;
    fn size_hint(&self) -> SizeHint;
    /// Ready once the client has closed its connection. Only meaningful after
    /// the body's end: until then, a close is a body error.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Why the client's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error(transparent)]
    Http2(#[from] hyper::Error),
    #[error("reading the body: {0}")]
    Read(#[from] io::Error),
    #[error("the client closed the connection before the body's end")]
    Truncated,
    #[error("malformed chunked body: {0}")]
    Framing(#[from] BodyFramingError),
}

/// The body of a request being handled.
pub enum ClientBody<'a> {
    /// No body: the HTTP/1 head declared none.
    Empty,
    Http1(&'a mut dyn ReadBody),
    Http2(Incoming),
}

impl fmt::Debug for ClientBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientBody::Empty => f.write_str("Empty"),
            ClientBody::Http1(_) => f.write_str("Http1"),
            ClientBody::Http2(body) => f.debug_tuple("Http2").field(body).finish(),
        }
    }
}

impl ClientBody<'_> {
    /// Completes once the client has gone away after sending its whole body;
    /// never for HTTP/2, where hyper cancels the request itself.
    pub async fn gone(&mut self) {
        match self {
            ClientBody::Http1(body) => std::future::poll_fn(|cx| body.poll_gone(cx)).await,
            ClientBody::Empty | ClientBody::Http2(_) => std::future::pending().await,
        }
    }
}

impl Body for ClientBody<'_> {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Http1(body) => body
                .poll_data(cx)
                .map(|data| data.map(|data| data.map(Frame::data))),
            ClientBody::Http2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(ClientBodyError::Http2))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
        }
    }
}
