//! Address and port resolution from Docker inspect documents (SPEC §2).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use serde_json::json;

use super::*;

fn settings() -> DockerSettings {
    DockerSettings {
        endpoint: None,
        tls: None,
        network: None,
        host_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        address_mode: AddressMode::Container,
        resync_interval: Duration::from_secs(30),
    }
}

/// An inspect document shaped like Docker's, with the parts discovery reads.
#[allow(clippy::needless_pass_by_value)]
fn inspect(
    labels: serde_json::Value,
    exposed: &[&str],
    network_mode: &str,
    networks: serde_json::Value,
) -> ContainerFacts {
    let exposed: serde_json::Map<String, serde_json::Value> = exposed
        .iter()
        .map(|p| ((*p).to_owned(), json!({})))
        .collect();
    let document = json!({
        "Id": "abc123",
        "Name": "/payment-1",
        "State": {"Status": "running", "Running": true, "Paused": false},
        "Config": {"Labels": labels, "ExposedPorts": exposed, "StopSignal": "SIGWINCH"},
        "HostConfig": {"NetworkMode": network_mode},
        "NetworkSettings": {
            "Networks": networks,
            "Ports": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}], "53/udp": null}
        }
    });
    let response: ContainerInspectResponse = serde_json::from_value(document).unwrap();
    ContainerFacts::from(response)
}

fn bridge(ip: &str) -> serde_json::Value {
    json!({"bridge": {"IPAddress": ip}})
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn facts_are_read_from_the_inspect_document() {
    let facts = inspect(
        json!({"app_name": "payment"}),
        &["8080/tcp", "53/udp"],
        "bridge",
        bridge("203.0.113.5"),
    );
    assert_eq!(facts.id, "abc123");
    assert_eq!(facts.name, "payment-1");
    assert_eq!(facts.labels["app_name"], "payment");
    assert_eq!(
        facts.exposed_ports,
        vec![8080],
        "udp ports are not dialable"
    );
    assert_eq!(facts.stop_signal, Some(28));
    assert!(facts.ready());
    assert_eq!(
        facts.published[&8080],
        vec![(Some(IpAddr::from([0, 0, 0, 0])), 49153)]
    );
}

#[test]
fn port_label_beats_backend_port_beats_single_exposed_port() {
    let on_host = |labels| {
        inspect(
            labels,
            &["80/tcp"],
            "host",
            json!({"host": {"IPAddress": ""}}),
        )
    };
    let s = settings();
    let labelled = on_host(json!({"rgate.port": "9000"}));
    assert_eq!(labelled.resolve(Some(7000), &s), Ok(addr("127.0.0.1:9000")));
    let plain = on_host(json!({}));
    assert_eq!(plain.resolve(Some(7000), &s), Ok(addr("127.0.0.1:7000")));
    assert_eq!(plain.resolve(None, &s), Ok(addr("127.0.0.1:80")));
}

#[test]
fn ambiguous_or_missing_ports_are_unresolvable() {
    let s = settings();
    let several = inspect(json!({}), &["80/tcp", "443/tcp"], "host", json!({}));
    assert_eq!(
        several.resolve(None, &s),
        Err(Unresolvable::SeveralPorts(vec![80, 443]))
    );
    let none = inspect(json!({}), &[], "host", json!({}));
    assert_eq!(none.resolve(None, &s), Err(Unresolvable::NoPort));
    let bad = inspect(json!({"rgate.port": "http"}), &[], "host", json!({}));
    assert_eq!(
        bad.resolve(None, &s),
        Err(Unresolvable::BadPortLabel("http".into()))
    );
}

#[test]
fn host_network_uses_the_host_address() {
    let mut s = settings();
    let facts = inspect(
        json!({"rgate.port": "8080"}),
        &[],
        "host",
        json!({"host": {}}),
    );
    assert_eq!(facts.resolve(None, &s), Ok(addr("127.0.0.1:8080")));
    s.host_address = IpAddr::from([127, 0, 0, 2]);
    assert_eq!(facts.resolve(None, &s), Ok(addr("127.0.0.2:8080")));
}

#[test]
fn other_networks_use_the_container_ip_on_the_only_or_configured_network() {
    let mut s = settings();
    let single = inspect(
        json!({"rgate.port": "8080"}),
        &[],
        "bridge",
        bridge("203.0.113.5"),
    );
    assert_eq!(single.resolve(None, &s), Ok(addr("203.0.113.5:8080")));

    let two = json!({"front": {"IPAddress": "203.0.113.5"}, "back": {"IPAddress": "198.51.100.7"}});
    let multi = inspect(json!({"rgate.port": "8080"}), &[], "front", two);
    assert_eq!(
        multi.resolve(None, &s),
        Err(Unresolvable::SeveralNetworks(vec![
            "back".into(),
            "front".into()
        ])),
        "never a random pick among several networks"
    );
    s.network = Some("back".into());
    assert_eq!(multi.resolve(None, &s), Ok(addr("198.51.100.7:8080")));
    s.network = Some("elsewhere".into());
    assert_eq!(
        multi.resolve(None, &s),
        Err(Unresolvable::NotOnNetwork("elsewhere".into()))
    );

    let unassigned = inspect(json!({"rgate.port": "1"}), &[], "bridge", bridge(""));
    assert_eq!(
        unassigned.resolve(None, &settings()),
        Err(Unresolvable::NoAddress("bridge".into()))
    );
}

#[test]
fn published_mode_dials_the_host_port() {
    let mut s = settings();
    s.address_mode = AddressMode::Published;
    let facts = inspect(json!({}), &["8080/tcp"], "bridge", bridge("203.0.113.5"));
    assert_eq!(facts.resolve(None, &s), Ok(addr("127.0.0.1:49153")));
    let unpublished = inspect(
        json!({"rgate.port": "9090"}),
        &[],
        "bridge",
        bridge("203.0.113.5"),
    );
    assert_eq!(
        unpublished.resolve(None, &s),
        Err(Unresolvable::NotPublished(9090))
    );
}

#[test]
fn starting_unhealthy_and_paused_containers_are_not_ready() {
    let health = |status: &str| {
        let document = json!({
            "Id": "x", "Name": "/x",
            "State": {"Running": true, "Paused": false, "Health": {"Status": status}},
        });
        ContainerFacts::from(serde_json::from_value::<ContainerInspectResponse>(document).unwrap())
    };
    assert!(!health("starting").ready());
    assert!(!health("unhealthy").ready());
    assert!(health("healthy").ready());
    assert!(health("none").ready());

    let paused = json!({"Id": "x", "State": {"Running": true, "Paused": true}});
    assert!(!ContainerFacts::from(
        serde_json::from_value::<ContainerInspectResponse>(paused).unwrap()
    )
    .ready());
    let exited = json!({"Id": "x", "State": {"Running": false}});
    assert!(!ContainerFacts::from(
        serde_json::from_value::<ContainerInspectResponse>(exited).unwrap()
    )
    .ready());
}

#[test]
fn weight_comes_from_the_rgate_weight_label() {
    let weight = |labels| inspect(labels, &[], "host", json!({})).weight();
    assert_eq!(weight(json!({})), Ok(1));
    assert_eq!(weight(json!({"rgate.weight": "3"})), Ok(3));
    for bad in ["0", "101", "heavy", "-1"] {
        assert_eq!(
            weight(json!({"rgate.weight": bad})),
            Err(Unresolvable::BadWeightLabel(bad.into())),
            "{bad}"
        );
    }
}
