//! Verification of an end-user JWT into a [`Caller`]: the keys built once from `[auth]` (each
//! bound to one algorithm, so the token's `alg` only picks among them), the signature checked
//! before any claim is read, then `exp`/`nbf` with leeway, `iss`, `aud`, the user and admin
//! claims. Verified tokens go to the cache of verified tokens, so a repeat costs a lookup.
//!
//! **Which key.** HS256 tokens use the shared secret. An RS256 or ES256 token naming a `kid`
//! that the key set of `auth.jwks_url` holds (for that algorithm) is verified with that key
//! only; a `kid` the set does not hold is tried against `auth.public_key_file` (whose key has
//! no kid) and otherwise refused as an unknown key, which asks the key set for a refresh. A
//! token without a `kid` is tried against the PEM key, then every key of the set for its
//! algorithm. [`Verifier::verify`] never waits; [`Verifier::verify_with_refresh`], which the
//! request path uses, waits (briefly, see `jwks`) for the refresh an unknown kid asked for and
//! tries once more.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::cache::{DEFAULT_CACHE_CAPACITY, TokenCache};
use super::jwks::Jwks;
use super::settings::{AuthConfig, JwtAlgorithm};
use super::{AuthError, Caller, system_clock};
use crate::secret::Secret;

/// Tokens longer than this are refused unread (a JWT from a login backend is well under 2 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Tokens longer than this are verified but not cached, which bounds the cache's memory.
const MAX_CACHED_TOKEN_BYTES: usize = 4 * 1024;
/// User ids longer than this are refused: they become store keys and admin URL segments.
const MAX_USER_ID_BYTES: usize = 256;

/// Seconds since the Unix epoch, injectable so tests can cross an `exp` without sleeping.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Why a [`Verifier`] could not be built from `[auth]`. Each names the configuration key at
/// fault ([`key`](VerifierError::key)) and what is wrong with it
/// ([`problem`](VerifierError::problem)); it is shown as `key: problem` and never carries key
/// material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.key(), self.problem())]
pub enum VerifierError {
    /// `auth.algorithms` is empty.
    NoAlgorithm,
    /// HS256 is accepted but the shared secret is missing or empty.
    MissingSecret,
    /// RS256 or ES256 is accepted but there is no public key (nor `auth.jwks_url`).
    MissingPublicKey,
    /// RS256 is accepted but the public key is not an RSA key in PEM form.
    NotRsaKey,
    /// ES256 is accepted but the public key is not a P-256 EC key in PEM form.
    NotP256Key,
    /// `auth.user_claim` is empty.
    EmptyUserClaim,
    /// `auth.admin_claim` is empty.
    EmptyAdminClaim,
    /// `auth.admin_value` is empty.
    EmptyAdminValue,
}

impl VerifierError {
    /// The configuration key at fault, e.g. `auth.public_key_file`.
    pub fn key(self) -> &'static str {
        match self {
            VerifierError::NoAlgorithm => "auth.algorithms",
            VerifierError::MissingSecret => "auth.jwt_secret_env",
            VerifierError::MissingPublicKey
            | VerifierError::NotRsaKey
            | VerifierError::NotP256Key => "auth.public_key_file",
            VerifierError::EmptyUserClaim => "auth.user_claim",
            VerifierError::EmptyAdminClaim => "auth.admin_claim",
            VerifierError::EmptyAdminValue => "auth.admin_value",
        }
    }

    /// What is wrong with the key's value.
    pub fn problem(self) -> &'static str {
        match self {
            VerifierError::NoAlgorithm => "must name at least one algorithm",
            VerifierError::MissingSecret => "HS256 needs the shared secret",
            VerifierError::MissingPublicKey => {
                "RS256/ES256 need a PEM public key file (or auth.jwks_url)"
            }
            VerifierError::NotRsaKey => {
                "RS256 needs an RSA public key in PEM form (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)"
            }
            VerifierError::NotP256Key => {
                "ES256 needs a P-256 EC public key in PEM form (BEGIN PUBLIC KEY)"
            }
            VerifierError::EmptyUserClaim
            | VerifierError::EmptyAdminClaim
            | VerifierError::EmptyAdminValue => "must not be empty",
        }
    }
}

/// Verifies end-user JWTs against the configured keys. Build it once per configuration: it holds
/// the parsed keys and the cache of verified tokens. `Send + Sync`; share it behind an `Arc`.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    /// The RS256 key of `auth.public_key_file`.
    rs256: Option<DecodingKey>,
    /// The ES256 key of `auth.public_key_file`.
    es256: Option<DecodingKey>,
    /// RS256 is in `auth.algorithms` (its keys: `rs256` and/or the key set).
    accept_rs256: bool,
    /// ES256 is in `auth.algorithms`.
    accept_es256: bool,
    /// The key set of `auth.jwks_url`.
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    user_claim: String,
    admin_claim: String,
    plan_claim: String,
    admin_value: String,
    pub(super) cache: TokenCache,
    clock: Clock,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("es256", &self.es256.is_some())
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("user_claim", &self.user_claim)
            .field("cached_tokens", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// The JOSE header fields Tollgate reads. Unknown fields are ignored; `crit` is not supported.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
}

