//! Each worker's cache of verified tokens, as Envoy's `jwt_cache_config`.
//!
//! A client sends the same token with every request until it expires, and a
//! signature check costs tens of microseconds (P-256 more than RSA), far
//! more than the rest of the request path. A hit costs a hash of the token
//! and one comparison of the whole token (never the hash alone), then the
//! time checks that can change (`exp`, `nbf`, with the leeway). An entry is
//! only good with the key set it was verified against: a refreshed set
//! verifies each token once more. Thread-local, so workers share nothing;
//! bounded, so a flood of distinct valid tokens cannot grow it.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;

use super::keys::KeySet;
use super::Verified;

struct Entry {
    provider: usize,
    keys: Arc<KeySet>,
    verified: Arc<Verified>,
}

thread_local! {
    static CACHE: RefCell<FxHashMap<Box<str>, Entry>> = RefCell::new(FxHashMap::default());
}

/// Seconds since the epoch, as `exp` and `nbf` count them.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The verified token, if this worker has it for `provider` and `keys` and
/// it is still within its validity.
pub(super) fn get(
    provider: usize,
    keys: &Arc<KeySet>,
    token: &str,
    leeway: u64,
) -> Option<Arc<Verified>> {
    CACHE.with(|cache| {
        let cache = cache.borrow();
        let entry = cache.get(token)?;
        if entry.provider != provider || !Arc::ptr_eq(&entry.keys, keys) {
            return None;
        }
        let now = now_secs();
        let verified = &entry.verified;
        let fresh = now <= verified.exp.saturating_add(leeway)
            && verified
                .nbf
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway));
        fresh.then(|| verified.clone())
    })
}

/// Remembers a verified token; past `capacity` entries an arbitrary one
/// (expired ones first when there are any at hand) makes room.
pub(super) fn put(
    provider: usize,
    keys: Arc<KeySet>,
    token: &str,
    verified: Arc<Verified>,
    capacity: usize,
) {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= capacity && !cache.contains_key(token) {
            let now = now_secs();
            let victim = cache
                .iter()
                .take(8)
                .find(|(_, entry)| entry.verified.exp < now)
                .or_else(|| cache.iter().next())
                .map(|(token, _)| token.clone());
            if let Some(victim) = victim {
                cache.remove(&victim);
            }
        }
        cache.insert(
            token.into(),
            Entry {
                provider,
                keys,
                verified,
            },
        );
    });
}

/// Entries in this thread's cache (for tests).
#[cfg(test)]
pub(super) fn len() -> usize {
    CACHE.with(|cache| cache.borrow().len())
}
