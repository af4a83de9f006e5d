//! `auth.jwks_url`: the login provider's signing keys, read from its JWK Set document (RFC 7517)
//! and kept fresh in the background, so that no call ever waits on the network for a key
//! Tollgate already knows.
//!
//! ```text
//! start   fetch (≤ 1 MiB, ≤ 10 s) → usable keys → KeySet ──► ArcSwap ◄── Verifier (lock-free read)
//!         └ unreachable, not a JWK Set, no usable key: start-up fails naming auth.jwks_url
//! refresh task (one per key source, ends when the source is dropped):
//!         · after the answer's Cache-Control max-age, clamped to
//!           [auth.jwks_refresh_min_secs, 24 h]; 1 h without one
//!         · at once when a token names a kid the set does not hold: at most one such refresh
//!           per 10 s; calls carrying an unknown kid wait for it (≤ 2 s, one fetch for all of
//!           them), and while it is rate-limited they are refused at once
//!         · a failed refresh keeps the keys in use, is logged and retried after 5 s, 10 s, …
//!           up to 5 min
//! ```
//!
//! **Usable keys.** A key is used when its `use` is absent or `sig` (and its `key_ops`, if any,
//! hold `verify`), it is an RSA key of 2048 to 8192 bits or a P-256 EC key, its `alg` is absent
//! or the one its type implies (RS256, ES256), and that algorithm is in `auth.algorithms`. Any
//! other key (encryption keys, P-384, Ed25519, symmetric keys) is skipped; a document with no
//! usable key is a failed fetch. The algorithm of a token is still the configuration's: a key
//! only ever verifies the one algorithm it was taken for.
//!
//! **Removed keys.** Each key gets an id when it first appears, kept by later refreshes while
//! the key (its kid, algorithm and material) is unchanged. The cache of verified tokens
//! remembers which key verified a token and serves it only while the current set still holds
//! that key: from the refresh that removes a key on, its tokens are verified again, and refused.
//!
//! Fetches go through a client of their own: rustls (aws-lc-rs) with the public roots plus
//! `server.upstream_ca_file`, HTTP/1.1 or HTTP/2, redirects not followed. Nothing here logs a
//! token, and the URL is shown without its query.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use parking_lot::Mutex;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::settings::JwtAlgorithm;

/// Largest JWK Set document read (bytes); a larger answer is a failed fetch.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most usable keys kept from one document (a login provider publishes a handful).
pub const MAX_KEYS: usize = 32;
/// Time allowed for one fetch: connecting, the answer's head and its whole body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to open the connection (and TLS), within [`FETCH_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The refresh interval when the answer has no `Cache-Control: max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3_600);
/// The longest refresh interval, whatever `max-age` says.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(86_400);
/// At most one refresh for an unknown kid per this interval: a flood of tokens naming made-up
/// kids costs the login provider one fetch per interval.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
/// The longest a call carrying an unknown kid waits for the refresh it asked for.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(2);
/// The first retry after a failed refresh; each failure in a row doubles it, up to
/// [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A validated `auth.jwks_url`: `https://`, or `http://` to a loopback host.
#[derive(Clone, PartialEq, Eq)]
pub struct JwksUrl {
    uri: Uri,
    /// Scheme, host and path: what logs and errors show (never the query).
    shown: String,
}

impl fmt::Debug for JwksUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl JwksUrl {
    /// Check `url`: an absolute `https://` URL, or `http://` whose host is a loopback address
    /// (127.0.0.0/8, `::1`) or `localhost` — for a sidecar on the same machine. The error says
    /// what is wrong, for the message naming `auth.jwks_url`.
    pub fn parse(url: &str) -> Result<JwksUrl, String> {
        const SCHEMES: &str =
            "needs https:// (or http:// to a loopback host: 127.0.0.0/8, ::1, localhost)";
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("not an absolute URL ({e}): {SCHEMES}"))?;
        let authority = uri.authority().ok_or(SCHEMES)?.clone();
        if authority.as_str().contains('@') {
            return Err("must not carry a user name or password".into());
        }
        let host = authority.host();
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            Some("http") => {
                return Err(format!(
                    "plain http:// is accepted only to a loopback host (127.0.0.0/8, ::1, localhost), not to {host}: the keys that decide who may call would travel unprotected; use https://"
                ));
            }
            _ => return Err(SCHEMES.into()),
        }
        let scheme = uri.scheme_str().unwrap_or("https");
        let query = if uri.query().is_some() { "?…" } else { "" };
        let shown = format!("{scheme}://{authority}{}{query}", uri.path());
        Ok(JwksUrl { uri, shown })
    }
}

