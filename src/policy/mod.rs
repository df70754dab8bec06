//! Per-route policies compiled from the config and applied on the request path.

pub mod retry;
