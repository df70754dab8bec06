//! Passive outlier detection: endpoints that fail several requests in a row
//! are ejected from rotation for a cooldown, then rejoin on their own.
//!
//! State lives in two atomics on each endpoint. A success resets the failure
//! streak, with a store only when there was one. Ejection is rare and scans
//! the endpoint set to respect `max_ejected_percent`, so a backend is never
//! emptied by its own detector.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::endpoint::{Endpoint, EndpointSet};

/// A backend's `outlier:` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Failures in a row that eject an endpoint.
    pub consecutive_errors: u32,
    pub eject_for: Duration,
    /// At most this share of the backend's endpoints may be ejected at once.
    pub max_ejected_percent: u8,
}

impl Outlier {
    /// Records one request's outcome on `endpoint`; `now` is [`now_millis`](crate::clock::now_millis).
    /// Returns true when this outcome ejected the endpoint.
    pub fn record(&self, set: &EndpointSet, endpoint: &Endpoint, failed: bool, now: u64) -> bool {
        if !failed {
            if endpoint.failures.load(Relaxed) != 0 {
                endpoint.failures.store(0, Relaxed);
            }
            return false;
        }
        let streak = endpoint.failures.fetch_add(1, Relaxed) + 1;
        if streak < self.consecutive_errors || !endpoint.available(now) {
            return false;
        }
        let ejected = set.endpoints().iter().filter(|e| !e.available(now)).count();
        let allowed = set.len() * usize::from(self.max_ejected_percent) / 100;
        if ejected >= allowed {
            return false;
        }
        let until = now + u64::try_from(self.eject_for.as_millis()).unwrap_or(u64::MAX / 2);
        endpoint.ejected_until.store(until, Relaxed);
        endpoint.failures.store(0, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;

    fn set(n: usize) -> EndpointSet {
        EndpointSet::new(
            (0..n)
                .map(|i| {
                    let addr: SocketAddr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                    Arc::new(Endpoint::new(addr, format!("c{i}"), format!("c{i}")))
                })
                .collect(),
        )
    }

    const OUTLIER: Outlier = Outlier {
        consecutive_errors: 3,
        eject_for: Duration::from_secs(10),
        max_ejected_percent: 50,
    };

    #[test]
    fn consecutive_failures_eject_and_the_cooldown_readmits() {
        let endpoints = set(4);
        let e = &endpoints.endpoints()[0];
        assert!(!OUTLIER.record(&endpoints, e, true, 1_000));
        assert!(!OUTLIER.record(&endpoints, e, true, 1_000));
        assert!(
            OUTLIER.record(&endpoints, e, true, 1_000),
            "third failure in a row ejects"
        );
        assert!(!e.available(1_000));
        assert!(!e.available(10_999));
        assert!(e.available(11_000), "rejoins after eject_for");
    }

    #[test]
    fn a_success_breaks_the_streak() {
        let endpoints = set(4);
        let e = &endpoints.endpoints()[0];
        OUTLIER.record(&endpoints, e, true, 1);
        OUTLIER.record(&endpoints, e, true, 1);
        OUTLIER.record(&endpoints, e, false, 1);
        assert!(!OUTLIER.record(&endpoints, e, true, 1));
        assert!(!OUTLIER.record(&endpoints, e, true, 1));
        assert!(e.available(1));
    }

    #[test]
    fn never_ejects_more_than_the_allowed_share() {
        let endpoints = set(4);
        let mut ejected = 0;
        for e in endpoints.endpoints() {
            for _ in 0..3 {
                if OUTLIER.record(&endpoints, e, true, 5) {
                    ejected += 1;
                }
            }
        }
        assert_eq!(ejected, 2, "50% of 4 endpoints");
        let single = set(1);
        for _ in 0..10 {
            assert!(
                !OUTLIER.record(&single, &single.endpoints()[0], true, 5),
                "a lone endpoint stays"
            );
        }
    }
}
