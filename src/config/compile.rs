//! Validation and compilation in one pass: file types in, runtime types out,
//! every problem collected (not just the first) with its key path.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::duration::ConfigDuration;
use super::error::ConfigError;
use super::file::{
    AddressModeFile, BackendFile, BalanceFile, BreakerFile, CertificateFile, ConfigFile,
    DefaultResponseFile, DockerFile, HealthCheckFile, LimitsFile, OutlierFile, PathMatchFile,
    RetriesFile, RetryOnFile, RouteFile, TlsFile,
};
use super::Config;
use crate::backend::balance::{Balance, HashOn};
use crate::backend::breaker::Breaker;
use crate::backend::endpoint::{Endpoint, EndpointSet};
use crate::backend::health::HealthCheck;
use crate::backend::outlier::Outlier;
use crate::backend::DEFAULT_CONNECT_TIMEOUT;
use crate::backend::{Backend, DockerSelector, Source};
use crate::discovery::{AddressMode, DockerSettings};
use crate::policy::retry::{RetryBudget, RetryPolicy};
use crate::router::{
    PathMatch, Route, Router, DEFAULT_IDLE_TIMEOUT, DEFAULT_TIMEOUT, RESERVED_PATH,
};
use crate::server::Limits;
use crate::snapshot::{DefaultResponse, Snapshot};
use crate::tls::{self, TlsSettings};

const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Collects problems with the file name attached.
struct Problems<'a> {
    file: &'a Path,
    list: Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, path: impl Into<String>, problem: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            path: path.into(),
            problem: problem.into(),
        });
    }
}

pub(crate) fn compile(file: ConfigFile, path: &Path) -> Result<Config, Vec<ConfigError>> {
    let ConfigFile {
        routes,
        default_response,
        backends,
        docker,
        limits,
        tls,
    } = file;
    let mut problems = Problems {
        file: path,
        list: Vec::new(),
    };

    let backends = compile_backends(backends, &mut problems);
    let index: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (&*b.name, i))
        .collect();
    let routes = compile_routes(routes, &index, &mut problems);
    let default_response = compile_default_response(default_response, &mut problems);
    let docker = compile_docker(docker.unwrap_or_default(), &mut problems);
    let limits = compile_limits(limits.unwrap_or_default(), &mut problems);
    // Certificate paths are relative to the config file's directory.
    let base = path.parent().unwrap_or(Path::new(""));
    let tls = tls.and_then(|tls| compile_tls(tls, base, &mut problems));

    if !problems.list.is_empty() {
        return Err(problems.list);
    }
    Ok(Config {
        snapshot: Snapshot {
            router: Router::new(routes),
            backends,
            default_response,
        },
        docker,
        limits,
        tls,
    })
}

fn compile_limits(limits: LimitsFile, problems: &mut Problems<'_>) -> Limits {
    let LimitsFile {
        max_header_size,
        header_read_timeout,
        max_connections,
    } = limits;
    let defaults = Limits::default();
    let max_header_size = match max_header_size.map(|size| usize::try_from(size.as_u64())) {
        None => defaults.max_header_size,
        Some(Ok(size)) if (Limits::MIN_HEADER_SIZE..=Limits::MAX_HEADER_SIZE).contains(&size) => {
            size
        }
        Some(_) => {
            problems.add(
                "limits.max_header_size",
                format!(
                    "must be between {} and {} bytes",
                    Limits::MIN_HEADER_SIZE,
                    Limits::MAX_HEADER_SIZE
                ),
            );
            defaults.max_header_size
        }
    };
    Limits {
        max_header_size,
        header_read_timeout: positive(
            &mut *problems,
            "limits.header_read_timeout".into(),
            header_read_timeout,
            defaults.header_read_timeout,
        ),
        max_connections: at_least_one(
            problems,
            "limits.max_connections".into(),
            max_connections,
            defaults.max_connections,
        ),
    }
}

