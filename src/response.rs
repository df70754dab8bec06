//! Response bodies and rgate's own (synthetic) responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::proxy::tunnel::Tunnel;
use crate::proxy::upstream::{BodyError, PooledBody};

/// Every body rgate sends to clients: an upstream's streamed through, or one of
/// rgate's own. An enum rather than a boxed trait object: no allocation per response.
// The streamed variant holds its upstream connection inline: moving a few
// hundred bytes costs less than allocating a box for each response.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ResponseBody {
    Upstream(PooledBody),
    Full(Option<Bytes>),
    /// The answer to an accepted protocol switch (a 101): no body, but the
    /// upstream connection that the client connection is spliced with next.
    /// Only HTTP/1 requests switch protocols.
    Tunnel(Box<Tunnel>),
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Tunnel(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(body) => body.is_end_stream(),
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Tunnel(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(body) => body.size_hint(),
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Tunnel(_) => SizeHint::with_exact(0),
        }
    }
}

/// The answer when no route matches.
#[derive(Debug, Clone)]
pub struct DefaultResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Default for DefaultResponse {
    fn default() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: Bytes::from_static(br#"{"error":"no_route"}"#),
        }
    }
}

/// The configured answer for requests no route matches.
pub fn default_response(default: &DefaultResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(default.body.clone()));
    *response.status_mut() = default.status;
    response
}

/// A JSON document rgate serves itself (e.g. `/stats`).
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
