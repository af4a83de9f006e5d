//! Configuration: `gateway.toml` plus `TOLLGATE_SECTION__KEY` environment overrides (figment),
//! read in two stages. [`RawConfig`] is what the file says, with no I/O and every field
//! documented; [`Config`] is the validated form the gateway runs on: parsed addresses and URIs,
//! secrets loaded from the environment variables the file names, a built price table.
//!
//! Secrets never live in the file and never print: [`Secret`]'s `Debug` shows `***`, and
//! [`Config::masked`] is what `tollgate check-config` and the admin API show. Every error names
//! the key at fault (`server.listen`, `providers[0].upstream`), and where the value came from.
//!
//! This module reads the file and the environment and nothing else: it never binds a socket,
//! opens the store or logs (logging is set up from the configuration it returns).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub mod alerts;

pub use crate::auth::{AuthConfig, JwtAlgorithm};
use crate::auth::{Jwks, JwksSettings, JwksUrl, Verifier, VerifierError};
pub use crate::plan::{PlanConfig, Plans};
pub use crate::pricing::{MAX_COST_USD, usd_to_nano_usd};
use crate::pricing::{Price, PriceTable};
use crate::provider::ProviderKind;
pub use crate::secret::Secret;
pub use crate::tls::TlsConfig;
pub use alerts::{AlertRule, WebhookConfig};

/// The environment variable prefix for overrides: `TOLLGATE_SERVER__LISTEN=0.0.0.0:5002`.
pub const ENV_PREFIX: &str = "TOLLGATE_";

/// The environment variable naming the configuration file (the command line's `--config` wins).
/// It shares the override prefix, so the override provider skips it.
pub const CONFIG_PATH_ENV: &str = "TOLLGATE_CONFIG";

/// HS256 secrets shorter than this draw a warning (RFC 7518 §3.2 asks for a key as long as the
/// hash output).
const MIN_HS256_SECRET_BYTES: usize = 32;
/// Most clock skew `auth.leeway_secs` may tolerate.
const MAX_LEEWAY_SECS: u64 = 3_600;
/// Largest `auth.jwks_refresh_min_secs`: the key set is refreshed at least daily anyway.
const MAX_JWKS_REFRESH_MIN_SECS: u64 = 86_400;
/// Smallest `server.max_header_bytes`: hyper's HTTP/1 read buffer cannot be smaller.
const MIN_HEADER_BYTES: u32 = 8_192;

/// gateway.toml as written. Every key has a default, so an empty file is valid (but has no
/// providers).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// USD per million tokens, by model name (longest prefix match).
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// Alert rules ([`crate::alerts`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRule>,
    /// Where alerts are delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
    /// `[plans.NAME]`: limits and models per plan, chosen by the JWT's `auth.plan_claim`
    /// ([`crate::plan`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plans: BTreeMap<String, PlanConfig>,
}

/// `[server]`: the proxy listener and the edges of the request path.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the proxy listener.
    pub listen: SocketAddr,
    /// Largest request body accepted (bytes); larger → 413. Screenshots make requests big.
    pub max_request_bytes: u64,
    /// Largest request head accepted (bytes, HTTP/1 read buffer and HTTP/2 header list).
    pub max_header_bytes: u32,
    /// Most request headers accepted (HTTP/1).
    pub max_headers: u32,
    /// Most streams (calls) one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Time allowed to open a connection (and TLS) to the upstream; past it → 502.
    pub connect_timeout_ms: u64,
    /// Time allowed from sending the request to the upstream's response head; past it → 504.
    pub response_header_timeout_ms: u64,
    /// Longest silence allowed between two chunks of an answer; past it the call is cut.
    pub idle_timeout_ms: u64,
    /// Time allowed to receive a whole request body once its head is read; past it → 408.
    /// A client that trickles its body cannot hold a connection (and its user's slot) longer.
    pub request_body_timeout_ms: u64,
    /// Most calls in flight at once, all users together; past it a call is refused at once
    /// with 503 and `Retry-After` instead of queueing (memory and descriptors stay bounded).
    pub max_in_flight: usize,
    /// Most calls one user may have in flight at once, counted from the moment the caller is
    /// known (so bodies still being received count too); past it → 429. Guards the gateway;
    /// `limits.max_concurrent` (per user, overridable) is the product limit on admitted calls.
    pub max_in_flight_per_user: u32,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before they are cut.
    pub shutdown_grace_secs: u64,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout_secs: u64,
    /// A PEM file of certificate authorities trusted for HTTPS upstreams besides the public
    /// roots (a private gateway in front of the providers). Host names are checked all the same.
    pub upstream_ca_file: Option<PathBuf>,
    /// Most idle pooled connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// Threads that serve calls: 0 = one per CPU the process may run on, and the single-threaded
    /// runtime when that is one; 1 = a single-threaded runtime (the fastest choice when
    /// Tollgate is given one core).
    pub worker_threads: usize,
    /// Reload the configuration file, and the TLS certificate files, when they change (both are
    /// also reloaded on SIGHUP). A change to this key takes effect at the next start.
    pub watch_config: bool,
    /// `[server.tls]`: serve HTTPS on `listen` with this certificate. Unset = plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5002)),
            max_request_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            http2_max_concurrent_streams: 100,
            connect_timeout_ms: 5_000,
            response_header_timeout_ms: 300_000,
            idle_timeout_ms: 120_000,
            request_body_timeout_ms: 60_000,
            max_in_flight: 4_096,
            max_in_flight_per_user: 64,
            shutdown_grace_secs: 30,
            pool_idle_timeout_secs: 90,
            upstream_ca_file: None,
            pool_max_idle_per_host: 256,
            worker_threads: 0,
            watch_config: true,
            tls: None,
        }
    }
}