/// Which key verified a token: one that lives as long as the verifier (the secret, the PEM
/// key), or a key of the set, by its id, which a refresh may remove.
type KeyUsed = Option<u64>;

impl Verifier {
    /// Build the keys for the algorithms `cfg.algorithms` names: HS256 from `secret`, RS256 from
    /// an RSA public key and ES256 from a P-256 public key in `public_key_pem`. The error names
    /// the configuration key at fault and never carries key material.
    pub fn new(
        cfg: &AuthConfig,
        secret: Option<&Secret>,
        public_key_pem: Option<&[u8]>,
    ) -> Result<Verifier, VerifierError> {
        Verifier::new_with_jwks(cfg, secret, public_key_pem, None)
    }

    /// [`Verifier::new`] with the key set of `auth.jwks_url` besides (or instead of) the PEM
    /// key. With a key set, a PEM key serves whichever of RS256 and ES256 it fits; without one,
    /// each of them needs a PEM key of its own type.
    pub fn new_with_jwks(
        cfg: &AuthConfig,
        secret: Option<&Secret>,
        public_key_pem: Option<&[u8]>,
        jwks: Option<Arc<Jwks>>,
    ) -> Result<Verifier, VerifierError> {
        if cfg.algorithms.is_empty() {
            return Err(VerifierError::NoAlgorithm);
        }
        let accept_rs256 = cfg.algorithms.contains(&JwtAlgorithm::RS256);
        let accept_es256 = cfg.algorithms.contains(&JwtAlgorithm::ES256);
        let hs256 = if cfg.algorithms.contains(&JwtAlgorithm::HS256) {
            let secret = secret
                .filter(|s| !s.expose().is_empty())
                .ok_or(VerifierError::MissingSecret)?;
            Some(DecodingKey::from_secret(secret.expose().as_bytes()))
        } else {
            None
        };
        let rsa = |pem: &[u8]| DecodingKey::from_rsa_pem(pem).ok();
        // An uncompressed P-256 point is 65 bytes; P-384 would never verify ES256.
        let p256 = |pem: &[u8]| {
            DecodingKey::from_ec_pem(pem)
                .ok()
                .filter(|k| k.try_get_as_bytes().is_ok_and(|b| b.len() == 65))
        };
        let (mut rs256, mut es256) = (None, None);
        match (public_key_pem, &jwks) {
            (Some(pem), Some(_)) => {
                rs256 = accept_rs256.then(|| rsa(pem)).flatten();
                es256 = accept_es256.then(|| p256(pem)).flatten();
                if rs256.is_none() && es256.is_none() {
                    return Err(if accept_rs256 {
                        VerifierError::NotRsaKey
                    } else {
                        VerifierError::NotP256Key
                    });
                }
            }
            (None, Some(_)) => {}
            (pem, None) => {
                let pem = || pem.ok_or(VerifierError::MissingPublicKey);
                for alg in &cfg.algorithms {
                    match alg {
                        JwtAlgorithm::HS256 => {}
                        JwtAlgorithm::RS256 => {
                            rs256 = Some(rsa(pem()?).ok_or(VerifierError::NotRsaKey)?);
                        }
                        JwtAlgorithm::ES256 => {
                            es256 = Some(p256(pem()?).ok_or(VerifierError::NotP256Key)?);
                        }
                    }
                }
            }
        }
        for (value, empty) in [
            (&cfg.user_claim, VerifierError::EmptyUserClaim),
            (&cfg.admin_claim, VerifierError::EmptyAdminClaim),
            (&cfg.admin_value, VerifierError::EmptyAdminValue),
        ] {
            if value.is_empty() {
                return Err(empty);
            }
        }
        Ok(Verifier {
            hs256,
            rs256,
            es256,
            accept_rs256,
            accept_es256,
            jwks,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_secs,
            user_claim: cfg.user_claim.clone(),
            admin_claim: cfg.admin_claim.clone(),
            plan_claim: cfg.plan_claim.clone(),
            admin_value: cfg.admin_value.clone(),
            cache: TokenCache::new(DEFAULT_CACHE_CAPACITY),
            clock: Arc::new(system_clock),
        })
    }

