//! The outcome of a rate limit's check, wherever the limit is kept.

/// One request's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `remaining` requests fit in the bucket now; it is full again in
    /// `reset` seconds.
    Allowed { remaining: u32, reset: u64 },
    /// Refused; one request fits again in `retry_after` seconds (at least 1).
    Limited { retry_after: u64 },
}
