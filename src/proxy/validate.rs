//! Checks on a request's head before routing: the "reject, never guess"
//! rules, so no request that two parsers could read differently reaches an
//! upstream. HTTP/1 framing (`Content-Length`, `Transfer-Encoding`) is
//! checked where the head is parsed ([`crate::server::http1`]); HTTP/2
//! framing by the h2 codec.

use http::header;
use http::{Request, Version};

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Not HTTP/1.x syntax: request line, field names or values.
    #[error("malformed request head")]
    Syntax,
    /// A request target that is not a URI.
    #[error("invalid request target")]
    Target,
    /// Not digits, or fields that disagree.
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    /// Any coding other than a single `chunked`: an upstream could not tell
    /// the body's end the same way, and no upstream expects another coding.
    #[error("Transfer-Encoding other than a single chunked")]
    TransferEncoding,
    /// Both framings at once (RFC 9112 §6.3): one parser may read the body
    /// chunked while an upstream or a proxy in front goes by the length. A
    /// smuggling attempt, never a mistake worth serving.
    #[error("both Content-Length and Transfer-Encoding")]
    ConflictingLengths,
    /// HTTP/1.1 requires exactly one Host (RFC 9112 §3.2).
    #[error("missing or repeated Host header")]
    Host,
    /// Not a URI character; some servers read it as `/`, which would let a
    /// path mean one thing to rgate's router and another upstream.
    #[error("backslash in the path")]
    Backslash,
}

/// Checks a request's target and, for HTTP/1.1, its Host.
pub fn request<B>(request: &Request<B>) -> Result<(), BadRequest> {
    if request.uri().path().contains('\\') {
        return Err(BadRequest::Backslash);
    }
    if request.version() == Version::HTTP_11 {
        let mut hosts = request.headers().get_all(header::HOST).iter();
        if hosts.next().is_none() || hosts.next().is_some() {
            return Err(BadRequest::Host);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(version: Version, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(path).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn ordinary_requests_pass() {
        let ok = |headers: &[(&str, &str)]| request(&h1(Version::HTTP_11, "/a", headers));
        assert_eq!(ok(&[("host", "a")]), Ok(()));
        assert_eq!(ok(&[("host", "a"), ("content-length", "3")]), Ok(()));
        assert_eq!(
            ok(&[("host", "a"), ("transfer-encoding", "Chunked")]),
            Ok(())
        );
        assert_eq!(request(&h1(Version::HTTP_10, "/a", &[])), Ok(()));
        assert_eq!(request(&h1(Version::HTTP_2, "/a", &[])), Ok(()));
    }

    #[test]
    fn http_1_1_needs_exactly_one_host() {
        let check = |headers: &[(&str, &str)]| request(&h1(Version::HTTP_11, "/a", headers));
        assert_eq!(check(&[]), Err(BadRequest::Host));
        assert_eq!(
            check(&[("host", "a"), ("host", "b")]),
            Err(BadRequest::Host)
        );
    }

    #[test]
    fn backslashes_are_refused_in_every_version() {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            assert_eq!(
                request(&h1(version, "/a\\..\\b", &[("host", "a")])),
                Err(BadRequest::Backslash)
            );
        }
    }
}
