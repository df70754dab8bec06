//! CORS (the Fetch standard's CORS protocol) for one route.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   is answered by rgate with a 204, never forwarded.
//! - Any other answer on the route (the upstream's, or rgate's own such as a
//!   503) gets the CORS response fields when its `Origin` is allowed; the
//!   upstream's own CORS fields are replaced, so one policy speaks.
//! - A disallowed origin gets no CORS fields (the browser blocks the
//!   response), never a reflected origin.
//! - `Vary: Origin` whenever the answer depends on the origin: always, unless
//!   every origin is allowed without credentials (then it is `*`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::methods::MethodSet;
use crate::response::ResponseBody;

/// Request fields a browser never asks permission for (Fetch's
/// CORS-safelisted names whose values never need it).
const SAFELISTED_HEADERS: [&str; 3] = ["accept", "accept-language", "content-language"];

static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");
static VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);
static ANY: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");

/// Which origins may read the route's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    List {
        /// Lower case, as browsers serialise origins.
        exact: Box<[Box<str>]>,
        /// `https://*.example.com`: (`https://`, `.example.com`).
        patterns: Box<[(Box<str>, Box<str>)]>,
    },
}

impl Origins {
    fn allows(&self, origin: &[u8]) -> bool {
        match self {
            Origins::Any => true,
            Origins::List { exact, patterns } => {
                exact
                    .iter()
                    .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
                    || patterns.iter().any(|(scheme, suffix)| {
                        origin.len() > scheme.len() + suffix.len()
                            && origin[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
                            && origin[origin.len() - suffix.len()..]
                                .eq_ignore_ascii_case(suffix.as_bytes())
                            // The wildcard stands for labels, not for a scheme or port.
                            && !origin[scheme.len()..origin.len() - suffix.len()]
                                .iter()
                                .any(|&b| b == b'/' || b == b':')
                    })
            }
        }
    }
}

/// A route's compiled `cors`.
#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: Origins,
    /// `None`: any method (`*`).
    pub methods: Option<MethodSet>,
    /// `Access-Control-Allow-Methods`.
    pub methods_value: HeaderValue,
    /// `None`: any header (`*`).
    pub headers: Option<Box<[HeaderName]>>,
    /// `Access-Control-Allow-Headers`; `None` when the list is empty.
    pub headers_value: Option<HeaderValue>,
    pub expose: Option<HeaderValue>,
    pub credentials: bool,
    /// `Access-Control-Max-Age`, in seconds.
    pub max_age: Option<HeaderValue>,
}

/// Whether a request is a CORS preflight, and which method it asks for.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(asked.as_bytes()).ok()
}

impl Cors {
    /// The value of `Access-Control-Allow-Origin` for `origin`, if allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if !self.origins.allows(origin.as_bytes()) {
            return None;
        }
        Some(if self.origins == Origins::Any && !self.credentials {
            ANY.clone()
        } else {
            origin.clone()
        })
    }

    fn varies(&self) -> bool {
        self.origins != Origins::Any || self.credentials
    }

    fn method_allowed(&self, method: &Method) -> bool {
        // Fetch lets safelisted methods through without asking.
        matches!(*method, Method::GET | Method::HEAD | Method::POST)
            || self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    fn headers_allowed(&self, asked: Option<&HeaderValue>) -> bool {
        let (Some(allowed), Some(asked)) = (&self.headers, asked) else {
            return true;
        };
        asked
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|name| !name.is_empty())
            .all(|name| {
                SAFELISTED_HEADERS
                    .iter()
                    .any(|safe| safe.as_bytes().eq_ignore_ascii_case(name))
                    || allowed
                        .iter()
                        .any(|a| a.as_str().as_bytes().eq_ignore_ascii_case(name))
            })
    }

    /// rgate's answer to a preflight (see [`preflight_method`]).
    pub fn preflight(&self, request: &HeaderMap, asked: &Method) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::Full(None));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::VARY, VARY_PREFLIGHT.clone());
        let allowed = request
            .get(header::ORIGIN)
            .and_then(|origin| self.allow_origin(origin))
            .filter(|_| self.method_allowed(asked))
            .filter(|_| self.headers_allowed(request.get(header::ACCESS_CONTROL_REQUEST_HEADERS)));
        let Some(origin) = allowed else {
            return response;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        if let Some(value) = &self.headers_value {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value.clone());
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        response
    }

    /// Sets the CORS fields of an answer to a request from `origin`.
    pub fn respond(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
        headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
        if self.varies() {
            headers.append(header::VARY, VARY_ORIGIN.clone());
        }
        let Some(allowed) = origin.and_then(|origin| self.allow_origin(origin)) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if self.credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(expose) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
#[path = "cors_tests.rs"]
mod tests;