fn compile_routes(
    routes: Vec<RouteFile>,
    backends: &HashMap<&str, usize>,
    problems: &mut Problems<'_>,
) -> Vec<Route> {
    let mut seen = HashSet::new();
    let mut compiled = Vec::with_capacity(routes.len());
    for (i, route) in routes.into_iter().enumerate() {
        let RouteFile {
            path_prefix,
            backend,
            path_match,
            timeout,
            idle_timeout,
            retries,
            max_body,
        } = route;
        let key = format!("routes[{i}]");
        let retry = compile_retries(&key, retries, &mut *problems);
        let mut ok = true;
        if let Err(problem) = check_prefix(&path_prefix) {
            problems.add(format!("{key}.path_prefix"), problem);
            ok = false;
        } else if !seen.insert(path_prefix.clone()) {
            problems.add(
                format!("{key}.path_prefix"),
                format!("duplicate path_prefix {path_prefix:?}: another route already has it"),
            );
            ok = false;
        }
        let backend_index = backends.get(backend.as_str()).copied();
        if backend_index.is_none() {
            problems.add(
                format!("{key}.backend"),
                format!("unknown backend {backend:?}"),
            );
        }
        let timeout = positive(
            &mut *problems,
            format!("{key}.timeout"),
            timeout,
            DEFAULT_TIMEOUT,
        );
        let idle_timeout = positive(
            &mut *problems,
            format!("{key}.idle_timeout"),
            idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
        );
        if let (true, Some(backend)) = (ok, backend_index) {
            compiled.push(Route {
                prefix: path_prefix.into(),
                path_match: match path_match {
                    PathMatchFile::Prefix => PathMatch::Prefix,
                    PathMatchFile::Segment => PathMatch::Segment,
                },
                backend,
                timeout,
                idle_timeout,
                retry,
                max_body: max_body.map(|size| size.as_u64()),
            });
        }
    }
    compiled
}

/// A prefix must be a normalised absolute path: requests are normalised before
/// routing, so a prefix holding `//` or dot segments could never match.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty (use \"/\" to match every path)".into());
    }
    if !prefix.starts_with('/') {
        return Err(format!("{prefix:?} must start with '/'"));
    }
    // Request paths are normalised before matching, so any other spelling
    // could never match.
    if let Some(normal) = crate::path::normalize::path(prefix) {
        return Err(format!(
            "{prefix:?} is not a normalised path (no '//', '.' or '..' segments, \
             no escapes of unreserved characters); write {normal:?}"
        ));
    }
    if prefix.contains('\\') {
        return Err(format!(
            "{prefix:?} contains a backslash, which rgate refuses in request paths"
        ));
    }
    if prefix.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("{prefix:?} contains spaces or control characters"));
    }
    if prefix == RESERVED_PATH || prefix.starts_with("/stats/") {
        return Err(format!(
            "{prefix:?} would shadow {RESERVED_PATH}, which rgate serves itself"
        ));
    }
    Ok(())
}

fn compile_default_response(
    default: Option<DefaultResponseFile>,
    problems: &mut Problems<'_>,
) -> DefaultResponse {
    let Some(DefaultResponseFile { body, status_code }) = default else {
        return DefaultResponse::default();
    };
    match StatusCode::from_u16(status_code) {
        Ok(status) if (100..=599).contains(&status_code) => DefaultResponse {
            status,
            body: Bytes::from(body),
        },
        _ => {
            problems.add(
                "default_response.status_code",
                format!("{status_code} is not an HTTP status code (100-599)"),
            );
            DefaultResponse::default()
        }
    }
}

