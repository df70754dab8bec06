//! The control plane: one thread that runs the producers of runtime state
//! (Docker discovery, health checks, JWT key refresh, config reloads) and turns signals into a
//! drain. The request path only reads what these publish.
//!
//! A reload (the config file changes, `SIGHUP`, or [`crate::app::Running::reload`])
//! reads, validates and compiles the file. A file with any problem is refused
//! with every problem logged, and the current config keeps serving. A good one
//! is swapped in atomically: requests in flight finish on the snapshot they
//! started with, and each backend that keeps its name and source keeps its
//! endpoints, their health and breaker state, and their pooled connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::backend::{health, Backend};
use crate::config::watch::ConfigWatch;
use crate::config::{self, Config, ConfigErrors};
use crate::discovery::{self, DockerSettings};
use crate::server::Limits;
use crate::snapshot::SnapshotHandle;

/// Writes to the config file closer together than this make one reload:
/// editors and `cp` often write a file in several steps.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadReport {
    pub routes: usize,
    pub backends: usize,
    /// Backends that kept their endpoints from the previous config.
    pub carried: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("rgate was started without a config file to reload")]
    NoConfigFile,
    #[error("the new config is refused; the current one keeps serving:\n{0}")]
    Invalid(ConfigErrors),
    #[error("rgate is stopping")]
    Stopped,
}

/// A reload asked for through [`crate::app::Running::reload`], with where to send the result.
pub(crate) type ReloadRequest = oneshot::Sender<Result<ReloadReport, ReloadError>>;

/// The state the control thread owns.
/// How often idle rate-limit keys are dropped.
const RATE_LIMIT_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct ControlPlane {
    config_path: Option<PathBuf>,
    snapshot: Arc<SnapshotHandle>,
    docker: Vec<DockerSettings>,
    /// Read at start only; a reload that changes them says so.
    limits: Limits,
    tls: bool,
    discovery: watch::Sender<Vec<Arc<Backend>>>,
    discovery_tasks: Vec<JoinHandle<()>>,
    health: Vec<JoinHandle<()>>,
    /// One key refresh per JWT provider.
    auth: Vec<JoinHandle<()>>,
    telemetry: Telemetry,
}

/// What the control plane reports through, shared with the admin plane.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    pub(crate) reloads: Arc<crate::observe::metrics::ReloadCounts>,
    pub(crate) access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
    pub(crate) docker: Arc<crate::observe::metrics::DockerCounts>,
}

impl ControlPlane {
    /// Starts discovery and health checks for the current snapshot. Must run
    /// inside the control thread's runtime.
    pub(crate) fn start(
        config_path: Option<PathBuf>,
        snapshot: Arc<SnapshotHandle>,
        docker: Vec<DockerSettings>,
        limits: Limits,
        tls: bool,
        telemetry: Telemetry,
    ) -> Self {
        let backends = snapshot.load().backends.clone();
        let (discovery, discovery_tasks) =
            spawn_discovery(&docker, backends.clone(), &telemetry.docker);
        tokio::spawn(sweep_rate_limits(snapshot.clone()));
        let auth = spawn_key_refresh(&snapshot.load());
        Self {
            auth,
            telemetry,
            config_path,
            snapshot,
            docker,
            limits,
            tls,
            discovery,
            discovery_tasks,
            health: spawn_health_checks(&backends),
        }
    }

    /// Runs until a stop is requested (by `stop` or a signal), reloading on
    /// every trigger meanwhile.
    pub(crate) async fn serve(
        mut self,
        stop: &mut watch::Receiver<bool>,
        signals: Option<Signals>,
        mut requests: mpsc::Receiver<ReloadRequest>,
        handover: Option<crate::server::handover::HandoverServer>,
    ) {
        // Resolves when a successor has taken the listeners; dropped (closing
        // this process's copies of the sockets) on any other stop.
        let handover = async move {
            match handover {
                Some(server) => server.serve().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(handover);
        let mut watch = self.config_path.as_deref().and_then(watch_file);
        let (mut terminate, mut interrupt, mut hangup, mut user1) = match signals {
            Some(Signals {
                terminate,
                interrupt,
                hangup,
                user1,
            }) => (Some(terminate), Some(interrupt), Some(hangup), Some(user1)),
            None => (None, None, None, None),
        };
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                () = &mut handover => break,
                Some(()) = recv_signal(&mut terminate) => {
                    info!("SIGTERM received; draining");
                    break;
                }
                Some(()) = recv_signal(&mut interrupt) => {
                    info!("SIGINT received; draining");
                    break;
                }
                Some(()) = recv_signal(&mut user1) => {
                    if let Some(log) = &self.telemetry.access_log {
                        info!("SIGUSR1 received; reopening the access log");
                        log.reopen();
                    }
                }
                Some(()) = recv_signal(&mut hangup) => {
                    // Logged inside; nobody else waits for the result.
                    let _ = self.reload_logged("SIGHUP");
                }
                Some(()) = file_changed(&mut watch) => {
                    // Take what else the same change brought, then reload once.
                    let debounce = tokio::time::sleep(DEBOUNCE);
                    tokio::pin!(debounce);
                    loop {
                        tokio::select! {
                            () = &mut debounce => break,
                            Some(()) = file_changed(&mut watch) => {}
                        }
                    }
                    let _ = self.reload_logged("config file changed");
                }
                Some(reply) = requests.recv() => {
                    let _ = reply.send(self.reload_logged("reload requested"));
                }
            }
        }
        for task in &self.discovery_tasks {
            task.abort();
        }
        for task in self.health.iter().chain(&self.auth) {
            task.abort();
        }
    }

