//! Prometheus metrics: what the request path records, and the scrape.
//!
//! Recording is per worker: each route keeps one cache-line-aligned slot of
//! plain atomic counters per worker, written only by that worker, so no
//! request touches a line another core writes. A scrape (`GET /metrics` on
//! the admin plane) sums the slots and reads the rest of the state (endpoint
//! health, breakers, process figures) as it is at that moment. Label sets
//! are bounded by the config: route and backend names, status classes,
//! auth failure reasons, and endpoint addresses of live endpoints only;
//! never paths or client data.
//!
//! Every metric name is in this module.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use http::StatusCode;

use crate::observe::tally::{histogram, Tally, COARSE};

/// `rgate_requests_total{route,backend,code}`, code = status class.
pub const REQUESTS: &str = "rgate_requests";
/// `rgate_request_duration_seconds{route,backend}`.
pub const REQUEST_DURATION: &str = "rgate_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "rgate_requests_in_flight";
/// `rgate_rate_limited_total{route}`.
pub const RATE_LIMITED: &str = "rgate_rate_limited";
/// `rgate_auth_failures_total{route,reason}`.
pub const AUTH_FAILURES: &str = "rgate_auth_failures";
/// `rgate_endpoint_up{backend,endpoint}`: healthy and not ejected.
pub const ENDPOINT_UP: &str = "rgate_endpoint_up";
/// `rgate_circuit_open{backend,endpoint}`: 1 while the breaker is open.
pub const CIRCUIT_OPEN: &str = "rgate_circuit_open";
/// `rgate_endpoint_requests_in_flight{backend,endpoint}`.
pub const ENDPOINT_IN_FLIGHT: &str = "rgate_endpoint_requests_in_flight";
/// `rgate_config_reloads_total{result}`.
pub const CONFIG_RELOADS: &str = "rgate_config_reloads";
pub const CONFIG_VERSION: &str = "rgate_config_version";
/// `rgate_upstream_requests_total{backend}`: requests sent on a connection.
pub const UPSTREAM_REQUESTS: &str = "rgate_upstream_requests";
/// `rgate_upstream_connections_opened_total{backend}`: the rest were reused.
pub const UPSTREAM_CONNECTIONS_OPENED: &str = "rgate_upstream_connections_opened";
/// `rgate_retries_total{backend}`.
pub const RETRIES: &str = "rgate_retries";
/// `rgate_retry_budget_exhausted_total{backend}`: retries the budget refused.
pub const RETRY_BUDGET_EXHAUSTED: &str = "rgate_retry_budget_exhausted";
/// `rgate_circuit_breaker_transitions_total{backend,to}` (`open`, `closed`).
pub const BREAKER_TRANSITIONS: &str = "rgate_circuit_breaker_transitions";
/// `rgate_backend_circuit_transitions_total{backend,to}`: the backend-wide breaker.
pub const CIRCUIT_TRANSITIONS: &str = "rgate_backend_circuit_transitions";
/// `rgate_outlier_ejections_total{backend}`.
pub const OUTLIER_EJECTIONS: &str = "rgate_outlier_ejections";
/// `rgate_docker_events_total{host}`: container events handled.
pub const DOCKER_EVENTS: &str = "rgate_docker_events";
/// `rgate_docker_resyncs_total{host}`: full relists (at connect and periodic).
pub const DOCKER_RESYNCS: &str = "rgate_docker_resyncs";
/// `rgate_access_log_dropped_total` (with the access log on).
pub const ACCESS_LOG_DROPPED: &str = "rgate_access_log_dropped";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
pub const PROCESS_FDS: &str = "process_open_fds";
pub const PROCESS_CPU: &str = "process_cpu_seconds";

/// Upper bounds of the duration histogram, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// The status classes counted, `1xx` to `5xx`.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Auth failure reasons, as `auth::Failure::reason` names them.
pub const AUTH_REASONS: [&str; 13] = [
    "missing",
    "too_large",
    "malformed",
    "algorithm",
    "no_key",
    "unknown_kid",
    "expired",
    "not_yet_valid",
    "issuer",
    "signature",
    "missing_claim",
    "audience",
    "keys_unavailable",
];

