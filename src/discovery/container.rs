//! What rgate needs to know about a container, and how it turns into an address.
//!
//! Pure: built from bollard's inspect response, tested without a daemon.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bollard::models::{ContainerInspectResponse, HealthStatusEnum};

use super::{AddressMode, DockerSettings};

/// The container label that names the port rgate dials.
pub(crate) const PORT_LABEL: &str = "rgate.port";
/// The container label that sets its share under `weighted` balancing.
pub(crate) const WEIGHT_LABEL: &str = "rgate.weight";

/// Docker's view of a container's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// No healthcheck configured: running means ready.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// The facts about one container that decide whether and where it gets traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerFacts {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) running: bool,
    pub(crate) paused: bool,
    pub(crate) health: Health,
    pub(crate) network_mode: Option<String>,
    /// Exposed TCP ports (`EXPOSE`), sorted.
    pub(crate) exposed_ports: Vec<u16>,
    /// Network name → the container's IP on it (None while unassigned).
    pub(crate) networks: Vec<(String, Option<IpAddr>)>,
    /// Container TCP port → published host bindings `(host ip, host port)`.
    pub(crate) published: HashMap<u16, Vec<(Option<IpAddr>, u16)>>,
    /// The image's STOPSIGNAL as a number, when it is not the default SIGTERM.
    pub(crate) stop_signal: Option<i32>,
}

/// Why a container that matches a backend's labels cannot take traffic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unresolvable {
    #[error("label {PORT_LABEL}={0:?} is not a port number")]
    BadPortLabel(String),
    #[error("label {WEIGHT_LABEL}={0:?} is not a weight (1-100)")]
    BadWeightLabel(String),
    #[error("exposes several ports {0:?}; set the {PORT_LABEL} label or the backend's port")]
    SeveralPorts(Vec<u16>),
    #[error("exposes no port; set the {PORT_LABEL} label or the backend's port")]
    NoPort,
    #[error("is attached to several networks {0:?}; set docker.network")]
    SeveralNetworks(Vec<String>),
    #[error("is not attached to network {0:?}")]
    NotOnNetwork(String),
    #[error("has no IP address on network {0:?}")]
    NoAddress(String),
    #[error("has no network (network mode {0:?})")]
    NoNetwork(String),
    #[error("does not publish port {0} on the host")]
    NotPublished(u16),
}

impl ContainerFacts {
    /// Running, not paused, and not failing or still starting its healthcheck.
    pub(crate) fn ready(&self) -> bool {
        self.running && !self.paused && matches!(self.health, Health::None | Health::Healthy)
    }

    /// Where to dial this container: SPEC §2's port and address rules.
    pub(crate) fn resolve(
        &self,
        backend_port: Option<u16>,
        settings: &DockerSettings,
    ) -> Result<SocketAddr, Unresolvable> {
        let port = self.port(backend_port)?;
        if settings.address_mode == AddressMode::Published {
            let (ip, host_port) = self
                .published
                .get(&port)
                .and_then(|bindings| bindings.first())
                .ok_or(Unresolvable::NotPublished(port))?;
            let ip = match ip {
                Some(ip) if !ip.is_unspecified() => *ip,
                _ => settings.host_address,
            };
            return Ok(SocketAddr::new(ip, *host_port));
        }
        if self.network_mode.as_deref() == Some("host") {
            return Ok(SocketAddr::new(settings.host_address, port));
        }
        let (network, ip) = match &settings.network {
            Some(wanted) => self
                .networks
                .iter()
                .find(|(name, _)| name == wanted)
                .ok_or_else(|| Unresolvable::NotOnNetwork(wanted.clone()))?,
            None => match self.networks.as_slice() {
                [only] => only,
                [] => {
                    return Err(Unresolvable::NoNetwork(
                        self.network_mode.clone().unwrap_or_default(),
                    ))
                }
                several => {
                    let mut names: Vec<String> = several.iter().map(|(n, _)| n.clone()).collect();
                    names.sort();
                    return Err(Unresolvable::SeveralNetworks(names));
                }
            },
        };
        let ip = ip.ok_or_else(|| Unresolvable::NoAddress(network.clone()))?;
        Ok(SocketAddr::new(ip, port))
    }