    /// The key set of `auth.jwks_url`, when configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Replace the clock (seconds since the Unix epoch). For tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Verifier {
        self.clock = Arc::new(clock);
        self
    }

    /// Keep at most `capacity` verified tokens (0 disables the cache).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Verifier {
        self.cache = TokenCache::new(capacity);
        self
    }

    /// How many verified tokens the cache holds now.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verify `token` and read the caller from it: signature by a configured algorithm, `exp`
    /// (required) and `nbf` within `leeway_secs`, `iss` and `aud` when configured, then the user
    /// claim. A token verified before is answered from the cache until its `exp`, and, when a
    /// key of `auth.jwks_url` verified it, while the key set still holds that key.
    ///
    /// Never waits: a token naming a kid the key set does not hold is refused
    /// ([`AuthError::UnknownKey`]) and asks for a refresh in the background (rate-limited).
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let result = self.verify_now(token);
        if result == Err(AuthError::UnknownKey)
            && let Some(jwks) = &self.jwks
        {
            jwks.ask_refresh();
        }
        result
    }

    /// [`Verifier::verify`], except that a token naming a kid the key set does not hold waits
    /// for the key set's refresh (at most `jwks::UNKNOWN_KID_WAIT`, one fetch shared by every
    /// caller, none while refreshes are rate-limited) and is then verified once more.
    pub async fn verify_with_refresh(&self, token: &str) -> Result<Caller, AuthError> {
        match (self.verify_now(token), &self.jwks) {
            (Err(AuthError::UnknownKey), Some(jwks)) => {
                jwks.refresh_for_unknown_kid().await;
                self.verify_now(token)
            }
            (result, _) => result,
        }
    }

    /// The cache, then the full check.
    fn verify_now(&self, token: &str) -> Result<Caller, AuthError> {
        let now = (self.clock)();
        let held = |id: u64| self.jwks.as_ref().is_some_and(|j| j.keys().holds(id));
        if let Some(caller) = self.cache.get(token, now, held) {
            return Ok(caller);
        }
        let (caller, exp, key) = self.verify_uncached(token, now)?;
        if exp > now && token.len() <= MAX_CACHED_TOKEN_BYTES {
            self.cache.insert(token, caller.clone(), exp, now, key);
        }
        Ok(caller)
    }

    /// The full check, returning the caller, the token's `exp` and the key that verified it.
    fn verify_uncached(&self, token: &str, now: u64) -> Result<(Caller, u64, KeyUsed), AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingCredential);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let (message, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(AuthError::Malformed)?;
        if payload.contains('.') {
            return Err(AuthError::Malformed);
        }

        // 1. The algorithm: one of ours, or refused before any crypto.
        let header = b64(header)?;
        let header: JoseHeader<'_> =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let alg = match &*header.alg {
            "HS256" if self.hs256.is_some() => JwtAlgorithm::HS256,
            "RS256" if self.accept_rs256 => JwtAlgorithm::RS256,
            "ES256" if self.accept_es256 => JwtAlgorithm::ES256,
            _ => return Err(AuthError::DisallowedAlgorithm),
        };

        // 2. The signature, before reading any claim.
        let key = self.check_signature(alg, header.kid.as_deref(), message, signature)?;

        // 3. The claims.
        let claims: Map<String, Value> =
            serde_json::from_slice(&b64(payload)?).map_err(|_| AuthError::Malformed)?;
        let exp = match claims.get("exp") {
            None | Some(Value::Null) => return Err(AuthError::MissingExpiry),
            Some(v) => numeric_date(v)?,
        };
        if exp.saturating_add(self.leeway) < now {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").filter(|v| !v.is_null())
            && numeric_date(nbf)? > now.saturating_add(self.leeway)
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(AuthError::WrongIssuer);
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => {
                    auds.iter().any(|a| a.as_str() == Some(audience.as_str()))
                }
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }

        let user_id: Arc<str> = match claims.get(&self.user_claim) {
            Some(Value::String(s)) => s.as_str().into(),
            Some(Value::Number(n)) => n.to_string().into(),
            _ => return Err(AuthError::MissingUserClaim),
        };
        if user_id.trim().is_empty()
            || user_id.len() > MAX_USER_ID_BYTES
            || user_id.chars().any(char::is_control)
        {
            return Err(AuthError::MissingUserClaim);
        }
        let string_claim = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let is_admin = claims
            .get(&self.admin_claim)
            .is_some_and(|v| claim_holds(v, &self.admin_value));
        let caller = Caller {
            user_id,
            email: string_claim("email"),
            name: string_claim("name"),
            is_admin,
            plan: claims.get(&self.plan_claim).and_then(plan_values),
        };
        Ok((caller, exp, key))
    }

    /// Verify the signature with the key(s) `alg` and `kid` select (see the module doc).
    fn check_signature(
        &self,
        alg: JwtAlgorithm,
        kid: Option<&str>,
        message: &str,
        signature: &str,
    ) -> Result<KeyUsed, AuthError> {
        let algorithm = match alg {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        };
        let check = |key: &DecodingKey| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, algorithm)
                .map_err(|_| AuthError::Malformed)
        };
        let pem = match alg {
            JwtAlgorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or(AuthError::DisallowedAlgorithm)?;
                return if check(key)? {
                    Ok(None)
                } else {
                    Err(AuthError::BadSignature)
                };
            }
            JwtAlgorithm::RS256 => self.rs256.as_ref(),
            JwtAlgorithm::ES256 => self.es256.as_ref(),
        };
        let set = self.jwks.as_ref().map(|j| j.keys());
        if let (Some(kid), Some(set)) = (kid, &set) {
            if let Some(key) = set.with_kid(kid, alg) {
                return if check(&key.key)? {
                    Ok(Some(key.id))
                } else {
                    Err(AuthError::BadSignature)
                };
            }
            return match pem {
                Some(key) if check(key)? => Ok(None),
                _ => Err(AuthError::UnknownKey),
            };
        }
        let mut tried = false;
        if let Some(key) = pem {
            tried = true;
            if check(key)? {
                return Ok(None);
            }
        }
        for key in set.iter().flat_map(|s| s.for_alg(alg)) {
            tried = true;
            if check(&key.key)? {
                return Ok(Some(key.id));
            }
        }
        if tried {
            Err(AuthError::BadSignature)
        } else {
            Err(AuthError::UnknownKey)
        }
    }
}

