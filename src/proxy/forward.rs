//! Forwarding: pick an endpoint, send the request over a pooled connection,
//! stream the answer back; retry once where that is provably safe. An
//! HTTP/1.1 upgrade that the upstream accepts becomes a tunnel.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::time::{timeout_at, Instant};

use super::headers::{self, ClientAddr, Forwarded, X_REQUEST_ID};
use super::inbound::{ClientBody, ClientBodyError};
use super::tunnel::Tunnel;
use super::upstream::{
    self, ConnectError, Connection, Failed, Framing, Held, RequestBody, SendError,
};
use crate::backend::balance::{Balance, RequestKey};
use crate::backend::breaker::{CircuitOpen, Pass};
use crate::backend::endpoint::{Endpoint, EndpointSet, InFlight};
use crate::backend::{Admission, Backend, Saturated};
use crate::clock::now_millis;
use crate::error::GatewayError;
use crate::path::rewrite::PrefixRewrite;
use crate::policy::retry::safe_to_repeat;
use crate::policy::trusted::ClientIdentity;
use crate::response::ResponseBody;
use crate::router::Route;

use super::RequestCtx;

/// Why one attempt failed, and whether the request can still be sent.
struct Failure<'a> {
    kind: FailureKind,
    /// The request's body, when the request never left rgate: safe to send
    /// elsewhere whatever its method.
    unsent: Option<RequestBody<'a>>,
    /// Whether the failed connection came from the pool (possibly stale).
    reused: bool,
}

enum FailureKind {
    Connect(ConnectError),
    /// The connection broke before a response arrived.
    Broken(SendError),
    /// The upstream answered with something that is not HTTP.
    BadResponse(upstream::HeadError),
    /// The client's body broke off or was malformed while streaming upstream.
    ClientBody(ClientBodyError),
    /// The client's streamed body passed the route's `max_body`.
    TooLarge,
    /// The client went away while the upstream was answering.
    ClientGone,
    /// No response head by the route's deadline.
    Timeout,
}

impl FailureKind {
    fn into_error(self, backend: &Arc<str>) -> GatewayError {
        let backend = backend.clone();
        match self {
            FailureKind::Connect(ConnectError::Timeout) => GatewayError::ConnectTimeout { backend },
            FailureKind::Connect(ConnectError::Io(source)) => {
                GatewayError::UpstreamConnect { backend, source }
            }
            FailureKind::Broken(source) => GatewayError::UpstreamReset { backend, source },
            FailureKind::BadResponse(source) => GatewayError::BadResponse { backend, source },
            FailureKind::ClientBody(source) => GatewayError::ClientBody { backend, source },
            FailureKind::TooLarge => GatewayError::BodyTooLarge { backend },
            FailureKind::ClientGone => GatewayError::ClientGone { backend },
            FailureKind::Timeout => GatewayError::UpstreamTimeout { backend },
        }
    }

    /// Whether the failure is the client's doing, and so says nothing about
    /// the endpoint's health.
    fn is_client_fault(&self) -> bool {
        matches!(
            self,
            FailureKind::ClientBody(_) | FailureKind::TooLarge | FailureKind::ClientGone
        )
    }
}

/// Tells the backend's circuit how the request ended, when that says
/// something about the backend's health; otherwise the pass is released.
fn settle(
    backend: &Backend,
    pass: Option<Pass<'_>>,
    result: Result<Response<ResponseBody>, GatewayError>,
) -> Result<Response<ResponseBody>, GatewayError> {
    if let (Some(pass), Some(failed)) = (pass, backend_verdict(&result)) {
        if let Some(transition) = pass.record(failed, now_millis()) {
            backend.metrics.circuit(transition);
        }
    }
    result
}

