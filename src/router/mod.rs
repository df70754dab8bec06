//! The compiled route table: which route, if any, takes a request.
//!
//! Precedence, from the first rule to the last (each decides only between
//! routes the previous ones left tied):
//!
//! 1. host: an exact `host` over a `*.example.com` wildcard (the longest
//!    suffix first) over a route without `host`;
//! 2. the longest `path_prefix`;
//! 3. a route with `methods` over one without;
//! 4. more `headers` conditions over fewer.
//!
//! A request takes the first route that matches it in full, so a request
//! whose method the longest prefix does not allow falls back to a shorter
//! prefix, and then to `default_response`. Two routes that the rules leave
//! tied and that can match the same request are refused at load.
//!
//! Lookup never scans the table: a hash map finds the host's table, and a
//! radix tree over prefixes walks the path once (`prefix.rs`), so 500 routes
//! cost about what 5 do. Pure and synchronous, so it is unit-tested and
//! benchmarked directly. Paths reaching [`Router::find`] are already
//! normalised (see `path::normalize`).

mod conditions;
mod host;
mod prefix;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use rustc_hash::FxHashMap;

pub use self::conditions::HeaderCondition;
pub use self::host::{request_host, HostMatch, MAX_HOST};
use self::prefix::PrefixTable;
pub use crate::methods::MethodSet;
use crate::path::rewrite::PrefixRewrite;
use crate::policy::retry::RetryPolicy;
use crate::policy::EdgePolicy;

/// The path rgate answers itself on the main port; routes may not claim it.
pub const RESERVED_PATH: &str = "/stats";

/// A route's timeout when the config sets none: generous, for slow APIs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a response body may stall between frames when the config sets none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a route's prefix is compared with a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// `path.starts_with(prefix)`: the contract's literal reading, so `/api/pay`
    /// also matches `/api/payments`.
    Prefix,
    /// Whole segments only: `/api/pay` matches `/api/pay` and `/api/pay/…`.
    Segment,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Stable across reloads: the `name`, else the matching keys. Per-route
    /// state (the retry budget) follows it from one snapshot to the next.
    pub id: Arc<str>,
    /// For logs, metrics and `/routes`: the `name`, else the path prefix.
    pub name: Arc<str>,
    /// Index in the file's `routes` list, for messages.
    pub index: usize,
    pub host: HostMatch,
    pub prefix: Box<str>,
    pub path_match: PathMatch,
    pub methods: Option<MethodSet>,
    pub headers: Box<[HeaderCondition]>,
    /// Index into the snapshot's backend list.
    pub backend: usize,
    /// Limit for the upstream's response head, from the request's arrival.
    pub timeout: Duration,
    /// Limit for a pause between two frames of the upstream's response body.
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest request body accepted, in bytes; `None` streams any size.
    pub max_body: Option<u64>,
    /// `strip_prefix` / `rewrite_prefix`.
    pub rewrite: Option<PrefixRewrite>,
    /// CORS and header rules; `None` (one pointer test) when the route has none.
    pub policy: Option<Box<EdgePolicy>>,
    /// The route's counters; shared with the route of the same id in the
    /// next snapshot, so they only grow.
    pub metrics: Arc<crate::observe::metrics::RouteMetrics>,
}

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Normalised.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// Lower case, without port (see [`request_host`]).
    pub host: Option<&'a str>,
    /// For a CORS preflight, the method the browser asks to use: a route
    /// with `cors` is matched as if the request used it.
    pub preflight: Option<&'a Method>,
}

impl Route {
    fn matches_path(&self, path: &str) -> bool {
        // The prefix table found `prefix` at the start of `path`.
        match self.path_match {
            PathMatch::Prefix => true,
            PathMatch::Segment => {
                self.prefix.ends_with('/')
                    || path.len() == self.prefix.len()
                    || path.as_bytes()[self.prefix.len()] == b'/'
            }
        }
    }

    /// `any_preflight`: a CORS route takes a preflight whatever method it
    /// asks for (its CORS policy then answers it, refusing what it must).
    fn matches_rest(&self, request: &RouteRequest<'_>, any_preflight: bool) -> bool {
        if let Some(methods) = &self.methods {
            let method = match request.preflight {
                Some(_) if any_preflight && self.has_cors() => None,
                Some(asked) if self.has_cors() => Some(asked),
                _ => Some(request.method),
            };
            if method.is_some_and(|method| !methods.contains(method)) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|condition| condition.matches(request.headers))
    }

