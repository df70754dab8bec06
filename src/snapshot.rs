//! The immutable runtime configuration every request reads exactly once.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Provider;
use crate::backend::Backend;
use crate::policy::trusted::TrustedProxies;
pub use crate::response::DefaultResponse;
use crate::router::{Route, Router};

/// Everything compiled from one config file that the request path needs.
/// Replaced whole on reload; in-flight requests keep the one they loaded.
#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    /// Backends by index; routes refer to them by position.
    pub backends: Vec<Arc<Backend>>,
    pub default_response: DefaultResponse,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// JWT providers, whose keys the control thread keeps fresh.
    pub providers: Vec<Arc<Provider>>,
    /// 1 for the config rgate started with, one more for each reload.
    pub version: u64,
    pub loaded_at: std::time::SystemTime,
}

impl Snapshot {
    /// Carries state across a reload: each backend that continues one of
    /// `previous`'s keeps its endpoints (and so discovery's containers, their
    /// health and breaker state, and their pooled connections, which are keyed
    /// by address), and each route its per-route state (see
    /// `carry_over_routes`). Returns how many backends carried over.
    pub fn carry_over(&mut self, previous: &Snapshot) -> usize {
        self.version = previous.version + 1;
        self.carry_over_routes(previous);
        // Fetched keys, where the provider verifies as before: a reload
        // must not open a window without keys.
        for provider in &self.providers {
            let old = previous
                .providers
                .iter()
                .find(|old| old.name == provider.name && old.fingerprint == provider.fingerprint);
            if let (Some(old), None) = (old, provider.keys()) {
                provider.set_keys(old.keys());
            }
        }
        let mut carried = 0;
        for backend in &mut self.backends {
            let Some(old) = previous.backends.iter().find(|old| backend.continues(old)) else {
                continue;
            };
            // Freshly compiled backends are not shared yet.
            if let Some(backend) = Arc::get_mut(backend) {
                backend.adopt_endpoints(old);
                carried += 1;
            }
        }
        carried
    }

    /// Carries per-route state across a reload: a route whose id (its name,
    /// else its matching keys) was in `previous` keeps the retry budget and
    /// the rate-limit buckets it had, unless their settings changed.
    fn carry_over_routes(&mut self, previous: &Snapshot) {
        let old: std::collections::HashMap<&str, &Route> = previous
            .router
            .routes()
            .iter()
            .map(|route| (&*route.id, route))
            .collect();
        for route in self.router.routes_mut() {
            let Some(old) = old.get(&*route.id) else {
                continue;
            };
            route.metrics = old.metrics.clone();
            if old.retry.budget.ratio_milli() == route.retry.budget.ratio_milli() {
                route.retry.budget = old.retry.budget.clone();
            }
            // Rate limit buckets, where the limit is the same: a reload
            // must not hand every client a fresh burst.
            let old_limit = old.policy.as_ref().and_then(|p| p.rate_limit.as_ref());
            let new_limit = route.policy.as_mut().and_then(|p| p.rate_limit.as_mut());
            if let (Some(old_limit), Some(new_limit)) = (old_limit, new_limit) {
                if old_limit.same_limit(new_limit) {
                    *new_limit = old_limit.clone();
                }
            }
        }
    }
}

/// The single atomically swapped pointer to the current snapshot.
pub type SnapshotHandle = ArcSwap<Snapshot>;

/// Every rate limit in a snapshot, for the sweep of idle keys.
pub fn rate_limits(
    snapshot: &Snapshot,
) -> impl Iterator<Item = &Arc<crate::policy::rate_limit::RateLimit>> {
    snapshot
        .router
        .routes()
        .iter()
        .filter_map(|route| route.policy.as_ref()?.rate_limit.as_ref())
}