/// Whether a request's final result (after retries) counts against its
/// backend as a whole: `None` when it says nothing about the backend's health
/// (the client's fault, the bulkhead, or no endpoint to try).
fn backend_verdict(result: &Result<Response<ResponseBody>, GatewayError>) -> Option<bool> {
    match result {
        Ok(response) => Some(response.status().is_server_error()),
        Err(
            GatewayError::UpstreamConnect { .. }
            | GatewayError::ConnectTimeout { .. }
            | GatewayError::UpstreamReset { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::BadResponse { .. },
        ) => Some(true),
        Err(
            GatewayError::NoEndpoints { .. }
            | GatewayError::EndpointsUnavailable { .. }
            | GatewayError::CircuitOpen { .. }
            | GatewayError::Saturated { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::Auth { .. }
            | GatewayError::BadRequest(_)
            | GatewayError::HeadTooLarge
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::ClientBody { .. }
            | GatewayError::ClientGone { .. }
            | GatewayError::ClientTimeout { .. },
        ) => None,
    }
}

/// What forwarding needs besides the request: where it goes, and what rgate
/// already knows about it.
pub(super) struct Forwarding<'a> {
    pub(super) route: &'a Route,
    pub(super) backend: &'a Arc<Backend>,
    pub(super) client: &'a ClientAddr,
    pub(super) identity: ClientIdentity,
    pub(super) request_id: HeaderValue,
    pub(super) trace: super::trace::TraceParent,
    pub(super) normalized_path: Option<&'a str>,
}

/// Admits the request past the backend's circuit and bulkhead, then sends it
/// to an endpoint, retrying within the route's policy.
///
/// One function from admission to answer: every nested future would be
/// built and then copied into this one's state, per request.
pub(super) async fn forward(
    forwarding: Forwarding<'_>,
    request: Request<ClientBody<'_>>,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let Forwarding {
        route,
        backend,
        client,
        identity,
        request_id,
        trace,
        normalized_path,
    } = forwarding;
    // One deadline for the response head, across every attempt.
    let deadline = Instant::from_std(ctx.start) + route.timeout;
    let pass =
        match &backend.circuit {
            None => None,
            Some(circuit) => Some(circuit.pass(now_millis()).map_err(|CircuitOpen| {
                GatewayError::CircuitOpen {
                    backend: backend.name.clone(),
                }
            })?),
        };
    // A declared length over the limit is refused before anything is read.
    let max_body = route.max_body.unwrap_or(u64::MAX);
    if request
        .body()
        .size_hint()
        .exact()
        .is_some_and(|length| length > max_body)
    {
        return Err(GatewayError::BodyTooLarge {
            backend: backend.name.clone(),
        });
    }
    let admission = backend
        .admit()
        .map_err(|Saturated| GatewayError::Saturated {
            backend: backend.name.clone(),
        })?;
    let upgrade = headers::is_upgrade(request.version(), request.headers());
    let (mut parts, body) = request.into_parts();
    let host = headers::prepare_upstream_request(&mut parts, route, normalized_path, upgrade);
    let forwarded = Forwarded {
        client,
        trusted: identity.via_trusted_proxy,
        host: host.as_ref(),
        prefix: route
            .rewrite
            .as_ref()
            .map(|_| PrefixRewrite::forwarded_prefix(&route.prefix)),
        request_id: &request_id,
        trace: &trace,
    };

    let policy = &route.retry;
    policy.budget.earn();
    // Only least_conn reads in-flight counts: other policies skip the shared counter.
    let track = *backend.balancer.policy() == Balance::LeastConn;
    let pick = |endpoints: &EndpointSet, exclude: Option<&Endpoint>| {
        let key = RequestKey {
            client_ip: identity.ip,
            headers: &parts.headers,
        };
        backend
            .balancer
            .pick(endpoints, key, exclude, backend.breaker.as_ref())
    };
    let mut endpoint = {
        let endpoints = backend.endpoints();
        pick(&endpoints, None).ok_or_else(|| {
            let backend = backend.name.clone();
            // Empty, or every endpoint unhealthy, ejected or behind an open breaker.
            if endpoints.is_empty() {
                GatewayError::NoEndpoints { backend }
            } else {
                GatewayError::EndpointsUnavailable { backend }
            }
        })
    }?;
    // A request safe to repeat keeps a template for replays. Its body must be
    // at hand to resend: none, or a small one read in full before sending. An
    // upgrade is never replayed: the upstream may already have switched.
    let repeatable =
        !upgrade && policy.attempts > 1 && safe_to_repeat(&parts.method, &parts.headers);
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|length| length <= policy.replay_body_limit);
    let (body, replay_body) = match (repeatable, body.is_end_stream(), small) {
        (true, true, _) => (RequestBody::Full(None), Some(None)),
        (true, false, true) => {
            // Boxed: only requests with a small body to keep pay for its space.
            let bytes = match Box::pin(timeout_at(deadline, body.collect())).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(source)) => {
                    return Err(GatewayError::ClientBody {
                        backend: backend.name.clone(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(GatewayError::ClientTimeout {
                        backend: backend.name.clone(),
                    })
                }
            };
            (RequestBody::Full(Some(bytes.clone())), Some(Some(bytes)))
        }
        (false, _, _) | (true, false, false) => (RequestBody::Incoming(body, max_body), None),
    };
    let mut body = body;
    let mut tries = 1;
    loop {
        ctx.attempts = tries;
        ctx.endpoint = Some(endpoint.addr);
        let probe = backend
            .breaker
            .is_some_and(|breaker| breaker.on_send(&endpoint.breaker, now_millis()));
        let outcome = attempt(
            backend, &endpoint, track, &parts, &forwarded, body, deadline,
        )
        .await;
        observe(backend, &endpoint, probe, &outcome);
        // What to answer if there is no retry, and what a retry would send.
        let (last, next, reused, free) = match outcome {
            // The upstream may be working on it: never repeated.
            Err(Failure {
                kind: FailureKind::Timeout,
                ..
            }) => {
                let timeout = GatewayError::UpstreamTimeout {
                    backend: backend.name.clone(),
                };
                return settle(backend, pass, Err(timeout));
            }
            Ok(exchange) => {
                let retry = policy.on_status.contains(&exchange.response.status());
                let next = retry.then(|| replay(&replay_body)).flatten();
                (Last::Answer(exchange), next, false, false)
            }
            Err(failure) => match failure.unsent {
                // Never left rgate: no upstream saw it, so it costs no budget.
                Some(unsent) => (
                    Last::Failed(failure.kind),
                    Some(unsent),
                    failure.reused,
                    true,
                ),
                None => {
                    let retry = policy.on_reset && matches!(failure.kind, FailureKind::Broken(_));
                    let next = retry.then(|| replay(&replay_body)).flatten();
                    (Last::Failed(failure.kind), next, failure.reused, false)
                }
            },
        };
        let target = match &next {
            Some(_) if tries < policy.attempts => {
                // A different endpoint when there is one; the same one only when
                // the failure was a pooled connection the upstream had closed.
                pick(&backend.endpoints(), Some(&endpoint))
                    .or_else(|| reused.then(|| endpoint.clone()))
            }
            _ => None,
        };
        match (next, target) {
            (Some(next), Some(target)) if free || policy.budget.spend() => {
                body = next;
                endpoint = target;
                tries += 1;
                backend.metrics.retried();
            }
            (next, target) => {
                if next.is_some() && target.is_some() {
                    backend.metrics.budget_exhausted();
                }
                let result = match last {
                    Last::Answer(exchange) => {
                        let switched = upgrade
                            && exchange.response.status() == StatusCode::SWITCHING_PROTOCOLS;
                        Ok(client_response(
                            exchange, admission, request_id, route, switched,
                        ))
                    }
                    Last::Failed(kind) => Err(kind.into_error(&backend.name)),
                };
                return settle(backend, pass, result);
            }
        }
    }
}

