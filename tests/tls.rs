//! TLS termination over real sockets: proxied HTTPS with `X-Forwarded-Proto:
//! https`, SNI certificate choice, HTTP/2 by ALPN, the plain-HTTP redirect
//! listener, and plain HTTP sent to the TLS port. Certificates are
//! self-signed and generated per test; all traffic stays on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gateway.rs"]
mod gateway;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::*;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rgate_upstream::{Config as UpstreamConfig, Upstream};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A generated self-signed certificate, written to disk for rgate's config.
struct TestCert {
    der: CertificateDer<'static>,
    cert_path: String,
    key_path: String,
}

fn generate(dir: &Path, stem: &str, names: &[&str]) -> TestCert {
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();
    TestCert {
        der: generated.cert.der().clone(),
        cert_path: cert_path.to_str().unwrap().to_owned(),
        key_path: key_path.to_str().unwrap().to_owned(),
    }
}

/// One catch-all route to `upstream`, with `tls_extra` appended under `tls:`.
fn tls_config(upstream: SocketAddr, certs: &[&TestCert], tls_extra: &str) -> String {
    let mut yaml = static_config(&[upstream]);
    yaml.push_str("tls:\n  certificates:\n");
    for cert in certs {
        yaml.push_str(&format!(
            "    - {{cert: {:?}, key: {:?}}}\n",
            cert.cert_path, cert.key_path
        ));
    }
    yaml.push_str(tls_extra);
    yaml
}

async fn upstream(name: &str) -> Upstream {
    Upstream::spawn(UpstreamConfig {
        name: name.into(),
        ..UpstreamConfig::default()
    })
    .await
    .expect("upstream")
}

/// A TLS connection to `addr` that trusts exactly `trusted`, offering `alpn`.
async fn connect_tls(
    addr: SocketAddr,
    server_name: &str,
    trusted: &[&TestCert],
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from(server_name.to_owned()).unwrap(),
            stream,
        )
        .await
        .expect("TLS handshake")
}

fn peer_certificate(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One HTTP/1.1 GET over an established TLS stream.
async fn get_over(stream: TlsStream<TcpStream>, path: &str) -> (u16, http::HeaderMap, Bytes) {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    read(sender.send_request(get(path)).await.unwrap()).await
}

#[tokio::test]
async fn https_requests_are_proxied_with_forwarded_proto_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate(dir.path(), "a", &["a.test"]);
    let up = upstream("echo").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&cert], ""));

    let stream = connect_tls(gw.addr, "a.test", &[&cert], &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, headers, body) = get_over(stream, "/secure?x=1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream-name"], "echo");
    let echo = json(&body);
    assert_eq!(echo["path"], "/secure");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn sni_selects_the_certificate_and_the_first_one_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.1 is an IP SAN: a client connecting by IP sends no SNI.
    let a = generate(dir.path(), "a", &["a.test", "127.0.0.1"]);
    let b = generate(dir.path(), "b", &["b.test", "*.b.test"]);
    let up = upstream("echo").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&a, &b], ""));
    let trusted = [&a, &b];

    let stream = connect_tls(gw.addr, "b.test", &trusted, &[]).await;
    assert_eq!(peer_certificate(&stream), b.der);
    assert_eq!(get_over(stream, "/").await.0, 200);

    let stream = connect_tls(gw.addr, "api.b.test", &trusted, &[]).await;
    assert_eq!(peer_certificate(&stream), b.der, "wildcard name");

    let stream = connect_tls(gw.addr, "a.test", &trusted, &[]).await;
    assert_eq!(peer_certificate(&stream), a.der);

    let stream = connect_tls(gw.addr, "127.0.0.1", &trusted, &[]).await;
    assert_eq!(peer_certificate(&stream), a.der, "no SNI: the default");
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate(dir.path(), "a", &["a.test"]);
    let up = upstream("h2").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&cert], ""));

    let stream = connect_tls(gw.addr, "a.test", &[&cert], &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://a.test/over/h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (status, _, body) = read(response).await;
    assert_eq!(status, 200);
    let echo = json(&body);
    assert_eq!(echo["path"], "/over/h2");
    assert_eq!(echo["headers"]["host"], "a.test");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn the_redirect_port_answers_308_to_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate(dir.path(), "a", &["a.test"]);
    let up = upstream("echo").await;
    // A port that was free a moment ago (the config refuses port 0).
    let redirect_port = closed_port().await.port();
    let gw = TestGateway::start(&tls_config(
        up.addr(),
        &[&cert],
        &format!("  redirect_http_port: {redirect_port}\n"),
    ));
    let redirect = gw.running.as_ref().unwrap().redirect_addr().unwrap();
    assert_eq!(redirect.port(), redirect_port);

    let mut client = Client::connect(redirect).await;
    let request = Request::post("/pay/now?id=7&x=%2F")
        .header("host", "shop.test:8080")
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let (status, headers, _) = read(client.send(request).await).await;
    assert_eq!(status, 308);
    assert_eq!(
        headers["location"],
        format!("https://shop.test:{}/pay/now?id=7&x=%2F", gw.addr.port()).as_str()
    );
    assert_eq!(
        up.requests(),
        0,
        "nothing is proxied from the redirect port"
    );

    let answer = raw(redirect, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains("invalid_host"), "{answer}");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_cleanly_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate(dir.path(), "a", &["a.test"]);
    let up = upstream("echo").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&cert], ""));

    let started = Instant::now();
    let answer = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the connection is closed, not left hanging"
    );
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    assert_eq!(up.requests(), 0);

    let stream = connect_tls(gw.addr, "a.test", &[&cert], &[]).await;
    assert_eq!(get_over(stream, "/after").await.0, 200);
}

#[tokio::test]
async fn stalled_handshakes_do_not_block_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate(dir.path(), "a", &["a.test"]);
    let up = upstream("echo").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&cert], ""));

    // Connected, but never a ClientHello: on every worker, more than once.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    let served = tokio::time::timeout(Duration::from_secs(3), async {
        let stream = connect_tls(gw.addr, "a.test", &[&cert], &[]).await;
        get_over(stream, "/").await.0
    })
    .await
    .expect("served while other handshakes stall");
    assert_eq!(served, 200);
}

#[tokio::test]
async fn shutdown_drains_in_flight_tls_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate(dir.path(), "a", &["a.test"]);
    let up = upstream("slow").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&cert], ""));
    let addr = gw.addr;

    let stream = connect_tls(addr, "a.test", &[&cert], &[]).await;
    let in_flight = tokio::spawn(get_over(stream, "/slow/400"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.requests() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = tokio::task::spawn_blocking(move || gw.shutdown())
        .await
        .unwrap();
    assert_eq!(in_flight.await.unwrap().0, 200, "completed over TLS");
    assert_eq!((report.drained, report.aborted), (1, 0));
}
