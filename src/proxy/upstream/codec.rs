//! The HTTP/1.1 wire format of the upstream leg (RFC 9112): request heads out;
//! response heads, body framing and the chunked coding in.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};

use crate::proxy::headers::Forwarded;
use crate::wire::{
    content_length, header_map, keep_alive, record_spans, FieldSpan, InvalidLength, Present,
    MAX_HEADERS, MAX_HEAD_SIZE,
};

/// How a request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    /// No body, and no `Content-Length` to say so.
    Empty,
    /// Exactly this many bytes, announced by `Content-Length`.
    Length(u64),
    /// The chunked coding, for a body of unknown length.
    Chunked,
}

/// Appends the request head to `out`: the client's fields, then rgate's
/// forwarding fields, then the framing. The framing fields are rgate's to
/// write: any `Content-Length` or `Transfer-Encoding` in `head` is replaced by
/// what `framing` says, so the upstream can never read two lengths. `Expect`
/// is left out: a 100-continue handshake is between the client and rgate
/// (hyper answers it), and the upstream simply gets the body.
pub(super) fn encode_request_head(
    head: &http::request::Parts,
    forwarded: &Forwarded<'_>,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = if head.method == Method::CONNECT {
        head.uri.authority().map(|a| a.as_str())
    } else {
        head.uri.path_and_query().map(|p| p.as_str())
    };
    out.extend_from_slice(target.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || Forwarded::replaces(name)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    forwarded.write(&head.headers, out);
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseFraming {
    /// No body: HEAD, 1xx, 204, 304, or `Content-Length: 0`.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the upstream closes; the connection cannot be reused.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) framing: ResponseFraming,
    /// Whether the connection may carry another exchange after this one.
    pub(super) keep_alive: bool,
}

/// A response the upstream framed in a way rgate will not pass on.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head: {0}")]
    Syntax(#[from] httparse::Error),
    #[error("response head over {MAX_HEAD_SIZE} bytes")]
    TooLarge,
    #[error("invalid status code")]
    Status,
    #[error("invalid header field")]
    Field,
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
}

/// Parses the response head at the start of `buf` and removes it from `buf`;
/// `None` when the head is not complete yet. Header values share the head's
/// bytes rather than copying them.
pub(super) fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
    spans: &mut Vec<FieldSpan>,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let (length, code, minor) = {
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        );
        let length = match parsed? {
            httparse::Status::Complete(length) => length,
            httparse::Status::Partial if buf.len() >= MAX_HEAD_SIZE => {
                return Err(HeadError::TooLarge)
            }
            httparse::Status::Partial => return Ok(None),
        };
        record_spans(buf, response.headers, spans);
        (
            length,
            response.code.unwrap_or_default(),
            response.version.unwrap_or_default(),
        )
    };
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Status)?;
    let head = buf.split_to(length).freeze();
    let (headers, present) = header_map(&head, spans).ok_or(HeadError::Field)?;
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let (framing, keep_alive) = response_framing(status, version, &headers, present, method)?;
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// The body framing and connection persistence a response head declares.
fn response_framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    present: Present,
    method: &Method,
) -> Result<(ResponseFraming, bool), HeadError> {
    let mut keep_alive = keep_alive(version, headers, present);
    let bodiless = method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless {
        return Ok((ResponseFraming::Empty, keep_alive));
    }
    if present.transfer_encoding {
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        let chunked = codings.next_back().is_some_and(|value| {
            value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
        // A length beside a coding is a framing conflict: the coding wins
        // (RFC 9112 §6.3) and the connection is not trusted further.
        if present.content_length {
            keep_alive = false;
        }
        return Ok(if chunked {
            (ResponseFraming::Chunked, keep_alive)
        } else {
            (ResponseFraming::UntilClose, false)
        });
    }
    if !present.content_length {
        return Ok((ResponseFraming::UntilClose, false));
    }
    match content_length(headers).map_err(|InvalidLength| HeadError::ContentLength)? {
        Some(0) => Ok((ResponseFraming::Empty, keep_alive)),
        Some(length) => Ok((ResponseFraming::Length(length), keep_alive)),
        None => Ok((ResponseFraming::UntilClose, false)),
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