    fn reload_logged(&mut self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let result = self.reload();
        let counter = match &result {
            Ok(_) => &self.telemetry.reloads.applied,
            Err(_) => &self.telemetry.reloads.refused,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &result {
            Ok(report) => info!(
                trigger,
                routes = report.routes,
                backends = report.backends,
                carried = report.carried,
                "config reloaded"
            ),
            Err(error) => error!(trigger, "{error}"),
        }
        result
    }

    fn reload(&mut self) -> Result<ReloadReport, ReloadError> {
        let path = self
            .config_path
            .as_deref()
            .ok_or(ReloadError::NoConfigFile)?;
        let Config {
            mut snapshot,
            docker,
            limits,
            tls,
            admin: _,
            access_log: _,
            stats: _,
        } = config::load(path).map_err(ReloadError::Invalid)?;
        let carried = snapshot.carry_over(&self.snapshot.load());
        // TLS settings have no equality (certificate files may change under
        // the same paths), so any reload with TLS on either side says so.
        if limits != self.limits || tls.is_some() || self.tls {
            warn!(
                "`limits`, `tls` (certificates included), `admin`, `access_log` and `stats` \
                 are read at start only; restart rgate to apply changes to them"
            );
        }
        let report = ReloadReport {
            routes: snapshot.router.routes().len(),
            backends: snapshot.backends.len(),
            carried,
        };
        let backends = snapshot.backends.clone();
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        for task in self.auth.drain(..) {
            task.abort();
        }
        self.auth = spawn_key_refresh(&snapshot);
        if docker == self.docker {
            self.discovery.send_replace(backends.clone());
        } else {
            // Different daemons or addressing: start discovery afresh.
            for task in self.discovery_tasks.drain(..) {
                task.abort();
            }
            (self.discovery, self.discovery_tasks) =
                spawn_discovery(&docker, backends.clone(), &self.telemetry.docker);
            self.docker = docker;
        }
        for task in self.health.drain(..) {
            task.abort();
        }
        self.health = spawn_health_checks(&backends);
        Ok(report)
    }
}

/// Drops idle rate-limit keys of the current snapshot's routes, off the
/// request path; a key whose bucket is full again loses nothing by going.
async fn sweep_rate_limits(snapshot: Arc<SnapshotHandle>) {
    let mut every = tokio::time::interval(RATE_LIMIT_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for limit in crate::snapshot::rate_limits(&snapshot.load()) {
            limit.sweep();
        }
    }
}

/// One discovery task per Docker host, all fed the current backends.
fn spawn_discovery(
    hosts: &[DockerSettings],
    backends: Vec<Arc<Backend>>,
    counts: &crate::observe::metrics::DockerCounts,
) -> (watch::Sender<Vec<Arc<Backend>>>, Vec<JoinHandle<()>>) {
    // Without Docker backends the tasks idle until a reload brings some.
    let (sender, receiver) = watch::channel(backends);
    let tasks = hosts
        .iter()
        .enumerate()
        .map(|(index, settings)| {
            let host = discovery::Host {
                index,
                of: hosts.len(),
                name: settings.host_name().into(),
            };
            let counts = counts.host(settings.host_name());
            tokio::spawn(discovery::run(
                settings.clone(),
                host,
                receiver.clone(),
                counts,
            ))
        })
        .collect();
    (sender, tasks)
}

fn spawn_key_refresh(snapshot: &crate::snapshot::Snapshot) -> Vec<JoinHandle<()>> {
    snapshot
        .providers
        .iter()
        .map(|provider| tokio::spawn(crate::auth::jwks::run(provider.clone())))
        .collect()
}

fn spawn_health_checks(backends: &[Arc<Backend>]) -> Vec<JoinHandle<()>> {
    backends
        .iter()
        .filter_map(|backend| {
            let check = backend.health_check.clone()?;
            Some(tokio::spawn(health::run(backend.clone(), check)))
        })
        .collect()
}

/// The config file's watch; without one, SIGHUP and explicit reloads still work.
fn watch_file(path: &Path) -> Option<ConfigWatch> {
    match ConfigWatch::new(path) {
        Ok(watch) => Some(watch),
        Err(error) => {
            warn!(%error, path = %path.display(), "cannot watch the config file; reload with SIGHUP instead");
            None
        }
    }
}

/// The next change to the config file; pending forever without a watch,
/// and once the watch breaks (logged, then dropped).
async fn file_changed(watch: &mut Option<ConfigWatch>) -> Option<()> {
    let Some(current) = watch else {
        return std::future::pending().await;
    };
    if current.changed().await.is_none() {
        warn!("the config file's watch stopped; reload with SIGHUP instead");
        *watch = None;
        return std::future::pending().await;
    }
    Some(())
}

/// The process signals rgate handles, registered before it reports that it
/// is listening, so an early signal is never met by the default action.
pub(crate) struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    /// Reopen the access log (logrotate).
    user1: Signal,
}

impl Signals {
    pub(crate) fn register() -> Option<Self> {
        let register = || -> std::io::Result<Self> {
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
                hangup: signal(SignalKind::hangup())?,
                user1: signal(SignalKind::user_defined1())?,
            })
        };
        match register() {
            Ok(signals) => Some(signals),
            Err(error) => {
                error!(%error, "cannot install signal handlers; stop rgate with SIGKILL");
                None
            }
        }
    }
}

async fn recv_signal(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
