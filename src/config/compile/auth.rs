//! JWT providers: key source, algorithms, the claims checked and forwarded.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use jsonwebtoken::{Algorithm, Validation};

use super::{positive, Problems};
use crate::auth::keys::{KeySet, MAX_JWKS_BYTES};
use crate::auth::{KeySource, Provider, RouteAuth, DEFAULT_TOKEN_CACHE};
use crate::config::file::{AuthFile, JwtFile};
use crate::policy::header_rules::{refused_name, Side};

const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
/// RFC 7518 §3.2: an HMAC key at least as long as the hash output.
const MIN_SECRET: usize = 32;

/// What routes need to know about the providers.
pub(super) struct Providers<'a> {
    pub(super) by_name: HashMap<String, Arc<Provider>>,
    /// Every name the file declares, including providers refused for their
    /// own problems: a route naming one is not reported again.
    pub(super) declared: &'a HashSet<String>,
}

impl Providers<'_> {
    pub(super) fn route_auth(
        &self,
        key: &str,
        auth: &AuthFile,
        problems: &mut Problems<'_>,
    ) -> Option<RouteAuth> {
        match self.by_name.get(&auth.provider) {
            Some(provider) => Some(RouteAuth {
                provider: provider.clone(),
                required: auth.required,
            }),
            None => {
                if !self.declared.contains(&auth.provider) {
                    problems.add(
                        format!("{key}.auth.provider"),
                        format!("unknown jwt provider {:?}", auth.provider),
                    );
                }
                None
            }
        }
    }
}

pub(super) fn compile_providers(
    providers: Vec<(usize, JwtFile)>,
    base_dir: &Path,
    problems: &mut Problems<'_>,
) -> HashMap<String, Arc<Provider>> {
    let mut compiled = HashMap::new();
    for (i, file) in providers {
        let key = format!("jwt[{i}]");
        let name = file.name.clone();
        if compiled.contains_key(&name) {
            problems.add(
                format!("{key}.name"),
                format!("duplicate provider name {name:?}"),
            );
            continue;
        }
        if let Some(provider) = compile_provider(&key, file, base_dir, problems) {
            compiled.insert(name, Arc::new(provider));
        }
    }
    compiled
}

