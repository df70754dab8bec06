//! `GET /metrics`: the Prometheus scrape, encoded by `prometheus-client`
//! (OpenMetrics text) from the request path's per-worker counters and the
//! state at hand. Names come from [`crate::observe::metrics`].

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::backend::endpoint::Endpoint;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{
    self as names, BackendTotals, DockerCounts, ReloadCounts, AUTH_REASONS, BUCKETS, CLASSES,
};
use crate::observe::stats::Stats;
use crate::snapshot::SnapshotHandle;

/// Which of a backend's totals a series reports.
type Pick = fn(&BackendTotals) -> u64;

/// A per-backend counter: name, help, and which total it reports.
type BackendCounter = (&'static str, &'static str, Pick);

/// A per-endpoint gauge: name, help, and how to read it.
type EndpointGauge = (&'static str, &'static str, fn(&Endpoint) -> i64);

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads everything there is to report at each scrape.
#[derive(Debug)]
struct Gateway {
    snapshot: Arc<SnapshotHandle>,
    stats: Stats,
    reloads: Arc<ReloadCounts>,
    access_log: Option<Arc<AccessLog>>,
    docker: Arc<DockerCounts>,
}

/// A registry whose one collector reads the gateway.
pub fn registry(
    snapshot: Arc<SnapshotHandle>,
    stats: Stats,
    reloads: Arc<ReloadCounts>,
    access_log: Option<Arc<AccessLog>>,
    docker: Arc<DockerCounts>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Gateway {
        snapshot,
        stats,
        reloads,
        access_log,
        docker,
    }));
    registry
}

/// The content type of the classic text format (version 0.0.4).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition: OpenMetrics when the scraper asks for it (Prometheus
/// does), else the classic text format, which `curl` users and `promtool
/// check metrics` read.
pub fn encode(registry: &Registry, openmetrics: bool) -> (String, &'static str) {
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    if openmetrics {
        (text, CONTENT_TYPE)
    } else {
        (classic(&text), CONTENT_TYPE_TEXT)
    }
}

