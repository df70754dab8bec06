//! TLS termination on the main listener: certificates loaded and checked at
//! config load, chosen per handshake by SNI, with ALPN offering `h2` and
//! `http/1.1`.

pub mod redirect;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// How long a client gets to complete the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The crypto provider rgate builds on: `ring`, chosen explicitly so no
/// process-wide default has to be installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Compiled `tls:` settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    server: Arc<ServerConfig>,
    /// A plain-HTTP port whose every answer redirects to HTTPS.
    pub redirect_http_port: Option<u16>,
}

impl TlsSettings {
    /// The server config for `certificates`; the first one is the default.
    pub(crate) fn new(
        provider: Arc<CryptoProvider>,
        certificates: Vec<Certificate>,
        redirect_http_port: Option<u16>,
    ) -> Result<Self, rustls::Error> {
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { certificates }));
        // HTTP/2 is negotiated here; hyper's auto builder then sees its preface.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            redirect_http_port,
        })
    }

    /// The rustls server config every TLS connection is accepted with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }
}

/// One certificate chain with its key, and the DNS names SNI can select it by.
#[derive(Debug)]
pub(crate) struct Certificate {
    /// Lowercase SAN DNS names, possibly wildcards (`*.example.com`).
    names: Vec<Box<str>>,
    key: Arc<CertifiedKey>,
}

impl Certificate {
    pub(crate) fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    fn matches_exactly(&self, server_name: &str) -> bool {
        self.names
            .iter()
            .any(|name| name.eq_ignore_ascii_case(server_name))
    }

    fn matches_wildcard(&self, server_name: &str) -> bool {
        self.names.iter().any(|name| {
            name.strip_prefix("*.").is_some_and(|suffix| {
                // A wildcard stands for exactly one, non-empty label.
                server_name.split_once('.').is_some_and(|(label, rest)| {
                    !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
                })
            })
        })
    }
}

/// Why a certificate or key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertificateError {
    #[error("cannot read {}: {source}", path.display())]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid PEM: {source}", path.display())]
    CertPem { path: PathBuf, source: pem::Error },
    #[error("{} holds no PEM CERTIFICATE block", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: the first certificate is not valid X.509: {source}", path.display())]
    Certificate {
        path: PathBuf,
        source: webpki::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid PEM: {source}", path.display())]
    KeyPem { path: PathBuf, source: pem::Error },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: unsupported private key: {source}", path.display())]
    UnsupportedKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{} does not belong to the certificate (public keys differ)", path.display())]
    KeyMismatch { path: PathBuf },
}

impl CertificateError {
    /// The config key the problem belongs to: `cert` or `key`.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            Self::ReadCert { .. }
            | Self::CertPem { .. }
            | Self::NoCertificate { .. }
            | Self::Certificate { .. } => "cert",
            Self::ReadKey { .. }
            | Self::KeyPem { .. }
            | Self::NoKey { .. }
            | Self::UnsupportedKey { .. }
            | Self::KeyMismatch { .. } => "key",
        }
    }
}

/// Loads a PEM chain (leaf first) and its PEM private key, and checks that
/// they belong together.
pub(crate) fn load_certificate(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Certificate, CertificateError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| CertificateError::ReadCert {
        path: cert_path.to_path_buf(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertificateError::CertPem {
            path: cert_path.to_path_buf(),
            source,
        })?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertificateError::NoCertificate {
            path: cert_path.to_path_buf(),
        })?;
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|source| CertificateError::Certificate {
            path: cert_path.to_path_buf(),
            source,
        })?
        .valid_dns_names()
        .map(|name| name.to_ascii_lowercase().into_boxed_str())
        .collect();

    let key_pem = std::fs::read(key_path).map_err(|source| CertificateError::ReadKey {
        path: key_path.to_path_buf(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| match source {
        pem::Error::NoItemsFound => CertificateError::NoKey {
            path: key_path.to_path_buf(),
        },
        source => CertificateError::KeyPem {
            path: key_path.to_path_buf(),
            source,
        },
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => CertificateError::KeyMismatch {
            path: key_path.to_path_buf(),
        },
        source => CertificateError::UnsupportedKey {
            path: key_path.to_path_buf(),
            source,
        },
    })?;
    Ok(Certificate {
        names,
        key: Arc::new(key),
    })
}

/// Picks the certificate for a handshake: an exact SAN match first, then a
/// wildcard match, else the first certificate (no SNI, or an unknown name).
#[derive(Debug)]
struct SniResolver {
    certificates: Vec<Certificate>,
}

impl SniResolver {
    fn select(&self, server_name: Option<&str>) -> Option<&Certificate> {
        server_name
            .and_then(|name| {
                self.certificates
                    .iter()
                    .find(|c| c.matches_exactly(name))
                    .or_else(|| self.certificates.iter().find(|c| c.matches_wildcard(name)))
            })
            .or_else(|| self.certificates.first())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(hello.server_name()).map(|c| c.key.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests;
