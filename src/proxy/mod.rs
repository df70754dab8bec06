//! The request path. A request's journey, in order:
//!
//! ```text
//!  client ─► normalize ─► /stats? ─► route ─────► policy ─► admit ─► select ─► forward ─► policy ─► response
//!            (path)       (rgate     (host,       (CORS     (breaker, (balancer (pooled   (response  (hop-by-hop
//!                         answers)   prefix,      preflight, bulk-    over      HTTP/1.1, rules,     stripped,
//!                                    methods,     auth,     head)     healthy   timeouts, CORS       X-Request-Id;
//!                                    headers)     rate limit,         endpoints) retries) fields)    idle timeout)
//!                                                 request rules)
//!                                       │            │
//!                                       ▼            ▼
//!                               default_response   204 preflight answer
//! ```
//!
//! Every outcome, including failures and client cancellation, is recorded once
//! by the request context's drop ([`RequestCtx`]). Errors become responses in
//! exactly one place ([`GatewayError::into_response`]); their detail goes to
//! the debug log.

mod context;
mod forward;
pub(crate) mod headers;
pub mod inbound;
mod trace;
pub mod tunnel;
pub mod upstream;
pub mod validate;

use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use tracing::debug;

use crate::error::GatewayError;
use crate::observe::access_log::{AccessLog, Entry, Texts};
use crate::observe::stats::{self, Stats, StatsShard};
use crate::path::normalize;
use crate::policy::cors;
use crate::policy::decision::Decision;
use crate::policy::header_rules::Vars;
use crate::policy::EdgePolicy;
use crate::response::{self, ResponseBody};
use crate::router::{self, RouteRequest, RESERVED_PATH};
use crate::snapshot::SnapshotHandle;

pub use self::context::RequestCtx;
use self::headers::ClientAddr;
pub use self::headers::Scheme;
use self::inbound::ClientBody;

/// The gateway shared by every worker: the current snapshot and the stats.
#[derive(Debug)]
pub struct Gateway {
    snapshot: Arc<SnapshotHandle>,
    stats: Stats,
    /// Off (`None`) costs the request one pointer test.
    access_log: Option<Arc<AccessLog>>,
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

impl Gateway {
    pub fn new(
        snapshot: Arc<SnapshotHandle>,
        stats: Stats,
        access_log: Option<Arc<AccessLog>>,
    ) -> Self {
        Self {
            snapshot,
            stats,
            access_log,
        }
    }

