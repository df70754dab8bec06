//! Header rules between client and upstream: the upstream's head prepared
//! in place, hop-by-hop removal (RFC 9110 §7.6.1), `X-Forwarded-*`, and
//! request ids.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::Version;

use crate::router::Route;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// How the client reached rgate: the listener's protocol, for `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1,
/// plus the non-standard but common `Keep-Alive` and `Proxy-Connection`).
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHORIZATION,
    &header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names present (comparing
    // standard names is an integer compare) instead of nine hash lookups.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(&name)) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        // Rare: only an explicit `Connection: foo` costs an allocation.
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|token| HeaderName::try_from(token.trim()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether an HTTP/1.1 message asks to switch protocols (RFC 9110 §7.8): an
/// `Upgrade` header that `Connection` names. Ordinary requests pay a version
/// compare and one map probe.
pub(crate) fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|value| {
            value
                .as_bytes()
                .split(|&byte| byte == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

/// Like [`strip_hop_by_hop`], but keeps the protocol switch: `Upgrade` stays
/// and `Connection` becomes exactly `upgrade`, so that the next hop sees the
/// upgrade request (or the 101 answer) and nothing else about this connection.
pub(crate) fn strip_hop_by_hop_keeping_upgrade(headers: &mut HeaderMap) {
    let upgrade = headers.remove(header::UPGRADE);
    strip_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What rgate knows about the client connection, computed once per connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientAddr {
    pub(crate) ip: std::net::IpAddr,
    /// The peer IP as a header value, shared by every request on the connection.
    pub(crate) header: HeaderValue,
    /// `X-Forwarded-Proto`'s value: static bytes, so cloning it allocates nothing.
    proto: &'static HeaderValue,
}

impl ClientAddr {
    pub(crate) fn new(peer: std::net::SocketAddr, scheme: Scheme) -> Self {
        let text = peer.ip().to_string();
        let header = HeaderValue::from_maybe_shared(Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            ip: peer.ip(),
            header,
            proto: match scheme {
                Scheme::Http => &HTTP,
                Scheme::Https => &HTTPS,
            },
        }
    }
}

/// The fields rgate adds to every upstream request: `X-Forwarded-For`,
/// `-Proto`, `-Host`, `-Prefix` (on a route that rewrites its prefix) and
/// `X-Request-Id`. The client's own claims about these are replaced, except
/// that a trusted proxy's `X-Forwarded-For` is extended (see
/// `policy::trusted`). The upstream encoder writes them straight after the
/// client's fields, so the request's header map is never grown for them.
#[derive(Debug)]
pub(crate) struct Forwarded<'a> {
    pub(crate) client: &'a ClientAddr,
    /// The peer is a trusted proxy: its `X-Forwarded-For` is kept.
    pub(crate) trusted: bool,
    pub(crate) host: Option<&'a HeaderValue>,
    /// The prefix the client saw, when the upstream sees another path.
    pub(crate) prefix: Option<&'a str>,
    pub(crate) request_id: &'a HeaderValue,
    /// `traceparent` for the upstream (W3C Trace Context).
    pub(crate) trace: &'a super::trace::TraceParent,
}

impl Forwarded<'_> {
    /// Whether a client field is left out because rgate writes its own.
    pub(crate) fn replaces(name: &HeaderName) -> bool {
        name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
            || name == X_FORWARDED_PREFIX
            || name == X_REQUEST_ID
            || name == super::trace::TRACEPARENT
    }

    /// Appends the fields in HTTP/1.1 form; `headers` are the client's.
    pub(crate) fn write(&self, headers: &HeaderMap, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        if self.trusted {
            for previous in headers.get_all(&X_FORWARDED_FOR) {
                out.extend_from_slice(previous.as_bytes());
                out.extend_from_slice(b", ");
            }
        }
        out.extend_from_slice(self.client.header.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.client.proto.as_bytes());
        if let Some(host) = self.host {
            out.extend_from_slice(b"\r\nx-forwarded-host: ");
            out.extend_from_slice(host.as_bytes());
        }
        // A trusted proxy's prefix passes on unless rgate rewrites the path.
        match (self.prefix, self.trusted) {
            (Some(prefix), _) => {
                out.extend_from_slice(b"\r\nx-forwarded-prefix: ");
                out.extend_from_slice(prefix.as_bytes());
            }
            (None, true) => {
                for previous in headers.get_all(&X_FORWARDED_PREFIX) {
                    out.extend_from_slice(b"\r\nx-forwarded-prefix: ");
                    out.extend_from_slice(previous.as_bytes());
                }
            }
            (None, false) => {}
        }
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b"\r\ntraceparent: ");
        out.extend_from_slice(self.trace.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The request id: the client's own if it is a sane token, else a fresh one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(id)
            if (1..=128).contains(&id.len()) && id.as_bytes().iter().all(u8::is_ascii_graphic) =>
        {
            id.clone()
        }
        _ => new_request_id(),
    }
}

/// 128 random bits as 32 hex digits, from the thread-local generator (no lock).
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut value = fastrand::u128(..);
    let mut text = [0u8; 32];
    for byte in text.iter_mut().rev() {
        *byte = HEX[(value & 0xf) as usize];
        value >>= 4;
    }
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&text))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Turns the client's request head into the upstream's, in place (no copy of
/// the header map): origin-form URI with the normalised (and, where the route
/// says so, rewritten) path, HTTP/1.1, a
/// Host, hop-by-hop headers removed. Returns the Host, for `X-Forwarded-Host`.
pub(super) fn prepare_upstream_request(
    parts: &mut http::request::Parts,
    route: &Route,
    normalized_path: Option<&str>,
    upgrade: bool,
) -> Option<HeaderValue> {
    let needs_rewrite =
        normalized_path.is_some() || parts.uri.scheme().is_some() || route.rewrite.is_some();
    let authority = parts.uri.authority().cloned();
    if needs_rewrite {
        let query = parts.uri.query();
        let path = normalized_path.unwrap_or(parts.uri.path());
        // One buffer for the whole target; the URI takes it over uncopied.
        let mut target = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1) + 16);
        match &route.rewrite {
            // Once, before the first try: retries send the same head.
            Some(rewrite) => rewrite.write(&route.prefix, path, &mut target),
            None => target.push_str(path),
        }
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        let path_and_query = PathAndQuery::try_from(target);
        if let Ok(path_and_query) = path_and_query {
            parts.uri = Uri::from(path_and_query);
        }
    }
    if upgrade {
        strip_hop_by_hop_keeping_upgrade(&mut parts.headers);
    } else {
        strip_hop_by_hop(&mut parts.headers);
    }
    // HTTP/2 clients send the authority instead of a Host header.
    let host = match parts.headers.get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => authority
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .inspect(|host| {
                parts.headers.insert(header::HOST, host.clone());
            }),
    };
    parts.version = Version::HTTP_11;
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn upgrades_are_http_11_with_upgrade_named_by_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(
            !is_upgrade(Version::HTTP_11, &headers),
            "Connection must name it"
        );
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(Version::HTTP_11, &headers));
        assert!(!is_upgrade(Version::HTTP_10, &headers));
        assert!(!is_upgrade(Version::HTTP_2, &headers));
        headers.remove(header::UPGRADE);
        assert!(!is_upgrade(Version::HTTP_11, &headers));
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_connection_but_loses_other_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, upgrade, x-secret"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("sec-websocket-key", HeaderValue::from_static("k"));
        strip_hop_by_hop_keeping_upgrade(&mut headers);
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert_eq!(headers["sec-websocket-key"], "k");
    }

    fn forwarded(
        headers: &HeaderMap,
        scheme: Scheme,
        host: Option<&HeaderValue>,
        trusted: bool,
    ) -> String {
        let client = ClientAddr::new("127.0.0.9:5555".parse().unwrap(), scheme);
        let id = HeaderValue::from_static("id-1");
        let mut out = Vec::new();
        Forwarded {
            client: &client,
            trusted,
            host,
            prefix: None,
            request_id: &id,
            trace: &crate::proxy::trace::TEST_TRACE,
        }
        .write(headers, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwarded_for_is_extended_only_from_a_trusted_proxy_and_proto_host_id_are_rgates() {
        let host = HeaderValue::from_static("example.com");
        assert_eq!(
            forwarded(&HeaderMap::new(), Scheme::Http, Some(&host), false),
            "x-forwarded-for: 127.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.com\r\nx-request-id: id-1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
        );
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        headers.append("x-forwarded-prefix", HeaderValue::from_static("/p"));
        assert_eq!(
            forwarded(&headers, Scheme::Https, None, true),
            "x-forwarded-for: 203.0.113.7, 198.51.100.1, 127.0.0.9\r\n\
             x-forwarded-proto: https\r\nx-forwarded-prefix: /p\r\nx-request-id: id-1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
        );
        // From a peer that is not a trusted proxy, the claims are replaced.
        assert_eq!(
            forwarded(&headers, Scheme::Https, None, false),
            "x-forwarded-for: 127.0.0.9\r\n\
             x-forwarded-proto: https\r\nx-request-id: id-1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
        );
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-prefix",
            "x-request-id",
            "traceparent",
        ] {
            assert!(
                Forwarded::replaces(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        assert!(!Forwarded::replaces(&header::HOST));
    }

    #[test]
    fn request_ids_are_passed_through_or_generated() {
        let mut headers = HeaderMap::new();
        let generated = request_id(&headers);
        assert_eq!(generated.len(), 32);
        assert!(generated.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(generated, request_id(&headers));
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
    }
}
