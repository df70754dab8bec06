//! Framing checks hyper leaves to the application. hyper already refuses a
//! malformed request line, invalid header bytes, obs-fold, differing
//! `Content-Length` values and a `Transfer-Encoding` whose last coding is not
//! `chunked`. A request with both `Content-Length` and `Transfer-Encoding`
//! reaches rgate with the length already dropped; the connection's framing
//! watch ([`super::framing`]) reports it, and it is refused here. The rest of
//! the "reject, never guess" rules live here too, so no request whose framing
//! two parsers could read differently reaches an upstream.

use http::header::{self, HeaderMap};
use http::{Request, Version};

use super::framing::ConflictingLengths;

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Any coding other than a single `chunked`: an upstream could not tell
    /// the body's end the same way, and no upstream expects another coding.
    #[error("Transfer-Encoding other than a single chunked")]
    TransferEncoding,
    /// HTTP/1.1 requires exactly one Host (RFC 9112 §3.2).
    #[error("missing or repeated Host header")]
    Host,
    /// Not a URI character; some servers read it as `/`, which would let a
    /// path mean one thing to rgate's router and another upstream.
    #[error("backslash in the path")]
    Backslash,
    /// Both framings at once (RFC 9112 §6.3): hyper reads it chunked, but an
    /// upstream or a proxy in front could go by the length. A smuggling
    /// attempt, never a mistake worth serving.
    #[error("both Content-Length and Transfer-Encoding")]
    ConflictingLengths,
}

/// Checks an HTTP/1 request's framing and target. HTTP/2 framing is checked
/// by the h2 codec and has no Content-Length/Transfer-Encoding ambiguity.
pub fn request<B>(request: &Request<B>) -> Result<(), BadRequest> {
    if request.uri().path().contains('\\') {
        return Err(BadRequest::Backslash);
    }
    if request.version() >= Version::HTTP_2 {
        return Ok(());
    }
    // Seen by the connection's framing watch: hyper has already dropped the length.
    if request.extensions().get::<ConflictingLengths>().is_some() {
        return Err(BadRequest::ConflictingLengths);
    }
    let headers = request.headers();
    check_transfer_encoding(headers)?;
    if request.version() == Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        if hosts.next().is_none() || hosts.next().is_some() {
            return Err(BadRequest::Host);
        }
    }
    Ok(())
}

fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), BadRequest> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    if codings.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Err(BadRequest::TransferEncoding);
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
    fn ambiguous_framing_is_refused() {
        let check = |headers: &[(&str, &str)]| request(&h1(Version::HTTP_11, "/a", headers));
        for codings in [
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ][..],
            &[("transfer-encoding", "gzip, chunked")],
            &[("transfer-encoding", "identity")],
        ] {
            let mut headers = vec![("host", "a")];
            headers.extend_from_slice(codings);
            assert_eq!(
                check(&headers),
                Err(BadRequest::TransferEncoding),
                "{codings:?}"
            );
        }
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
