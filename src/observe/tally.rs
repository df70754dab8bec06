//! A tally of answered requests: success and error counts, total latency and
//! a latency histogram; and its summary, the contract's `/stats` figures.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Significant digits of the whole gateway's histogram (the contract's p95/p99).
pub const PRECISE: u8 = 3;
/// Per route, per backend and in per-minute rollups: 1% keeps them small
/// (about 26 KB in memory, a few hundred bytes stored).
pub const COARSE: u8 = 2;

/// An empty latency histogram with `significant` digits.
pub fn histogram(significant: u8) -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure is a programming error.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIGHEST_MICROS, significant)
        .expect("constant histogram bounds are valid")
}

/// Counts and latencies of answered requests.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Status 101 and 200–399.
    pub success: u64,
    /// Status 400 and above, and requests whose client left before an answer.
    pub error: u64,
    pub total_micros: u64,
    pub latency: Histogram<u64>,
}

impl Tally {
    pub fn new(significant: u8) -> Self {
        Self {
            success: 0,
            error: 0,
            total_micros: 0,
            latency: histogram(significant),
        }
    }

    pub fn count(&self) -> u64 {
        self.success + self.error
    }

    pub fn add(&mut self, other: &Tally) {
        self.success = self.success.saturating_add(other.success);
        self.error = self.error.saturating_add(other.error);
        self.total_micros = self.total_micros.saturating_add(other.total_micros);
        // Same bounds on both sides, so every value fits.
        let _ = self.latency.add(&other.latency);
    }

    /// What was recorded since `earlier`, a previous reading of the same
    /// counters; everything, when they are not the same counters any more
    /// (a route replaced by one that starts from zero).
    pub fn since(&self, earlier: &Tally) -> Tally {
        let grew = self.success >= earlier.success
            && self.error >= earlier.error
            && self.total_micros >= earlier.total_micros;
        if grew {
            let mut latency = self.latency.clone();
            if latency.subtract(&earlier.latency).is_ok() {
                return Tally {
                    success: self.success - earlier.success,
                    error: self.error - earlier.error,
                    total_micros: self.total_micros - earlier.total_micros,
                    latency,
                };
            }
        }
        self.clone()
    }

    /// The contract's figures.
    pub fn summary(&self) -> Summary {
        let count = self.count();
        let (average, p95, p99) = if count == 0 || self.latency.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (
                self.total_micros as f64 / count as f64,
                self.latency.value_at_quantile(0.95) as f64,
                self.latency.value_at_quantile(0.99) as f64,
            )
        };
        Summary {
            requests_count: RequestsCount {
                success: self.success,
                error: self.error,
            },
            latency_ms: LatencyMs {
                average: millis(average),
                p95: millis(p95),
                p99: millis(p99),
            },
        }
    }
}

/// The contract's `/stats` figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub requests_count: RequestsCount,
    pub latency_ms: LatencyMs,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestsCount {
    pub success: u64,
    pub error: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyMs {
    pub average: f64,
    pub p95: f64,
    pub p99: f64,
}

fn millis(micros: f64) -> f64 {
    // Three decimals (microsecond resolution) keep the document short and stable.
    (micros / 1000.0 * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(success: u64, error: u64, latencies: &[u64]) -> Tally {
        let mut tally = Tally::new(COARSE);
        tally.success = success;
        tally.error = error;
        for us in latencies {
            tally.total_micros += us;
            tally.latency.record(*us).unwrap();
        }
        tally
    }

    #[test]
    fn since_is_the_difference_of_two_readings() {
        let earlier = tally(2, 1, &[100, 200, 300]);
        let later = tally(5, 1, &[100, 200, 300, 1000, 1000, 1000]);
        let delta = later.since(&earlier);
        assert_eq!(
            (delta.success, delta.error, delta.total_micros),
            (3, 0, 3000)
        );
        assert_eq!(delta.latency.len(), 3);
        assert_eq!(delta.latency.min(), delta.latency.lowest_equivalent(1000));
    }

    #[test]
    fn since_takes_everything_from_counters_that_restarted() {
        let earlier = tally(10, 0, &[500; 10]);
        let later = tally(2, 1, &[100, 100, 100]);
        let delta = later.since(&earlier);
        assert_eq!((delta.success, delta.error), (2, 1));
        assert_eq!(delta.latency.len(), 3);
    }

    #[test]
    fn add_then_summary() {
        let mut total = tally(1, 0, &[1000]);
        total.add(&tally(0, 1, &[3000]));
        let summary = total.summary();
        assert_eq!(
            summary.requests_count,
            RequestsCount {
                success: 1,
                error: 1
            }
        );
        assert!((summary.latency_ms.average - 2.0).abs() < 1e-9);
        assert!((summary.latency_ms.p99 - 3.0).abs() < 0.05, "{summary:?}");
    }
}
