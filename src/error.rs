//! Client-visible failures of the request path, mapped to responses in one place.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::auth::Failure;
use crate::proxy::validate::BadRequest;
use crate::response::ResponseBody;

/// Everything that can stop a request from reaching an upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request: {0}")]
    BadRequest(#[from] BadRequest),
    #[error("backend {backend}: the request body is over the route's max_body")]
    BodyTooLarge { backend: Arc<str> },
    #[error("backend {backend}: no endpoints")]
    NoEndpoints { backend: Arc<str> },
    #[error("backend {backend}: every endpoint is unhealthy, ejected or behind an open breaker")]
    EndpointsUnavailable { backend: Arc<str> },
    #[error("backend {backend}: reading the request body failed: {source}")]
    ClientBody {
        backend: Arc<str>,
        #[source]
        source: crate::proxy::inbound::ClientBodyError,
    },
    #[error("backend {backend}: the client went away before the response")]
    ClientGone { backend: Arc<str> },
    #[error("request head over the limit")]
    HeadTooLarge,
    #[error("backend {backend}: the client did not send its request body in time")]
    ClientTimeout { backend: Arc<str> },
    #[error("backend {backend}: the backend's circuit breaker is open")]
    CircuitOpen { backend: Arc<str> },
    #[error("route {route}: token refused ({})", failure.reason())]
    Auth {
        route: Arc<str>,
        failure: crate::auth::Failure,
    },
    #[error("route {route}: over its rate limit")]
    RateLimited {
        route: Arc<str>,
        /// Whole seconds, at least 1.
        retry_after: u64,
    },
    #[error("backend {backend}: max_in_flight reached")]
    Saturated { backend: Arc<str> },
    #[error("backend {backend}: connect failed: {source}")]
    UpstreamConnect {
        backend: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {backend}: connect timed out")]
    ConnectTimeout { backend: Arc<str> },
    #[error("backend {backend}: connection broken: {source}")]
    UpstreamReset {
        backend: Arc<str>,
        #[source]
        source: crate::proxy::upstream::SendError,
    },
    #[error("backend {backend}: no response head within the route's timeout")]
    UpstreamTimeout { backend: Arc<str> },
    #[error("backend {backend}: invalid response: {source}")]
    BadResponse {
        backend: Arc<str>,
        #[source]
        source: crate::proxy::upstream::HeadError,
    },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'a str>,
}

impl GatewayError {
    /// Status and stable error code. Exhaustive on purpose: a new failure must
    /// choose its answer here.
    fn status_and_code(&self) -> (StatusCode, &'static str, Option<&str>) {
        let (status, code, backend) = match self {
            // Framing two parsers could read differently: refused, never
            // forwarded, and the connection closed (see `into_response`).
            GatewayError::BadRequest(_) => return (StatusCode::BAD_REQUEST, "bad_request", None),
            // Over `limits.max_header_size`, or too many fields (RFC 6585 §5).
            GatewayError::HeadTooLarge => {
                return (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "header_too_large",
                    None,
                )
            }
            // Refused as soon as the declared or streamed length passes the
            // route's limit, without buffering the body (RFC 9110 §15.5.14).
            GatewayError::BodyTooLarge { backend } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", backend)
            }
            // Contract: a backend with no running container is "down" → 503.
            GatewayError::NoEndpoints { backend } => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_endpoints", backend)
            }
            // Endpoints exist but none may take traffic now: fail fast, like a
            // backend that is down, instead of sending into known failures.
            GatewayError::EndpointsUnavailable { backend } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "endpoints_unavailable",
                backend,
            ),
            // The client broke off or sent a malformed body while rgate read
            // it for replay: the request itself is at fault (RFC 9110 §15.5.1).
            GatewayError::ClientBody { backend, .. } => {
                (StatusCode::BAD_REQUEST, "request_body", backend)
            }
            // Never sent: the client is gone. The status is for stats and
            // logs only, as nginx's 499 "client closed request".
            GatewayError::ClientGone { backend } => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "client_gone",
                backend,
            ),
            // The client was too slow to send a body rgate had to read first.
            GatewayError::ClientTimeout { backend } => {
                (StatusCode::REQUEST_TIMEOUT, "request_timeout", backend)
            }
            // The backend as a whole is failing: shed load at once and give it
            // room to recover, like a backend that is down.
            GatewayError::CircuitOpen { backend } => {
                (StatusCode::SERVICE_UNAVAILABLE, "circuit_open", backend)
            }
            // RFC 6750 §3.1: no usable token → 401; a valid token for
            // another audience → 403. A provider without keys cannot judge
            // the token, so the client is told to come back, not refused.
            GatewayError::Auth { failure, .. } => {
                return match failure {
                    Failure::Missing | Failure::Invalid(_) => {
                        (StatusCode::UNAUTHORIZED, "unauthorized", None)
                    }
                    Failure::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
                    Failure::Unavailable => {
                        (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", None)
                    }
                }
            }
            // Over the route's limit: told when to come back (RFC 6585 §4).
            GatewayError::RateLimited { .. } => {
                return (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None)
            }
            // The bulkhead is full: refuse at once rather than queue (RFC 9110 §15.6.4).
            GatewayError::Saturated { backend } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_saturated",
                backend,
            ),
            // Contract: a container that refuses the connection is down → 503.
            GatewayError::UpstreamConnect { backend, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "connect_failed", backend)
            }
            // Nothing answered in time to even open a connection: treat as down,
            // fast, rather than a 504 that suggests a slow answer.
            GatewayError::ConnectTimeout { backend } => {
                (StatusCode::SERVICE_UNAVAILABLE, "connect_timeout", backend)
            }
            // Contract: a container that breaks the connection is down → 503.
            GatewayError::UpstreamReset { backend, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream_reset", backend)
            }
            // The upstream took the request but did not answer in time (RFC 9110 §15.6.5).
            GatewayError::UpstreamTimeout { backend } => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", backend)
            }
            // The upstream answered, but not with HTTP: a gateway error proper.
            GatewayError::BadResponse { backend, .. } => {
                (StatusCode::BAD_GATEWAY, "bad_response", backend)
            }
        };
        (status, code, Some(backend))
    }

    /// The stable error code of the answer, as in its JSON body.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// Whether the client connection must close after the answer: the rest of
    /// what the client sent can no longer be trusted to start a new request.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::HeadTooLarge
                | GatewayError::BodyTooLarge { .. }
                | GatewayError::ClientBody { .. }
        )
    }

    /// The short JSON answer the client sees; detail stays in logs.
    pub fn into_response(self) -> Response<ResponseBody> {
        let (status, error, backend) = self.status_and_code();
        let body = serde_json::to_vec(&ErrorBody { error, backend }).unwrap_or_default();
        let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match self {
            GatewayError::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            GatewayError::Auth { failure, .. } => {
                let (name, value) = match failure {
                    Failure::Missing => (header::WWW_AUTHENTICATE, "Bearer"),
                    Failure::Invalid(_) => {
                        (header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)
                    }
                    Failure::Forbidden(_) => (
                        header::WWW_AUTHENTICATE,
                        r#"Bearer error="insufficient_scope""#,
                    ),
                    Failure::Unavailable => (header::RETRY_AFTER, "1"),
                };
                headers.insert(name, HeaderValue::from_static(value));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn no_endpoints_is_a_503_naming_the_backend() {
        let response = GatewayError::NoEndpoints {
            backend: "payment".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"error":"no_endpoints","backend":"payment"}"#
        );
    }

    #[test]
    fn connection_failures_answer_503_and_bad_responses_502() {
        let refused = GatewayError::UpstreamConnect {
            backend: "b".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(
            refused.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let timeout = GatewayError::ConnectTimeout {
            backend: "b".into(),
        };
        assert_eq!(
            timeout.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn backend_names_are_json_escaped() {
        let error = GatewayError::NoEndpoints {
            backend: "we\"ird".into(),
        };
        let (_, code, backend) = error.status_and_code();
        let body = serde_json::to_string(&ErrorBody {
            error: code,
            backend,
        })
        .unwrap();
        assert_eq!(body, r#"{"error":"no_endpoints","backend":"we\"ird"}"#);
    }
}
