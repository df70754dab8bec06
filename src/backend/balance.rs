//! Balancing policies: which endpoint of a backend takes the next request.
//!
//! A closed set, so an enum with static dispatch (no `Box<dyn>` per request).
//! New policies (round robin, least connections, hashing) add variants here.

use std::sync::Arc;

use super::endpoint::{Endpoint, EndpointSet};

/// A backend's balancing policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Uniformly random: the contract's default. Uses a thread-local generator,
    /// so picking takes no lock and touches no shared cache line.
    #[default]
    Random,
}

impl Balance {
    /// Picks an endpoint, skipping `exclude` (the endpoint a retry must avoid)
    /// when another one exists.
    pub fn pick(&self, set: &EndpointSet, exclude: Option<&Endpoint>) -> Option<Arc<Endpoint>> {
        let endpoints = set.endpoints();
        match self {
            Balance::Random => {
                let excluded = exclude.and_then(|ex| {
                    endpoints
                        .iter()
                        .position(|e| std::ptr::eq(Arc::as_ptr(e), ex))
                });
                let candidates = endpoints.len() - usize::from(excluded.is_some());
                if candidates == 0 {
                    return None;
                }
                let mut index = fastrand::usize(..candidates);
                if excluded.is_some_and(|skip| index >= skip) {
                    index += 1;
                }
                endpoints.get(index).cloned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> EndpointSet {
        EndpointSet::new(
            (0..n)
                .map(|i| {
                    let addr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                    Arc::new(Endpoint::new(addr, format!("e{i}"), format!("e{i}")))
                })
                .collect(),
        )
    }

    #[test]
    fn empty_set_has_no_pick() {
        assert!(Balance::Random.pick(&set(0), None).is_none());
    }

    #[test]
    fn random_spreads_over_all_endpoints() {
        let endpoints = set(3);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let e = Balance::Random.pick(&endpoints, None).unwrap();
            counts[(e.addr.port() - 9000) as usize] += 1;
        }
        // Expected 1000 each; 800 is > 6 standard deviations away.
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn exclusion_is_honoured_when_another_endpoint_exists() {
        let endpoints = set(3);
        let excluded = endpoints.endpoints()[1].clone();
        for _ in 0..500 {
            let e = Balance::Random.pick(&endpoints, Some(&excluded)).unwrap();
            assert!(!Arc::ptr_eq(&e, &excluded));
        }
        let single = set(1);
        let only = single.endpoints()[0].clone();
        assert!(Balance::Random.pick(&single, Some(&only)).is_none());
    }
}