/// One worker's counters for one route.
#[derive(Debug, Default)]
#[repr(align(128))]
struct RouteSlot {
    by_class: [AtomicU64; 5],
    /// Per bucket (not cumulative); the last counts what is over every bound.
    buckets: [AtomicU64; 15],
    duration_us: AtomicU64,
    rate_limited: AtomicU64,
    auth_failures: [AtomicU64; 13],
    /// Requests whose client left before an answer (no status class).
    abandoned: AtomicU64,
    /// For `/stats`: made at the route's first request on this worker.
    latency: Mutex<Option<Box<Histogram<u64>>>>,
}

/// A route's counters, one slot per worker. Kept across reloads by route id,
/// so counters only ever grow.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    slots: PerWorker<RouteSlot>,
}

/// A route's sums over workers, at one scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RouteTotals {
    pub by_class: [u64; 5],
    /// Cumulative, as Prometheus buckets are; the last is `+Inf`.
    pub buckets: [u64; 15],
    pub duration_seconds: f64,
    pub rate_limited: u64,
    pub auth_failures: [u64; 13],
}

impl RouteMetrics {
    fn slot(&self) -> &RouteSlot {
        self.slots.mine()
    }

    /// Counts one request: answered with `status`, or (`None`) abandoned by
    /// its client. A status of 0 or over 599 is not counted.
    pub fn record(&self, status: Option<StatusCode>, latency: Duration) {
        let slot = self.slot();
        match status.map(|status| status.as_u16() / 100) {
            Some(class @ 1..=5) => slot.by_class[usize::from(class - 1)].fetch_add(1, Relaxed),
            Some(_) => 0,
            None => slot.abandoned.fetch_add(1, Relaxed),
        };
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Only this worker and the rare `/stats` reader take this lock.
        slot.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| Box::new(histogram(COARSE)))
            .saturating_record(us.max(1));
        let bucket = BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(14);
        slot.buckets[bucket].fetch_add(1, Relaxed);
        slot.duration_us.fetch_add(us, Relaxed);
    }

    pub fn rate_limited(&self) {
        self.slot().rate_limited.fetch_add(1, Relaxed);
    }

    pub fn auth_failure(&self, reason: &str) {
        if let Some(i) = AUTH_REASONS.iter().position(|r| *r == reason) {
            self.slot().auth_failures[i].fetch_add(1, Relaxed);
        }
    }

    /// The `/stats` tally over every worker's slot: 1xx–3xx succeed, 4xx,
    /// 5xx and abandoned requests fail (the contract's split; a route's 1xx
    /// is always a 101, the only informational status it answers with).
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::new(COARSE);
        for slot in self.slots.all() {
            let class = |i: usize| slot.by_class[i].load(Relaxed);
            tally.success += class(0) + class(1) + class(2);
            tally.error += class(3) + class(4) + slot.abandoned.load(Relaxed);
            tally.total_micros += slot.duration_us.load(Relaxed);
            if let Some(latency) = &*slot.latency.lock().unwrap_or_else(PoisonError::into_inner) {
                let _ = tally.latency.add(&**latency);
            }
        }
        tally
    }

    /// The sums over every worker's slot.
    pub fn totals(&self) -> RouteTotals {
        let mut totals = RouteTotals::default();
        for slot in self.slots.all() {
            for (sum, count) in totals.by_class.iter_mut().zip(&slot.by_class) {
                *sum += count.load(Relaxed);
            }
            for (sum, count) in totals.buckets.iter_mut().zip(&slot.buckets) {
                *sum += count.load(Relaxed);
            }
            totals.duration_seconds += slot.duration_us.load(Relaxed) as f64 / 1e6;
            totals.rate_limited += slot.rate_limited.load(Relaxed);
            for (sum, count) in totals.auth_failures.iter_mut().zip(&slot.auth_failures) {
                *sum += count.load(Relaxed);
            }
        }
        let mut running = 0;
        for bucket in &mut totals.buckets {
            running += *bucket;
            *bucket = running;
        }
        totals
    }
}

