//! The immutable runtime configuration every request reads exactly once.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;

use crate::backend::Backend;
use crate::router::Router;

/// Everything compiled from one config file that the request path needs.
/// Replaced whole on reload; in-flight requests keep the one they loaded.
#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    /// Backends by index; routes refer to them by position.
    pub backends: Vec<Arc<Backend>>,
    pub default_response: DefaultResponse,
}

impl Snapshot {
    /// Carries state across a reload: each backend that continues one of
    /// `previous`'s keeps its endpoints (and so discovery's containers, their
    /// health and breaker state, and their pooled connections, which are keyed
    /// by address). Returns how many backends carried over.
    pub fn carry_over(&mut self, previous: &Snapshot) -> usize {
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
}

/// The answer when no route matches.
#[derive(Debug, Clone)]
pub struct DefaultResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Default for DefaultResponse {
    fn default() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: Bytes::from_static(br#"{"error":"no_route"}"#),
        }
    }
}

/// The single atomically swapped pointer to the current snapshot.
pub type SnapshotHandle = ArcSwap<Snapshot>;
