//! Per-route rate limits in memory: GCRA from governor, keyed by the
//! client's address, a header, or nothing (one limit for the route).
//!
//! - A decision is one atomic compare-and-swap on the key's state; a limit
//!   for the whole route needs no map at all.
//! - Keyed state is bounded. A background sweep (see [`sweep`]) drops keys
//!   whose bucket is full again, so idle clients cost nothing. At most
//!   `max_keys` keys are tracked (give or take the 64 checks per worker
//!   between two counts); past that, until the sweep frees room,
//!   requests share one overflow bucket with the same quota, so a flood of
//!   distinct keys (spoofed headers, many addresses) is limited as one
//!   client and cannot grow memory.
//! - Answers carry `RateLimit-Limit` (the burst), `RateLimit-Remaining` and
//!   `RateLimit-Reset` (seconds until the bucket is full again); a refusal
//!   is a 429 with `Retry-After` in whole seconds, at least 1.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::decision::Decision;
use super::shared_limit::{OnError, SharedStore};
use crate::auth::Claims;
use std::sync::Arc;

/// Distinct keys tracked per route when the config sets no limit.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
type Keyed = RateLimiter<Key, DashMapStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// What a route's limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address (after `trusted_proxies`).
    ClientIp,
    /// A header's value; requests without it share one bucket.
    Header(HeaderName),
    /// A claim of the route's verified token; anonymous requests share one bucket.
    Claim(Box<str>),
    /// One limit for all of the route's requests.
    Route,
}

/// A key's identity in the map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Ip(IpAddr),
    Value(Box<[u8]>),
}

impl Key {
    /// The key as bytes, appended to `out` (for a shared store's key name).
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Key::Ip(ip) => {
                use std::io::Write;
                let _ = write!(out, "{ip}");
            }
            Key::Value(value) => out.extend_from_slice(value),
        }
    }
}

/// A route's compiled `rate_limit`, with its buckets.
#[derive(Debug)]
pub struct RateLimit {
    pub key: LimitKey,
    /// `requests` per `per`, and the burst: for reloads to tell whether a
    /// new config keeps the same limit.
    pub settings: (u32, Duration, u32),
    max_keys: usize,
    whole_route: Option<Direct>,
    keyed: Option<Keyed>,
    /// Shared by new keys while the map is full.
    overflow: Direct,
    full: AtomicBool,
    clock: DefaultClock,
    limit_value: HeaderValue,
    /// Where decisions are made when replicas share the limit; `None`: here.
    pub shared: Option<Shared>,
}

/// A limit kept in a shared store, under the route's namespace.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<SharedStore>,
    /// The route's stable id: keys of one route never meet another's.
    pub namespace: Box<str>,
}

impl RateLimit {
    /// `requests` per `per`, bursts of up to `burst`. `None` if the rate is
    /// finer than a nanosecond per request.
    pub fn new(
        requests: NonZeroU32,
        per: Duration,
        burst: NonZeroU32,
        key: LimitKey,
        max_keys: usize,
    ) -> Option<Self> {
        let quota = Quota::with_period(per / requests.get())?.allow_burst(burst);
        let clock = DefaultClock::default();
        let direct = || RateLimiter::direct_with_clock(quota, clock.clone()).with_middleware();
        let keyed = (key != LimitKey::Route)
            .then(|| RateLimiter::dashmap_with_clock(quota, clock.clone()).with_middleware());
        Some(Self {
            settings: (requests.get(), per, burst.get()),
            whole_route: (key == LimitKey::Route).then(direct),
            keyed,
            overflow: direct(),
            full: AtomicBool::new(false),
            limit_value: HeaderValue::from(burst.get()),
            key,
            max_keys,
            clock,
            shared: None,
        })
    }

    /// GCRA parameters for a shared store: the emission interval in
    /// microseconds and the burst.
    pub fn gcra(&self) -> (f64, u32) {
        let (requests, per, burst) = self.settings;
        (per.as_secs_f64() * 1e6 / f64::from(requests), burst)
    }

    /// Whether `other` counts the same way in the same place, so its
    /// buckets can be kept across a reload.
    pub fn same_limit(&self, other: &RateLimit) -> bool {
        let same_store = match (&self.shared, &other.shared) {
            (None, None) => true,
            (Some(a), Some(b)) => a.store.same_settings(&b.store) && a.namespace == b.namespace,
            _ => false,
        };
        self.settings == other.settings && self.key == other.key && same_store
    }