/// `[admin]`: the admin API and dashboard listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (loopback by default). A non-loopback address is refused
    /// unless an admin can sign in (an admin account, or admin JWTs).
    pub listen: SocketAddr,
    /// How long a dashboard sign-in lasts (seconds).
    pub session_ttl_secs: u64,
    /// Sign-in attempts allowed per client address and per account name, per minute.
    pub login_attempts_per_minute: u32,
    /// Host names the admin listener answers to besides IP literals, `localhost` and
    /// `*.localhost` (exact names, or `*.` + a suffix). Any other `Host` gets 421: a web page
    /// cannot reach the admin API through a name it made resolve to this machine.
    pub allowed_hosts: Vec<String>,
    /// `[admin.tls]`: serve the admin side over HTTPS with this certificate (the session cookie
    /// is then `Secure`). Unset = plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            session_ttl_secs: 12 * 3600,
            login_attempts_per_minute: 10,
            allowed_hosts: Vec::new(),
            tls: None,
        }
    }
}

// `[auth]` (`AuthConfig`, `JwtAlgorithm`) is defined by `auth`, which owns what it means; the
// part that reads the environment stays here.
impl AuthConfig {
    /// The HS256 secret from the variable `jwt_secret_env` names, read through `env`. The error
    /// names `auth.jwt_secret_env` and never carries the value.
    pub fn hs256_secret(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, ConfigError> {
        let name = env_name("auth.jwt_secret_env", &self.jwt_secret_env)?;
        let value = env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            invalid(
                "auth.jwt_secret_env",
                format!("environment variable {name} is not set"),
            )
        })?;
        Ok(Secret::new(value))
    }
}

/// `[limits]`: per-user defaults, each of which an operator may override per user (see
/// `quota`). A call is refused once the user's recorded usage plus what their in-flight calls
/// reserved has reached a limit.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Tokens (input + output) a user may spend per calendar day, unless overridden per user.
    /// 0 refuses every call.
    pub daily_tokens: u64,
    /// Tokens a user may spend per calendar month, unless overridden per user.
    pub monthly_tokens: u64,
    /// Calls a user may start per minute (at least 1; up to this many at once, then one every
    /// 60/n seconds).
    pub requests_per_minute: u32,
    /// IANA time zone of the day and month windows (and of the daily rollups).
    pub timezone: String,
    /// Optional budget per user and calendar day in USD, counting priced calls only. Unset = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_cost_usd: Option<f64>,
    /// Optional budget per user and calendar month in USD. Unset = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_cost_usd: Option<f64>,
    /// Optional cap on one user's calls in flight at once (at least 1). Unset = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Output tokens a call is assumed to produce, for its reservation, when the request sets no
    /// `max_tokens` / `maxOutputTokens` of its own.
    pub default_max_output_tokens: u64,
    /// Prompt tokens one inline image or audio part counts for in a call's reservation (a
    /// base64 screenshot is megabytes of text but a few thousand tokens at most).
    pub media_part_tokens: u64,
    /// The plan (`[plans.NAME]`) of a token without `auth.plan_claim`, or whose claim names no
    /// plan. Unset: such a token gets `[limits]` and every model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_plan: Option<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            daily_tokens: 100_000,
            monthly_tokens: 1_000_000,
            requests_per_minute: 60,
            timezone: "UTC".into(),
            daily_cost_usd: None,
            monthly_cost_usd: None,
            max_concurrent: None,
            default_max_output_tokens: 4_096,
            media_part_tokens: 1_000,
            default_plan: None,
        }
    }
}

impl LimitsConfig {
    /// `daily_cost_usd` in nano-USD (valid once [`Config::from_raw`] accepted it).
    pub fn daily_cost_nano_usd(&self) -> Option<u64> {
        self.daily_cost_usd.and_then(usd_to_nano_usd)
    }
    /// `monthly_cost_usd` in nano-USD.
    pub fn monthly_cost_nano_usd(&self) -> Option<u64> {
        self.monthly_cost_usd.and_then(usd_to_nano_usd)
    }
}

