//! Config validation: the contract file is valid unchanged; every refusal names
//! the file, the key path and the problem; all problems are reported together.

use std::path::Path;

use super::*;
use crate::backend::Source;

pub(super) const CONTRACT: &str = r#"
routes:
  - path_prefix: /api/payment
    backend: payment
  - path_prefix: /api/orders
    backend: orders
default_response:
  body: "This is not reachable"
  status_code: 403

backends:
  - name: payment
    match_labels:
      - app_name=payment
      - env=production
  - name: orders
    match_labels:
      - app_name=orders
      - env=production
"#;

pub(super) fn errors(yaml: &str) -> Vec<ConfigError> {
    parse(yaml, Path::new("cfg.yml"))
        .expect_err("config should be refused")
        .0
}

/// Asserts exactly one problem at `path` whose text contains `needle`.
pub(super) fn refused(yaml: &str, path: &str, needle: &str) {
    let errors = errors(yaml);
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.problem.contains(needle)),
        "expected {path}: …{needle}…, got {errors:#?}"
    );
    assert!(errors.iter().all(|e| e.file == Path::new("cfg.yml")));
}

#[test]
fn the_contract_file_is_valid_unchanged() {
    let config = parse(CONTRACT, Path::new("config.yml")).unwrap();
    let snapshot = &config.snapshot;
    assert_eq!(snapshot.router.routes().len(), 2);
    assert_eq!(snapshot.backends.len(), 2);
    assert_eq!(snapshot.default_response.status, 403);
    assert_eq!(
        &snapshot.default_response.body[..],
        b"This is not reachable"
    );
    let Source::Docker(selector) = &snapshot.backends[0].source else {
        panic!("payment should be a Docker backend");
    };
    assert_eq!(
        selector.labels,
        vec![
            ("app_name".to_owned(), "payment".to_owned()),
            ("env".to_owned(), "production".to_owned())
        ]
    );
    let route = snapshot.router.find_path("/api/orders/1").unwrap();
    assert_eq!(&*snapshot.backends[route.backend].name, "orders");
}