    /// Answers one client request. Never fails: every error is a response here.
    ///
    /// One function for the whole journey (see the chart above): a nested
    /// future per phase would be built and copied into this one's state.
    pub async fn handle(
        ctx: &ConnectionContext,
        mut request: Request<ClientBody<'_>>,
    ) -> Response<ResponseBody> {
        let gateway = &*ctx.gateway;
        let checked = validate::request(&request);
        let normalized = normalize::path(request.uri().path());
        let path = normalized.as_deref().unwrap_or(request.uri().path());
        if path == RESERVED_PATH && checked.is_ok() {
            return gateway
                .stats_response(request.method(), request.uri().query())
                .await;
        }
        // Exactly one load: the request keeps this snapshot to the end (and
        // past its context, which borrows the route's counters from it).
        let snapshot = gateway.snapshot.load_full();
        let mut rctx = RequestCtx::start(&ctx.shard);
        if let Some(log) = gateway.access_log.as_deref() {
            rctx.log = Some((log, Box::new(log_entry(ctx, &request, rctx.start))));
        }
        let response = 'respond: {
            if let Err(bad) = checked {
                break 'respond GatewayError::from(bad).into_response();
            }
            let preflight = cors::preflight_method(request.method(), request.headers());
            let found = {
                // Read only when some route names a host; scoped so the
                // buffer is not part of the request's future.
                let mut buf = [0; router::MAX_HOST];
                let host = if snapshot.router.uses_hosts() {
                    router::request_host(request.uri(), request.headers(), &mut buf)
                } else {
                    None
                };
                snapshot.router.find(&RouteRequest {
                    path,
                    method: request.method(),
                    headers: request.headers(),
                    host,
                    preflight: preflight.as_ref(),
                })
            };
            let Some((index, route)) = found else {
                break 'respond response::default_response(&snapshot.default_response);
            };
            rctx.route = Some(index);
            rctx.metrics = Some(&route.metrics);
            if let Some(entry) = rctx.log_entry() {
                entry.route = Some(route.name.clone());
                entry.backend = Some(snapshot.backends[route.backend].name.clone());
            }
            let policy = route.policy.as_deref();
            // A preflight is answered here, never forwarded.
            if let (
                Some(EdgePolicy {
                    cors: Some(cors), ..
                }),
                Some(asked),
            ) = (policy, &preflight)
            {
                break 'respond cors.preflight(request.headers(), asked);
            }
            let identity = snapshot
                .trusted_proxies
                .client(ctx.client.ip, request.headers());
            let request_id = headers::request_id(request.headers());
            // What the answer's policy needs from the request, kept before
            // the request moves upstream. Routes without a policy skip it.
            let (origin, host_field) = match policy {
                None => (None, None),
                Some(policy) => (
                    policy
                        .cors
                        .as_ref()
                        .and_then(|_| request.headers().get(header::ORIGIN).cloned()),
                    request.headers().get(header::HOST).cloned(),
                ),
            };
            let vars = |request_id| Vars {
                client_ip: identity.ip,
                client_ip_value: (!identity.via_trusted_proxy).then_some(&ctx.client.header),
                request_id,
                route: &route.name,
                host: host_field.as_ref(),
            };
            // What the policy renders `{request_id}` from; the id itself
            // moves on to forwarding (a generated id's first clone allocates).
            let answer_id = policy.map(|_| request_id.clone());
            let mut limited = None;
            // Set when the request is forwarded; for the log of a failure.
            let mut traced = None;
            let result = 'forwarded: {
                // Auth, then the limit: before the backend's breaker and
                // bulkhead, so a refused request takes no slot and no
                // upstream connection.
                let mut verified = None;
                if let Some(auth) = policy.and_then(|p| p.auth.as_ref()) {
                    match auth.check(request.headers()).await {
                        Ok(token) => verified = token,
                        Err(failure) => {
                            route.metrics.auth_failure(failure.reason());
                            break 'forwarded Err(GatewayError::Auth {
                                route: route.name.clone(),
                                failure,
                            });
                        }
                    }
                    // Before anything reads them: only verified claims.
                    auth.rewrite(request.headers_mut(), verified.as_deref());
                }
                if let Some(limit) = policy.and_then(|p| p.rate_limit.as_deref()) {
                    let decision = match &limit.shared {
                        None => limit.check(
                            identity.ip,
                            request.headers(),
                            verified.as_deref().map(|v| &v.claims),
                        ),
                        // Boxed: the round trip's state stays out of this
                        // future for routes that never take it.
                        Some(shared) => {
                            Box::pin(limit.decide_shared(
                                shared,
                                identity.ip,
                                request.headers(),
                                verified.as_deref().map(|v| &v.claims),
                            ))
                            .await
                        }
                    };
                    limited = Some(decision);
                    if let Decision::Limited { retry_after } = decision {
                        route.metrics.rate_limited();
                        break 'forwarded Err(GatewayError::RateLimited {
                            route: route.name.clone(),
                            retry_after,
                        });
                    }
                }
                let rules = policy.and_then(|p| p.request_headers.as_ref());
                if let (Some(rules), Some(id)) = (rules, &answer_id) {
                    rules.apply(request.headers_mut(), &vars(id));
                }
                let parent = trace::TraceParent::for_request(request.headers());
                if !parent.continued {
                    // The state of a trace that is not continued.
                    request.headers_mut().remove(&trace::TRACESTATE);
                }
                traced = Some(parent);
                if let Some(entry) = rctx.log_entry() {
                    entry.client_ip = identity.ip;
                    entry.texts.set_request_id(request_id.as_bytes());
                    entry.trace_id = parent.trace_id().as_bytes().try_into().ok();
                }
                let forwarding = forward::Forwarding {
                    route,
                    backend: &snapshot.backends[route.backend],
                    client: &ctx.client,
                    identity,
                    request_id,
                    trace: parent,
                    normalized_path: normalized.as_deref(),
                };
                forward::forward(forwarding, request, &mut rctx).await
            };
            let mut response = result.unwrap_or_else(|error| {
                rctx.error = Some(error.code());
                debug!(
                    route = %route.name,
                    trace_id = traced.as_ref().map_or("", trace::TraceParent::trace_id),
                    endpoint = ?rctx.endpoint,
                    attempts = rctx.attempts,
                    %error,
                    "request failed"
                );
                error.into_response()
            });
            if let (Some(policy), Some(id)) = (policy, &answer_id) {
                policy.respond(response.headers_mut(), origin.as_ref(), limited, &vars(id));
            }
            response
        };
        rctx.status = Some(response.status());
        if let Some(entry) = rctx.log_entry() {
            entry.bytes_out = content_length(response.headers());
        }
        response
    }

    async fn stats_response(&self, method: &Method, query: Option<&str>) -> Response<ResponseBody> {
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
        let snapshot = self.snapshot.load_full();
        let (status, body) = stats::respond(self.stats.answer(query, &snapshot).await);
        response::json(status, body)
    }
}

/// The access log line of a request, as far as its head tells.
fn log_entry(
    ctx: &ConnectionContext,
    request: &Request<ClientBody<'_>>,
    start: std::time::Instant,
) -> Entry {
    let uri = request.uri();
    let host = match request.headers().get(header::HOST) {
        Some(host) => Some(host.as_bytes()),
        None => uri
            .authority()
            .map(|authority| authority.as_str().as_bytes()),
    };
    Entry {
        start,
        texts: Texts::new(
            uri.path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str),
            host,
        ),
        trace_id: None,
        client_ip: ctx.client.ip,
        method: request.method().clone(),
        status: None,
        bytes_in: content_length(request.headers()),
        bytes_out: None,
        duration: std::time::Duration::ZERO,
        endpoint: None,
        route: None,
        backend: None,
        attempts: 0,
        error: None,
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
