//! Backends: where endpoints come from, and how they are balanced, checked
//! and protected.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::{at_least_one, positive, Problems};
use crate::backend::balance::{Balance, HashOn};
use crate::backend::breaker::Breaker;
use crate::backend::endpoint::{Endpoint, EndpointSet};
use crate::backend::health::HealthCheck;
use crate::backend::outlier::Outlier;
use crate::backend::DEFAULT_CONNECT_TIMEOUT;
use crate::backend::{Backend, DockerSelector, Source};
use crate::config::file::{BackendFile, BalanceFile, BreakerFile, HealthCheckFile, OutlierFile};

pub(super) fn compile_backends(
    backends: Vec<(usize, BackendFile)>,
    problems: &mut Problems<'_>,
) -> Vec<Arc<Backend>> {
    let mut names = HashSet::new();
    let mut compiled = Vec::with_capacity(backends.len());
    for (i, backend) in backends {
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

pub(super) fn compile_health_check(
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

pub(super) fn compile_breaker(
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

pub(super) fn compile_outlier(
    key: &str,
    outlier: OutlierFile,
    problems: &mut Problems<'_>,
) -> Outlier {
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

pub(super) fn compile_balance(
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

pub(super) fn parse_hash_on(text: &str) -> Result<HashOn, String> {
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

pub(super) fn compile_labels(
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

pub(super) fn compile_servers(
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