/// One worker's counters for one backend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct BackendSlot {
    requests: AtomicU64,
    connections_opened: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    breaker_opened: AtomicU64,
    breaker_closed: AtomicU64,
    circuit_opened: AtomicU64,
    circuit_closed: AtomicU64,
    ejections: AtomicU64,
}

/// A backend's counters, one slot per worker; shared with the backend that
/// continues it across a reload, as its endpoints are.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    slots: PerWorker<BackendSlot>,
}

/// A backend's sums over workers: requests sent, connections opened,
/// retries, retries refused by the budget.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackendTotals {
    pub requests: u64,
    pub connections_opened: u64,
    pub retries: u64,
    pub budget_exhausted: u64,
    pub breaker_opened: u64,
    pub breaker_closed: u64,
    pub circuit_opened: u64,
    pub circuit_closed: u64,
    pub ejections: u64,
}

impl BackendMetrics {
    fn slot(&self) -> &BackendSlot {
        self.slots.mine()
    }

    /// One request sent upstream, on a `fresh` connection or a pooled one.
    pub fn sent(&self, fresh: bool) {
        let slot = self.slot();
        slot.requests.fetch_add(1, Relaxed);
        if fresh {
            slot.connections_opened.fetch_add(1, Relaxed);
        }
    }

    pub fn retried(&self) {
        self.slot().retries.fetch_add(1, Relaxed);
    }

    pub fn budget_exhausted(&self) {
        self.slot().budget_exhausted.fetch_add(1, Relaxed);
    }

    /// An endpoint breaker opened or closed.
    pub fn breaker(&self, transition: crate::backend::breaker::Transition) {
        let slot = self.slot();
        match transition {
            crate::backend::breaker::Transition::Opened => &slot.breaker_opened,
            crate::backend::breaker::Transition::Closed => &slot.breaker_closed,
        }
        .fetch_add(1, Relaxed);
    }

    /// The backend-wide breaker opened or closed.
    pub fn circuit(&self, transition: crate::backend::breaker::Transition) {
        let slot = self.slot();
        match transition {
            crate::backend::breaker::Transition::Opened => &slot.circuit_opened,
            crate::backend::breaker::Transition::Closed => &slot.circuit_closed,
        }
        .fetch_add(1, Relaxed);
    }

    /// Outlier detection ejected an endpoint.
    pub fn ejected(&self) {
        self.slot().ejections.fetch_add(1, Relaxed);
    }

    pub fn totals(&self) -> BackendTotals {
        let mut totals = BackendTotals::default();
        for slot in self.slots.all() {
            totals.requests += slot.requests.load(Relaxed);
            totals.connections_opened += slot.connections_opened.load(Relaxed);
            totals.retries += slot.retries.load(Relaxed);
            totals.budget_exhausted += slot.budget_exhausted.load(Relaxed);
            totals.breaker_opened += slot.breaker_opened.load(Relaxed);
            totals.breaker_closed += slot.breaker_closed.load(Relaxed);
            totals.circuit_opened += slot.circuit_opened.load(Relaxed);
            totals.circuit_closed += slot.circuit_closed.load(Relaxed);
            totals.ejections += slot.ejections.load(Relaxed);
        }
        totals
    }
}

/// One slot per worker, each written only by its own worker.
#[derive(Debug)]
struct PerWorker<T>(Box<[T]>);

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        Self((0..slots()).map(|_| T::default()).collect())
    }
}

impl<T> PerWorker<T> {
    /// This worker's slot.
    fn mine(&self) -> &T {
        &self.0[worker() % self.0.len()]
    }

    fn all(&self) -> &[T] {
        &self.0
    }
}

