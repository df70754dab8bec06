//! A provider's verification keys: a JWKS document (or a shared secret)
//! compiled into keys that each carry the algorithms they may verify.
//!
//! Binding algorithms to the key, not to the token, is what stops algorithm
//! confusion: an RSA key is only ever asked to verify RS*/PS* signatures,
//! whatever the token's header says, so its public modulus can never be used
//! as an HMAC secret. A key whose JWK names an `alg` verifies only that one.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Largest JWKS document read (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// One verification key and the validation (algorithms included) it applies.
pub struct Key {
    pub kid: Option<Box<str>>,
    pub decoding: DecodingKey,
    pub validation: Validation,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// The keys a provider verifies with, replaced whole on each refresh.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// Why a JWKS document gave no key set.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("not a JWKS document: {0}")]
    NotJwks(serde_json::Error),
    #[error("the JWKS has no key usable with the provider's algorithms ({skipped} skipped)")]
    NoUsableKey { skipped: usize },
}

#[derive(serde::Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Compiles a JWKS document. Keys of another type, for encryption, or
    /// for none of `base`'s algorithms are skipped, so one odd key in an
    /// issuer's set does not stop the others.
    pub fn from_jwks(document: &[u8], base: &Validation) -> Result<Self, KeysError> {
        let document: Document = serde_json::from_slice(document).map_err(KeysError::NotJwks)?;
        let total = document.keys.len();
        let keys: Vec<Key> = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| key_from_jwk(&jwk, base))
            .collect();
        if keys.is_empty() {
            return Err(KeysError::NoUsableKey { skipped: total });
        }
        Ok(Self { keys })
    }

    /// One shared secret for the HMAC algorithms.
    pub fn from_secret(secret: &[u8], base: &Validation) -> Self {
        Self {
            keys: vec![Key {
                kid: None,
                decoding: DecodingKey::from_secret(secret),
                validation: base.clone(),
            }],
        }
    }

    /// The key for a token: the one with its `kid`. A token without a
    /// `kid`, or any token when no key has one (a shared secret), takes the
    /// first key that verifies its algorithm.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Key> {
        match kid {
            Some(kid) if self.keys.iter().any(|key| key.kid.is_some()) => {
                self.keys.iter().find(|key| key.kid.as_deref() == Some(kid))
            }
            _ => self
                .keys
                .iter()
                .find(|key| key.validation.algorithms.contains(&alg)),
        }
    }
}

fn key_from_jwk(jwk: &Jwk, base: &Validation) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    // Symmetric keys are never taken from a published set.
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    let named = jwk.common.key_algorithm.and_then(signing_algorithm);
    if jwk.common.key_algorithm.is_some() && named.is_none() {
        return None;
    }
    let algorithms: Vec<Algorithm> = base
        .algorithms
        .iter()
        .copied()
        .filter(|alg| family_matches(&jwk.algorithm, *alg))
        .filter(|alg| named.is_none_or(|named| named == *alg))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    let mut validation = base.clone();
    validation.algorithms = algorithms;
    Some(Key {
        kid: jwk.common.key_id.as_deref().map(Into::into),
        decoding,
        validation,
    })
}

/// Whether `alg` is a signature algorithm of the JWK's key type (and, for
/// EC and OKP keys, of its curve).
fn family_matches(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::{EllipticCurve, EllipticCurveKeyType};
    match params {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => {
            ec.key_type == EllipticCurveKeyType::EC
                && matches!(
                    (&ec.curve, alg),
                    (EllipticCurve::P256, Algorithm::ES256)
                        | (EllipticCurve::P384, Algorithm::ES384)
                )
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => false,
    }
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
