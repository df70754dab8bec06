//! Command-line interface.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// rgate: an API gateway for Docker containers.
///
/// Finds backends by Docker labels, routes by longest path prefix, and
/// serves traffic statistics at /stats.
#[derive(Debug, Parser)]
#[command(name = "rgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Port to receive traffic on (0 picks a free port, logged at startup).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// The YAML config file.
    #[arg(long, default_value = "config.yml")]
    pub config: PathBuf,

    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Worker threads, each with its own listener and upstream pool [default: CPU count].
    #[arg(long)]
    pub workers: Option<usize>,

    /// How long to let in-flight requests finish after SIGTERM/SIGINT (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// The admin plane's address (IP:port), or `off` [default: the config's `admin`, else 127.0.0.1:9901].
    #[arg(long, value_parser = parse_admin)]
    pub admin: Option<crate::app::AdminChoice>,

    /// A Unix socket to hand the listening sockets over on, to a new rgate
    /// started with --take-over (a restart with no refused connection).
    #[arg(long, value_name = "PATH")]
    pub handover_socket: Option<PathBuf>,

    /// Take the listening sockets from the rgate serving --handover-socket,
    /// which then drains and exits (instead of binding the port).
    #[arg(long, requires = "handover_socket")]
    pub take_over: bool,

    /// Log filter, e.g. `info` or `rgate=debug` [default: $RUST_LOG, else info].
    #[arg(long)]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and exit (0 valid, 64 invalid).
    Check {
        /// The YAML config file to validate.
        config: PathBuf,
    },
    /// Exit 0 if the rgate whose admin plane is at --admin is alive (for
    /// container health checks), else 1.
    Healthcheck {
        /// The admin plane's address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Print the stats the config's store keeps, without a running gateway.
    Stats {
        /// The YAML config file whose `stats.store` to read.
        #[arg(long, default_value = "config.yml")]
        config: PathBuf,
        /// Only the last DURATION (e.g. 5m, 1h, 24h) instead of the lifetime totals.
        #[arg(long)]
        window: Option<String>,
    },
}

fn parse_admin(text: &str) -> Result<crate::app::AdminChoice, String> {
    if text == "off" {
        return Ok(crate::app::AdminChoice::Off);
    }
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not IP:port or `off`"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; a public admin plane needs admin.listen \
             with allow_public: true in the config"
        ));
    }
    Ok(crate::app::AdminChoice::Listen(addr))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AdminChoice;

    #[test]
    fn admin_takes_loopback_addresses_or_off() {
        assert_eq!(parse_admin("off"), Ok(AdminChoice::Off));
        assert_eq!(
            parse_admin("127.0.0.1:0"),
            Ok(AdminChoice::Listen("127.0.0.1:0".parse().unwrap()))
        );
        assert!(parse_admin("0.0.0.0:9901")
            .unwrap_err()
            .contains("allow_public"));
        assert!(parse_admin("nine").is_err());
    }
}
