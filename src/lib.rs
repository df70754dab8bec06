//! rgate: an API gateway for Docker containers.
//!
//! Vocabulary, used the same way in code, logs and docs:
//! - **downstream / client**: whoever sends rgate a request;
//! - **route**: a `path_prefix` (with optional host, methods and headers) → backend
//!   rule, with its edge policy; the most specific match wins (see [`router`]);
//! - **backend**: a named set of endpoints, found by Docker labels or listed statically;
//! - **endpoint**: one address a backend's requests can go to (a container);
//! - **upstream**: the endpoint's server, as seen from rgate;
//! - **snapshot**: the immutable compiled config every request reads once.
//!
//! The request path is in [`proxy`]; discovery feeds [`backend`] endpoint sets
//! from the Docker event stream; [`app`] wires it together.

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod discovery;
pub mod error;
pub mod methods;
pub mod observe;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod response;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod wire;