/// OpenMetrics text as the classic format: a counter family is named with
/// its `_total` samples' name, and the `# UNIT` and `# EOF` lines go.
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match described {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Collector for Gateway {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.load();
        let routes = snapshot.router.routes();
        let backend_of = |route: &crate::router::Route| &*snapshot.backends[route.backend].name;
        let totals: Vec<_> = routes.iter().map(|route| route.metrics.totals()).collect();

        let mut family = encoder.encode_descriptor(
            names::REQUESTS,
            "Requests answered, by route, backend and status class.",
            None,
            MetricType::Counter,
        )?;
        for (route, totals) in routes.iter().zip(&totals) {
            for (class, count) in CLASSES.iter().zip(totals.by_class) {
                let labels = [
                    ("route", &*route.name),
                    ("backend", backend_of(route)),
                    ("code", class),
                ];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            names::REQUEST_DURATION,
            "Time from the request head to the answer's head, by route and backend.",
            None,
            MetricType::Histogram,
        )?;
        for (route, totals) in routes.iter().zip(&totals) {
            let labels = [("route", &*route.name), ("backend", backend_of(route))];
            // The encoder takes each bucket's own count and sums them; its
            // last bound is f64::MAX, written `+Inf`.
            let mut previous = 0;
            let buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(totals.buckets)
                .map(|(bound, cumulative)| {
                    let own = cumulative - previous;
                    previous = cumulative;
                    (bound, own)
                })
                .collect();
            let count = totals.buckets[BUCKETS.len()];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(totals.duration_seconds, count, &buckets, None)?;
        }

        let mut family = encoder.encode_descriptor(
            names::RATE_LIMITED,
            "Requests refused by the route's rate limit.",
            None,
            MetricType::Counter,
        )?;
        for (route, totals) in routes.iter().zip(&totals) {
            if route
                .policy
                .as_ref()
                .is_some_and(|p| p.rate_limit.is_some())
            {
                let labels = [("route", &*route.name)];
                ConstCounter::new(totals.rate_limited).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            names::AUTH_FAILURES,
            "Requests refused by the route's token check, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (route, totals) in routes.iter().zip(&totals) {
            if route.policy.as_ref().is_some_and(|p| p.auth.is_some()) {
                for (reason, count) in AUTH_REASONS.iter().zip(totals.auth_failures) {
                    let labels = [("route", &*route.name), ("reason", reason)];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let backend_totals: Vec<_> = snapshot
            .backends
            .iter()
            .map(|b| b.metrics.totals())
            .collect();
        let backend_counters: [BackendCounter; 5] = [
            (
                names::UPSTREAM_REQUESTS,
                "Requests sent to the backend's endpoints, retries included.",
                |t| t.requests,
            ),
            (
                names::UPSTREAM_CONNECTIONS_OPENED,
                "Upstream connections opened; the other requests reused pooled ones.",
                |t| t.connections_opened,
            ),
            (names::RETRIES, "Retries sent.", |t| t.retries),
            (
                names::RETRY_BUDGET_EXHAUSTED,
                "Retries the route's retry budget refused.",
                |t| t.budget_exhausted,
            ),
            (
                names::OUTLIER_EJECTIONS,
                "Endpoints ejected by outlier detection.",
                |t| t.ejections,
            ),
        ];
        for (name, help, value) in backend_counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (backend, totals) in snapshot.backends.iter().zip(&backend_totals) {
                let labels = [("backend", &*backend.name)];
                ConstCounter::new(value(totals)).encode(family.encode_family(&labels)?)?;
            }
        }

        let transitions: [(&str, &str, Pick, Pick); 2] = [
            (
                names::BREAKER_TRANSITIONS,
                "Endpoint circuit breakers opening and closing, by backend.",
                |t| t.breaker_opened,
                |t| t.breaker_closed,
            ),
            (
                names::CIRCUIT_TRANSITIONS,
                "The backend-wide circuit breaker opening and closing.",
                |t| t.circuit_opened,
                |t| t.circuit_closed,
            ),
        ];
        for (name, help, opened, closed) in transitions {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (backend, totals) in snapshot.backends.iter().zip(&backend_totals) {
                for (to, count) in [("open", opened(totals)), ("closed", closed(totals))] {
                    let labels = [("backend", &*backend.name), ("to", to)];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        ConstGauge::new(i64::try_from(self.stats.in_flight()).unwrap_or(i64::MAX)).encode(
            encoder.encode_descriptor(
                names::REQUESTS_IN_FLIGHT,
                "Requests being answered now.",
                None,
                MetricType::Gauge,
            )?,
        )?;

        // Endpoint state, for live endpoints only: gone endpoints drop out.
        let endpoints: Vec<_> = snapshot
            .backends
            .iter()
            .flat_map(|backend| {
                let set = backend.endpoints();
                set.endpoints()
                    .iter()
                    .map(|endpoint| (backend.name.clone(), endpoint.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let addresses: Vec<String> = endpoints.iter().map(|(_, e)| e.addr.to_string()).collect();
        let gauges: [EndpointGauge; 3] = [
            (
                names::ENDPOINT_UP,
                "1 while the endpoint takes traffic: healthy and not ejected.",
                |e| i64::from(e.available_now()),
            ),
            (
                names::CIRCUIT_OPEN,
                "1 while the endpoint's circuit breaker is open.",
                |e| i64::from(e.breaker_phase() == "open"),
            ),
            (
                names::ENDPOINT_IN_FLIGHT,
                "Requests sent to the endpoint and not yet finished.",
                |e| i64::from(e.in_flight()),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((backend, endpoint), address) in endpoints.iter().zip(&addresses) {
                let labels = [("backend", &**backend), ("endpoint", address.as_str())];
                ConstGauge::new(value(endpoint)).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            names::CONFIG_RELOADS,
            "Config reloads, by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [
            ("applied", &self.reloads.applied),
            ("refused", &self.reloads.refused),
        ] {
            let labels = [("result", result)];
            ConstCounter::new(count.load(std::sync::atomic::Ordering::Relaxed))
                .encode(family.encode_family(&labels)?)?;
        }
        ConstGauge::new(i64::try_from(snapshot.version).unwrap_or(i64::MAX)).encode(
            encoder.encode_descriptor(
                names::CONFIG_VERSION,
                "The config's version: 1 at start, one more per applied reload.",
                None,
                MetricType::Gauge,
            )?,
        )?;

        let hosts = self.docker.by_host();
        if !hosts.is_empty() {
            for (name, help, pick) in [
                (
                    names::DOCKER_EVENTS,
                    "Docker container events handled.",
                    (|(_, events, _)| *events) as fn(&(String, u64, u64)) -> u64,
                ),
                (
                    names::DOCKER_RESYNCS,
                    "Full relists of the Docker backends' containers.",
                    |(_, _, resyncs)| *resyncs,
                ),
            ] {
                let mut family =
                    encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for host in &hosts {
                    let labels = [("host", host.0.as_str())];
                    ConstCounter::new(pick(host)).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        if let Some(log) = &self.access_log {
            ConstCounter::new(log.dropped()).encode(encoder.encode_descriptor(
                names::ACCESS_LOG_DROPPED,
                "Access log lines dropped because the writer was behind.",
                None,
                MetricType::Counter,
            )?)?;
        }

        let (rss, fds, cpu) = names::process();
        if let Some(rss) = rss {
            ConstGauge::new(i64::try_from(rss).unwrap_or(i64::MAX)).encode(
                encoder.encode_descriptor(
                    names::PROCESS_RSS,
                    "Resident memory.",
                    None,
                    MetricType::Gauge,
                )?,
            )?;
        }
        if let Some(fds) = fds {
            ConstGauge::new(i64::try_from(fds).unwrap_or(i64::MAX)).encode(
                encoder.encode_descriptor(
                    names::PROCESS_FDS,
                    "Open file descriptors.",
                    None,
                    MetricType::Gauge,
                )?,
            )?;
        }
        if let Some(cpu) = cpu {
            ConstCounter::new(cpu).encode(encoder.encode_descriptor(
                names::PROCESS_CPU,
                "User and system CPU time.",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_in_the_classic_format() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
                           a_requests_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g bytes\ng 1\n# EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\n\
             a_requests_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
