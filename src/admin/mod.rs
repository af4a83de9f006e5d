//! The admin side: its own listener (default `127.0.0.1:3001`) serving the admin API under
//! `/api/admin/`, the operations endpoints (`/healthz`, `/readyz`, `/metrics`) and the
//! dashboard at `/`.
//!
//! It is deliberately separate from the proxy: a different port (so it can stay on loopback
//! while the proxy faces clients) and a different framework (axum: the admin side has many small
//! routes and no hot path). It serves HTTPS with `[admin.tls]` (the handshake in each
//! connection's task, as on the proxy listener; the session cookie is then `Secure`). It gets a narrow set of handles ([`AdminHandles`]: the store, the
//! quota ledger, the metrics, the reload handle), never the running server. Nothing here runs
//! on the proxy's request path; admin actions reach the proxy only through the quota ledger
//! (block, unblock, limits) after the store committed them ([`actions`]), and the
//! configuration through the reload handle. The store does its I/O off the async runtime.
//!
//! Submodules: `session` (admin accounts, sign-in, sessions, CSRF, who the caller is),
//! `actions` (an operator's change: committed with its audit row, then applied), `api` (the
//! endpoints, by group), `views` (the documented response shapes, mapped from the store's
//! plain values), `csv` (the export's format), `openapi` (the OpenAPI 3.1 document generated
//! from the code), `ui` (the embedded dashboard).

pub mod actions;
mod api;
pub mod csv;
pub mod host;
pub mod openapi;
pub mod session;
mod ui;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::calendar::Today;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::quota::{InvalidPatch, Ledger};
use crate::reload::Reloader;
use crate::store::{Store, StoreError};
use crate::tls::ServerTls;

pub use actions::UserActions;
pub use session::{hash_password, verify_password};

/// What the admin side needs of a running gateway.
#[derive(Clone)]
pub struct AdminHandles {
    /// Everything stored: reads, and changes with their audit rows.
    pub store: Arc<dyn Store>,
    /// The proxy's quota counters: live quotas, and where committed changes are applied.
    pub ledger: Arc<Ledger>,
    pub metrics: Arc<Metrics>,
    /// The configuration in force, and reloads of it.
    pub reloader: Reloader,
}

/// Everything the admin handlers share.
pub struct AdminState {
    /// The configuration in force, and reloads of it.
    pub(crate) reloader: Reloader,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Arc<dyn Store>,
    /// Block, unblock and limit changes: committed, then applied to the ledger.
    pub(crate) actions: UserActions,
    pub(crate) sessions: session::Sessions,
    /// The listener itself speaks HTTPS (`[admin.tls]`): the session cookie is `Secure`.
    pub(crate) https: bool,
}

impl AdminState {
    /// The admin side of a started gateway.
    pub fn new(handles: AdminHandles) -> AdminState {
        let config = handles.reloader.config();
        AdminState {
            sessions: session::Sessions::new(&config),
            actions: UserActions::new(Arc::clone(&handles.store), Arc::clone(&handles.ledger)),
            reloader: handles.reloader,
            ledger: handles.ledger,
            metrics: handles.metrics,
            store: handles.store,
            https: false,
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.reloader.config()
    }

    /// "Today" in `limits.timezone`, now.
    pub(crate) fn today(&self) -> Today {
        Today::now(self.ledger.timezone().clone())
    }
}

// === errors ===

/// An admin API error: `{"error": {"code", "message"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

/// The JSON body of every admin API error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code for scripts and a sentence for people.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `invalid_request`,
    /// `rate_limited`, `conflict`, `internal_error`, `unavailable`, `host_not_allowed`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// A failure of Tollgate's own: logged with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "admin request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the admin request failed; the gateway's log says why",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Busy(_) => {
                tracing::warn!(error = %e, "admin request: the database stayed busy");
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is busy; try again",
                );
                err.retry_after = Some(1);
                err
            }
            StoreError::Invalid(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            StoreError::Backend(_) => ApiError::internal(e),
        }
    }
}

impl From<actions::ActionError> for ApiError {
    fn from(e: actions::ActionError) -> ApiError {
        match e {
            actions::ActionError::Invalid(e) => e.into(),
            actions::ActionError::Store(e) => e.into(),
        }
    }
}

impl From<InvalidPatch> for ApiError {
    fn from(e: InvalidPatch) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        resp
    }
}

// === request bodies ===

/// A request body that must be a JSON object, read as `T`.
///
/// serde's derived `Deserialize` also reads a struct from an array of its fields in order, so
/// `[null, null]` would be taken as `{"daily_tokens": null, "monthly_tokens": null}`. The API
/// documents objects only; anything else is refused like any other body of the wrong type.
pub(crate) struct JsonObject<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
            .map(JsonObject)
    }
}

