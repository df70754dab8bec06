//! The composition root: bind, start workers and discovery, run until told to
//! stop, drain.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

use crate::admin;
use crate::config::Config;
use crate::control::{ControlPlane, ReloadError, ReloadReport, ReloadRequest, Signals, Telemetry};
use crate::observe::access_log::AccessLog;
use crate::observe::stats::{self, Stats};
use crate::proxy::Gateway;
use crate::server::handover::{self, HandoverServer, Listeners, Taken};
use crate::server::{self, ConnectionCount, DrainReport, RedirectListener, Worker};
use crate::tls::TlsSettings;

/// How to run the gateway (the CLI's flags, minus the config file).
#[derive(Debug, Clone)]
pub struct Options {
    pub bind: IpAddr,
    pub port: u16,
    /// Worker threads; each owns a listener, a runtime and an upstream pool.
    pub workers: usize,
    pub drain_timeout: Duration,
    /// Stop on SIGTERM/SIGINT (the binary); tests stop through [`Running::shutdown`].
    pub handle_signals: bool,
    /// The config file to read again on reload; watched for changes.
    pub config_path: Option<PathBuf>,
    /// Where the admin plane listens.
    pub admin: AdminChoice,
    /// Serve handovers on this Unix socket (and, with `take_over`, take the
    /// listeners from the rgate serving it).
    pub handover_socket: Option<PathBuf>,
    pub take_over: bool,
    /// Keep `/stats` in the config's store (the binary); otherwise (the
    /// default for embedding and tests) in memory, per process.
    pub stats_from_config: bool,
}

