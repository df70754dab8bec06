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
    assert_eq!(config.admin, Some(crate::admin::DEFAULT_LISTEN));
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