/// The result of the latest attempt, returned when no retry follows it.
// Lives briefly on the stack; boxing the answer would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Last {
    Answer(Exchange),
    Failed(FailureKind),
}

/// Feeds an attempt's outcome to the backend's outlier detector and circuit
/// breaker, where configured: connection failures, timeouts and 5xx answers
/// count against the endpoint. `probe` is the breaker's half-open mark.
fn observe(
    backend: &Backend,
    endpoint: &Endpoint,
    probe: bool,
    outcome: &Result<Exchange, Failure<'_>>,
) {
    if backend.outlier.is_none() && backend.breaker.is_none() {
        return;
    }
    let failed = match outcome {
        Ok(exchange) => exchange.response.status().is_server_error(),
        Err(failure) if failure.kind.is_client_fault() => return,
        Err(_) => true,
    };
    let now = now_millis();
    if let Some(outlier) = &backend.outlier {
        if outlier.record(&backend.endpoints(), endpoint, failed, now) {
            backend.metrics.ejected();
        }
    }
    if let Some(breaker) = &backend.breaker {
        if let Some(transition) = breaker.record(&endpoint.breaker, probe, failed, now) {
            backend.metrics.breaker(transition);
        }
    }
}

/// A response head and what must live as long as its body.
struct Exchange {
    response: Response<Framing>,
    connection: Connection,
    in_flight: Option<InFlight>,
}

