//! Backends: named sets of endpoints, fed by discovery, read by the request path.

pub mod balance;
pub mod endpoint;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use self::balance::{Balance, Balancer};
use self::endpoint::EndpointSet;

/// How long rgate waits to open a connection to an endpoint before calling
/// it down, when the config sets no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a backend's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Running containers carrying every label in `labels`.
    Docker(DockerSelector),
    /// Fixed addresses from the config file.
    Static,
}

/// The Docker side of a backend: which containers belong, and which port to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSelector {
    /// `(key, value)` pairs; a container must carry all of them.
    pub labels: Vec<(String, String)>,
    /// The backend's `port:` key, used when the container has no `rgate.port` label.
    pub port: Option<u16>,
}

/// A named backend. Long-lived: its endpoint set is swapped atomically by
/// discovery while requests read it without locking.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub source: Source,
    pub balancer: Balancer,
    pub connect_timeout: Duration,
    endpoints: ArcSwap<EndpointSet>,
}

impl Backend {
    pub fn new(name: &str, source: Source, balance: Balance, initial: EndpointSet) -> Self {
        Self {
            name: name.into(),
            source,
            balancer: Balancer::new(balance),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            endpoints: ArcSwap::from_pointee(initial),
        }
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The current endpoint set (a cheap guard; do not hold it across an await).
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// Publishes a new endpoint set; requests already in flight keep the old one.
    pub fn set_endpoints(&self, set: EndpointSet) {
        self.endpoints.store(Arc::new(set));
    }
}