#[test]
fn bad_yaml_is_refused_with_its_location() {
    let errors = errors("routes: [\n  - path_prefix: /a\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].problem.contains("line"), "{errors:?}");
    assert_eq!(errors[0].to_string().split(':').next(), Some("cfg.yml"));
}

#[test]
fn empty_file_is_refused() {
    refused("  \n", "", "empty");
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    refused(
        "routes:\n  - path_prefix: /a\n    backend: b\n    bakend: c\nbackends:\n  - name: b\n    servers: [\"127.0.0.1:1\"]\n",
        "routes[0].bakend",
        "unknown field `bakend`",
    );
    let errors = errors("tsl: {}\n");
    assert!(
        errors[0].to_string().contains("unknown field `tsl`"),
        "{errors:?}"
    );
}

#[test]
fn route_to_an_unknown_backend_is_refused() {
    refused(
        "routes:\n  - {path_prefix: /a, backend: ordrs}\nbackends:\n  - {name: orders, servers: [\"127.0.0.1:1\"]}\n",
        "routes[0].backend",
        "unknown backend \"ordrs\"",
    );
}

#[test]
fn duplicate_backend_names_are_refused() {
    refused(
        "backends:\n  - {name: a, servers: [\"127.0.0.1:1\"]}\n  - {name: a, servers: [\"127.0.0.1:2\"]}\n",
        "backends[1].name",
        "duplicate backend name",
    );
}

#[test]
fn malformed_labels_are_refused() {
    refused(
        "backends:\n  - {name: a, match_labels: [app_name]}\n",
        "backends[0].match_labels[0]",
        "not key=value",
    );
    refused(
        "backends:\n  - {name: a, match_labels: [\"=x\"]}\n",
        "backends[0].match_labels[0]",
        "empty key",
    );
    refused(
        "backends:\n  - {name: a, match_labels: [env=a, env=b]}\n",
        "backends[0].match_labels[1]",
        "different values",
    );
}

#[test]
fn status_code_must_be_an_http_status() {
    for code in ["99", "600", "1000"] {
        refused(
            &format!("default_response: {{body: x, status_code: {code}}}\n"),
            "default_response.status_code",
            "100-599",
        );
    }
    refused(
        "default_response: {body: x, status_code: -1}\n",
        "default_response.status_code",
        "expected u16",
    );
}

/// A config with one route on `prefix` to a static backend.
fn route(prefix: &str) -> String {
    format!("routes:\n  - {{path_prefix: \"{prefix}\", backend: b}}\nbackends:\n  - {{name: b, servers: [\"127.0.0.1:1\"]}}\n")
}

#[test]
fn path_prefix_must_be_a_normalised_absolute_path() {
    refused(&route(""), "routes[0].path_prefix", "must not be empty");
    refused(
        &route("api"),
        "routes[0].path_prefix",
        "must start with '/'",
    );
    refused(&route("/a//b"), "routes[0].path_prefix", "normalised");
    refused(&route("/a/../b"), "routes[0].path_prefix", "normalised");
    refused(
        &route("/%73tats"),
        "routes[0].path_prefix",
        "write \"/stats\"",
    );
    refused(&route("/a/%2e"), "routes[0].path_prefix", "normalised");
    refused(&route("/a\\\\b"), "routes[0].path_prefix", "backslash");
}

#[test]
fn routes_may_not_shadow_stats() {
    refused(&route("/stats"), "routes[0].path_prefix", "shadow /stats");
    refused(
        &route("/stats/v2"),
        "routes[0].path_prefix",
        "shadow /stats",
    );
    // A catch-all is fine: /stats is answered before routing.
    assert!(parse(&route("/"), Path::new("c.yml")).is_ok());
}

#[test]
fn duplicate_prefixes_are_refused() {
    refused(
        "routes:\n  - {path_prefix: /a, backend: b}\n  - {path_prefix: /a, backend: b, path_match: segment}\nbackends:\n  - {name: b, servers: [\"127.0.0.1:1\"]}\n",
        "routes[1]",
        "matches the same requests as routes[0]",
    );
}

#[test]
fn a_backend_needs_labels_or_servers_but_not_both() {
    refused("backends:\n  - {name: a}\n", "backends[0]", "needs either");
    refused(
        "backends:\n  - {name: a, match_labels: [x=y], servers: [\"127.0.0.1:1\"]}\n",
        "backends[0]",
        "both",
    );
}

#[test]
fn static_servers_must_be_ip_and_port() {
    refused(
        "backends:\n  - {name: a, servers: [\"localhost\"]}\n",
        "backends[0].servers[0]",
        "IP:port",
    );
    refused(
        "backends:\n  - {name: a, servers: [\"127.0.0.1:0\"]}\n",
        "backends[0].servers[0]",
        "IP:port",
    );
}

#[test]
fn docker_settings_are_checked() {
    refused(
        "docker: {endpoint: \"ftp://x\"}\n",
        "docker.endpoint",
        "unix://",
    );
    refused(
        "docker: {resync_interval: 30}\n",
        "docker.resync_interval",
        "no unit",
    );
    refused(
        "docker: {resync_interval: 0s}\n",
        "docker.resync_interval",
        "greater than zero",
    );
    refused(
        "docker: {host_address: nope}\n",
        "docker.host_address",
        "not an IP",
    );
    let config = parse(
        "docker: {endpoint: \"unix:///run/d.sock\", resync_interval: 5s, address: published}\n",
        Path::new("c.yml"),
    )
    .unwrap();
    assert_eq!(config.docker.len(), 1);
    assert_eq!(
        config.docker[0].resync_interval,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        config.docker[0].address_mode,
        crate::discovery::AddressMode::Published
    );
}

#[test]
fn several_docker_hosts_each_with_their_own_addressing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(dir.path().join(name), "pem").unwrap();
    }
    let config = parse(
        "docker:\n  address: published\n  host_address: 192.0.2.1\n  resync_interval: 7s\n  endpoints:\n\
         \x20   - unix:///var/run/docker.sock\n\
         \x20   - {url: \"tcp://docker-2.example.internal:2376\", tls: {ca: ca.pem, cert: cert.pem, key: key.pem}, host_address: 192.0.2.2}\n\
         \x20   - {url: \"tcp://docker-3.example.internal:2375\", address: container}\n",
        &dir.path().join("c.yml"),
    )
    .unwrap();
    let hosts = &config.docker;
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts[0].host_name(), "unix:///var/run/docker.sock");
    assert_eq!(hosts[0].host_address.to_string(), "192.0.2.1");
    assert_eq!(hosts[1].host_address.to_string(), "192.0.2.2");
    assert_eq!(hosts[1].tls.as_ref().unwrap().ca, dir.path().join("ca.pem"));
    assert_eq!(
        hosts[1].address_mode,
        crate::discovery::AddressMode::Published
    );
    assert_eq!(
        hosts[2].address_mode,
        crate::discovery::AddressMode::Container
    );
    assert!(hosts
        .iter()
        .all(|h| h.resync_interval == std::time::Duration::from_secs(7)));
}