fn validate_limits(limits: &LimitsConfig) -> Result<(), ConfigError> {
    if limits.requests_per_minute == 0 {
        return Err(invalid(
            "limits.requests_per_minute",
            "must be at least 1 (block a user to stop all of their calls)",
        ));
    }
    if limits.max_concurrent == Some(0) {
        return Err(invalid(
            "limits.max_concurrent",
            "must be at least 1 when set (remove the key for no cap)",
        ));
    }
    for (key, value) in [
        ("limits.daily_cost_usd", limits.daily_cost_usd),
        ("limits.monthly_cost_usd", limits.monthly_cost_usd),
    ] {
        if let Some(usd) = value
            && usd_to_nano_usd(usd).is_none()
        {
            return Err(invalid(
                key,
                format!(
                    "must be an amount in USD between 0 and {MAX_COST_USD:e} (remove the key for no budget)"
                ),
            ));
        }
    }
    Ok(())
}

/// `[store]`: where usage rows go.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which database keeps the rows: the embedded SQLite file (`path`) or a PostgreSQL server
    /// several gateways share.
    pub backend: StoreBackend,
    /// SQLite database file; with `backend = "postgres"`, the call journal's directory is
    /// made beside it (`<path>-calls/`), on each gateway's own disk.
    pub path: PathBuf,
    /// The environment variable holding the PostgreSQL URL (never the file: it may hold a
    /// password).
    pub database_url_env: String,
    /// Connections to PostgreSQL for the admin side's reads and changes (the writer has one of
    /// its own).
    pub pool_size: usize,
    /// Longest a PostgreSQL statement may run before the server cancels it (ms).
    pub statement_timeout_ms: u64,
    /// This gateway's name in the shared database (`token_usage.gateway`); default: the host
    /// name and the listen port.
    pub replica_id: Option<String>,
    /// With PostgreSQL, how long a gateway's leases on its users' budgets count for the other
    /// gateways after its last renewal (ms): a gateway that dies frees its share of every
    /// budget within this long. Renewed every quarter of it.
    pub lease_ms: u64,
    /// Rows that may wait for the writer; a full queue drops rows (counted, logged).
    pub queue_capacity: usize,
    /// Most rows committed in one transaction.
    pub batch_max: usize,
    /// After the first row of a batch, how long the writer collects more before it commits
    /// (ms). Every commit costs an fsync, so fewer, larger transactions cost far less CPU; no
    /// call waits for it.
    pub commit_interval_ms: u64,
    /// The call journal: how a call's existence is kept before it is forwarded, so that a
    /// gateway killed mid-call still records it (at the next start) and counts it.
    pub journal: JournalMode,
    /// With PostgreSQL, what a gateway does with new calls while the database cannot be
    /// reached (calls already admitted finish either way, their rows waiting for it).
    pub when_unavailable: WhenUnavailable,
    /// Calls older than this many days are deleted (hourly, in small batches); their rollups —
    /// the dashboard's history and every total — stay. 0 keeps everything.
    pub retain_days: u32,
}

/// `store.when_unavailable`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnavailable {
    /// 503 in the provider's shape: no call is admitted that the database did not lease.
    #[default]
    Refuse,
    /// Admit out of what this gateway's leases still hold, and once per outage a local
    /// allowance per user: a sixteenth of each limit (at least four of the call's holds). Each
    /// gateway can so let a user past a limit by that much per outage.
    AdmitLocally,
}

/// `store.backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One file on this machine: the embedded default.
    #[default]
    Sqlite,
    /// A PostgreSQL server, shared by every gateway that names it.
    Postgres,
}

/// `store.journal`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalMode {
    /// Fsynced before the call is forwarded (one fsync covers every call that arrived
    /// meanwhile): no call is lost to a kill or a power cut. Every commit fsyncs.
    #[default]
    Durable,
    /// Handed to the operating system before the call is forwarded, without waiting for the
    /// disk: no call is lost when the process is killed; a power cut can lose the last
    /// moments. Commits do not fsync (SQLite `synchronous = NORMAL`).
    Process,
    /// No journal: calls in flight when the process dies have no row.
    Off,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("tollgate.db"),
            database_url_env: "DATABASE_URL".into(),
            pool_size: 8,
            statement_timeout_ms: 5_000,
            replica_id: None,
            lease_ms: 20_000,
            queue_capacity: 65_536,
            batch_max: 4_096,
            commit_interval_ms: 50,
            journal: JournalMode::Durable,
            when_unavailable: WhenUnavailable::Refuse,
            retain_days: 0,
        }
    }
}

/// `[log]`: what the gateway writes to stderr.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `tollgate=debug`); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One `[[providers]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name stored in `token_usage.provider`.
    pub name: String,
    /// The API it speaks: `openai` or `gemini`.
    pub kind: ProviderKind,
    /// Path prefix on the proxy listener, e.g. `/openai`.
    pub prefix: String,
    /// Base URL of the upstream (`https://…`, or `http://…` for a local upstream).
    pub upstream: String,
    /// Environment variable holding the provider key.
    pub api_key_env: String,
    /// What to do with a call to an endpoint Tollgate has no usage table for (`"forward"`, the
    /// default, or `"refuse"`).
    #[serde(default)]
    pub unknown_endpoints: UnknownEndpoints,
}

