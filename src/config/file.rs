//! Serde mirror of the YAML config file: one-to-one with what users write, no logic.
//!
//! These types never leave the `config` module; `compile` turns them into the
//! runtime types the request path uses.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::ConfigDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Each a [`RouteFile`], read one by one so that one bad route hides
    /// nothing about the others (see `config::parse`).
    #[serde(default)]
    pub(crate) routes: Vec<serde_yaml_ng::Value>,
    pub(crate) default_response: Option<DefaultResponseFile>,
    /// Each a [`BackendFile`], read one by one like the routes.
    #[serde(default)]
    pub(crate) backends: Vec<serde_yaml_ng::Value>,
    pub(crate) docker: Option<DockerFile>,
    pub(crate) limits: Option<LimitsFile>,
    pub(crate) tls: Option<TlsFile>,
    /// Peers whose `X-Forwarded-For` is believed (default: none).
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    /// Each a [`JwtFile`], read one by one like the routes.
    #[serde(default)]
    pub(crate) jwt: Vec<serde_yaml_ng::Value>,
    /// `memory` (default), or a [`RedisStoreFile`] shared by replicas.
    pub(crate) rate_limit_store: Option<serde_yaml_ng::Value>,
    /// `off`, or an [`AdminFile`] (default: on, 127.0.0.1:9901).
    pub(crate) admin: Option<serde_yaml_ng::Value>,
    /// One line per request (default off).
    pub(crate) access_log: Option<AccessLogFile>,
    /// Where `/stats` is kept (default: a file next to this one).
    pub(crate) stats: Option<StatsFile>,
}

/// The stats store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsFile {
    /// An SQLite file (relative to the config's directory), or `none`.
    pub(crate) store: Option<String>,
    /// How often counts are written (default 1s).
    pub(crate) flush_interval: Option<ConfigDuration>,
    /// How long per-minute rollups are kept (default 7d).
    pub(crate) retention: Option<ConfigDuration>,
}

/// The access log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLogFile {
    /// `stdout`, or a file (appended to; reopened on SIGUSR1).
    pub(crate) path: String,
    /// `json` (default) or `common`.
    pub(crate) format: Option<String>,
    /// Lines waiting for the writer before new ones are dropped (default 8192).
    pub(crate) buffer: Option<usize>,
}

/// The admin listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    /// `IP:port` (default 127.0.0.1:9901).
    pub(crate) listen: Option<String>,
    /// Allow a non-loopback address (default false).
    #[serde(default)]
    pub(crate) allow_public: bool,
}

/// Rate limits kept in Redis, shared by every replica.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisStoreFile {
    /// `redis://[user:password@]host:port/db`.
    pub(crate) url: String,
    /// Longest wait for Redis on a request (default 50ms).
    pub(crate) timeout: Option<ConfigDuration>,
    /// `allow` (default), `deny` or `local` when Redis is slow or down.
    pub(crate) on_error: Option<String>,
}

