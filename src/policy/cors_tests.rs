//! CORS decisions, case by case as a browser would meet them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::*;

fn cors(origins: Origins, credentials: bool) -> Cors {
    Cors {
        origins,
        methods: Some(MethodSet::new([Method::GET, Method::PUT])),
        methods_value: HeaderValue::from_static("GET, PUT"),
        headers: Some(vec![HeaderName::from_static("x-token"), header::CONTENT_TYPE].into()),
        headers_value: Some(HeaderValue::from_static("x-token, content-type")),
        expose: Some(HeaderValue::from_static("x-trace")),
        credentials,
        max_age: Some(HeaderValue::from_static("600")),
    }
}

fn listed() -> Origins {
    Origins::List {
        exact: vec!["https://app.example.com".into()].into(),
        patterns: vec![("https://".into(), ".example.org".into())].into(),
    }
}

fn request(origin: &str, method: &str, asked_headers: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
    headers.insert(
        header::ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_str(method).unwrap(),
    );
    if let Some(asked) = asked_headers {
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_str(asked).unwrap(),
        );
    }
    headers
}

fn preflight(cors: &Cors, origin: &str, method: &str, asked: Option<&str>) -> HeaderMap {
    let headers = request(origin, method, asked);
    let asked_method = preflight_method(&Method::OPTIONS, &headers).unwrap();
    let response = cors.preflight(&headers, &asked_method);
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    response.headers().clone()
}

#[test]
fn preflights_are_recognised_by_method_origin_and_requested_method() {
    let headers = request("https://a", "PUT", None);
    assert_eq!(
        preflight_method(&Method::OPTIONS, &headers),
        Some(Method::PUT)
    );
    assert_eq!(preflight_method(&Method::GET, &headers), None);
    let mut no_origin = headers.clone();
    no_origin.remove(header::ORIGIN);
    assert_eq!(preflight_method(&Method::OPTIONS, &no_origin), None);
    let mut no_method = headers;
    no_method.remove(header::ACCESS_CONTROL_REQUEST_METHOD);
    assert_eq!(preflight_method(&Method::OPTIONS, &no_method), None);
}

#[test]
fn an_allowed_preflight_gets_every_field() {
    let answer = preflight(
        &cors(listed(), true),
        "https://app.example.com",
        "PUT",
        Some("X-Token, content-type"),
    );
    assert_eq!(
        answer[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
    assert_eq!(
        answer[header::ACCESS_CONTROL_ALLOW_HEADERS],
        "x-token, content-type"
    );
    assert_eq!(answer[header::ACCESS_CONTROL_MAX_AGE], "600");
    assert!(answer[header::VARY].to_str().unwrap().contains("origin"));
}

#[test]
fn a_refused_preflight_gets_no_cors_fields() {
    let policy = cors(listed(), false);
    for (origin, method, asked) in [
        ("https://evil.example", "PUT", None),
        // Not a subdomain: the pattern needs a label before the suffix.
        ("https://example.org", "PUT", None),
        ("http://app.example.com", "PUT", None),
        ("https://app.example.com", "DELETE", None),
        ("https://app.example.com", "PUT", Some("x-token, x-other")),
        ("null", "GET", None),
    ] {
        let answer = preflight(&policy, origin, method, asked);
        assert!(
            !answer.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{origin} {method} {asked:?}: {answer:?}"
        );
        assert!(answer.contains_key(header::VARY));
    }
}

#[test]
fn wildcard_origins_take_subdomains_only_of_their_scheme() {
    let policy = cors(listed(), false);
    for origin in [
        "https://a.example.org",
        "https://a.b.example.org",
        "HTTPS://A.EXAMPLE.ORG",
    ] {
        let answer = preflight(&policy, origin, "GET", None);
        assert!(
            answer.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{origin}"
        );
    }
    for origin in [
        "http://a.example.org",
        "https://a.example.org:8443",
        "https://aexample.org",
    ] {
        let answer = preflight(&policy, origin, "GET", None);
        assert!(
            !answer.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{origin}"
        );
    }
}

#[test]
fn safelisted_methods_and_headers_need_no_permission() {
    let policy = cors(listed(), false);
    let answer = preflight(
        &policy,
        "https://app.example.com",
        "POST",
        Some("accept-language"),
    );
    assert!(answer.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[test]
fn actual_answers_carry_the_origin_when_allowed_and_vary_always() {
    let policy = cors(listed(), true);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let origin = HeaderValue::from_static("https://app.example.com");
    policy.respond(Some(&origin), &mut headers);
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace");
    let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
    assert_eq!(vary, ["accept-encoding", "origin"]);

    // A disallowed origin: the upstream's own field is gone too, never reflected.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    policy.respond(
        Some(&HeaderValue::from_static("https://evil.example")),
        &mut headers,
    );
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert_eq!(headers[header::VARY], "origin");

    // No Origin: nothing but Vary, so a cache keeps the answers apart.
    let mut headers = HeaderMap::new();
    policy.respond(None, &mut headers);
    assert_eq!(headers.len(), 1);
}

#[test]
fn any_origin_without_credentials_is_a_star_that_does_not_vary() {
    let policy = cors(Origins::Any, false);
    let mut headers = HeaderMap::new();
    policy.respond(
        Some(&HeaderValue::from_static("https://x.test")),
        &mut headers,
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(!headers.contains_key(header::VARY));
}
