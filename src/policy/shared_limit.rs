//! Rate limits shared by every rgate replica through Redis
//! (`rate_limit_store: {url, timeout, on_error}`).
//!
//! - One round trip per decision: a Lua script runs GCRA on the key
//!   atomically, on Redis's own clock (`TIME`), so replicas with skewed
//!   clocks still agree. Keys are `rgate:rl:<route id>:<key>` and expire
//!   when their bucket is full again, so idle keys cost Redis nothing.
//! - Each worker has its own multiplexed connection (thread-local, like the
//!   upstream pool): no lock shared by all requests.
//! - Redis slow or down never holds a request past `timeout`: the decision
//!   is then made here per `on_error` (allow, deny, or the route's own
//!   in-memory limit), the failure is counted, and the connection is rebuilt
//!   by a background task with a backoff. The outage is logged once when it
//!   starts and once when it ends.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use rustc_hash::FxHashMap;
use tracing::{info, warn};

use super::decision::Decision;

/// What a decision falls back to when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Let the request through (availability over the limit).
    Allow,
    /// Refuse it with a 429 (the limit over availability).
    Deny,
    /// Apply the route's limit in this process alone.
    Local,
}

/// A Redis server shared by replicas, with its failure policy.
#[derive(Debug)]
pub struct SharedStore {
    pub url: Box<str>,
    client: redis::Client,
    pub timeout: Duration,
    pub on_error: OnError,
    /// Set during an outage, for logging it once.
    down: AtomicBool,
    /// Decisions made without Redis.
    failures: AtomicU64,
}

/// GCRA in microseconds. ARGV: emission interval, burst. Returns
/// `{allowed, remaining, retry_after_us, reset_us}`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + tolerance - new_tat) / interval), 0, math.ceil(new_tat - now)}
";

/// Backoff between reconnects, doubling up to the max.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// This worker's connection to one store, by URL.
#[derive(Default)]
struct Slot {
    connection: Option<MultiplexedConnection>,
    /// A connect is under way (inline or in the background).
    connecting: bool,
}

/// The script with its SHA1, computed once: calls send `EVALSHA`.
static GCRA: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SCRIPT));

thread_local! {
    static CONNECTIONS: RefCell<FxHashMap<Box<str>, Slot>> = RefCell::new(FxHashMap::default());
}