/// Whether `host` (as a URL writes it: IPv6 in brackets) is this machine's loopback.
fn is_loopback(host: &str) -> bool {
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where the keys come from and which of them are used: one key source per value. A reload
/// that keeps them keeps the running source (its keys and its refresh task).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksSettings {
    pub url: JwksUrl,
    /// RS256 is in `auth.algorithms`: RSA keys are used.
    pub rs256: bool,
    /// ES256 is in `auth.algorithms`: P-256 keys are used.
    pub es256: bool,
    /// `auth.jwks_refresh_min_secs`.
    pub refresh_min: Duration,
}

impl JwksSettings {
    /// The settings for `url` under `algorithms`; an error when neither RS256 nor ES256 is
    /// accepted (a JWK Set holds no key for HS256 that Tollgate would use).
    pub fn new(
        url: JwksUrl,
        algorithms: &[JwtAlgorithm],
        refresh_min: Duration,
    ) -> Result<JwksSettings, &'static str> {
        let rs256 = algorithms.contains(&JwtAlgorithm::RS256);
        let es256 = algorithms.contains(&JwtAlgorithm::ES256);
        if !rs256 && !es256 {
            return Err(
                "the keys of a JWK Set are for RS256 or ES256: add one of them to auth.algorithms",
            );
        }
        Ok(JwksSettings {
            url,
            rs256,
            es256,
            refresh_min,
        })
    }

    fn accepts(&self, alg: JwtAlgorithm) -> bool {
        match alg {
            JwtAlgorithm::RS256 => self.rs256,
            JwtAlgorithm::ES256 => self.es256,
            JwtAlgorithm::HS256 => false,
        }
    }

    /// "RS256", "ES256" or "RS256/ES256".
    fn algorithms(&self) -> &'static str {
        match (self.rs256, self.es256) {
            (true, true) => "RS256/ES256",
            (true, false) => "RS256",
            _ => "ES256",
        }
    }
}

/// Why the keys could not be fetched or used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksProblem {
    /// The TLS client could not be set up.
    Client(String),
    /// No connection, or it broke (the causes, outermost first).
    Unreachable(String),
    /// No complete answer within [`FETCH_TIMEOUT`].
    Timeout,
    /// An answer other than 200.
    Status(u16),
    /// An answer larger than [`MAX_JWKS_BYTES`].
    TooLarge,
    /// Not a JSON object with a `keys` array.
    NotAJwkSet(String),
    /// A JWK Set without any key Tollgate may use (`keys` keys were in it).
    NoUsableKey {
        keys: usize,
        algorithms: &'static str,
    },
}

impl fmt::Display for JwksProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksProblem::Client(e) => write!(f, "cannot set up the TLS client: {e}"),
            JwksProblem::Unreachable(e) => write!(f, "cannot fetch it: {e}"),
            JwksProblem::Timeout => {
                write!(f, "no complete answer within {} s", FETCH_TIMEOUT.as_secs())
            }
            JwksProblem::Status(status) => write!(
                f,
                "answered HTTP {status} instead of 200 with the key set (redirects are not followed)"
            ),
            JwksProblem::TooLarge => write!(
                f,
                "the answer is larger than {MAX_JWKS_BYTES} bytes, which no key set needs"
            ),
            JwksProblem::NotAJwkSet(e) => write!(
                f,
                "the answer is not a JWK Set (a JSON object with a \"keys\" array): {e}"
            ),
            JwksProblem::NoUsableKey { keys, algorithms } => write!(
                f,
                "the key set holds no key usable for {algorithms} ({keys} keys in it; a key is used when it is RSA (2048-8192 bits) for RS256 or P-256 EC for ES256, with that alg or none, and use \"sig\" or none)"
            ),
        }
    }
}

