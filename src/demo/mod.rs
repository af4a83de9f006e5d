//! `tollgate demo`: the whole product in one command, without provider keys. It starts the
//! gateway and its admin side on the shipped configuration, with only what a demo must change
//! overridden ([`demo_config`]): both providers' upstreams point at the built-in fake of the
//! OpenAI and Gemini APIs (`tollgate-fake-upstream`, served in-process on a free loopback port),
//! provider keys and the JWT secret are random values made for this run (never printed), the
//! store is a throwaway SQLite file in a temp dir, the listeners stay on loopback and logs are
//! at `warn`. It adds an admin account (`demo`, a random password: printed, that is the point),
//! gives one user a small daily limit and the alert rule that watches it, drives a little
//! traffic from three users through the real proxy listener over HTTP ([`traffic`]), prints
//! what was recorded and how to sign in, and serves until SIGINT/SIGTERM; then it stops as
//! `serve` does (every row written) and deletes its temp dir (unless `--keep`).
//!
//! Everything goes through the gateway's own code — minting (`auth::mint`), accounts
//! (`Op::AddAccount`, as `tollgate admin add`), limits (`admin::UserActions`, as the admin
//! API), the proxy — so what the demo shows is what an operator gets.

mod traffic;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::auth::AuthConfig;
use crate::config::alerts::{AlertRule, Kind, Percent, Span};
use crate::config::{Config, ConfigError, LogConfig, ProviderConfig, RawConfig, Secret};
use crate::config::{StoreConfig, UnknownEndpoints};
use crate::provider::ProviderKind;
use crate::quota::OverridesPatch;
use crate::store::{Committed, Op, Store, UserSort, UsersQuery, Work};

pub use traffic::{DEMO_USERS, LIMITED_USER};

/// The environment variable names the demo's configuration gives its secrets. They are read
/// through the demo's own lookup, never from the process environment, so a real key in the
/// shell is never used (nor needed).
pub const OPENAI_KEY_ENV: &str = "TOLLGATE_DEMO_OPENAI_KEY";
pub const GEMINI_KEY_ENV: &str = "TOLLGATE_DEMO_GEMINI_KEY";
pub const JWT_SECRET_ENV: &str = "TOLLGATE_DEMO_JWT_SECRET";