    /// One decision in the shared store; when it does not answer in time,
    /// the store's `on_error` decides here.
    pub async fn decide_shared(
        &self,
        shared: &Shared,
        client_ip: IpAddr,
        headers: &HeaderMap,
        claims: Option<&Claims>,
    ) -> Decision {
        let mut name = Vec::with_capacity(32 + shared.namespace.len());
        name.extend_from_slice(b"rgate:rl:");
        name.extend_from_slice(shared.namespace.as_bytes());
        name.push(b':');
        self.key(client_ip, headers, claims).write_to(&mut name);
        let (interval_us, burst) = self.gcra();
        if let Some(decision) = shared.store.decide(&name, interval_us, burst).await {
            return decision;
        }
        match shared.store.on_error {
            OnError::Allow => Decision::Allowed {
                remaining: burst,
                reset: 0,
            },
            OnError::Deny => Decision::Limited { retry_after: 1 },
            OnError::Local => self.check(client_ip, headers, claims),
        }
    }

    /// Takes one request from the bucket its key selects.
    pub fn check(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        claims: Option<&Claims>,
    ) -> Decision {
        let outcome = match (&self.whole_route, &self.keyed) {
            (Some(route), _) => route.check(),
            (None, Some(keyed)) => {
                if self.full.load(Relaxed) {
                    self.overflow.check()
                } else {
                    let key = self.key(client_ip, headers, claims);
                    let outcome = keyed.check_key(&key);
                    // Counting the map takes every shard's lock: done once
                    // per LEN_EVERY checks on each worker, so the map may
                    // pass max_keys by at most that many keys per worker.
                    if tick() && keyed.len() >= self.max_keys {
                        self.full.store(true, Relaxed);
                    }
                    outcome
                }
            }
            (None, None) => self.overflow.check(),
        };
        match outcome {
            Ok(state) => Decision::Allowed {
                remaining: state.remaining_burst_capacity(),
                reset: self.reset_secs(&state),
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision::Limited {
                    retry_after: ceil_secs(wait).max(1),
                }
            }
        }
    }

    /// The bucket a request counts against.
    pub(crate) fn key(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        claims: Option<&Claims>,
    ) -> Key {
        match &self.key {
            LimitKey::Header(name) => Key::Value(
                headers
                    .get(name)
                    .map_or_else(Box::default, |v| v.as_bytes().into()),
            ),
            LimitKey::Claim(name) => {
                Key::Value(match claims.and_then(|claims| claims.get(&**name)) {
                    Some(serde_json::Value::String(text)) => text.as_bytes().into(),
                    Some(other) => other.to_string().into_bytes().into(),
                    None => Box::default(),
                })
            }
            LimitKey::ClientIp => Key::Ip(client_ip),
            LimitKey::Route => Key::Value(Box::default()),
        }
    }

    /// Seconds until the bucket is full again.
    fn reset_secs(&self, state: &StateSnapshot) -> u64 {
        let quota = state.quota();
        let missing = quota.burst_size().get() - state.remaining_burst_capacity();
        ceil_secs(quota.replenish_interval() * missing)
    }

    /// The `RateLimit-*` fields of an answer.
    pub fn headers(&self, decision: Decision, headers: &mut HeaderMap) {
        let (remaining, reset) = match decision {
            Decision::Allowed { remaining, reset } => (remaining, reset),
            Decision::Limited { retry_after } => (0, retry_after),
        };
        headers.insert(RATELIMIT_LIMIT.clone(), self.limit_value.clone());
        headers.insert(RATELIMIT_REMAINING.clone(), number(u64::from(remaining)));
        headers.insert(RATELIMIT_RESET.clone(), number(reset));
    }

    /// Drops keys whose bucket is full again (they would start afresh
    /// anyway), and lets new keys in again if that made room.
    pub fn sweep(&self) {
        if let Some(keyed) = &self.keyed {
            keyed.retain_recent();
            keyed.shrink_to_fit();
            if keyed.len() < self.max_keys {
                self.full.store(false, Relaxed);
            }
        }
    }
}

/// Numbers below this are written from a table (see [`number`]).
const SMALL_NUMBERS: u64 = 1024;

/// `n` as a field value. Below [`SMALL_NUMBERS`] from a table of static
/// text made once per process: no allocation, and no reference count shared
/// by the workers; above, formatted.
fn number(n: u64) -> HeaderValue {
    static TEXT: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        (0..SMALL_NUMBERS)
            .map(|n| &*Box::leak(n.to_string().into_boxed_str()))
            .collect()
    });
    match usize::try_from(n).ok().and_then(|i| TEXT.get(i)) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(n),
    }
}

/// How often a worker counts a keyed map (see [`RateLimit::check`]).
const LEN_EVERY: u32 = 64;

