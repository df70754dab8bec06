//! What each Docker host contributes to a backend: its containers in
//! rotation, the ones it keeps out (and why), and whether it has listed them
//! yet. A backend's endpoint set is the union over its hosts, rebuilt by
//! discovery (never by requests) whenever one host's share changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::endpoint::Endpoint;
use super::Excluded;

/// One host's share of a backend.
#[derive(Debug, Default, Clone)]
pub struct HostShare {
    pub endpoints: Vec<Arc<Endpoint>>,
    pub excluded: Vec<Excluded>,
    /// The host has listed the backend's containers at least once.
    pub listed: bool,
}

/// Every host's share, by the host's index in `docker.endpoints`.
#[derive(Debug, Default)]
pub struct Shares {
    hosts: BTreeMap<usize, HostShare>,
}

impl Shares {
    pub fn host(&mut self, host: usize) -> &mut HostShare {
        self.hosts.entry(host).or_default()
    }

    /// The union of the hosts' endpoints, in host order.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.hosts
            .values()
            .flat_map(|share| share.endpoints.iter().cloned())
            .collect()
    }

    pub fn excluded(&self) -> Vec<Excluded> {
        self.hosts
            .values()
            .flat_map(|share| share.excluded.iter().cloned())
            .collect()
    }

    /// Every one of `hosts` hosts has listed the backend once.
    pub fn all_listed(&self, hosts: usize) -> bool {
        (0..hosts).all(|host| self.hosts.get(&host).is_some_and(|share| share.listed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16, host: &str) -> Arc<Endpoint> {
        Arc::new(
            Endpoint::new(
                ([127, 0, 0, 1], port).into(),
                format!("c{port}"),
                format!("c{port}"),
            )
            .with_host(host.into()),
        )
    }

    #[test]
    fn the_set_is_the_union_and_listing_waits_for_every_host() {
        let mut shares = Shares::default();
        shares.host(1).endpoints = vec![endpoint(2, "b")];
        shares.host(0).endpoints = vec![endpoint(1, "a")];
        shares.host(1).listed = true;
        let ports: Vec<u16> = shares.endpoints().iter().map(|e| e.addr.port()).collect();
        assert_eq!(ports, [1, 2]);
        assert!(!shares.all_listed(2));
        shares.host(0).listed = true;
        assert!(shares.all_listed(2));
        // One host's share replaced leaves the other's alone.
        shares.host(0).endpoints.clear();
        assert_eq!(shares.endpoints().len(), 1);
        assert_eq!(shares.endpoints()[0].host.as_deref(), Some("b"));
    }
}
