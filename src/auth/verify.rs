//! Verification of an end-user JWT into a [`Caller`]: the keys built once from `[auth]` (each
//! bound to one algorithm, so the token's `alg` only picks among them), the signature checked
//! before any claim is read, then `exp`/`nbf` with leeway, `iss`, `aud`, the user and admin
//! claims. Verified tokens go to the cache of verified tokens, so a repeat costs a lookup.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::cache::{DEFAULT_CACHE_CAPACITY, TokenCache};
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
    /// RS256 or ES256 is accepted but there is no public key.
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
            VerifierError::MissingPublicKey => "RS256/ES256 need a PEM public key file",
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
    rs256: Option<DecodingKey>,
    es256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    user_claim: String,
    admin_claim: String,
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
}

impl Verifier {
    /// Build the keys for the algorithms `cfg.algorithms` names: HS256 from `secret`, RS256 from
    /// an RSA public key and ES256 from a P-256 public key in `public_key_pem`. The error names
    /// the configuration key at fault and never carries key material.
    pub fn new(
        cfg: &AuthConfig,
        secret: Option<&Secret>,
        public_key_pem: Option<&[u8]>,
    ) -> Result<Verifier, VerifierError> {
        if cfg.algorithms.is_empty() {
            return Err(VerifierError::NoAlgorithm);
        }
        let pem = || public_key_pem.ok_or(VerifierError::MissingPublicKey);
        let (mut hs256, mut rs256, mut es256) = (None, None, None);
        for alg in &cfg.algorithms {
            match alg {
                JwtAlgorithm::HS256 => {
                    let secret = secret
                        .filter(|s| !s.expose().is_empty())
                        .ok_or(VerifierError::MissingSecret)?;
                    hs256 = Some(DecodingKey::from_secret(secret.expose().as_bytes()));
                }
                JwtAlgorithm::RS256 => {
                    let key =
                        DecodingKey::from_rsa_pem(pem()?).map_err(|_| VerifierError::NotRsaKey)?;
                    rs256 = Some(key);
                }
                JwtAlgorithm::ES256 => {
                    let key = DecodingKey::from_ec_pem(pem()?)
                        .ok()
                        // An uncompressed P-256 point is 65 bytes; P-384 would never verify ES256.
                        .filter(|k| k.try_get_as_bytes().is_ok_and(|b| b.len() == 65))
                        .ok_or(VerifierError::NotP256Key)?;
                    es256 = Some(key);
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
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_secs,
            user_claim: cfg.user_claim.clone(),
            admin_claim: cfg.admin_claim.clone(),
            admin_value: cfg.admin_value.clone(),
            cache: TokenCache::new(DEFAULT_CACHE_CAPACITY),
            clock: Arc::new(system_clock),
        })
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
    /// claim. A token verified before is answered from the cache until its `exp`.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let now = (self.clock)();
        if let Some(caller) = self.cache.get(token, now) {
            return Ok(caller);
        }
        let (caller, exp) = self.verify_uncached(token, now)?;
        if exp > now && token.len() <= MAX_CACHED_TOKEN_BYTES {
            self.cache.insert(token, caller.clone(), exp, now);
        }
        Ok(caller)
    }

    /// The full check, returning the caller and the token's `exp`.
    fn verify_uncached(&self, token: &str, now: u64) -> Result<(Caller, u64), AuthError> {
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
        let (key, alg) = match &*header.alg {
            "HS256" => (self.hs256.as_ref(), Algorithm::HS256),
            "RS256" => (self.rs256.as_ref(), Algorithm::RS256),
            "ES256" => (self.es256.as_ref(), Algorithm::ES256),
            _ => (None, Algorithm::HS256),
        };
        let key = key.ok_or(AuthError::DisallowedAlgorithm)?;

        // 2. The signature, before reading any claim.
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::BadSignature),
            Err(_) => return Err(AuthError::Malformed),
        }

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
        };
        Ok((caller, exp))
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
            }
        );
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
            "auth.public_key_file: RS256/ES256 need a PEM public key file"
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
}
