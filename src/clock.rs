//! The process clock that per-endpoint and per-route state is stamped with.
//!
//! Milliseconds in a `u64` fit one atomic, so state such as "ejected until"
//! or "breaker open until" is read and written without a lock.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on a process-local clock, never 0 (0 means "not set").
pub fn now_millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}
