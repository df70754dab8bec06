//! The discovery task: connect, subscribe, list, follow events, resync;
//! reconnect with capped exponential backoff when Docker goes away.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as DockerError;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures_util::stream::{select_all, StreamExt};
use tokio::sync::watch;
use tokio::time::{interval_at, sleep, Instant};
use tracing::{debug, info, warn};

use super::container::ContainerFacts;
use super::DockerSettings;
use crate::backend::endpoint::Endpoint;
use crate::backend::{Backend, DockerSelector, Excluded, Source};
use crate::observe::metrics::HostCounts;
use std::sync::atomic::Ordering;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How far back each subscription replays, covering the list/subscribe gap
/// and small clock differences with a remote daemon.
const REPLAY_MARGIN: Duration = Duration::from_secs(2);
/// Per-request limit so a hung daemon cannot stall discovery for Docker's 2 minutes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WATCHED_EVENTS: [&str; 8] = [
    "start",
    "die",
    "stop",
    "kill",
    "pause",
    "unpause",
    "destroy",
    "health_status",
];

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the event stream ended")]
    StreamEnded,
    #[error("the backends changed")]
    Reconfigured,
}

/// Which of the configured Docker hosts a discovery task follows.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Index in `docker.endpoints`: the backend's share this task writes.
    pub(crate) index: usize,
    /// How many hosts there are (a backend is listed once all have listed it).
    pub(crate) of: usize,
    pub(crate) name: Arc<str>,
}