/// `providers[].unknown_endpoints`: what happens to a call whose endpoint is not in Tollgate's
/// table (OpenAI `POST /v1/chat/completions`, `/v1/responses`, `/v1/embeddings`,
/// `/v1/completions`; Gemini `POST …:generateContent`, `:streamGenerateContent`,
/// `:countTokens`, `:embedContent`, `:batchEmbedContents`) — any other path or method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownEndpoints {
    /// Forward it; a successful answer that carries a usage report is metered by it, anything
    /// else is recorded with no usage.
    #[default]
    Forward,
    /// Refuse it with 404 in the provider's error shape, before forwarding (one row, outcome
    /// `refused_unknown_endpoint`).
    Refuse,
}

/// A provider ready to route to.
#[derive(Clone, Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// Prefix without a trailing slash.
    pub prefix: String,
    /// Upstream scheme + authority, e.g. `https://api.openai.com`.
    pub upstream_scheme: http::uri::Scheme,
    pub upstream_authority: http::uri::Authority,
    /// Upstream base path without a trailing slash (usually empty).
    pub upstream_base_path: String,
    pub api_key: Secret,
    /// `unknown_endpoints`: forward or refuse endpoints not in the table.
    pub unknown_endpoints: UnknownEndpoints,
}

/// The validated configuration the gateway runs on.
#[derive(Clone, Debug)]
pub struct Config {
    pub raw: RawConfig,
    pub providers: Vec<Provider>,
    pub jwt_secret: Option<Secret>,
    pub jwt_public_key_pem: Option<Vec<u8>>,
    /// The end-user JWT verifier built from `[auth]` and the two above, with its cache of
    /// verified tokens; the proxy and the admin side both use this one. A reload builds a new
    /// `Config`, and so a new verifier whose cache starts empty. With `auth.jwks_url` it holds
    /// the key set ([`Config::jwks`]), empty until the gateway starts it; a reload that keeps
    /// the key set's settings keeps the running one ([`Config::adopt_jwks`]).
    pub verifier: Arc<Verifier>,
    /// The certificates of `server.upstream_ca_file`, trusted besides the public roots.
    pub upstream_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub timezone: jiff::tz::TimeZone,
    pub prices: PriceTable,
    /// The PostgreSQL URL from `store.database_url_env`, with `store.backend = "postgres"`.
    pub database_url: Option<Secret>,
    /// The file this configuration was read from ([`Config::load`]); `None` when it was built
    /// from a [`RawConfig`] in memory. Hot reload reads this file again.
    pub source: Option<PathBuf>,
    /// The signing secret of each `[[webhooks]]` (same order), from its `secret_env`.
    pub webhook_secrets: Vec<Option<Secret>>,
    /// The URL of each `[[webhooks]]` (same order), from `url` or `url_env`.
    pub webhook_urls: Vec<Secret>,
    /// `[plans.NAME]` compiled, with `limits.default_plan`.
    pub plans: Arc<Plans>,
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// A verifier refused `[auth]`: the same key and message as any other invalid setting.
impl From<VerifierError> for ConfigError {
    fn from(e: VerifierError) -> ConfigError {
        invalid(e.key(), e.problem())
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl RawConfig {
    /// This configuration as it may be shown (check-config, the admin API, reload diffs): the
    /// same, but each webhook's `url` cut to its scheme and host.
    pub fn shown(&self) -> RawConfig {
        let mut shown = self.clone();
        for w in &mut shown.webhooks {
            if let Some(url) = &mut w.url {
                *url = crate::config::alerts::shown_url(url);
            }
        }
        shown
    }

    /// Read `path` (which must exist) and the `TOLLGATE_*` environment overrides.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Parse(format!(
                "configuration file {} not found",
                path.display()
            )));
        }
        Self::from_figment(
            Figment::new()
                .merge(Toml::file(path))
                .merge(env_overrides()),
        )
    }

    /// Extract from any figment (tests build one from strings).
    pub fn from_figment(figment: Figment) -> Result<RawConfig, ConfigError> {
        figment.extract().map_err(|e| {
            ConfigError::Parse(
                e.into_iter()
                    .map(|e| describe(&e))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }
}

/// `TOLLGATE_SECTION__KEY` overrides. Only names with a `__` are configuration: every key lives
/// in a section, and other `TOLLGATE_*` variables (`TOLLGATE_CONFIG`, which names the file, or a
/// deployment's own `TOLLGATE_BIN`, `TOLLGATE_VERSION`…) must not make the file invalid.
pub fn env_overrides() -> Env {
    Env::prefixed(ENV_PREFIX)
        .ignore(&[&CONFIG_PATH_ENV[ENV_PREFIX.len()..]])
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

/// One figment error as `` `key.path`: what is wrong (where it came from) ``.
fn describe(err: &figment::Error) -> String {
    use figment::error::Kind;

    let mut path: Vec<&str> = err.path.iter().map(String::as_str).collect();
    let message = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(&field.as_str()) {
                path.push(field);
            }
            format!("unknown key; expected {}", figment::error::OneOf(expected))
        }
        Kind::MissingField(field) => {
            if path.last() != Some(&field.as_ref()) {
                path.push(field);
            }
            "missing (this key has no default)".to_string()
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value `{found}`; expected {}",
                figment::error::OneOf(expected)
            )
        }
        kind => kind.to_string(),
    };
    let origin = match &err.metadata {
        Some(md) if md.name.contains("environment") => {
            format!(
                " (from environment variable {ENV_PREFIX}{})",
                path.join("__").to_ascii_uppercase()
            )
        }
        Some(md) => match &md.source {
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            Some(source) => format!(" (in {source})"),
            None => String::new(),
        },
        None => String::new(),
    };
    if path.is_empty() {
        format!("{message}{origin}")
    } else {
        format!("`{}`: {message}{origin}", key_path(&path))
    }
}