/// The admin account the demo creates.
pub const ADMIN_NAME: &str = "demo";
/// The daily token limit [`LIMITED_USER`] gets, small enough that the traffic reaches it.
pub const LIMITED_DAILY_TOKENS: u64 = 1_000;
/// Who the demo's changes are audited as.
const ACTOR: &str = "demo";
/// The demo's database file, in its temp dir.
const DB_FILE: &str = "tollgate.db";
/// How long the printed user token lasts.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3_600);
/// Longest wait for the alert rule's watcher to record the limited user's alerts.
const ALERT_WAIT: Duration = Duration::from_secs(3);
/// Longest wait for the writer to commit the traffic's rows before the summary is read.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Why the demo did not run. [`DemoError::is_usage`] errors are the user's to fix (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{flag} {addr}: the demo listens on loopback only (it prints its admin password and a \
         user token); use 127.0.0.1"
    )]
    NotLoopback {
        flag: &'static str,
        addr: SocketAddr,
    },
    #[error(
        "{addr} is taken (is a gateway already running?): choose another address for the \
         {what} with {flag}, e.g. {flag} 127.0.0.1:0 for a free port"
    )]
    PortTaken {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot listen on {addr} for the {what} ({flag}): {source}")]
    Listen {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot make the demo's temp dir: {0}")]
    TempDir(std::io::Error),
    #[error("no randomness for the demo's secrets: {0}")]
    Random(String),
    #[error("cannot start the built-in fake upstream: {0}")]
    Fake(std::io::Error),
    #[error(transparent)]
    Start(#[from] crate::serve::StartError),
    #[error(transparent)]
    Admin(#[from] crate::admin::StartError),
    #[error("demo set-up: {0}")]
    Setup(String),
}

impl DemoError {
    /// A mistake in the command line or the configuration file (exit 2), not a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, DemoError::Config(_) | DemoError::NotLoopback { .. })
    }
}

/// What the command line asks of the demo.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The proxy listener; default: the file's `server.listen` (on 127.0.0.1 if it is not
    /// loopback).
    pub listen: Option<SocketAddr>,
    /// The admin listener; default: the file's `admin.listen`, likewise.
    pub admin_listen: Option<SocketAddr>,
    /// Keep the temp dir (and its database) when the demo stops.
    pub keep: bool,
}

/// The random secrets of one demo run.
struct Secrets {
    openai_key: Secret,
    gemini_key: Secret,
    jwt_secret: Secret,
    admin_password: String,
}

impl Secrets {
    fn new() -> Result<Secrets, DemoError> {
        Ok(Secrets {
            openai_key: Secret::new(format!("sk-demo-{}", random_hex(24)?)),
            gemini_key: Secret::new(format!("AIza-demo-{}", random_hex(24)?)),
            jwt_secret: Secret::new(random_hex(32)?),
            admin_password: password()?,
        })
    }

    /// The lookup the demo's configuration reads its secrets through.
    fn env(&self) -> crate::reload::Env {
        let (openai, gemini, jwt) = (
            self.openai_key.clone(),
            self.gemini_key.clone(),
            self.jwt_secret.clone(),
        );
        Arc::new(move |name: &str| match name {
            OPENAI_KEY_ENV => Some(openai.expose().to_string()),
            GEMINI_KEY_ENV => Some(gemini.expose().to_string()),
            JWT_SECRET_ENV => Some(jwt.expose().to_string()),
            _ => None,
        })
    }
}

/// A demo ready to run: its validated configuration (for the caller to set up logging from),
/// its secrets and its temp dir.
pub struct Prepared {
    /// The configuration the demo's gateway runs on.
    pub config: Config,
    secrets: Secrets,
    dir: tempfile::TempDir,
    keep: bool,
}

/// Make the demo's configuration from `file` (the configuration file as loaded, with its
/// `TOLLGATE_*` overrides), its secrets and its temp dir. The fake upstream's address is not
/// known yet: the providers point at a placeholder that [`run`] replaces.
pub fn prepare(file: RawConfig, options: &Options) -> Result<Prepared, DemoError> {
    let listen = listen_addr(options.listen, file.server.listen, "--listen")?;
    let admin_listen = listen_addr(options.admin_listen, file.admin.listen, "--admin-listen")?;
    let secrets = Secrets::new()?;
    let dir = tempfile::Builder::new()
        .prefix("tollgate-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let placeholder = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
    let raw = demo_config(
        file,
        listen,
        admin_listen,
        dir.path().join(DB_FILE),
        placeholder,
    );
    let config = Config::from_raw(raw, &*secrets.env())?;
    Ok(Prepared {
        config,
        secrets,
        dir,
        keep: options.keep,
    })
}

/// The address a listener binds: the flag's (loopback only), else the file's, moved to
/// 127.0.0.1 when the file's is not loopback.
fn listen_addr(
    flag_value: Option<SocketAddr>,
    file: SocketAddr,
    flag: &'static str,
) -> Result<SocketAddr, DemoError> {
    match flag_value {
        Some(addr) if addr.ip().is_loopback() => Ok(addr),
        Some(addr) => Err(DemoError::NotLoopback { flag, addr }),
        None if file.ip().is_loopback() => Ok(file),
        None => Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            file.port(),
        )),
    }
}

