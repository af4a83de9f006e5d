//! Hot reload of gateway.toml: what triggers it, what it may change, and its audit trail.
//!
//! ```text
//! trigger: file watch (notify, debounced) · SIGHUP · the admin API (Reloader::reload)
//!   → read and validate the file on a blocking thread (Config::load_with: the same checks as
//!     at start, so an error names its key)
//!      ├─ invalid → warn log, `config_reload_refused` audit row; the running config stays
//!      └─ valid   → diff against the file as last read
//!           ├─ no difference → nothing (no log line above debug, no audit row)
//!           └─ changed → keys that need a restart keep their running values (warned about);
//!                        build a new proxy::Runtime (routes, JWT verifier, upstream client
//!                        only if its own settings changed) and swap it in; new [limits]
//!                        defaults into the quota ledger; `config_reload` audit row with
//!                        the changed keys before and after, secrets masked
//! ```
//!
//! **What a reload changes.** Every call loads the proxy's runtime once when it starts and keeps
//! it to its end, so calls in flight finish on the configuration they started with (their price
//! included) and no connection is dropped; the next call uses the new one. Limits, pricing,
//! providers (added, removed, other upstream or key), `[auth]`, request size and the upstream
//! timeouts apply at once. A changed `auth.jwks_url` (or `auth.jwks_refresh_min_secs`, the
//! accepted algorithms, `server.upstream_ca_file`) is fetched before the reload applies, and
//! refuses the reload when it cannot be; otherwise the running key set and its refresh task
//! carry on. The keys in [`RESTART_ONLY`] cannot change while running (listeners and where
//! their TLS files are, threads, the store, log set-up, the time zone of the day windows; new
//! certificates in the same files are picked up by `tls::ServerTls` itself): a change to them is logged
//! as needing a restart, said so in the audit row, and the running value stays in force — so
//! [`Reloader::config`] always shows what is actually running.
//!
//! **Secrets.** Only key names and values from the file appear in logs and audit rows; a
//! changed secret (a provider key, the JWT secret) is shown as `"***"` before and after.
//!
//! **Audit rows** are a unit of work of the store's (`Op::ConfigReload`): never on the request
//! path, and never through the usage writer's queue.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::auth::RefreshObserver;
use crate::config::Config;
use crate::metrics::{Metrics, ReloadResult};
use crate::proxy::{Proxy, Runtime};
use crate::quota::{Ledger, Limits};
use crate::store::{Committed, Op, Store, Work};

/// Reads the secrets a configuration names (the process environment in production).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub use crate::file_watch::{DEBOUNCE, POLL_INTERVAL};

/// Keys that only take effect at the next start. A key ending in `.` covers its whole section.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.worker_threads",
    "server.max_header_bytes",
    "server.max_headers",
    "server.http2_max_concurrent_streams",
    "server.watch_config",
    "server.tls.",
    "admin.",
    "store.",
    "log.",
    "limits.timezone",
];

/// Keys of the upstream client: a change builds a new client (and a new connection pool).
const CLIENT_KEYS: &[&str] = &[
    "server.connect_timeout_ms",
    "server.pool_idle_timeout_secs",
    "server.pool_max_idle_per_host",
    "server.upstream_ca_file",
];

/// What a secret's value looks like in a log or an audit row.
const MASK: &str = "***";

/// Whether a change to `key` needs a restart.
pub fn needs_restart(key: &str) -> bool {
    RESTART_ONLY.iter().any(|r| {
        if r.ends_with('.') {
            key.starts_with(r)
        } else {
            key == *r
        }
    })
}

/// What asked for a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The file watch saw the file change.
    FileChange,
    /// The process got SIGHUP.
    Sighup,
    /// The admin API; `actor` is the admin who asked (the audit row's actor).
    Api { actor: String },
}

