//! Header conditions of a route.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A header field the request must carry with exactly this value (the name
/// compared case-insensitively, as header names are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl HeaderCondition {
    pub(super) fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|value| value == self.value)
    }
}

/// Whether one request can satisfy both lists: no field is required with
/// two different values.
pub(super) fn compatible(a: &[HeaderCondition], b: &[HeaderCondition]) -> bool {
    // A request may repeat a field with both values, but a route asking for
    // `X: 1` and one asking for `X: 2` are meant as alternatives.
    a.iter()
        .all(|x| b.iter().all(|y| x.name != y.name || x.value == y.value))
}
