//! Host matching: the request's host, lower case and without port, against
//! a route's exact name or `*.` wildcard.

use http::header::{self, HeaderMap};
use http::Uri;

/// The longest host name (RFC 1035 §2.3.4); longer ones match no host route.
pub const MAX_HOST: usize = 255;

/// A route's `host`. Ordered as precedence: exact, then wildcard, then any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostMatch {
    /// Lower case.
    Exact(Box<str>),
    /// The suffix with its leading dot, lower case: `*.example.com` is
    /// `.example.com`, and matches any name under it (one label or more),
    /// as nginx's and Envoy's wildcards do.
    Wildcard(Box<str>),
    Any,
}

impl HostMatch {
    /// Parses a `host` key; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<HostMatch, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > MAX_HOST || !name.split('.').all(valid_label) {
            return Err(format!(
                "{text:?} is not a host name (write api.example.com or *.example.com, without port)"
            ));
        }
        Ok(if wildcard {
            HostMatch::Wildcard(format!(".{name}").into())
        } else {
            HostMatch::Exact(name.into())
        })
    }

    /// As written in the config.
    pub fn to_config(&self) -> Option<String> {
        match self {
            HostMatch::Exact(host) => Some(host.to_string()),
            HostMatch::Wildcard(suffix) => Some(format!("*{suffix}")),
            HostMatch::Any => None,
        }
    }
}

/// The request's host for routing: the `Host` field, else the URI's
/// authority (HTTP/2's `:authority`, or an absolute-form target), without
/// port or a trailing dot, lower case in `buf`. `None` if there is none or it
/// cannot be a name.
pub fn request_host<'b>(
    uri: &Uri,
    headers: &HeaderMap,
    buf: &'b mut [u8; MAX_HOST],
) -> Option<&'b str> {
    let raw = match headers.get(header::HOST) {
        Some(value) => value.as_bytes(),
        None => uri.authority()?.as_str().as_bytes(),
    };
    // Userinfo never belongs in a Host; an authority may carry it.
    let raw = match raw.iter().rposition(|&b| b == b'@') {
        Some(at) => &raw[at + 1..],
        None => raw,
    };
    let name = if raw.first() == Some(&b'[') {
        // An IPv6 literal: up to the bracket.
        &raw[..raw.iter().position(|&b| b == b']')? + 1]
    } else {
        match raw.iter().position(|&b| b == b':') {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST {
        return None;
    }
    let out = &mut buf[..name.len()];
    for (to, from) in out.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}