#[test]
fn bad_docker_host_lists_are_refused() {
    refused(
        "docker: {endpoint: \"unix:///a.sock\", endpoints: [\"unix:///b.sock\"]}\n",
        "docker.endpoints",
        "not both",
    );
    refused(
        "docker: {endpoints: []}\n",
        "docker.endpoints",
        "at least one",
    );
    refused(
        "docker: {endpoints: [\"unix:///a.sock\", \"unix:///a.sock\"]}\n",
        "docker.endpoints[1].url",
        "listed twice",
    );
    refused(
        "docker: {endpoints: [\"ftp://x\"]}\n",
        "docker.endpoints[0].url",
        "must start with",
    );
    refused(
        "docker: {endpoints: [{url: \"tcp://d:2376\", tls: {ca: no.pem, cert: no.pem, key: no.pem}}]}\n",
        "docker.endpoints[0].tls.ca",
        "cannot be read",
    );
    refused(
        "docker: {endpoints: [{url: \"unix:///a.sock\", port: 1}]}\n",
        "docker.endpoints[0]",
        "unknown field",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = errors(
        "routes:\n  - {path_prefix: api, backend: nope}\ndefault_response: {status_code: 42}\nbackends:\n  - {name: a, match_labels: [bad]}\n",
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "backends[0].match_labels[0]",
            "routes[0].path_prefix",
            "routes[0].backend",
            "default_response.status_code"
        ]
    );
}

#[test]
fn unreadable_file_names_the_file() {
    let error = load(Path::new("/nonexistent/rgate.yml")).unwrap_err();
    assert!(error
        .to_string()
        .contains("/nonexistent/rgate.yml: cannot read"));
}

#[test]
fn balancing_policies_compile() {
    use crate::backend::balance::{Balance, HashOn};
    let policy = |extra: &str| {
        let yaml = format!("backends:\n  - {{name: b, servers: [\"127.0.0.1:1\"], {extra}}}\n");
        parse(&yaml, Path::new("c.yml")).unwrap().snapshot.backends[0]
            .balancer
            .policy()
            .clone()
    };
    assert_eq!(policy("balance: random"), Balance::Random);
    assert_eq!(policy("balance: round_robin"), Balance::RoundRobin);
    assert_eq!(policy("balance: least_conn"), Balance::LeastConn);
    assert_eq!(policy("balance: weighted"), Balance::Weighted);
    assert_eq!(
        policy("balance: hash, hash_on: ip"),
        Balance::Hash(HashOn::ClientIp)
    );
    assert_eq!(
        policy("balance: hash, hash_on: \"header:X-User\""),
        Balance::Hash(HashOn::Header(http::HeaderName::from_static("x-user")))
    );
    assert_eq!(
        policy("balance: hash, hash_on: \"cookie:session\""),
        Balance::Hash(HashOn::Cookie("session".into()))
    );
}

#[test]
fn hash_balancing_needs_a_valid_key() {
    let backend =
        |extra: &str| format!("backends:\n  - {{name: b, servers: [\"127.0.0.1:1\"], {extra}}}\n");
    refused(
        &backend("balance: hash"),
        "backends[0].hash_on",
        "needs hash_on",
    );
    refused(
        &backend("balance: hash, hash_on: body"),
        "backends[0].hash_on",
        "not one of",
    );
    refused(
        &backend("balance: hash, hash_on: \"header:bad header\""),
        "backends[0].hash_on",
        "not a header name",
    );
    refused(
        &backend("balance: round_robin, hash_on: ip"),
        "backends[0].hash_on",
        "only with balance: hash",
    );
    refused(
        &backend("balance: fastest"),
        "backends[0].balance",
        "unknown variant `fastest`",
    );
}