/// `["providers", "0", "kind"]` → `providers[0].kind`.
fn key_path(path: &[&str]) -> String {
    let mut out = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The certificates of a PEM file (`server.upstream_ca_file`): at least one, all readable.
fn read_ca_file(
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    let key = "server.upstream_ca_file";
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no CERTIFICATE", path.display()),
        ));
    }
    Ok(certs)
}

fn validate_server(raw: &RawConfig) -> Result<(), ConfigError> {
    let server = &raw.server;
    if server.max_request_bytes == 0 {
        return Err(invalid("server.max_request_bytes", "must be at least 1"));
    }
    if server.max_header_bytes < MIN_HEADER_BYTES {
        return Err(invalid(
            "server.max_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        ));
    }
    if server.worker_threads > 1024 {
        return Err(invalid(
            "server.worker_threads",
            "must be at most 1024 (0 = one per CPU)",
        ));
    }
    if server.max_headers == 0 {
        return Err(invalid("server.max_headers", "must be at least 1"));
    }
    if server.http2_max_concurrent_streams == 0 {
        return Err(invalid(
            "server.http2_max_concurrent_streams",
            "must be at least 1",
        ));
    }
    for (key, value) in [
        ("server.connect_timeout_ms", server.connect_timeout_ms),
        (
            "server.response_header_timeout_ms",
            server.response_header_timeout_ms,
        ),
        ("server.idle_timeout_ms", server.idle_timeout_ms),
        (
            "server.request_body_timeout_ms",
            server.request_body_timeout_ms,
        ),
        ("server.max_in_flight", server.max_in_flight as u64),
        (
            "server.max_in_flight_per_user",
            u64::from(server.max_in_flight_per_user),
        ),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    for (section, tls) in [("server.tls", &server.tls), ("admin.tls", &raw.admin.tls)] {
        if let Some(tls) = tls {
            validate_tls(section, tls)?;
        }
    }
    if raw.admin.listen == server.listen && server.listen.port() != 0 {
        return Err(invalid(
            "admin.listen",
            format!("{} is also server.listen", server.listen),
        ));
    }
    Ok(())
}

/// The form of a `[*.tls]` section. The files themselves are read when the listener starts
/// (`tls::ServerTls::load`; `tollgate check-config` reads them too), and again at each reload of
/// the certificate, which a reload of this file does not depend on.
fn validate_tls(section: &str, tls: &TlsConfig) -> Result<(), ConfigError> {
    for (field, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
        if path.as_os_str().is_empty() {
            return Err(invalid(
                format!("{section}.{field}"),
                "must name a PEM file",
            ));
        }
    }
    if !crate::tls::HANDSHAKE_TIMEOUT_MS.contains(&tls.handshake_timeout_ms) {
        return Err(invalid(
            format!("{section}.handshake_timeout_ms"),
            format!(
                "must be between {} and {}",
                crate::tls::HANDSHAKE_TIMEOUT_MS.start(),
                crate::tls::HANDSHAKE_TIMEOUT_MS.end()
            ),
        ));
    }
    Ok(())
}

/// Validate `providers[i]` against the ones before it and load its key.
fn provider(
    i: usize,
    p: &ProviderConfig,
    earlier: &[ProviderConfig],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let key = |field: &str| format!("providers[{i}].{field}");
    if p.name.trim().is_empty() {
        return Err(invalid(key("name"), "must not be empty"));
    }
    if earlier.iter().any(|q| q.name == p.name) {
        return Err(invalid(
            key("name"),
            format!("`{}` names two providers", p.name),
        ));
    }
    let prefix = p.prefix.trim_end_matches('/').to_string();
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err(invalid(
            key("prefix"),
            "must start with `/` and name a path, e.g. `/openai`",
        ));
    }
    if prefix
        .contains(|c: char| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%'))
    {
        return Err(invalid(
            key("prefix"),
            "must be a plain path (no spaces, `?`, `#` or `%`)",
        ));
    }
    if crate::provider::normalize_path(&prefix).ok().as_deref() != Some(prefix.as_str()) {
        return Err(invalid(
            key("prefix"),
            "must be a path the gateway accepts as it is: no empty, `.` or `..` segment, no `;` or `\\`, and no word of an API path (`v1`, `models`, …) in another case",
        ));
    }
    if prefix == "/healthz" {
        return Err(invalid(
            key("prefix"),
            "`/healthz` is the gateway's own health check",
        ));
    }
    if earlier
        .iter()
        .any(|q| q.prefix.trim_end_matches('/') == prefix)
    {
        return Err(invalid(
            key("prefix"),
            format!("`{prefix}` is used by two providers"),
        ));
    }
    let uri: http::Uri = p
        .upstream
        .parse()
        .map_err(|e| invalid(key("upstream"), format!("not a URL: {e}")))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| invalid(key("upstream"), "needs http:// or https://"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(invalid(key("upstream"), "needs http:// or https://"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| invalid(key("upstream"), "needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid(
            key("upstream"),
            "must not carry credentials; the key comes from api_key_env",
        ));
    }
    if uri.query().is_some() {
        return Err(invalid(key("upstream"), "must not carry a query"));
    }
    let env_name = env_name(&key("api_key_env"), &p.api_key_env)?;
    let api_key = env(env_name).filter(|v| !v.is_empty()).ok_or_else(|| {
        invalid(
            key("api_key_env"),
            format!("environment variable {env_name} is not set"),
        )
    })?;
    // The key goes into a header on every call: refuse it now rather than on the first call.
    if http::HeaderValue::from_str(&api_key).is_err() || api_key.trim() != api_key {
        return Err(invalid(
            key("api_key_env"),
            format!(
                "environment variable {env_name} holds spaces or characters not allowed in an HTTP header"
            ),
        ));
    }
    Ok(Provider {
        name: p.name.as_str().into(),
        kind: p.kind,
        prefix,
        upstream_scheme: scheme,
        upstream_authority: authority,
        upstream_base_path: uri.path().trim_end_matches('/').to_string(),
        api_key: Secret::new(api_key),
        unknown_endpoints: p.unknown_endpoints,
    })
}

/// The PostgreSQL URL `store.database_url_env` names, checked for form (never echoed: it may
/// hold a password), and the pool's figures.
pub fn database_url(
    store: &StoreConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    const KEY: &str = "store.database_url_env";
    let name = env_name(KEY, &store.database_url_env)?;
    let url = env(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid(KEY, format!("environment variable {name} is not set")))?;
    if let Err(e) = url.parse::<tokio_postgres::Config>() {
        return Err(invalid(
            KEY,
            format!("environment variable {name} is not a PostgreSQL URL: {e}"),
        ));
    }
    if !(1..=1_000).contains(&store.pool_size) {
        return Err(invalid("store.pool_size", "must be between 1 and 1000"));
    }
    if store.retain_days > 36_500 {
        return Err(invalid(
            "store.retain_days",
            "must be at most 36500 (0 keeps everything)",
        ));
    }
    if !(1_000..=600_000).contains(&store.lease_ms) {
        return Err(invalid("store.lease_ms", "must be between 1000 and 600000"));
    }
    if !(100..=3_600_000).contains(&store.statement_timeout_ms) {
        return Err(invalid(
            "store.statement_timeout_ms",
            "must be between 100 and 3600000",
        ));
    }
    if store
        .replica_id
        .as_deref()
        .is_some_and(|r| r.is_empty() || r.len() > 128 || r.chars().any(char::is_control))
    {
        return Err(invalid(
            "store.replica_id",
            "must be 1 to 128 printable characters",
        ));
    }
    Ok(Secret::new(url))
}

/// `auth.jwks_url` and `auth.jwks_refresh_min_secs`, checked: the key set's settings, if any.
fn jwks_settings(auth: &AuthConfig) -> Result<Option<JwksSettings>, ConfigError> {
    if !(1..=MAX_JWKS_REFRESH_MIN_SECS).contains(&auth.jwks_refresh_min_secs) {
        return Err(invalid(
            "auth.jwks_refresh_min_secs",
            format!("must be between 1 and {MAX_JWKS_REFRESH_MIN_SECS} seconds"),
        ));
    }
    let Some(url) = &auth.jwks_url else {
        return Ok(None);
    };
    let url = JwksUrl::parse(url).map_err(|m| invalid("auth.jwks_url", m))?;
    let refresh_min = Duration::from_secs(auth.jwks_refresh_min_secs);
    JwksSettings::new(url, &auth.algorithms, refresh_min)
        .map(Some)
        .map_err(|m| invalid("auth.jwks_url", m))
}

/// Check that a `*_env` key holds a variable *name*. The value is not echoed: a common slip is
/// to paste the secret itself here.
fn env_name<'a>(key: &str, name: &'a str) -> Result<&'a str, ConfigError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(invalid(
            key,
            "must be the name of an environment variable (letters, digits and `_`), not the secret itself",
        ));
    }
    Ok(name)
}