/// The key source could not be used: `auth.jwks_url: URL: problem`. Never carries a token or
/// the URL's query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("auth.jwks_url: {url}: {problem}")]
pub struct JwksError {
    pub url: String,
    pub problem: JwksProblem,
}

/// How one fetch of the key set ended, for `tollgate_jwks_refreshes_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshResult {
    /// Usable keys fetched and in use.
    Ok,
    /// Nothing usable came; the keys in use stay.
    Error,
}

impl RefreshResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Ok => "ok",
            RefreshResult::Error => "error",
        }
    }
}

/// Told of every fetch of the key set (the gateway's metrics).
pub trait RefreshObserver: Send + Sync {
    fn jwks_refreshed(&self, result: RefreshResult);
}

/// One usable key of the set.
pub(super) struct JwkKey {
    /// Stable across refreshes while the key is unchanged (see the module doc).
    pub(super) id: u64,
    pub(super) kid: Option<Box<str>>,
    pub(super) alg: JwtAlgorithm,
    pub(super) key: DecodingKey,
    /// kid, algorithm and the public material: what makes two fetches' keys the same key.
    identity: Box<str>,
}

/// The usable keys of the last good fetch.
#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<Arc<JwkKey>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.describe()).finish()
    }
}

impl KeySet {
    /// The key named `kid` for `alg`.
    pub(super) fn with_kid(&self, kid: &str, alg: JwtAlgorithm) -> Option<&JwkKey> {
        self.keys
            .iter()
            .map(Arc::as_ref)
            .find(|k| k.alg == alg && k.kid.as_deref() == Some(kid))
    }

    /// Every key for `alg`, for a token that names no kid.
    pub(super) fn for_alg(&self, alg: JwtAlgorithm) -> impl Iterator<Item = &JwkKey> {
        self.keys
            .iter()
            .map(Arc::as_ref)
            .filter(move |k| k.alg == alg)
    }

    /// Whether the key with this id is still in the set.
    pub(super) fn holds(&self, id: u64) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// `kid (ALG)` of each key, for the log and `check-config`.
    fn describe(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{} ({:?})", k.kid.as_deref().unwrap_or("no kid"), k.alg))
            .collect()
    }
}

/// Key ids, unique in the process.
static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWK Set document. Keys that were in `previous` keep their id.
fn parse(body: &[u8], settings: &JwksSettings, previous: &KeySet) -> Result<KeySet, JwksProblem> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| JwksProblem::NotAJwkSet(e.to_string()))?;
    let total = doc.keys.len();
    let mut keys: Vec<Arc<JwkKey>> = Vec::new();
    for value in doc.keys {
        if keys.len() == MAX_KEYS {
            break;
        }
        let Some((kid, alg, key, identity)) = usable(value, settings) else {
            continue;
        };
        if keys.iter().any(|k| k.identity == identity) {
            continue;
        }
        let known = previous.keys.iter().find(|k| k.identity == identity);
        keys.push(match known {
            Some(k) => Arc::clone(k),
            None => Arc::new(JwkKey {
                id: NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed),
                kid: kid.map(String::into_boxed_str),
                alg,
                key,
                identity,
            }),
        });
    }
    if keys.is_empty() {
        return Err(JwksProblem::NoUsableKey {
            keys: total,
            algorithms: settings.algorithms(),
        });
    }
    Ok(KeySet { keys })
}

type Usable = (Option<String>, JwtAlgorithm, DecodingKey, Box<str>);