/// The shipped configuration with what the demo must change, and nothing else: the listeners,
/// on loopback in plain HTTP (a file's certificates are for its own host names); no file watch (the configuration is made here, not read again); `[auth]` HS256 with the
/// demo's secret; the store a SQLite file at `db`; logs at `warn` (the alert log lines at
/// `error`: the dashboard's Alerts page lists the alerts); every provider's upstream the fake at `fake` and its key the demo's,
/// with an OpenAI and a Gemini provider added if the file has none of that kind; the demo's
/// alert rule instead of the file's rules, and no webhooks (nothing leaves the machine).
/// Limits, prices, timeouts and the other sections stay as the file says.
pub fn demo_config(
    mut raw: RawConfig,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    db: PathBuf,
    fake: SocketAddr,
) -> RawConfig {
    raw.server.listen = listen;
    raw.admin.listen = admin_listen;
    raw.server.tls = None;
    raw.admin.tls = None;
    raw.server.watch_config = false;
    raw.server.upstream_ca_file = None;
    raw.auth = AuthConfig {
        jwt_secret_env: JWT_SECRET_ENV.into(),
        ..AuthConfig::default()
    };
    raw.store = StoreConfig {
        path: db,
        ..StoreConfig::default()
    };
    raw.log = LogConfig {
        level: "warn,tollgate::alerts=error".into(),
        ..raw.log
    };
    for kind in [ProviderKind::Openai, ProviderKind::Gemini] {
        if !raw.providers.iter().any(|p| p.kind == kind) {
            raw.providers.push(ProviderConfig {
                name: kind.as_str().into(),
                kind,
                prefix: format!("/{}", kind.as_str()),
                upstream: String::new(),
                api_key_env: String::new(),
                unknown_endpoints: UnknownEndpoints::Forward,
            });
        }
    }
    for p in &mut raw.providers {
        p.upstream = format!("http://{fake}");
        p.api_key_env = match p.kind {
            ProviderKind::Openai => OPENAI_KEY_ENV,
            ProviderKind::Gemini => GEMINI_KEY_ENV,
        }
        .into();
    }
    raw.alerts = vec![AlertRule {
        name: Some("demo: a user near their limit".into()),
        kind: Kind::UserLimit,
        percent: Some(Percent::Many(vec![80.0, 100.0])),
        windows: Some(vec![Span::Day]),
        window: None,
        usd: None,
        minutes: None,
        min_calls: None,
        rows: None,
        seconds: None,
        webhooks: None,
    }];
    raw.webhooks = Vec::new();
    raw
}

