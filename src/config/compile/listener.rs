//! The listener's limits and TLS, and the Docker connection.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use super::{at_least_one, positive, Problems};
use crate::config::file::{AddressModeFile, CertificateFile, DockerFile, LimitsFile, TlsFile};
use crate::discovery::{AddressMode, DockerSettings};
use crate::server::Limits;
use crate::tls::{self, TlsSettings};

const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);

pub(super) fn compile_limits(limits: LimitsFile, problems: &mut Problems<'_>) -> Limits {
    let LimitsFile {
        max_header_size,
        header_read_timeout,
        max_connections,
    } = limits;
    let defaults = Limits::default();
    let max_header_size = match max_header_size.map(|size| usize::try_from(size.as_u64())) {
        None => defaults.max_header_size,
        Some(Ok(size)) if (Limits::MIN_HEADER_SIZE..=Limits::MAX_HEADER_SIZE).contains(&size) => {
            size
        }
        Some(_) => {
            problems.add(
                "limits.max_header_size",
                format!(
                    "must be between {} and {} bytes",
                    Limits::MIN_HEADER_SIZE,
                    Limits::MAX_HEADER_SIZE
                ),
            );
            defaults.max_header_size
        }
    };
    Limits {
        max_header_size,
        header_read_timeout: positive(
            &mut *problems,
            "limits.header_read_timeout".into(),
            header_read_timeout,
            defaults.header_read_timeout,
        ),
        max_connections: at_least_one(
            problems,
            "limits.max_connections".into(),
            max_connections,
            defaults.max_connections,
        ),
    }
}

pub(super) fn compile_docker(docker: DockerFile, problems: &mut Problems<'_>) -> DockerSettings {
    let DockerFile {
        endpoint,
        network,
        host_address,
        address,
        resync_interval,
    } = docker;
    let host_address = match host_address.as_deref().map(str::parse::<IpAddr>) {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(Ok(ip)) => ip,
        Some(Err(_)) => {
            problems.add("docker.host_address", "is not an IP address");
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    };
    if let Some(endpoint) = &endpoint {
        if !["unix://", "tcp://", "http://", "https://"]
            .iter()
            .any(|scheme| endpoint.starts_with(scheme))
        {
            problems.add(
                "docker.endpoint",
                format!("{endpoint:?} must start with unix://, tcp://, http:// or https://"),
            );
        }
    }
    let resync_interval = resync_interval.map_or(DEFAULT_RESYNC_INTERVAL, |d| d.0);
    if resync_interval.is_zero() {
        problems.add("docker.resync_interval", "must be greater than zero");
    }
    DockerSettings {
        endpoint,
        network,
        host_address,
        address_mode: match address {
            AddressModeFile::Container => AddressMode::Container,
            AddressModeFile::Published => AddressMode::Published,
        },
        resync_interval,
    }
}

pub(super) fn compile_tls(
    tls: TlsFile,
    base: &Path,
    problems: &mut Problems<'_>,
) -> Option<TlsSettings> {
    let TlsFile {
        certificates,
        cert,
        key,
        redirect_http_port,
    } = tls;
    if redirect_http_port == Some(0) {
        problems.add("tls.redirect_http_port", "must be 1-65535");
    }
    // The short form `tls: {cert, key}` is one certificate under the key paths `tls.cert`/`tls.key`.
    let files: Vec<(String, CertificateFile)> = match (certificates, cert, key) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            problems.add(
                "tls",
                "has both certificates and cert/key; use one or the other",
            );
            return None;
        }
        (Some(certificates), None, None) => {
            if certificates.is_empty() {
                problems.add("tls.certificates", "needs at least one certificate");
            }
            certificates
                .into_iter()
                .enumerate()
                .map(|(i, file)| (format!("tls.certificates[{i}]"), file))
                .collect()
        }
        (None, Some(cert), Some(key)) => vec![("tls".to_owned(), CertificateFile { cert, key })],
        (None, Some(_), None) => {
            problems.add("tls.key", "is required with tls.cert");
            return None;
        }
        (None, None, Some(_)) => {
            problems.add("tls.cert", "is required with tls.key");
            return None;
        }
        (None, None, None) => {
            problems.add("tls", "needs certificates (or cert and key)");
            return None;
        }
    };
    let provider = tls::provider();
    let before = problems.list.len();
    let mut loaded = Vec::with_capacity(files.len());
    for (
        i,
        (
            key,
            CertificateFile {
                cert,
                key: key_file,
            },
        ),
    ) in files.into_iter().enumerate()
    {
        match tls::load_certificate(&base.join(cert), &base.join(key_file), &provider) {
            // Only the first certificate is reachable without a matching name.
            Ok(certificate) if i > 0 && !certificate.has_names() => problems.add(
                format!("{key}.cert"),
                "has no DNS names (subjectAltName), so SNI can never select it",
            ),
            Ok(certificate) => loaded.push(certificate),
            Err(error) => problems.add(format!("{key}.{}", error.field()), error.to_string()),
        }
    }
    if problems.list.len() != before || loaded.is_empty() {
        return None;
    }
    TlsSettings::new(provider, loaded, redirect_http_port)
        .map_err(|error| problems.add("tls", error.to_string()))
        .ok()
}