#[test]
fn timeouts_must_be_positive_durations() {
    let yaml = |route: &str, backend: &str| {
        format!("routes:\n  - {{path_prefix: /, backend: b{route}}}\nbackends:\n  - {{name: b, servers: [\"127.0.0.1:1\"]{backend}}}\n")
    };
    refused(
        &yaml(", timeout: 0s", ""),
        "routes[0].timeout",
        "greater than zero",
    );
    refused(
        &yaml(", idle_timeout: 0ms", ""),
        "routes[0].idle_timeout",
        "greater than zero",
    );
    refused(
        &yaml("", ", connect_timeout: 0s"),
        "backends[0].connect_timeout",
        "greater than zero",
    );
    refused(&yaml(", timeout: 5", ""), "routes[0].timeout", "no unit");
    let config = parse(
        &yaml(
            ", timeout: 2s, idle_timeout: 500ms",
            ", connect_timeout: 100ms",
        ),
        Path::new("c.yml"),
    )
    .unwrap();
    let route = &config.snapshot.router.routes()[0];
    assert_eq!(
        (route.timeout, route.idle_timeout),
        (
            std::time::Duration::from_secs(2),
            std::time::Duration::from_millis(500)
        )
    );
    assert_eq!(
        config.snapshot.backends[0].connect_timeout,
        std::time::Duration::from_millis(100)
    );
}

#[test]
fn max_in_flight_must_be_at_least_one() {
    refused(
        "backends:\n  - {name: b, servers: [\"127.0.0.1:1\"], max_in_flight: 0}\n",
        "backends[0].max_in_flight",
        "at least 1",
    );
}

#[test]
fn outlier_settings_are_checked() {
    let backend = |outlier: &str| {
        format!("backends:\n  - {{name: b, servers: [\"127.0.0.1:1\"], outlier: {outlier}}}\n")
    };
    refused(
        &backend("{consecutive_errors: 0}"),
        "backends[0].outlier.consecutive_errors",
        "at least 1",
    );
    refused(
        &backend("{max_ejected_percent: 101}"),
        "backends[0].outlier.max_ejected_percent",
        "0-100",
    );
    refused(
        &backend("{eject_for: 0s}"),
        "backends[0].outlier.eject_for",
        "greater than zero",
    );
    refused(
        &backend("{ejects: 1}"),
        "backends[0].outlier.ejects",
        "unknown field",
    );
    let config = parse(&backend("{}"), Path::new("c.yml")).unwrap();
    let outlier = config.snapshot.backends[0].outlier.unwrap();
    assert_eq!(
        (
            outlier.consecutive_errors,
            outlier.eject_for,
            outlier.max_ejected_percent
        ),
        (5, std::time::Duration::from_secs(30), 50)
    );
}

#[test]
fn retry_settings_are_checked() {
    let route = |retries: &str| {
        format!("routes:\n  - {{path_prefix: /, backend: b, retries: {retries}}}\nbackends:\n  - {{name: b, servers: [\"127.0.0.1:1\"]}}\n")
    };
    refused(&route("{attempts: 0}"), "routes[0].retries.attempts", "1-5");
    refused(&route("{attempts: 9}"), "routes[0].retries.attempts", "1-5");
    refused(
        &route("{budget: 1.5}"),
        "routes[0].retries.budget",
        "0.0-1.0",
    );
    refused(
        &route("{on: [reset, 500]}"),
        "routes[0].retries.on[1]",
        "not one of",
    );
    refused(
        &route("{on: [timeout]}"),
        "routes[0].retries.on[0]",
        "not one of",
    );
    let config = parse(
        &route("{attempts: 3, on: [connect_error, 502, 504]}"),
        Path::new("c.yml"),
    )
    .unwrap();
    let retry = &config.snapshot.router.routes()[0].retry;
    assert_eq!(retry.attempts, 3);
    assert!(!retry.on_reset, "an explicit list replaces the defaults");
    assert_eq!(
        retry.on_status,
        [
            http::StatusCode::BAD_GATEWAY,
            http::StatusCode::GATEWAY_TIMEOUT
        ]
    );
}

