//! `trusted_proxies`: whose `X-Forwarded-For` rgate believes.
//!
//! From a trusted peer, the incoming `X-Forwarded-For` is kept and extended,
//! and the client is its right-most address that is not itself a trusted
//! proxy (the left-most if all are). From anyone else the field is replaced
//! and the client is the peer. Default: trust no one, so a client can never
//! choose the address that `{client_ip}`, `hash_on: ip` and rate limits see.

use std::net::IpAddr;

use http::header::HeaderMap;
use ipnet::IpNet;

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The trusted networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Box<[IpNet]>,
}

/// Who the client is, as far as rgate can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdentity {
    pub ip: IpAddr,
    /// The peer is a trusted proxy: its `X-Forwarded-For` is kept.
    pub via_trusted_proxy: bool,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets: nets.into() }
    }

    /// Parses `192.0.2.0/24` or a single address.
    pub fn parse_net(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(|net| net.trunc())
            .map_err(|_| format!("{text:?} is not a CIDR block or IP address"))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`. Without trusted proxies this reads nothing.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> ClientIdentity {
        if self.nets.is_empty() || !self.trusts(peer) {
            return ClientIdentity {
                ip: peer,
                via_trusted_proxy: false,
            };
        }
        let mut client = peer;
        // Later fields and later members are closer to rgate: walk right to left.
        'fields: for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            for member in value.as_bytes().rsplit(|&b| b == b',') {
                let Some(ip) = parse_member(member) else {
                    // A member that is not an address ends what can be believed.
                    break 'fields;
                };
                client = ip;
                if !self.trusts(ip) {
                    break 'fields;
                }
            }
        }
        ClientIdentity {
            ip: client,
            via_trusted_proxy: true,
        }
    }
}

/// An IPv4-mapped IPv6 peer is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// One `X-Forwarded-For` member: an address, an `IPv4:port`, or a
/// bracketed IPv6 address with an optional port.
fn parse_member(member: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(member.trim_ascii()).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    let host = match text.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => text.rsplit_once(':')?.0,
    };
    host.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter()
                .map(|n| TrustedProxies::parse_net(n).unwrap())
                .collect(),
        )
    }

    fn client(trusted: &TrustedProxies, peer: &str, xff: &[&str]) -> ClientIdentity {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        trusted.client(peer.parse().unwrap(), &headers)
    }

    #[test]
    fn without_trust_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        let id = client(&none, "192.0.2.7", &["1.2.3.4"]);
        assert_eq!(id.ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert!(!id.via_trusted_proxy);
        let some = proxies(&["198.51.100.0/24"]);
        assert!(!client(&some, "192.0.2.7", &["1.2.3.4"]).via_trusted_proxy);
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let trusted = proxies(&["198.51.100.0/24", "192.0.2.1"]);
        let ip = |peer, xff: &[&str]| client(&trusted, peer, xff).ip.to_string();
        assert_eq!(
            ip("198.51.100.1", &["203.0.113.1, 203.0.113.2, 198.51.100.9"]),
            "203.0.113.2"
        );
        assert_eq!(
            ip("198.51.100.1", &["203.0.113.1", "203.0.113.2, 192.0.2.1"]),
            "203.0.113.2"
        );
        // All trusted: the left-most.
        assert_eq!(
            ip("198.51.100.1", &["198.51.100.11, 198.51.100.12"]),
            "198.51.100.11"
        );
        // No field: the peer.
        assert_eq!(ip("198.51.100.1", &[]), "198.51.100.1");
        // Garbage stops the walk at the last address believed.
        assert_eq!(
            ip("198.51.100.1", &["203.0.113.1, junk, 198.51.100.13"]),
            "198.51.100.13"
        );
        assert_eq!(
            ip("198.51.100.1", &["[2001:db8::1]:443, 203.0.113.3:80"]),
            "203.0.113.3"
        );
        assert_eq!(ip("::ffff:198.51.100.1", &["203.0.113.4"]), "203.0.113.4");
        assert!(client(&trusted, "198.51.100.1", &["203.0.113.4"]).via_trusted_proxy);
    }

    #[test]
    fn nets_parse_as_cidr_or_address() {
        assert!(TrustedProxies::parse_net("198.51.100.0/24").is_ok());
        assert!(TrustedProxies::parse_net("::1").is_ok());
        assert!(TrustedProxies::parse_net("198.51.100.0/33").is_err());
        assert!(TrustedProxies::parse_net("example.com").is_err());
    }
}