/// `admin`: `off`, or where the admin plane listens (loopback unless
/// `allow_public`: it can reload the config and shows the whole topology).
pub(super) fn compile_admin(
    admin: Option<serde_yaml_ng::Value>,
    problems: &mut Problems<'_>,
) -> Option<std::net::SocketAddr> {
    let Some(admin) = admin else {
        return Some(crate::config::DEFAULT_ADMIN_LISTEN);
    };
    if admin.as_str() == Some("off") || admin.as_bool() == Some(false) {
        return None;
    }
    let file: crate::config::file::AdminFile = match serde_yaml_ng::from_value(admin) {
        Ok(file) => file,
        Err(error) => {
            problems.add(
                "admin",
                format!("must be `off` or {{listen, allow_public}}: {error}"),
            );
            return None;
        }
    };
    let addr = match file
        .listen
        .as_deref()
        .map(str::parse::<std::net::SocketAddr>)
    {
        None => crate::config::DEFAULT_ADMIN_LISTEN,
        Some(Ok(addr)) => addr,
        Some(Err(_)) => {
            problems.add(
                "admin.listen",
                format!("{:?} is not IP:port", file.listen.unwrap_or_default()),
            );
            return None;
        }
    };
    if !addr.ip().is_loopback() && !file.allow_public {
        problems.add(
            "admin.listen",
            format!(
                "{addr} is reachable from other hosts, and the admin plane can reload the config; \
                 use a loopback address, or set admin.allow_public: true behind your own access control"
            ),
        );
        return None;
    }
    Some(addr)
}

/// `access_log`: where and how (paths relative to the config file).
pub(super) fn compile_access_log(
    log: &crate::config::file::AccessLogFile,
    base: &std::path::Path,
    problems: &mut Problems<'_>,
) -> Option<crate::observe::access_log::Settings> {
    use crate::observe::access_log::{Format, Settings, Target, DEFAULT_BUFFER};
    let before = problems.list.len();
    let target = match log.path.trim() {
        "" => {
            problems.add("access_log.path", "must be `stdout` or a file");
            Target::Stdout
        }
        "stdout" => Target::Stdout,
        path => Target::File(base.join(path)),
    };
    let format = match log.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("common") => Format::Common,
        Some(other) => {
            problems.add(
                "access_log.format",
                format!("{other:?} is not one of json, common"),
            );
            Format::Json
        }
    };
    let buffer = log.buffer.unwrap_or(DEFAULT_BUFFER);
    if buffer == 0 {
        problems.add("access_log.buffer", "must be at least 1");
    }
    (problems.list.len() == before).then_some(Settings {
        target,
        format,
        buffer,
    })
}

/// `stats`: the store (by default `NAME.stats.db` beside the config file
/// `NAME.yml`), how often it is written and how long rollups are kept.
pub(super) fn compile_stats(
    stats: Option<crate::config::file::StatsFile>,
    config: &std::path::Path,
    problems: &mut Problems<'_>,
) -> crate::observe::stats::Settings {
    use crate::observe::stats::{Settings, Target, DEFAULT_FLUSH_INTERVAL, DEFAULT_RETENTION};
    let beside = || {
        let stem = config
            .file_stem()
            .map_or_else(|| "rgate".into(), |stem| stem.to_string_lossy());
        Target::File(config.with_file_name(format!("{stem}.stats.db")))
    };
    let Some(stats) = stats else {
        return Settings::new(beside());
    };
    let base = config.parent().unwrap_or(std::path::Path::new(""));
    let target = match stats.store.as_deref().map(str::trim) {
        None => beside(),
        Some("none") => Target::Memory,
        Some("") => {
            problems.add("stats.store", "must be a file or `none`");
            Target::Memory
        }
        Some(path) => Target::File(base.join(path)),
    };
    let flush_interval = super::positive(
        problems,
        "stats.flush_interval".into(),
        stats.flush_interval,
        DEFAULT_FLUSH_INTERVAL,
    );
    let retention = super::positive(
        problems,
        "stats.retention".into(),
        stats.retention,
        DEFAULT_RETENTION,
    );
    if retention < std::time::Duration::from_secs(60) {
        problems.add(
            "stats.retention",
            "must be at least 1m (rollups are per minute)",
        );
    }
    Settings {
        target,
        flush_interval,
        retention,
    }
}
