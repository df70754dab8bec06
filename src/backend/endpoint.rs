//! Endpoints (one reachable address of a backend) and immutable endpoint sets.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::breaker::BreakerState;

/// Largest accepted weight: keeps the weighted schedule small.
pub const MAX_WEIGHT: u32 = 100;
/// Points per endpoint on the consistent-hash ring: enough for an even
/// spread over a handful of endpoints, small enough to rebuild on every change.
const RING_POINTS_PER_ENDPOINT: usize = 128;

/// One place a backend's requests can go: a container or a static server.
///
/// Endpoints are shared (`Arc`) across endpoint-set snapshots, so per-endpoint
/// state (the in-flight count, later health and breaker state) survives
/// membership changes.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Stable identity: the container id, or `static:<addr>`.
    pub id: Box<str>,
    /// Human name for logs: the container name, or the address.
    pub name: Box<str>,
    /// The Docker host the container runs on (`None` for static servers).
    pub host: Option<Arc<str>>,
    /// Relative share of traffic under `weighted` balancing (1..=MAX_WEIGHT).
    pub weight: u32,
    in_flight: AtomicU32,
    /// Failures in a row (passive outlier detection).
    pub(crate) failures: AtomicU32,
    /// Out of rotation until this `clock::now_millis()` time; 0 = never ejected.
    pub(crate) ejected_until: AtomicU64,
    pub(crate) breaker: BreakerState,
    /// The active health check's verdict (true without a health check).
    healthy: AtomicBool,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, id: impl Into<Box<str>>, name: impl Into<Box<str>>) -> Self {
        Self {
            addr,
            id: id.into(),
            name: name.into(),
            host: None,
            weight: 1,
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            breaker: BreakerState::default(),
            healthy: AtomicBool::new(true),
        }
    }

    pub fn with_host(mut self, host: Arc<str>) -> Self {
        self.host = Some(host);
        self
    }

    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.clamp(1, MAX_WEIGHT);
        self
    }

    /// Starts out of rotation until the health check passes it (`wait_healthy`).
    pub fn unhealthy_until_checked(self) -> Self {
        self.healthy.store(false, Relaxed);
        self
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }

    /// Ends an outlier ejection (a passing health probe vouches for it).
    pub(crate) fn readmit(&self) {
        if self.ejected_until.load(Relaxed) != 0 {
            self.ejected_until.store(0, Relaxed);
        }
    }

    /// Whether the endpoint may take requests at `now` (not ejected).
    pub fn available(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) <= now
    }

    /// Like [`Endpoint::available`], reading the clock only for an endpoint
    /// that has been ejected at some point.
    pub fn available_now(&self) -> bool {
        if !self.healthy() {
            return false;
        }
        let until = self.ejected_until.load(Relaxed);
        until == 0 || until <= crate::clock::now_millis()
    }

    /// The endpoint's circuit breaker phase (`closed` without a breaker).
    pub fn breaker_phase(&self) -> &'static str {
        self.breaker.phase()
    }

    /// Whether passive outlier detection has it out of rotation now.
    pub fn ejected(&self) -> bool {
        !self.available(crate::clock::now_millis())
    }

    /// Requests currently sent to this endpoint and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }
}

/// Marks one request in flight on an endpoint (for `least_conn`).
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// An immutable snapshot of a backend's endpoints, replaced whole on change.
/// It carries the precomputed tables the balancing policies read, so a pick
/// never builds anything.
#[derive(Debug, Default)]
pub struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    /// Endpoint indexes in smooth weighted round-robin order, one cycle long.
    schedule: Vec<u32>,
    /// Consistent-hash ring: (point, endpoint index), sorted by point.
    ring: Vec<(u64, u32)>,
}

impl EndpointSet {
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        let schedule = smooth_weighted_schedule(&endpoints);
        let ring = hash_ring(&endpoints);
        Self {
            endpoints,
            schedule,
            ring,
        }
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

    pub(crate) fn schedule(&self) -> &[u32] {
        &self.schedule
    }

    pub(crate) fn ring(&self) -> &[(u64, u32)] {
        &self.ring
    }
}

/// One cycle of nginx's smooth weighted round robin: each endpoint appears
/// `weight` times, interleaved (weights 5,1,1 give a a b a c a a, not a a a a a b c).
fn smooth_weighted_schedule(endpoints: &[Arc<Endpoint>]) -> Vec<u32> {
    let total: i64 = endpoints.iter().map(|e| i64::from(e.weight)).sum();
    let mut current: Vec<i64> = vec![0; endpoints.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, endpoint) in endpoints.iter().enumerate() {
            current[i] += i64::from(endpoint.weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

/// Stable hash of anything, used for ring points and request keys.
pub(crate) fn stable_hash(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Ring points derive from the endpoint's stable id (the container id), so a
/// container keeps its keys when others come or go.
fn hash_ring(endpoints: &[Arc<Endpoint>]) -> Vec<(u64, u32)> {
    let mut ring: Vec<(u64, u32)> = endpoints
        .iter()
        .enumerate()
        .flat_map(|(i, endpoint)| {
            (0..RING_POINTS_PER_ENDPOINT)
                .map(move |point| (stable_hash((&*endpoint.id, point)), i as u32))
        })
        .collect();
    ring.sort_unstable();
    ring
}