    fn has_cors(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.cors.is_some())
    }

    /// The precedence rank among routes of one host and prefix: higher first.
    fn rank(&self) -> (bool, usize) {
        (self.methods.is_some(), self.headers.len())
    }

    /// Whether some request could match both routes (same host and prefix assumed).
    fn overlaps(&self, other: &Route) -> bool {
        let methods = match (&self.methods, &other.methods) {
            (Some(a), Some(b)) => a.intersects(b),
            _ => true,
        };
        methods && conditions::compatible(&self.headers, &other.headers)
    }
}

/// Two routes the precedence rules cannot tell apart: refused at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tie {
    /// `routes[i]` indices, the earlier first.
    pub first: usize,
    pub second: usize,
}

/// Routes by host, then by prefix.
#[derive(Debug, Default)]
pub struct Router {
    /// In precedence order, for listing; the tables hold indices into it.
    routes: Vec<Route>,
    any_host: PrefixTable,
    exact: FxHashMap<Box<str>, PrefixTable>,
    /// Keyed by the suffix with its dot: `*.example.com` → `.example.com`.
    wildcard: FxHashMap<Box<str>, PrefixTable>,
}

impl Router {
    /// Builds the table, or names the routes that tie.
    pub fn new(mut routes: Vec<Route>) -> Result<Self, Vec<Tie>> {
        // Precedence order: host kind, then longest prefix, then rank; the
        // file's order only among routes that cannot match the same request.
        routes.sort_by(|a, b| {
            a.host
                .cmp(&b.host)
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(a.prefix.cmp(&b.prefix))
                .then(b.rank().cmp(&a.rank()))
                .then(a.index.cmp(&b.index))
        });
        let mut ties = Vec::new();
        for (i, a) in routes.iter().enumerate() {
            for b in routes[i + 1..]
                .iter()
                .take_while(|b| b.host == a.host && b.prefix == a.prefix && b.rank() == a.rank())
            {
                if a.overlaps(b) {
                    ties.push(Tie {
                        first: a.index.min(b.index),
                        second: a.index.max(b.index),
                    });
                }
            }
        }
        if !ties.is_empty() {
            return Err(ties);
        }
        let mut router = Router::default();
        for (i, route) in routes.iter().enumerate() {
            let table = match &route.host {
                HostMatch::Any => &mut router.any_host,
                HostMatch::Exact(host) => router.exact.entry(host.clone()).or_default(),
                HostMatch::Wildcard(suffix) => router.wildcard.entry(suffix.clone()).or_default(),
            };
            // Routes arrive in precedence order, so each prefix's list is too.
            table.insert(&route.prefix, i as u32);
        }
        router.routes = routes;
        Ok(router)
    }

    /// The route that takes `request`, if any, with its index in [`Router::routes`].
    ///
    /// A CORS preflight is matched as the request it announces (its
    /// requested method), so that routes split by method each answer their
    /// own; failing that, by a CORS route that does not take the method, so
    /// that rgate, not the default response, refuses it.
    pub fn find(&self, request: &RouteRequest<'_>) -> Option<(usize, &Route)> {
        let found = self.find_with(request, false);
        if found.is_none() && request.preflight.is_some() {
            return self.find_with(request, true);
        }
        found
    }

    fn find_with(
        &self,
        request: &RouteRequest<'_>,
        any_preflight: bool,
    ) -> Option<(usize, &Route)> {
        let search = |table| self.search(table, request, any_preflight);
        if let Some(host) = request.host {
            if let Some(found) = self.exact.get(host).and_then(search) {
                return Some(found);
            }
            if !self.wildcard.is_empty() {
                // Longest suffix first: each dot starts a shorter one.
                for (at, _) in host.match_indices('.') {
                    let found = self.wildcard.get(&host[at..]).and_then(search);
                    if found.is_some() {
                        return found;
                    }
                }
            }
        }
        search(&self.any_host)
    }

    fn search(
        &self,
        table: &PrefixTable,
        request: &RouteRequest<'_>,
        any_preflight: bool,
    ) -> Option<(usize, &Route)> {
        table.longest_first(request.path, |candidates| {
            candidates
                .iter()
                .map(|&i| (i as usize, &self.routes[i as usize]))
                .find(|(_, route)| {
                    route.matches_path(request.path) && route.matches_rest(request, any_preflight)
                })
        })
    }

    /// The route a plain `GET` of `path` with no host or headers takes.
    pub fn find_path(&self, path: &str) -> Option<&Route> {
        self.find(&RouteRequest {
            path,
            method: &Method::GET,
            headers: &HeaderMap::new(),
            host: None,
            preflight: None,
        })
        .map(|(_, route)| route)
    }

    /// Whether any route names a host: if none does, the Host is not read.
    pub fn uses_hosts(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// Routes in precedence order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub(crate) fn routes_mut(&mut self) -> &mut [Route] {
        &mut self.routes
    }
}

#[cfg(test)]
mod tests;
