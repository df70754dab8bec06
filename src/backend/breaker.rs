//! Circuit breakers. Per endpoint: an endpoint that fails too large a share
//! of its recent requests is cut off for `open_for`, then tried again with a
//! few probes before it takes full traffic. Per backend ([`BackendCircuit`]):
//! the same machine, judged on what clients receive after retries, so one sick
//! endpoint that retries and endpoint breakers absorb never opens it; only a
//! backend failing as a whole does.
//!
//! ```text
//!   closed ──(≥ min_requests in the window, failures ≥ error_ratio)──► open
//!   open ──(open_for elapsed: at most half_open_probes at once)──► half-open
//!   half-open ──(half_open_probes successes)──► closed
//!   half-open ──(any failure)──► open
//! ```
//!
//! All state is atomics on the endpoint. The pick reads it without side
//! effects. The request's outcome drives the transitions. The counting
//! window is fixed-length and restarts when it expires; a reset racing with a
//! record may drop one count, which does not matter at these thresholds.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A backend's `circuit_breaker:` settings, applied to each of its endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breaker {
    /// Share of failed requests in the window that opens the breaker.
    pub error_ratio: f64,
    /// Requests the window needs before the ratio counts.
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    /// Requests let through at once while half-open; that many successes close it.
    pub half_open_probes: u32,
}

/// One endpoint's breaker state.
#[derive(Debug, Default)]
pub struct BreakerState {
    state: AtomicU8,
    /// While open: until when (`clock::now_millis` time).
    open_until: AtomicU64,
    window_start: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
    /// Half-open probes sent and not yet answered.
    probes: AtomicU32,
    /// Half-open probes that succeeded.
    successes: AtomicU32,
}

/// A change of an endpoint breaker's state that a request's outcome caused
/// (the move from open to half-open is a matter of time, not of outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, for the admin plane.
    pub fn phase(&self) -> &'static str {
        match self.state.load(std::sync::atomic::Ordering::Relaxed) {
            OPEN => "open",
            HALF_OPEN => "half_open",
            _ => "closed",
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 4)
}

impl Breaker {
    /// Whether the endpoint may take a request now. Has no side effects.
    pub fn allows(&self, state: &BreakerState, now: u64) -> bool {
        match state.state.load(Relaxed) {
            OPEN => now >= state.open_until.load(Relaxed),
            HALF_OPEN => state.probes.load(Relaxed) < self.half_open_probes,
            _ => true,
        }
    }

    /// Called for the endpoint a request is about to use. Returns whether
    /// the request is a half-open probe (pass it back to [`Breaker::record`]).
    pub fn on_send(&self, state: &BreakerState, now: u64) -> bool {
        let current = state.state.load(Relaxed);
        if current == OPEN
            && now >= state.open_until.load(Relaxed)
            && state
                .state
                .compare_exchange(OPEN, HALF_OPEN, Relaxed, Relaxed)
                .is_ok()
        {
            state.probes.store(0, Relaxed);
            state.successes.store(0, Relaxed);
        }
        if state.state.load(Relaxed) == HALF_OPEN {
            state.probes.fetch_add(1, Relaxed);
            return true;
        }
        false
    }

    /// Forgets a request that ended without a verdict (cancelled, or never
    /// sent): a probe slot it held is freed, nothing is counted.
    pub fn release(&self, state: &BreakerState, probe: bool) {
        if probe {
            state.probes.fetch_sub(1, Relaxed);
        }
    }

    /// Records a request's outcome; `probe` is what [`Breaker::on_send`] said.
    /// Returns the transition it caused, if any (for metrics).
    pub fn record(
        &self,
        state: &BreakerState,
        probe: bool,
        failed: bool,
        now: u64,
    ) -> Option<Transition> {
        if probe {
            state.probes.fetch_sub(1, Relaxed);
            if state.state.load(Relaxed) != HALF_OPEN {
                return None;
            }
            if failed {
                self.open(state, now);
                return Some(Transition::Opened);
            } else if state.successes.fetch_add(1, Relaxed) + 1 >= self.half_open_probes {
                state.state.store(CLOSED, Relaxed);
                self.restart_window(state, now);
                return Some(Transition::Closed);
            }
            return None;
        }
        if state.state.load(Relaxed) != CLOSED {
            return None;
        }
        if now.saturating_sub(state.window_start.load(Relaxed)) >= millis(self.window) {
            self.restart_window(state, now);
        }
        let requests = state.requests.fetch_add(1, Relaxed) + 1;
        let failures = if failed {
            state.failures.fetch_add(1, Relaxed) + 1
        } else {
            state.failures.load(Relaxed)
        };
        if failed
            && requests >= self.min_requests
            && f64::from(failures) >= self.error_ratio * f64::from(requests)
        {
            self.open(state, now);
            return Some(Transition::Opened);
        }
        None
    }

    fn open(&self, state: &BreakerState, now: u64) {
        state.open_until.store(now + millis(self.open_for), Relaxed);
        state.state.store(OPEN, Relaxed);
    }

    fn restart_window(&self, state: &BreakerState, now: u64) {
        state.window_start.store(now, Relaxed);
        state.requests.store(0, Relaxed);
        state.failures.store(0, Relaxed);
    }
}

