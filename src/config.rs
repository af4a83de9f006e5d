//! Configuration: `gateway.toml` plus `TOLLGATE_SECTION__KEY` environment overrides (figment),
//! read in two stages. [`RawConfig`] is what the file says, with no I/O and every field
//! documented; [`Config`] is the validated form the gateway runs on: parsed addresses and URIs,
//! secrets loaded from the environment variables the file names, a built price table.
//!
//! Secrets never live in the file and never print: [`Secret`]'s `Debug` shows `***`, and
//! [`Config::masked`] is what `tollgate check-config` and the admin API show.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::pricing::{Price, PriceTable};
use crate::provider::ProviderKind;

/// The environment variable prefix for overrides: `TOLLGATE_SERVER__LISTEN=0.0.0.0:5002`.
pub const ENV_PREFIX: &str = "TOLLGATE_";

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
    /// Time allowed to open a connection (and TLS) to the upstream; past it → 502.
    pub connect_timeout_ms: u64,
    /// Time allowed from sending the request to the upstream's response head; past it → 504.
    pub response_header_timeout_ms: u64,
    /// Longest silence allowed between two chunks of an answer; past it the call is cut.
    pub idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before they are cut.
    pub shutdown_grace_secs: u64,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout_secs: u64,
    /// Most idle pooled connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5002)),
            max_request_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            connect_timeout_ms: 5_000,
            response_header_timeout_ms: 300_000,
            idle_timeout_ms: 120_000,
            shutdown_grace_secs: 30,
            pool_idle_timeout_secs: 90,
            pool_max_idle_per_host: 256,
        }
    }
}

/// `[admin]`: the admin API and dashboard listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (loopback by default).
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
        }
    }
}

/// A JWT signature algorithm Tollgate accepts. Chosen by configuration, never by the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// `[auth]`: how end-user JWTs are verified.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Environment variable holding the HS256 shared secret.
    pub jwt_secret_env: String,
    /// Accepted algorithms. HS256 needs the secret; RS256/ES256 need `public_key_file`.
    pub algorithms: Vec<JwtAlgorithm>,
    /// PEM file with the RSA or EC public key for RS256/ES256.
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (seconds).
    pub leeway_secs: u64,
    /// The claim naming the user.
    pub user_claim: String,
    /// The claim that marks an admin, and the value it must have.
    pub admin_claim: String,
    pub admin_value: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret_env: "JWT_SECRET".into(),
            algorithms: vec![JwtAlgorithm::HS256],
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            user_claim: "sub".into(),
            admin_claim: "role".into(),
            admin_value: "admin".into(),
        }
    }
}

/// `[limits]`: per-user defaults (enforced from the limits issue on).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub daily_tokens: u64,
    pub monthly_tokens: u64,
    pub requests_per_minute: u32,
    /// IANA time zone of the day and month windows (and of the daily rollups).
    pub timezone: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            daily_tokens: 100_000,
            monthly_tokens: 1_000_000,
            requests_per_minute: 60,
            timezone: "UTC".into(),
        }
    }
}

/// `[store]`: where usage rows go.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite database file.
    pub path: PathBuf,
    /// Rows that may wait for the writer; a full queue drops rows (counted, logged).
    pub queue_capacity: usize,
    /// Most rows committed in one transaction.
    pub batch_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("tollgate.db"),
            queue_capacity: 65_536,
            batch_max: 1_024,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
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
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
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
}

/// The validated configuration the gateway runs on.
#[derive(Clone, Debug)]
pub struct Config {
    pub raw: RawConfig,
    pub providers: Vec<Provider>,
    pub jwt_secret: Option<Secret>,
    pub jwt_public_key_pem: Option<Vec<u8>>,
    pub timezone: jiff::tz::TimeZone,
    pub prices: PriceTable,
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl RawConfig {
    /// Read `path` (which must exist) and the `TOLLGATE_*` environment overrides.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Parse(format!(
                "configuration file {} not found",
                path.display()
            )));
        }
        Self::from_figment(Figment::new().merge(Toml::file(path)).merge(Env::prefixed(ENV_PREFIX).split("__")))
    }

    /// Extract from any figment (tests build one from strings).
    pub fn from_figment(figment: Figment) -> Result<RawConfig, ConfigError> {
        figment.extract().map_err(|e| {
            let mut msgs = Vec::new();
            for err in e {
                let key = err.path.join(".");
                if key.is_empty() {
                    msgs.push(err.kind.to_string());
                } else {
                    msgs.push(format!("`{key}`: {}", err.kind));
                }
            }
            ConfigError::Parse(msgs.join("; "))
        })
    }
}