/// Runs discovery on one Docker host for the Docker backends in `backends`
/// (the current config's, replaced on reload) until the sender goes away.
pub(crate) async fn run(
    settings: DockerSettings,
    host: Host,
    mut backends: watch::Receiver<Vec<Arc<Backend>>>,
    counts: Arc<HostCounts>,
) {
    let mut states = Vec::new();
    let mut backoff = BACKOFF_MIN;
    let mut in_outage = false;
    loop {
        reconcile(&mut states, &backends.borrow_and_update(), &host);
        if states.is_empty() {
            // Nothing to discover until a reload brings Docker backends.
            if backends.changed().await.is_err() {
                return;
            }
            continue;
        }
        let error = session(
            &settings,
            &mut states,
            &mut backends,
            &mut in_outage,
            &mut backoff,
            &counts,
        )
        .await;
        if matches!(error, SessionError::Reconfigured) {
            continue;
        }
        if !in_outage {
            // Logged once per outage, not per retry: a down daemon must not flood logs.
            if host.of > 1 {
                // Other hosts carry the traffic: this one's containers leave
                // rotation until it answers again (its resync restores them).
                for state in &mut states {
                    state.forget_all();
                }
                warn!(
                    %error,
                    endpoint = %host.name,
                    "docker unreachable; its containers are out of rotation until it \
                     answers again (the other hosts' stay); reconnecting with backoff"
                );
            } else {
                warn!(
                    %error,
                    endpoint = %host.name,
                    "docker unreachable; Docker backends keep their last known containers \
                     (none yet at startup: those answer 503); reconnecting with backoff"
                );
            }
            in_outage = true;
        } else {
            debug!(%error, "docker still unreachable");
        }
        sleep(backoff + Duration::from_millis(fastrand::u64(..=backoff.as_millis() as u64 / 4)))
            .await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Takes the backends of a new config: a backend with the same name and labels
/// keeps its discovery state (members, stop tombstones, warnings), so a reload
/// costs it nothing; others start afresh.
fn reconcile(states: &mut Vec<BackendState>, backends: &[Arc<Backend>], host: &Host) {
    let mut previous = std::mem::take(states);
    for backend in backends {
        let Source::Docker(selector) = &backend.source else {
            continue;
        };
        let kept = previous
            .iter()
            .position(|s| s.backend.name == backend.name && &s.selector == selector);
        match kept {
            Some(at) => {
                let mut state = previous.swap_remove(at);
                state.backend = backend.clone();
                states.push(state);
            }
            None => states.extend(BackendState::new(backend.clone(), host.clone())),
        }
    }
}

/// One connected period: returns the error (or the reload) that ended it.
async fn session(
    settings: &DockerSettings,
    states: &mut [BackendState],
    backends: &mut watch::Receiver<Vec<Arc<Backend>>>,
    in_outage: &mut bool,
    backoff: &mut Duration,
    counts: &HostCounts,
) -> SessionError {
    match follow(settings, states, backends, in_outage, backoff, counts).await {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

async fn follow(
    settings: &DockerSettings,
    states: &mut [BackendState],
    backends: &mut watch::Receiver<Vec<Arc<Backend>>>,
    in_outage: &mut bool,
    backoff: &mut Duration,
    counts: &HostCounts,
) -> Result<std::convert::Infallible, SessionError> {
    let docker = connect(settings)?.negotiate_version().await?;
    let since = replay_since();
    let mut events = select_all(states.iter().enumerate().map(|(i, state)| {
        docker
            .events(Some(events_options(&state.selector, &since)))
            .map(move |event| (i, event))
    }));
    for state in states.iter_mut() {
        state.resync(&docker, settings).await?;
    }
    counts.resyncs.fetch_add(1, Ordering::Relaxed);
    if *in_outage {
        info!("docker reachable again; endpoint sets resynchronised");
        *in_outage = false;
    }
    *backoff = BACKOFF_MIN;

    let period = settings.resync_interval;
    let mut resync = interval_at(Instant::now() + period, period);
    loop {
        tokio::select! {
            item = events.next() => match item {
                Some((i, Ok(event))) => {
                    counts.events.fetch_add(1, Ordering::Relaxed);
                    states[i].on_event(&docker, settings, event).await?;
                }
                Some((_, Err(error))) => return Err(error.into()),
                None => return Err(SessionError::StreamEnded),
            },
            _ = resync.tick() => {
                for state in states.iter_mut() {
                    state.resync(&docker, settings).await?;
                }
                counts.resyncs.fetch_add(1, Ordering::Relaxed);
            }
            // New subscriptions and a resync for the new set of backends.
            Ok(()) = backends.changed() => return Err(SessionError::Reconfigured),
        }
    }
}

fn connect(settings: &DockerSettings) -> Result<Docker, DockerError> {
    let docker = match (&settings.endpoint, &settings.tls) {
        (Some(endpoint), Some(tls)) => Docker::connect_with_ssl(
            endpoint,
            &tls.key,
            &tls.cert,
            &tls.ca,
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )?,
        (Some(endpoint), None) => Docker::connect_with_host(endpoint)?,
        (None, _) => Docker::connect_with_defaults()?,
    };
    Ok(docker.with_timeout(REQUEST_TIMEOUT))
}

fn replay_since() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(REPLAY_MARGIN);
    now.as_secs().to_string()
}

fn label_filter(selector: &DockerSelector) -> Vec<String> {
    selector
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn events_options(
    selector: &DockerSelector,
    since: &str,
) -> bollard::query_parameters::EventsOptions {
    let filters: HashMap<&str, Vec<String>> = HashMap::from([
        ("type", vec!["container".to_owned()]),
        (
            "event",
            WATCHED_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        ),
        // Docker ANDs repeated label filters, as rgate's match_labels require.
        ("label", label_filter(selector)),
    ]);
    EventsOptionsBuilder::default()
        .since(since)
        .filters(&filters)
        .build()
}

/// What an event means for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    /// Re-inspect and take the container's current state.
    Refresh,
    /// Started (again): forget an earlier stop, then re-inspect.
    Start,
    /// Out of rotation now; in-flight requests finish on their connections.
    Remove,
    /// Being stopped: out of rotation, and kept out until it starts again.
    Stopping,
    /// Gone for good.
    Destroy,
    /// A signal that does not stop the container (e.g. SIGHUP to reload).
    Ignore,
}

/// Signals that end a process by default; `docker stop` sends the image's stop signal.
fn is_stop_signal(signal: &str, container_stop_signal: Option<i32>) -> bool {
    let Ok(number) = signal.parse::<i32>() else {
        return true;
    };
    matches!(number, 2 | 3 | 9 | 15) || container_stop_signal == Some(number)
}

fn classify(action: &str, signal: Option<&str>, container_stop_signal: Option<i32>) -> EventKind {
    // Health events carry their status after a colon: "health_status: healthy".
    match action.split(':').next().unwrap_or(action) {
        "start" => EventKind::Start,
        "unpause" | "health_status" => EventKind::Refresh,
        "die" | "pause" => EventKind::Remove,
        "stop" => EventKind::Stopping,
        "kill" => match signal {
            Some(signal) if !is_stop_signal(signal, container_stop_signal) => EventKind::Ignore,
            _ => EventKind::Stopping,
        },
        "destroy" => EventKind::Destroy,
        _ => EventKind::Ignore,
    }
}

/// A container in rotation.
#[derive(Debug)]
struct Member {
    endpoint: Arc<Endpoint>,
    stop_signal: Option<i32>,
}

/// Discovery's private state for one Docker backend on one host.
#[derive(Debug)]
struct BackendState {
    backend: Arc<Backend>,
    host: Host,
    selector: DockerSelector,
    members: BTreeMap<String, Member>,
    /// Containers told to stop: kept out of rotation even while still running.
    stopping: HashSet<String>,
    /// Containers already warned about as unresolvable (one warning each).
    warned: HashSet<String>,
    /// Containers with every label but kept out (not ready, no usable address).
    excluded: BTreeMap<String, Excluded>,
    /// Running containers with some of the labels but not all, from the last resync.
    partial: Vec<Excluded>,
}

impl BackendState {
    fn new(backend: Arc<Backend>, host: Host) -> Option<Self> {
        let Source::Docker(selector) = &backend.source else {
            return None;
        };
        Some(Self {
            selector: selector.clone(),
            backend,
            host,
            members: BTreeMap::new(),
            stopping: HashSet::new(),
            warned: HashSet::new(),
            excluded: BTreeMap::new(),
            partial: Vec::new(),
        })
    }

    fn exclude(&mut self, id: &str, name: &str, reason: String) {
        self.excluded.insert(
            id.to_owned(),
            Excluded {
                id: id.to_owned(),
                name: name.to_owned(),
                reason,
            },
        );
        self.publish_excluded();
    }

    fn include(&mut self, id: &str) {
        if self.excluded.remove(id).is_some() {
            self.publish_excluded();
        }
    }

    fn publish_excluded(&self) {
        let mut list: Vec<Excluded> = self.excluded.values().cloned().collect();
        list.extend(self.partial.iter().cloned());
        self.backend
            .update_share(self.host.index, self.host.of, |share| share.excluded = list);
    }

    /// The host is unreachable: none of its containers stay in rotation.
    fn forget_all(&mut self) {
        self.members.clear();
        self.excluded.clear();
        self.partial.clear();
        self.backend
            .update_share(self.host.index, self.host.of, |share| {
                share.endpoints.clear();
                share.excluded.clear();
            });
    }

    /// Running containers that carry the backend's first label (its
    /// identity, by convention `app_name=…`) but not all the others, each
    /// with what is missing or different. Containers that only share a
    /// later label (`env=production`) belong to other backends and are left
    /// out, or every backend would list every service.
    async fn list_partial(
        &mut self,
        docker: &Docker,
        full: &HashSet<String>,
    ) -> Result<(), DockerError> {
        let mut seen: BTreeMap<String, Excluded> = BTreeMap::new();
        if let Some((key, value)) = self
            .selector
            .labels
            .first()
            .filter(|_| self.selector.labels.len() > 1)
        {
            let filters: HashMap<&str, Vec<String>> = HashMap::from([
                ("label", vec![format!("{key}={value}")]),
                ("status", vec!["running".to_owned()]),
            ]);
            let options = ListContainersOptionsBuilder::default()
                .all(false)
                .filters(&filters)
                .build();
            for summary in docker.list_containers(Some(options)).await? {
                let Some(id) = summary.id else { continue };
                if full.contains(&id) {
                    continue;
                }
                let labels = summary.labels.unwrap_or_default();
                let reason = self
                    .selector
                    .labels
                    .iter()
                    .filter_map(|(k, v)| match labels.get(k) {
                        None => Some(format!("missing label {k}={v}")),
                        Some(actual) if actual != v => {
                            Some(format!("label {k}={actual}, wants {k}={v}"))
                        }
                        Some(_) => None,
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let name = summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|name| name.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                seen.insert(id.clone(), Excluded { id, name, reason });
            }
        }
        self.partial = seen.into_values().collect();
        Ok(())
    }

    async fn on_event(
        &mut self,
        docker: &Docker,
        settings: &DockerSettings,
        event: EventMessage,
    ) -> Result<(), DockerError> {
        let Some(actor) = event.actor else {
            return Ok(());
        };
        let Some(id) = actor.id else {
            return Ok(());
        };
        let action = event.action.unwrap_or_default();
        let attributes = actor.attributes.unwrap_or_default();
        let stop_signal = self.members.get(&id).and_then(|m| m.stop_signal);
        let kind = classify(
            &action,
            attributes.get("signal").map(String::as_str),
            stop_signal,
        );
        debug!(backend = %self.backend.name, container = %id, %action, ?kind, "docker event");
        match kind {
            EventKind::Start => {
                self.stopping.remove(&id);
                self.refresh(docker, settings, &id).await?;
            }
            EventKind::Refresh => {
                if !self.stopping.contains(&id) {
                    self.refresh(docker, settings, &id).await?;
                }
            }
            EventKind::Remove => self.remove(&id, &action),
            EventKind::Stopping => {
                self.stopping.insert(id.clone());
                self.remove(&id, &action);
            }
            EventKind::Destroy => {
                self.stopping.remove(&id);
                self.warned.remove(&id);
                self.remove(&id, &action);
            }
            EventKind::Ignore => {}
        }
        Ok(())
    }

    /// Lists the backend's running containers and reconciles the endpoint set.
    async fn resync(
        &mut self,
        docker: &Docker,
        settings: &DockerSettings,
    ) -> Result<(), DockerError> {
        let filters: HashMap<&str, Vec<String>> = HashMap::from([
            ("label", label_filter(&self.selector)),
            ("status", vec!["running".to_owned()]),
        ]);
        let options = ListContainersOptionsBuilder::default()
            .all(false)
            .filters(&filters)
            .build();
        let running: HashSet<String> = docker
            .list_containers(Some(options))
            .await?
            .into_iter()
            .filter_map(|summary| summary.id)
            .collect();
        // A stopped container no longer needs its tombstone.
        self.stopping.retain(|id| running.contains(id));
        let gone: Vec<String> = self
            .members
            .keys()
            .filter(|id| !running.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.remove(&id, "resync: no longer running");
        }
        for id in &running {
            if !self.stopping.contains(id) {
                self.refresh(docker, settings, id).await?;
            }
        }
        self.excluded.retain(|id, _| running.contains(id));
        self.list_partial(docker, &running).await?;
        self.publish_excluded();
        self.backend
            .update_share(self.host.index, self.host.of, |share| share.listed = true);
        Ok(())
    }

    /// Inspects one container and puts it in or out of rotation.
    async fn refresh(
        &mut self,
        docker: &Docker,
        settings: &DockerSettings,
        id: &str,
    ) -> Result<(), DockerError> {
        let inspect = match docker.inspect_container(id, None).await {
            Ok(inspect) => inspect,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.remove(id, "container no longer exists");
                self.include(id);
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let facts = ContainerFacts::from(inspect);
        let labelled = self
            .selector
            .labels
            .iter()
            .all(|(k, v)| facts.labels.get(k) == Some(v));
        if !labelled {
            self.remove(id, "labels no longer match");
            return Ok(());
        }
        if !facts.ready() {
            let reason = format!(
                "not ready (running={}, paused={}, health={:?})",
                facts.running, facts.paused, facts.health
            );
            self.remove(id, &reason);
            self.exclude(id, &facts.name, reason);
            return Ok(());
        }
        match facts
            .resolve(self.selector.port, settings)
            .and_then(|addr| Ok((addr, facts.weight()?)))
        {
            Ok((addr, weight)) => {
                if self
                    .members
                    .get(id)
                    .is_some_and(|m| m.endpoint.addr == addr && m.endpoint.weight == weight)
                {
                    return Ok(());
                }
                info!(backend = %self.backend.name, host = %self.host.name, container = %facts.name, %addr, "endpoint added");
                self.include(id);
                let stop_signal = facts.stop_signal;
                let mut endpoint = Endpoint::new(addr, id, facts.name)
                    .with_weight(weight)
                    .with_host(self.host.name.clone());
                if self
                    .backend
                    .health_check
                    .as_ref()
                    .is_some_and(|c| c.wait_healthy)
                {
                    endpoint = endpoint.unhealthy_until_checked();
                }
                let endpoint = Arc::new(endpoint);
                self.members.insert(
                    id.to_owned(),
                    Member {
                        endpoint,
                        stop_signal,
                    },
                );
                self.publish();
            }
            Err(reason) => {
                if self.warned.insert(id.to_owned()) {
                    warn!(backend = %self.backend.name, container = %facts.name, %reason, "container skipped");
                }
                self.remove(id, "unresolvable");
                self.exclude(id, &facts.name, reason.to_string());
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: &str, reason: &str) {
        if let Some(member) = self.members.remove(id) {
            info!(
                backend = %self.backend.name,
                host = %self.host.name,
                container = %member.endpoint.name,
                addr = %member.endpoint.addr,
                reason,
                "endpoint removed"
            );
            self.publish();
        }
    }

    fn publish(&self) {
        let endpoints = self.members.values().map(|m| m.endpoint.clone()).collect();
        self.backend
            .update_share(self.host.index, self.host.of, |share| {
                share.endpoints = endpoints
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_like_events_leave_rotation_at_once() {
        assert_eq!(classify("kill", Some("15"), None), EventKind::Stopping);
        assert_eq!(classify("kill", Some("9"), None), EventKind::Stopping);
        assert_eq!(classify("stop", None, None), EventKind::Stopping);
        assert_eq!(classify("die", None, None), EventKind::Remove);
        assert_eq!(classify("pause", None, None), EventKind::Remove);
        assert_eq!(classify("destroy", None, None), EventKind::Destroy);
    }

    #[test]
    fn a_reload_signal_keeps_the_container_unless_it_is_the_stop_signal() {
        assert_eq!(classify("kill", Some("1"), None), EventKind::Ignore);
        // An image whose STOPSIGNAL is SIGWINCH (28) is being stopped.
        assert_eq!(classify("kill", Some("28"), Some(28)), EventKind::Stopping);
        // Unparseable signal: assume a stop rather than keep a dying container.
        assert_eq!(classify("kill", Some("SIGTERM"), None), EventKind::Stopping);
    }

    #[test]
    fn health_and_start_events_refresh() {
        assert_eq!(
            classify("health_status: healthy", None, None),
            EventKind::Refresh
        );
        assert_eq!(
            classify("health_status: unhealthy", None, None),
            EventKind::Refresh
        );
        assert_eq!(classify("unpause", None, None), EventKind::Refresh);
        assert_eq!(classify("start", None, None), EventKind::Start);
        assert_eq!(classify("exec_start: sh", None, None), EventKind::Ignore);
    }
}
