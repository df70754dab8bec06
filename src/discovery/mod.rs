//! Docker discovery: keeps each Docker backend's endpoint set in step with the
//! containers that carry its labels.
//!
//! One background task per Docker host owns that host's connection. Per
//! backend it follows an event stream filtered server-side by the backend's
//! labels, lists the matching running containers, and inspects only the
//! container an event names. Each host's containers are its share of the
//! backend; the endpoint set is the union of the shares. The request path
//! never talks to Docker: it reads the endpoint sets these tasks publish.
//!
//! No event falls between the list and the subscription: every (re)connect
//! notes the time *before* listing and subscribes with `since` set a little
//! earlier, so Docker replays anything that happened meanwhile (handling an
//! event twice is harmless: each one re-inspects the current state). A periodic
//! full resync heals anything missed anyway.

mod container;
mod watcher;

use std::net::IpAddr;
use std::time::Duration;

pub(crate) use self::watcher::{run, Host};

/// Which container address rgate dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    /// The container's IP on its network; `host_address` on the host network.
    Container,
    /// The host port Docker publishes (for rgate outside Docker on macOS/Windows).
    Published,
}

/// One Docker host of the `docker:` section, compiled: where its daemon is
/// and how its containers are reached. `docker.endpoints` gives several,
/// each discovered on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// `unix://…`, `tcp://…`, `http(s)://…`; else `DOCKER_HOST`; else the local socket.
    pub endpoint: Option<String>,
    /// Client certificate and CA for a `tcp://` daemon that requires TLS.
    pub tls: Option<DockerTls>,
    /// The network whose IP is dialled when a container is on several.
    pub network: Option<String>,
    /// Address of host-network containers and of published ports.
    pub host_address: IpAddr,
    pub address_mode: AddressMode,
    /// Full relist period, the safety net behind the event stream.
    pub resync_interval: Duration,
}

impl DockerSettings {
    /// How logs, metrics and `/backends` name the host: its endpoint, or
    /// `default` for `DOCKER_HOST` or the local socket.
    pub fn host_name(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("default")
    }
}

/// `tls: {ca, cert, key}` of a Docker endpoint (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}