/// One key of the document, if Tollgate may use it (see the module doc).
fn usable(value: serde_json::Value, settings: &JwksSettings) -> Option<Usable> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return None;
    }
    let (alg, material) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD.decode(&p.n).ok()?;
            let e = URL_SAFE_NO_PAD.decode(&p.e).ok()?;
            let n_len = n.iter().skip_while(|b| **b == 0).count();
            let e_len = e.iter().skip_while(|b| **b == 0).count();
            // aws-lc verifies RS256 with 2048- to 8192-bit moduli only.
            if !(256..=1024).contains(&n_len) || !(1..=8).contains(&e_len) {
                return None;
            }
            (JwtAlgorithm::RS256, format!("{}.{}", p.n, p.e))
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            let x = URL_SAFE_NO_PAD.decode(&p.x).ok()?;
            let y = URL_SAFE_NO_PAD.decode(&p.y).ok()?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            (JwtAlgorithm::ES256, format!("{}.{}", p.x, p.y))
        }
        _ => return None,
    };
    let implied = match alg {
        JwtAlgorithm::RS256 => KeyAlgorithm::RS256,
        JwtAlgorithm::ES256 => KeyAlgorithm::ES256,
        JwtAlgorithm::HS256 => KeyAlgorithm::HS256,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != implied) || !settings.accepts(alg) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let kid = jwk.common.key_id;
    let identity = format!("{}|{alg:?}|{material}", kid.as_deref().unwrap_or("")).into();
    Some((kid, alg, key, identity))
}

/// The `max-age` of a `Cache-Control` answer header; `no-cache` and `no-store` count as 0.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            let name = name.trim();
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Ok(secs) = arg.trim().trim_matches('"').parse::<u64>()
            {
                found = Some(Duration::from_secs(secs));
            }
        }
    }
    found
}

type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The client of the fetches: the public roots plus `roots`, host names always verified.
fn fetch_client(roots: &[CertificateDer<'static>]) -> Result<FetchClient, JwksProblem> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut store = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in roots {
        store
            .add(cert.clone())
            .map_err(|e| JwksProblem::Client(e.to_string()))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksProblem::Client(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}

/// An error and its causes, outermost first (`client error (Connect): tcp connect error: …`);
/// `telemetry::error_chain` for the modules above `auth`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        cur = cause.source();
    }
    out
}

/// GET the document: its body (≤ [`MAX_JWKS_BYTES`]) and its `max-age`.
async fn fetch(
    client: &FetchClient,
    url: &JwksUrl,
) -> Result<(Bytes, Option<Duration>), JwksProblem> {
    let get = async {
        let request = http::Request::get(url.uri.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(
                header::USER_AGENT,
                concat!("tollgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| JwksProblem::Unreachable(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| JwksProblem::Unreachable(chain(&e)))?;
        if response.status() != StatusCode::OK {
            return Err(JwksProblem::Status(response.status().as_u16()));
        }
        let max_age = max_age(response.headers());
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(JwksProblem::TooLarge);
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    JwksProblem::TooLarge
                } else {
                    JwksProblem::Unreachable(chain(&*e))
                }
            })?
            .to_bytes();
        Ok((body, max_age))
    };
    tokio::time::timeout(FETCH_TIMEOUT, get)
        .await
        .map_err(|_| JwksProblem::Timeout)?
}

/// Whether a refresh may start for an unknown kid, and what the caller should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// A refresh was asked for now.
    Started,
    /// A refresh is already under way (or asked for): its result will do.
    Joined,
    /// One ran for an unknown kid less than [`UNKNOWN_KID_INTERVAL`] ago.
    RateLimited,
    /// The source was never started (no refresh task): nothing will come.
    NotRunning,
}

#[derive(Default)]
struct RefreshState {
    /// The refresh task runs.
    running: bool,
    /// A fetch is under way.
    in_flight: bool,
    /// A refresh was asked for and has not started yet.
    wanted: bool,
    /// When the last refresh for an unknown kid was asked for.
    last_unknown_kid: Option<Instant>,
}

