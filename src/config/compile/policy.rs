//! The edge policy's parts: CORS, header rules, trusted proxies.

use http::header::{HeaderName, HeaderValue};
use http::Method;

use super::Problems;
use std::num::NonZeroU32;

use std::sync::Arc;
use std::time::Duration;

use crate::config::file::{CorsFile, HeaderRulesFile, RateLimitFile, RedisStoreFile};
use crate::methods::MethodSet;
use crate::policy::cors::{Cors, Origins};
use crate::policy::header_rules::{refused_name, HeaderRules, Side, Template};
use crate::policy::rate_limit::{LimitKey, RateLimit, DEFAULT_MAX_KEYS};
use crate::policy::shared_limit::{OnError, SharedStore};
use crate::policy::trusted::TrustedProxies;

pub(super) fn compile_header_rules(
    key: &str,
    rules: HeaderRulesFile,
    side: Side,
    problems: &mut Problems<'_>,
) -> Option<HeaderRules> {
    let HeaderRulesFile { remove, set, add } = rules;
    let before = problems.list.len();
    let name =
        |path: String, text: &str, problems: &mut Problems<'_>| match HeaderName::try_from(text) {
            Ok(name) => match refused_name(&name, side) {
                Some(why) => {
                    problems.add(path, format!("{text:?} {why}"));
                    None
                }
                None => Some(name),
            },
            Err(_) => {
                problems.add(path, format!("{text:?} is not a header name"));
                None
            }
        };
    let remove: Vec<HeaderName> = remove
        .iter()
        .enumerate()
        .filter_map(|(j, text)| name(format!("{key}.remove[{j}]"), text, problems))
        .collect();
    let templates = |list: std::collections::BTreeMap<String, String>,
                     field: &str,
                     problems: &mut Problems<'_>| {
        list.into_iter()
            .filter_map(|(text, value)| {
                let path = format!("{key}.{field}.{text}");
                let name = name(path.clone(), &text, problems)?;
                match Template::parse(&value) {
                    Ok(template) => Some((name, template)),
                    Err(problem) => {
                        problems.add(path, problem);
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    };
    let set = templates(set, "set", problems);
    let add = templates(add, "add", problems);
    if problems.list.len() != before || (remove.is_empty() && set.is_empty() && add.is_empty()) {
        return None;
    }
    Some(HeaderRules {
        remove: remove.into(),
        set: set.into(),
        add: add.into(),
    })
}

pub(super) fn compile_cors(
    key: &str,
    cors: CorsFile,
    route_methods: Option<&MethodSet>,
    problems: &mut Problems<'_>,
) -> Option<Cors> {
    let CorsFile {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials,
        max_age,
    } = cors;
    let key = format!("{key}.cors");
    let before = problems.list.len();
    let origins = compile_origins(&key, &allow_origins, allow_credentials, problems);
    let wildcard_refused = |field: &str, problems: &mut Problems<'_>| {
        problems.add(
            format!("{key}.{field}"),
            "\"*\" cannot be used with allow_credentials: true (browsers refuse it); list them",
        );
    };
    // Methods: the configured list, else the route's, else the safelisted ones.
    let (methods, methods_value) = match allow_methods {
        Some(list) if list.iter().any(|m| m == "*") => {
            if allow_credentials {
                wildcard_refused("allow_methods", problems);
            }
            (None, HeaderValue::from_static("*"))
        }
        Some(list) => {
            let mut methods = Vec::new();
            for (j, text) in list.iter().enumerate() {
                match Method::from_bytes(text.as_bytes()) {
                    Ok(method) => methods.push(method),
                    Err(_) => problems.add(
                        format!("{key}.allow_methods[{j}]"),
                        format!("{text:?} is not a method"),
                    ),
                }
            }
            let set = MethodSet::new(methods);
            let value = joined(set.iter().map(Method::as_str));
            (Some(set), value)
        }
        None => {
            let set = route_methods
                .cloned()
                .unwrap_or_else(|| MethodSet::new([Method::GET, Method::HEAD, Method::POST]));
            let value = joined(set.iter().map(Method::as_str));
            (Some(set), value)
        }
    };
    let (headers, headers_value) = if allow_headers.iter().any(|h| h == "*") {
        if allow_credentials {
            wildcard_refused("allow_headers", problems);
        }
        (None, Some(HeaderValue::from_static("*")))
    } else {
        let names = header_names(&format!("{key}.allow_headers"), &allow_headers, problems);
        let value = (!names.is_empty()).then(|| joined(names.iter().map(HeaderName::as_str)));
        (Some(names.into_boxed_slice()), value)
    };
    let expose = header_names(&format!("{key}.expose_headers"), &expose_headers, problems);
    let expose = (!expose.is_empty()).then(|| joined(expose.iter().map(HeaderName::as_str)));
    let max_age = max_age.map(|age| HeaderValue::from(age.0.as_secs()));
    let origins = origins?;
    (problems.list.len() == before).then_some(Cors {
        origins,
        methods,
        methods_value,
        headers,
        headers_value,
        expose,
        credentials: allow_credentials,
        max_age,
    })
}

fn compile_origins(
    key: &str,
    list: &[String],
    credentials: bool,
    problems: &mut Problems<'_>,
) -> Option<Origins> {
    let path = format!("{key}.allow_origins");
    if list.is_empty() {
        problems.add(path, "must list at least one origin (or \"*\")");
        return None;
    }
    if list.iter().any(|o| o == "*") {
        if list.len() > 1 {
            problems.add(path, "\"*\" allows every origin; list nothing beside it");
            return None;
        }
        if credentials {
            problems.add(
                path,
                "\"*\" cannot be used with allow_credentials: true (browsers refuse it); list the origins",
            );
            return None;
        }
        return Some(Origins::Any);
    }
    let mut exact = Vec::new();
    let mut patterns = Vec::new();
    for (j, origin) in list.iter().enumerate() {
        let origin = origin.to_ascii_lowercase();
        let Some((scheme, rest)) = origin.split_once("://") else {
            problems.add(
                format!("{path}[{j}]"),
                format!("{origin:?} is not an origin (write https://app.example.com)"),
            );
            continue;
        };
        let bad = scheme.is_empty()
            || rest.is_empty()
            || rest.contains(['/', '?', '#', ' '])
            || rest[1..].contains('*');
        if bad {
            problems.add(
                format!("{path}[{j}]"),
                format!(
                    "{origin:?} is not an origin: scheme://host[:port], no path; a wildcard only as \
                     https://*.example.com"
                ),
            );
            continue;
        }
        match rest.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() => {
                patterns.push((format!("{scheme}://").into(), format!(".{suffix}").into()))
            }
            Some(_) => problems.add(format!("{path}[{j}]"), "a wildcard needs a domain after it"),
            None if rest.starts_with('*') => problems.add(
                format!("{path}[{j}]"),
                "a wildcard must be a whole label: https://*.example.com",
            ),
            None => exact.push(origin.into()),
        }
    }
    Some(Origins::List {
        exact: exact.into(),
        patterns: patterns.into(),
    })
}

