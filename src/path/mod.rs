//! Request paths: normalised once before routing, and rewritten for the
//! upstream when a route says so. Pure string work, shared by the config
//! (which checks prefixes the same way) and the request path.

pub mod normalize;
pub mod rewrite;