impl Trigger {
    /// The audit row's `detail` (and the log's `trigger`): `file change`, `SIGHUP` or `api`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::FileChange => "file change",
            Trigger::Sighup => "SIGHUP",
            Trigger::Api { .. } => "api",
        }
    }

    /// The audit row's actor: the admin for the API, else `system`.
    pub fn actor(&self) -> &str {
        match self {
            Trigger::Api { actor } => actor,
            Trigger::FileChange | Trigger::Sighup => "system",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One changed key. Values are as the file says (`null` = absent); secrets are `"***"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyChange {
    /// `limits.daily_tokens`, `providers."openai".upstream`, `pricing."gpt-4o".input`.
    pub key: String,
    pub before: Value,
    pub after: Value,
    /// The change takes effect at the next start only.
    pub needs_restart: bool,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The file says what is already running: nothing applied, nothing audited.
    Unchanged,
    /// The file changed and was applied.
    Applied {
        /// The keys that changed since the file was last read.
        changes: Vec<KeyChange>,
        /// Keys whose file value differs from the running one until the next start.
        needs_restart: Vec<String>,
        /// The `admin_audit` row, unless it could not be written (logged).
        audit_id: Option<i64>,
    },
}

/// Why a reload applied nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started from a configuration in memory, not from a file.
    #[error("no configuration file to reload: the gateway was not started from a file")]
    NoFile,
    /// The file is invalid; the message names the key. The running configuration stays.
    #[error("{0}")]
    Invalid(String),
    /// Something other than the file went wrong (logged); the running configuration stays.
    #[error("the configuration could not be reloaded: {0}")]
    Internal(String),
}

/// A cloneable handle that reloads the configuration and reads the one running. The admin
/// API, the file watch and the SIGHUP handler all call [`Reloader::reload`].
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    env: Env,
    proxy: Arc<Proxy>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    /// The file as last read (before restart-only keys are pinned); reloads take turns.
    last: Mutex<Arc<Config>>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the gateway whose proxy is `proxy`, reading `path` (none: reloads fail
    /// with [`ReloadError::NoFile`]) and the secrets it names through `env`. `loaded` is the
    /// configuration the gateway started with; audit rows go to `store`.
    pub fn new(
        path: Option<PathBuf>,
        env: Env,
        proxy: Arc<Proxy>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
        loaded: Arc<Config>,
        store: Arc<dyn Store>,
    ) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                path,
                env,
                proxy,
                ledger,
                metrics,
                store,
                last: Mutex::new(loaded),
            }),
        }
    }

    /// The configuration in force: what the next call starts with.
    pub fn config(&self) -> Arc<Config> {
        self.inner.proxy.config()
    }

    /// The file reloads read, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Read the file again and apply it if it is valid and changed. An invalid file is refused
    /// (logged at warn, audited as `config_reload_refused`) and the running configuration
    /// stays. Reloads take turns; none ever waits on a call.
    pub async fn reload(&self, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let inner = &self.inner;
        let Some(path) = inner.path.clone() else {
            tracing::warn!(trigger = %trigger, "configuration reload asked for, but the gateway was not started from a file");
            return Err(ReloadError::NoFile);
        };
        let mut last = inner.last.lock().await;
        let env = Arc::clone(&inner.env);
        let read_path = path.clone();
        let candidate = tokio::task::spawn_blocking(move || Config::load_with(&read_path, &*env))
            .await
            .map_err(|e| ReloadError::Internal(format!("the reading task failed: {e}")))?;
        let candidate = match candidate {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                return Err(self.refuse(&path, &trigger, message).await);
            }
        };

        let changes = diff(&last, &candidate);
        if changes.is_empty() {
            tracing::debug!(trigger = %trigger, "configuration file unchanged");
            return Ok(ReloadOutcome::Unchanged);
        }
        let running = inner.proxy.runtime();
        // The key set of auth.jwks_url: the running one while its settings stay; a new one is
        // fetched now, and a reload whose key set cannot be fetched is refused like an invalid
        // file (the running keys stay).
        let mut candidate = candidate;
        match candidate.adopt_jwks(&running.config) {
            Ok(true) => {}
            Ok(false) => {
                if let Some(jwks) = candidate.jwks() {
                    let observer = Arc::clone(&inner.metrics) as Arc<dyn RefreshObserver>;
                    if let Err(e) = jwks.start(Some(observer)).await {
                        return Err(self.refuse(&path, &trigger, e.to_string()).await);
                    }
                }
            }
            Err(e) => return Err(self.refuse(&path, &trigger, e.to_string()).await),
        }
        let effective = pin_restart_only(candidate.clone(), &running.config);
        let pending: Vec<String> = diff(&running.config, &candidate)
            .into_iter()
            .filter(|c| c.needs_restart)
            .map(|c| c.key)
            .collect();
        let rebuild_client = CLIENT_KEYS
            .iter()
            .any(|k| flat_value(&running.config, k) != flat_value(&effective, k));
        let client = if rebuild_client {
            crate::upstream::client(&effective).map_err(|e| ReloadError::Internal(e.to_string()))?
        } else {
            running.client().clone()
        };
        let effective = Arc::new(effective);
        let runtime = match Runtime::new(Arc::clone(&effective), client) {
            Ok(rt) => rt,
            Err(e) => return Err(self.refuse(&path, &trigger, e.to_string()).await),
        };

        // Apply: the next call admits against the new defaults and starts on the new runtime.
        inner
            .ledger
            .set_defaults(Limits::from_config(&effective.raw.limits));
        inner.proxy.swap_runtime(runtime);
        *last = Arc::new(candidate);
        drop(running);
        inner.metrics.reloaded(ReloadResult::Ok);

        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        tracing::info!(trigger = %trigger, changed = %keys.join(", "), "configuration reloaded");
        if !pending.is_empty() {
            tracing::warn!(
                keys = %pending.join(", "),
                "configuration changes that need a restart: the running values stay until then"
            );
        }
        for warning in effective.warnings() {
            tracing::warn!("{warning}");
        }

        let mut before = serde_json::Map::new();
        let mut after = serde_json::Map::new();
        for c in &changes {
            before.insert(c.key.clone(), c.before.clone());
            after.insert(c.key.clone(), c.after.clone());
        }
        let mut detail = trigger.as_str().to_string();
        if !pending.is_empty() {
            detail.push_str("; needs a restart: ");
            detail.push_str(&pending.join(", "));
        }
        let audit_id = self
            .audit(
                &trigger,
                Op::ConfigReload {
                    applied: true,
                    file: path.display().to_string(),
                    before_json: Some(Value::Object(before).to_string()),
                    after_json: Some(Value::Object(after).to_string()),
                    detail,
                },
            )
            .await;
        Ok(ReloadOutcome::Applied {
            changes,
            needs_restart: pending,
            audit_id,
        })
    }

    /// Refuse an invalid file: log, count, audit. Returns the error to hand back.
    async fn refuse(&self, path: &Path, trigger: &Trigger, message: String) -> ReloadError {
        tracing::warn!(
            trigger = %trigger,
            file = %path.display(),
            error = %message,
            "configuration reload refused: the running configuration stays"
        );
        self.inner.metrics.reloaded(ReloadResult::Refused);
        self.audit(
            trigger,
            Op::ConfigReload {
                applied: false,
                file: path.display().to_string(),
                before_json: None,
                after_json: None,
                detail: format!("{trigger}: {message}"),
            },
        )
        .await;
        ReloadError::Invalid(message)
    }

    /// Write a reload's audit row. A failure is logged and returns `None`: the reload itself
    /// stands.
    async fn audit(&self, trigger: &Trigger, op: Op) -> Option<i64> {
        let action = op.action().as_str();
        let work = Work {
            actor: trigger.actor().to_string(),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            op,
        };
        match self.inner.store.commit(work).await {
            Ok(Committed::Audited { audit_id }) => Some(audit_id),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(action, error = %e, "cannot write the configuration reload's audit row");
                None
            }
        }
    }

    /// Watch the file and reload when it changes, until `stop` changes or its sender is gone.
    /// The file is polled every [`POLL_INTERVAL`] and its content compared, which also sees an
    /// editor replace it by renaming a copy over it. (Watching its directory with inotify woke
    /// a thread on every write of the SQLite file that usually sits next to it: several percent
    /// of the gateway's CPU under load.) A burst of changes makes one reload, once the file has
    /// been quiet for [`DEBOUNCE`].
    pub fn watch(&self, stop: watch::Receiver<bool>) -> Result<JoinHandle<()>, String> {
        let path = self
            .inner
            .path
            .clone()
            .ok_or("no configuration file to watch")?;
        let name = path
            .file_name()
            .ok_or_else(|| format!("{} does not name a file", path.display()))?
            .to_os_string();
        let relevant = move |event: &notify::Event| {
            is_change(&event.kind)
                && event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()))
        };
        let reloader = self.clone();
        let task = crate::file_watch::watch_files(
            std::slice::from_ref(&path),
            &path.display().to_string(),
            relevant,
            stop,
            move || {
                let reloader = reloader.clone();
                async move {
                    // Errors are logged and audited by `reload`.
                    let _ = reloader.reload(Trigger::FileChange).await;
                }
            },
        )?;
        tracing::info!(file = %path.display(), "watching the configuration file for changes");
        Ok(task)
    }
}

/// Events that may mean the file's content changed (reads, including Tollgate's own, do not).
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Other => true,
    }
}

/// `candidate` with every [`RESTART_ONLY`] key set back to its running value.
fn pin_restart_only(mut candidate: Config, running: &Config) -> Config {
    let (raw, run) = (&mut candidate.raw, &running.raw);
    raw.server.listen = run.server.listen;
    raw.server.worker_threads = run.server.worker_threads;
    raw.server.max_header_bytes = run.server.max_header_bytes;
    raw.server.max_headers = run.server.max_headers;
    raw.server.http2_max_concurrent_streams = run.server.http2_max_concurrent_streams;
    raw.server.watch_config = run.server.watch_config;
    raw.server.tls.clone_from(&run.server.tls);
    raw.admin = run.admin.clone();
    raw.store = run.store.clone();
    raw.log = run.log.clone();
    raw.limits.timezone.clone_from(&run.limits.timezone);
    candidate.timezone = running.timezone.clone();
    candidate
}

/// The keys whose values differ between `old` and `new`, sorted, secrets masked.
pub fn diff(old: &Config, new: &Config) -> Vec<KeyChange> {
    let (a, b) = (flatten(old), flatten(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes: Vec<KeyChange> = keys
        .into_iter()
        .filter_map(|k| {
            let (before, after) = (a.get(k), b.get(k));
            (before != after).then(|| KeyChange {
                key: k.clone(),
                before: before.cloned().unwrap_or(Value::Null),
                after: after.cloned().unwrap_or(Value::Null),
                needs_restart: needs_restart(k),
            })
        })
        .collect();
    // Secrets are compared here and never shown.
    let secret = |key: String, before: bool, after: bool| KeyChange {
        key,
        before: if before {
            Value::from(MASK)
        } else {
            Value::Null
        },
        after: if after {
            Value::from(MASK)
        } else {
            Value::Null
        },
        needs_restart: false,
    };
    if old.jwt_secret != new.jwt_secret {
        changes.push(secret(
            "auth.jwt_secret".into(),
            old.jwt_secret.is_some(),
            new.jwt_secret.is_some(),
        ));
    }
    if old.jwt_public_key_pem != new.jwt_public_key_pem {
        changes.push(KeyChange {
            key: "auth.public_key".into(),
            before: Value::from(if old.jwt_public_key_pem.is_some() {
                "(file contents)"
            } else {
                ""
            }),
            after: Value::from(if new.jwt_public_key_pem.is_some() {
                "(new file contents)"
            } else {
                ""
            }),
            needs_restart: false,
        });
    }
    for p in &new.providers {
        if let Some(q) = old.providers.iter().find(|q| q.name == p.name)
            && q.api_key != p.api_key
        {
            changes.push(secret(
                format!("providers.{}.api_key", quoted(&p.name)),
                true,
                true,
            ));
        }
    }
    changes
}

/// Every leaf of the file's configuration as `dotted.key → value` (no secrets: the file holds
/// none). Providers are keyed by name, prices by model: `providers."openai".upstream`,
/// `pricing."gpt-4o".input`.
fn flatten(config: &Config) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Ok(Value::Object(mut root)) = serde_json::to_value(config.raw.shown()) else {
        return out;
    };
    if let Some(Value::Array(providers)) = root.remove("providers") {
        for p in providers {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            if let Value::Object(fields) = p {
                for (field, value) in fields {
                    out.insert(format!("providers.{}.{field}", quoted(&name)), value);
                }
            }
        }
    }
    if let Some(Value::Object(prices)) = root.remove("pricing") {
        for (model, price) in prices {
            let prefix = format!("pricing.{}", quoted(&model));
            flatten_into(&prefix, price, &mut out);
        }
    }
    for (section, value) in root {
        flatten_into(&section, value, &mut out);
    }
    out
}

fn flatten_into(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    format!("{prefix}.{k}")
                } else {
                    format!("{prefix}.{}", quoted(&k))
                };
                flatten_into(&key, v, out);
            }
        }
        Value::Null => {}
        leaf => {
            out.insert(prefix.to_string(), leaf);
        }
    }
}

/// A name as a quoted TOML key, the way config errors name it: `"gpt-4o"`.
fn quoted(name: &str) -> String {
    Value::from(name).to_string()
}

fn flat_value(config: &Config, key: &str) -> Option<Value> {
    flatten(config).remove(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::config::{ProviderConfig, RawConfig};
    use crate::provider::ProviderKind;

    fn env(name: &str) -> Option<String> {
        match name {
            "JWT_SECRET" => Some("a-test-secret-long-enough-for-hs256-0123456789".into()),
            "OPENAI_API_KEY" => Some("sk-one".into()),
            "OTHER_KEY" => Some("sk-two".into()),
            _ => None,
        }
    }

    fn raw() -> RawConfig {
        RawConfig {
            providers: vec![ProviderConfig {
                name: "openai".into(),
                kind: ProviderKind::Openai,
                prefix: "/openai".into(),
                upstream: "https://api.openai.com".into(),
                api_key_env: "OPENAI_API_KEY".into(),
                unknown_endpoints: Default::default(),
            }],
            pricing: toml::from_str::<BTreeMap<String, crate::pricing::Price>>(
                "[\"gpt-4o\"]\ninput = 2.5\noutput = 10.0\n",
            )
            .unwrap(),
            ..RawConfig::default()
        }
    }

    fn config(raw: RawConfig) -> Config {
        Config::from_raw(raw, &env).unwrap()
    }

    #[test]
    fn the_same_configuration_has_no_changes() {
        assert_eq!(diff(&config(raw()), &config(raw())), []);
    }

    #[test]
    fn changed_keys_are_named_with_their_values_before_and_after() {
        let old = config(raw());
        let mut r = raw();
        r.limits.daily_tokens = 5;
        r.limits.daily_cost_usd = Some(1.5);
        r.pricing.get_mut("gpt-4o").unwrap().input = 3.0;
        r.providers[0].upstream = "http://127.0.0.1:9".into();
        r.server.listen = "127.0.0.1:7000".parse().unwrap();
        let changes = diff(&old, &config(r));
        let got: Vec<(&str, String, String, bool)> = changes
            .iter()
            .map(|c| {
                (
                    c.key.as_str(),
                    c.before.to_string(),
                    c.after.to_string(),
                    c.needs_restart,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("limits.daily_cost_usd", "null".into(), "1.5".into(), false),
                ("limits.daily_tokens", "100000".into(), "5".into(), false),
                (
                    "pricing.\"gpt-4o\".input",
                    "2.5".into(),
                    "3.0".into(),
                    false
                ),
                (
                    "providers.\"openai\".upstream",
                    "\"https://api.openai.com\"".into(),
                    "\"http://127.0.0.1:9\"".into(),
                    false
                ),
                (
                    "server.listen",
                    "\"127.0.0.1:5002\"".into(),
                    "\"127.0.0.1:7000\"".into(),
                    true
                ),
            ]
        );
    }

    #[test]
    fn a_changed_secret_is_named_but_never_shown() {
        let old = config(raw());
        let mut r = raw();
        r.providers[0].api_key_env = "OTHER_KEY".into();
        let changes = diff(&old, &config(r));
        let text = serde_json::to_string(&changes).unwrap();
        assert!(
            !text.contains("sk-one") && !text.contains("sk-two"),
            "{text}"
        );
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "providers.\"openai\".api_key_env",
                "providers.\"openai\".api_key"
            ]
        );
        assert_eq!(changes[1].before, Value::from(MASK));
        assert_eq!(changes[1].after, Value::from(MASK));
    }

    #[test]
    fn an_added_provider_shows_every_field() {
        let old = config(raw());
        let mut r = raw();
        let mut beta = r.providers[0].clone();
        beta.name = "openai-beta".into();
        beta.prefix = "/openai-beta".into();
        r.providers.push(beta);
        let keys: Vec<String> = diff(&old, &config(r))
            .into_iter()
            .filter(|c| c.before.is_null())
            .map(|c| c.key)
            .collect();
        assert_eq!(
            keys,
            [
                "providers.\"openai-beta\".api_key_env",
                "providers.\"openai-beta\".kind",
                "providers.\"openai-beta\".name",
                "providers.\"openai-beta\".prefix",
                "providers.\"openai-beta\".unknown_endpoints",
                "providers.\"openai-beta\".upstream",
            ]
        );
    }

    #[test]
    fn pinning_keeps_exactly_the_restart_only_keys() {
        let running = config(raw());
        let mut r = raw();
        r.server.listen = "127.0.0.1:7000".parse().unwrap();
        r.server.worker_threads = 3;
        r.server.max_header_bytes = 10_000;
        r.server.max_headers = 7;
        r.server.watch_config = false;
        r.server.tls = Some(crate::config::TlsConfig {
            cert_file: "cert.pem".into(),
            key_file: "key.pem".into(),
            handshake_timeout_ms: 5_000,
        });
        r.admin.listen = "127.0.0.1:7001".parse().unwrap();
        r.store.path = "other.db".into();
        r.store.queue_capacity = 9;
        r.store.batch_max = 9;
        r.store.commit_interval_ms = 9;
        r.log.level = "debug".into();
        r.log.format = crate::config::LogFormat::Json;
        r.limits.timezone = "Europe/Berlin".into();
        let candidate = config(r);
        let restart_keys: Vec<String> = diff(&running, &candidate)
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(restart_keys.len(), 16, "{restart_keys:?}");
        assert!(
            restart_keys.iter().all(|k| needs_restart(k)),
            "{restart_keys:?}"
        );
        let pinned = pin_restart_only(candidate, &running);
        assert_eq!(diff(&running, &pinned), []);
        assert_eq!(pinned.timezone, running.timezone);

        // Live keys are not pinned.
        let mut r = raw();
        r.limits.daily_tokens = 1;
        r.server.idle_timeout_ms = 1;
        r.auth.leeway_secs = 1;
        let pinned = pin_restart_only(config(r), &running);
        let live: Vec<(String, bool)> = diff(&running, &pinned)
            .into_iter()
            .map(|c| (c.key, c.needs_restart))
            .collect();
        assert_eq!(
            live,
            [
                ("auth.leeway_secs".to_string(), false),
                ("limits.daily_tokens".to_string(), false),
                ("server.idle_timeout_ms".to_string(), false),
            ]
        );
    }

    #[test]
    fn only_content_events_trigger_a_reload() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Remove(RemoveKind::File)));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
    }
}