fn header_names(key: &str, list: &[String], problems: &mut Problems<'_>) -> Vec<HeaderName> {
    list.iter()
        .enumerate()
        .filter_map(|(j, text)| match HeaderName::try_from(text.as_str()) {
            Ok(name) => Some(name),
            Err(_) => {
                problems.add(
                    format!("{key}[{j}]"),
                    format!("{text:?} is not a header name"),
                );
                None
            }
        })
        .collect()
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let text = items.collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(super) fn compile_trusted(list: &[String], problems: &mut Problems<'_>) -> TrustedProxies {
    let mut nets = Vec::with_capacity(list.len());
    for (j, text) in list.iter().enumerate() {
        match TrustedProxies::parse_net(text) {
            Ok(net) => nets.push(net),
            Err(problem) => problems.add(format!("trusted_proxies[{j}]"), problem),
        }
    }
    TrustedProxies::new(nets)
}

pub(super) fn compile_rate_limit(
    key: &str,
    limit: RateLimitFile,
    has_auth: bool,
    problems: &mut Problems<'_>,
) -> Option<RateLimit> {
    let RateLimitFile {
        requests,
        per,
        burst,
        key: limit_key,
        max_keys,
    } = limit;
    let path = |field: &str| format!("{key}.rate_limit.{field}");
    let before = problems.list.len();
    let requests = NonZeroU32::new(requests);
    if requests.is_none() {
        problems.add(path("requests"), "must be at least 1");
    }
    if per.0.is_zero() {
        problems.add(path("per"), "must be greater than zero");
    }
    let burst = match burst.map(NonZeroU32::new) {
        None => requests,
        Some(Some(burst)) => Some(burst),
        Some(None) => {
            problems.add(path("burst"), "must be at least 1");
            None
        }
    };
    let limit_key = match limit_key.as_deref().map(str::trim) {
        None | Some("ip") => Some(LimitKey::ClientIp),
        Some("route") => Some(LimitKey::Route),
        Some(text) => match text.split_once(':') {
            Some(("header", name)) => match HeaderName::try_from(name.trim()) {
                Ok(name) => Some(LimitKey::Header(name)),
                Err(_) => {
                    problems.add(path("key"), format!("{name:?} is not a header name"));
                    None
                }
            },
            // Claims come from a verified token: a route without `auth` has none.
            Some(("claim", _)) if !has_auth => {
                problems.add(
                    path("key"),
                    "a claim key needs the route to verify a token (auth), and this route has none",
                );
                None
            }
            Some(("claim", name)) if !name.trim().is_empty() => {
                Some(LimitKey::Claim(name.trim().into()))
            }
            _ => {
                problems.add(
                    path("key"),
                    format!("{text:?} is not one of ip, header:NAME, claim:NAME, route"),
                );
                None
            }
        },
    };
    let max_keys = max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 {
        problems.add(path("max_keys"), "must be at least 1");
    }
    let (Some(requests), Some(burst), Some(limit_key)) = (requests, burst, limit_key) else {
        return None;
    };
    if problems.list.len() != before {
        return None;
    }
    let limit = RateLimit::new(requests, per.0, burst, limit_key, max_keys);
    if limit.is_none() {
        problems.add(path("per"), "is too short for that many requests");
    }
    limit
}

/// Default longest wait for the shared store on a request.
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);

