//! `request_headers` / `response_headers`: remove → set → add, with values
//! that may hold `{client_ip}`, `{request_id}`, `{route}` and `{host}`.
//!
//! Values are parsed once at load into static header values or a list of
//! pieces; a request only renders the pieces its rules use.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Which message the rules apply to: each side refuses different names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Fields that frame the message or describe one connection: rgate writes
/// them itself, so no rule may touch them (RFC 9110 §7.6.1, RFC 9112 §6).
const FRAMING: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Request fields rgate sets from what it knows of the client.
const FORWARDING: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-request-id",
];

/// Why a field name may not be in a rule, if it may not.
pub fn refused_name(name: &HeaderName, side: Side) -> Option<&'static str> {
    let name = name.as_str();
    if FRAMING.contains(&name) {
        return Some("is a framing or hop-by-hop field, which rgate writes itself");
    }
    match side {
        Side::Request if FORWARDING.contains(&name) => {
            Some("is set by rgate from the client connection (see trusted_proxies)")
        }
        Side::Response if name == header::HOST => Some("has no meaning on a response"),
        _ => None,
    }
}

/// What the placeholders stand for in one request.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub client_ip: IpAddr,
    /// `client_ip` already as a field value (the connection's peer, rendered
    /// once per connection), when it is the client.
    pub client_ip_value: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
    pub route: &'a str,
    /// The Host field (or authority) as the client sent it.
    pub host: Option<&'a HeaderValue>,
}

/// A part of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Box<str>),
    ClientIp,
    RequestId,
    Route,
    Host,
}

/// A rule's value: fixed, or rendered per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    Static(HeaderValue),
    Dynamic(Box<[Piece]>),
}

impl Template {
    /// Parses a value; `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let piece = match name.as_str() {
                        "client_ip" => Piece::ClientIp,
                        "request_id" => Piece::RequestId,
                        "route" => Piece::Route,
                        "host" => Piece::Host,
                        _ => {
                            return Err(format!(
                                "unknown placeholder {name:?}: use client_ip, request_id, route \
                                 or host in braces, and {{{{ for a literal brace"
                            ))
                        }
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal).into()));
                    }
                    pieces.push(piece);
                }
                '}' => return Err("a lone '}' (write }} for a brace)".into()),
                c => literal.push(c),
            }
        }
        if pieces.is_empty() {
            return HeaderValue::from_str(&literal)
                .map(Template::Static)
                .map_err(|_| format!("{text:?} is not a valid header value"));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal.into()));
        }
        // The literal parts must be valid in a value on their own too.
        for piece in &pieces {
            if let Piece::Text(text) = piece {
                HeaderValue::from_str(text)
                    .map_err(|_| format!("{text:?} is not valid in a header value"))?;
            }
        }
        Ok(Template::Dynamic(pieces.into()))
    }

    /// The value for one request; `None` if a placeholder's value cannot be
    /// sent (a Host with bytes no field may carry).
    pub fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        let pieces = match self {
            Template::Static(value) => return Some(value.clone()),
            Template::Dynamic(pieces) => pieces,
        };
        // A value that is one placeholder shares the value it stands for.
        match &pieces[..] {
            [Piece::ClientIp] if vars.client_ip_value.is_some() => {
                return vars.client_ip_value.cloned();
            }
            [Piece::RequestId] => return Some(vars.request_id.clone()),
            _ => {}
        }
        let mut out = String::with_capacity(64);
        for piece in pieces.iter() {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::ClientIp => match vars.client_ip_value.map(HeaderValue::to_str) {
                    Some(Ok(text)) => out.push_str(text),
                    _ => {
                        let _ = write!(out, "{}", vars.client_ip);
                    }
                },
                Piece::RequestId => out.push_str(vars.request_id.to_str().ok()?),
                Piece::Route => out.push_str(vars.route),
                Piece::Host => {
                    if let Some(host) = vars.host {
                        out.push_str(host.to_str().ok()?);
                    }
                }
            }
        }
        // Hands the string's buffer over: no second copy.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
    }
}

