//! Balancing policies: which endpoint of a backend takes the next request.
//!
//! A closed set, so an enum with static dispatch (no `Box<dyn>` per request).
//! Every policy reads only the immutable endpoint set and atomics: a pick
//! takes no lock. Every policy honours `exclude`, the endpoint a retry must
//! avoid, whenever another endpoint exists.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, COOKIE};

use super::breaker::Breaker;
use super::endpoint::{stable_hash, Endpoint, EndpointSet};
use crate::clock::now_millis;

/// A backend's balancing policy (`balance:` in the config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Balance {
    /// Uniformly random: the contract's default.
    #[default]
    Random,
    /// Each endpoint in turn.
    RoundRobin,
    /// The less busy of two random endpoints (power of two choices): close to
    /// least-connections without scanning every endpoint.
    LeastConn,
    /// Smooth weighted round robin, weights from the `rgate.weight` label.
    Weighted,
    /// Consistent hashing of a request key: the same key keeps its endpoint,
    /// and adding or removing one endpoint moves only about 1/N of the keys.
    Hash(HashOn),
}

/// What `hash` balancing hashes. A request without the key is placed at random.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
}

/// What a pick may look at in the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
}

/// A policy plus its per-backend state.
#[derive(Debug, Default)]
pub struct Balancer {
    policy: Balance,
    /// Position in the rotation for `round_robin` and `weighted`.
    cursor: AtomicUsize,
}

impl Balancer {
    pub fn new(policy: Balance) -> Self {
        Self {
            policy,
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn policy(&self) -> &Balance {
        &self.policy
    }

    /// Picks an endpoint for a request. Skips ejected endpoints, and
    /// `exclude` (the endpoint a retry must avoid); `None` when nothing is left.
    pub fn pick(
        &self,
        set: &EndpointSet,
        key: RequestKey<'_>,
        exclude: Option<&Endpoint>,
        breaker: Option<&Breaker>,
    ) -> Option<Arc<Endpoint>> {
        let endpoints = set.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        // The clock is read only for backends with a breaker.
        let now = breaker.map(|_| now_millis());
        let allowed = |i: usize| {
            let endpoint = &endpoints[i];
            exclude.is_none_or(|ex| !std::ptr::eq(Arc::as_ptr(endpoint), ex))
                && endpoint.available_now()
                && breaker
                    .zip(now)
                    .is_none_or(|(breaker, now)| breaker.allows(&endpoint.breaker, now))
        };
        // The first allowed index at or after `start`, in rotation order.
        let first_allowed_from = |start: usize| {
            (0..endpoints.len())
                .map(|step| (start + step) % endpoints.len())
                .find(|&i| allowed(i))
        };
        let index = match &self.policy {
            Balance::Random => first_allowed_from(fastrand::usize(..endpoints.len()))?,
            Balance::RoundRobin => first_allowed_from(self.cursor.fetch_add(1, Relaxed))?,
            Balance::LeastConn => {
                let first = first_allowed_from(fastrand::usize(..endpoints.len()))?;
                // A second candidate, different from the first when one exists.
                let offset = 1 + fastrand::usize(..endpoints.len().max(2) - 1);
                match first_allowed_from(first + offset) {
                    Some(second)
                        if second != first
                            && endpoints[second].in_flight() < endpoints[first].in_flight() =>
                    {
                        second
                    }
                    _ => first,
                }
            }
            Balance::Weighted => {
                let schedule = set.schedule();
                let start = self.cursor.fetch_add(1, Relaxed);
                (0..schedule.len())
                    .map(|step| schedule[(start + step) % schedule.len()] as usize)
                    .find(|&i| allowed(i))?
            }
            Balance::Hash(on) => match hash_key(on, key) {
                Some(hash) => {
                    let ring = set.ring();
                    let start = ring.partition_point(|&(point, _)| point < hash);
                    (0..ring.len())
                        .map(|step| ring[(start + step) % ring.len()].1 as usize)
                        .find(|&i| allowed(i))?
                }
                None => first_allowed_from(fastrand::usize(..endpoints.len()))?,
            },
        };
        endpoints.get(index).cloned()
    }
}

fn hash_key(on: &HashOn, key: RequestKey<'_>) -> Option<u64> {
    match on {
        HashOn::ClientIp => Some(stable_hash(key.client_ip)),
        HashOn::Header(name) => key.headers.get(name).map(|v| stable_hash(v.as_bytes())),
        HashOn::Cookie(name) => key
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| stable_hash(v.as_bytes()))
            }),
    }
}

#[cfg(test)]
mod tests;
