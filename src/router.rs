//! The compiled route table: longest `path_prefix` wins.
//!
//! Pure and synchronous: no sockets, so it is unit-tested and benchmarked directly.
//! Paths reaching [`Router::find`] are already normalised (see `path::normalize`).

use std::time::Duration;

use crate::policy::retry::RetryPolicy;

/// A route's timeout when the config sets none: generous, for slow APIs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a response body may stall between frames when the config sets none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The path rgate answers itself on the main port; routes may not claim it.
pub const RESERVED_PATH: &str = "/stats";

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
    pub prefix: Box<str>,
    pub path_match: PathMatch,
    /// Index into the snapshot's backend list.
    pub backend: usize,
    /// Limit for the upstream's response head, from the request's arrival.
    pub timeout: Duration,
    /// Limit for a pause between two frames of the upstream's response body.
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest request body accepted, in bytes; `None` streams any size.
    pub max_body: Option<u64>,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        if !path.starts_with(&*self.prefix) {
            return false;
        }
        match self.path_match {
            PathMatch::Prefix => true,
            PathMatch::Segment => {
                self.prefix.ends_with('/')
                    || path.len() == self.prefix.len()
                    || path.as_bytes()[self.prefix.len()] == b'/'
            }
        }
    }
}

/// Routes ordered longest prefix first, so the first match is the most specific.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the table. Prefixes are unique (validation refuses duplicates), so
    /// the order among equal lengths never decides a match.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Self { routes }
    }

    /// The most specific route whose prefix matches `path`.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(path))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, path_match: PathMatch, backend: usize) -> Route {
        Route {
            prefix: prefix.into(),
            path_match,
            backend,
            timeout: DEFAULT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            retry: RetryPolicy::default(),
            max_body: None,
        }
    }

    fn router() -> Router {
        Router::new(vec![
            route("/api", PathMatch::Prefix, 0),
            route("/api/payment", PathMatch::Prefix, 1),
            route("/api/orders", PathMatch::Segment, 2),
        ])
    }

    fn backend_for(router: &Router, path: &str) -> Option<usize> {
        router.find(path).map(|r| r.backend)
    }

    #[test]
    fn longest_prefix_wins_whatever_the_declaration_order() {
        let r = router();
        assert_eq!(backend_for(&r, "/api/payment/charge"), Some(1));
        assert_eq!(backend_for(&r, "/api/other"), Some(0));
        let reversed = Router::new(vec![
            route("/api/payment", PathMatch::Prefix, 1),
            route("/api", PathMatch::Prefix, 0),
        ]);
        assert_eq!(backend_for(&reversed, "/api/payment"), Some(1));
    }

    #[test]
    fn literal_prefix_matches_inside_a_segment() {
        // The contract says "starts with": /api/payment also takes /api/paymentsX.
        assert_eq!(backend_for(&router(), "/api/paymentsX"), Some(1));
    }

    #[test]
    fn segment_match_needs_a_whole_segment() {
        let r = router();
        assert_eq!(backend_for(&r, "/api/orders"), Some(2));
        assert_eq!(backend_for(&r, "/api/orders/7"), Some(2));
        // Falls back to the shorter literal /api route instead.
        assert_eq!(backend_for(&r, "/api/ordersX"), Some(0));
        let slash = Router::new(vec![route("/v1/", PathMatch::Segment, 3)]);
        assert_eq!(backend_for(&slash, "/v1/x"), Some(3));
        assert_eq!(backend_for(&slash, "/v1"), None);
    }

    #[test]
    fn no_match_is_none() {
        assert_eq!(backend_for(&router(), "/other"), None);
        assert_eq!(backend_for(&router(), "/ap"), None);
        assert_eq!(backend_for(&Router::default(), "/"), None);
    }
}
