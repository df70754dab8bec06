//! The contract's `/stats` counters and latency histogram.
//!
//! Each worker thread records into its own shard (atomics plus a histogram
//! behind a lock only that worker and the rare `/stats` reader touch), so no
//! lock or cache line is shared by all requests. `/stats` merges the shards.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use http::StatusCode;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Latencies are recorded in microseconds, from 1 µs to one hour, 3 significant digits.
const HIGHEST_MICROS: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure is a programming error.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// One worker's share of the statistics.
#[derive(Debug)]
pub struct StatsShard {
    success: AtomicU64,
    error: AtomicU64,
    total_micros: AtomicU64,
    /// Requests being handled right now (for the drain report).
    in_flight: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
}

impl StatsShard {
    fn new() -> Self {
        Self {
            success: AtomicU64::new(0),
            error: AtomicU64::new(0),
            total_micros: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            histogram: Mutex::new(new_histogram()),
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
        let counter = match status {
            // 101: the upstream accepted a protocol switch (e.g. a WebSocket).
            Some(status) if matches!(status.as_u16(), 101 | 200..=399) => &self.success,
            _ => &self.error,
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

/// All shards: one per worker thread.
#[derive(Debug, Clone)]
pub struct Stats {
    shards: Arc<[Arc<StatsShard>]>,
}

/// The exact `/stats` document of the contract.
#[derive(Debug, Serialize, PartialEq)]
pub struct StatsReport {
    pub requests_count: RequestsCount,
    pub latency_ms: LatencyMs,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct RequestsCount {
    pub success: u64,
    pub error: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct LatencyMs {
    pub average: f64,
    pub p95: f64,
    pub p99: f64,
}

fn millis(micros: f64) -> f64 {
    // Three decimals (microsecond resolution) keep the document short and stable.
    (micros / 1000.0 * 1000.0).round() / 1000.0
}

impl Stats {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Arc::new(StatsShard::new()))
                .collect(),
        }
    }

    /// The shard of worker `index`.
    pub fn shard(&self, index: usize) -> Arc<StatsShard> {
        self.shards[index % self.shards.len()].clone()
    }

    /// Merges every shard into the contract's report.
    /// Requests in flight over all workers.
    pub fn in_flight(&self) -> u64 {
        self.shards.iter().map(|shard| shard.in_flight()).sum()
    }

    pub fn report(&self) -> StatsReport {
        let mut merged = new_histogram();
        let (mut success, mut error, mut total_micros) = (0u64, 0u64, 0u64);
        for shard in self.shards.iter() {
            success += shard.success.load(Relaxed);
            error += shard.error.load(Relaxed);
            total_micros = total_micros.saturating_add(shard.total_micros.load(Relaxed));
            let histogram = shard
                .histogram
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Same bounds on every shard, so adding cannot fail.
            let _ = merged.add(&*histogram);
        }
        let count = success + error;
        let (average, p95, p99) = if count == 0 {
            (0.0, 0.0, 0.0)
        } else {
            (
                total_micros as f64 / count as f64,
                merged.value_at_quantile(0.95) as f64,
                merged.value_at_quantile(0.99) as f64,
            )
        };
        StatsReport {
            requests_count: RequestsCount { success, error },
            latency_ms: LatencyMs {
                average: millis(average),
                p95: millis(p95),
                p99: millis(p99),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Option<StatusCode> {
        Some(StatusCode::from_u16(code).unwrap())
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
        let report = stats.report();
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
        let report = stats.report();
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
        let report = Stats::new(2).report();
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
        let json = serde_json::to_string(&stats.report()).unwrap();
        assert_eq!(
            json,
            r#"{"requests_count":{"success":1,"error":0},"latency_ms":{"average":2.0,"p95":2.0,"p99":2.0}}"#
        );
    }
}