/// `rate_limit_store`: `memory`, or Redis with its timeout and failure policy.
pub(super) fn compile_store(
    store: serde_yaml_ng::Value,
    problems: &mut Problems<'_>,
) -> Option<Arc<SharedStore>> {
    const KEY: &str = "rate_limit_store";
    if store.as_str() == Some("memory") {
        return None;
    }
    let file: RedisStoreFile = match serde_yaml_ng::from_value(store) {
        Ok(file) => file,
        Err(error) => {
            problems.add(
                KEY,
                format!("must be `memory` or {{url, timeout, on_error}}: {error}"),
            );
            return None;
        }
    };
    let before = problems.list.len();
    let on_error = match file.on_error.as_deref() {
        None | Some("allow") => OnError::Allow,
        Some("deny") => OnError::Deny,
        Some("local") => OnError::Local,
        Some(other) => {
            problems.add(
                format!("{KEY}.on_error"),
                format!("{other:?} is not one of allow, deny, local"),
            );
            OnError::Allow
        }
    };
    let timeout = super::positive(
        problems,
        format!("{KEY}.timeout"),
        file.timeout,
        DEFAULT_STORE_TIMEOUT,
    );
    if !file.url.starts_with("redis://") {
        problems.add(
            format!("{KEY}.url"),
            format!("{:?} must be a redis:// URL", file.url),
        );
        return None;
    }
    let store = match SharedStore::new(&file.url, timeout, on_error) {
        Ok(store) => store,
        Err(error) => {
            problems.add(format!("{KEY}.url"), error);
            return None;
        }
    };
    (problems.list.len() == before).then(|| Arc::new(store))
}
