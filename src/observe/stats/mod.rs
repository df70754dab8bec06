//! `/stats`: counts and latency of the traffic carried, for the gateway's
//! lifetime or a recent window, in total and per route and per backend.
//!
//! Recording: each worker thread records into its own shard (atomics plus a
//! histogram behind a lock only that worker and the rare reader touch), and
//! each route into its own per-worker slots (`observe::metrics`), so no lock
//! or cache line is shared by all requests.
//!
//! Keeping: a background thread (`recorder`) reads the counters every
//! `flush_interval` and adds what changed to an SQLite file (`store`):
//! lifetime totals and per-minute rollups. `/stats` is what the file held
//! when rgate started plus what this process has counted since, so it
//! survives restarts; `?window=5m` asks the file's recent rollups.

mod document;
mod recorder;
mod store;
#[cfg(test)]
mod store_tests;
mod table;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;

pub use self::document::{Breakdown, StatsDocument};
pub use self::recorder::{channel, open, Inbox, Recorder, RecorderHandle, RecorderThread};
pub use self::store::{
    Settings, Store, StoreError, Target, DEFAULT_FLUSH_INTERVAL, DEFAULT_RETENTION,
};
pub use self::table::command;
pub use crate::observe::tally::{
    histogram, LatencyMs, RequestsCount, Summary, Tally, COARSE, PRECISE,
};
use crate::snapshot::Snapshot;

/// One worker's share of the whole gateway's statistics.
#[derive(Debug)]
pub struct StatsShard {
    success: AtomicU64,
    error: AtomicU64,
    total_micros: AtomicU64,
    /// Requests being handled right now (for the drain report).
    in_flight: AtomicU64,
    histogram: Mutex<hdrhistogram::Histogram<u64>>,
}

impl StatsShard {
    fn new() -> Self {
        Self {
            success: AtomicU64::new(0),
            error: AtomicU64::new(0),
            total_micros: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            histogram: Mutex::new(histogram(PRECISE)),
        }
    }

    /// A request started.
    pub fn enter(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A request ended (answered or abandoned).
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Requests currently in flight on this worker.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Records one answered request. `None` status means the client went away
    /// before an answer, which counts as an error.
    pub fn record(&self, status: Option<StatusCode>, latency: Duration) {
        let counter = if is_success(status) {
            &self.success
        } else {
            &self.error
        };
        counter.fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.total_micros.fetch_add(micros, Relaxed);
        self.histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(micros.max(1));
    }
}

/// The contract's success: 200–399, and 101 (the upstream accepted a
/// protocol switch, e.g. a WebSocket).
pub fn is_success(status: Option<StatusCode>) -> bool {
    status.is_some_and(|status| matches!(status.as_u16(), 101 | 200..=399))
}

/// The whole gateway's shards (one per worker thread), what the store held
/// at start, and the way to the recorder.
#[derive(Debug, Clone)]
pub struct Stats {
    shards: Arc<[Arc<StatsShard>]>,
    /// Lifetime totals read from the store at start.
    base: Arc<Breakdown>,
    recorder: Option<RecorderHandle>,
}

/// Why a `/stats` question gets no document.
#[derive(Debug, PartialEq, Eq)]
pub enum StatsError {
    /// A query rgate does not understand (400).
    BadQuery(String),
    /// The recorder did not answer (503).
    Unavailable,
}

impl Stats {
    /// Per-process statistics with no store behind them.
    pub fn new(shards: usize) -> Self {
        Self::with_store(shards, Breakdown::default(), None)
    }

    pub fn with_store(shards: usize, base: Breakdown, recorder: Option<RecorderHandle>) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Arc::new(StatsShard::new()))
                .collect(),
            base: Arc::new(base),
            recorder,
        }
    }

    /// The shard of worker `index`.
    pub fn shard(&self, index: usize) -> Arc<StatsShard> {
        self.shards[index % self.shards.len()].clone()
    }

    /// Requests in flight over all workers.
    pub fn in_flight(&self) -> u64 {
        self.shards.iter().map(|shard| shard.in_flight()).sum()
    }

    /// What this process has counted, over every worker.
    pub fn counted(&self) -> Tally {
        let mut tally = Tally::new(PRECISE);
        for shard in self.shards.iter() {
            tally.success += shard.success.load(Relaxed);
            tally.error += shard.error.load(Relaxed);
            tally.total_micros = tally
                .total_micros
                .saturating_add(shard.total_micros.load(Relaxed));
            let histogram = shard
                .histogram
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Same bounds on every shard, so adding cannot fail.
            let _ = tally.latency.add(&*histogram);
        }
        tally
    }

    /// Lifetime figures: the store's totals at start plus this process's counts.
    pub fn lifetime(&self, snapshot: &Snapshot) -> StatsDocument {
        let mut breakdown = (*self.base).clone();
        breakdown.all.add(&self.counted());
        for route in snapshot.router.routes() {
            let tally = route.metrics.tally();
            let backend = &snapshot.backends[route.backend].name;
            breakdown.add_route(&route.name, backend, &tally);
        }
        breakdown.document(snapshot, None)
    }

    /// Answers `/stats` with its query string: the lifetime figures, or with
    /// `window=DURATION` those of the last whole minutes plus the current one.
    pub async fn answer(
        &self,
        query: Option<&str>,
        snapshot: &Snapshot,
    ) -> Result<StatsDocument, StatsError> {
        let window = query
            .into_iter()
            .flat_map(|query| query.split('&'))
            .find_map(|pair| pair.strip_prefix("window="));
        let Some(window) = window else {
            return Ok(self.lifetime(snapshot));
        };
        let minutes = window_minutes(window).ok_or_else(|| {
            StatsError::BadQuery(format!(
                "window={window}: expected a duration such as 5m, 1h or 24h"
            ))
        })?;
        let recorder = self.recorder.as_ref().ok_or(StatsError::Unavailable)?;
        let breakdown = recorder.window(minutes).await?;
        Ok(breakdown.document(snapshot, Some(window.to_owned())))
    }
}