/// A breaker over a whole backend: open, it answers every request at once
/// without touching an endpoint.
#[derive(Debug)]
pub struct BackendCircuit {
    breaker: Breaker,
    state: BreakerState,
}

/// The backend's breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen;

/// A request let through a [`BackendCircuit`]; give it the request's verdict
/// with [`Pass::record`]. Dropped without one, it only frees its probe slot.
#[derive(Debug)]
pub struct Pass<'a> {
    circuit: &'a BackendCircuit,
    probe: bool,
    done: bool,
}

impl BackendCircuit {
    pub fn new(breaker: Breaker) -> Self {
        Self {
            breaker,
            state: BreakerState::default(),
        }
    }

    /// Lets a request through, or refuses it while the breaker is open (or
    /// half-open with every probe slot taken).
    pub fn pass(&self, now: u64) -> Result<Pass<'_>, CircuitOpen> {
        if !self.breaker.allows(&self.state, now) {
            return Err(CircuitOpen);
        }
        Ok(Pass {
            circuit: self,
            probe: self.breaker.on_send(&self.state, now),
            done: false,
        })
    }
}

impl Pass<'_> {
    /// Records the request's final verdict; returns the transition it caused.
    pub fn record(mut self, failed: bool, now: u64) -> Option<Transition> {
        self.done = true;
        let circuit = self.circuit;
        circuit
            .breaker
            .record(&circuit.state, self.probe, failed, now)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.circuit
                .breaker
                .release(&self.circuit.state, self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BREAKER: Breaker = Breaker {
        error_ratio: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        half_open_probes: 2,
    };

    fn fail(state: &BreakerState, n: u32, now: u64) {
        for _ in 0..n {
            BREAKER.record(state, false, true, now);
        }
    }

    fn succeed(state: &BreakerState, n: u32, now: u64) {
        for _ in 0..n {
            BREAKER.record(state, false, false, now);
        }
    }

    #[test]
    fn opens_at_the_error_ratio_once_enough_requests_were_seen() {
        let state = BreakerState::default();
        fail(&state, 9, 1);
        assert!(
            BREAKER.allows(&state, 1),
            "below min_requests nothing opens"
        );
        succeed(&state, 9, 1);
        // 10 failures of 19: above 50%; the failure that opens it says so.
        assert_eq!(
            BREAKER.record(&state, false, true, 1),
            Some(Transition::Opened)
        );
        assert!(!BREAKER.allows(&state, 1));
        assert!(!BREAKER.allows(&state, 5_000));
        assert!(
            BREAKER.allows(&state, 5_001),
            "open_for elapsed: probes may go"
        );
    }

    #[test]
    fn a_low_error_ratio_keeps_it_closed() {
        let state = BreakerState::default();
        for _ in 0..50 {
            succeed(&state, 3, 1);
            fail(&state, 2, 1);
        }
        assert!(BREAKER.allows(&state, 1), "40% < 50%");
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let state = BreakerState::default();
        fail(&state, 9, 1);
        succeed(&state, 1, 10_002); // the next window starts afresh
        fail(&state, 1, 10_002);
        assert!(BREAKER.allows(&state, 10_002));
    }

    #[test]
    fn half_open_limits_probes_and_closes_after_successes() {
        let state = BreakerState::default();
        fail(&state, 10, 1);
        let later = 6_000;
        let first = BREAKER.on_send(&state, later);
        let second = BREAKER.on_send(&state, later);
        assert!(first && second, "both are probes");
        assert!(
            !BREAKER.allows(&state, later),
            "no more than half_open_probes at once"
        );
        assert_eq!(BREAKER.record(&state, true, false, later), None);
        assert_eq!(
            BREAKER.record(&state, true, false, later),
            Some(Transition::Closed),
            "the closing probe reports it"
        );
        assert!(BREAKER.allows(&state, later));
        assert!(!BREAKER.on_send(&state, later), "closed again: not a probe");
    }

    #[test]
    fn a_failed_probe_reopens() {
        let state = BreakerState::default();
        fail(&state, 10, 1);
        let later = 6_000;
        assert!(BREAKER.on_send(&state, later));
        assert_eq!(
            BREAKER.record(&state, true, true, later),
            Some(Transition::Opened)
        );
        assert!(!BREAKER.allows(&state, later + 1));
        assert!(BREAKER.allows(&state, later + 5_000));
    }

    #[test]
    fn a_backend_circuit_opens_refuses_and_recovers_through_probes() {
        let circuit = BackendCircuit::new(BREAKER);
        for _ in 0..10 {
            circuit.pass(1).unwrap().record(true, 1);
        }
        assert_eq!(circuit.pass(2).unwrap_err(), CircuitOpen);
        let later = 6_000;
        let first = circuit.pass(later).unwrap();
        let second = circuit.pass(later).unwrap();
        assert_eq!(
            circuit.pass(later).unwrap_err(),
            CircuitOpen,
            "half-open: two probe slots, both taken"
        );
        drop(first);
        let third = circuit.pass(later).expect("a dropped probe frees its slot");
        second.record(false, later);
        third.record(false, later);
        for _ in 0..100 {
            circuit
                .pass(later)
                .expect("closed again")
                .record(false, later);
        }
    }
}