fn compile_backends(backends: Vec<BackendFile>, problems: &mut Problems<'_>) -> Vec<Arc<Backend>> {
    let mut names = HashSet::new();
    let mut compiled = Vec::with_capacity(backends.len());
    for (i, backend) in backends.into_iter().enumerate() {
        let BackendFile {
            name,
            match_labels,
            servers,
            port,
            connect_timeout,
            max_in_flight,
            outlier,
            circuit_breaker,
            backend_circuit_breaker,
            health_check,
            balance,
            hash_on,
        } = backend;
        let key = format!("backends[{i}]");
        if max_in_flight == Some(0) {
            problems.add(format!("{key}.max_in_flight"), "must be at least 1");
        }
        let balance = compile_balance(&key, balance, hash_on.as_deref(), problems);
        let outlier = outlier.map(|outlier| compile_outlier(&key, outlier, problems));
        let breaker = circuit_breaker
            .map(|breaker| compile_breaker(&key, "circuit_breaker", breaker, problems));
        let circuit = backend_circuit_breaker
            .map(|breaker| compile_breaker(&key, "backend_circuit_breaker", breaker, problems));
        let health_check = health_check.map(|check| compile_health_check(&key, check, problems));
        let wait_healthy = health_check
            .as_ref()
            .is_some_and(|check| check.wait_healthy);
        let connect_timeout = positive(
            &mut *problems,
            format!("{key}.connect_timeout"),
            connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        );
        if name.is_empty() {
            problems.add(format!("{key}.name"), "must not be empty");
        } else if !names.insert(name.clone()) {
            problems.add(
                format!("{key}.name"),
                format!("duplicate backend name {name:?}"),
            );
        }
        if port == Some(0) {
            problems.add(format!("{key}.port"), "must be 1-65535");
        }
        let source = match (match_labels.is_empty(), servers.is_empty()) {
            (true, true) => {
                problems.add(
                    key.clone(),
                    "needs either match_labels (Docker discovery) or servers (static addresses)",
                );
                None
            }
            (false, false) => {
                problems.add(
                    key.clone(),
                    "has both match_labels and servers; use one or the other",
                );
                None
            }
            (false, true) => compile_labels(&key, &match_labels, problems).map(|labels| {
                (
                    Source::Docker(DockerSelector { labels, port }),
                    EndpointSet::default(),
                )
            }),
            (true, false) => {
                if port.is_some() {
                    problems.add(
                        format!("{key}.port"),
                        "applies to Docker backends only; static servers carry their own port",
                    );
                }
                compile_servers(&key, &servers, wait_healthy, problems)
                    .map(|set| (Source::Static, set))
            }
        };
        if let Some((source, set)) = source {
            compiled.push(Arc::new(
                Backend::new(&name, source, balance, set)
                    .with_connect_timeout(connect_timeout)
                    .with_max_in_flight(max_in_flight)
                    .with_outlier(outlier)
                    .with_breaker(breaker)
                    .with_circuit(circuit)
                    .with_health_check(health_check),
            ));
        }
    }
    compiled
}

/// An optional count that must be at least 1 when given.
fn at_least_one(
    problems: &mut Problems<'_>,
    path: String,
    value: Option<u32>,
    default: u32,
) -> u32 {
    let value = value.unwrap_or(default);
    if value == 0 {
        problems.add(path, "must be at least 1");
    }
    value.max(1)
}

/// An optional duration that must be greater than zero when given.
fn positive(
    problems: &mut Problems<'_>,
    path: String,
    value: Option<ConfigDuration>,
    default: Duration,
) -> Duration {
    match value {
        None => default,
        Some(ConfigDuration(duration)) if duration.is_zero() => {
            problems.add(path, "must be greater than zero");
            default
        }
        Some(ConfigDuration(duration)) => duration,
    }
}

