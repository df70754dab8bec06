//! JWT bearer-token authentication at the edge.
//!
//! A [`Provider`] is one `jwt:` entry of the config: who issues tokens, for
//! which audiences, and where its keys come from (a JWKS URL or file, or a
//! shared secret). A route's `auth` names a provider ([`RouteAuth`]).
//!
//! - Verification is synchronous and lock-free when the token's key is
//!   known: one atomic load of the key set, then the signature and claims
//!   (`jsonwebtoken` over `ring`, the crypto rustls already uses).
//! - Keys are fetched by a background task on the control thread (see
//!   [`jwks`]), at start and every `refresh`. A token whose `kid` is not in
//!   the set wakes that task (one fetch at a time, at most one per
//!   [`MIN_REFETCH`] per provider) and waits at most [`KID_WAIT`] for it.
//! - A failed fetch keeps the last good set (stale-while-revalidate); a
//!   provider whose keys never loaded answers 503 to requests with a token.

mod cache;
pub mod jwks;
pub mod keys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use self::keys::KeySet;
use crate::clock;

/// The verified token's claims.
pub type Claims = serde_json::Map<String, Value>;

/// A verified token: its claims, its validity, and the request fields
/// rendered from them once (a cached token renders nothing again).
#[derive(Debug)]
pub struct Verified {
    pub claims: Claims,
    /// `exp` and `nbf`, seconds since the epoch.
    pub exp: u64,
    pub nbf: Option<u64>,
    /// `forward_claims` as request fields.
    pub fields: Box<[(HeaderName, HeaderValue)]>,
}

/// Verified tokens each worker keeps by default (`token_cache`).
pub const DEFAULT_TOKEN_CACHE: usize = 1024;

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN: usize = 16 * 1024;
/// How long a request with an unknown `kid` waits for the fetch it caused.
pub const KID_WAIT: Duration = Duration::from_secs(1);
/// Fetches caused by unknown `kid`s are at least this far apart, so a flood
/// of made-up `kid`s cannot hammer the issuer.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Url(http::Uri),
    File(PathBuf),
    /// A shared HMAC secret, read at load; never refreshed.
    Secret,
}

/// One `jwt:` provider with its current keys.
#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    /// Tells this provider's entries apart in the workers' token caches.
    id: usize,
    /// Verified tokens each worker keeps (0: verify every request).
    pub token_cache: usize,
    /// Everything verification depends on, for a reload to tell whether a
    /// provider's fetched keys still apply.
    pub fingerprint: String,
    pub source: KeySource,
    pub refresh: Duration,
    /// The provider's checks; each key carries a copy narrowed to its algorithms.
    pub base: Validation,
    /// Claims copied into request headers, e.g. `sub` → `X-User-Id`.
    pub forward_claims: Box<[(Box<str>, HeaderName)]>,
    /// Whether the upstream still gets the `Authorization` field.
    pub forward_token: bool,
    keys: ArcSwapOption<KeySet>,
    /// Set while a fetch runs; requests with unknown `kid`s wait on `updates`.
    fetching: AtomicBool,
    /// When a request last caused a fetch (process clock, ms). The periodic
    /// refresh does not count: the first new `kid` after it fetches at once.
    last_fetch: AtomicU64,
    wake: Notify,
    updates: watch::Sender<u64>,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No bearer token on a route that requires one.
    Missing,
    /// A token that does not verify; the reason is for logs and metrics.
    Invalid(&'static str),
    /// A valid token that is not for this audience.
    Forbidden(&'static str),
    /// The provider has no keys yet: the token cannot be judged.
    Unavailable,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Invalid(reason) | Failure::Forbidden(reason) => reason,
            Failure::Unavailable => "keys_unavailable",
        }
    }
}

/// A route's `auth`.
#[derive(Debug, Clone)]
pub struct RouteAuth {
    pub provider: Arc<Provider>,
    /// `false`: requests without a token pass anonymously; a token that is
    /// present must still verify.
    pub required: bool,
}