/// The key source of `auth.jwks_url`: the current key set, and what its refresh task needs.
/// Built without I/O ([`Jwks::new`]); [`Jwks::start`] fetches the first set and starts the
/// task, which ends once the source is dropped.
pub struct Jwks {
    settings: JwksSettings,
    roots: Vec<CertificateDer<'static>>,
    keys: ArcSwap<KeySet>,
    state: Mutex<RefreshState>,
    /// Wakes the refresh task: a refresh was asked for, or the source is gone.
    wake: Arc<Notify>,
    /// Counts the fetches that ended; calls waiting for a refresh watch it.
    done: watch::Sender<u64>,
    observer: OnceLock<Arc<dyn RefreshObserver>>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.settings.url)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        // The task holds a weak reference: woken, it finds the source gone and ends.
        self.wake.notify_one();
    }
}

impl Jwks {
    /// A key source with no keys yet, trusting the public roots plus `roots` (the certificates
    /// of `server.upstream_ca_file`). No I/O.
    pub fn new(settings: JwksSettings, roots: Vec<CertificateDer<'static>>) -> Jwks {
        Jwks {
            settings,
            roots,
            keys: ArcSwap::from_pointee(KeySet::default()),
            state: Mutex::new(RefreshState::default()),
            wake: Arc::new(Notify::new()),
            done: watch::channel(0).0,
            observer: OnceLock::new(),
        }
    }

    /// What this source was built from.
    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// Whether `other` fetches the same document with the same trust and keeps the same keys
    /// of it: one can stand for the other.
    pub fn same_source(&self, other: &Jwks) -> bool {
        self.settings == other.settings && self.roots == other.roots
    }

    /// The usable keys held now.
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Use the usable keys of `document` as if fetched (unit tests of the verifier).
    #[cfg(test)]
    pub(super) fn set_document(&self, document: &[u8]) {
        let set = parse(document, &self.settings, &self.keys.load()).unwrap();
        self.keys.store(Arc::new(set));
    }

    /// The current key set (a lock-free read).
    pub(super) fn keys(&self) -> Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Fetch the first key set and start the refresh task; `observer` is told of every fetch.
    /// Fails, naming `auth.jwks_url`, when the document cannot be fetched or holds no usable
    /// key. Starting a started source does nothing. Returns the number of usable keys.
    pub async fn start(
        self: &Arc<Self>,
        observer: Option<Arc<dyn RefreshObserver>>,
    ) -> Result<usize, JwksError> {
        if let Some(observer) = observer {
            let _ = self.observer.set(observer);
        }
        if self.state.lock().running {
            return Ok(self.key_count());
        }
        let client = fetch_client(&self.roots).map_err(|p| self.error(p))?;
        let max_age = self.refresh(&client).await.map_err(|p| self.error(p))?;
        let next = Instant::now() + self.interval(max_age);
        self.state.lock().running = true;
        tokio::spawn(refresh_task(
            Arc::downgrade(self),
            Arc::clone(&self.wake),
            client,
            next,
        ));
        Ok(self.key_count())
    }

    /// Fetch the document once and describe its usable keys (`kid (ALG)`), without keeping
    /// them: `tollgate check-config`.
    pub async fn check(&self) -> Result<Vec<String>, JwksError> {
        let client = fetch_client(&self.roots).map_err(|p| self.error(p))?;
        let (body, _) = fetch(&client, &self.settings.url)
            .await
            .map_err(|p| self.error(p))?;
        let set = parse(&body, &self.settings, &KeySet::default()).map_err(|p| self.error(p))?;
        Ok(set.describe())
    }

    fn error(&self, problem: JwksProblem) -> JwksError {
        JwksError {
            url: self.settings.url.to_string(),
            problem,
        }
    }

    /// The time until the next scheduled refresh after an answer with `max_age`.
    fn interval(&self, max_age: Option<Duration>) -> Duration {
        let min = self.settings.refresh_min;
        max_age
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(min, MAX_MAX_AGE.max(min))
    }