fn compile_retries(
    key: &str,
    retries: Option<RetriesFile>,
    problems: &mut Problems<'_>,
) -> RetryPolicy {
    let Some(RetriesFile {
        attempts,
        on,
        budget,
        replay_body_limit,
    }) = retries
    else {
        return RetryPolicy::default();
    };
    let mut policy = RetryPolicy::default();
    if let Some(limit) = replay_body_limit {
        policy.replay_body_limit = limit;
    }
    if let Some(attempts) = attempts {
        if !(1..=5).contains(&attempts) {
            problems.add(
                format!("{key}.retries.attempts"),
                "must be 1-5 (1 disables retries)",
            );
        }
        policy.attempts = attempts.clamp(1, 5);
    }
    if let Some(budget) = budget {
        if !(0.0..=1.0).contains(&budget) {
            problems.add(
                format!("{key}.retries.budget"),
                "must be a share of requests, 0.0-1.0",
            );
        }
        policy.budget = std::sync::Arc::new(RetryBudget::new(budget));
    }
    if let Some(on) = on {
        policy.on_reset = false;
        for (j, condition) in on.into_iter().enumerate() {
            match condition {
                // Connection failures leave the request unsent: always retried.
                RetryOnFile::Name(name) if name == "connect_error" => {}
                RetryOnFile::Name(name) if name == "reset" => policy.on_reset = true,
                RetryOnFile::Status(code @ 502..=504) => {
                    if let Ok(status) = StatusCode::from_u16(code) {
                        policy.on_status.push(status);
                    }
                }
                other => problems.add(
                    format!("{key}.retries.on[{j}]"),
                    format!("{other:?} is not one of connect_error, reset, 502, 503, 504"),
                ),
            }
        }
    }
    policy
}

fn compile_health_check(
    key: &str,
    check: HealthCheckFile,
    problems: &mut Problems<'_>,
) -> HealthCheck {
    let HealthCheckFile {
        path,
        interval,
        timeout,
        unhealthy_after,
        healthy_after,
        expect_status,
        wait_healthy,
    } = check;
    let field = |name: &str| format!("{key}.health_check.{name}");
    let path = path.unwrap_or_else(|| "/health".to_owned());
    let path = match http::uri::PathAndQuery::try_from(path.as_str()) {
        Ok(parsed) if path.starts_with('/') => parsed,
        _ => {
            problems.add(field("path"), format!("{path:?} is not an absolute path"));
            http::uri::PathAndQuery::from_static("/")
        }
    };
    let expect_status = expect_status.and_then(|code| match StatusCode::from_u16(code) {
        Ok(status) if (100..=599).contains(&code) => Some(status),
        _ => {
            problems.add(
                field("expect_status"),
                format!("{code} is not an HTTP status code"),
            );
            None
        }
    });
    HealthCheck {
        path,
        interval: positive(
            problems,
            field("interval"),
            interval,
            Duration::from_secs(5),
        ),
        timeout: positive(problems, field("timeout"), timeout, Duration::from_secs(1)),
        unhealthy_after: at_least_one(problems, field("unhealthy_after"), unhealthy_after, 3),
        healthy_after: at_least_one(problems, field("healthy_after"), healthy_after, 2),
        expect_status,
        wait_healthy,
    }
}

fn compile_breaker(
    key: &str,
    name: &str,
    breaker: BreakerFile,
    problems: &mut Problems<'_>,
) -> Breaker {
    let BreakerFile {
        error_ratio,
        min_requests,
        window,
        open_for,
        half_open_probes,
    } = breaker;
    let path = |field: &str| format!("{key}.{name}.{field}");
    let error_ratio = error_ratio.unwrap_or(0.5);
    if !(error_ratio > 0.0 && error_ratio <= 1.0) {
        problems.add(path("error_ratio"), "must be in (0.0, 1.0]");
    }
    Breaker {
        error_ratio,
        min_requests: at_least_one(problems, path("min_requests"), min_requests, 20),
        window: positive(problems, path("window"), window, Duration::from_secs(10)),
        open_for: positive(problems, path("open_for"), open_for, Duration::from_secs(5)),
        half_open_probes: at_least_one(problems, path("half_open_probes"), half_open_probes, 3),
    }
}