/// A window's length in minutes: `N` followed by `m`, `h` or `d`, at least
/// one minute (`5m`, `1h`, `24h`, `7d`).
pub fn window_minutes(window: &str) -> Option<u64> {
    let unit = match window.chars().last()? {
        'm' => 1,
        'h' => 60,
        'd' => 24 * 60,
        _ => return None,
    };
    let count: u64 = window[..window.len() - 1].parse().ok()?;
    count.checked_mul(unit).filter(|minutes| *minutes >= 1)
}

/// The `/stats` answer, as the main port and the admin plane both give it.
pub fn respond(result: Result<StatsDocument, StatsError>) -> (StatusCode, Vec<u8>) {
    match result {
        Ok(document) => (
            StatusCode::OK,
            serde_json::to_vec(&document).unwrap_or_default(),
        ),
        Err(StatsError::BadQuery(detail)) => (
            StatusCode::BAD_REQUEST,
            serde_json::to_vec(&serde_json::json!({"error": "bad_query", "detail": detail}))
                .unwrap_or_default(),
        ),
        Err(StatsError::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":"stats_unavailable"}"#.to_vec(),
        ),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Option<StatusCode> {
        Some(StatusCode::from_u16(code).unwrap())
    }

    #[test]
    fn windows_are_minutes_hours_or_days() {
        assert_eq!(window_minutes("5m"), Some(5));
        assert_eq!(window_minutes("1h"), Some(60));
        assert_eq!(window_minutes("24h"), Some(1440));
        assert_eq!(window_minutes("7d"), Some(10_080));
        for bad in [
            "",
            "m",
            "0m",
            "5",
            "90s",
            "-1h",
            "1.5h",
            "5 m",
            "99999999999999999999d",
        ] {
            assert_eq!(window_minutes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn classifies_success_and_error_at_the_contract_boundaries() {
        let stats = Stats::new(1);
        let shard = stats.shard(0);
        for code in [101, 200, 204, 301, 399] {
            shard.record(status(code), Duration::from_millis(1));
        }
        for code in [400, 403, 404, 499, 500, 503] {
            shard.record(status(code), Duration::from_millis(1));
        }
        shard.record(None, Duration::from_millis(1));
        let report = stats.counted().summary();
        assert_eq!(report.requests_count.success, 5);
        assert_eq!(report.requests_count.error, 7);
    }

    #[test]
    fn percentiles_merge_across_shards() {
        let stats = Stats::new(2);
        // 100 requests of 1..=100 ms spread over two shards.
        for ms in 1..=100u64 {
            stats
                .shard(ms as usize)
                .record(status(200), Duration::from_millis(ms));
        }
        let report = stats.counted().summary();
        assert_eq!(report.requests_count.success, 100);
        assert!(
            (report.latency_ms.average - 50.5).abs() < 0.01,
            "{report:?}"
        );
        // hdrhistogram keeps 3 significant digits: within 0.1%.
        assert!((report.latency_ms.p95 - 95.0).abs() < 0.1, "{report:?}");
        assert!((report.latency_ms.p99 - 99.0).abs() < 0.1, "{report:?}");
    }

    #[test]
    fn empty_stats_report_zeros() {
        let report = Stats::new(2).counted().summary();
        assert_eq!(
            report.requests_count,
            RequestsCount {
                success: 0,
                error: 0
            }
        );
        assert_eq!(
            report.latency_ms,
            LatencyMs {
                average: 0.0,
                p95: 0.0,
                p99: 0.0
            }
        );
    }

    #[test]
    fn report_serialises_to_the_exact_contract_shape() {
        let stats = Stats::new(1);
        stats
            .shard(0)
            .record(status(200), Duration::from_micros(2000));
        let json = serde_json::to_string(&stats.counted().summary()).unwrap();
        assert_eq!(
            json,
            r#"{"requests_count":{"success":1,"error":0},"latency_ms":{"average":2.0,"p95":2.0,"p99":2.0}}"#
        );
    }
}
