//! The request context: what the phases of one request learn, recorded once
//! when the request ends, however it ends.

use std::net::SocketAddr;
use std::time::Instant;

use http::StatusCode;

use crate::observe::access_log::{AccessLog, Entry};
use crate::observe::metrics::RouteMetrics;
use crate::observe::stats::StatsShard;

/// Collects the request's route, endpoint, tries and outcome. Its drop
/// records the outcome, so a request whose client went away mid-flight (its
/// future dropped) is still counted.
#[derive(Debug)]
pub struct RequestCtx<'a> {
    shard: &'a StatsShard,
    /// When the request's head arrived: latency and the route deadline count from it.
    pub start: Instant,
    /// The answer's status; `None` if the request was dropped before one.
    pub status: Option<StatusCode>,
    /// Index of the route in the snapshot's precedence-ordered table.
    pub route: Option<usize>,
    /// The matched route's counters.
    pub metrics: Option<&'a RouteMetrics>,
    /// The endpoint of the last try.
    pub endpoint: Option<SocketAddr>,
    /// Tries sent to an endpoint (retries included).
    pub attempts: u32,
    /// The stable code of rgate's own error answer, if it made one.
    pub error: Option<&'static str>,
    /// The access log's line, filled as the request goes, when the log is on.
    pub log: Option<(&'a AccessLog, Box<Entry>)>,
}

impl<'a> RequestCtx<'a> {
    pub(super) fn start(shard: &'a StatsShard) -> Self {
        shard.enter();
        Self {
            shard,
            start: Instant::now(),
            status: None,
            route: None,
            metrics: None,
            endpoint: None,
            attempts: 0,
            error: None,
            log: None,
        }
    }

    /// The access log line being filled, when the log is on.
    pub(super) fn log_entry(&mut self) -> Option<&mut Entry> {
        self.log.as_mut().map(|(_, entry)| &mut **entry)
    }
}

impl Drop for RequestCtx<'_> {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.shard.record(self.status, elapsed);
        if let Some(metrics) = self.metrics {
            metrics.record(self.status, elapsed);
        }
        if let Some((log, mut entry)) = self.log.take() {
            entry.status = self.status.map(|s| s.as_u16());
            entry.duration = elapsed;
            entry.endpoint = self.endpoint;
            entry.attempts = self.attempts;
            entry.error = self.error;
            log.log(*entry);
        }
        self.shard.leave();
    }
}
