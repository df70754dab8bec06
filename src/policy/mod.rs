//! Per-route policies compiled from the config and applied on the request
//! path: retries, and the edge policy that acts on a routed request before
//! it is forwarded and on its answer after.

pub mod cors;
pub mod decision;
pub mod header_rules;
pub mod rate_limit;
pub mod retry;
pub mod shared_limit;
pub mod trusted;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use self::cors::Cors;
use self::decision::Decision;
use self::header_rules::{HeaderRules, Vars};
use self::rate_limit::RateLimit;
use crate::auth::RouteAuth;

/// A route's edge policy: a closed set of optional parts, each compiled
/// once at load. A route without any has none at all (one pointer test per
/// request), and a part that is off is a `None` that costs nothing.
///
/// Order on the request path: CORS preflight (may answer) → auth (may
/// answer 401, 403 or 503) → rate limit (may answer 429; may key on a
/// verified claim) → identity fields → request header rules → forward → response header rules →
/// `RateLimit-*` and CORS response fields (also on rgate's own answers for
/// the route, such as a 503 or a 429).
#[derive(Debug, Clone, Default)]
pub struct EdgePolicy {
    pub cors: Option<Cors>,
    pub auth: Option<RouteAuth>,
    /// Shared with the route of the same id in the next snapshot, so its
    /// buckets survive a reload, and with the sweep of idle keys.
    pub rate_limit: Option<Arc<RateLimit>>,
    pub request_headers: Option<HeaderRules>,
    pub response_headers: Option<HeaderRules>,
}

impl EdgePolicy {
    /// `None` when no part is on: the route then carries no policy.
    pub fn boxed(self) -> Option<Box<EdgePolicy>> {
        let any = self.cors.is_some()
            || self.auth.is_some()
            || self.rate_limit.is_some()
            || self.request_headers.is_some()
            || self.response_headers.is_some();
        any.then(|| Box::new(self))
    }
}

impl EdgePolicy {
    /// The answer's part of the policy, on the upstream's answer and on
    /// rgate's own alike: response header rules, then the CORS fields (so a
    /// rule cannot undo what CORS decided). `origin` is the request's;
    /// `limited` the rate limit's decision, when the route has one.
    pub fn respond(
        &self,
        headers: &mut HeaderMap,
        origin: Option<&HeaderValue>,
        limited: Option<Decision>,
        vars: &Vars<'_>,
    ) {
        if let Some(rules) = &self.response_headers {
            rules.apply(headers, vars);
        }
        if let (Some(limit), Some(decision)) = (&self.rate_limit, limited) {
            limit.headers(decision, headers);
        }
        if let Some(cors) = &self.cors {
            cors.respond(origin, headers);
        }
    }
}