    /// One fetch: on success the new set replaces the old one. Returns the answer's max-age.
    async fn refresh(&self, client: &FetchClient) -> Result<Option<Duration>, JwksProblem> {
        let result = async {
            let (body, max_age) = fetch(client, &self.settings.url).await?;
            let previous = self.keys.load_full();
            let set = parse(&body, &self.settings, &previous)?;
            let added = set.keys.iter().filter(|k| !previous.holds(k.id)).count();
            let removed = previous.keys.iter().filter(|k| !set.holds(k.id)).count();
            if added + removed > 0 {
                tracing::info!(
                    url = %self.settings.url,
                    keys = %set.describe().join(", "),
                    added,
                    removed,
                    "auth.jwks_url: signing keys updated"
                );
            } else {
                tracing::debug!(url = %self.settings.url, keys = set.len(), "auth.jwks_url: signing keys unchanged");
            }
            self.keys.store(Arc::new(set));
            Ok(max_age)
        }
        .await;
        if let Some(observer) = self.observer.get() {
            observer.jwks_refreshed(match result {
                Ok(_) => RefreshResult::Ok,
                Err(_) => RefreshResult::Error,
            });
        }
        result
    }

    /// A token named a kid the set does not hold: ask the task for a refresh, unless one ran
    /// for an unknown kid within [`UNKNOWN_KID_INTERVAL`]. Never waits.
    pub(super) fn ask_refresh(&self) -> Ask {
        let mut state = self.state.lock();
        if !state.running {
            return Ask::NotRunning;
        }
        if state.in_flight || state.wanted {
            return Ask::Joined;
        }
        let now = Instant::now();
        if state
            .last_unknown_kid
            .is_some_and(|at| now.duration_since(at) < UNKNOWN_KID_INTERVAL)
        {
            return Ask::RateLimited;
        }
        state.last_unknown_kid = Some(now);
        state.wanted = true;
        drop(state);
        self.wake.notify_one();
        Ask::Started
    }

    /// [`Jwks::ask_refresh`], then wait for that refresh to end, at most
    /// [`UNKNOWN_KID_WAIT`]. Every caller waits for the same fetch.
    pub(super) async fn refresh_for_unknown_kid(&self) {
        let mut done = self.done.subscribe();
        match self.ask_refresh() {
            Ask::Started | Ask::Joined => {
                let _ = tokio::time::timeout(UNKNOWN_KID_WAIT, done.changed()).await;
            }
            Ask::RateLimited | Ask::NotRunning => {}
        }
    }
}

