//! The matcher and its precedence table: each rule, and each tie refused.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;

use super::*;

fn route(index: usize, prefix: &str) -> Route {
    Route {
        id: format!("r{index}").into(),
        name: prefix.into(),
        index,
        host: HostMatch::Any,
        prefix: prefix.into(),
        path_match: PathMatch::Prefix,
        methods: None,
        headers: Box::new([]),
        backend: index,
        timeout: DEFAULT_TIMEOUT,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        retry: RetryPolicy::default(),
        max_body: None,
        rewrite: None,
        policy: None,
        metrics: Arc::default(),
    }
}

fn with_host(mut r: Route, host: &str) -> Route {
    r.host = HostMatch::parse(host).unwrap();
    r
}

fn with_methods(mut r: Route, methods: &[Method]) -> Route {
    r.methods = Some(MethodSet::new(methods.iter().cloned()));
    r
}

fn with_header(mut r: Route, name: &'static str, value: &'static str) -> Route {
    let mut headers = r.headers.into_vec();
    headers.push(HeaderCondition {
        name: HeaderName::from_static(name),
        value: HeaderValue::from_static(value),
    });
    r.headers = headers.into();
    r
}

fn segment(mut r: Route) -> Route {
    r.path_match = PathMatch::Segment;
    r
}

fn router(routes: Vec<Route>) -> Router {
    Router::new(routes).unwrap()
}

struct Req<'a> {
    host: Option<&'a str>,
    method: Method,
    headers: HeaderMap,
}

fn get() -> Req<'static> {
    Req {
        host: None,
        method: Method::GET,
        headers: HeaderMap::new(),
    }
}

impl Req<'_> {
    fn backend(&self, router: &Router, path: &str) -> Option<usize> {
        router
            .find(&RouteRequest {
                path,
                method: &self.method,
                headers: &self.headers,
                host: self.host,
                preflight: None,
            })
            .map(|(_, route)| route.backend)
    }
}

#[test]
fn longest_prefix_wins_whatever_the_declaration_order() {
    let r = router(vec![
        route(0, "/api"),
        route(1, "/api/payment"),
        segment(route(2, "/api/orders")),
    ]);
    assert_eq!(get().backend(&r, "/api/payment/charge"), Some(1));
    assert_eq!(get().backend(&r, "/api/other"), Some(0));
    let reversed = router(vec![route(1, "/api/payment"), route(0, "/api")]);
    assert_eq!(get().backend(&reversed, "/api/payment"), Some(1));
}

#[test]
fn literal_prefix_matches_inside_a_segment() {
    let r = router(vec![route(1, "/api/payment")]);
    assert_eq!(r.find_path("/api/paymentsX").map(|r| r.backend), Some(1));
}

#[test]
fn segment_match_needs_a_whole_segment() {
    let r = router(vec![route(0, "/api"), segment(route(2, "/api/orders"))]);
    assert_eq!(get().backend(&r, "/api/orders"), Some(2));
    assert_eq!(get().backend(&r, "/api/orders/7"), Some(2));
    // Falls back to the shorter literal /api route instead.
    assert_eq!(get().backend(&r, "/api/ordersX"), Some(0));
    let slash = router(vec![segment(route(3, "/v1/"))]);
    assert_eq!(get().backend(&slash, "/v1/x"), Some(3));
    assert_eq!(get().backend(&slash, "/v1"), None);
}

#[test]
fn no_match_is_none() {
    let r = router(vec![route(0, "/api")]);
    assert_eq!(get().backend(&r, "/other"), None);
    assert_eq!(get().backend(&r, "/ap"), None);
    assert_eq!(get().backend(&Router::default(), "/"), None);
}

#[test]
fn exact_host_beats_wildcard_beats_no_host_before_prefix_length() {
    let r = router(vec![
        route(0, "/api/long/prefix"),
        with_host(route(1, "/"), "*.example.com"),
        with_host(route(2, "/api"), "api.example.com"),
        with_host(route(3, "/"), "*.eu.example.com"),
    ]);
    let at = |host: &'static str, path| {
        Req {
            host: Some(host),
            ..get()
        }
        .backend(&r, path)
    };
    assert_eq!(at("api.example.com", "/api/long/prefix"), Some(2));
    assert_eq!(at("shop.example.com", "/api/long/prefix"), Some(1));
    // The longest wildcard suffix first; several labels are fine.
    assert_eq!(at("a.b.eu.example.com", "/x"), Some(3));
    // The exact host's table has no match for this path: wildcard next.
    assert_eq!(at("api.example.com", "/other"), Some(1));
    assert_eq!(at("example.com", "/api/long/prefix"), Some(0));
    assert_eq!(at("other.test", "/x"), None);
    assert_eq!(get().backend(&r, "/api/long/prefix/x"), Some(0));
}

