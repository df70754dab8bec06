//! The `/stats` document: the contract's figures at top level, then one entry
//! per route and per backend.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::observe::tally::{Summary, Tally, COARSE, PRECISE};
use crate::snapshot::Snapshot;

/// Tallies in total and by route and backend name.
#[derive(Debug, Clone)]
pub struct Breakdown {
    pub all: Tally,
    pub routes: BTreeMap<Box<str>, Tally>,
    pub backends: BTreeMap<Box<str>, Tally>,
}

impl Default for Breakdown {
    fn default() -> Self {
        Self {
            all: Tally::new(PRECISE),
            routes: BTreeMap::new(),
            backends: BTreeMap::new(),
        }
    }
}

impl Breakdown {
    /// Adds a route's requests to it and to the backend it sends them to.
    pub fn add_route(&mut self, route: &str, backend: &str, tally: &Tally) {
        add(&mut self.routes, route, tally);
        add(&mut self.backends, backend, tally);
    }

    /// The document; every route and backend of `snapshot` is listed (with
    /// zeros when they carried nothing), and so is any name the tallies know
    /// from an earlier config.
    pub fn document(&self, snapshot: &Snapshot, window: Option<String>) -> StatsDocument {
        let backend_of: HashMap<&str, &str> = snapshot
            .router
            .routes()
            .iter()
            .map(|route| (&*route.name, &*snapshot.backends[route.backend].name))
            .collect();
        let empty = Tally::new(COARSE).summary();
        let entry = |name: &str, summary: Summary| RouteSummary {
            backend: backend_of.get(name).map(|backend| (*backend).to_owned()),
            summary,
        };
        let mut routes: BTreeMap<String, RouteSummary> = backend_of
            .keys()
            .map(|name| ((*name).to_owned(), entry(name, empty.clone())))
            .collect();
        for (name, tally) in &self.routes {
            routes.insert(name.to_string(), entry(name, tally.summary()));
        }
        let mut backends: BTreeMap<String, Summary> = snapshot
            .backends
            .iter()
            .map(|backend| (backend.name.to_string(), empty.clone()))
            .collect();
        for (name, tally) in &self.backends {
            backends.insert(name.to_string(), tally.summary());
        }
        StatsDocument {
            total: self.all.summary(),
            window,
            routes,
            backends,
        }
    }
}

pub(super) fn add(tallies: &mut BTreeMap<Box<str>, Tally>, name: &str, tally: &Tally) {
    match tallies.get_mut(name) {
        Some(sum) => sum.add(tally),
        None => {
            let mut sum = Tally::new(COARSE);
            sum.add(tally);
            tallies.insert(name.into(), sum);
        }
    }
}

/// `/stats`: the contract's two objects exactly as it shows them, then the
/// window asked for (if any) and the breakdowns.
#[derive(Debug, Serialize)]
pub struct StatsDocument {
    #[serde(flatten)]
    pub total: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    pub routes: BTreeMap<String, RouteSummary>,
    pub backends: BTreeMap<String, Summary>,
}

/// A route's figures and the backend it sends to now (none for a route
/// only the store remembers).
#[derive(Debug, Serialize)]
pub struct RouteSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(flatten)]
    pub summary: Summary,
}