/// True once every [`LEN_EVERY`] calls on this thread; thread-local, so
/// workers share no counter.
fn tick() -> bool {
    thread_local! {
        static CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    CALLS.with(|calls| {
        let n = calls.get().wrapping_add(1);
        calls.set(n);
        n % LEN_EVERY == 0
    })
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(
        requests: u32,
        per: Duration,
        burst: u32,
        key: LimitKey,
        max_keys: usize,
    ) -> RateLimit {
        RateLimit::new(
            NonZeroU32::new(requests).unwrap(),
            per,
            NonZeroU32::new(burst).unwrap(),
            key,
            max_keys,
        )
        .unwrap()
    }

    impl RateLimit {
        fn tracked_keys(&self) -> usize {
            self.keyed.as_ref().map_or(0, Keyed::len)
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn numbers_render_the_same_from_the_table_and_formatted() {
        for n in [0, 7, 1023, 1024, 99_999] {
            assert_eq!(number(n), HeaderValue::from(n));
        }
    }

    #[test]
    fn a_burst_passes_then_the_limit_refuses_with_a_retry_after() {
        let limit = limit(1, Duration::from_secs(10), 3, LimitKey::Route, 10);
        let headers = HeaderMap::new();
        let decisions: Vec<Decision> = (0..4).map(|_| limit.check(IP, &headers, None)).collect();
        assert_eq!(
            decisions[0],
            Decision::Allowed {
                remaining: 2,
                reset: 10
            }
        );
        assert_eq!(
            decisions[2],
            Decision::Allowed {
                remaining: 0,
                reset: 30
            }
        );
        let Decision::Limited { retry_after } = decisions[3] else {
            panic!("{decisions:?}");
        };
        assert!((9..=10).contains(&retry_after), "{retry_after}");
        let mut out = HeaderMap::new();
        limit.headers(decisions[3], &mut out);
        assert_eq!(out["ratelimit-limit"], "3");
        assert_eq!(out["ratelimit-remaining"], "0");
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let by_header = limit(
            1,
            Duration::from_secs(60),
            1,
            LimitKey::Header(HeaderName::from_static("x-key")),
            10,
        );
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-key", HeaderValue::from_static(value));
            headers
        };
        assert!(matches!(
            by_header.check(IP, &with("a"), None),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            by_header.check(IP, &with("a"), None),
            Decision::Limited { .. }
        ));
        assert!(matches!(
            by_header.check(IP, &with("b"), None),
            Decision::Allowed { .. }
        ));
        // No header: one shared bucket.
        assert!(matches!(
            by_header.check(IP, &HeaderMap::new(), None),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            by_header.check(IP, &HeaderMap::new(), None),
            Decision::Limited { .. }
        ));

        let by_ip = limit(1, Duration::from_secs(60), 1, LimitKey::ClientIp, 10);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
        assert!(matches!(
            by_ip.check(IP, &HeaderMap::new(), None),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            by_ip.check(IP, &HeaderMap::new(), None),
            Decision::Limited { .. }
        ));
        assert!(matches!(
            by_ip.check(other, &HeaderMap::new(), None),
            Decision::Allowed { .. }
        ));
    }

    #[test]
    fn a_flood_of_keys_is_bounded_and_shares_the_overflow_bucket() {
        let limit = limit(
            1,
            Duration::from_secs(60),
            1,
            LimitKey::Header(HeaderName::from_static("x-key")),
            100,
        );
        let mut allowed = 0;
        for i in 0..10_000u32 {
            let mut headers = HeaderMap::new();
            headers.insert("x-key", HeaderValue::from(i));
            if matches!(limit.check(IP, &headers, None), Decision::Allowed { .. }) {
                allowed += 1;
            }
        }
        let tracked = limit.tracked_keys();
        assert!(
            (100..100 + LEN_EVERY as usize).contains(&tracked),
            "{tracked}"
        );
        // The tracked keys got their own burst; the other ~9,900 shared one.
        assert_eq!(allowed, tracked + 1);
        // The sweep keeps keys whose buckets are still draining.
        limit.sweep();
        assert_eq!(limit.tracked_keys(), tracked);
    }

    #[test]
    fn the_sweep_forgets_idle_keys_and_lets_new_ones_in() {
        let limit = limit(1000, Duration::from_millis(10), 1, LimitKey::ClientIp, 2);
        for last in 1..=200u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, last));
            limit.check(ip, &HeaderMap::new(), None);
        }
        assert!(
            limit.tracked_keys() < 2 + LEN_EVERY as usize,
            "{}",
            limit.tracked_keys()
        );
        std::thread::sleep(Duration::from_millis(5));
        limit.sweep();
        assert_eq!(limit.tracked_keys(), 0);
        let fresh = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));
        limit.check(fresh, &HeaderMap::new(), None);
        assert_eq!(limit.tracked_keys(), 1, "new keys are tracked again");
    }
}
