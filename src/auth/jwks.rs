//! The background side of a provider: fetching its JWKS at start, every
//! `refresh`, and when a request brings a `kid` the set lacks.
//!
//! Runs on the control thread; requests only read the key set it publishes.
//! A failed fetch keeps the last good set and is retried with a backoff
//! (1 s doubling up to 30 s, or `refresh` if shorter); the outage is logged
//! once when it starts and once when it ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::keys::{KeySet, MAX_JWKS_BYTES};
use super::{KeySource, Provider};

/// Limit for one fetch, connect to last body byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps `provider`'s keys fresh until aborted (on reload or shutdown).
pub async fn run(provider: Arc<Provider>) {
    if matches!(provider.source, KeySource::Secret) {
        return;
    }
    let mut failing = false;
    let mut backoff = Duration::from_secs(1);
    // Keys carried over a reload stay good until the next refresh.
    if provider.keys().is_some() {
        wait(&provider, provider.refresh).await;
    }
    loop {
        provider.fetching.store(true, Ordering::Release);
        let result = fetch(&provider.source)
            .await
            .and_then(|document| KeySet::from_jwks(&document, &provider.base).map_err(Into::into));
        let next = match result {
            Ok(keys) => {
                if failing {
                    info!(provider = %provider.name, keys = keys.keys.len(), "JWKS fetched again; the outage is over");
                }
                provider.set_keys(Some(Arc::new(keys)));
                failing = false;
                backoff = Duration::from_secs(1);
                provider.refresh
            }
            Err(error) => {
                if !failing {
                    let stale = provider.keys().is_some();
                    warn!(provider = %provider.name, %error, serving_last_good_keys = stale, "JWKS fetch failed; retrying in the background");
                }
                failing = true;
                let next = backoff.min(provider.refresh);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                next
            }
        };
        provider.fetching.store(false, Ordering::Release);
        provider.updates.send_modify(|generation| *generation += 1);
        wait(&provider, next).await;
    }
}

/// Sleeps `duration`, or less if a request asks for a fetch.
async fn wait(provider: &Provider, duration: Duration) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = provider.wake.notified() => {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} bytes or more: over the JWKS size limit")]
    TooLarge(usize),
    #[error("connecting to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the issuer answered {0}")]
    Status(http::StatusCode),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Keys(#[from] super::keys::KeysError),
}

/// The JWKS document from its source.
pub async fn fetch(source: &KeySource) -> Result<Bytes, FetchError> {
    match source {
        // A small local file, read on the control thread.
        KeySource::File(path) => {
            let document = std::fs::read(path).map_err(|source| FetchError::File {
                path: path.display().to_string(),
                source,
            })?;
            if document.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge(MAX_JWKS_BYTES));
            }
            Ok(document.into())
        }
        KeySource::Url(uri) => tokio::time::timeout(FETCH_TIMEOUT, get(uri))
            .await
            .map_err(|_| FetchError::Timeout)?,
        KeySource::Secret => Ok(Bytes::new()),
    }
}

/// One `GET` over HTTP/1.1, TLS for `https` (webpki roots); no redirects.
async fn get(uri: &http::Uri) -> Result<Bytes, FetchError> {
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = format!(
        "{}:{port}",
        host.trim_start_matches('[').trim_end_matches(']')
    );
    let stream = TcpStream::connect(&authority)
        .await
        .map_err(|source| FetchError::Connect {
            authority: authority.clone(),
            source,
        })?;
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "rgate")
        .body(Empty::<Bytes>::new())
        .map_err(|error| FetchError::Body(error.to_string()))?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|error| {
            FetchError::Connect {
                authority: authority.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, error),
            }
        })?;
        let stream = tls_connector()?
            .connect(name, stream)
            .await
            .map_err(|source| FetchError::Connect { authority, source })?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(stream), request).await?
    };
    if response.status() != http::StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(
            |error| match error.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => FetchError::TooLarge(MAX_JWKS_BYTES),
                Err(error) => FetchError::Body(error.to_string()),
            },
        )?;
    Ok(body.to_bytes())
}

async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, FetchError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
