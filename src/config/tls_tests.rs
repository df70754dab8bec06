//! TLS settings: certificate files, their key paths, and SNI names.

use super::tests::{refused, CONTRACT};
use super::*;
use crate::tls::tests::write_self_signed;

fn one(cert: &Path, key: &Path) -> String {
    format!("tls:\n  certificates:\n    - {{cert: {cert:?}, key: {key:?}}}\n")
}

#[test]
fn certificates_load_with_paths_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    write_self_signed(dir.path(), "a", &["a.test"]);
    write_self_signed(dir.path(), "b", &["b.test"]);
    let yaml = "tls:\n  certificates:\n    - {cert: a.pem, key: a.key}\n    - {cert: b.pem, key: b.key}\n  redirect_http_port: 8080\n";
    let config = parse(yaml, &dir.path().join("cfg.yml")).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.redirect_http_port, Some(8080));
    assert_eq!(
        tls.server_config().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    let short = parse(
        "tls: {cert: a.pem, key: a.key}\n",
        &dir.path().join("cfg.yml"),
    )
    .unwrap()
    .tls
    .unwrap();
    assert_eq!(short.redirect_http_port, None);
    assert!(parse(CONTRACT, Path::new("cfg.yml")).unwrap().tls.is_none());
}

#[test]
fn the_tls_section_needs_exactly_one_way_to_name_certificates() {
    refused("tls: {}\n", "tls", "needs certificates");
    refused(
        "tls: {certificates: []}\n",
        "tls.certificates",
        "at least one",
    );
    refused("tls: {cert: a.pem}\n", "tls.key", "required");
    refused("tls: {key: a.key}\n", "tls.cert", "required");
    refused(
        "tls: {cert: a.pem, key: a.key, certificates: [{cert: b.pem, key: b.key}]}\n",
        "tls",
        "both",
    );
    refused(
        "tls: {certificates: [{cert: a.pem, key: a.key, chain: c.pem}]}\n",
        "tls.certificates[0].chain",
        "unknown field `chain`",
    );
    refused(
        "tls: {cert: a.pem, key: a.key, redirect_http_port: 0}\n",
        "tls.redirect_http_port",
        "1-65535",
    );
}

#[test]
fn unreadable_or_malformed_files_are_refused_with_their_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_self_signed(dir.path(), "a", &["a.test"]);
    let missing = dir.path().join("missing.pem");
    refused(
        &one(&missing, &key),
        "tls.certificates[0].cert",
        "cannot read",
    );
    refused(
        &one(&cert, &missing),
        "tls.certificates[0].key",
        "cannot read",
    );
    refused(
        &format!("tls: {{cert: {cert:?}, key: {missing:?}}}\n"),
        "tls.key",
        "cannot read",
    );

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let not_pem = write("not.pem", "hello\n");
    let bad_base64 = write(
        "bad64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let not_x509 = write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let bad_key = write(
        "garbage.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    refused(
        &one(&not_pem, &key),
        "tls.certificates[0].cert",
        "no PEM CERTIFICATE",
    );
    refused(
        &one(&bad_base64, &key),
        "tls.certificates[0].cert",
        "not valid PEM",
    );
    refused(
        &one(&not_x509, &key),
        "tls.certificates[0].cert",
        "not valid X.509",
    );
    refused(
        &one(&cert, &cert),
        "tls.certificates[0].key",
        "no PEM private key",
    );
    refused(
        &one(&cert, &bad_key),
        "tls.certificates[0].key",
        "unsupported private key",
    );
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = write_self_signed(dir.path(), "a", &["a.test"]);
    let (_, other) = write_self_signed(dir.path(), "b", &["b.test"]);
    refused(
        &one(&cert, &other),
        "tls.certificates[0].key",
        "does not belong",
    );
}

#[test]
fn only_the_default_certificate_may_lack_dns_names() {
    let dir = tempfile::tempdir().unwrap();
    let (nameless, nameless_key) = write_self_signed(dir.path(), "n", &[]);
    let (named, named_key) = write_self_signed(dir.path(), "a", &["a.test"]);
    let yaml = |first: (&Path, &Path), second: (&Path, &Path)| {
        format!(
            "tls:\n  certificates:\n    - {{cert: {:?}, key: {:?}}}\n    - {{cert: {:?}, key: {:?}}}\n",
            first.0, first.1, second.0, second.1
        )
    };
    refused(
        &yaml((&named, &named_key), (&nameless, &nameless_key)),
        "tls.certificates[1].cert",
        "no DNS names",
    );
    assert!(parse(
        &yaml((&nameless, &nameless_key), (&named, &named_key)),
        Path::new("cfg.yml")
    )
    .is_ok());
}
