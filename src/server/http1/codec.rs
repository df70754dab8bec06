//! The client-facing HTTP/1.1 wire format (RFC 9112): request heads in,
//! response heads out. The pieces both legs share (field spans, lengths,
//! chunked coding) live in the upstream codec.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri, Version};

use crate::proxy::validate::BadRequest;
use crate::wire::{self, FieldSpan, InvalidLength, Present, MAX_HEADERS};

use super::date;

/// A parsed request head and what it says about its body and connection.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) parts: http::request::Parts,
    pub(super) framing: BodyFraming,
    /// Whether the client keeps the connection open after this exchange.
    pub(super) keep_alive: bool,
    /// The client waits for a `100 Continue` before sending its body.
    pub(super) expect_continue: bool,
}

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadError {
    Bad(BadRequest),
    /// Over the size limit, or too many fields.
    TooLarge,
}

impl From<BadRequest> for HeadError {
    fn from(bad: BadRequest) -> Self {
        HeadError::Bad(bad)
    }
}

/// Parses the request head at the start of `buf` and removes it from `buf`;
/// `None` when the head is not complete yet. The target and header values
/// share the head's bytes rather than copying them.
pub(super) fn parse_request_head(
    buf: &mut BytesMut,
    max_size: usize,
    spans: &mut Vec<FieldSpan>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let (length, method, target, minor) = {
        let mut request = httparse::Request::new(&mut []);
        let length = match request.parse_with_uninit_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(length)) if length <= max_size => length,
            Ok(httparse::Status::Partial) if buf.len() < max_size => return Ok(None),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(BadRequest::Syntax.into()),
        };
        let base = buf.as_ptr() as usize;
        let offsets = |text: &str| {
            let start = text.as_ptr() as usize - base;
            (start, start + text.len())
        };
        wire::record_spans(buf, request.headers, spans);
        (
            length,
            request.method.map(offsets).unwrap_or_default(),
            request.path.map(offsets).unwrap_or_default(),
            request.version.unwrap_or_default(),
        )
    };
    let head = buf.split_to(length).freeze();
    let method = Method::from_bytes(&head[method.0..method.1]).map_err(|_| BadRequest::Syntax)?;
    let uri =
        Uri::from_maybe_shared(head.slice(target.0..target.1)).map_err(|_| BadRequest::Target)?;
    let (headers, present) = wire::header_map(&head, spans).ok_or(BadRequest::Syntax)?;
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let framing = body_framing(&headers, present, version)?;
    let keep_alive = wire::keep_alive(version, &headers, present);
    let expect_continue = present.expect
        && version == Version::HTTP_11
        && framing != BodyFraming::Empty
        && headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
    }))
}

/// A request body's framing; anything two parsers could read differently is
/// refused: a coding other than a single `chunked`, any coding in HTTP/1.0
/// (which has none: RFC 9112 §6.1 calls that framing faulty), both fields at
/// once, or lengths that disagree.
fn body_framing(
    headers: &HeaderMap,
    present: Present,
    version: Version,
) -> Result<BodyFraming, BadRequest> {
    if present.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(BadRequest::TransferEncoding);
        }
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        let single = codings.next().filter(|_| codings.next().is_none());
        if !single.is_some_and(|coding| coding.as_bytes().eq_ignore_ascii_case(b"chunked")) {
            return Err(BadRequest::TransferEncoding);
        }
        if present.content_length {
            return Err(BadRequest::ConflictingLengths);
        }
        return Ok(BodyFraming::Chunked);
    }
    if !present.content_length {
        return Ok(BodyFraming::Empty);
    }
    match wire::content_length(headers).map_err(|InvalidLength| BadRequest::ContentLength)? {
        None | Some(0) => Ok(BodyFraming::Empty),
        Some(length) => Ok(BodyFraming::Length(length)),
    }
}

/// How a response goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ResponsePlan {
    pub(super) framing: ResponseFraming,
    /// False for answers that have no body (HEAD, 1xx, 204, 304).
    pub(super) send_body: bool,
    /// The connection stays open after the response.
    pub(super) keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseFraming {
    Length(u64),
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 clients).
    UntilClose,
    /// No framing fields from rgate; those in the head (a HEAD or 304
    /// answer's `Content-Length`) describe a body that is not sent.
    AsIs,
    /// No body and no framing fields (1xx, 204).
    None,
}

impl ResponsePlan {
    /// The plan for a response of `status` with a body of `length` bytes
    /// (`None`: unknown), to a request of `method` and `version`.
    pub(super) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        length: Option<u64>,
        method: &Method,
        version: Version,
        keep_alive: bool,
    ) -> Self {
        let declared = headers.contains_key(header::CONTENT_LENGTH)
            || headers.contains_key(header::TRANSFER_ENCODING);
        let (framing, send_body) = if status.is_informational() || status == StatusCode::NO_CONTENT
        {
            (ResponseFraming::None, false)
        } else if status == StatusCode::NOT_MODIFIED || (method == Method::HEAD && declared) {
            (ResponseFraming::AsIs, false)
        } else {
            let framing = match length {
                Some(length) => ResponseFraming::Length(length),
                None if version == Version::HTTP_11 => ResponseFraming::Chunked,
                None => ResponseFraming::UntilClose,
            };
            (framing, method != Method::HEAD)
        };
        // A 101 that starts no tunnel leaves the connection in no known state.
        let until_close = send_body && framing == ResponseFraming::UntilClose;
        Self {
            framing,
            send_body,
            keep_alive: keep_alive && !until_close && status != StatusCode::SWITCHING_PROTOCOLS,
        }
    }
}

/// Appends a response head to `out`: the status line, the fields (with
/// rgate's own framing and connection fields instead of any in `headers`,
/// but for a 101, whose `Connection: upgrade` is the switch), and a `Date`
/// if the response has none.
pub(super) fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    plan: ResponsePlan,
    client_version: Version,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let as_is = plan.framing == ResponseFraming::AsIs;
    for (name, value) in headers {
        if (name == header::CONNECTION && !switching)
            || (!as_is && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING))
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        date::append(out);
        out.extend_from_slice(b"\r\n");
    }
    match plan.framing {
        ResponseFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::UntilClose | ResponseFraming::AsIs | ResponseFraming::None => {}
    }
    if !switching {
        match (plan.keep_alive, client_version) {
            (false, _) => out.extend_from_slice(b"connection: close\r\n"),
            (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            (true, _) => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether rgate's own answer asks for the connection to close after it
/// (bad input: the rest of the stream cannot be trusted).
pub(super) fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get(header::CONNECTION).is_some_and(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