impl SharedStore {
    /// Checks the URL (no connection yet: workers connect on first use).
    pub fn new(url: &str, timeout: Duration, on_error: OnError) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|error| error.to_string())?;
        Ok(Self {
            url: url.into(),
            client,
            timeout,
            on_error,
            down: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        })
    }

    /// Whether two stores are configured the same (for reloads).
    pub fn same_settings(&self, other: &SharedStore) -> bool {
        self.url == other.url && self.timeout == other.timeout && self.on_error == other.on_error
    }

    /// Decisions made without Redis so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// One GCRA decision on the key `name`, within `timeout`; `None` when
    /// Redis did not answer in time (counted, and the outage logged once),
    /// for the caller's `on_error`.
    pub async fn decide(
        self: &Arc<Self>,
        name: &[u8],
        interval_us: f64,
        burst: u32,
    ) -> Option<Decision> {
        let asked = tokio::time::timeout(self.timeout, self.run(name, interval_us, burst)).await;
        match asked {
            Ok(Ok((allowed, remaining, retry_after_us, reset_us))) => {
                // A plain load in the common case; written once per outage.
                if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
                    info!(url = %self.url, failed_decisions = self.failures(), "rate-limit store answering again");
                }
                Some(if allowed == 1 {
                    Decision::Allowed {
                        remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                        reset: ceil_secs_us(reset_us),
                    }
                } else {
                    Decision::Limited {
                        retry_after: ceil_secs_us(retry_after_us).max(1),
                    }
                })
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                None
            }
            Err(_) => {
                self.failed("no answer within the timeout");
                None
            }
        }
    }

    async fn run(
        self: &Arc<Self>,
        name: &[u8],
        interval_us: f64,
        burst: u32,
    ) -> Result<(i64, i64, i64, i64), Unavailable> {
        let mut connection = match self.connection() {
            Some(connection) => connection,
            None => self
                .connect_inline()
                .await
                .ok_or(Unavailable::NotConnected)?,
        };
        let mut invocation = GCRA.key(name);
        invocation.arg(interval_us).arg(burst);
        match invocation.invoke_async(&mut connection).await {
            Ok(result) => Ok(result),
            Err(error) => {
                // A broken connection is rebuilt in the background; a script
                // error (a wrong reply) leaves it as it is.
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
                {
                    self.forget_connection();
                }
                Err(Unavailable::Redis(error))
            }
        }
    }

    /// This worker's connection, if it has one. Starts a background connect
    /// when it has none and none is under way.
    fn connection(self: &Arc<Self>) -> Option<MultiplexedConnection> {
        CONNECTIONS.with(|slots| {
            let mut slots = slots.borrow_mut();
            match slots.get(&*self.url) {
                Some(Slot {
                    connection: Some(connection),
                    ..
                }) => Some(connection.clone()),
                Some(Slot {
                    connecting: true, ..
                }) => None,
                // The worker's first decision connects inline (see `run`).
                None => None,
                Some(_) => {
                    slots.insert(
                        self.url.clone(),
                        Slot {
                            connection: None,
                            connecting: true,
                        },
                    );
                    tokio::spawn(self.clone().reconnect());
                    None
                }
            }
        })
    }

    /// The worker's first connection, made by its first decision within the
    /// decision's timeout; on failure the background reconnect takes over.
    async fn connect_inline(self: &Arc<Self>) -> Option<MultiplexedConnection> {
        let first = CONNECTIONS.with(|slots| {
            let mut slots = slots.borrow_mut();
            if slots.contains_key(&*self.url) {
                return false;
            }
            slots.insert(
                self.url.clone(),
                Slot {
                    connection: None,
                    connecting: true,
                },
            );
            true
        });
        if !first {
            return None;
        }
        match self.open().await {
            Ok(connection) => {
                self.install(connection.clone());
                Some(connection)
            }
            Err(error) => {
                self.failed(&error.to_string());
                tokio::spawn(self.clone().reconnect());
                None
            }
        }
    }

    async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RECONNECT_MAX.min(Duration::from_secs(1))))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    fn install(&self, connection: MultiplexedConnection) {
        CONNECTIONS.with(|slots| {
            slots.borrow_mut().insert(
                self.url.clone(),
                Slot {
                    connection: Some(connection),
                    connecting: false,
                },
            );
        });
    }

    fn forget_connection(&self) {
        CONNECTIONS.with(|slots| {
            if let Some(slot) = slots.borrow_mut().get_mut(&*self.url) {
                slot.connection = None;
            }
        });
    }

    /// Rebuilds this worker's connection, off the request path.
    async fn reconnect(self: Arc<Self>) {
        let mut backoff = RECONNECT_FIRST;
        loop {
            match self.open().await {
                Ok(connection) => {
                    self.install(connection);
                    if self.down.swap(false, Ordering::Relaxed) {
                        info!(url = %self.url, failed_decisions = self.failures(), "rate-limit store reachable again");
                    }
                    return;
                }
                Err(error) => {
                    if !self.down.swap(true, Ordering::Relaxed) {
                        warn!(url = %self.url, %error, on_error = ?self.on_error, "rate-limit store unreachable; deciding locally until it is back");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// Counts a decision made without Redis; the outage is logged once.
    fn failed(&self, why: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            warn!(url = %self.url, error = why, on_error = ?self.on_error, "rate-limit store failed; deciding locally until it answers again");
        }
    }
}

#[derive(Debug)]
enum Unavailable {
    NotConnected,
    Redis(redis::RedisError),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotConnected => f.write_str("not connected"),
            Unavailable::Redis(error) => write!(f, "{error}"),
        }
    }
}

fn ceil_secs_us(us: i64) -> u64 {
    u64::try_from(us.max(0)).unwrap_or(0).div_ceil(1_000_000)
}
