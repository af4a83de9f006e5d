//! Listeners and the process lifecycle — the top of the program, which wires the others: binds
//! the proxy listener, serves HTTP/1.1 and HTTP/2 on it (cleartext with prior knowledge, or
//! HTTPS with `[server.tls]`: the handshake in each connection's task, HTTP/2 chosen by ALPN),
//! fetches the key set of `auth.jwks_url` (and starts its refresh task), builds the upstream
//! client, opens the store and seeds the quota ledger from it, creates the metrics and the
//! configuration [`Reloader`] (with its file watch; SIGHUP in [`run`], which also re-reads the
//! listeners' certificates), starts the admin listener with the handles it needs
//! ([`AdminHandles`]), and on shutdown stops accepting, lets in-flight calls finish within the
//! grace period, cuts the rest (their rows are still written), and flushes every row before
//! returning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::access_log::AccessLog;
use crate::admin::AdminHandles;
use crate::auth::RefreshObserver;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Runtime};
use crate::quota::Ledger;
use crate::reload::{Env, ReloadError, ReloadOutcome, Reloader, Trigger};
use crate::store::{RowObserver, Store, StoreError};
use crate::tls::{ServerTls, TlsError};

/// Why the gateway did not start. Each message names the setting involved.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key set of `auth.jwks_url` could not be fetched, or holds no usable key.
    #[error(transparent)]
    Jwks(#[from] crate::auth::JwksError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The store could not be opened (or migrated).
    #[error("cannot open the store at {path}: {source}")]
    Store { path: String, source: StoreError },
    /// The quota counters could not be read from the store.
    #[error("cannot read usage totals from {path}: {source}")]
    Seed { path: String, source: StoreError },
    /// The upstream client could not be built.
    #[error(transparent)]
    Client(#[from] crate::upstream::ClientError),
    /// The configuration cannot be served (e.g. a provider key that is no header value).
    #[error(transparent)]
    Runtime(#[from] crate::proxy::RuntimeError),
    /// The admin listener refused to start.
    #[error(transparent)]
    Admin(#[from] crate::admin::StartError),
    /// `[server.tls]`: the certificate or its key cannot be used (the message names the key
    /// and the file).
    #[error("cannot serve HTTPS: {0}")]
    Tls(#[from] TlsError),
    /// Signal handlers or the listener's own address.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A started gateway.
pub struct Running {
    /// The proxy listener's bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Everything the gateway stores and reads.
    pub store: Arc<dyn Store>,
    /// The quota ledger the proxy admits calls with (the admin side acts on it).
    pub ledger: Arc<Ledger>,
    /// The gateway's metrics; `metrics.render()` is the body of `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Reloads the configuration file and reads the configuration in force.
    pub reloader: Reloader,
    /// `[server.tls]`: the proxy listener's certificate (reload it with [`ServerTls::reload`]).
    pub tls: Option<ServerTls>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How a gateway finds its configuration again when it reloads.
#[derive(Clone, Default)]
pub struct Options {
    /// The file to reload; default: the file the configuration was loaded from
    /// (`Config::source`). Without one, reloads fail with `ReloadError::NoFile`.
    pub config_path: Option<PathBuf>,
    /// Reads the secrets the file names; default: the process environment.
    pub env: Option<Env>,
}

impl Running {
    /// The configuration in force (what the next call starts with).
    pub fn config(&self) -> Arc<Config> {
        self.reloader.config()
    }

    /// What the admin listener needs of this gateway.
    pub fn admin_handles(&self) -> AdminHandles {
        AdminHandles {
            store: Arc::clone(&self.store),
            ledger: Arc::clone(&self.ledger),
            metrics: Arc::clone(&self.metrics),
            reloader: self.reloader.clone(),
        }
    }

    /// Reload the configuration file now (see [`Reloader::reload`]).
    pub async fn reload(&self, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        self.reloader.reload(trigger).await
    }

    /// Stop accepting, let in-flight calls finish (up to `server.shutdown_grace_secs`), cut
    /// what is left, and flush every usage row. Returns when the store is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Start the gateway on the configured listener.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let addr = config.raw.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen {
            key: "server.listen",
            addr,
            source,
        })?;
    start_on(config, listener).await
}

/// Start the gateway on an already bound listener (tests bind 127.0.0.1:0).
pub async fn start_on(config: Config, listener: TcpListener) -> Result<Running, StartError> {
    start_on_with(config, listener, Options::default()).await
}

/// [`start_on`] with [`Options`].
pub async fn start_on_with(
    config: Config,
    listener: TcpListener,
    options: Options,
) -> Result<Running, StartError> {
    let config_path = options.config_path.or_else(|| config.source.clone());
    let env = options
        .env
        .unwrap_or_else(|| Arc::new(|name: &str| std::env::var(name).ok()));
    let config = Arc::new(config);
    let addr = listener.local_addr()?;
    // Before anything is opened: a certificate that cannot serve stops the start here.
    let tls = match &config.raw.server.tls {
        Some(files) => Some(ServerTls::load("server.tls", files)?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    // The login provider's keys before anything else: without them no user could call.
    if let Some(jwks) = config.jwks() {
        let keys = jwks
            .start(Some(Arc::clone(&metrics) as Arc<dyn RefreshObserver>))
            .await?;
        tracing::info!(url = %jwks.settings().url, keys, "auth.jwks_url: signing keys fetched");
    }
    let path = || crate::store::describe(&config.raw.store, &*env);
    // Counted, then logged (the access log), then seen by the alert rules, on the writer's
    // thread.
    let alert_tap = Arc::new(crate::alerts::watch::Tap::default());
    let observers: Vec<Arc<dyn RowObserver>> = vec![
        Arc::clone(&metrics) as Arc<dyn RowObserver>,
        Arc::new(AccessLog::new()),
        Arc::clone(&alert_tap) as Arc<dyn RowObserver>,
    ];
    let observer = Arc::new(observers) as Arc<dyn RowObserver>;
    let replica = replica_name(addr);
    let store = crate::store::open(
        &config.raw.store,
        config.timezone.clone(),
        Some(observer),
        &*env,
        &replica,
        crate::store::Role::Gateway,
    )
    .await
    .map_err(|source| StartError::Store {
        path: path(),
        source,
    })?;
    let ledger = Arc::new(Ledger::new(&config.raw.limits, config.timezone.clone()));
    // Today's and this month's totals, blocks and overrides: the counters survive restarts.
    let (today, month) = ledger.seed_days();
    let seed = match store.quota_seed(&today, &month).await {
        Ok(seed) => seed,
        Err(source) => {
            store.close().await;
            return Err(StartError::Seed {
                path: path(),
                source,
            });
        }
    };
    let seeded = ledger.seed(&seed);
    // Several gateways on one database: admissions spend leases on the shared budgets.
    store.share_limits(&ledger);
    if config.raw.store.retain_days > 0 {
        tokio::spawn(retention(Arc::clone(&store), config.raw.store.retain_days));
    }
    tracing::debug!(users = seeded, "quota counters seeded from the store");
    metrics.attach_store(Arc::clone(&store));
    let client = crate::upstream::client(&config);
    // Webhooks go out through a client of their own (the upstream's may be rebuilt by a reload).
    let alert_client = client.as_ref().ok().cloned();
    let runtime = client
        .map_err(StartError::from)
        .and_then(|client| Runtime::new(Arc::clone(&config), client).map_err(StartError::Runtime));
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let proxy = Arc::new(Proxy::new(
        runtime,
        Arc::clone(&store),
        Arc::clone(&ledger),
        Arc::clone(&metrics),
    ));
    let reloader = Reloader::new(
        config_path.clone(),
        env,
        Arc::clone(&proxy),
        Arc::clone(&ledger),
        Arc::clone(&metrics),
        Arc::clone(&config),
        Arc::clone(&store),
    );
    let (stop, stop_rx) = watch::channel(false);
    if config.raw.server.watch_config && config_path.is_some() {
        // Without a watch the gateway still runs; SIGHUP and the admin API still reload.
        if let Err(e) = reloader.watch(stop_rx.clone()) {
            tracing::warn!(error = %e, "the configuration file is not watched; reload it with SIGHUP");
        }
    }
    if let Some(client) = alert_client {
        let gateway = config.raw.store.replica_id.clone().unwrap_or(replica);
        crate::alerts::start(
            alert_tap,
            Arc::clone(&store),
            Arc::clone(&ledger),
            reloader.clone(),
            Arc::clone(&metrics),
            client,
            gateway,
            stop_rx.clone(),
        );
    }
    if let Some(tls) = &tls
        && config.raw.server.watch_config
        && let Err(e) = tls.watch(stop_rx.clone())
    {
        tracing::warn!(error = %e, "the TLS certificate files are not watched; reload them with SIGHUP");
    }
    let task = tokio::spawn(accept_loop(
        listener,
        tls.clone(),
        proxy,
        Arc::clone(&config),
        stop_rx,
        Arc::clone(&store),
    ));
    tracing::info!(
        %addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        providers = config.providers.len(),
        "tollgate listening"
    );
    Ok(Running {
        addr,
        store,
        ledger,
        metrics,
        reloader,
        tls,
        stop,
        task,
    })
}

/// `store.retain_days`: a minute after start, then hourly, the calls older than that go (the
/// rollups stay). Runs until the process ends; a failure is logged and tried again next hour.
async fn retention(store: Arc<dyn crate::store::Store>, days: u32) {
    const ROWS_PER_BATCH: usize = 1_000;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut tick = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        tick.tick().await;
        let before = jiff::Timestamp::now().as_millisecond() - i64::from(days) * 86_400_000;
        match store.prune(before, ROWS_PER_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                calls = n,
                days,
                "store: calls past store.retain_days deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "store: old calls not deleted; next hour again"),
        }
    }
}

/// This gateway's default name in a shared database: the host name and the listen port.
fn replica_name(addr: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{host}:{}", addr.port())
}

/// Start, then run until SIGTERM or SIGINT, then stop gracefully. SIGHUP reloads the
/// configuration file and re-reads the listeners' TLS certificates.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Listen for the signals before accepting anything, so that a SIGTERM arriving right after
    // start-up still gets a graceful stop rather than the default action (and a SIGHUP a reload
    // rather than the end of the process).
    let signal = shutdown_signal()?;
    let hangups = reload_signal()?;
    let past_file_size = file_size_signal()?;
    let admin_listen = config.raw.admin.listen;
    let running = start(config).await?;
    let admin = match TcpListener::bind(admin_listen).await {
        Ok(listener) => crate::admin::start(running.admin_handles(), listener)
            .await
            .map_err(StartError::Admin),
        Err(source) => Err(StartError::Listen {
            key: "admin.listen",
            addr: admin_listen,
            source,
        }),
    };
    let admin = match admin {
        Ok(admin) => admin,
        Err(e) => {
            running.shutdown().await;
            return Err(e);
        }
    };
    let reloader = running.reloader.clone();
    let certificates: Vec<ServerTls> = running
        .tls
        .iter()
        .chain(admin.tls.iter())
        .cloned()
        .collect();
    let on_hangup = tokio::spawn(async move {
        let mut hangups = hangups;
        while hangups.next().await {
            // Errors are logged and audited by `reload`.
            let _ = reloader.reload(Trigger::Sighup).await;
            // A refused certificate is logged by `reload`; the one in use stays.
            for tls in &certificates {
                let _ = tls.reload(Trigger::Sighup.as_str()).await;
            }
        }
    });
    signal.await;
    on_hangup.abort();
    past_file_size.abort();
    tracing::info!("shutting down: no new connections; waiting for calls in flight");
    admin.shutdown().await;
    running.shutdown().await;
    tracing::info!("stopped; every usage row is written");
    Ok(())
}

/// A future that resolves at the first SIGTERM or SIGINT; the handlers are installed now.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, std::io::Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// SIGXFSZ, sent for a write past the file-size limit (`ulimit -f`, `LimitFSIZE=`), whose
/// default action ends the process — with every call in flight. Handled, the write fails with
/// `EFBIG` instead, which Tollgate treats as a full disk: a call whose journal entry cannot be
/// written is refused (503), a batch of rows is retried until the write succeeds again. The
/// returned task logs it (at most once a minute) until aborted.
fn file_size_signal() -> Result<tokio::task::JoinHandle<()>, std::io::Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut past = signal(SignalKind::from_raw(libc::SIGXFSZ))?;
        Ok(tokio::spawn(async move {
            let throttle = crate::telemetry::Throttle::new(Duration::from_secs(60));
            while past.recv().await.is_some() {
                if let Some(held_back) = throttle.admit("SIGXFSZ") {
                    tracing::error!(
                        since_last_report = held_back + 1,
                        "a write went past the process's file-size limit (SIGXFSZ): it failed \
                         and is handled as a full disk; raise the limit (ulimit -f)"
                    );
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        Ok(tokio::spawn(async {}))
    }
}

/// SIGHUP, as a stream of wake-ups; the handler is installed now.
struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    /// The next SIGHUP; false when no more can come (never on unix, at once elsewhere).
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.signal.recv().await.is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

fn reload_signal() -> Result<Hangups, std::io::Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Hangups {
            signal: signal(SignalKind::hangup())?,
        })
    }
    #[cfg(not(unix))]
    {
        Ok(Hangups {})
    }
}

/// Streams a client may open and cancel before Tollgate has accepted them (the rapid-reset
/// defence: past it the connection gets GOAWAY).
const HTTP2_MAX_PENDING_RESETS: usize = 20;
/// Streams Tollgate may reset for a client's protocol errors before closing its connection.
const HTTP2_MAX_LOCAL_ERROR_RESETS: usize = 256;

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    proxy: Arc<Proxy>,
    config: Arc<Config>,
    mut stop: watch::Receiver<bool>,
    store: Arc<dyn Store>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size((config.raw.server.max_header_bytes as usize).max(8192))
        .max_headers(config.raw.server.max_headers as usize);
    // HTTP/2: a bounded number of streams per connection, a bounded header list, and the
    // rapid-reset defence (a client that opens and cancels streams faster than they are
    // answered gets GOAWAY ENHANCE_YOUR_CALM); pings find peers that vanished.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.raw.server.max_header_bytes)
        .max_concurrent_streams(config.raw.server.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = JoinSet::new();

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = Arc::clone(&proxy);
                let service = service_fn(move |req| Arc::clone(&proxy).handle(req));
                // The TLS handshake, if any, happens in the connection's task (bounded by
                // `server.tls.handshake_timeout_ms`), never here.
                conns.spawn(crate::tls::serve_connection(
                    stream,
                    tls.clone(),
                    Arc::clone(&builder),
                    service,
                    graceful.watcher(),
                ));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);

    // The grace period in force now: it may have been reloaded since start.
    let grace = proxy.config().shutdown_grace();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "calls still in flight after the grace period: cutting them"
        );
    }
    // Dropping a connection drops its metered bodies, and each writes its row on drop.
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    drop(proxy);
    store.close().await;
}
