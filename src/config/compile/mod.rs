//! Validation and compilation in one pass: file types in, runtime types out,
//! every problem collected (not just the first) with its key path. One file
//! per part of the config: routes, backends, the listener and Docker.

mod auth;
mod backends;
mod listener;
mod policy;
mod routes;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::duration::ConfigDuration;
use super::error::ConfigError;
use super::file::{ConfigFile, DefaultResponseFile};
use super::parse::Parsed;
use super::Config;
use crate::router::{Router, Tie};
use crate::snapshot::{DefaultResponse, Snapshot};

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

/// Compiles what [`super::parse`] read; `early` are the problems found
/// reading it, reported first.
pub(crate) fn compile(
    parsed: Parsed,
    early: Vec<(String, String)>,
    path: &Path,
) -> Result<Config, Vec<ConfigError>> {
    let Parsed {
        file,
        routes,
        backends,
        backend_names,
        jwt,
        jwt_names,
    } = parsed;
    let ConfigFile {
        routes: _,
        backends: _,
        default_response,
        docker,
        limits,
        tls,
        trusted_proxies,
        jwt: _,
        rate_limit_store,
        admin,
        access_log,
        stats,
    } = file;
    let mut problems = Problems {
        file: path,
        list: Vec::new(),
    };
    for (key, problem) in early {
        problems.add(key, problem);
    }

    let backends = backends::compile_backends(backends, &mut problems);
    let names = routes::BackendNames {
        index: backends
            .iter()
            .enumerate()
            .map(|(i, b)| (&*b.name, i))
            .collect::<HashMap<&str, usize>>(),
        declared: &backend_names,
    };
    // Key and secret files are relative to the config file's directory.
    let base = path.parent().unwrap_or(Path::new(""));
    let providers = auth::Providers {
        by_name: auth::compile_providers(jwt, base, &mut problems),
        declared: &jwt_names,
    };
    let store = rate_limit_store.and_then(|store| policy::compile_store(store, &mut problems));
    let routes = routes::compile_routes(routes, &names, &providers, store.as_ref(), &mut problems);
    let router = Router::new(routes).unwrap_or_else(|ties| {
        for Tie { first, second } in ties {
            problems.add(
                format!("routes[{second}]"),
                format!(
                    "matches the same requests as routes[{first}] (same host, path_prefix, \
                     and methods and headers that overlap); give one of them a method or \
                     header condition the other lacks"
                ),
            );
        }
        Router::default()
    });
    let trusted_proxies = policy::compile_trusted(&trusted_proxies, &mut problems);
    let default_response = compile_default_response(default_response, &mut problems);
    let docker = listener::compile_docker(docker.unwrap_or_default(), base, &mut problems);
    let limits = listener::compile_limits(limits.unwrap_or_default(), &mut problems);
    let tls = tls.and_then(|tls| listener::compile_tls(tls, base, &mut problems));
    let admin = listener::compile_admin(admin, &mut problems);
    let access_log =
        access_log.and_then(|log| listener::compile_access_log(&log, base, &mut problems));
    let stats = listener::compile_stats(stats, path, &mut problems);

    if !problems.list.is_empty() {
        return Err(problems.list);
    }
    Ok(Config {
        snapshot: Snapshot {
            router,
            backends,
            default_response,
            trusted_proxies,
            providers: providers.by_name.into_values().collect(),
            version: 1,
            loaded_at: std::time::SystemTime::now(),
        },
        docker,
        limits,
        tls,
        admin,
        access_log,
        stats,
    })
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
