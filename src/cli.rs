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
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}