fn compile_outlier(key: &str, outlier: OutlierFile, problems: &mut Problems<'_>) -> Outlier {
    let OutlierFile {
        consecutive_errors,
        eject_for,
        max_ejected_percent,
    } = outlier;
    let consecutive_errors = at_least_one(
        problems,
        format!("{key}.outlier.consecutive_errors"),
        consecutive_errors,
        5,
    );
    let max_ejected_percent = max_ejected_percent.unwrap_or(50);
    if max_ejected_percent > 100 {
        problems.add(
            format!("{key}.outlier.max_ejected_percent"),
            "must be 0-100",
        );
    }
    Outlier {
        consecutive_errors,
        eject_for: positive(
            problems,
            format!("{key}.outlier.eject_for"),
            eject_for,
            Duration::from_secs(30),
        ),
        max_ejected_percent,
    }
}

fn compile_balance(
    key: &str,
    balance: BalanceFile,
    hash_on: Option<&str>,
    problems: &mut Problems<'_>,
) -> Balance {
    match (balance, hash_on) {
        (BalanceFile::Hash, None) => {
            problems.add(
                format!("{key}.hash_on"),
                "balance: hash needs hash_on (ip, header:NAME or cookie:NAME)",
            );
            Balance::Random
        }
        (BalanceFile::Hash, Some(on)) => match parse_hash_on(on) {
            Ok(on) => Balance::Hash(on),
            Err(problem) => {
                problems.add(format!("{key}.hash_on"), problem);
                Balance::Random
            }
        },
        (_, Some(_)) => {
            problems.add(format!("{key}.hash_on"), "applies only with balance: hash");
            Balance::Random
        }
        (BalanceFile::Random, None) => Balance::Random,
        (BalanceFile::RoundRobin, None) => Balance::RoundRobin,
        (BalanceFile::LeastConn, None) => Balance::LeastConn,
        (BalanceFile::Weighted, None) => Balance::Weighted,
    }
}

fn parse_hash_on(text: &str) -> Result<HashOn, String> {
    match text.split_once(':') {
        None if text == "ip" => Ok(HashOn::ClientIp),
        Some(("header", name)) => http::HeaderName::try_from(name.trim())
            .map(HashOn::Header)
            .map_err(|_| format!("{name:?} is not a header name")),
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Ok(HashOn::Cookie(name.trim().to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not one of ip, header:NAME, cookie:NAME"
        )),
    }
}

fn compile_labels(
    key: &str,
    labels: &[String],
    problems: &mut Problems<'_>,
) -> Option<Vec<(String, String)>> {
    let mut parsed: Vec<(String, String)> = Vec::with_capacity(labels.len());
    let before = problems.list.len();
    for (j, label) in labels.iter().enumerate() {
        let path = format!("{key}.match_labels[{j}]");
        match label.split_once('=') {
            Some((k, _)) if k.trim().is_empty() => {
                problems.add(
                    path,
                    format!("{label:?} has an empty key (expected key=value)"),
                );
            }
            Some((k, v)) => {
                if let Some((_, other)) = parsed.iter().find(|(pk, _)| pk == k) {
                    if other != v {
                        problems.add(
                            path,
                            format!(
                                "label {k:?} is required twice with different values; no container can match"
                            ),
                        );
                    }
                    continue;
                }
                parsed.push((k.to_owned(), v.to_owned()));
            }
            None => problems.add(path, format!("{label:?} is not key=value")),
        }
    }
    (problems.list.len() == before).then_some(parsed)
}

fn compile_servers(
    key: &str,
    servers: &[String],
    wait_healthy: bool,
    problems: &mut Problems<'_>,
) -> Option<EndpointSet> {
    let mut endpoints = Vec::with_capacity(servers.len());
    let before = problems.list.len();
    for (j, server) in servers.iter().enumerate() {
        match server.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => {
                let endpoint = Endpoint::new(addr, format!("static:{addr}"), server.as_str());
                endpoints.push(Arc::new(if wait_healthy {
                    endpoint.unhealthy_until_checked()
                } else {
                    endpoint
                }));
            }
            _ => problems.add(
                format!("{key}.servers[{j}]"),
                format!("{server:?} is not an IP:port address (e.g. 127.0.0.1:9001)"),
            ),
        }
    }
    (problems.list.len() == before).then(|| EndpointSet::new(endpoints))
}