#[test]
fn methods_split_one_prefix_and_a_route_with_methods_comes_first() {
    let r = router(vec![
        route(0, "/api"),
        with_methods(route(1, "/api"), &[Method::POST, Method::PUT]),
        with_methods(route(2, "/api/items"), &[Method::GET]),
    ]);
    let with = |method: Method, path| Req { method, ..get() }.backend(&r, path);
    assert_eq!(with(Method::POST, "/api/x"), Some(1));
    assert_eq!(with(Method::GET, "/api/x"), Some(0));
    assert_eq!(with(Method::GET, "/api/items"), Some(2));
    // The longest prefix does not take DELETE: the shorter one does.
    assert_eq!(with(Method::DELETE, "/api/items"), Some(0));
    let only = router(vec![with_methods(route(5, "/w"), &[Method::GET])]);
    assert_eq!(
        Req {
            method: Method::POST,
            ..get()
        }
        .backend(&only, "/w"),
        None
    );
}

#[test]
fn more_header_conditions_come_first_and_all_must_match() {
    let r = router(vec![
        route(0, "/api"),
        with_header(route(1, "/api"), "x-canary", "1"),
        with_header(
            with_header(route(2, "/api"), "x-canary", "1"),
            "x-tier",
            "gold",
        ),
    ]);
    let with = |pairs: &[(&'static str, &'static str)]| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        Req { headers, ..get() }.backend(&r, "/api/x")
    };
    assert_eq!(with(&[]), Some(0));
    assert_eq!(with(&[("x-canary", "1")]), Some(1));
    assert_eq!(with(&[("X-Canary", "1"), ("x-tier", "gold")]), Some(2));
    assert_eq!(with(&[("x-canary", "2"), ("x-tier", "gold")]), Some(0));
    // Values are exact: case counts.
    assert_eq!(with(&[("x-tier", "GOLD"), ("x-canary", "1")]), Some(1));
}

#[test]
fn ties_are_refused_with_both_routes() {
    let tie = |routes: Vec<Route>| Router::new(routes).err();
    assert_eq!(
        tie(vec![route(0, "/a"), segment(route(3, "/a"))]),
        Some(vec![Tie {
            first: 0,
            second: 3
        }])
    );
    assert!(tie(vec![
        with_methods(route(0, "/a"), &[Method::GET, Method::POST]),
        with_methods(route(1, "/a"), &[Method::POST]),
    ])
    .is_some());
    assert!(tie(vec![
        with_header(route(0, "/a"), "x-a", "1"),
        with_header(route(1, "/a"), "x-b", "1"),
    ])
    .is_some());
    assert!(tie(vec![
        with_host(route(0, "/a"), "h.test"),
        with_host(route(1, "/a"), "H.test")
    ])
    .is_some());
    // Told apart by a rule, or unable to match one request: no tie.
    assert!(tie(vec![
        with_methods(route(0, "/a"), &[Method::GET]),
        with_methods(route(1, "/a"), &[Method::POST]),
    ])
    .is_none());
    assert!(tie(vec![
        with_header(route(0, "/a"), "x-a", "1"),
        with_header(route(1, "/a"), "x-a", "2"),
    ])
    .is_none());
    assert!(tie(vec![
        route(0, "/a"),
        with_methods(route(1, "/a"), &[Method::GET])
    ])
    .is_none());
    assert!(tie(vec![
        with_host(route(0, "/a"), "a.test"),
        with_host(route(1, "/a"), "b.test"),
        route(2, "/a")
    ])
    .is_none());
}

#[test]
fn a_preflight_matches_a_cors_route_by_the_method_it_asks_for() {
    let mut cors_route = with_methods(route(1, "/api"), &[Method::PUT]);
    cors_route.policy = Some(Box::new(crate::policy::EdgePolicy {
        cors: Some(crate::policy::cors::Cors {
            origins: crate::policy::cors::Origins::Any,
            methods: None,
            methods_value: HeaderValue::from_static("*"),
            headers: None,
            headers_value: None,
            expose: None,
            credentials: false,
            max_age: None,
        }),
        ..Default::default()
    }));
    let r = router(vec![
        cors_route,
        with_methods(route(2, "/plain"), &[Method::PUT]),
    ]);
    let preflight = |path, asked: Method| {
        r.find(&RouteRequest {
            path,
            method: &Method::OPTIONS,
            headers: &HeaderMap::new(),
            host: None,
            preflight: Some(&asked),
        })
        .map(|(_, route)| route.backend)
    };
    assert_eq!(preflight("/api/x", Method::PUT), Some(1));
    // Without cors, OPTIONS is just a method the route does not take.
    assert_eq!(preflight("/plain", Method::PUT), None);
    // A method the CORS route does not take: still that route, whose
    // policy then refuses it.
    assert_eq!(preflight("/api/x", Method::DELETE), Some(1));
}

