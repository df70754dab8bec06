//! Endpoints (one reachable address of a backend) and immutable endpoint sets.

use std::net::SocketAddr;
use std::sync::Arc;

/// One place a backend's requests can go: a container or a static server.
///
/// Endpoints are shared (`Arc`) across endpoint-set snapshots, so per-endpoint
/// state added later (health, breaker) survives membership changes.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Stable identity: the container id, or `static:<addr>`.
    pub id: Box<str>,
    /// Human name for logs: the container name, or the address.
    pub name: Box<str>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, id: impl Into<Box<str>>, name: impl Into<Box<str>>) -> Self {
        Self {
            addr,
            id: id.into(),
            name: name.into(),
        }
    }
}

/// An immutable snapshot of a backend's endpoints, replaced whole on change.
#[derive(Debug, Default)]
pub struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
}

impl EndpointSet {
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        Self { endpoints }
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}
