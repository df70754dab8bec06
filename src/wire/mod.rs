//! The HTTP/1.1 wire format (RFC 9112) that rgate's server and its upstream
//! leg share: header fields recorded while httparse borrows the buffer and
//! turned into a header map sharing its bytes, `Content-Length`, connection
//! persistence, and the chunked coding ([`chunked`]).
//!
//! Pure functions over bytes: no sockets, so both sides and their tests use
//! them without depending on each other.

pub(crate) mod chunked;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// Most header fields accepted in a head (as hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest response head accepted, and largest chunk-size or trailer line.
pub(crate) const MAX_HEAD_SIZE: usize = 64 * 1024;

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
    // Room for the few fields rgate may add (rules, CORS) without a rehash.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
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
