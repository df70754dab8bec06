//! Every answer's head: its status, content type, and the stub's name.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderName, Response, StatusCode};

use crate::body::Body;
use crate::Shared;

const X_UPSTREAM_NAME: HeaderName = HeaderName::from_static("x-upstream-name");

/// A response with the stub's `x-upstream-name` and the given content type.
pub(crate) fn response(
    shared: &Shared,
    status: StatusCode,
    content_type: HeaderValue,
    body: Body,
) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(X_UPSTREAM_NAME, shared.name_header.clone());
    resp
}
