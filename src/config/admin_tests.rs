//! The `admin` key: on by default on loopback, `off`, or an address that
//! must be loopback unless `allow_public`.

use std::path::Path;

use super::tests::refused;
use super::*;

const BACKEND: &str = "routes: []\nbackends:\n  - {name: b, servers: [\"127.0.0.1:1\"]}\n";

fn admin(value: &str) -> Option<std::net::SocketAddr> {
    parse(&format!("admin: {value}\n{BACKEND}"), Path::new("cfg.yml"))
        .unwrap()
        .admin
}

#[test]
fn the_admin_plane_is_on_by_default_on_loopback() {
    let config = parse(BACKEND, Path::new("cfg.yml")).unwrap();
    assert_eq!(config.admin, Some(crate::config::DEFAULT_ADMIN_LISTEN));
    assert_eq!(admin("off"), None);
    assert_eq!(
        admin("{listen: \"127.0.0.1:9911\"}"),
        Some("127.0.0.1:9911".parse().unwrap())
    );
    assert_eq!(
        admin("{listen: \"[::1]:9911\"}"),
        Some("[::1]:9911".parse().unwrap())
    );
    assert_eq!(
        admin("{listen: \"0.0.0.0:9911\", allow_public: true}"),
        Some("0.0.0.0:9911".parse().unwrap())
    );
}

#[test]
fn a_public_or_malformed_admin_address_is_refused() {
    refused(
        &format!("admin: {{listen: \"0.0.0.0:9901\"}}\n{BACKEND}"),
        "admin.listen",
        "allow_public",
    );
    refused(
        &format!("admin: {{listen: \"localhost\"}}\n{BACKEND}"),
        "admin.listen",
        "is not IP:port",
    );
    refused(
        &format!("admin: {{listen: \"127.0.0.1:1\", public: true}}\n{BACKEND}"),
        "admin",
        "must be `off`",
    );
}

#[test]
fn the_access_log_is_off_by_default_and_checked_when_on() {
    use crate::observe::access_log::{Format, Target};
    assert!(parse(BACKEND, Path::new("cfg.yml"))
        .unwrap()
        .access_log
        .is_none());
    let config = parse(
        &format!("access_log: {{path: logs/access.log, format: common, buffer: 16}}\n{BACKEND}"),
        Path::new("/etc/rgate/cfg.yml"),
    )
    .unwrap();
    let log = config.access_log.unwrap();
    assert_eq!(
        log.target,
        Target::File("/etc/rgate/logs/access.log".into())
    );
    assert_eq!(log.format, Format::Common);
    assert_eq!(log.buffer, 16);
    let stdout = parse(
        &format!("access_log: {{path: stdout}}\n{BACKEND}"),
        Path::new("cfg.yml"),
    )
    .unwrap()
    .access_log
    .unwrap();
    assert_eq!(
        (stdout.target, stdout.format),
        (Target::Stdout, Format::Json)
    );
    refused(
        &format!("access_log: {{path: stdout, format: xml}}\n{BACKEND}"),
        "access_log.format",
        "not one of json, common",
    );
    refused(
        &format!("access_log: {{path: stdout, buffer: 0}}\n{BACKEND}"),
        "access_log.buffer",
        "at least 1",
    );
    refused(
        &format!("access_log: {{path: \"\"}}\n{BACKEND}"),
        "access_log.path",
        "stdout",
    );
}

#[test]
fn stats_are_kept_beside_the_config_by_default() {
    use crate::observe::stats::{Settings, Target};
    let stats = |yaml: &str| {
        parse(
            &format!("{yaml}\n{BACKEND}"),
            Path::new("/etc/rgate/edge.yml"),
        )
        .unwrap()
        .stats
    };
    assert_eq!(
        stats(""),
        Settings::new(Target::File("/etc/rgate/edge.stats.db".into()))
    );
    assert_eq!(stats("stats: {store: none}").target, Target::Memory);
    let custom = stats("stats: {store: data/s.db, flush_interval: 5s, retention: 24h}");
    assert_eq!(custom.target, Target::File("/etc/rgate/data/s.db".into()));
    assert_eq!(custom.flush_interval, std::time::Duration::from_secs(5));
    assert_eq!(custom.retention, std::time::Duration::from_secs(86_400));
}

#[test]
fn bad_stats_settings_are_refused() {
    refused(
        &format!("stats: {{store: \"\"}}\n{BACKEND}"),
        "stats.store",
        "a file or `none`",
    );
    refused(
        &format!("stats: {{flush_interval: 0s}}\n{BACKEND}"),
        "stats.flush_interval",
        "greater than zero",
    );
    refused(
        &format!("stats: {{retention: 30s}}\n{BACKEND}"),
        "stats.retention",
        "at least 1m",
    );
}
