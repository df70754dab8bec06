//! Sets of HTTP methods: a route's `methods`, and what CORS allows. Below
//! both the router and the policies, so neither imports the other for it.

use http::Method;

/// The standard methods a bit each; others by name.
const STANDARD: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// A route's `methods`: a bit test for standard methods, no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodSet {
    bits: u16,
    other: Box<[Method]>,
}

fn bit(method: &Method) -> Option<u16> {
    STANDARD
        .iter()
        .position(|standard| standard == method)
        .map(|i| 1 << i)
}

impl MethodSet {
    pub fn new(methods: impl IntoIterator<Item = Method>) -> Self {
        let mut bits = 0;
        let mut other = Vec::new();
        for method in methods {
            match bit(&method) {
                Some(b) => bits |= b,
                None if !other.contains(&method) => other.push(method),
                None => {}
            }
        }
        Self {
            bits,
            other: other.into(),
        }
    }

    pub fn contains(&self, method: &Method) -> bool {
        match bit(method) {
            Some(b) => self.bits & b != 0,
            None => self.other.contains(method),
        }
    }

    pub fn intersects(&self, other: &MethodSet) -> bool {
        self.bits & other.bits != 0 || self.other.iter().any(|m| other.other.contains(m))
    }

    /// The methods, standard ones first: for `Allow`-style lists and `/routes`.
    pub fn iter(&self) -> impl Iterator<Item = &Method> {
        STANDARD
            .iter()
            .enumerate()
            .filter(|(i, _)| self.bits & (1 << i) != 0)
            .map(|(_, method)| method)
            .chain(self.other.iter())
    }
}
