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
