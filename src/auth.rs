//! End-user credentials: where the JWT is found in a request ([`credential`], [`strip_key_param`],
//! [`strip_credential_headers`]), its verification into a [`Caller`] ([`Verifier`]), and minting
//! tokens for trials ([`mint`], used by `tollgate token`).
//!
//! The accepted algorithms come from `[auth]` only. The token header merely picks one of the
//! configured keys, and each key is bound to one algorithm, so `alg: none` and HS/RS confusion
//! are refused before any signature work. The module never logs, and no error it returns ever
//! carries the token, a claim value or a key: [`AuthError`]'s messages are fixed strings that are
//! safe to show to the client.
//!
//! Verification runs on every call, so [`Verifier`] builds its keys once and keeps a bounded
//! cache of tokens it has already verified. A cache hit compares the full token in constant time
//! and is never served at or past the token's `exp`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, JwtAlgorithm, Secret};

/// Google's API key header, which the google-genai SDK fills with the user's JWT.
pub const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

/// Tokens longer than this are refused unread (a JWT from a login backend is well under 2 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Tokens longer than this are verified but not cached, which bounds the cache's memory.
const MAX_CACHED_TOKEN_BYTES: usize = 4 * 1024;
/// User ids longer than this are refused: they become store keys and admin URL segments.
const MAX_USER_ID_BYTES: usize = 256;
/// Default number of verified tokens kept (over all shards).
const DEFAULT_CACHE_CAPACITY: usize = 16 * 1024;
const CACHE_SHARDS: usize = 16;

// === credentials in a request ===

/// The client's credential, from the first place that has a non-empty one:
/// `Authorization: Bearer …` (scheme case-insensitive), then `x-goog-api-key`, then the query
/// parameter `key` (percent-decoded, `+` as space).
///
/// ```
/// use http::HeaderMap;
/// let mut headers = HeaderMap::new();
/// headers.insert("authorization", "bearer a.b.c".parse().unwrap());
/// assert_eq!(tollgate::auth::credential(&headers, None).as_deref(), Some("a.b.c"));
/// assert_eq!(tollgate::auth::credential(&HeaderMap::new(), Some("alt=sse&key=x.y.z")).as_deref(), Some("x.y.z"));
/// ```
pub fn credential<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
    if let Some(token) = headers.get_all(AUTHORIZATION).iter().find_map(bearer) {
        return Some(Cow::Borrowed(token));
    }
    if let Some(token) = headers
        .get_all(X_GOOG_API_KEY)
        .iter()
        .find_map(|v| non_empty(v.to_str().ok()?.trim()))
    {
        return Some(Cow::Borrowed(token));
    }
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !is_key_name(name) {
            return None;
        }
        let value = percent_decode(value)?;
        (!value.trim().is_empty()).then_some(value)
    })
}

/// `query` without any `key` parameter, or `None` when it has none. The other parameters are kept
/// byte for byte and in order (Gemini's `$alt=json;enum-encoding=int` included). `Some("")` means
/// nothing is left: drop the `?`.
///
/// ```
/// use tollgate::auth::strip_key_param;
/// assert_eq!(strip_key_param("key=a.b.c&alt=sse").as_deref(), Some("alt=sse"));
/// assert_eq!(strip_key_param("$alt=json;enum-encoding=int"), None);
/// ```
pub fn strip_key_param(query: &str) -> Option<String> {
    let mut kept: Vec<&str> = Vec::new();
    let mut removed = false;
    for pair in query.split('&') {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if is_key_name(name) {
            removed = true;
        } else {
            kept.push(pair);
        }
    }
    removed.then(|| kept.join("&"))
}

/// Headers that can carry a client credential: the two Tollgate reads JWTs from, plus the other
/// API-key and session headers clients send. None of them is ever forwarded upstream.
pub const CREDENTIAL_HEADERS: [HeaderName; 6] = [
    AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    X_GOOG_API_KEY,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    http::header::COOKIE,
];