/// The refresh task of one key source: sleeps until the next scheduled refresh or until a
/// refresh is asked for, fetches, and schedules the next one (after max-age, or with backoff
/// after a failure). Ends when the source is dropped.
async fn refresh_task(source: Weak<Jwks>, wake: Arc<Notify>, client: FetchClient, first: Instant) {
    let mut next = first;
    let mut failures: u32 = 0;
    loop {
        let asked = tokio::select! {
            () = tokio::time::sleep_until(next) => false,
            () = wake.notified() => true,
        };
        let Some(jwks) = source.upgrade() else { return };
        {
            let mut state = jwks.state.lock();
            if asked && !state.wanted {
                // A wake-up left over from a refresh that already ran.
                continue;
            }
            state.in_flight = true;
            state.wanted = false;
        }
        let result = jwks.refresh(&client).await;
        jwks.state.lock().in_flight = false;
        jwks.done.send_modify(|n| *n = n.wrapping_add(1));
        next = match result {
            Ok(max_age) => {
                failures = 0;
                Instant::now() + jwks.interval(max_age)
            }
            Err(problem) => {
                failures = failures.saturating_add(1);
                let retry = BACKOFF_FIRST
                    .saturating_mul(1 << failures.min(16).saturating_sub(1))
                    .min(BACKOFF_MAX);
                tracing::warn!(
                    url = %jwks.settings.url,
                    error = %problem,
                    failures,
                    retry_in_secs = retry.as_secs(),
                    keys_in_use = jwks.key_count(),
                    "auth.jwks_url: refreshing the signing keys failed; the keys fetched before stay in use"
                );
                Instant::now() + retry
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(algorithms: &[JwtAlgorithm]) -> JwksSettings {
        JwksSettings::new(
            JwksUrl::parse("https://login.example/jwks").unwrap(),
            algorithms,
            Duration::from_secs(60),
        )
        .unwrap()
    }

    /// The public components of the test RSA key (2048 bits).
    fn rsa_components() -> (String, String) {
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(crate::auth::testkit::RSA_PRIVATE).unwrap();
        let jwk = Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::RS256).unwrap();
        match jwk.algorithm {
            AlgorithmParameters::RSA(p) => (p.n, p.e),
            _ => unreachable!("an RSA key"),
        }
    }

    fn rsa(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let (n, e) = rsa_components();
        let mut key = serde_json::json!({"kty": "RSA", "kid": kid, "n": n, "e": e});
        for (k, v) in extra.as_object().unwrap() {
            key[k] = v.clone();
        }
        key
    }

    fn doc(keys: &[serde_json::Value]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn https_and_loopback_http_urls_are_accepted() {
        for url in [
            "https://login.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.8.7/jwks",
            "http://[::1]:9000/jwks",
            "http://localhost/jwks",
            "http://LOCALHOST:81/jwks",
        ] {
            assert!(JwksUrl::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn plain_http_to_another_host_is_refused_with_the_reason() {
        for url in [
            "http://login.example/jwks",
            "http://10.0.0.1/jwks",
            "http://[::ffff:127.0.0.1]/jwks",
            "http://localhost.example/jwks",
        ] {
            let e = JwksUrl::parse(url).unwrap_err();
            assert!(e.contains("only to a loopback host"), "{url}: {e}");
        }
        for url in ["ftp://login.example/jwks", "/jwks", "login.example/jwks"] {
            let e = JwksUrl::parse(url).unwrap_err();
            assert!(e.contains("https://"), "{url}: {e}");
        }
        let e = JwksUrl::parse("https://user:pw@login.example/jwks").unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }

    #[test]
    fn the_url_is_shown_without_its_query() {
        let url = JwksUrl::parse("https://login.example/jwks?token=abc").unwrap();
        assert_eq!(url.to_string(), "https://login.example/jwks?…");
        assert_eq!(format!("{url:?}"), "https://login.example/jwks?…");
    }

    #[test]
    fn settings_need_rs256_or_es256() {
        let url = JwksUrl::parse("https://login.example/jwks").unwrap();
        assert!(JwksSettings::new(url, &[JwtAlgorithm::HS256], Duration::from_secs(60)).is_err());
    }

    #[test]
    fn only_signature_keys_of_an_accepted_algorithm_are_used() {
        let body = doc(&[
            rsa("plain", serde_json::json!({})),
            rsa("sig", serde_json::json!({"use": "sig", "alg": "RS256"})),
            rsa("enc", serde_json::json!({"use": "enc"})),
            rsa("oaep", serde_json::json!({"alg": "RSA-OAEP"})),
            rsa("rs512", serde_json::json!({"alg": "RS512"})),
            rsa("ops-sign", serde_json::json!({"key_ops": ["sign"]})),
            rsa("ops-verify", serde_json::json!({"key_ops": ["verify"]})),
            rsa("short", serde_json::json!({"n": "AQAB"})),
            serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            serde_json::json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
            serde_json::json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "weird"}),
            serde_json::json!("not an object"),
        ]);
        let set = parse(&body, &settings(&[JwtAlgorithm::RS256]), &KeySet::default()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["plain", "sig", "ops-verify"]);
        // The same RSA keys are not usable when only ES256 is accepted.
        let e = parse(&body, &settings(&[JwtAlgorithm::ES256]), &KeySet::default()).unwrap_err();
        assert_eq!(
            e,
            JwksProblem::NoUsableKey {
                keys: 13,
                algorithms: "ES256"
            }
        );
    }

    #[test]
    fn a_document_that_is_no_jwk_set_is_refused() {
        for body in [&b"<html>"[..], b"{}", b"{\"keys\": {}}", b"[]"] {
            let e = parse(body, &settings(&[JwtAlgorithm::RS256]), &KeySet::default());
            assert!(matches!(e, Err(JwksProblem::NotAJwkSet(_))), "{body:?}");
        }
        let e = parse(
            b"{\"keys\": []}",
            &settings(&[JwtAlgorithm::RS256]),
            &KeySet::default(),
        );
        assert!(matches!(e, Err(JwksProblem::NoUsableKey { keys: 0, .. })));
    }

    #[test]
    fn a_key_keeps_its_id_across_refreshes_while_unchanged() {
        let s = settings(&[JwtAlgorithm::RS256]);
        let first = parse(
            &doc(&[rsa("a", serde_json::json!({}))]),
            &s,
            &KeySet::default(),
        )
        .unwrap();
        let id = first.keys[0].id;
        let second = parse(
            &doc(&[
                rsa("b", serde_json::json!({})),
                rsa("a", serde_json::json!({})),
            ]),
            &s,
            &first,
        )
        .unwrap();
        assert!(second.holds(id));
        assert_eq!(second.with_kid("a", JwtAlgorithm::RS256).unwrap().id, id);
        assert_ne!(second.with_kid("b", JwtAlgorithm::RS256).unwrap().id, id);
        let third = parse(&doc(&[rsa("b", serde_json::json!({}))]), &s, &second).unwrap();
        assert!(!third.holds(id));
    }

    #[test]
    fn at_most_max_keys_are_kept() {
        let keys: Vec<_> = (0..100)
            .map(|i| rsa(&format!("k{i}"), serde_json::json!({})))
            .collect();
        let set = parse(
            &doc(&keys),
            &settings(&[JwtAlgorithm::RS256]),
            &KeySet::default(),
        )
        .unwrap();
        assert_eq!(set.len(), MAX_KEYS);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CACHE_CONTROL, v.parse().unwrap());
            }
            h
        };
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(
            max_age(&headers(&["public, max-age=300"])),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            max_age(&headers(&["public", "Max-Age=\"20\""])),
            Some(Duration::from_secs(20))
        );
        assert_eq!(max_age(&headers(&["no-cache"])), Some(Duration::ZERO));
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
    }

    #[test]
    fn the_refresh_interval_is_clamped() {
        let jwks = Jwks::new(settings(&[JwtAlgorithm::RS256]), Vec::new());
        assert_eq!(jwks.interval(None), DEFAULT_MAX_AGE);
        assert_eq!(jwks.interval(Some(Duration::ZERO)), Duration::from_secs(60));
        assert_eq!(
            jwks.interval(Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
        assert_eq!(
            jwks.interval(Some(Duration::from_secs(10_000_000))),
            MAX_MAX_AGE
        );
    }

    #[test]
    fn an_unstarted_source_never_makes_a_caller_wait() {
        let jwks = Jwks::new(settings(&[JwtAlgorithm::RS256]), Vec::new());
        assert_eq!(jwks.ask_refresh(), Ask::NotRunning);
    }

    #[test]
    fn unknown_kid_refreshes_are_rate_limited_and_shared() {
        let jwks = Jwks::new(settings(&[JwtAlgorithm::RS256]), Vec::new());
        jwks.state.lock().running = true;
        assert_eq!(jwks.ask_refresh(), Ask::Started);
        // Asked for and not yet run: later callers join it.
        assert_eq!(jwks.ask_refresh(), Ask::Joined);
        {
            let mut state = jwks.state.lock();
            state.wanted = false;
            state.in_flight = true;
        }
        assert_eq!(jwks.ask_refresh(), Ask::Joined);
        jwks.state.lock().in_flight = false;
        // Done: the next unknown kid within the interval is refused at once.
        assert_eq!(jwks.ask_refresh(), Ask::RateLimited);
        jwks.state.lock().last_unknown_kid = Some(Instant::now() - UNKNOWN_KID_INTERVAL);
        assert_eq!(jwks.ask_refresh(), Ask::Started);
    }
}