/// Run the demo: start everything, drive the traffic, print the summary and the sign-in to
/// `out`, serve until SIGINT/SIGTERM, stop gracefully and clean up.
pub async fn run(prepared: Prepared, out: &mut dyn Write) -> Result<(), DemoError> {
    let Prepared {
        config,
        secrets,
        dir,
        keep,
    } = prepared;
    // Installed first, so a signal during start-up or the traffic still stops the demo cleanly.
    let signal = crate::serve::shutdown_signal().map_err(crate::serve::StartError::Io)?;
    tokio::pin!(signal);

    let listener = bind(config.raw.server.listen, "proxy", "--listen").await?;
    let admin_listener = bind(config.raw.admin.listen, "dashboard", "--admin-listen").await?;
    let fake_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(DemoError::Fake)?;
    let fake_addr = fake_listener.local_addr().map_err(DemoError::Fake)?;
    let fake = tollgate_fake_upstream::Fake::new(tollgate_fake_upstream::Settings {
        defaults: tollgate_fake_upstream::Defaults {
            chunks: traffic::FAKE_CHUNKS,
            chunk_delay_ms: traffic::FAKE_CHUNK_DELAY_MS,
            head_delay_ms: traffic::FAKE_HEAD_DELAY_MS,
        },
        // The fake refuses a call without the key Tollgate holds, and counts any client token
        // that reaches it.
        expect_openai_key: Some(secrets.openai_key.expose().to_string()),
        expect_gemini_key: Some(secrets.gemini_key.expose().to_string()),
        chunked_json: false,
    });
    let fake_task = tokio::spawn(tollgate_fake_upstream::serve(
        fake_listener,
        Arc::clone(&fake),
    ));

    let mut raw = config.raw.clone();
    for p in &mut raw.providers {
        p.upstream = format!("http://{fake_addr}");
    }
    let env = secrets.env();
    let config = Config::from_raw(raw, &*env)?;
    let running = match crate::serve::start_on_with(
        config,
        listener,
        crate::serve::Options {
            config_path: None,
            env: Some(env),
        },
    )
    .await
    {
        Ok(running) => running,
        Err(e) => {
            fake_task.abort();
            return Err(e.into());
        }
    };
    let started = set_up(&running, &secrets, admin_listener).await;
    let admin = match started {
        Ok(admin) => admin,
        Err(e) => {
            running.shutdown().await;
            fake_task.abort();
            return Err(e);
        }
    };

    let config = running.config();
    let proxy = running.addr;
    let db = dir.path().join(DB_FILE);
    let _ = writeln!(
        out,
        "Tollgate demo: the gateway in front of a built-in fake OpenAI and Gemini.\n\
         No provider keys; nothing leaves this machine.\nDatabase: {} ({})\n",
        db.display(),
        if keep {
            "kept when the demo stops: --keep"
        } else {
            "deleted when the demo stops"
        }
    );
    let _ = writeln!(
        out,
        "Sending a little traffic through the proxy at http://{proxy} as {}…",
        DEMO_USERS.map(|u| u.id).join(", ")
    );
    let _ = out.flush();
    let script = traffic::drive(proxy, &config, &secrets.jwt_secret);
    let report = tokio::select! {
        report = script => Some(report),
        () = &mut signal => None,
    };
    if let Some(report) = report {
        wait_for_rows(&*running.store).await;
        summary(out, &running, &report, &fake.stats).await;
        let _ = writeln!(out);
        let dashboard = format!("http://{}/", admin.addr);
        let _ = writeln!(out, "  Dashboard: {dashboard}");
        let _ = writeln!(
            out,
            "  Sign in:   {ADMIN_NAME} / {}",
            secrets.admin_password
        );
        if !crate::admin::dashboard_built() {
            let _ = writeln!(
                out,
                "  (This binary has no dashboard files, so the page says how to build them: \
                 scripts/run does. The admin API works meanwhile.)"
            );
        }
        let _ = writeln!(out);
        if let Some(curl) = curl_example(&config, proxy, &secrets.jwt_secret) {
            let _ = writeln!(
                out,
                "Make a call of your own, as {} (a token of this demo only):\n\n{curl}\n",
                DEMO_USERS[0].id
            );
        }
        let _ = writeln!(
            out,
            "Press Ctrl-C to stop{}.",
            if keep { "" } else { " (and delete everything)" }
        );
        let _ = out.flush();
        (&mut signal).await;
    }

    admin.shutdown().await;
    running.shutdown().await;
    fake_task.abort();
    let _ = fake_task.await;
    if keep {
        let kept = dir.keep();
        let _ = writeln!(
            out,
            "\nStopped. The demo's database is kept at {}.",
            kept.join(DB_FILE).display()
        );
    } else {
        let path = dir.path().to_path_buf();
        if let Err(e) = dir.close() {
            let _ = writeln!(
                out,
                "\nStopped, but {} could not be deleted: {e}",
                path.display()
            );
            return Ok(());
        }
        let _ = writeln!(out, "\nStopped. The demo's database is deleted.");
    }
    Ok(())
}

/// Bind a listener, or say which flag chooses another address.
async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            DemoError::PortTaken { what, flag, addr }
        } else {
            DemoError::Listen {
                what,
                flag,
                addr,
                source,
            }
        }
    })
}

