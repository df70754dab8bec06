//! Retry policy and retry budget.
//!
//! A retry is only ever sent where it is safe. A request that never left
//! rgate can go anywhere. One that may have reached the upstream is repeated
//! only when it is idempotent (or carries an `Idempotency-Key`) and has no
//! body to lose. On top of that, a **budget** bounds retries to a share of
//! recent traffic, so a failing backend is never hit with a retry storm.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};

/// Bodies up to this size are kept for replays unless the config says otherwise.
pub const DEFAULT_REPLAY_BODY_LIMIT: u64 = 64 * 1024;
/// Retry budget tokens are counted in thousandths.
const MILLI: i64 = 1000;
/// Retries that may happen before traffic has earned any: lets a quiet route
/// still retry a few failures.
const RESERVE_TOKENS: i64 = 10;

/// When and how often a route retries (`retries:` in the config).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries, the first included; 1 disables retries.
    pub attempts: u32,
    /// Retry when the connection broke before a response arrived.
    pub on_reset: bool,
    /// Upstream statuses that are retried (from 502, 503, 504).
    pub on_status: Vec<StatusCode>,
    /// Bodies of repeatable requests up to this size (by Content-Length) are
    /// read before sending, so that a replay can resend them.
    pub replay_body_limit: u64,
    pub budget: Arc<RetryBudget>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            on_reset: true,
            on_status: Vec::new(),
            replay_body_limit: DEFAULT_REPLAY_BODY_LIMIT,
            budget: Arc::new(RetryBudget::new(0.2)),
        }
    }
}

/// RFC 9110 §9.2.2 idempotent methods: repeating them is harmless.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether a request that may have reached the upstream may be sent again
/// (given its body is still at hand).
pub(crate) fn safe_to_repeat(method: &Method, headers: &HeaderMap) -> bool {
    is_idempotent(method) || headers.contains_key("idempotency-key")
}

/// A token bucket shared by a route's requests: every request earns
/// `ratio` of a retry, every retry spends one, and the bucket holds at most
/// [`RESERVE_TOKENS`]. Over any period, retries ≤ ratio × requests + reserve.
#[derive(Debug)]
pub struct RetryBudget {
    milli_tokens: AtomicI64,
    earn_per_request: i64,
}

impl RetryBudget {
    /// `ratio` is retries allowed per request, e.g. 0.2 for 20%.
    pub fn new(ratio: f64) -> Self {
        Self {
            milli_tokens: AtomicI64::new(RESERVE_TOKENS * MILLI),
            earn_per_request: (ratio.clamp(0.0, 1.0) * MILLI as f64) as i64,
        }
    }

    /// Retries earned per request, in thousandths: budgets of one share are
    /// interchangeable across a reload.
    pub fn ratio_milli(&self) -> i64 {
        self.earn_per_request
    }

    /// Called once per request. A full bucket (the normal state) is only read,
    /// so healthy traffic does not contend on this counter.
    pub fn earn(&self) {
        let cap = RESERVE_TOKENS * MILLI;
        if self.earn_per_request > 0 && self.milli_tokens.load(Relaxed) < cap {
            let after =
                self.milli_tokens.fetch_add(self.earn_per_request, Relaxed) + self.earn_per_request;
            if after > cap {
                // Clamp; a racing earn may overshoot by one request's share, harmlessly.
                self.milli_tokens.fetch_sub(after - cap, Relaxed);
            }
        }
    }

    /// Takes the token for one retry, if the budget has one.
    pub fn spend(&self) -> bool {
        self.milli_tokens
            .fetch_update(Relaxed, Relaxed, |tokens| {
                (tokens >= MILLI).then_some(tokens - MILLI)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_allows_a_few_retries_before_any_traffic() {
        let budget = RetryBudget::new(0.2);
        let spent = (0..100).filter(|_| budget.spend()).count();
        assert_eq!(spent, RESERVE_TOKENS as usize);
    }

    #[test]
    fn retries_stay_within_the_ratio_of_requests() {
        let budget = RetryBudget::new(0.2);
        let (requests, mut retries) = (10_000, 0);
        for _ in 0..requests {
            budget.earn();
            // Every request fails and wants a retry: a storm in the making.
            if budget.spend() {
                retries += 1;
            }
        }
        let limit = requests / 5 + RESERVE_TOKENS as usize;
        assert!(
            retries <= limit,
            "{retries} retries for {requests} requests"
        );
        assert!(retries >= limit - 1, "the budget is usable: {retries}");
    }

    #[test]
    fn a_zero_budget_only_has_the_reserve() {
        let budget = RetryBudget::new(0.0);
        for _ in 0..1000 {
            budget.earn();
        }
        assert_eq!(
            (0..100).filter(|_| budget.spend()).count(),
            RESERVE_TOKENS as usize
        );
    }

    #[test]
    fn only_idempotent_or_keyed_requests_are_safe_to_repeat() {
        let mut headers = HeaderMap::new();
        assert!(safe_to_repeat(&Method::GET, &headers));
        assert!(safe_to_repeat(&Method::DELETE, &headers));
        assert!(!safe_to_repeat(&Method::POST, &headers));
        headers.insert("idempotency-key", "k-1".parse().unwrap());
        assert!(safe_to_repeat(&Method::POST, &headers));
    }
}
