//! The `rgate` binary: parse flags, set up logging, run the gateway.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use rgate::cli::{Cli, Command};
use rgate::{app, config};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h EX_USAGE: the config is unusable.
const EXIT_BAD_CONFIG: u8 = 64;
const EXIT_START_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .log_level
        .as_deref()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    if let Some(Command::Check { config }) = &cli.command {
        return match config::load(config) {
            Ok(loaded) => {
                let routes = loaded.snapshot.router.routes().len();
                let backends = loaded.snapshot.backends.len();
                eprintln!(
                    "{}: ok ({routes} route{}, {backends} backend{})",
                    config.display(),
                    if routes == 1 { "" } else { "s" },
                    if backends == 1 { "" } else { "s" },
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        };
    }

    if let Some(Command::Healthcheck { admin }) = &cli.command {
        return match rgate::admin::probe::healthcheck(*admin) {
            Ok(()) => ExitCode::SUCCESS,
            Err(problem) => {
                eprintln!("unhealthy: {problem}");
                ExitCode::from(EXIT_START_FAILED)
            }
        };
    }

    if let Some(Command::Stats { config, window }) = &cli.command {
        let loaded = match config::load(config) {
            Ok(loaded) => loaded,
            Err(errors) => {
                eprint!("{errors}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        };
        return match rgate::observe::stats::command(&loaded.stats, window.as_deref()) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(problem) => {
                eprintln!("{problem}");
                ExitCode::from(EXIT_START_FAILED)
            }
        };
    }

    let loaded = match config::load(&cli.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let options = app::Options {
        bind: cli.bind,
        port: cli.port,
        workers: cli
            .workers
            .unwrap_or(app::Options::default().workers)
            .max(1),
        drain_timeout: cli.drain_timeout,
        handle_signals: true,
        config_path: Some(cli.config),
        admin: cli.admin.unwrap_or(app::AdminChoice::FromConfig),
        stats_from_config: true,
        handover_socket: cli.handover_socket,
        take_over: cli.take_over,
    };
    match app::start(loaded, &options) {
        Ok(running) => {
            running.wait();
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "rgate could not start");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}