/// The admin account, the limited user's limit, and the admin listener.
async fn set_up(
    running: &crate::serve::Running,
    secrets: &Secrets,
    admin_listener: TcpListener,
) -> Result<crate::admin::AdminServer, DemoError> {
    let password = secrets.admin_password.clone();
    let password_hash = tokio::task::spawn_blocking(move || crate::admin::hash_password(&password))
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?
        .map_err(DemoError::Setup)?;
    let added = running
        .store
        .commit(Work {
            actor: ACTOR.into(),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            op: Op::AddAccount {
                name: ADMIN_NAME.into(),
                password_hash,
            },
        })
        .await
        .map_err(|e| DemoError::Setup(format!("cannot add the admin account: {e}")))?;
    if added != (Committed::Account { changed: true }) {
        return Err(DemoError::Setup(format!(
            "the admin account was not added: {added:?}"
        )));
    }
    crate::admin::UserActions::new(Arc::clone(&running.store), Arc::clone(&running.ledger))
        .set_limits(
            ACTOR,
            LIMITED_USER,
            OverridesPatch {
                daily_tokens: Some(Some(LIMITED_DAILY_TOKENS)),
                ..OverridesPatch::default()
            },
        )
        .await
        .map_err(|e| DemoError::Setup(format!("cannot set {LIMITED_USER}'s limit: {e}")))?;
    Ok(crate::admin::start(running.admin_handles(), admin_listener).await?)
}