impl Config {
    /// Validate `raw`, reading secrets through `env` (the process environment in production).
    /// The first problem found is returned, naming its key.
    pub fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        validate_server(&raw)?;
        let providers = raw
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| provider(i, p, &raw.providers[..i], env))
            .collect::<Result<Vec<_>, _>>()?;

        let auth = &raw.auth;
        let jwt_secret = if auth.algorithms.contains(&JwtAlgorithm::HS256) {
            Some(auth.hs256_secret(env)?)
        } else {
            None
        };
        let asymmetric = auth.algorithms.iter().any(|a| *a != JwtAlgorithm::HS256);
        let jwks_settings = jwks_settings(auth)?;
        let jwt_public_key_pem = match (&auth.public_key_file, asymmetric) {
            (Some(path), true) => Some(std::fs::read(path).map_err(|e| {
                invalid(
                    "auth.public_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?),
            (None, true) if jwks_settings.is_none() => {
                return Err(invalid(
                    "auth.public_key_file",
                    "RS256/ES256 need a PEM public key file (or auth.jwks_url)",
                ));
            }
            (_, _) => None,
        };
        if auth.leeway_secs > MAX_LEEWAY_SECS {
            return Err(invalid(
                "auth.leeway_secs",
                format!("must be at most {MAX_LEEWAY_SECS} seconds"),
            ));
        }
        for (key, value) in [
            ("auth.issuer", &auth.issuer),
            ("auth.audience", &auth.audience),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(
                    key,
                    "must not be empty when set (remove the key to skip the check)",
                ));
            }
        }
        let upstream_roots = match &raw.server.upstream_ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        // The key set trusts what upstreams are trusted with: the public roots and
        // server.upstream_ca_file. No I/O here: the gateway fetches it when it starts.
        let jwks = jwks_settings.map(|s| Arc::new(Jwks::new(s, upstream_roots.clone())));
        // The one verifier of this configuration, built here so that a bad key or claim setting
        // is refused at start, naming its key, rather than on the first call.
        let verifier = Verifier::new_with_jwks(
            auth,
            jwt_secret.as_ref(),
            jwt_public_key_pem.as_deref(),
            jwks,
        )?;

        validate_limits(&raw.limits)?;
        if raw.auth.plan_claim.trim().is_empty() {
            return Err(invalid(
                "auth.plan_claim",
                "must name a claim (the default is \"plan\")",
            ));
        }
        let plans = Plans::new(&raw.plans, raw.limits.default_plan.as_deref())
            .map_err(|e| invalid(e.key, e.message))?;
        let timezone = jiff::tz::TimeZone::get(&raw.limits.timezone)
            .map_err(|e| invalid("limits.timezone", format!("unknown IANA time zone: {e}")))?;
        let prices = PriceTable::new(&raw.pricing)
            .map_err(|e| invalid(format!("pricing.\"{}\"", e.model), e.message))?;
        if raw.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must name a file"));
        }
        if raw.store.commit_interval_ms > 10_000 {
            return Err(invalid(
                "store.commit_interval_ms",
                "must be at most 10000 (rows wait in memory that long)",
            ));
        }
        if raw.store.queue_capacity == 0 {
            return Err(invalid("store.queue_capacity", "must be at least 1"));
        }
        if raw.store.batch_max == 0 {
            return Err(invalid("store.batch_max", "must be at least 1"));
        }
        let database_url = match raw.store.backend {
            StoreBackend::Sqlite => None,
            StoreBackend::Postgres => Some(database_url(&raw.store, env)?),
        };
        crate::config::alerts::validate(&raw.alerts, &raw.webhooks)
            .map_err(|e| invalid(e.key, e.message))?;
        let webhook_secrets = raw
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let Some(name) = &w.secret_env else {
                    return Ok(None);
                };
                let key = format!("webhooks[{i}].secret_env");
                let name = env_name(&key, name)?;
                match env(name) {
                    Some(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                    _ => Err(invalid(
                        key,
                        format!("the environment variable {name} is not set"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let webhook_urls = raw
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| match (&w.url, &w.url_env) {
                (Some(url), _) => Ok(Secret::new(url.as_str())),
                (None, Some(name)) => {
                    let key = format!("webhooks[{i}].url_env");
                    let name = env_name(&key, name)?;
                    let url = env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                        invalid(
                            key.clone(),
                            format!("the environment variable {name} is not set"),
                        )
                    })?;
                    crate::config::alerts::check_url(&key, &url)
                        .map_err(|e| invalid(e.key, format!("{name}: {}", e.message)))?;
                    Ok(Secret::new(url))
                }
                (None, None) => Err(invalid(format!("webhooks[{i}].url"), "must be set")),
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        tracing_subscriber::EnvFilter::try_new(&raw.log.level).map_err(|e| {
            invalid(
                "log.level",
                format!("not a tracing filter (e.g. `info`, `tollgate=debug`): {e}"),
            )
        })?;

        Ok(Config {
            raw,
            providers,
            jwt_secret,
            jwt_public_key_pem,
            verifier: Arc::new(verifier),
            upstream_roots,
            timezone,
            prices,
            database_url,
            source: None,
            webhook_secrets,
            webhook_urls,
            plans: Arc::new(plans),
        })
    }

    /// The key set of `auth.jwks_url`, when configured (see [`Verifier::jwks`]).
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.verifier.jwks()
    }

    /// Verify with `running`'s key set instead of this configuration's own (not started) one,
    /// when both come from the same settings and trust: a reload that leaves `auth.jwks_url`
    /// alone keeps the keys in use and their refresh task, and fetches nothing. Returns whether
    /// it did (only then is the verifier rebuilt, around the running key set).
    pub fn adopt_jwks(&mut self, running: &Config) -> Result<bool, ConfigError> {
        let (Some(mine), Some(theirs)) = (self.jwks(), running.jwks()) else {
            return Ok(false);
        };
        if !mine.same_source(theirs) {
            return Ok(false);
        }
        let verifier = Verifier::new_with_jwks(
            &self.raw.auth,
            self.jwt_secret.as_ref(),
            self.jwt_public_key_pem.as_deref(),
            Some(Arc::clone(theirs)),
        )?;
        self.verifier = Arc::new(verifier);
        Ok(true)
    }

    /// The effective configuration as TOML, every key shown with its value (defaults included),
    /// for `tollgate check-config`. Secrets are never in it: each `*_env` key is followed by a
    /// comment saying whether its variable is set, as `# env JWT_SECRET (set)`.
    pub fn masked(&self) -> String {
        let toml = match toml::to_string_pretty(&self.raw.shown()) {
            Ok(toml) => toml,
            // Not reachable with these types; say so rather than print half a file.
            Err(e) => return format!("# the configuration could not be shown as TOML: {e}\n"),
        };
        let hs256 = self.jwt_secret.is_some();
        let mut provider = 0usize;
        let mut section = String::new();
        let mut out = String::with_capacity(toml.len() + 256);
        for line in toml.lines() {
            out.push_str(line);
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                section = trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
            }
            let note = match (section.as_str(), trimmed.split_once(" = ")) {
                ("auth", Some(("jwt_secret_env", _))) => Some(if hs256 {
                    format!("env {} (set)", self.raw.auth.jwt_secret_env)
                } else {
                    format!(
                        "env {} (not used: HS256 is not in auth.algorithms)",
                        self.raw.auth.jwt_secret_env
                    )
                }),
                ("providers", Some(("api_key_env", _))) => {
                    let name = self
                        .raw
                        .providers
                        .get(provider)
                        .map_or("?", |p| p.api_key_env.as_str());
                    let set = self
                        .providers
                        .get(provider)
                        .is_some_and(|p| !p.api_key.expose().is_empty());
                    provider += 1;
                    Some(format!(
                        "env {name} ({})",
                        if set { "set" } else { "missing" }
                    ))
                }
                ("webhooks", Some(("secret_env" | "url_env", name))) => {
                    Some(format!("env {} (set)", name.trim_matches('"')))
                }
                _ => None,
            };
            if let Some(note) = note {
                out.push_str("  # ");
                out.push_str(&note);
            }
            out.push('\n');
        }
        out
    }

    /// Settings that work but are probably mistakes; `serve` logs them, `check-config` prints
    /// them. None of them names a secret's value.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_HS256_SECRET_BYTES)
        {
            warnings.push(format!(
                "auth.jwt_secret_env: the HS256 secret in {} is shorter than {MIN_HS256_SECRET_BYTES} bytes; use a long random secret",
                self.raw.auth.jwt_secret_env
            ));
        }
        if !self.raw.admin.listen.ip().is_loopback() {
            warnings.push(format!(
                "admin.listen: {} is reachable from the network; keep the admin side on loopback or behind a firewall",
                self.raw.admin.listen
            ));
        }
        for (i, p) in self.providers.iter().enumerate() {
            let host = p.upstream_authority.host();
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            let local = host == "localhost"
                || ip
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if p.upstream_scheme == http::uri::Scheme::HTTP && !local {
                warnings.push(format!(
                    "providers[{i}].upstream: plain http to {host}; the provider key would travel unencrypted"
                ));
            }
        }
        if self.providers.is_empty() {
            warnings.push("providers: none configured; every call will be answered 404".into());
        }
        for (i, w) in self.raw.webhooks.iter().enumerate() {
            if w.secret_env.is_none() && w.format == crate::config::alerts::WebhookFormat::Json {
                warnings.push(format!(
                    "webhooks[{i}].secret_env: not set; the receiver cannot tell Tollgate's alerts from anyone else's (no X-Tollgate-Signature)"
                ));
            }
        }
        if !self.raw.alerts.is_empty() && self.raw.webhooks.is_empty() {
            warnings.push(
                "alerts: rules without [[webhooks]] are only recorded (the dashboard's alerts page)".into(),
            );
        }
        if !self.plans.is_empty() && self.plans.default_plan().is_none() {
            warnings.push(format!(
                "limits.default_plan: not set; a token without the {:?} claim, or naming no plan, gets [limits] and every model",
                self.raw.auth.plan_claim
            ));
        }
        warnings
    }

    /// Load and validate from a file and the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &|name| std::env::var(name).ok())
    }

    /// [`Config::load`] reading the secrets the file names through `env` (tests pass their own).
    pub fn load_with(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::from_raw(RawConfig::load(path)?, env)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.raw.server.connect_timeout_ms)
    }
    pub fn response_header_timeout(&self) -> Duration {
        Duration::from_millis(self.raw.server.response_header_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.raw.server.idle_timeout_ms)
    }
    pub fn request_body_timeout(&self) -> Duration {
        Duration::from_millis(self.raw.server.request_body_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.raw.server.shutdown_grace_secs)
    }
}
