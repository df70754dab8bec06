//! Backends: named sets of endpoints, fed by discovery, read by the request path.

pub mod balance;
pub mod breaker;
pub mod endpoint;
pub mod health;
pub mod outlier;
pub mod shares;

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use self::balance::{Balance, Balancer};
use self::breaker::{BackendCircuit, Breaker};
use self::endpoint::EndpointSet;
use self::health::HealthCheck;
use self::outlier::Outlier;

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
    /// Passive ejection of failing endpoints, when configured.
    pub outlier: Option<Outlier>,
    /// Per-endpoint circuit breaking, when configured.
    pub breaker: Option<Breaker>,
    /// A circuit breaker over the whole backend, when configured.
    pub circuit: Option<BackendCircuit>,
    /// Active HTTP health checking, when configured.
    pub health_check: Option<HealthCheck>,
    /// Bulkhead: requests allowed in flight at once; excess ones are refused.
    max_in_flight: Option<u32>,
    in_flight: AtomicU32,
    /// Shared with this backend's predecessors and successors across reloads
    /// that keep its name and source, so discovery's updates reach whichever
    /// one is current.
    endpoints: Arc<ArcSwap<EndpointSet>>,
    /// Shared the same way: set once discovery has listed the containers.
    listed: Arc<std::sync::atomic::AtomicBool>,
    /// Upstream requests, connections and retries, per worker; shared the same way.
    pub metrics: Arc<crate::observe::metrics::BackendMetrics>,
    /// Each Docker host's containers, in rotation or kept out (with why);
    /// shared the same way. Written by discovery, read by the admin plane,
    /// never by requests.
    shares: Arc<std::sync::Mutex<shares::Shares>>,
}

/// A container that is not routed to, and why ("why is my container not routed?").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Excluded {
    pub id: String,
    pub name: String,
    pub reason: String,
}