impl RouteAuth {
    /// Checks the request's bearer token. `Ok(None)`: anonymous, allowed.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Option<Arc<Verified>>, Failure> {
        match bearer_token(headers) {
            Some(token) => self.provider.verify(token).await.map(Some),
            None if self.required => Err(Failure::Missing),
            None => Ok(None),
        }
    }

    /// What the upstream sees of the identity: the client's own copies of
    /// the forwarded claim fields are always removed (a client must never
    /// forge them), then set from the verified claims; `Authorization` is
    /// removed unless the provider forwards it.
    pub fn rewrite(&self, headers: &mut HeaderMap, verified: Option<&Verified>) {
        let provider = &*self.provider;
        for (_, name) in &provider.forward_claims {
            headers.remove(name);
        }
        if !provider.forward_token {
            headers.remove(header::AUTHORIZATION);
        }
        if let Some(verified) = verified {
            for (name, value) in &verified.fields {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

/// A claim as a header value: strings as they are, other JSON compact.
/// `None` for values a header cannot carry (control characters).
pub fn claim_value(value: &Value) -> Option<HeaderValue> {
    match value {
        Value::Null => None,
        Value::String(text) => HeaderValue::from_str(text).ok(),
        other => HeaderValue::from_str(&other.to_string()).ok(),
    }
}

/// The token of an `Authorization: Bearer …` field (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// A lookup that found no key for the token's `kid`.
struct UnknownKid;

impl Provider {
    pub fn new(
        name: Arc<str>,
        fingerprint: String,
        source: KeySource,
        refresh: Duration,
        base: Validation,
        forward_claims: Box<[(Box<str>, HeaderName)]>,
        forward_token: bool,
    ) -> Self {
        static IDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        Self {
            name,
            id: IDS.fetch_add(1, Ordering::Relaxed),
            token_cache: DEFAULT_TOKEN_CACHE,
            fingerprint,
            source,
            refresh,
            base,
            forward_claims,
            forward_token,
            keys: ArcSwapOption::empty(),
            fetching: AtomicBool::new(false),
            last_fetch: AtomicU64::new(0),
            wake: Notify::new(),
            updates: watch::Sender::new(0),
        }
    }

    /// The provider's current keys (`None` until the first fetch succeeds).
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Installs a key set and tells requests waiting for one.
    pub fn set_keys(&self, keys: Option<Arc<KeySet>>) {
        self.keys.store(keys);
    }

    /// Verifies a token (or finds it in this worker's cache); waits
    /// (bounded) for one fetch if its `kid` is new.
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, Failure> {
        if let Ok(result) = self.verify_now(token) {
            return result;
        }
        let mut updates = self.updates.subscribe();
        if self.request_fetch() {
            // Either way, look again: the fetch may have landed just now.
            let _ = tokio::time::timeout(KID_WAIT, updates.changed()).await;
        }
        self.verify_now(token)
            .unwrap_or(Err(Failure::Invalid("unknown_kid")))
    }

    fn verify_now(&self, token: &str) -> Result<Result<Arc<Verified>, Failure>, UnknownKid> {
        if token.len() > MAX_TOKEN {
            return Ok(Err(Failure::Invalid("too_large")));
        }
        let Some(keys) = self.keys.load_full() else {
            // No keys: still refuse what no key could verify.
            return Ok(match jsonwebtoken::decode_header(token) {
                Ok(_) => Err(Failure::Unavailable),
                Err(_) => Err(Failure::Invalid("malformed")),
            });
        };
        if self.token_cache > 0 {
            if let Some(hit) = cache::get(self.id, &keys, token, self.base.leeway) {
                return Ok(Ok(hit));
            }
        }
        // `alg: none` and unknown algorithms fail here: `Algorithm` has no such variant.
        let Ok(head) = jsonwebtoken::decode_header(token) else {
            return Ok(Err(Failure::Invalid("malformed")));
        };
        if !self.base.algorithms.contains(&head.alg) {
            return Ok(Err(Failure::Invalid("algorithm")));
        }
        let Some(key) = keys.find(head.kid.as_deref(), head.alg) else {
            return match head.kid {
                Some(_) => Err(UnknownKid),
                None => Ok(Err(Failure::Invalid("no_key"))),
            };
        };
        let claims = match jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation) {
            Ok(data) => data.claims,
            Err(error) => return Ok(Err(classify(error.kind()))),
        };
        let verified = Arc::new(self.verified(claims));
        if self.token_cache > 0 {
            cache::put(
                self.id,
                keys.clone(),
                token,
                verified.clone(),
                self.token_cache,
            );
        }
        Ok(Ok(verified))
    }

    fn verified(&self, claims: Claims) -> Verified {
        let seconds = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_f64)
                .map(|secs| secs.max(0.0) as u64)
        };
        Verified {
            // Required by the validation, so present.
            exp: seconds("exp").unwrap_or(0),
            nbf: seconds("nbf"),
            fields: self
                .forward_claims
                .iter()
                .filter_map(|(claim, name)| {
                    Some((name.clone(), claims.get(&**claim).and_then(claim_value)?))
                })
                .collect(),
            claims,
        }
    }

    /// Asks the refresh task for a fetch now. True when a fetch is under way
    /// that the caller can wait for; false when one ran too recently.
    fn request_fetch(&self) -> bool {
        if self.fetching.load(Ordering::Acquire) {
            return true;
        }
        let now = clock::now_millis();
        let last = self.last_fetch.load(Ordering::Acquire);
        if now.saturating_sub(last) < MIN_REFETCH.as_millis() as u64 && last != 0 {
            return false;
        }
        if self
            .last_fetch
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.fetching.store(true, Ordering::Release);
            self.wake.notify_one();
        }
        // Lost the race: another request just asked for the same fetch.
        true
    }
}

/// The failure a verification error stands for.
fn classify(kind: &ErrorKind) -> Failure {
    match kind {
        ErrorKind::InvalidAudience => Failure::Forbidden("audience"),
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Failure::Forbidden("audience"),
        ErrorKind::MissingRequiredClaim(_) => Failure::Invalid("missing_claim"),
        ErrorKind::ExpiredSignature => Failure::Invalid("expired"),
        ErrorKind::ImmatureSignature => Failure::Invalid("not_yet_valid"),
        ErrorKind::InvalidIssuer => Failure::Invalid("issuer"),
        ErrorKind::InvalidSignature => Failure::Invalid("signature"),
        ErrorKind::InvalidAlgorithm => Failure::Invalid("algorithm"),
        _ => Failure::Invalid("malformed"),
    }
}

#[cfg(test)]
mod tests;
