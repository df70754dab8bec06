//! Observability: what rgate reports about the traffic it carries.

pub mod access_log;
pub mod metrics;
pub mod stats;
pub mod tally;