/// Remove every header that can carry a client credential ([`CREDENTIAL_HEADERS`]).
pub fn strip_credential_headers(headers: &mut HeaderMap) {
    for name in &CREDENTIAL_HEADERS {
        headers.remove(name);
    }
}

fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    non_empty(rest.trim_start())
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Whether a query parameter name is `key`, also when (needlessly) percent-encoded: the names
/// [`credential`] reads and [`strip_key_param`] removes must be the same set, or a JWT could
/// reach the provider.
fn is_key_name(name: &str) -> bool {
    if name == "key" {
        return true;
    }
    name.len() > 3 && name.contains('%') && percent_decode(name).is_some_and(|n| n == "key")
}

/// `application/x-www-form-urlencoded` decoding: `%XX` → byte, `+` → space; a `%` not followed by
/// two hex digits stays as it is. `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok()
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

// === the verified caller ===

/// A verified end user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The `auth.user_claim` claim (numbers are stringified).
    pub user_id: Arc<str>,
    /// The `email` claim, when it is a string.
    pub email: Option<String>,
    /// The `name` claim, when it is a string.
    pub name: Option<String>,
    /// Whether the `auth.admin_claim` claim holds `auth.admin_value`.
    pub is_admin: bool,
}

/// Why a credential was refused. Every message is fixed text, safe to show to the client: none
/// carries the token or anything read from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credential: send the user's JWT as the API key")]
    MissingCredential,
    #[error("the credential is not a well-formed JWT")]
    Malformed,
    #[error("the credential's signature does not verify")]
    BadSignature,
    #[error("the credential has expired")]
    Expired,
    #[error("the credential is not valid yet")]
    NotYetValid,
    #[error("the credential has no expiry (exp)")]
    MissingExpiry,
    #[error("the credential was issued by an issuer this gateway does not accept")]
    WrongIssuer,
    #[error("the credential is meant for another audience")]
    WrongAudience,
    #[error("the credential is signed with an algorithm this gateway does not accept")]
    DisallowedAlgorithm,
    #[error("the credential does not name a valid user")]
    MissingUserClaim,
}

// === verification ===

