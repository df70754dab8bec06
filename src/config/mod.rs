//! Config loading: read → parse → validate + compile. Used by startup and `rgate check`.

mod compile;
mod duration;
mod error;
mod file;
mod parse;
pub mod watch;

use std::path::Path;

pub use self::error::{ConfigError, ConfigErrors};
use crate::discovery::DockerSettings;
use crate::server::Limits;
use crate::snapshot::Snapshot;
use crate::tls::TlsSettings;

pub use self::duration::parse_duration;

/// A valid, compiled configuration.
#[derive(Debug)]
pub struct Config {
    pub snapshot: Snapshot,
    /// One entry per Docker host (`docker.endpoints`), at least one.
    pub docker: Vec<DockerSettings>,
    /// Listener limits; read at start (a reload does not change them).
    pub limits: Limits,
    /// TLS on the main listener (default: plain HTTP).
    pub tls: Option<TlsSettings>,
    /// Where the admin plane listens (`None`: off); read at start.
    pub admin: Option<std::net::SocketAddr>,
    /// The access log (`None`: off); read at start.
    pub access_log: Option<crate::observe::access_log::Settings>,
    /// Where `/stats` is kept; read at start.
    pub stats: crate::observe::stats::Settings,
}

/// The admin plane's address when the config says nothing: loopback only.
pub const DEFAULT_ADMIN_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

/// Reads and compiles the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            path: String::new(),
            problem: format!("cannot read: {err}"),
        }])
    })?;
    parse(&text, path)
}

/// Compiles config text; `path` is only used to name the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let whole_file = |problem: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            path: String::new(),
            problem,
        }])
    };
    if text.trim().is_empty() {
        return Err(whole_file("the file is empty".into()));
    }
    let (parsed, early) = parse::parse(text).map_err(|problems| {
        ConfigErrors(
            problems
                .into_iter()
                .map(|(key, problem)| ConfigError {
                    file: path.to_path_buf(),
                    path: key,
                    problem,
                })
                .collect(),
        )
    })?;
    compile::compile(parsed, early, path).map_err(ConfigErrors)
}

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
