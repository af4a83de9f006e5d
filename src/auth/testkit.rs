//! Helpers shared by the unit tests of `auth`: keys, a fixed clock, and token builders.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{AuthConfig, JwtAlgorithm, Verifier};
use crate::secret::Secret;

pub(super) const SECRET: &str = "unit-test-secret-0123456789abcdef";
pub(super) const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa_private.pem");
pub(super) const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa_public.pem");
pub(super) const EC_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/keys/ec_private.pem");
pub(super) const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/keys/ec_public.pem");
/// A fixed "now" for every test that does not move the clock.
pub(super) const NOW: u64 = 1_800_000_000;

pub(super) fn auth(algorithms: &[JwtAlgorithm]) -> AuthConfig {
    AuthConfig {
        algorithms: algorithms.to_vec(),
        ..AuthConfig::default()
    }
}

pub(super) fn verifier_for(cfg: &AuthConfig) -> Verifier {
    let pem = cfg.algorithms.iter().find_map(|a| match a {
        JwtAlgorithm::HS256 => None,
        JwtAlgorithm::RS256 => Some(RSA_PUBLIC),
        JwtAlgorithm::ES256 => Some(EC_PUBLIC),
    });
    Verifier::new(cfg, Some(&Secret::new(SECRET)), pem)
        .unwrap()
        .with_clock(|| NOW)
}

pub(super) fn hs_verifier() -> Verifier {
    verifier_for(&auth(&[JwtAlgorithm::HS256]))
}

pub(super) fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

pub(super) fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

pub(super) fn claims() -> Value {
    json!({"sub": "u-1", "exp": NOW + 600, "iat": NOW, "email": "a@example.com", "name": "Ann"})
}

pub(super) fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

pub(super) fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}