impl Exchange {
    /// The response head, its connection, and what the exchange holds
    /// (with the request's bulkhead slot) until the answer's body ends.
    fn finish(self, admission: Option<Admission>) -> (Response<Framing>, Connection, Held) {
        let held = Held {
            in_flight: self.in_flight,
            admission,
        };
        (self.response, self.connection, held)
    }
}

async fn attempt<'a>(
    backend: &Backend,
    endpoint: &Arc<Endpoint>,
    track: bool,
    head: &http::request::Parts,
    forwarded: &Forwarded<'_>,
    body: RequestBody<'a>,
    deadline: Instant,
) -> Result<Exchange, Failure<'a>> {
    let in_flight = track.then(|| endpoint.start_request());
    // A pooled connection is ready at the first poll: no timer is armed then.
    let checkout = timeout_at(
        deadline,
        upstream::checkout(endpoint.addr, backend.connect_timeout),
    );
    let mut connection = match checkout.await {
        Ok(Ok(connection)) => connection,
        failed => {
            let kind = match failed {
                Ok(Err(error)) => FailureKind::Connect(error),
                _ => FailureKind::Timeout,
            };
            return Err(Failure {
                kind,
                unsent: Some(body),
                reused: false,
            });
        }
    };
    let reused = connection.reused;
    backend.metrics.sent(!reused);
    match connection.send(head, forwarded, body, deadline).await {
        Ok(response) => Ok(Exchange {
            response,
            connection,
            in_flight,
        }),
        Err(Failed { error, unsent }) => {
            let kind = match error {
                SendError::TooLarge => FailureKind::TooLarge,
                SendError::ClientBody(error) => FailureKind::ClientBody(error),
                SendError::ClientGone => FailureKind::ClientGone,
                SendError::Timeout => FailureKind::Timeout,
                SendError::Head(error) => FailureKind::BadResponse(error),
                error @ (SendError::Write(_) | SendError::Read(_) | SendError::Closed) => {
                    FailureKind::Broken(error)
                }
            };
            Err(Failure {
                kind,
                unsent,
                reused,
            })
        }
    }
}

/// The body to send again on a retry: `None` when the request keeps no
/// replay (its body streamed through, or it is not safe to repeat).
fn replay<'a>(kept: &Option<Option<Bytes>>) -> Option<RequestBody<'a>> {
    kept.as_ref().map(|bytes| RequestBody::Full(bytes.clone()))
}

/// The client's answer: the upstream's head, hop-by-hop fields out and the
/// request id in. An accepted protocol switch keeps its upgrade fields and
/// carries the upstream connection for the client connection to splice with
/// (see [`Tunnel`]); any other answer's body streams from its connection.
fn client_response(
    exchange: Exchange,
    admission: Option<Admission>,
    request_id: HeaderValue,
    route: &Route,
    switched: bool,
) -> Response<ResponseBody> {
    let (response, connection, held) = exchange.finish(admission);
    let (mut parts, framing) = response.into_parts();
    let body = if switched {
        headers::strip_hop_by_hop_keeping_upgrade(&mut parts.headers);
        ResponseBody::Tunnel(Box::new(Tunnel::new(connection, held, route.idle_timeout)))
    } else {
        headers::strip_hop_by_hop(&mut parts.headers);
        upstream::response_body(framing, connection, held, route.idle_timeout)
    };
    parts.headers.insert(X_REQUEST_ID.clone(), request_id);
    Response::from_parts(parts, body)
}