/// Wait (bounded) until the writer has committed every row handed to it.
async fn wait_for_rows(store: &dyn Store) {
    let deadline = Instant::now() + FLUSH_WAIT;
    while store.writer_stats().queue_depth > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What was recorded, per user, as the store has it, and what the fake upstream saw.
async fn summary(
    out: &mut dyn Write,
    running: &crate::serve::Running,
    report: &traffic::Report,
    fake: &tollgate_fake_upstream::Stats,
) {
    let _ = writeln!(
        out,
        "Sent {} calls: OpenAI chat completions (plain and streamed), embeddings, Gemini \
         generateContent and streamGenerateContent (SSE and JSON array).\n",
        report.calls.len()
    );
    let today = crate::calendar::Today::now(running.ledger.timezone().clone());
    let page = running
        .store
        .users_page(UsersQuery {
            search: None,
            sort: UserSort::Id,
            desc: false,
            limit: 50,
            offset: 0,
            today: today.day(),
            month_start: today.month_start(),
            plan: None,
        })
        .await;
    let _ = writeln!(
        out,
        "  {:<8} {:>6} {:>8} {:>9} {:>11}",
        "user", "calls", "refused", "tokens", "cost (USD)"
    );
    match page {
        Ok(page) => {
            for user in DEMO_USERS {
                let Some(s) = page.users.iter().find(|s| s.id == user.id) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "  {:<8} {:>6} {:>8} {:>9} {:>11.6}",
                    user.id,
                    s.today.calls,
                    report.refused(user.id),
                    thousands(s.today.total_tokens),
                    s.today.cost_nano_usd as f64 / 1e9
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  (the recorded usage could not be read: {e})");
        }
    }
    let _ = writeln!(out);
    match report.refusal() {
        Some(r) => {
            let _ = writeln!(
                out,
                "{LIMITED_USER}'s daily limit is {} tokens: call {} was refused before reaching \
                 the provider — {} {:?}.",
                thousands(LIMITED_DAILY_TOKENS as i64),
                r.nth,
                r.status,
                r.message
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{LIMITED_USER} did not reach her daily limit of {} tokens.",
                thousands(LIMITED_DAILY_TOKENS as i64)
            );
        }
    }
    for failed in report.failures() {
        let _ = writeln!(
            out,
            "Unexpected: {} {} answered {} {:?}",
            failed.user, failed.label, failed.status, failed.message
        );
    }
    let levels = limit_alerts(&*running.store).await;
    if !levels.is_empty() {
        let _ = writeln!(
            out,
            "The demo's alert rule fired for {LIMITED_USER}: {} (the dashboard's Alerts page).",
            levels.join(", ")
        );
    }
    let (requests, leaks, unauthorized) = (
        fake.requests.load(Ordering::Relaxed),
        fake.leaks.load(Ordering::Relaxed),
        fake.unauthorized.load(Ordering::Relaxed),
    );
    if leaks == 0 && unauthorized == 0 {
        let _ = writeln!(
            out,
            "The fake providers got {requests} calls, every one with the provider key Tollgate \
             holds and none with a user's token."
        );
    } else {
        let _ = writeln!(
            out,
            "Unexpected: the fake providers got {requests} calls, {unauthorized} without \
             Tollgate's provider key and {leaks} with a user's token."
        );
    }
}

/// The levels of the alerts fired for [`LIMITED_USER`], oldest first, once the last threshold
/// (100%) is among them or [`ALERT_WAIT`] has passed: the watcher runs beside the writer.
async fn limit_alerts(store: &dyn Store) -> Vec<String> {
    let deadline = Instant::now() + ALERT_WAIT;
    let since = jiff::Timestamp::now().as_millisecond() - 3_600_000;
    loop {
        let mut levels: Vec<String> = match store.alerts_page(None, 20, since).await {
            Ok(page) => page
                .alerts
                .into_iter()
                .filter(|a| a.subject == LIMITED_USER)
                .map(|a| a.level)
                .collect(),
            Err(_) => Vec::new(),
        };
        levels.reverse();
        if levels.iter().any(|l| l.ends_with("100%")) || Instant::now() >= deadline {
            return levels;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A curl command for the first demo user's own call through the first OpenAI provider.
fn curl_example(config: &Config, proxy: SocketAddr, secret: &Secret) -> Option<String> {
    let prefix = &config
        .providers
        .iter()
        .find(|p| p.kind == ProviderKind::Openai)?
        .prefix;
    let user = &DEMO_USERS[0];
    let token = crate::auth::mint(
        secret,
        &config.raw.auth,
        user.id,
        false,
        TOKEN_TTL,
        Some(user.email),
        Some(user.name),
    )
    .ok()?;
    Some(format!(
        "  curl http://{proxy}{prefix}/v1/chat/completions \\\n    -H 'Authorization: Bearer \
         {token}' \\\n    -H 'Content-Type: application/json' \\\n    -d \
         '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello \
         Tollgate\"}}]}}'"
    ))
}

/// `1234567` → `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` random bytes as hex.
fn random_hex(n: usize) -> Result<String, DemoError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| DemoError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// A password to type: four groups of four from letters and digits that cannot be misread
/// (about 79 bits).
fn password() -> Result<String, DemoError> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| DemoError::Random(e.to_string()))?;
    let mut out = String::with_capacity(19);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i.is_multiple_of(4) {
            out.push('-');
        }
        // 256 is not a multiple of 31: the first 8 letters come up slightly more often (9/256
        // instead of 8/256), which costs well under a bit.
        out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn shipped() -> RawConfig {
        use figment::providers::{Format as _, Toml};
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
        RawConfig::from_figment(figment::Figment::new().merge(Toml::file(file))).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_demo_config_changes_only_what_a_demo_must() {
        let file = shipped();
        let raw = demo_config(
            file.clone(),
            addr("127.0.0.1:5002"),
            addr("127.0.0.1:3001"),
            PathBuf::from("/tmp/x/tollgate.db"),
            addr("127.0.0.1:4567"),
        );
        assert_eq!(raw.providers.len(), 2);
        for (p, f) in raw.providers.iter().zip(&file.providers) {
            assert_eq!(p.upstream, "http://127.0.0.1:4567");
            assert_eq!((&p.name, p.kind, &p.prefix), (&f.name, f.kind, &f.prefix));
        }
        assert_eq!(raw.providers[0].api_key_env, OPENAI_KEY_ENV);
        assert_eq!(raw.providers[1].api_key_env, GEMINI_KEY_ENV);
        assert_eq!(raw.auth.jwt_secret_env, JWT_SECRET_ENV);
        assert_eq!(raw.store.path, PathBuf::from("/tmp/x/tollgate.db"));
        assert!(!raw.server.watch_config);
        assert!(raw.log.level.starts_with("warn"));
        assert!(raw.webhooks.is_empty());
        assert_eq!(raw.alerts.len(), 1);
        // What the file says about limits and prices is what the demo runs on.
        assert_eq!(raw.limits.daily_tokens, file.limits.daily_tokens);
        assert_eq!(raw.pricing, file.pricing);
        assert_eq!(raw.server.max_request_bytes, file.server.max_request_bytes);
        // It validates with the demo's secrets alone.
        let secrets = Secrets::new().unwrap();
        let config = Config::from_raw(raw, &*secrets.env()).unwrap();
        assert_eq!(
            config.providers[0].api_key.expose(),
            secrets.openai_key.expose()
        );
    }

    #[test]
    fn a_missing_provider_kind_is_added_and_postgres_rs256_and_tls_replaced() {
        let mut file = shipped();
        file.providers.retain(|p| p.kind == ProviderKind::Gemini);
        file.store.backend = crate::config::StoreBackend::Postgres;
        file.auth.algorithms = vec![crate::config::JwtAlgorithm::RS256];
        let tls: crate::config::TlsConfig = toml::from_str(
            "cert_file = \"/etc/tollgate/cert.pem\"\nkey_file = \"/etc/tollgate/key.pem\"",
        )
        .unwrap();
        file.server.tls = Some(tls.clone());
        file.admin.tls = Some(tls);
        let raw = demo_config(
            file,
            addr("127.0.0.1:0"),
            addr("127.0.0.1:0"),
            PathBuf::from("/tmp/x/tollgate.db"),
            addr("127.0.0.1:4567"),
        );
        let kinds: Vec<_> = raw.providers.iter().map(|p| (p.kind, &*p.prefix)).collect();
        assert_eq!(
            kinds,
            [
                (ProviderKind::Gemini, "/gemini"),
                (ProviderKind::Openai, "/openai")
            ]
        );
        assert_eq!(raw.store.backend, crate::config::StoreBackend::Sqlite);
        assert!(raw.server.tls.is_none() && raw.admin.tls.is_none());
        let secrets = Secrets::new().unwrap();
        assert!(Config::from_raw(raw, &*secrets.env()).is_ok());
    }

    #[test]
    fn listeners_stay_on_loopback() {
        let file = addr("0.0.0.0:5002");
        assert_eq!(
            listen_addr(None, file, "--listen").unwrap(),
            addr("127.0.0.1:5002")
        );
        assert_eq!(
            listen_addr(None, addr("127.0.0.1:7000"), "--listen").unwrap(),
            addr("127.0.0.1:7000")
        );
        assert_eq!(
            listen_addr(Some(addr("[::1]:0")), file, "--listen").unwrap(),
            addr("[::1]:0")
        );
        let err = listen_addr(Some(addr("10.0.0.1:80")), file, "--listen").unwrap_err();
        assert!(err.is_usage());
        assert!(err.to_string().starts_with("--listen 10.0.0.1:80"), "{err}");
    }

    #[test]
    fn secrets_are_random_and_the_password_readable() {
        let (a, b) = (Secrets::new().unwrap(), Secrets::new().unwrap());
        assert_ne!(a.jwt_secret.expose(), b.jwt_secret.expose());
        assert_ne!(a.admin_password, b.admin_password);
        assert_eq!(a.admin_password.len(), 19);
        assert!(a.admin_password.chars().count() >= crate::admin::session::MIN_PASSWORD_CHARS);
        assert!(
            a.admin_password
                .split('-')
                .all(|g| g.len() == 4 && g.bytes().all(|c| c.is_ascii_alphanumeric()))
        );
        // Only the demo's names are answered: a real key in the environment is never read.
        assert_eq!((a.env())("OPENAI_API_KEY"), None);
        assert!((a.env())(JWT_SECRET_ENV).is_some());
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-12_345), "-12,345");
    }
}
