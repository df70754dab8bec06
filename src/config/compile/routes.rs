//! Routes: matching keys, timeouts, retries, rewrites and the edge policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::{policy, positive, Problems};
use crate::config::file::{PathMatchFile, RetriesFile, RetryOnFile, RouteFile};
use crate::path::rewrite::PrefixRewrite;
use crate::policy::header_rules::Side;
use crate::policy::rate_limit::Shared;
use crate::policy::retry::{RetryBudget, RetryPolicy};
use crate::policy::shared_limit::SharedStore;
use crate::policy::EdgePolicy;
use crate::router::{
    HeaderCondition, HostMatch, MethodSet, PathMatch, Route, DEFAULT_IDLE_TIMEOUT, DEFAULT_TIMEOUT,
    RESERVED_PATH,
};

/// What routes need to know about the backends.
pub(super) struct BackendNames<'a> {
    /// Compiled backends, by name.
    pub(super) index: HashMap<&'a str, usize>,
    /// Every name the file declares, including backends refused for their
    /// own problems: a route naming one is not reported again.
    pub(super) declared: &'a HashSet<String>,
}

pub(super) fn compile_routes(
    routes: Vec<(usize, RouteFile)>,
    backends: &BackendNames<'_>,
    providers: &super::auth::Providers<'_>,
    store: Option<&Arc<SharedStore>>,
    problems: &mut Problems<'_>,
) -> Vec<Route> {
    let mut names = HashSet::new();
    let mut compiled = Vec::with_capacity(routes.len());
    for (i, route) in routes {
        let RouteFile {
            name,
            path_prefix,
            backend,
            host,
            methods,
            headers,
            strip_prefix,
            rewrite_prefix,
            request_headers,
            response_headers,
            cors,
            auth,
            rate_limit,
            path_match,
            timeout,
            idle_timeout,
            retries,
            max_body,
        } = route;
        let key = format!("routes[{i}]");
        let before = problems.list.len();
        let retry = compile_retries(&key, retries, &mut *problems);
        if let Err(problem) = check_prefix(&path_prefix) {
            problems.add(format!("{key}.path_prefix"), problem);
        }
        let host = match host.as_deref().map(HostMatch::parse) {
            None => HostMatch::Any,
            Some(Ok(host)) => host,
            Some(Err(problem)) => {
                problems.add(format!("{key}.host"), problem);
                HostMatch::Any
            }
        };
        let methods =
            methods.map(|list| compile_methods(&format!("{key}.methods"), &list, problems));
        let conditions = compile_conditions(&key, headers, problems);
        let rewrite = match (strip_prefix, rewrite_prefix) {
            (false, None) => None,
            (true, None) => Some(PrefixRewrite::Strip),
            (false, Some(new)) => match check_rewrite(&new) {
                Ok(()) => Some(PrefixRewrite::Replace(new.into())),
                Err(problem) => {
                    problems.add(format!("{key}.rewrite_prefix"), problem);
                    None
                }
            },
            (true, Some(_)) => {
                problems.add(
                    format!("{key}.rewrite_prefix"),
                    "cannot be used with strip_prefix: true; use one or the other",
                );
                None
            }
        };
        let id: Arc<str> = match &name {
            Some(name) => format!("name:{name}").into(),
            None => match_key(&host, &path_prefix, methods.as_ref(), &conditions).into(),
        };
        let auth = auth.and_then(|auth| providers.route_auth(&key, &auth, problems));
        let policy = EdgePolicy {
            cors: cors
                .and_then(|cors| policy::compile_cors(&key, cors, methods.as_ref(), problems)),
            rate_limit: rate_limit
                .and_then(|limit| policy::compile_rate_limit(&key, limit, auth.is_some(), problems))
                .map(|mut limit| {
                    limit.shared = store.map(|store| Shared {
                        store: store.clone(),
                        namespace: id.as_ref().into(),
                    });
                    Arc::new(limit)
                }),
            auth,
            request_headers: request_headers.and_then(|rules| {
                policy::compile_header_rules(
                    &format!("{key}.request_headers"),
                    rules,
                    Side::Request,
                    problems,
                )
            }),
            response_headers: response_headers.and_then(|rules| {
                policy::compile_header_rules(
                    &format!("{key}.response_headers"),
                    rules,
                    Side::Response,
                    problems,
                )
            }),
        };
        let backend_index = backends.index.get(backend.as_str()).copied();
        if backend_index.is_none() && !backends.declared.contains(&backend) {
            problems.add(
                format!("{key}.backend"),
                format!("unknown backend {backend:?}"),
            );
        }
        if let Some(name) = &name {
            if name.trim().is_empty() {
                problems.add(format!("{key}.name"), "must not be empty");
            } else if !names.insert(name.clone()) {
                problems.add(
                    format!("{key}.name"),
                    format!("duplicate route name {name:?}"),
                );
            }
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
        let (Some(backend), true) = (backend_index, problems.list.len() == before) else {
            continue;
        };
        compiled.push(Route {
            id,
            name: name.unwrap_or_else(|| path_prefix.clone()).into(),
            index: i,
            host,
            prefix: path_prefix.into(),
            path_match: match path_match {
                PathMatchFile::Prefix => PathMatch::Prefix,
                PathMatchFile::Segment => PathMatch::Segment,
            },
            methods,
            headers: conditions.into(),
            backend,
            timeout,
            idle_timeout,
            retry,
            max_body: max_body.map(|size| size.as_u64()),
            rewrite,
            policy: policy.boxed(),
            metrics: Arc::default(),
        });
    }
    compiled
}

/// A route's identity from its matching keys, for routes without a name.
fn match_key(
    host: &HostMatch,
    prefix: &str,
    methods: Option<&MethodSet>,
    headers: &[HeaderCondition],
) -> String {
    let mut key = format!("{}|{prefix}|", host.to_config().unwrap_or_default());
    if let Some(methods) = methods {
        for method in methods.iter() {
            key.push_str(method.as_str());
            key.push(',');
        }
    }
    for condition in headers {
        key.push('|');
        key.push_str(condition.name.as_str());
        key.push('=');
        key.push_str(&String::from_utf8_lossy(condition.value.as_bytes()));
    }
    key
}

fn compile_methods(key: &str, list: &[String], problems: &mut Problems<'_>) -> MethodSet {
    if list.is_empty() {
        problems.add(
            key,
            "must name at least one method (leave it out to allow any)",
        );
    }
    let mut methods = Vec::with_capacity(list.len());
    for (j, text) in list.iter().enumerate() {
        // Methods are case-sensitive tokens; the standard ones are upper case.
        match Method::from_bytes(text.as_bytes()) {
            Ok(method) if text.bytes().all(|b| !b.is_ascii_lowercase()) => methods.push(method),
            _ => problems.add(
                format!("{key}[{j}]"),
                format!("{text:?} is not a method (write GET, POST, …, in upper case)"),
            ),
        }
    }
    MethodSet::new(methods)
}

fn compile_conditions(
    key: &str,
    headers: BTreeMap<String, String>,
    problems: &mut Problems<'_>,
) -> Vec<HeaderCondition> {
    let mut conditions: Vec<HeaderCondition> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let path = format!("{key}.headers.{name}");
        let Ok(parsed) = HeaderName::try_from(name.as_str()) else {
            problems.add(path, format!("{name:?} is not a header name"));
            continue;
        };
        let Ok(value) = HeaderValue::from_str(&value) else {
            problems.add(path, format!("{value:?} is not a valid header value"));
            continue;
        };
        if conditions.iter().any(|c| c.name == parsed) {
            problems.add(path, "the same header is named twice (names ignore case)");
            continue;
        }
        conditions.push(HeaderCondition {
            name: parsed,
            value,
        });
    }
    conditions
}

/// A `rewrite_prefix` is a normalised absolute path, like a prefix.
fn check_rewrite(new: &str) -> Result<(), String> {
    if !new.starts_with('/') {
        return Err(format!("{new:?} must start with '/'"));
    }
    if let Some(normal) = crate::path::normalize::path(new) {
        return Err(format!(
            "{new:?} is not a normalised path; write {normal:?}"
        ));
    }
    if new.contains(['?', '#', '\\']) || new.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("{new:?} may hold only a path"));
    }
    Ok(())
}

/// A prefix must be a normalised absolute path: requests are normalised before
/// routing, so a prefix holding `//` or dot segments could never match.
pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
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

pub(super) fn compile_retries(
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