fn compile_provider(
    key: &str,
    file: JwtFile,
    base_dir: &Path,
    problems: &mut Problems<'_>,
) -> Option<Provider> {
    let JwtFile {
        name,
        issuer,
        jwks_url,
        jwks_file,
        secret_file,
        audiences,
        algorithms,
        leeway,
        refresh,
        forward_claims,
        forward_token,
        token_cache,
    } = file;
    let before = problems.list.len();
    let path = |field: &str| format!("{key}.{field}");
    if name.trim().is_empty() {
        problems.add(path("name"), "must not be empty");
    }
    if issuer.is_empty() {
        problems.add(path("issuer"), "must not be empty");
    }
    let source = match (jwks_url, jwks_file, secret_file) {
        (Some(url), None, None) => match parse_url(&url) {
            Ok(uri) => Some((KeySource::Url(uri), None)),
            Err(problem) => {
                problems.add(path("jwks_url"), problem);
                None
            }
        },
        (None, Some(file), None) => Some((KeySource::File(base_dir.join(file)), None)),
        (None, None, Some(file)) => match read_secret(&base_dir.join(&file)) {
            Ok(secret) => Some((KeySource::Secret, Some(secret))),
            Err(problem) => {
                problems.add(path("secret_file"), problem);
                None
            }
        },
        _ => {
            problems.add(key, "needs exactly one of jwks_url, jwks_file, secret_file");
            None
        }
    };
    let secret = matches!(source, Some((KeySource::Secret, _)));
    let algorithms = compile_algorithms(&path("algorithms"), algorithms, secret, problems);
    let leeway = leeway.map_or(DEFAULT_LEEWAY, |leeway| leeway.0);
    let refresh = positive(problems, path("refresh"), refresh, DEFAULT_REFRESH);
    let forward_claims: Vec<(Box<str>, HeaderName)> = forward_claims
        .into_iter()
        .filter_map(|(claim, field)| {
            let at = format!("{key}.forward_claims.{claim}");
            if claim.is_empty() {
                problems.add(at, "a claim name must not be empty");
                return None;
            }
            match HeaderName::try_from(field.as_str()) {
                Ok(name) if name == header::AUTHORIZATION || name == header::HOST => {
                    problems.add(at, format!("{field:?} cannot carry a claim"));
                    None
                }
                Ok(name) => match refused_name(&name, Side::Request) {
                    Some(why) => {
                        problems.add(at, format!("{field:?} {why}"));
                        None
                    }
                    None => Some((claim.into(), name)),
                },
                Err(_) => {
                    problems.add(at, format!("{field:?} is not a header name"));
                    None
                }
            }
        })
        .collect();
    if problems.list.len() != before {
        return None;
    }
    let ((source, secret), algorithms) = (source?, algorithms?);
    let fingerprint = format!("{source:?}|{algorithms:?}|{issuer}|{audiences:?}|{leeway:?}");
    let mut base = Validation::new(algorithms[0]);
    base.algorithms = algorithms;
    base.leeway = leeway.as_secs();
    base.validate_nbf = true;
    base.set_issuer(&[&issuer]);
    if audiences.is_empty() {
        base.validate_aud = false;
        base.set_required_spec_claims(&["exp", "iss"]);
    } else {
        base.set_audience(&audiences);
        base.set_required_spec_claims(&["exp", "iss", "aud"]);
    }
    let keys = match (&source, secret) {
        (KeySource::Secret, Some(secret)) => Some(KeySet::from_secret(&secret, &base)),
        // A local file is read now, so its keys serve from the first request.
        (KeySource::File(file), _) => match read_jwks_file(file, &base) {
            Ok(keys) => Some(keys),
            Err(problem) => {
                problems.add(path("jwks_file"), problem);
                return None;
            }
        },
        _ => None,
    };
    let mut provider = Provider::new(
        name.into(),
        fingerprint,
        source,
        refresh,
        base,
        forward_claims.into(),
        forward_token,
    );
    provider.token_cache = token_cache.unwrap_or(DEFAULT_TOKEN_CACHE);
    provider.set_keys(keys.map(Arc::new));
    Some(provider)
}

fn compile_algorithms(
    key: &str,
    algorithms: Option<Vec<String>>,
    secret: bool,
    problems: &mut Problems<'_>,
) -> Option<Vec<Algorithm>> {
    let Some(list) = algorithms else {
        return Some(if secret {
            vec![Algorithm::HS256]
        } else {
            vec![Algorithm::RS256, Algorithm::ES256]
        });
    };
    if list.is_empty() {
        problems.add(key, "must name at least one algorithm");
        return None;
    }
    let before = problems.list.len();
    let mut parsed = Vec::new();
    for (j, text) in list.iter().enumerate() {
        let at = format!("{key}[{j}]");
        match Algorithm::from_str(text) {
            Ok(alg) => {
                let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
                if hmac != secret {
                    problems.add(
                        at,
                        if hmac {
                            format!("{text} needs secret_file, and is never mixed with public-key algorithms")
                        } else {
                            format!("{text} is a public-key algorithm; a secret_file provider takes HS256, HS384 or HS512 only")
                        },
                    );
                } else if !parsed.contains(&alg) {
                    parsed.push(alg);
                }
            }
            Err(_) if text.eq_ignore_ascii_case("none") => {
                problems.add(at, "unsigned tokens are never accepted")
            }
            Err(_) => problems.add(
                at,
                format!(
                    "{text:?} is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512"
                ),
            ),
        }
    }
    (problems.list.len() == before).then_some(parsed)
}

fn parse_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(format!(
            "{text:?} must be an http:// or https:// URL with a host"
        )),
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut secret =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    // Files written by `echo` end in a newline that is not part of the secret.
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "the secret in {} is {} bytes; HMAC needs at least {MIN_SECRET}",
            path.display(),
            secret.len()
        ));
    }
    Ok(secret)
}

fn read_jwks_file(path: &Path, base: &Validation) -> Result<KeySet, String> {
    let document =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if document.len() > MAX_JWKS_BYTES {
        return Err(format!("{} is over {MAX_JWKS_BYTES} bytes", path.display()));
    }
    KeySet::from_jwks(&document, base).map_err(|error| format!("{}: {error}", path.display()))
}