impl Config {
    /// Validate `raw`, reading secrets through `env` (the process environment in production).
    pub fn from_raw(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut providers = Vec::with_capacity(raw.providers.len());
        for (i, p) in raw.providers.iter().enumerate() {
            let key = |field: &str| format!("providers[{i}].{field}");
            if p.name.is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            let prefix = p.prefix.trim_end_matches('/').to_string();
            if !prefix.starts_with('/') || prefix.len() < 2 {
                return Err(invalid(key("prefix"), "must start with `/` and name a path, e.g. `/openai`"));
            }
            if providers.iter().any(|q: &Provider| q.prefix == prefix) {
                return Err(invalid(key("prefix"), format!("`{prefix}` is used by two providers")));
            }
            let uri: http::Uri = p
                .upstream
                .parse()
                .map_err(|e| invalid(key("upstream"), format!("not a URL: {e}")))?;
            let scheme = uri.scheme().cloned().ok_or_else(|| invalid(key("upstream"), "needs http:// or https://"))?;
            if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
                return Err(invalid(key("upstream"), "needs http:// or https://"));
            }
            let authority = uri.authority().cloned().ok_or_else(|| invalid(key("upstream"), "needs a host"))?;
            if uri.query().is_some() {
                return Err(invalid(key("upstream"), "must not carry a query"));
            }
            let api_key = env(&p.api_key_env)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(key("api_key_env"), format!("environment variable {} is not set", p.api_key_env)))?;
            providers.push(Provider {
                name: p.name.as_str().into(),
                kind: p.kind,
                prefix,
                upstream_scheme: scheme,
                upstream_authority: authority,
                upstream_base_path: uri.path().trim_end_matches('/').to_string(),
                api_key: Secret::new(api_key),
            });
        }

        let auth = &raw.auth;
        if auth.algorithms.is_empty() {
            return Err(invalid("auth.algorithms", "must name at least one algorithm"));
        }
        let jwt_secret = if auth.algorithms.contains(&JwtAlgorithm::HS256) {
            Some(Secret::new(
                env(&auth.jwt_secret_env)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| invalid("auth.jwt_secret_env", format!("environment variable {} is not set", auth.jwt_secret_env)))?,
            ))
        } else {
            None
        };
        let asymmetric = auth.algorithms.iter().any(|a| *a != JwtAlgorithm::HS256);
        let jwt_public_key_pem = match (&auth.public_key_file, asymmetric) {
            (Some(path), true) => Some(std::fs::read(path).map_err(|e| {
                invalid("auth.public_key_file", format!("cannot read {}: {e}", path.display()))
            })?),
            (None, true) => return Err(invalid("auth.public_key_file", "RS256/ES256 need a PEM public key file")),
            (_, false) => None,
        };
        if auth.user_claim.is_empty() {
            return Err(invalid("auth.user_claim", "must not be empty"));
        }

        let timezone = jiff::tz::TimeZone::get(&raw.limits.timezone)
            .map_err(|e| invalid("limits.timezone", format!("unknown IANA time zone: {e}")))?;
        let prices = PriceTable::new(&raw.pricing).map_err(|e| invalid(format!("pricing.\"{}\"", e.model), e.message))?;
        if raw.store.queue_capacity == 0 {
            return Err(invalid("store.queue_capacity", "must be at least 1"));
        }
        if raw.store.batch_max == 0 {
            return Err(invalid("store.batch_max", "must be at least 1"));
        }
        if raw.server.max_request_bytes == 0 {
            return Err(invalid("server.max_request_bytes", "must be at least 1"));
        }

        Ok(Config {
            raw,
            providers,
            jwt_secret,
            jwt_public_key_pem,
            timezone,
            prices,
        })
    }

    /// Load and validate from a file and the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_raw(RawConfig::load(path)?, &|name| std::env::var(name).ok())
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
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.raw.server.shutdown_grace_secs)
    }
}