    /// The `rgate.weight` label, 1 when absent.
    pub(crate) fn weight(&self) -> Result<u32, Unresolvable> {
        let Some(label) = self.labels.get(WEIGHT_LABEL) else {
            return Ok(1);
        };
        match label.trim().parse::<u32>() {
            Ok(weight) if (1..=crate::backend::endpoint::MAX_WEIGHT).contains(&weight) => {
                Ok(weight)
            }
            _ => Err(Unresolvable::BadWeightLabel(label.clone())),
        }
    }

    fn port(&self, backend_port: Option<u16>) -> Result<u16, Unresolvable> {
        if let Some(label) = self.labels.get(PORT_LABEL) {
            return match label.trim().parse::<u16>() {
                Ok(port) if port != 0 => Ok(port),
                _ => Err(Unresolvable::BadPortLabel(label.clone())),
            };
        }
        if let Some(port) = backend_port {
            return Ok(port);
        }
        match self.exposed_ports.as_slice() {
            [port] => Ok(*port),
            [] => Err(Unresolvable::NoPort),
            several => Err(Unresolvable::SeveralPorts(several.to_vec())),
        }
    }
}

/// Parses Docker's `"8080/tcp"` keys; other protocols are not dialable over HTTP.
fn tcp_port(key: &str) -> Option<u16> {
    match key.split_once('/') {
        Some((port, "tcp")) => port.parse().ok(),
        None => key.parse().ok(),
        Some(_) => None,
    }
}

/// Numbers of the signals an image may name as its STOPSIGNAL (Linux x86 and arm).
fn signal_number(text: &str) -> Option<i32> {
    if let Ok(number) = text.parse() {
        return Some(number);
    }
    let name = text.trim_start_matches("SIG");
    let number = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "WINCH" => 28,
        "PWR" => 30,
        _ => return None,
    };
    Some(number)
}

fn parse_ip(text: Option<&str>) -> Option<IpAddr> {
    text.filter(|t| !t.is_empty()).and_then(|t| t.parse().ok())
}

impl From<ContainerInspectResponse> for ContainerFacts {
    fn from(inspect: ContainerInspectResponse) -> Self {
        let state = inspect.state.unwrap_or_default();
        let health = match state.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => Health::Starting,
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
        };
        let config = inspect.config.unwrap_or_default();
        let mut exposed_ports: Vec<u16> = config
            .exposed_ports
            .unwrap_or_default()
            .iter()
            .filter_map(|key| tcp_port(key))
            .collect();
        exposed_ports.sort_unstable();
        exposed_ports.dedup();
        let settings = inspect.network_settings.unwrap_or_default();
        let mut networks: Vec<(String, Option<IpAddr>)> = settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(name, endpoint)| (name, parse_ip(endpoint.ip_address.as_deref())))
            .collect();
        networks.sort();
        let published = settings
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, bindings)| {
                let port = tcp_port(&key)?;
                let bindings: Vec<(Option<IpAddr>, u16)> = bindings
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|b| {
                        let host_port = b.host_port.as_deref()?.parse().ok()?;
                        Some((parse_ip(b.host_ip.as_deref()), host_port))
                    })
                    .collect();
                (!bindings.is_empty()).then_some((port, bindings))
            })
            .collect();
        Self {
            id: inspect.id.unwrap_or_default(),
            name: inspect
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            stop_signal: config.stop_signal.as_deref().and_then(signal_number),
            labels: config.labels.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            health,
            network_mode: inspect.host_config.and_then(|h| h.network_mode),
            exposed_ports,
            networks,
            published,
        }
    }
}

#[cfg(test)]
mod tests;
