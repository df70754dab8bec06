//! Observability: what rgate reports about the traffic it carries.

pub mod metrics;
pub mod stats;
