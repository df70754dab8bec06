//! The HTTP/1.1 wire format of the upstream leg (RFC 9112): request heads out;
//! response heads, body framing and the chunked coding in.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::proxy::headers::Forwarded;

/// Most header fields accepted in a response head (as hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest response head accepted, and largest chunk-size or trailer line.
pub(super) const MAX_HEAD_SIZE: usize = 64 * 1024;

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

/// Appends a chunk-size line for `length` bytes of data.
pub(crate) fn encode_chunk_size(length: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{length:X}\r\n");
}

/// The last chunk and an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

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

/// Whether a message's sender keeps the connection open after it: by
/// default in HTTP/1.1, on request in HTTP/1.0 (RFC 9112 §9.3).
pub(crate) fn keep_alive(version: Version, headers: &HeaderMap, present: Present) -> bool {
    let mut keep_alive = version == Version::HTTP_11;
    if !present.connection {
        return keep_alive;
    }
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                keep_alive = true;
            }
        }
    }
    keep_alive
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

/// Where a field's name and value lie in a head, as offsets: recorded while
/// the parser borrows the buffer, sliced once the head is frozen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldSpan {
    name: (usize, usize),
    value: (usize, usize),
}

/// Records where each parsed field lies in `buf`, in `spans` (a buffer
/// each connection keeps, so recording allocates nothing).
pub(crate) fn record_spans(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    spans: &mut Vec<FieldSpan>,
) {
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(fields.iter().map(|field| {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        FieldSpan {
            name: (name, name + field.name.len()),
            value: (value, value + field.value.len()),
        }
    }));
}

/// The framing and connection fields a head carries, noted while its header
/// map is built, so that reading the head looks up only those present.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Present {
    pub(crate) content_length: bool,
    pub(crate) transfer_encoding: bool,
    pub(crate) connection: bool,
    pub(crate) expect: bool,
}

/// The header map of a frozen head; values share the head's bytes rather
/// than copying them. `None` if a name or value is invalid.
pub(crate) fn header_map(head: &Bytes, spans: &[FieldSpan]) -> Option<(HeaderMap, Present)> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut present = Present::default();
    for span in spans {
        let name = HeaderName::from_bytes(&head[span.name.0..span.name.1]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value.0..span.value.1)).ok()?;
        // Comparing standard names is an integer compare.
        if name == header::CONTENT_LENGTH {
            present.content_length = true;
        } else if name == header::TRANSFER_ENCODING {
            present.transfer_encoding = true;
        } else if name == header::CONNECTION {
            present.connection = true;
        } else if name == header::EXPECT {
            present.expect = true;
        }
        headers.append(name, value);
    }
    Some((headers, present))
}

/// `Content-Length` fields that are not digits, or that disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidLength;

/// The one length all `Content-Length` fields (and list members) agree on.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, InvalidLength> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() || member.len() > 19 || !member.iter().all(u8::is_ascii_digit) {
                return Err(InvalidLength);
            }
            let parsed = member
                .iter()
                .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
            if length.is_some_and(|seen| seen != parsed) {
                return Err(InvalidLength);
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// A body the upstream framed wrongly.
#[derive(Debug, thiserror::Error)]
pub enum BodyFramingError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("missing CRLF after chunk data")]
    ChunkEnd,
    #[error("trailer section over {MAX_HEAD_SIZE} bytes")]
    Trailers,
}

/// What the chunked decoder found in the buffer.
#[derive(Debug)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailer section were read: the body is complete.
    End,
    /// More bytes are needed.
    Incomplete,
}

/// Decodes the chunked coding incrementally, taking what it consumes out of
/// the connection's read buffer. Trailer fields are read and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkedDecoder {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyFramingError> {
        loop {
            match *self {
                ChunkedDecoder::Size => {
                    let Some(line) = take_line(buf, BodyFramingError::ChunkSize)? else {
                        return Ok(Decoded::Incomplete);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        ChunkedDecoder::Trailers
                    } else {
                        ChunkedDecoder::Data(size)
                    };
                }
                ChunkedDecoder::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::Incomplete);
                    }
                    let take = remaining.min(buf.len() as u64);
                    // `take` fits in usize: it is at most buf.len().
                    let data = buf.split_to(take as usize).freeze();
                    *self = match remaining - take {
                        0 => ChunkedDecoder::DataEnd,
                        left => ChunkedDecoder::Data(left),
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkedDecoder::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::Incomplete);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyFramingError::ChunkEnd);
                    }
                    let _ = buf.split_to(2);
                    *self = ChunkedDecoder::Size;
                }
                ChunkedDecoder::Trailers => {
                    let Some(line) = take_line(buf, BodyFramingError::Trailers)? else {
                        return Ok(Decoded::Incomplete);
                    };
                    if line.is_empty() {
                        *self = ChunkedDecoder::Done;
                    }
                }
                ChunkedDecoder::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Takes one CRLF-terminated line (without its CRLF) off the front of `buf`.
fn take_line(
    buf: &mut BytesMut,
    too_long: BodyFramingError,
) -> Result<Option<Bytes>, BodyFramingError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = buf.split_to(end + 1).freeze();
            match line.strip_suffix(b"\r\n") {
                Some(content) => Ok(Some(line.slice(..content.len()))),
                None => Err(too_long),
            }
        }
        None if buf.len() >= MAX_HEAD_SIZE => Err(too_long),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then optional extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, BodyFramingError> {
    let digits = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    // 16 hex digits fill a u64; more would overflow.
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
        return Err(BodyFramingError::ChunkSize);
    }
    Ok(line[..digits].iter().fold(0u64, |n, &digit| {
        n << 4 | u64::from((digit as char).to_digit(16).unwrap_or_default())
    }))
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
