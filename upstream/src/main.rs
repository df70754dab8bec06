//! `rgate-upstream` binary: parses the CLI, builds the runtime, handles SIGTERM/SIGINT and runs [`rgate_upstream::serve`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rgate_upstream::Config;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Stub HTTP/1 upstream for rgate's tests and benchmarks.
///
/// Routes: /health, /__stats, /bytes/N, /status/N, /slow/MS, /ws (WebSocket
/// echo); any other path answers the fixed body (--fixed-body-size) or a JSON
/// echo of the request.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on (port 0: the OS picks one; see the "listening" line on stderr).
    #[arg(long)]
    listen: SocketAddr,
    /// Name sent in the x-upstream-name header and in JSON bodies.
    #[arg(long, default_value = "upstream")]
    name: String,
    /// Answer other paths with exactly N bytes of JSON instead of the echo.
    #[arg(long, value_name = "N")]
    fixed_body_size: Option<usize>,
    /// Latency added to every request but /health and /__stats.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of those requests answered with --error-status.
    #[arg(long, value_name = "0.0-1.0", default_value_t = 0.0, value_parser = parse_rate)]
    error_rate: f64,
    /// Status of injected errors.
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(100..=999))]
    error_status: u16,
    /// Seed of error injection: the same seed fails the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runtime worker threads (1: single-threaded runtime).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{s:?} is not a number in 0.0..=1.0")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(cli.threads))
            .enable_all()
            .build()
    };
    let result = runtime.and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rgate-upstream: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::io::Result<()> {
    // Registered before the "listening" line, so a signal sent as soon as it
    // is seen is handled. Explicit handlers also matter as PID 1 in a
    // container, where the kernel ignores signals that have none.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(cli.listen).await?;
    eprintln!("rgate-upstream listening addr={}", listener.local_addr()?);
    let cfg = Config {
        name: cli.name,
        fixed_body_size: cli.fixed_body_size,
        latency: Duration::from_millis(cli.latency_ms),
        error_rate: cli.error_rate,
        error_status: cli.error_status,
        seed: cli.seed,
    };
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    rgate_upstream::serve(listener, cfg, shutdown).await?;
    eprintln!("rgate-upstream stopped");
    Ok(())
}
