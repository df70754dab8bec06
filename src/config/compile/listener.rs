//! The listener's limits and TLS, and the Docker connection.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use super::{at_least_one, positive, Problems};
use crate::config::file::{
    AddressModeFile, CertificateFile, DockerEndpointFile, DockerFile, LimitsFile, TlsFile,
};
use crate::discovery::{AddressMode, DockerSettings, DockerTls};
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

/// `docker`: the section's settings for one daemon (`endpoint`, or the
/// default), or for each of `docker.endpoints`, which may override
/// `address`, `host_address` and add `tls` per daemon.
pub(super) fn compile_docker(
    docker: DockerFile,
    base: &Path,
    problems: &mut Problems<'_>,
) -> Vec<DockerSettings> {
    let DockerFile {
        endpoint,
        network,
        host_address,
        address,
        resync_interval,
        endpoints,
    } = docker;
    let host_address = ip_or_localhost(host_address.as_deref(), "docker.host_address", problems);
    check_scheme(endpoint.as_deref(), "docker.endpoint", problems);
    let resync_interval = resync_interval.map_or(DEFAULT_RESYNC_INTERVAL, |d| d.0);
    if resync_interval.is_zero() {
        problems.add("docker.resync_interval", "must be greater than zero");
    }
    let mode = |address: AddressModeFile| match address {
        AddressModeFile::Container => AddressMode::Container,
        AddressModeFile::Published => AddressMode::Published,
    };
    let section = DockerSettings {
        endpoint,
        tls: None,
        network,
        host_address,
        address_mode: mode(address),
        resync_interval,
    };
    let Some(endpoints) = endpoints else {
        return vec![section];
    };
    if section.endpoint.is_some() {
        problems.add(
            "docker.endpoints",
            "give either `endpoint` (one daemon) or `endpoints` (several), not both",
        );
    }
    if endpoints.is_empty() {
        problems.add("docker.endpoints", "must name at least one daemon");
    }
    let mut hosts: Vec<DockerSettings> = Vec::with_capacity(endpoints.len());
    for (i, value) in endpoints.into_iter().enumerate() {
        let key = format!("docker.endpoints[{i}]");
        let file = match value {
            serde_yaml_ng::Value::String(url) => DockerEndpointFile {
                url,
                tls: None,
                address: None,
                host_address: None,
            },
            other => match serde_yaml_ng::from_value::<DockerEndpointFile>(other) {
                Ok(file) => file,
                Err(error) => {
                    problems.add(
                        key,
                        format!("must be a URL or {{url, tls, address, host_address}}: {error}"),
                    );
                    continue;
                }
            },
        };
        check_scheme(Some(&file.url), &format!("{key}.url"), problems);
        if hosts
            .iter()
            .any(|host| host.endpoint.as_deref() == Some(file.url.as_str()))
        {
            problems.add(
                format!("{key}.url"),
                format!("{:?} is listed twice", file.url),
            );
        }
        let tls = file.tls.map(|tls| DockerTls {
            ca: base.join(tls.ca),
            cert: base.join(tls.cert),
            key: base.join(tls.key),
        });
        if let Some(tls) = &tls {
            for (name, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if !path.is_file() {
                    problems.add(
                        format!("{key}.tls.{name}"),
                        format!("{} cannot be read", path.display()),
                    );
                }
            }
            if !file.url.starts_with("tcp://") && !file.url.starts_with("https://") {
                problems.add(
                    format!("{key}.tls"),
                    "TLS needs a tcp:// or https:// daemon",
                );
            }
        }
        hosts.push(DockerSettings {
            endpoint: Some(file.url),
            tls,
            address_mode: file.address.map_or(section.address_mode, mode),
            host_address: match file.host_address {
                Some(ip) => ip_or_localhost(Some(&ip), &format!("{key}.host_address"), problems),
                None => section.host_address,
            },
            ..section.clone()
        });
    }
    hosts
}

fn ip_or_localhost(text: Option<&str>, key: &str, problems: &mut Problems<'_>) -> IpAddr {
    match text.map(str::parse::<IpAddr>) {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(Ok(ip)) => ip,
        Some(Err(_)) => {
            problems.add(key, "is not an IP address");
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }
}

fn check_scheme(endpoint: Option<&str>, key: &str, problems: &mut Problems<'_>) {
    if let Some(endpoint) = endpoint {
        if !["unix://", "tcp://", "http://", "https://"]
            .iter()
            .any(|scheme| endpoint.starts_with(scheme))
        {
            problems.add(
                key,
                format!("{endpoint:?} must start with unix://, tcp://, http:// or https://"),
            );
        }
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
