//! The plain-HTTP listener's only answer: `308` to the same URL over HTTPS.

use http::uri::Authority;
use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::response::{self, ResponseBody};

/// `308 Permanent Redirect` to `https://host[:https_port]/path?query`, or
/// `400` when the request names no usable host. 308 rather than 301 so
/// clients repeat the method and body.
pub fn answer<B>(request: &Request<B>, https_port: u16) -> Response<ResponseBody> {
    let Some(location) = location(request, https_port) else {
        return response::json(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_host"}"#.to_vec(),
        );
    };
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

fn location<B>(request: &Request<B>, https_port: u16) -> Option<HeaderValue> {
    // An absolute-form target (and HTTP/2's :authority) wins over Host (RFC 9112 §3.2.2).
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(header::HOST)?.to_str().ok()?,
    };
    // Userinfo has no place in a Host; refusing it also keeps `host()` away
    // from an empty host part.
    if authority.contains('@') {
        return None;
    }
    let authority: Authority = authority.parse().ok()?;
    let host = authority.host();
    if host.is_empty() {
        return None;
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    HeaderValue::try_from(location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(host: Option<&str>, target: &str, port: u16) -> (u16, Option<String>) {
        let mut request = Request::get(target);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let response = answer(&request.body(()).unwrap(), port);
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (response.status().as_u16(), location)
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_name_the_https_port() {
        assert_eq!(
            redirect(Some("shop.test:8080"), "/a/b?x=1&y=2", 8443),
            (308, Some("https://shop.test:8443/a/b?x=1&y=2".into()))
        );
        assert_eq!(
            redirect(Some("shop.test"), "/", 443),
            (308, Some("https://shop.test/".into()))
        );
        assert_eq!(
            redirect(Some("[::1]:80"), "/p", 8443),
            (308, Some("https://[::1]:8443/p".into()))
        );
        assert_eq!(
            redirect(Some("ignored.test"), "http://abs.test:80/q?z", 443),
            (308, Some("https://abs.test/q?z".into()))
        );
        assert_eq!(
            redirect(Some("shop.test"), "*", 443),
            (308, Some("https://shop.test/".into()))
        );
    }

    #[test]
    fn a_missing_or_invalid_host_is_a_400() {
        assert_eq!(redirect(None, "/", 443).0, 400);
        assert_eq!(redirect(Some(""), "/", 443).0, 400);
        assert_eq!(redirect(Some("user@shop.test"), "/", 443).0, 400);
        assert_eq!(redirect(Some("@"), "/", 443).0, 400);
        assert_eq!(redirect(Some(":80"), "/", 443).0, 400);
        assert_eq!(redirect(Some("bad host"), "/", 443).0, 400);
        assert_eq!(redirect(Some("a/b"), "/", 443).0, 400);
    }
}