#[test]
fn request_hosts_drop_port_and_case() {
    let host_of = |host: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        let mut buf = [0; MAX_HOST];
        request_host(&"/".parse().unwrap(), &headers, &mut buf).map(str::to_owned)
    };
    assert_eq!(
        host_of("API.Example.com:8080").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(host_of("example.com.").as_deref(), Some("example.com"));
    assert_eq!(host_of("[::1]:80").as_deref(), Some("[::1]"));
    assert_eq!(host_of(":80"), None);
    let mut buf = [0; MAX_HOST];
    let uri: http::Uri = "https://h2.example.com/x".parse().unwrap();
    assert_eq!(
        request_host(&uri, &HeaderMap::new(), &mut buf),
        Some("h2.example.com")
    );
}

#[test]
fn host_keys_are_validated() {
    assert_eq!(
        HostMatch::parse("API.example.com").unwrap(),
        HostMatch::Exact("api.example.com".into())
    );
    assert_eq!(
        HostMatch::parse("*.example.com").unwrap(),
        HostMatch::Wildcard(".example.com".into())
    );
    for bad in ["", "*", "*.", "a..b", "a.*.b", "host:80", "http://x", "a b"] {
        assert!(HostMatch::parse(bad).is_err(), "{bad}");
    }
}

/// The tree and host maps against a plain scan of every route, ranked by the
/// precedence rules as the module documents them.
mod against_a_scan {
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;

    const PREFIXES: &[&str] = &["/", "/a", "/a/", "/a/b", "/ab", "/b"];
    const HOSTS: &[Option<&str>] = &[None, Some("h.test"), Some("*.test"), Some("*.x.test")];
    const PATHS: &[&str] = &[
        "/", "/a", "/a/", "/a/b", "/a/bc", "/ab", "/abc", "/b/c", "/c",
    ];
    const REQUEST_HOSTS: &[Option<&str>] = &[
        None,
        Some("h.test"),
        Some("a.test"),
        Some("a.x.test"),
        Some("other"),
    ];

    type Spec = (usize, bool, u8, u8, usize);

    fn build(index: usize, (prefix, segment, methods, header, host): Spec) -> Route {
        let mut r = route(index, PREFIXES[prefix]);
        if segment {
            r = super::segment(r);
        }
        r = match methods {
            1 => with_methods(r, &[Method::GET]),
            2 => with_methods(r, &[Method::POST]),
            _ => r,
        };
        r = match header {
            1 => with_header(r, "x-a", "1"),
            2 => with_header(r, "x-a", "2"),
            _ => r,
        };
        match HOSTS[host] {
            Some(host) => with_host(r, host),
            None => r,
        }
    }

    fn host_matches(route: &HostMatch, host: Option<&str>) -> Option<(u8, usize)> {
        match (route, host) {
            (HostMatch::Any, _) => Some((2, 0)),
            (HostMatch::Exact(name), Some(host)) if **name == *host => Some((0, 0)),
            (HostMatch::Wildcard(suffix), Some(host)) if host.ends_with(&**suffix) => {
                Some((1, usize::MAX - suffix.len()))
            }
            _ => None,
        }
    }

    fn scan<'r>(
        routes: &'r [Route],
        path: &str,
        host: Option<&str>,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&'r Route> {
        routes
            .iter()
            .filter_map(|r| {
                let (class, suffix) = host_matches(&r.host, host)?;
                let path_ok = path.starts_with(&*r.prefix) && r.matches_path(path);
                let methods_ok = r.methods.as_ref().is_none_or(|m| m.contains(method));
                let headers_ok = r.headers.iter().all(|c| c.matches(headers));
                (path_ok && methods_ok && headers_ok).then_some((
                    (
                        class,
                        suffix,
                        usize::MAX - r.prefix.len(),
                        r.methods.is_none(),
                        usize::MAX - r.headers.len(),
                    ),
                    r,
                ))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, r)| r)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

        #[test]
        fn lookup_agrees_with_a_full_scan(
            specs in prop::collection::vec((0..PREFIXES.len(), any::<bool>(), 0u8..3, 0u8..3, 0..HOSTS.len()), 1..8),
            path in select(PATHS),
            host in select(REQUEST_HOSTS),
            post in any::<bool>(),
            header in 0u8..3,
        ) {
            let routes: Vec<Route> = specs.iter().enumerate().map(|(i, s)| build(i, *s)).collect();
            let Ok(router) = Router::new(routes.clone()) else {
                return Ok(());
            };
            let method = if post { Method::POST } else { Method::GET };
            let mut headers = HeaderMap::new();
            if header > 0 {
                headers.insert("x-a", HeaderValue::from_str(&header.to_string()).unwrap());
            }
            let found = router
                .find(&RouteRequest { path, method: &method, headers: &headers, host, preflight: None })
                .map(|(_, r)| r.index);
            let expected = scan(&routes, path, host, &method, &headers).map(|r| r.index);
            prop_assert_eq!(found, expected, "{} {:?} {} x-a={}", path, host, method, header);
        }
    }
}