/// One side's rules of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub remove: Box<[HeaderName]>,
    /// Replaces every field of the name.
    pub set: Box<[(HeaderName, Template)]>,
    /// Adds a field beside those already there.
    pub add: Box<[(HeaderName, Template)]>,
}

impl HeaderRules {
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars<'_>) {
        for name in self.remove.iter() {
            headers.remove(name);
        }
        for (name, template) in self.set.iter() {
            match template.render(vars) {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        for (name, template) in self.add.iter() {
            if let Some(value) = template.render(vars) {
                headers.append(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(id: &'a HeaderValue, host: Option<&'a HeaderValue>) -> Vars<'a> {
        Vars {
            client_ip: "203.0.113.9".parse().unwrap(),
            client_ip_value: None,
            request_id: id,
            route: "payments",
            host,
        }
    }

    #[test]
    fn placeholders_are_parsed_once_and_rendered_per_request() {
        let id = HeaderValue::from_static("abc");
        let host = HeaderValue::from_static("shop.example.com:8080");
        let template =
            Template::parse("ip={client_ip} id={request_id} r={route} h={host} {{x}}").unwrap();
        assert_eq!(
            template.render(&vars(&id, Some(&host))).unwrap(),
            "ip=203.0.113.9 id=abc r=payments h=shop.example.com:8080 {x}"
        );
        assert_eq!(
            Template::parse("plain").unwrap(),
            Template::Static(HeaderValue::from_static("plain"))
        );
        assert_eq!(
            Template::parse("{host}")
                .unwrap()
                .render(&vars(&id, None))
                .unwrap(),
            ""
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("unknown placeholder \"nope\""));
        assert!(Template::parse("a}b").unwrap_err().contains("lone"));
        assert!(Template::parse("bad\nvalue").is_err());
        assert!(Template::parse("{route}\u{1}").is_err());
    }

    #[test]
    fn rules_apply_remove_then_set_then_add() {
        let rules = HeaderRules {
            remove: vec![
                HeaderName::from_static("x-gone"),
                HeaderName::from_static("x-b"),
            ]
            .into(),
            set: vec![
                (
                    HeaderName::from_static("x-a"),
                    Template::parse("set").unwrap(),
                ),
                (
                    HeaderName::from_static("x-b"),
                    Template::parse("{route}").unwrap(),
                ),
            ]
            .into(),
            add: vec![(
                HeaderName::from_static("x-a"),
                Template::parse("added").unwrap(),
            )]
            .into(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-gone", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("old1"));
        headers.append("x-a", HeaderValue::from_static("old2"));
        headers.insert("x-b", HeaderValue::from_static("client"));
        let id = HeaderValue::from_static("id");
        rules.apply(&mut headers, &vars(&id, None));
        assert!(!headers.contains_key("x-gone"));
        let a: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["set", "added"]);
        // Removed, then set: the rule's value, not the client's.
        assert_eq!(headers["x-b"], "payments");
    }

    #[test]
    fn framing_and_forwarding_fields_are_refused_by_side() {
        let name = |n: &'static str| HeaderName::from_static(n);
        assert!(refused_name(&name("content-length"), Side::Request).is_some());
        assert!(refused_name(&name("transfer-encoding"), Side::Response).is_some());
        assert!(refused_name(&name("connection"), Side::Response).is_some());
        assert!(refused_name(&name("x-forwarded-for"), Side::Request).is_some());
        assert!(refused_name(&name("x-forwarded-for"), Side::Response).is_none());
        assert!(refused_name(&name("host"), Side::Response).is_some());
        assert!(refused_name(&name("host"), Side::Request).is_none());
        assert!(refused_name(&name("x-api-version"), Side::Request).is_none());
    }
}