// === the listener ===

/// The admin router with every route and layer.
pub fn router(state: Arc<AdminState>) -> Router {
    api::router(state)
}

/// Why the admin listener did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A non-loopback address, and nobody could sign in.
    #[error(
        "admin.listen = {0} is not a loopback address, and no admin could sign in: add an \
         account with `tollgate admin add NAME` or configure auth.admin_claim/admin_value"
    )]
    Exposed(SocketAddr),
    #[error("admin listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error("cannot read admin accounts: {0}")]
    Accounts(#[from] StoreError),
    /// `[admin.tls]`: the certificate or its key cannot be used.
    #[error("cannot serve the admin side over HTTPS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Check that the admin listener may bind `addr`: a non-loopback address only when admins can
/// sign in (an admin account exists, or admin JWTs are configured).
pub fn check_listen(addr: SocketAddr, config: &Config, accounts: u64) -> Result<(), StartError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let jwt_admins = !config.raw.auth.admin_claim.is_empty()
        && !config.raw.auth.admin_value.is_empty()
        && (config.jwt_secret.is_some() || config.jwt_public_key_pem.is_some());
    if accounts > 0 || jwt_admins {
        Ok(())
    } else {
        Err(StartError::Exposed(addr))
    }
}

/// A running admin listener.
pub struct AdminServer {
    pub addr: SocketAddr,
    /// `[admin.tls]`: the listener's certificate (reload it with `ServerTls::reload`).
    pub tls: Option<ServerTls>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Stop accepting and finish the requests in flight.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        // A dashboard holding a request open must not hold up the gateway's stop.
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Longest a client may take to send a request head (HTTP/1), as on the proxy listener.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve the admin side on `listener` until [`AdminServer::shutdown`]: HTTPS when the
/// configuration has `[admin.tls]` (its files read now; an unusable one is an error naming the
/// key and the path, and they are watched with `server.watch_config`).
pub async fn start(
    handles: AdminHandles,
    listener: TcpListener,
) -> Result<AdminServer, StartError> {
    let mut state = AdminState::new(handles);
    let addr = listener.local_addr()?;
    let config = state.config();
    let tls = match &config.raw.admin.tls {
        Some(files) => Some(ServerTls::load("admin.tls", files)?),
        None => None,
    };
    state.https = tls.is_some();
    let accounts = state.store.accounts().await?.len() as u64;
    check_listen(addr, &config, accounts)?;
    let app = router(Arc::new(state));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(tls) = &tls
        && config.raw.server.watch_config
        && let Err(e) = tls.watch(stop_rx.clone())
    {
        tracing::warn!(error = %e, "the admin TLS certificate files are not watched; reload them with SIGHUP");
    }
    let task = tokio::spawn(accept_loop(listener, tls.clone(), app, stop_rx));
    tracing::info!(
        %addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        "admin listening"
    );
    Ok(AdminServer {
        addr,
        tls,
        stop,
        task,
    })
}

/// Accept connections until `stop` changes; each is served in its own task (after its TLS
/// handshake, with `[admin.tls]`). Then wait for the requests in flight (the caller bounds it).
async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "admin listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // What axum's `ConnectInfo` reads: the sign-in rate limit is per address.
                let app = TowerToHyperService::new(app.clone());
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.call(req)
                });
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
    graceful.shutdown().await;
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Whether this binary serves the dashboard's pages (see [`ui`]): a debug build reads
/// `admin-ui/dist` from disk, a release build embeds it; either needs `npm run build` first.
pub fn dashboard_built() -> bool {
    ui::built()
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        a: Option<u32>,
        b: Option<String>,
    }

    #[test]
    fn a_json_object_body_refuses_the_array_form_of_a_struct() {
        let read = |s: &str| serde_json::from_str::<JsonObject<Body>>(s).map(|JsonObject(b)| b);
        assert_eq!(
            read(r#"{"a": 1}"#).unwrap(),
            Body {
                a: Some(1),
                b: None
            }
        );
        // serde alone takes this as {"a": 1, "b": "x"}.
        assert!(serde_json::from_str::<Body>(r#"[1, "x"]"#).is_ok());
        let err = read(r#"[1, "x"]"#).unwrap_err().to_string();
        assert!(err.contains("expected a JSON object"), "{err}");
        for other in ["null", "1", "\"x\"", "true"] {
            assert!(read(other).is_err(), "{other}");
        }
        // What the struct itself refuses stays refused.
        assert!(read(r#"{"a": 1, "c": 2}"#).is_err());
        assert!(read(r#"{"a": -1}"#).is_err());
    }
}