impl Backend {
    pub fn new(name: &str, source: Source, balance: Balance, initial: EndpointSet) -> Self {
        Self {
            name: name.into(),
            source,
            balancer: Balancer::new(balance),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            outlier: None,
            breaker: None,
            circuit: None,
            health_check: None,
            max_in_flight: None,
            in_flight: AtomicU32::new(0),
            endpoints: Arc::new(ArcSwap::from_pointee(initial)),
            listed: Arc::default(),
            metrics: Arc::default(),
            shares: Arc::default(),
        }
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn with_outlier(mut self, outlier: Option<Outlier>) -> Self {
        self.outlier = outlier;
        self
    }

    pub fn with_health_check(mut self, check: Option<HealthCheck>) -> Self {
        self.health_check = check;
        self
    }

    pub fn with_breaker(mut self, breaker: Option<Breaker>) -> Self {
        self.breaker = breaker;
        self
    }

    pub fn with_circuit(mut self, breaker: Option<Breaker>) -> Self {
        self.circuit = breaker.map(BackendCircuit::new);
        self
    }

    pub fn with_max_in_flight(mut self, max: Option<u32>) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Admits a request under the bulkhead, or refuses it at once: a saturated
    /// backend must not queue work or hold connections that others need.
    /// `Ok(None)` when the backend has no bulkhead (nothing is counted).
    pub fn admit(self: &Arc<Self>) -> Result<Option<Admission>, Saturated> {
        let Some(max) = self.max_in_flight else {
            return Ok(None);
        };
        if self.in_flight.fetch_add(1, Relaxed) >= max {
            self.in_flight.fetch_sub(1, Relaxed);
            return Err(Saturated);
        }
        Ok(Some(Admission(self.clone())))
    }

    /// The current endpoint set (a cheap guard; do not hold it across an await).
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// Whether a reload may hand `previous`'s endpoints (and with them their
    /// health, ejection and breaker state) to this backend: same name, same
    /// source, and for static backends the same addresses and weights.
    pub fn continues(&self, previous: &Backend) -> bool {
        if self.name != previous.name || self.source != previous.source {
            return false;
        }
        match self.source {
            Source::Docker(_) => true,
            Source::Static => {
                let key = |set: &EndpointSet| -> Vec<_> {
                    set.endpoints().iter().map(|e| (e.addr, e.weight)).collect()
                };
                key(&self.endpoints()) == key(&previous.endpoints())
            }
        }
    }

    /// Takes over `previous`'s endpoint set for good (see [`Backend::continues`]).
    pub fn adopt_endpoints(&mut self, previous: &Backend) {
        self.endpoints = previous.endpoints.clone();
        self.listed = previous.listed.clone();
        self.metrics = previous.metrics.clone();
        self.shares = previous.shares.clone();
    }

    /// Discovery has listed this backend's containers at least once (always
    /// true for static servers): until then an empty set means "not yet
    /// known", not "no containers".
    pub fn listed(&self) -> bool {
        matches!(self.source, Source::Static)
            || self.listed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The containers discovery keeps out of this backend, with the reason.
    pub fn excluded(&self) -> Vec<Excluded> {
        self.shares
            .lock()
            .map(|shares| shares.excluded())
            .unwrap_or_default()
    }

    /// Discovery's update of what Docker host `host` (of `hosts`)
    /// contributes; the endpoint set becomes the union over the hosts, and
    /// the backend counts as listed once every host has listed it.
    pub(crate) fn update_share(
        &self,
        host: usize,
        hosts: usize,
        update: impl FnOnce(&mut shares::HostShare),
    ) {
        let Ok(mut shares) = self.shares.lock() else {
            return;
        };
        update(shares.host(host));
        self.set_endpoints(EndpointSet::new(shares.endpoints()));
        if shares.all_listed(hosts) {
            self.listed
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Publishes a new endpoint set; requests already in flight keep the old one.
    pub fn set_endpoints(&self, set: EndpointSet) {
        self.endpoints.store(Arc::new(set));
    }
}

/// The bulkhead of a backend is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturated;

/// One request admitted under a backend's bulkhead, until dropped.
#[derive(Debug)]
pub struct Admission(Arc<Backend>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::endpoint::Endpoint;

    #[test]
    fn the_bulkhead_admits_up_to_its_limit_and_frees_slots_on_drop() {
        let backend = Arc::new(
            Backend::new("b", Source::Static, Balance::Random, EndpointSet::default())
                .with_max_in_flight(Some(2)),
        );
        let first = backend.admit().unwrap();
        let second = backend.admit().unwrap();
        assert_eq!(backend.admit().unwrap_err(), Saturated);
        drop(first);
        assert!(backend.admit().unwrap().is_some());
        drop(second);
        let unlimited = Arc::new(Backend::new(
            "u",
            Source::Static,
            Balance::Random,
            EndpointSet::default(),
        ));
        assert!(
            unlimited.admit().unwrap().is_none(),
            "no bulkhead, nothing counted"
        );
    }

    #[test]
    fn a_backend_continues_another_with_its_name_and_source() {
        let endpoint = |port: u16| {
            Arc::new(Endpoint::new(
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                port.to_string(),
                "e",
            ))
        };
        let fixed = |name: &str, ports: &[u16]| {
            let set = EndpointSet::new(ports.iter().map(|&p| endpoint(p)).collect());
            Backend::new(name, Source::Static, Balance::Random, set)
        };
        let docker = |name: &str, label: &str| {
            let selector = DockerSelector {
                labels: vec![("app".into(), label.into())],
                port: None,
            };
            Backend::new(
                name,
                Source::Docker(selector),
                Balance::Random,
                EndpointSet::default(),
            )
        };
        assert!(fixed("a", &[1, 2]).continues(&fixed("a", &[1, 2])));
        assert!(
            !fixed("a", &[1, 2]).continues(&fixed("a", &[1, 3])),
            "other servers"
        );
        assert!(!fixed("a", &[1]).continues(&fixed("b", &[1])), "other name");
        assert!(docker("a", "x").continues(&docker("a", "x")));
        assert!(
            !docker("a", "x").continues(&docker("a", "y")),
            "other labels"
        );
        assert!(
            !docker("a", "x").continues(&fixed("a", &[])),
            "other source"
        );

        let previous = docker("a", "x");
        previous.set_endpoints(EndpointSet::new(vec![endpoint(7)]));
        let mut next = docker("a", "x");
        next.adopt_endpoints(&previous);
        previous.set_endpoints(EndpointSet::new(vec![endpoint(8), endpoint(9)]));
        assert_eq!(
            next.endpoints().len(),
            2,
            "discovery's later updates reach the successor"
        );
    }
}
