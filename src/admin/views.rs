//! The admin plane's JSON documents, built from the current snapshot.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::{Backend, Excluded, Source};
use crate::path::rewrite::PrefixRewrite;
use crate::router::{HostMatch, PathMatch, Route};
use crate::snapshot::Snapshot;

/// `GET /routes`: the table in precedence order.
#[derive(Debug, Serialize)]
pub struct RoutesView<'a> {
    pub version: u64,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
    pub routes: Vec<RouteView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct RouteView<'a> {
    pub name: &'a str,
    pub host: String,
    pub path_prefix: &'a str,
    pub path_match: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<&'a str, String>,
    pub backend: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// The edge policy's parts that are on: `cors`, `auth:<provider>`, …
    pub policy: Vec<String>,
    pub timeout_ms: u128,
}

impl<'a> RoutesView<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            version: snapshot.version,
            loaded_at: snapshot
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            routes: snapshot
                .router
                .routes()
                .iter()
                .map(|route| RouteView::new(route, snapshot))
                .collect(),
        }
    }
}

impl<'a> RouteView<'a> {
    fn new(route: &'a Route, snapshot: &'a Snapshot) -> Self {
        let mut policy = Vec::new();
        if let Some(edge) = &route.policy {
            if edge.cors.is_some() {
                policy.push("cors".to_owned());
            }
            if let Some(auth) = &edge.auth {
                let optional = if auth.required { "" } else { " (optional)" };
                policy.push(format!("auth:{}{optional}", auth.provider.name));
            }
            if edge.rate_limit.is_some() {
                policy.push("rate_limit".to_owned());
            }
            if edge.request_headers.is_some() {
                policy.push("request_headers".to_owned());
            }
            if edge.response_headers.is_some() {
                policy.push("response_headers".to_owned());
            }
        }
        Self {
            name: &route.name,
            host: match &route.host {
                HostMatch::Exact(host) => host.to_string(),
                HostMatch::Wildcard(suffix) => format!("*{suffix}"),
                HostMatch::Any => "*".to_owned(),
            },
            path_prefix: &route.prefix,
            path_match: match route.path_match {
                PathMatch::Prefix => "prefix",
                PathMatch::Segment => "segment",
            },
            methods: route
                .methods
                .as_ref()
                .map(|set| set.iter().map(http::Method::as_str).collect()),
            headers: route
                .headers
                .iter()
                .map(|c| {
                    (
                        c.name.as_str(),
                        String::from_utf8_lossy(c.value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            backend: &snapshot.backends[route.backend].name,
            rewrite: route.rewrite.as_ref().map(|rewrite| match rewrite {
                PrefixRewrite::Strip => "strip_prefix".to_owned(),
                PrefixRewrite::Replace(to) => format!("rewrite_prefix {to}"),
            }),
            policy,
            timeout_ms: route.timeout.as_millis(),
        }
    }
}

/// `GET /backends`: every backend with its endpoints and their state.
#[derive(Debug, Serialize)]
pub struct BackendsView<'a> {
    pub backends: Vec<BackendView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct BackendView<'a> {
    pub name: &'a str,
    /// `docker` (with its labels) or `static`.
    pub source: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_labels: Vec<String>,
    /// Discovery has listed the containers at least once.
    pub listed: bool,
    pub endpoints: Vec<EndpointView>,
    /// Containers that are not routed to, and why: the first label but not
    /// all the others (refreshed at each resync), not ready, or no usable
    /// address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Excluded>,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub address: String,
    /// The container id (or `static:<address>`) and name.
    pub id: String,
    pub name: String,
    /// The Docker host the container runs on (absent for static servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub healthy: bool,
    pub ejected: bool,
    pub breaker: &'static str,
    pub in_flight: u32,
}

impl<'a> BackendsView<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            backends: snapshot
                .backends
                .iter()
                .map(|b| BackendView::new(b))
                .collect(),
        }
    }
}

impl<'a> BackendView<'a> {
    fn new(backend: &'a Backend) -> Self {
        let (source, match_labels) = match &backend.source {
            Source::Docker(selector) => (
                "docker",
                selector
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect(),
            ),
            Source::Static => ("static", Vec::new()),
        };
        Self {
            name: &backend.name,
            source,
            match_labels,
            listed: backend.listed(),
            excluded: backend.excluded(),
            endpoints: backend
                .endpoints()
                .endpoints()
                .iter()
                .map(|endpoint| EndpointView {
                    address: endpoint.addr.to_string(),
                    id: endpoint.id.to_string(),
                    name: endpoint.name.to_string(),
                    host: endpoint.host.as_deref().map(str::to_owned),
                    healthy: endpoint.healthy(),
                    ejected: endpoint.ejected(),
                    breaker: endpoint.breaker_phase(),
                    in_flight: endpoint.in_flight(),
                })
                .collect(),
        }
    }
}