fn compile_docker(docker: DockerFile, problems: &mut Problems<'_>) -> DockerSettings {
    let DockerFile {
        endpoint,
        network,
        host_address,
        address,
        resync_interval,
    } = docker;
    let host_address = match host_address.as_deref().map(str::parse::<IpAddr>) {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(Ok(ip)) => ip,
        Some(Err(_)) => {
            problems.add("docker.host_address", "is not an IP address");
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    };
    if let Some(endpoint) = &endpoint {
        if !["unix://", "tcp://", "http://", "https://"]
            .iter()
            .any(|scheme| endpoint.starts_with(scheme))
        {
            problems.add(
                "docker.endpoint",
                format!("{endpoint:?} must start with unix://, tcp://, http:// or https://"),
            );
        }
    }
    let resync_interval = resync_interval.map_or(DEFAULT_RESYNC_INTERVAL, |d| d.0);
    if resync_interval.is_zero() {
        problems.add("docker.resync_interval", "must be greater than zero");
    }
    DockerSettings {
        endpoint,
        network,
        host_address,
        address_mode: match address {
            AddressModeFile::Container => AddressMode::Container,
            AddressModeFile::Published => AddressMode::Published,
        },
        resync_interval,
    }
}

fn compile_tls(tls: TlsFile, base: &Path, problems: &mut Problems<'_>) -> Option<TlsSettings> {
    let TlsFile {
        certificates,
        cert,
        key,
        redirect_http_port,
    } = tls;
    if redirect_http_port == Some(0) {
        problems.add("tls.redirect_http_port", "must be 1-65535");
    }
    // The short form `tls: {cert, key}` is one certificate under the key paths `tls.cert`/`tls.key`.
    let files: Vec<(String, CertificateFile)> = match (certificates, cert, key) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            problems.add(
                "tls",
                "has both certificates and cert/key; use one or the other",
            );
            return None;
        }
        (Some(certificates), None, None) => {
            if certificates.is_empty() {
                problems.add("tls.certificates", "needs at least one certificate");
            }
            certificates
                .into_iter()
                .enumerate()
                .map(|(i, file)| (format!("tls.certificates[{i}]"), file))
                .collect()
        }
        (None, Some(cert), Some(key)) => vec![("tls".to_owned(), CertificateFile { cert, key })],
        (None, Some(_), None) => {
            problems.add("tls.key", "is required with tls.cert");
            return None;
        }
        (None, None, Some(_)) => {
            problems.add("tls.cert", "is required with tls.key");
            return None;
        }
        (None, None, None) => {
            problems.add("tls", "needs certificates (or cert and key)");
            return None;
        }
    };
    let provider = tls::provider();
    let before = problems.list.len();
    let mut loaded = Vec::with_capacity(files.len());
    for (
        i,
        (
            key,
            CertificateFile {
                cert,
                key: key_file,
            },
        ),
    ) in files.into_iter().enumerate()
    {
        match tls::load_certificate(&base.join(cert), &base.join(key_file), &provider) {
            // Only the first certificate is reachable without a matching name.
            Ok(certificate) if i > 0 && !certificate.has_names() => problems.add(
                format!("{key}.cert"),
                "has no DNS names (subjectAltName), so SNI can never select it",
            ),
            Ok(certificate) => loaded.push(certificate),
            Err(error) => problems.add(format!("{key}.{}", error.field()), error.to_string()),
        }
    }
    if problems.list.len() != before || loaded.is_empty() {
        return None;
    }
    TlsSettings::new(provider, loaded, redirect_http_port)
        .map_err(|error| problems.add("tls", error.to_string()))
        .ok()
}
