//! W3C Trace Context (`traceparent`) for the upstream request.
//!
//! A valid incoming `traceparent` is continued: same trace id and flags,
//! with rgate's own span id as the new parent id. An invalid or absent one
//! starts a new trace (marked sampled: rgate has no sampler of its own, and
//! an unsampled root would keep every downstream tracer from recording);
//! its `tracestate` is then dropped, as it belonged to a trace that is not
//! continued. The value is built in a fixed buffer: no allocation.

use http::header::{HeaderMap, HeaderName};

pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` trace id `-` parent id `-` flags.
const LEN: usize = 55;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The `traceparent` rgate sends upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceParent {
    value: [u8; LEN],
    /// Whether the client's trace is continued (else a new one started).
    pub(crate) continued: bool,
}

impl TraceParent {
    /// Continues the request's trace, or starts one.
    pub(crate) fn for_request(headers: &HeaderMap) -> Self {
        let mut value = [0u8; LEN];
        let incoming = {
            let mut all = headers.get_all(&TRACEPARENT).iter();
            match (all.next(), all.next()) {
                (Some(one), None) => parse(one.as_bytes()),
                _ => None,
            }
        };
        let continued = incoming.is_some();
        let (trace_id, flags) = incoming.unwrap_or_else(|| {
            let mut id = [0u8; 32];
            hex(fastrand::u128(1..), &mut id);
            (id, *b"01")
        });
        value[..3].copy_from_slice(b"00-");
        value[3..35].copy_from_slice(&trace_id);
        value[35] = b'-';
        let mut span = [0u8; 16];
        hex(u128::from(fastrand::u64(1..)), &mut span);
        value[36..52].copy_from_slice(&span);
        value[52] = b'-';
        value[53..].copy_from_slice(&flags);
        Self { value, continued }
    }

    /// A set value, for tests of what carries it.
    #[cfg(test)]
    pub(crate) const fn fixed(value: [u8; LEN]) -> Self {
        Self {
            value,
            continued: true,
        }
    }

    /// The field value, `00-<trace id>-<rgate's span id>-<flags>`.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.value
    }

    /// The trace id (32 lowercase hex digits), for logs.
    pub(crate) fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.value[3..35]).unwrap_or("")
    }
}

/// Trace id and flags of a valid `traceparent` (W3C Trace Context §3.2):
/// version 00 exactly 55 bytes; a later version at least that, with `-`
/// after them; lowercase hex; ids not all zero; version not `ff`.
fn parse(text: &[u8]) -> Option<([u8; 32], [u8; 2])> {
    let is_hex = |bytes: &[u8]| {
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    if text.len() < LEN {
        return None;
    }
    let (version, rest) = text.split_at(2);
    if !is_hex(version) || version == b"ff" {
        return None;
    }
    if (version == b"00" && text.len() != LEN) || (text.len() > LEN && text[LEN] != b'-') {
        return None;
    }
    let (trace_id, parent_id, flags) = (&rest[1..33], &rest[34..50], &rest[51..53]);
    let separators = rest[0] == b'-' && rest[33] == b'-' && rest[50] == b'-';
    let valid = separators
        && is_hex(trace_id)
        && is_hex(parent_id)
        && is_hex(flags)
        && trace_id.iter().any(|b| *b != b'0')
        && parent_id.iter().any(|b| *b != b'0');
    valid.then(|| {
        let mut id = [0u8; 32];
        id.copy_from_slice(trace_id);
        (id, [flags[0], flags[1]])
    })
}

/// `value` as lowercase hex filling `out` (the low digits last).
fn hex(mut value: u128, out: &mut [u8]) {
    for byte in out.iter_mut().rev() {
        *byte = HEX[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// A trace for tests that need a known `traceparent`.
#[cfg(test)]
pub(crate) const TEST_TRACE: TraceParent =
    TraceParent::fixed(*b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&TRACEPARENT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_parent_id() {
        let trace = TraceParent::for_request(&with(&[VALID]));
        let text = std::str::from_utf8(trace.as_bytes()).unwrap();
        assert!(trace.continued);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(text.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(text.ends_with("-01"));
        assert_ne!(&text[36..52], "00f067aa0ba902b7");
        assert!(
            parse(text.as_bytes()).is_some(),
            "what rgate sends is valid"
        );
        // A later version with more fields is read by its first four.
        let future = format!("cc{}-extra", &VALID[2..]);
        assert!(TraceParent::for_request(&with(&[&future])).continued);
    }

    #[test]
    fn invalid_or_absent_traceparents_start_a_new_trace() {
        let zeros_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zeros_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let long_v00 = format!("{VALID}-x");
        let version_ff = format!("ff{}", &VALID[2..]);
        for bad in [
            "",
            "garbage",
            zeros_trace,
            zeros_parent,
            upper,
            &long_v00,
            &version_ff,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        ] {
            let trace = TraceParent::for_request(&with(&[bad]));
            assert!(!trace.continued, "{bad:?}");
            assert!(parse(trace.as_bytes()).is_some());
            assert!(trace.as_bytes().ends_with(b"-01"));
        }
        assert!(
            !TraceParent::for_request(&with(&[VALID, VALID])).continued,
            "two fields"
        );
        let (a, b) = (
            TraceParent::for_request(&HeaderMap::new()),
            TraceParent::for_request(&HeaderMap::new()),
        );
        assert_ne!(a.trace_id(), b.trace_id());
    }
}