/// The admin listener's address: the config's, none, or this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdminChoice {
    /// `admin` from the config file (on 127.0.0.1:9901 unless it says otherwise).
    FromConfig,
    /// Off, whatever the config says (the default for embedding and tests).
    #[default]
    Off,
    /// This address (`--admin`); port 0 picks a free one.
    Listen(SocketAddr),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            drain_timeout: Duration::from_secs(30),
            handle_signals: false,
            config_path: None,
            admin: AdminChoice::Off,
            stats_from_config: false,
            handover_socket: None,
            take_over: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("tls.redirect_http_port {port} is the port rgate serves HTTPS on")]
    RedirectPortClash { port: u16 },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),
    #[error("cannot open the access log: {0}")]
    AccessLog(#[source] io::Error),
    #[error("handover: {0}")]
    Handover(#[source] io::Error),
}

/// Binds the listeners, or takes them from the running rgate (`--take-over`).
fn listeners(
    options: &Options,
    admin: Option<SocketAddr>,
    redirect_port: Option<u16>,
) -> Result<(Listeners, Option<Taken>), StartError> {
    let bind = |addr: SocketAddr, count: usize| {
        server::bind(addr, count).map_err(|source| StartError::Bind { addr, source })
    };
    if let (true, Some(path)) = (options.take_over, &options.handover_socket) {
        let (mut listeners, taken) = handover::take(path).map_err(StartError::Handover)?;
        // The sockets keep the addresses the previous process had; what this
        // config adds or removes beside them is bound or closed here.
        match (admin, &listeners.admin) {
            (None, _) => listeners.admin = None,
            (Some(addr), None) => listeners.admin = bind(addr, 1)?.pop(),
            (Some(_), Some(_)) => {}
        }
        match (redirect_port, listeners.redirect.is_empty()) {
            (None, _) => listeners.redirect.clear(),
            (Some(port), true) => {
                listeners.redirect =
                    bind(SocketAddr::new(options.bind, port), listeners.main.len())?;
            }
            (Some(_), false) => {}
        }
        return Ok((listeners, Some(taken)));
    }
    let admin = admin
        .map(|addr| bind(addr, 1))
        .transpose()?
        .and_then(|mut one| one.pop());
    let requested = SocketAddr::new(options.bind, options.port);
    let main = bind(requested, options.workers)?;
    let port = main
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(requested.port(), |addr| addr.port());
    let redirect = match redirect_port {
        // SO_REUSEPORT would let both listeners share the port and split its traffic.
        Some(redirect) if redirect == port => {
            return Err(StartError::RedirectPortClash { port: redirect });
        }
        Some(redirect) => bind(SocketAddr::new(options.bind, redirect), main.len())?,
        None => Vec::new(),
    };
    Ok((
        Listeners {
            main,
            redirect,
            admin,
        },
        None,
    ))
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    redirect_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    reload: mpsc::Sender<ReloadRequest>,
    control: Option<thread::JoinHandle<DrainReport>>,
}

/// Starts serving `config` in background threads and returns once listening.
pub fn start(config: Config, options: &Options) -> Result<Running, StartError> {
    let Config {
        snapshot,
        docker,
        limits,
        tls,
        admin,
        access_log,
        stats: mut stats_settings,
    } = config;
    if !options.stats_from_config {
        stats_settings.target = stats::Target::Memory;
    }
    let admin = match options.admin {
        AdminChoice::FromConfig => admin,
        AdminChoice::Off => None,
        AdminChoice::Listen(addr) => Some(addr),
    };
    // Bound (or taken over) before anything starts, so a taken port stops the start.
    let redirect_port = tls.as_ref().and_then(|tls| tls.redirect_http_port);
    let (listeners, taken) = listeners(options, admin, redirect_port)?;
    // Copies for the next handover, made before the workers own the sockets.
    let handover = options
        .handover_socket
        .as_ref()
        .map(|path| listeners.duplicate().map(|copies| (path.clone(), copies)))
        .transpose()
        .map_err(StartError::Handover)?;
    let Listeners {
        main: listeners,
        redirect: redirect_listeners,
        admin: admin_listener,
    } = listeners;
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let local_addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(SocketAddr::new(options.bind, options.port));
    let redirect_addr = redirect_listeners.first().and_then(|l| l.local_addr().ok());
    let mut redirect_listeners = redirect_listeners.into_iter();
    let server_config = tls.as_ref().map(TlsSettings::server_config);

    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    // The store is opened before the workers start, so `/stats` begins from it.
    let (store, lifetime) = stats::open(&stats_settings);
    let (recorder_handle, recorder_inbox) = stats::channel();
    let stats = Stats::with_store(listeners.len(), lifetime, Some(recorder_handle.clone()));
    let recorder = stats::Recorder::spawn(
        store,
        stats_settings,
        stats.clone(),
        snapshot.clone(),
        recorder_inbox,
        recorder_handle,
    )
    .map_err(StartError::Thread)?;
    let access_log = access_log
        .map(|settings| AccessLog::start(&settings).map_err(StartError::AccessLog))
        .transpose()?;
    let gateway = Arc::new(Gateway::new(
        snapshot.clone(),
        stats.clone(),
        access_log.clone(),
    ));
    // Running → control thread (stop requests); control thread → workers (drain).
    let (stop, mut stop_requested) = watch::channel(false);
    let (drain, shutdown) = watch::channel(false);
    let connections = Arc::new(ConnectionCount::default());

    let mut workers = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let worker = Worker {
            index,
            listener,
            gateway: gateway.clone(),
            shard: stats.shard(index),
            shutdown: shutdown.clone(),
            drain_timeout: options.drain_timeout,
            limits,
            connections: connections.clone(),
            tls: server_config.clone(),
            redirect: redirect_listeners.next().map(|listener| RedirectListener {
                listener,
                https_port: local_addr.port(),
            }),
        };
        workers.push(worker.spawn().map_err(StartError::Thread)?);
    }
    if let Some(taken) = taken {
        // The workers accept on the shared sockets now: the old process may drain.
        if let Err(error) = taken.confirm() {
            tracing::warn!(%error, "the previous rgate did not take the handover's confirmation");
        }
        info!("took the listeners over from the previous rgate");
    }
    let handover = handover
        .map(|(path, copies)| HandoverServer::bind(&path, copies))
        .transpose()
        .map_err(StartError::Handover)?;

    let handle_signals = options.handle_signals;
    let config_path = options.config_path.clone();
    let tls_enabled = tls.is_some();
    let (reload, reload_requests) = mpsc::channel(4);
    // The admin plane answers until the workers are gone (it reports the drain).
    let (admin_stop, admin_stopped) = watch::channel(false);
    let reloads = Arc::new(crate::observe::metrics::ReloadCounts::default());
    let docker_counts = Arc::new(crate::observe::metrics::DockerCounts::default());
    let admin_thread = match admin_listener {
        Some(listener) => Some(
            admin::spawn(
                listener,
                admin::AdminState {
                    snapshot: snapshot.clone(),
                    stats,
                    reload: reload.clone(),
                    draining: shutdown,
                    reloads: reloads.clone(),
                    access_log: access_log.clone(),
                    docker_counts: docker_counts.clone(),
                },
                admin_stopped,
            )
            .map_err(StartError::Thread)?,
        ),
        None => None,
    };
    let (ready, control_ready) = std::sync::mpsc::channel::<()>();
    let control = thread::Builder::new()
        .name("rgate-control".into())
        .spawn(move || {
            let runtime = match crate::server::current_thread_runtime() {
                Ok(runtime) => runtime,
                Err(error) => {
                    error!(%error, "cannot start the control runtime; stopping");
                    let _ = drain.send(true);
                    return join_workers(workers);
                }
            };
            runtime.block_on(async move {
                let control = ControlPlane::start(
                    config_path,
                    snapshot,
                    docker,
                    limits,
                    tls_enabled,
                    Telemetry {
                        reloads,
                        access_log,
                        docker: docker_counts,
                    },
                );
                let signals = if handle_signals {
                    Signals::register()
                } else {
                    None
                };
                let _ = ready.send(());
                control
                    .serve(&mut stop_requested, signals, reload_requests, handover)
                    .await;
            });
            let _ = drain.send(true);
            let report = join_workers(workers);
            let _ = admin_stop.send(true);
            if let Some(admin) = admin_thread {
                let _ = admin.join();
            }
            // Last, so the store gets every request the workers answered.
            recorder.stop();
            report
        })
        .map_err(StartError::Thread)?;
    // Signal handlers are in place once the control thread says so (or has died).
    let _ = control_ready.recv();

    info!(addr = %local_addr, tls = server_config.is_some(), "rgate listening");
    if let Some(addr) = redirect_addr {
        info!(%addr, "redirecting plain HTTP to HTTPS");
    }
    Ok(Running {
        local_addr,
        redirect_addr,
        admin_addr,
        stop,
        reload,
        control: Some(control),
    })
}