/// Seconds since the Unix epoch, injectable so tests can cross an `exp` without sleeping.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
    cache: TokenCache,
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
    ) -> Result<Verifier, String> {
        Self::build(cfg, secret, public_key_pem)
            .map_err(|(key, message)| format!("{key}: {message}"))
    }

    /// [`Verifier::new`] with the configuration key at fault kept apart, for `config`.
    pub(crate) fn build(
        cfg: &AuthConfig,
        secret: Option<&Secret>,
        public_key_pem: Option<&[u8]>,
    ) -> Result<Verifier, (&'static str, String)> {
        if cfg.algorithms.is_empty() {
            return Err(("auth.algorithms", "must name at least one algorithm".into()));
        }
        let pem = || {
            public_key_pem.ok_or((
                "auth.public_key_file",
                "RS256/ES256 need a PEM public key file".to_string(),
            ))
        };
        let (mut hs256, mut rs256, mut es256) = (None, None, None);
        for alg in &cfg.algorithms {
            match alg {
                JwtAlgorithm::HS256 => {
                    let secret = secret.filter(|s| !s.expose().is_empty()).ok_or((
                        "auth.jwt_secret_env",
                        "HS256 needs the shared secret".to_string(),
                    ))?;
                    hs256 = Some(DecodingKey::from_secret(secret.expose().as_bytes()));
                }
                JwtAlgorithm::RS256 => {
                    let key = DecodingKey::from_rsa_pem(pem()?).map_err(|_| {
                        (
                            "auth.public_key_file",
                            "RS256 needs an RSA public key in PEM form (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)"
                                .to_string(),
                        )
                    })?;
                    rs256 = Some(key);
                }
                JwtAlgorithm::ES256 => {
                    let key = DecodingKey::from_ec_pem(pem()?)
                        .ok()
                        // An uncompressed P-256 point is 65 bytes; P-384 would never verify ES256.
                        .filter(|k| k.try_get_as_bytes().is_ok_and(|b| b.len() == 65))
                        .ok_or((
                            "auth.public_key_file",
                            "ES256 needs a P-256 EC public key in PEM form (BEGIN PUBLIC KEY)"
                                .to_string(),
                        ))?;
                    es256 = Some(key);
                }
            }
        }
        for (key, value) in [
            ("auth.user_claim", &cfg.user_claim),
            ("auth.admin_claim", &cfg.admin_claim),
            ("auth.admin_value", &cfg.admin_value),
        ] {
            if value.is_empty() {
                return Err((key, "must not be empty".into()));
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

fn b64(part: &str) -> Result<Vec<u8>, AuthError> {
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

// === the cache of verified tokens ===

/// A bounded, sharded map of verified tokens → caller. The map key is a keyed hash of the token's
/// last 32 bytes (its signature, which differs between any two tokens that verify); a hit is
/// authorised only by comparing the full stored token, in constant time. Entries are never served
/// at or past their `exp`. A full shard first drops its expired entries, then is cleared.
struct TokenCache {
    hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
    shard_capacity: usize,
}

type Shard = HashMap<u64, CachedToken, BuildHasherDefault<IdentityHasher>>;

struct CachedToken {
    token: Box<str>,
    caller: Arc<Caller>,
    exp: u64,
}

impl TokenCache {
    fn new(capacity: usize) -> TokenCache {
        TokenCache {
            hasher: RandomState::new(),
            shards: (0..CACHE_SHARDS).map(|_| RwLock::default()).collect(),
            shard_capacity: capacity.div_ceil(CACHE_SHARDS),
        }
    }

    fn slot(&self, token: &str) -> (u64, usize) {
        let tail = &token.as_bytes()[token.len().saturating_sub(32)..];
        let hash = self.hasher.hash_one(tail);
        // The top bits pick the shard; the map inside uses the whole hash.
        let shard = usize::try_from(hash >> 60).unwrap_or(0) % CACHE_SHARDS;
        (hash, shard)
    }

    fn get(&self, token: &str, now: u64) -> Option<Caller> {
        if self.shard_capacity == 0 {
            return None;
        }
        let (hash, shard) = self.slot(token);
        let shard = &self.shards[shard];
        let caller = {
            // Hits share the read lock: concurrent calls with one token do not queue.
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            let entry = map.get(&hash)?;
            if entry.exp > now {
                if !constant_time_eq(entry.token.as_bytes(), token.as_bytes()) {
                    return None;
                }
                Some(Arc::clone(&entry.caller))
            } else {
                None
            }
        };
        match caller {
            Some(caller) => Some(Caller::clone(&caller)),
            None => {
                // Expired (rare): drop it, unless another call replaced it meanwhile.
                let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
                if map.get(&hash).is_some_and(|e| e.exp <= now) {
                    map.remove(&hash);
                }
                None
            }
        }
    }

    fn insert(&self, token: &str, caller: Caller, exp: u64, now: u64) {
        if self.shard_capacity == 0 {
            return;
        }
        let (hash, shard) = self.slot(token);
        let entry = CachedToken {
            token: token.into(),
            caller: Arc::new(caller),
            exp,
        };
        let mut map = self.shards[shard]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.shard_capacity && !map.contains_key(&hash) {
            map.retain(|_, e| e.exp > now);
            if map.len() >= self.shard_capacity {
                map.clear();
            }
        }
        map.insert(hash, entry);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Equality whose time depends only on the lengths, not on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The map keys are already keyed hashes: pass them through instead of hashing them again.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

// === minting ===

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the subject must not be empty")]
    EmptySubject,
    #[error("the time to live must be at least one second")]
    BadTtl,
    #[error("claim `{0}` would be written twice; check auth.user_claim and auth.admin_claim")]
    ClaimClash(String),
    #[error("the token could not be signed")]
    Sign,
}

/// Mint an HS256 token for trials (`tollgate token`): the subject under `cfg.user_claim`, `iat`,
/// `exp = now + ttl`, `cfg.admin_claim = cfg.admin_value` when `admin`, `email`/`name` when
/// given, and `iss`/`aud` when configured.
pub fn mint(
    secret: &Secret,
    cfg: &AuthConfig,
    sub: &str,
    admin: bool,
    ttl: Duration,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<String, MintError> {
    if sub.trim().is_empty() {
        return Err(MintError::EmptySubject);
    }
    if ttl.as_secs() == 0 {
        return Err(MintError::BadTtl);
    }
    let now = system_clock();
    let mut claims = Map::new();
    let mut put = |claim: &str, value: Value| {
        if claims.insert(claim.to_owned(), value).is_some() {
            return Err(MintError::ClaimClash(claim.to_owned()));
        }
        Ok(())
    };
    put("iat", now.into())?;
    put("exp", now.saturating_add(ttl.as_secs()).into())?;
    put(&cfg.user_claim, sub.into())?;
    if admin {
        put(&cfg.admin_claim, cfg.admin_value.as_str().into())?;
    }
    if let Some(email) = email {
        put("email", email.into())?;
    }
    if let Some(name) = name {
        put("name", name.into())?;
    }
    if let Some(iss) = &cfg.issuer {
        put("iss", iss.as_str().into())?;
    }
    if let Some(aud) = &cfg.audience {
        put("aud", aud.as_str().into())?;
    }
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|_| MintError::Sign)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use serde_json::json;

    use super::*;

    const SECRET: &str = "unit-test-secret-0123456789abcdef";
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/keys/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/keys/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/keys/ec_public.pem");
    /// A fixed "now" for every test that does not move the clock.
    const NOW: u64 = 1_800_000_000;

    fn auth(algorithms: &[JwtAlgorithm]) -> AuthConfig {
        AuthConfig {
            algorithms: algorithms.to_vec(),
            ..AuthConfig::default()
        }
    }

    fn verifier_for(cfg: &AuthConfig) -> Verifier {
        let pem = cfg.algorithms.iter().find_map(|a| match a {
            JwtAlgorithm::HS256 => None,
            JwtAlgorithm::RS256 => Some(RSA_PUBLIC),
            JwtAlgorithm::ES256 => Some(EC_PUBLIC),
        });
        Verifier::new(cfg, Some(&Secret::new(SECRET)), pem)
            .unwrap()
            .with_clock(|| NOW)
    }

    fn hs_verifier() -> Verifier {
        verifier_for(&auth(&[JwtAlgorithm::HS256]))
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn claims() -> Value {
        json!({"sub": "u-1", "exp": NOW + 600, "iat": NOW, "email": "a@example.com", "name": "Ann"})
    }

    fn with(mut base: Value, patch: Value) -> Value {
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    }

    fn b64json(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

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

    // --- the cache ---

    fn moving_clock(v: Verifier) -> (Verifier, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(NOW));
        let clock = Arc::clone(&now);
        (v.with_clock(move || clock.load(Ordering::Relaxed)), now)
    }

    #[test]
    fn a_cached_token_returns_the_same_caller() {
        let v = hs_verifier();
        let token = hs(&with(claims(), json!({"role": "admin"})));
        let first = v.verify(&token).unwrap();
        assert_eq!(v.cached_tokens(), 1);
        let second = v.verify(&token).unwrap();
        assert_eq!(first, second);
        assert_eq!(v.cached_tokens(), 1);
    }

    #[test]
    fn a_cached_token_is_refused_once_expired() {
        let (v, now) = moving_clock(verifier_for(&AuthConfig {
            leeway_secs: 0,
            ..auth(&[JwtAlgorithm::HS256])
        }));
        let token = hs(&with(claims(), json!({"exp": NOW + 60})));
        assert!(v.verify(&token).is_ok());
        assert_eq!(v.cached_tokens(), 1);
        now.store(NOW + 59, Ordering::Relaxed);
        assert!(v.verify(&token).is_ok());
        now.store(NOW + 61, Ordering::Relaxed);
        assert_eq!(v.verify(&token), Err(AuthError::Expired));
        assert_eq!(v.cached_tokens(), 0);
    }

    #[test]
    fn the_cache_is_never_served_past_exp_even_within_leeway() {
        let (v, now) = moving_clock(hs_verifier());
        let token = hs(&with(claims(), json!({"exp": NOW + 60})));
        assert!(v.verify(&token).is_ok());
        now.store(NOW + 60, Ordering::Relaxed);
        assert!(v.cache.get(&token, NOW + 60).is_none());
        // Within leeway the full check still accepts it, without caching it again.
        assert!(v.verify(&token).is_ok());
        assert_eq!(v.cached_tokens(), 0);
    }

    #[test]
    fn a_forgery_sharing_a_cached_signature_is_verified_in_full() {
        let v = hs_verifier();
        let token = hs(&claims());
        assert!(v.verify(&token).is_ok());
        let (_, signature) = token.rsplit_once('.').unwrap();
        let header = b64json(&json!({"alg": "HS256", "typ": "JWT"}));
        let forged = format!(
            "{header}.{}.{signature}",
            b64json(&with(claims(), json!({"role": "admin"})))
        );
        assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
        assert!(!v.verify(&token).unwrap().is_admin);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let v = hs_verifier().with_cache_capacity(32);
        for i in 0..1_000 {
            assert!(
                v.verify(&hs(&with(claims(), json!({"sub": format!("u-{i}")}))))
                    .is_ok()
            );
        }
        assert!(v.cached_tokens() <= 32, "{} cached", v.cached_tokens());
        assert!(v.cached_tokens() > 0);
    }

    #[test]
    fn a_zero_capacity_disables_the_cache() {
        let v = hs_verifier().with_cache_capacity(0);
        assert!(v.verify(&hs(&claims())).is_ok());
        assert_eq!(v.cached_tokens(), 0);
    }

    #[test]
    fn constant_time_eq_compares_whole_inputs() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    // --- building the verifier ---

    #[test]
    fn verifier_new_names_the_key_at_fault() {
        let err = |cfg: &AuthConfig, secret: Option<&Secret>, pem: Option<&[u8]>| {
            Verifier::new(cfg, secret, pem).unwrap_err()
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

    // --- minting ---

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let cfg = AuthConfig {
            issuer: Some("iss-1".into()),
            audience: Some("aud-1".into()),
            ..AuthConfig::default()
        };
        let token = mint(
            &Secret::new(SECRET),
            &cfg,
            "u-7",
            true,
            Duration::from_secs(3600),
            Some("u7@example.com"),
            Some("Ursula"),
        )
        .unwrap();
        let v = Verifier::new(&cfg, Some(&Secret::new(SECRET)), None).unwrap();
        let caller = v.verify(&token).unwrap();
        assert_eq!(&*caller.user_id, "u-7");
        assert!(caller.is_admin);
        assert_eq!(caller.email.as_deref(), Some("u7@example.com"));
        assert_eq!(caller.name.as_deref(), Some("Ursula"));
        let claims: Value =
            serde_json::from_slice(&b64(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 3600);
        assert_eq!(claims["iss"], "iss-1");
        assert_eq!(claims["aud"], "aud-1");
    }

    #[test]
    fn a_minted_token_without_admin_has_no_admin_claim() {
        let token = mint(
            &Secret::new(SECRET),
            &AuthConfig::default(),
            "u",
            false,
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        let claims: Value =
            serde_json::from_slice(&b64(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert!(claims.get("role").is_none());
    }

    #[test]
    fn mint_refuses_bad_requests() {
        let s = Secret::new(SECRET);
        let d = AuthConfig::default();
        let hour = Duration::from_secs(3600);
        assert!(matches!(
            mint(&s, &d, " ", false, hour, None, None),
            Err(MintError::EmptySubject)
        ));
        assert!(matches!(
            mint(&s, &d, "u", false, Duration::from_millis(500), None, None),
            Err(MintError::BadTtl)
        ));
        let clash = AuthConfig {
            admin_claim: "sub".into(),
            ..AuthConfig::default()
        };
        assert!(
            matches!(mint(&s, &clash, "u", true, hour, None, None), Err(MintError::ClaimClash(c)) if c == "sub")
        );
    }

    // --- finding the credential ---

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_credential_comes_from_a_bearer_authorization_header() {
        for value in [
            "Bearer t.o.k",
            "bearer t.o.k",
            "BEARER   t.o.k ",
            "Bearer\tt.o.k",
        ] {
            assert_eq!(
                credential(&headers(&[("authorization", value)]), None).as_deref(),
                Some("t.o.k"),
                "{value:?}"
            );
        }
        assert_eq!(
            credential(&headers(&[("authorization", "Basic dXNlcjpwYXNz")]), None),
            None
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer ")]), None),
            None
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearertok")]), None),
            None
        );
    }

    #[test]
    fn the_credential_comes_from_x_goog_api_key() {
        assert_eq!(
            credential(&headers(&[("x-goog-api-key", "g.o.o")]), None).as_deref(),
            Some("g.o.o")
        );
        assert_eq!(credential(&headers(&[("x-goog-api-key", "")]), None), None);
    }

    #[test]
    fn the_credential_comes_from_the_key_query_parameter() {
        let h = HeaderMap::new();
        assert_eq!(credential(&h, Some("key=q.u.e")).as_deref(), Some("q.u.e"));
        assert_eq!(
            credential(&h, Some("alt=sse&key=q.u.e")).as_deref(),
            Some("q.u.e")
        );
        assert_eq!(
            credential(&h, Some("key=q%2Eu%2ee")).as_deref(),
            Some("q.u.e")
        );
        assert_eq!(
            credential(&h, Some("%6Bey=q.u.e")).as_deref(),
            Some("q.u.e")
        );
        assert_eq!(
            credential(&h, Some("key=&key=second")).as_deref(),
            Some("second")
        );
        assert_eq!(credential(&h, Some("keys=x&akey=y&key")), None);
        assert_eq!(credential(&h, Some("key=%FF")), None);
        assert_eq!(credential(&h, None), None);
        assert!(matches!(
            credential(&h, Some("key=plain")),
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn the_authorization_header_wins_over_the_others() {
        let h = headers(&[("x-goog-api-key", "goog"), ("authorization", "Bearer bear")]);
        assert_eq!(credential(&h, Some("key=query")).as_deref(), Some("bear"));
        let h = headers(&[("x-goog-api-key", "goog"), ("authorization", "Basic abc")]);
        assert_eq!(credential(&h, Some("key=query")).as_deref(), Some("goog"));
    }

    #[test]
    fn strip_key_param_removes_every_key_and_keeps_the_rest_byte_for_byte() {
        let cases: &[(&str, Option<&str>)] = &[
            ("key=abc", Some("")),
            ("key=abc&alt=sse", Some("alt=sse")),
            ("alt=sse&key=abc", Some("alt=sse")),
            ("a=1&key=x&b=%20+2&key=y", Some("a=1&b=%20+2")),
            (
                "$alt=json;enum-encoding=int&key=t",
                Some("$alt=json;enum-encoding=int"),
            ),
            ("%6Bey=t&alt=sse", Some("alt=sse")),
            ("key&alt=sse", Some("alt=sse")),
            ("$alt=json;enum-encoding=int", None),
            ("keys=1&monkey=2&KEY=3", None),
            ("", None),
        ];
        for (query, expected) in cases {
            assert_eq!(strip_key_param(query).as_deref(), *expected, "{query:?}");
        }
    }

    #[test]
    fn strip_credential_headers_removes_every_credential_header() {
        let mut h = headers(&[
            ("authorization", "Bearer a"),
            ("x-goog-api-key", "b"),
            ("proxy-authorization", "Basic c"),
            ("x-api-key", "d"),
            ("api-key", "e"),
            ("cookie", "session=f"),
            ("accept", "*/*"),
        ]);
        strip_credential_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }
}
