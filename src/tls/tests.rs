//! Certificate loading and SNI selection, with self-signed certificates
//! generated per test.

use std::path::{Path, PathBuf};

use super::*;

/// Writes a self-signed certificate for `names` and its key as
/// `<stem>.pem` / `<stem>.key` in `dir`.
pub(crate) fn write_self_signed(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn load(dir: &Path, stem: &str, names: &[&str]) -> Certificate {
    let (cert, key) = write_self_signed(dir, stem, names);
    load_certificate(&cert, &key, &provider()).unwrap()
}

/// Which certificate (by index) the resolver picks for `server_name`.
fn picked(resolver: &SniResolver, server_name: Option<&str>) -> usize {
    let chosen = resolver.select(server_name).unwrap();
    resolver
        .certificates
        .iter()
        .position(|c| std::ptr::eq(c, chosen))
        .unwrap()
}

#[test]
fn names_come_from_the_subject_alt_names_in_lowercase() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = load(dir.path(), "a", &["Shop.Example.com", "*.api.example.com"]);
    assert_eq!(
        certificate.names,
        vec!["shop.example.com".into(), "*.api.example.com".into()] as Vec<Box<str>>
    );
}

#[test]
fn sni_picks_exact_then_wildcard_then_the_first_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let resolver = SniResolver {
        certificates: vec![
            load(dir.path(), "default", &["default.test"]),
            load(dir.path(), "wild", &["*.example.com"]),
            load(dir.path(), "exact", &["www.example.com"]),
        ],
    };
    assert_eq!(picked(&resolver, Some("default.test")), 0);
    assert_eq!(picked(&resolver, Some("api.example.com")), 1);
    assert_eq!(picked(&resolver, Some("API.Example.COM")), 1);
    // An exact name beats a wildcard listed earlier.
    assert_eq!(picked(&resolver, Some("www.example.com")), 2);
    // A wildcard covers exactly one label.
    assert_eq!(picked(&resolver, Some("a.b.example.com")), 0);
    assert_eq!(picked(&resolver, Some("example.com")), 0);
    assert_eq!(picked(&resolver, Some("unknown.test")), 0);
    assert_eq!(picked(&resolver, None), 0);
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = write_self_signed(dir.path(), "a", &["a.test"]);
    let (_, other_key) = write_self_signed(dir.path(), "b", &["b.test"]);
    let error = load_certificate(&cert, &other_key, &provider()).unwrap_err();
    assert!(
        matches!(error, CertificateError::KeyMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(error.field(), "key");
}