/// Slots per route: one per core, at most 64 (more workers share slots,
/// which stays correct, only no longer free of sharing).
fn slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .clamp(1, 64)
    })
}

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as worker `index` (its metrics slot).
pub fn set_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// Docker discovery's counters, one set per Docker host.
#[derive(Debug, Default)]
pub struct DockerCounts {
    hosts: std::sync::Mutex<Vec<(String, std::sync::Arc<HostCounts>)>>,
}

/// One Docker host's counters, written by its discovery task only.
#[derive(Debug, Default)]
pub struct HostCounts {
    pub events: AtomicU64,
    pub resyncs: AtomicU64,
}

impl DockerCounts {
    /// The counters of the host named `name` (`default` for the local
    /// socket), kept across reloads.
    pub fn host(&self, name: &str) -> std::sync::Arc<HostCounts> {
        let Ok(mut hosts) = self.hosts.lock() else {
            return std::sync::Arc::default();
        };
        if let Some((_, counts)) = hosts.iter().find(|(host, _)| host == name) {
            return counts.clone();
        }
        let counts = std::sync::Arc::<HostCounts>::default();
        hosts.push((name.to_owned(), counts.clone()));
        counts
    }

    /// `(host, events, resyncs)` of every host seen.
    pub fn by_host(&self) -> Vec<(String, u64, u64)> {
        self.hosts
            .lock()
            .map(|hosts| {
                hosts
                    .iter()
                    .map(|(host, counts)| {
                        (
                            host.clone(),
                            counts.events.load(Relaxed),
                            counts.resyncs.load(Relaxed),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Config reloads by result, for `rgate_config_reloads_total`.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    pub applied: AtomicU64,
    pub refused: AtomicU64,
}

/// This process's resident memory, open descriptors and CPU seconds, from
/// `/proc/self` (`None` where it cannot be read).
pub fn process() -> (Option<u64>, Option<u64>, Option<f64>) {
    // Linux reports /proc times in USER_HZ, fixed at 100 for user space.
    const USER_HZ: f64 = 100.0;
    const PAGE: u64 = 4096;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * PAGE);
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / USER_HZ)
        });
    (rss, fds, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_buckets_and_sums_add_up_over_workers() {
        let metrics = RouteMetrics::default();
        let status = |code| Some(StatusCode::from_u16(code).unwrap());
        metrics.record(status(200), Duration::from_micros(300));
        metrics.record(status(204), Duration::from_millis(3));
        set_worker(1);
        metrics.record(status(503), Duration::from_secs(30));
        metrics.record(None, Duration::from_millis(1));
        metrics.rate_limited();
        metrics.auth_failure("expired");
        metrics.auth_failure("not a reason");
        set_worker(0);
        let totals = metrics.totals();
        assert_eq!(totals.by_class, [0, 2, 0, 0, 1]);
        // Cumulative: ≤0.5 ms holds 300 µs, ≤1 ms adds the abandoned
        // request's 1 ms, ≤5 ms the 3 ms, +Inf the 30 s.
        assert_eq!(totals.buckets[0], 1);
        assert_eq!(totals.buckets[1], 2);
        assert_eq!(totals.buckets[3], 3);
        assert_eq!(totals.buckets[13], 3);
        assert_eq!(totals.buckets[14], 4);
        assert!((totals.duration_seconds - 30.0043).abs() < 1e-6);
        assert_eq!(totals.rate_limited, 1);
        assert_eq!(totals.auth_failures[6], 1);
        assert_eq!(totals.auth_failures.iter().sum::<u64>(), 1);
        let tally = metrics.tally();
        assert_eq!((tally.success, tally.error), (2, 2));
        assert_eq!(tally.latency.len(), 4);
        assert!((tally.latency.value_at_quantile(0.5) as f64 - 1000.0).abs() < 10.0);
    }

    #[test]
    fn process_figures_are_read() {
        let (rss, fds, cpu) = process();
        assert!(rss.unwrap() > 0);
        assert!(fds.unwrap() > 0);
        assert!(cpu.unwrap() >= 0.0);
    }
}