/// A JWT provider: whose tokens, for whom, verified with which keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtFile {
    pub(crate) name: String,
    /// The `iss` every token must carry.
    pub(crate) issuer: String,
    /// Exactly one of `jwks_url`, `jwks_file`, `secret_file`.
    pub(crate) jwks_url: Option<String>,
    pub(crate) jwks_file: Option<String>,
    /// A shared secret for HS256/384/512 (at least 32 bytes).
    pub(crate) secret_file: Option<String>,
    /// A token's `aud` must name one of these (default: `aud` not checked).
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    /// Default RS256 and ES256 (HS256 with `secret_file`).
    pub(crate) algorithms: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf` (default 30s).
    pub(crate) leeway: Option<ConfigDuration>,
    /// How often the JWKS is fetched again (default 10m).
    pub(crate) refresh: Option<ConfigDuration>,
    /// Claims copied into request headers, e.g. `sub: X-User-Id`.
    #[serde(default)]
    pub(crate) forward_claims: BTreeMap<String, String>,
    /// Pass `Authorization` on to the upstream (default false: removed).
    #[serde(default)]
    pub(crate) forward_token: bool,
    /// Verified tokens each worker keeps (default 1024; 0 verifies every request).
    pub(crate) token_cache: Option<usize>,
}

/// A route's token check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthFile {
    /// The `name` of a `jwt` provider.
    pub(crate) provider: String,
    /// `false`: requests without a token pass; one that is present must verify.
    #[serde(default = "yes")]
    pub(crate) required: bool,
}

fn yes() -> bool {
    true
}

/// Client-facing limits of the listener.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    /// Largest request head: request line plus headers (default 64 KiB).
    pub(crate) max_header_size: Option<bytesize::ByteSize>,
    /// Time allowed for a request head, counted from when the connection is
    /// ready for one (default 10s).
    pub(crate) header_read_timeout: Option<ConfigDuration>,
    /// Client connections open at once, over all workers (default 10000).
    pub(crate) max_connections: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    /// Shown in logs and metrics; default: the path prefix.
    pub(crate) name: Option<String>,
    pub(crate) path_prefix: String,
    pub(crate) backend: String,
    /// `api.example.com` or `*.example.com` (default: any host).
    pub(crate) host: Option<String>,
    /// Methods this route takes (default: any).
    pub(crate) methods: Option<Vec<String>>,
    /// Header fields a request must carry, with these exact values.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    /// Remove the matched prefix before forwarding (default false).
    #[serde(default)]
    pub(crate) strip_prefix: bool,
    /// Replace the matched prefix with this one before forwarding.
    pub(crate) rewrite_prefix: Option<String>,
    pub(crate) request_headers: Option<HeaderRulesFile>,
    pub(crate) response_headers: Option<HeaderRulesFile>,
    pub(crate) cors: Option<CorsFile>,
    pub(crate) auth: Option<AuthFile>,
    pub(crate) rate_limit: Option<RateLimitFile>,
    #[serde(default)]
    pub(crate) path_match: PathMatchFile,
    /// Limit for the upstream's response head (default 30s).
    pub(crate) timeout: Option<ConfigDuration>,
    /// Limit for a pause in the upstream's response body (default 60s).
    pub(crate) idle_timeout: Option<ConfigDuration>,
    pub(crate) retries: Option<RetriesFile>,
    /// Largest request body accepted (default: unlimited, streamed).
    pub(crate) max_body: Option<bytesize::ByteSize>,
}

/// Header rules, applied in the order remove → set → add.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderRulesFile {
    #[serde(default)]
    pub(crate) remove: Vec<String>,
    #[serde(default)]
    pub(crate) set: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) add: BTreeMap<String, String>,
}

/// A per-route request rate limit (GCRA).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitFile {
    /// Requests allowed per `per`.
    pub(crate) requests: u32,
    pub(crate) per: ConfigDuration,
    /// Requests allowed at once (default: `requests`).
    pub(crate) burst: Option<u32>,
    /// `ip` (default), `header:NAME`, `claim:NAME` (with `auth`) or `route`.
    pub(crate) key: Option<String>,
    /// Distinct keys tracked at once (default 100000).
    pub(crate) max_keys: Option<usize>,
}

/// Cross-origin resource sharing for browsers (the Fetch standard's CORS protocol).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorsFile {
    /// Exact origins, `https://*.example.com` patterns, or `["*"]`.
    pub(crate) allow_origins: Vec<String>,
    /// Default: the route's `methods`, else GET, HEAD, POST.
    pub(crate) allow_methods: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) allow_headers: Vec<String>,
    #[serde(default)]
    pub(crate) expose_headers: Vec<String>,
    #[serde(default)]
    pub(crate) allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub(crate) max_age: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetriesFile {
    /// Total tries, the first included (default 2; 1 disables retries).
    pub(crate) attempts: Option<u32>,
    /// Conditions: `connect_error`, `reset`, 502, 503, 504 (default connect_error, reset).
    pub(crate) on: Option<Vec<RetryOnFile>>,
    /// Retries allowed per request, 0.0–1.0 (default 0.2).
    pub(crate) budget: Option<f64>,
    /// Bodies up to this many bytes are kept for replays (default 65536).
    pub(crate) replay_body_limit: Option<u64>,
}

/// One retry condition: a name or an upstream status code.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum RetryOnFile {
    Status(u16),
    Name(String),
}