#[test]
fn circuit_breaker_settings_are_checked() {
    let backend = |breaker: &str| {
        format!(
            "backends:\n  - {{name: b, servers: [\"127.0.0.1:1\"], circuit_breaker: {breaker}}}\n"
        )
    };
    let path = |field: &str| format!("backends[0].circuit_breaker.{field}");
    refused(
        &backend("{error_ratio: 0}"),
        &path("error_ratio"),
        "(0.0, 1.0]",
    );
    refused(
        &backend("{error_ratio: 1.5}"),
        &path("error_ratio"),
        "(0.0, 1.0]",
    );
    refused(
        &backend("{min_requests: 0}"),
        &path("min_requests"),
        "at least 1",
    );
    refused(
        &backend("{half_open_probes: 0}"),
        &path("half_open_probes"),
        "at least 1",
    );
    refused(
        &backend("{open_for: 0s}"),
        &path("open_for"),
        "greater than zero",
    );
    refused(
        "backends:\n  - {name: b, servers: [\"127.0.0.1:1\"], backend_circuit_breaker: {window: 0s}}\n",
        "backends[0].backend_circuit_breaker.window",
        "greater than zero",
    );
    let config = parse(&backend("{}"), Path::new("c.yml")).unwrap();
    assert!(
        config.snapshot.backends[0].circuit.is_none(),
        "the backend-wide breaker is its own key"
    );
    let breaker = config.snapshot.backends[0].breaker.unwrap();
    assert_eq!((breaker.min_requests, breaker.half_open_probes), (20, 3));
    assert_eq!(breaker.open_for, std::time::Duration::from_secs(5));
}

#[test]
fn health_check_settings_are_checked() {
    let backend = |check: &str| {
        format!("backends:\n  - {{name: b, servers: [\"127.0.0.1:1\"], health_check: {check}}}\n")
    };
    let path = |field: &str| format!("backends[0].health_check.{field}");
    refused(&backend("{path: health}"), &path("path"), "absolute path");
    refused(
        &backend("{interval: 0s}"),
        &path("interval"),
        "greater than zero",
    );
    refused(
        &backend("{unhealthy_after: 0}"),
        &path("unhealthy_after"),
        "at least 1",
    );
    refused(
        &backend("{expect_status: 700}"),
        &path("expect_status"),
        "not an HTTP status",
    );
    let config = parse(&backend("{}"), Path::new("c.yml")).unwrap();
    let check = config.snapshot.backends[0].health_check.clone().unwrap();
    assert_eq!(check.path.as_str(), "/health");
    assert_eq!(
        (
            check.unhealthy_after,
            check.healthy_after,
            check.wait_healthy
        ),
        (3, 2, false)
    );
    let waiting = parse(&backend("{wait_healthy: true}"), Path::new("c.yml")).unwrap();
    assert!(
        !waiting.snapshot.backends[0].endpoints().endpoints()[0].healthy(),
        "starts out of rotation"
    );
}

#[test]
fn limits_and_max_body_are_checked_and_have_defaults() {
    let config = parse(
        "routes:\n  - {path_prefix: /, backend: b, max_body: 2MiB}\n\
         backends:\n  - {name: b, servers: [\"127.0.0.1:1\"]}\n\
         limits: {max_header_size: 32KiB, header_read_timeout: 3s, max_connections: 50}\n",
        Path::new("c.yml"),
    )
    .unwrap();
    assert_eq!(config.limits.max_header_size, 32 * 1024);
    assert_eq!(
        config.limits.header_read_timeout,
        std::time::Duration::from_secs(3)
    );
    assert_eq!(config.limits.max_connections, 50);
    assert_eq!(
        config.snapshot.router.find_path("/x").unwrap().max_body,
        Some(2 * 1024 * 1024)
    );
    let defaults = parse("default_response: {status_code: 404}\n", Path::new("c.yml")).unwrap();
    assert_eq!(defaults.limits, crate::server::Limits::default());

    refused(
        "limits: {max_header_size: 1KiB}\n",
        "limits.max_header_size",
        "between 8192 and",
    );
    refused(
        "limits: {header_read_timeout: 0s}\n",
        "limits.header_read_timeout",
        "greater than zero",
    );
    refused(
        "limits: {max_connections: 0}\n",
        "limits.max_connections",
        "at least 1",
    );
    refused(
        "limits: {max_body: 1}\n",
        "limits.max_body",
        "unknown field",
    );
    refused(
        "routes:\n  - {path_prefix: /, backend: b, max_body: lots}\nbackends:\n  - {name: b, servers: [\"127.0.0.1:1\"]}\n",
        "routes[0].max_body",
        "",
    );
}
