//! The request path. A request's journey, in order:
//!
//! ```text
//!  client ──► normalize ──► /stats? ──► route ──► admit ──► select endpoint ──► forward ──► response
//!              (path)        (rgate     (longest   (bulk-   (balancer over      (pooled      (hop-by-hop
//!                            answers)    prefix)    head)    the endpoints      HTTP/1.1,    stripped,
//!                                           │                that are healthy,  timeouts,    X-Request-Id;
//!                                           ▼                not ejected, not   retries in   idle timeout)
//!                                    default_response        breaker-open)      budget)
//! ```
//!
//! Every outcome, including failures and client cancellation, is recorded once
//! by a drop guard for `/stats`. Errors become responses in exactly one place
//! ([`GatewayError::into_response`]).

mod forward;
pub(crate) mod headers;
pub mod inbound;
pub mod tunnel;
pub mod upstream;
pub mod validate;

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};

use crate::error::GatewayError;
use crate::observe::stats::{Stats, StatsShard};
use crate::path::normalize;
use crate::response::{self, ResponseBody};
use crate::router::RESERVED_PATH;
use crate::snapshot::SnapshotHandle;

use self::headers::ClientAddr;
pub use self::headers::Scheme;
use self::inbound::ClientBody;

/// The gateway shared by every worker: the current snapshot and the stats.
#[derive(Debug)]
pub struct Gateway {
    snapshot: Arc<SnapshotHandle>,
    stats: Stats,
}

/// Per-connection context: the gateway, the worker's stats shard, the peer
/// and the scheme it connected with.
#[derive(Debug)]
pub struct ConnectionContext {
    gateway: Arc<Gateway>,
    shard: Arc<StatsShard>,
    client: ClientAddr,
}

impl ConnectionContext {
    pub fn new(
        gateway: Arc<Gateway>,
        shard: Arc<StatsShard>,
        peer: std::net::SocketAddr,
        scheme: Scheme,
    ) -> Self {
        Self {
            gateway,
            shard,
            client: ClientAddr::new(peer, scheme),
        }
    }
}

/// Records the request's outcome exactly once, even if the client goes away
/// and the request future is dropped mid-flight.
struct Outcome<'a> {
    shard: &'a StatsShard,
    start: Instant,
    status: Option<StatusCode>,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.shard.record(self.status, self.start.elapsed());
        self.shard.leave();
    }
}

impl Gateway {
    pub fn new(snapshot: Arc<SnapshotHandle>, stats: Stats) -> Self {
        Self { snapshot, stats }
    }

    /// Answers one client request. Never fails: every error is a response here.
    pub async fn handle(
        ctx: &ConnectionContext,
        request: Request<ClientBody<'_>>,
    ) -> Response<ResponseBody> {
        let gateway = &*ctx.gateway;
        let checked = validate::request(&request);
        let normalized = normalize::path(request.uri().path());
        let path = normalized.as_deref().unwrap_or(request.uri().path());
        if path == RESERVED_PATH && checked.is_ok() {
            return gateway.stats_response(request.method());
        }
        ctx.shard.enter();
        let mut outcome = Outcome {
            shard: &ctx.shard,
            start: Instant::now(),
            status: None,
        };
        // Exactly one load: the request keeps this snapshot to the end.
        let snapshot = gateway.snapshot.load_full();
        let response = match (checked, snapshot.router.find(path)) {
            (Err(bad), _) => GatewayError::from(bad).into_response(),
            (Ok(()), None) => response::default_response(&snapshot.default_response),
            (Ok(()), Some(route)) => {
                let backend = &snapshot.backends[route.backend];
                forward::forward(
                    route,
                    backend,
                    &ctx.client,
                    request,
                    normalized.as_deref(),
                    outcome.start,
                )
                .await
                .unwrap_or_else(GatewayError::into_response)
            }
        };
        outcome.status = Some(response.status());
        response
    }

    fn stats_response(&self, method: &Method) -> Response<ResponseBody> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = response::json(
                StatusCode::METHOD_NOT_ALLOWED,
                br#"{"error":"method_not_allowed"}"#.to_vec(),
            );
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return response;
        }
        let body = serde_json::to_vec(&self.stats.report()).unwrap_or_default();
        response::json(StatusCode::OK, body)
    }
}