/// How `path_prefix` is compared with the request path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PathMatchFile {
    /// The contract's literal reading: the path starts with the prefix.
    #[default]
    Prefix,
    /// Whole path segments only: `/api/pay` matches `/api/pay` and `/api/pay/x`, not `/api/payx`.
    Segment,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultResponseFile {
    #[serde(default)]
    pub(crate) body: String,
    pub(crate) status_code: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendFile {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) match_labels: Vec<String>,
    #[serde(default)]
    pub(crate) servers: Vec<String>,
    pub(crate) port: Option<u16>,
    /// Limit for opening a connection to an endpoint (default 1s).
    pub(crate) connect_timeout: Option<ConfigDuration>,
    /// Bulkhead: requests in flight at once (default unlimited).
    pub(crate) max_in_flight: Option<u32>,
    /// Passive ejection of failing endpoints (default off).
    pub(crate) outlier: Option<OutlierFile>,
    /// Per-endpoint circuit breaking (default off).
    pub(crate) circuit_breaker: Option<BreakerFile>,
    pub(crate) backend_circuit_breaker: Option<BreakerFile>,
    /// Active HTTP probes of every endpoint (default off).
    pub(crate) health_check: Option<HealthCheckFile>,
    #[serde(default)]
    pub(crate) balance: BalanceFile,
    /// `ip`, `header:NAME` or `cookie:NAME`; required by `balance: hash`.
    pub(crate) hash_on: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutlierFile {
    /// Failures in a row that eject an endpoint (default 5).
    pub(crate) consecutive_errors: Option<u32>,
    /// How long an ejected endpoint stays out (default 30s).
    pub(crate) eject_for: Option<ConfigDuration>,
    /// The largest share of endpoints ejected at once (default 50).
    pub(crate) max_ejected_percent: Option<u8>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakerFile {
    /// Share of failures in the window that opens the breaker (default 0.5).
    pub(crate) error_ratio: Option<f64>,
    /// Requests in the window before the ratio counts (default 20).
    pub(crate) min_requests: Option<u32>,
    /// The counting window (default 10s).
    pub(crate) window: Option<ConfigDuration>,
    /// How long the breaker stays open (default 5s).
    pub(crate) open_for: Option<ConfigDuration>,
    /// Probes let through at once while half-open (default 3).
    pub(crate) half_open_probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckFile {
    /// The path probed with GET (default /health).
    pub(crate) path: Option<String>,
    /// Time between probes (default 5s).
    pub(crate) interval: Option<ConfigDuration>,
    /// Limit for one probe (default 1s).
    pub(crate) timeout: Option<ConfigDuration>,
    /// Failed probes in a row that take an endpoint out (default 3).
    pub(crate) unhealthy_after: Option<u32>,
    /// Passed probes in a row that bring it back (default 2).
    pub(crate) healthy_after: Option<u32>,
    /// The status of a passing probe (default: any 2xx).
    pub(crate) expect_status: Option<u16>,
    /// New endpoints wait for passing probes before taking traffic (default false).
    #[serde(default)]
    pub(crate) wait_healthy: bool,
}

/// A backend's balancing policy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BalanceFile {
    #[default]
    Random,
    RoundRobin,
    LeastConn,
    Weighted,
    Hash,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerFile {
    pub(crate) endpoint: Option<String>,
    pub(crate) network: Option<String>,
    pub(crate) host_address: Option<String>,
    #[serde(default)]
    pub(crate) address: AddressModeFile,
    pub(crate) resync_interval: Option<ConfigDuration>,
    /// Several daemons, each a URL or a [`DockerEndpointFile`].
    pub(crate) endpoints: Option<Vec<serde_yaml_ng::Value>>,
}

/// One daemon of `docker.endpoints`, with what differs from the section's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerEndpointFile {
    pub(crate) url: String,
    pub(crate) tls: Option<DockerTlsFile>,
    pub(crate) address: Option<AddressModeFile>,
    pub(crate) host_address: Option<String>,
}

/// Client certificate, key and CA of a daemon that requires TLS (PEM files).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerTlsFile {
    pub(crate) ca: String,
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// Which address of a container rgate dials.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AddressModeFile {
    /// The container's own IP on its network (or the host address on the host network).
    #[default]
    Container,
    /// The host port Docker publishes for the container port.
    Published,
}

/// TLS on the main listener: `certificates`, or `cert` and `key` for one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    /// Chosen by SNI; the first is the default.
    pub(crate) certificates: Option<Vec<CertificateFile>>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    /// A plain-HTTP listener on this port redirecting to HTTPS (default none).
    pub(crate) redirect_http_port: Option<u16>,
}

/// PEM files: the chain (leaf first) and its private key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateFile {
    pub(crate) cert: String,
    pub(crate) key: String,
}