pub(super) fn b64(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)
}

/// A NumericDate (RFC 7519 §2): non-negative seconds, fractions allowed (rounded down).
fn numeric_date(v: &Value) -> Result<u64, AuthError> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    match v.as_f64() {
        // In range (checked), so the cast cannot saturate.
        Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(f.floor() as u64),
        _ => Err(AuthError::Malformed),
    }
}

/// Whether a claim holds `expected`: a string equal to it, a number or boolean that prints as
/// it (`admin_value = "true"` matches `"admin": true`), or an array holding such a value.
fn claim_holds(v: &Value, expected: &str) -> bool {
    match v {
        Value::String(s) => s == expected,
        Value::Bool(b) => expected == if *b { "true" } else { "false" },
        Value::Number(n) => n.to_string() == expected,
        Value::Array(items) => items
            .iter()
            .any(|i| !i.is_array() && claim_holds(i, expected)),
        Value::Null | Value::Object(_) => false,
    }
}

/// Most values read from an array plan claim.
const MAX_PLAN_VALUES: usize = 16;
/// Longest plan claim value kept (a plan's name is at most 64 bytes).
const MAX_PLAN_VALUE_BYTES: usize = 64;

/// The values of a plan claim: a string or number is one value, an array gives its strings and
/// numbers (at most [`MAX_PLAN_VALUES`]); a value longer than [`MAX_PLAN_VALUE_BYTES`], empty or
/// holding a control character is skipped. `None` when nothing is left.
fn plan_values(v: &Value) -> Option<Arc<[Box<str>]>> {
    fn one(v: &Value) -> Option<Box<str>> {
        let s: Box<str> = match v {
            Value::String(s) => s.as_str().into(),
            Value::Number(n) => n.to_string().into(),
            _ => return None,
        };
        let usable =
            !s.is_empty() && s.len() <= MAX_PLAN_VALUE_BYTES && !s.chars().any(char::is_control);
        usable.then_some(s)
    }
    let values: Vec<Box<str>> = match v {
        Value::Array(items) => items.iter().take(MAX_PLAN_VALUES).filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    };
    (!values.is_empty()).then(|| values.into())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;
    use crate::auth::testkit::*;

    // --- valid tokens ---

    #[test]
    fn hs256_token_verifies_into_its_caller() {
        let caller = hs_verifier().verify(&hs(&claims())).unwrap();
        assert_eq!(
            caller,
            Caller {
                user_id: "u-1".into(),
                email: Some("a@example.com".into()),
                name: Some("Ann".into()),
                is_admin: false,
                plan: None,
            }
        );
    }

    #[test]
    fn the_plan_claim_is_read_as_a_list_of_values() {
        let plan = |v: Value| {
            let mut c = claims();
            c["plan"] = v;
            hs_verifier()
                .verify(&hs(&c))
                .unwrap()
                .plan
                .map(|p| p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(plan(json!("pro")), Some(vec!["pro".to_string()]));
        assert_eq!(plan(json!(3)), Some(vec!["3".to_string()]));
        assert_eq!(
            plan(json!(["staff", 7, null, ["x"], {"a": 1}, "team"])),
            Some(vec!["staff".into(), "7".into(), "team".into()])
        );
        assert_eq!(plan(json!("")), None);
        assert_eq!(plan(json!("a\nb")), None);
        assert_eq!(plan(json!("x".repeat(65))), None);
        assert_eq!(plan(json!([])), None);
        assert_eq!(plan(json!(true)), None);
        assert_eq!(plan(json!(null)), None);
        let many: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
        assert_eq!(plan(json!(many)).unwrap().len(), 16);
        // Another claim name.
        let v = verifier_for(&AuthConfig {
            plan_claim: "tier".into(),
            ..auth(&[JwtAlgorithm::HS256])
        });
        let mut c = claims();
        c["tier"] = json!("gold");
        c["plan"] = json!("free");
        assert_eq!(&*v.verify(&hs(&c)).unwrap().plan.unwrap()[0], "gold");
    }

    #[test]
    fn rs256_token_verifies_with_the_rsa_public_key() {
        let token = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            &claims(),
        );
        let caller = verifier_for(&auth(&[JwtAlgorithm::RS256]))
            .verify(&token)
            .unwrap();
        assert_eq!(&*caller.user_id, "u-1");
    }

    #[test]
    fn es256_token_verifies_with_the_ec_public_key() {
        let token = sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
            &claims(),
        );
        let caller = verifier_for(&auth(&[JwtAlgorithm::ES256]))
            .verify(&token)
            .unwrap();
        assert_eq!(&*caller.user_id, "u-1");
    }

    #[test]
    fn hs256_and_rs256_together_each_use_their_own_key() {
        let v = verifier_for(&auth(&[JwtAlgorithm::HS256, JwtAlgorithm::RS256]));
        let rs = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            &claims(),
        );
        assert!(v.verify(&rs).is_ok());
        assert!(v.verify(&hs(&claims())).is_ok());
    }

    // --- forged and disallowed tokens ---

    #[test]
    fn a_changed_payload_breaks_the_signature() {
        let token = hs(&claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64json(&with(claims(), json!({"sub": "someone-else"})));
        parts[1] = &forged;
        assert_eq!(
            hs_verifier().verify(&parts.join(".")),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_changed_signature_is_refused() {
        let token = hs(&claims());
        let (message, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{message}.{flipped}{}", &signature[1..]);
        assert_eq!(hs_verifier().verify(&forged), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another-secret"),
            &claims(),
        );
        assert_eq!(hs_verifier().verify(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused_before_any_signature_check() {
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "None"}),
            json!({"alg": "NONE"}),
        ] {
            let token = format!("{}.{}.", b64json(&header), b64json(&claims()));
            assert_eq!(
                hs_verifier().verify(&token),
                Err(AuthError::DisallowedAlgorithm)
            );
        }
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_refused_when_only_rs256_is_configured() {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(RSA_PUBLIC),
            &claims(),
        );
        let v = verifier_for(&auth(&[JwtAlgorithm::RS256]));
        assert_eq!(v.verify(&token), Err(AuthError::DisallowedAlgorithm));
    }

    #[test]
    fn an_algorithm_that_is_not_configured_is_refused() {
        let rs = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            &claims(),
        );
        assert_eq!(
            hs_verifier().verify(&rs),
            Err(AuthError::DisallowedAlgorithm)
        );
        let hs512 = sign(
            Algorithm::HS512,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims(),
        );
        assert_eq!(
            hs_verifier().verify(&hs512),
            Err(AuthError::DisallowedAlgorithm)
        );
    }

    #[test]
    fn a_crit_header_is_refused() {
        let header = b64json(&json!({"alg": "HS256", "crit": ["exp"]}));
        let message = format!("{header}.{}", b64json(&claims()));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            hs_verifier().verify(&format!("{message}.{signature}")),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let v = hs_verifier();
        assert_eq!(v.verify(""), Err(AuthError::MissingCredential));
        for garbage in [
            "sk-proj-abcdef",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "...",
            "eyJhbGciOiJIUzI1NiJ9.e30.not base64!",
            &format!("{}.{}.sig", b64json(&json!("alg")), b64json(&claims())),
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(
                v.verify(garbage),
                Err(AuthError::Malformed),
                "{garbage:.40}"
            );
        }
    }

    // --- time claims ---

    #[test]
    fn an_expired_token_is_refused() {
        let token = hs(&with(claims(), json!({"exp": NOW - 31})));
        assert_eq!(hs_verifier().verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let token = hs(&with(claims(), json!({"exp": null})));
        assert_eq!(hs_verifier().verify(&token), Err(AuthError::MissingExpiry));
        let token = hs(&with(claims(), json!({"exp": "tomorrow"})));
        assert_eq!(hs_verifier().verify(&token), Err(AuthError::Malformed));
    }

    #[test]
    fn a_token_before_its_nbf_is_refused() {
        let token = hs(&with(claims(), json!({"nbf": NOW + 31})));
        assert_eq!(hs_verifier().verify(&token), Err(AuthError::NotYetValid));
    }

    #[test]
    fn leeway_tolerates_small_clock_skew_on_exp_and_nbf() {
        let v = hs_verifier(); // leeway_secs = 30
        assert!(
            v.verify(&hs(&with(claims(), json!({"exp": NOW - 30}))))
                .is_ok()
        );
        assert!(
            v.verify(&hs(&with(claims(), json!({"nbf": NOW + 30}))))
                .is_ok()
        );
        let strict = verifier_for(&AuthConfig {
            leeway_secs: 0,
            ..auth(&[JwtAlgorithm::HS256])
        });
        assert_eq!(
            strict.verify(&hs(&with(claims(), json!({"exp": NOW - 1})))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            strict.verify(&hs(&with(claims(), json!({"nbf": NOW + 1})))),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn fractional_numeric_dates_are_accepted() {
        let token = hs(&with(
            claims(),
            json!({"exp": (NOW + 10) as f64 + 0.5, "nbf": NOW as f64 - 0.5}),
        ));
        assert!(hs_verifier().verify(&token).is_ok());
    }

    // --- issuer and audience ---

    #[test]
    fn issuer_is_checked_when_configured() {
        let v = verifier_for(&AuthConfig {
            issuer: Some("https://login.example".into()),
            ..auth(&[JwtAlgorithm::HS256])
        });
        assert!(
            v.verify(&hs(&with(
                claims(),
                json!({"iss": "https://login.example"})
            )))
            .is_ok()
        );
        assert_eq!(
            v.verify(&hs(&with(claims(), json!({"iss": "https://evil.example"})))),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(v.verify(&hs(&claims())), Err(AuthError::WrongIssuer));
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let v = verifier_for(&AuthConfig {
            audience: Some("tollgate".into()),
            ..auth(&[JwtAlgorithm::HS256])
        });
        assert!(
            v.verify(&hs(&with(claims(), json!({"aud": "tollgate"}))))
                .is_ok()
        );
        assert!(
            v.verify(&hs(&with(claims(), json!({"aud": ["other", "tollgate"]}))))
                .is_ok()
        );
        assert_eq!(
            v.verify(&hs(&with(claims(), json!({"aud": "other"})))),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(v.verify(&hs(&claims())), Err(AuthError::WrongAudience));
    }

    #[test]
    fn issuer_and_audience_are_ignored_when_not_configured() {
        let token = hs(&with(claims(), json!({"iss": "anyone", "aud": "anything"})));
        assert!(hs_verifier().verify(&token).is_ok());
    }

    // --- the user and the admin claim ---

    #[test]
    fn a_token_without_a_usable_user_claim_is_refused() {
        let v = hs_verifier();
        for sub in [
            json!(null),
            json!(""),
            json!("  "),
            json!(true),
            json!({"id": 1}),
            json!("a\nb"),
        ] {
            let token = hs(&with(claims(), json!({"sub": sub})));
            assert_eq!(
                v.verify(&token),
                Err(AuthError::MissingUserClaim),
                "sub = {sub}"
            );
        }
        let long = hs(&with(
            claims(),
            json!({"sub": "x".repeat(MAX_USER_ID_BYTES + 1)}),
        ));
        assert_eq!(v.verify(&long), Err(AuthError::MissingUserClaim));
    }

    #[test]
    fn a_numeric_user_claim_is_stringified() {
        let caller = hs_verifier()
            .verify(&hs(&with(claims(), json!({"sub": 42}))))
            .unwrap();
        assert_eq!(&*caller.user_id, "42");
    }

    #[test]
    fn the_user_claim_is_configurable() {
        let v = verifier_for(&AuthConfig {
            user_claim: "uid".into(),
            ..auth(&[JwtAlgorithm::HS256])
        });
        let caller = v
            .verify(&hs(&with(claims(), json!({"uid": "u-9"}))))
            .unwrap();
        assert_eq!(&*caller.user_id, "u-9");
        assert_eq!(v.verify(&hs(&claims())), Err(AuthError::MissingUserClaim));
    }

    #[test]
    fn the_admin_claim_marks_admins() {
        let v = hs_verifier(); // admin_claim = "role", admin_value = "admin"
        let is_admin = |role: Value| {
            v.verify(&hs(&with(claims(), json!({"role": role}))))
                .unwrap()
                .is_admin
        };
        assert!(is_admin(json!("admin")));
        assert!(is_admin(json!(["user", "admin"])));
        assert!(!is_admin(json!("user")));
        assert!(!is_admin(json!("Admin")));
        assert!(!is_admin(json!(["user"])));
        assert!(!is_admin(json!([["admin"]])));
        assert!(!is_admin(json!({"admin": true})));
        assert!(!v.verify(&hs(&claims())).unwrap().is_admin);
    }

    #[test]
    fn a_boolean_admin_claim_matches_admin_value_true() {
        let v = verifier_for(&AuthConfig {
            admin_claim: "admin".into(),
            admin_value: "true".into(),
            ..auth(&[JwtAlgorithm::HS256])
        });
        assert!(
            v.verify(&hs(&with(claims(), json!({"admin": true}))))
                .unwrap()
                .is_admin
        );
        assert!(
            !v.verify(&hs(&with(claims(), json!({"admin": false}))))
                .unwrap()
                .is_admin
        );
    }

    #[test]
    fn email_and_name_are_copied_only_when_strings() {
        let caller = hs_verifier()
            .verify(&hs(&with(claims(), json!({"email": 5, "name": null}))))
            .unwrap();
        assert_eq!((caller.email, caller.name), (None, None));
    }

    // --- building the verifier ---

    #[test]
    fn verifier_new_names_the_key_at_fault() {
        let err = |cfg: &AuthConfig, secret: Option<&Secret>, pem: Option<&[u8]>| {
            Verifier::new(cfg, secret, pem).unwrap_err().to_string()
        };
        assert!(err(&auth(&[JwtAlgorithm::HS256]), None, None).starts_with("auth.jwt_secret_env"));
        assert!(err(&auth(&[JwtAlgorithm::RS256]), None, None).starts_with("auth.public_key_file"));
        assert!(
            err(&auth(&[JwtAlgorithm::RS256]), None, Some(EC_PUBLIC))
                .starts_with("auth.public_key_file")
        );
        assert!(
            err(&auth(&[JwtAlgorithm::ES256]), None, Some(RSA_PUBLIC))
                .starts_with("auth.public_key_file")
        );
        assert!(
            err(&auth(&[JwtAlgorithm::RS256]), None, Some(b"not a pem"))
                .starts_with("auth.public_key_file")
        );
        assert!(err(&auth(&[]), None, None).starts_with("auth.algorithms"));
    }

    #[test]
    fn verifier_errors_read_key_colon_problem() {
        let secret = Secret::new(SECRET);
        let err = |cfg: &AuthConfig, pem: Option<&[u8]>| {
            Verifier::new(cfg, Some(&secret), pem).unwrap_err()
        };
        assert_eq!(
            err(&auth(&[]), None).to_string(),
            "auth.algorithms: must name at least one algorithm"
        );
        assert_eq!(
            Verifier::new(&auth(&[JwtAlgorithm::HS256]), None, None)
                .unwrap_err()
                .to_string(),
            "auth.jwt_secret_env: HS256 needs the shared secret"
        );
        assert_eq!(
            err(&auth(&[JwtAlgorithm::ES256]), None).to_string(),
            "auth.public_key_file: RS256/ES256 need a PEM public key file (or auth.jwks_url)"
        );
        assert_eq!(
            err(&auth(&[JwtAlgorithm::RS256]), Some(EC_PUBLIC)).to_string(),
            "auth.public_key_file: RS256 needs an RSA public key in PEM form (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)"
        );
        assert_eq!(
            err(&auth(&[JwtAlgorithm::ES256]), Some(RSA_PUBLIC)).to_string(),
            "auth.public_key_file: ES256 needs a P-256 EC public key in PEM form (BEGIN PUBLIC KEY)"
        );
        for (cfg, key) in [
            (
                AuthConfig {
                    user_claim: String::new(),
                    ..AuthConfig::default()
                },
                "auth.user_claim",
            ),
            (
                AuthConfig {
                    admin_claim: String::new(),
                    ..AuthConfig::default()
                },
                "auth.admin_claim",
            ),
            (
                AuthConfig {
                    admin_value: String::new(),
                    ..AuthConfig::default()
                },
                "auth.admin_value",
            ),
        ] {
            let e = err(&cfg, None);
            assert_eq!((e.key(), e.problem()), (key, "must not be empty"));
            assert_eq!(e.to_string(), format!("{key}: must not be empty"));
        }
    }

    #[test]
    fn verifier_debug_never_shows_the_secret() {
        let shown = format!("{:?}", hs_verifier());
        assert!(!shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn error_messages_are_fixed_text() {
        let token = hs(&with(claims(), json!({"exp": NOW - 3600})));
        let err = hs_verifier().verify(&token).unwrap_err();
        assert!(!err.to_string().contains(&token[..20]));
        assert_eq!(err.to_string(), "the credential has expired");
    }

    // --- keys of auth.jwks_url ---

    use std::time::Duration;

    use jsonwebtoken::Header;
    use jsonwebtoken::jwk::{Jwk, JwkSet};

    use crate::auth::{Jwks, JwksSettings, JwksUrl};

    /// A key pair: the private key to sign with, the public JWK to publish.
    struct Pair {
        alg: Algorithm,
        private: EncodingKey,
    }

    fn rsa_pair() -> Pair {
        Pair {
            alg: Algorithm::RS256,
            private: EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        }
    }

    fn fresh_rsa_pair() -> Pair {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        Pair {
            alg: Algorithm::RS256,
            private: EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
        }
    }

    fn ec_pair() -> Pair {
        Pair {
            alg: Algorithm::ES256,
            private: EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        }
    }

    fn fresh_ec_pair() -> Pair {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Pair {
            alg: Algorithm::ES256,
            private: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        }
    }

    fn document(keys: &[(&str, &Pair)]) -> Vec<u8> {
        let keys = keys
            .iter()
            .map(|(kid, pair)| {
                let mut jwk = Jwk::from_encoding_key(&pair.private, pair.alg).unwrap();
                jwk.common.key_id = (!kid.is_empty()).then(|| kid.to_string());
                jwk
            })
            .collect();
        serde_json::to_vec(&JwkSet { keys }).unwrap()
    }

    fn signed(pair: &Pair, kid: Option<&str>) -> String {
        let mut header = Header::new(pair.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims(), &pair.private).unwrap()
    }

    /// A verifier for `algorithms` with a key set holding `keys` (not started: nothing is
    /// fetched) and, when given, a PEM key.
    fn jwks_verifier(
        algorithms: &[JwtAlgorithm],
        keys: &[(&str, &Pair)],
        pem: Option<&[u8]>,
    ) -> (Verifier, Arc<Jwks>) {
        let settings = JwksSettings::new(
            JwksUrl::parse("https://login.example/jwks").unwrap(),
            algorithms,
            Duration::from_secs(60),
        )
        .unwrap();
        let jwks = Arc::new(Jwks::new(settings, Vec::new()));
        jwks.set_document(&document(keys));
        let v = Verifier::new_with_jwks(
            &auth(algorithms),
            Some(&Secret::new(SECRET)),
            pem,
            Some(Arc::clone(&jwks)),
        )
        .unwrap()
        .with_clock(|| NOW);
        (v, jwks)
    }

    #[test]
    fn a_token_naming_a_kid_is_verified_with_that_key() {
        let (a, b, e) = (rsa_pair(), fresh_rsa_pair(), ec_pair());
        let (v, _) = jwks_verifier(
            &[JwtAlgorithm::RS256, JwtAlgorithm::ES256],
            &[("a", &a), ("b", &b), ("e", &e)],
            None,
        );
        assert_eq!(&*v.verify(&signed(&a, Some("a"))).unwrap().user_id, "u-1");
        assert!(v.verify(&signed(&b, Some("b"))).is_ok());
        assert!(v.verify(&signed(&e, Some("e"))).is_ok());
        // Signed by b but naming a: only a is tried.
        assert_eq!(
            v.verify(&signed(&b, Some("a"))),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_kid_the_set_does_not_hold_is_an_unknown_key() {
        let (a, other) = (rsa_pair(), fresh_rsa_pair());
        let (v, _) = jwks_verifier(&[JwtAlgorithm::RS256], &[("a", &a)], None);
        assert_eq!(
            v.verify(&signed(&other, Some("new"))),
            Err(AuthError::UnknownKey)
        );
        // An unstarted key set asks no one: the same answer at once, again.
        assert_eq!(
            v.verify(&signed(&a, Some("new"))),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn a_key_serves_only_its_own_algorithm() {
        let (r, e) = (rsa_pair(), fresh_ec_pair());
        let (v, _) = jwks_verifier(
            &[
                JwtAlgorithm::RS256,
                JwtAlgorithm::ES256,
                JwtAlgorithm::HS256,
            ],
            &[("r", &r), ("e", &e)],
            None,
        );
        // An ES256 token naming the RSA key: the set holds no ES256 key "r".
        assert_eq!(v.verify(&signed(&e, Some("r"))), Err(AuthError::UnknownKey));
        // HS256 keyed with the RSA key's public JWK as the secret, naming it: the secret decides.
        let public =
            serde_json::to_vec(&Jwk::from_encoding_key(&r.private, r.alg).unwrap()).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("r".into());
        let confused =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
        assert_eq!(v.verify(&confused), Err(AuthError::BadSignature));
        // HS256 with the real secret still works beside the key set.
        assert!(v.verify(&hs(&claims())).is_ok());
    }

    #[test]
    fn keys_of_an_algorithm_not_accepted_are_not_used() {
        let e = ec_pair();
        // ES256 is not accepted: the P-256 key is not even in the set.
        let settings = JwksSettings::new(
            JwksUrl::parse("https://login.example/jwks").unwrap(),
            &[JwtAlgorithm::RS256],
            Duration::from_secs(60),
        )
        .unwrap();
        let jwks = Jwks::new(settings, Vec::new());
        let doc = document(&[("e", &e), ("r", &rsa_pair())]);
        jwks.set_document(&doc);
        assert_eq!(jwks.key_count(), 1);
        let (v, _) = jwks_verifier(&[JwtAlgorithm::RS256], &[("r", &rsa_pair())], None);
        assert_eq!(
            v.verify(&signed(&e, Some("e"))),
            Err(AuthError::DisallowedAlgorithm)
        );
    }

    #[test]
    fn a_token_without_a_kid_is_tried_against_every_key_of_its_algorithm() {
        let (a, b, stranger) = (fresh_rsa_pair(), rsa_pair(), fresh_rsa_pair());
        let (v, _) = jwks_verifier(&[JwtAlgorithm::RS256], &[("a", &a), ("", &b)], None);
        assert!(v.verify(&signed(&a, None)).is_ok());
        assert!(v.verify(&signed(&b, None)).is_ok());
        assert_eq!(
            v.verify(&signed(&stranger, None)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn the_pem_key_is_used_beside_the_key_set() {
        let (set_key, pem_key) = (fresh_rsa_pair(), rsa_pair());
        let (v, _) = jwks_verifier(&[JwtAlgorithm::RS256], &[("a", &set_key)], Some(RSA_PUBLIC));
        // The PEM key has no kid: tokens without one, or with a kid the set does not hold.
        assert!(v.verify(&signed(&pem_key, None)).is_ok());
        assert!(v.verify(&signed(&pem_key, Some("in-house"))).is_ok());
        assert!(v.verify(&signed(&set_key, Some("a"))).is_ok());
        // A kid the set holds is that key's only.
        assert_eq!(
            v.verify(&signed(&pem_key, Some("a"))),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn with_a_key_set_the_pem_key_may_serve_either_algorithm() {
        let both = [JwtAlgorithm::RS256, JwtAlgorithm::ES256];
        let (v, _) = jwks_verifier(&both, &[("r", &fresh_rsa_pair())], Some(EC_PUBLIC));
        assert!(v.verify(&signed(&ec_pair(), None)).is_ok());
        let cfg = auth(&both);
        let jwks = v.jwks().cloned();
        let err =
            Verifier::new_with_jwks(&cfg, None, Some(b"not a key"), jwks.clone()).unwrap_err();
        assert_eq!(err.key(), "auth.public_key_file");
        // Without a PEM key the key set is enough; without either, RS256 has no key.
        assert!(Verifier::new_with_jwks(&cfg, None, None, jwks).is_ok());
        assert_eq!(
            Verifier::new_with_jwks(&cfg, None, None, None).unwrap_err(),
            VerifierError::MissingPublicKey
        );
    }

    #[test]
    fn a_cached_token_is_refused_once_its_key_left_the_set() {
        let (a, b) = (rsa_pair(), fresh_rsa_pair());
        let (v, jwks) = jwks_verifier(&[JwtAlgorithm::RS256], &[("a", &a), ("b", &b)], None);
        let token = signed(&a, Some("a"));
        assert!(v.verify(&token).is_ok());
        assert_eq!(v.cached_tokens(), 1);
        // A refresh that keeps key a keeps the entry.
        jwks.set_document(&document(&[("b", &b), ("a", &a)]));
        assert!(
            v.cache
                .get(&token, NOW, |id| jwks.keys().holds(id))
                .is_some()
        );
        // One that drops it: the entry is not served, and the full check refuses the token.
        jwks.set_document(&document(&[("b", &b)]));
        assert_eq!(v.verify(&token), Err(AuthError::UnknownKey));
        assert_eq!(v.cached_tokens(), 0);
    }
}