fn join_workers(workers: Vec<thread::JoinHandle<io::Result<DrainReport>>>) -> DrainReport {
    workers
        .into_iter()
        .map(|worker| match worker.join() {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                error!(%error, "worker failed");
                DrainReport::default()
            }
            Err(_) => {
                error!("worker panicked");
                DrainReport::default()
            }
        })
        .fold(DrainReport::default(), |a, b| a + b)
}

impl Running {
    /// The address the gateway listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin plane's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The plain-HTTP redirect listener's address, when `tls.redirect_http_port` is set.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// Reloads the config file now, as `SIGHUP` or a change to the file would.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (reply, result) = oneshot::channel();
        self.reload
            .send(reply)
            .await
            .map_err(|_| ReloadError::Stopped)?;
        result.await.unwrap_or(Err(ReloadError::Stopped))
    }

    /// Blocks until a stop (signal or [`Running::shutdown`]) has drained the workers.
    pub fn wait(mut self) -> DrainReport {
        self.join()
    }

    /// Stops accepting, drains in-flight requests, and returns the report.
    pub fn shutdown(mut self) -> DrainReport {
        let _ = self.stop.send(true);
        self.join()
    }

    fn join(&mut self) -> DrainReport {
        let report = self
            .control
            .take()
            .map(|control| control.join().unwrap_or_default())
            .unwrap_or_default();
        info!(
            drained = report.drained,
            aborted = report.aborted,
            "rgate stopped"
        );
        report
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.control.is_some() {
            let _ = self.stop.send(true);
            self.join();
        }
    }
}
