//! Active health checking: a background task per backend probes every
//! endpoint with an HTTP GET and flips the endpoint's `healthy` flag after
//! enough consecutive results. The request path only reads that flag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::endpoint::Endpoint;
use super::Backend;

/// A backend's `health_check:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed probes in a row that take an endpoint out of rotation.
    pub unhealthy_after: u32,
    /// Passed probes in a row that bring it back.
    pub healthy_after: u32,
    /// The status a passing probe answers with; any 2xx when unset.
    pub expect_status: Option<StatusCode>,
    /// New endpoints get no traffic until they pass `healthy_after` probes.
    pub wait_healthy: bool,
}

/// Counts results in a row and says when the verdict flips (pure).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConsecutiveCounter {
    passes: u32,
    failures: u32,
}

impl ConsecutiveCounter {
    /// Records a probe; returns the new verdict when it changes.
    pub fn record(&mut self, passed: bool, healthy: bool, check: &HealthCheck) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            (!healthy && self.passes >= check.healthy_after).then_some(true)
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            (healthy && self.failures >= check.unhealthy_after).then_some(false)
        }
    }
}

/// Probes `backend`'s endpoints forever (a background task).
pub(crate) async fn run(backend: Arc<Backend>, check: HealthCheck) {
    let mut counters: HashMap<Box<str>, ConsecutiveCounter> = HashMap::new();
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let endpoints: Vec<Arc<Endpoint>> = backend.endpoints().endpoints().to_vec();
        counters.retain(|id, _| endpoints.iter().any(|e| &e.id == id));
        let probes = endpoints.iter().map(|endpoint| {
            let endpoint = endpoint.clone();
            let check = &check;
            async move {
                let passed = probe(&endpoint, check).await;
                (endpoint, passed)
            }
        });
        for (endpoint, passed) in futures_util::future::join_all(probes).await {
            if passed {
                // A passing probe ends an outlier ejection early.
                endpoint.readmit();
            }
            let counter = counters.entry(endpoint.id.clone()).or_default();
            if let Some(healthy) = counter.record(passed, endpoint.healthy(), &check) {
                endpoint.set_healthy(healthy);
                info!(
                    backend = %backend.name,
                    endpoint = %endpoint.name,
                    addr = %endpoint.addr,
                    healthy,
                    "health check verdict changed"
                );
            }
        }
    }
}

/// One probe on a fresh connection (probes must not depend on, or disturb,
/// the request path's pooled connections).
async fn probe(endpoint: &Endpoint, check: &HealthCheck) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(endpoint.addr).await.ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        let request = Request::get(check.path.as_str())
            .header(http::header::HOST, endpoint.addr.to_string())
            .header("user-agent", "rgate-health-check")
            .body(Empty::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status())
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Some(status)) => match check.expect_status {
            Some(expected) => status == expected,
            None => status.is_success(),
        },
        Ok(None) | Err(_) => {
            debug!(endpoint = %endpoint.name, "health probe failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheck {
        HealthCheck {
            path: http::uri::PathAndQuery::from_static("/health"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
            expect_status: None,
            wait_healthy: false,
        }
    }

    #[test]
    fn flips_only_after_enough_results_in_a_row() {
        let check = check();
        let mut counter = ConsecutiveCounter::default();
        assert_eq!(counter.record(false, true, &check), None);
        assert_eq!(counter.record(false, true, &check), None);
        assert_eq!(
            counter.record(true, true, &check),
            None,
            "a pass breaks the streak"
        );
        assert_eq!(counter.record(false, true, &check), None);
        assert_eq!(counter.record(false, true, &check), None);
        assert_eq!(
            counter.record(false, true, &check),
            Some(false),
            "third failure in a row"
        );
        assert_eq!(counter.record(true, false, &check), None);
        assert_eq!(
            counter.record(true, false, &check),
            Some(true),
            "second pass in a row"
        );
        assert_eq!(
            counter.record(true, true, &check),
            None,
            "no change, no verdict"
        );
    }
}
