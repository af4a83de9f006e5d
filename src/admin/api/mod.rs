//! The admin API's endpoints, by group — `ops` (health, readiness, metrics, the OpenAPI
//! document), `users` (the list and one user's usage), `actions` (block, unblock, limits),
//! `usage` (system statistics, series, the CSV export), `audit`, `alerts`, `config` (the configuration in
//! force, reloads) — and the router that mounts them behind sign-in.
//!
//! Handlers turn parameters into a store query or an action and the store's plain values into
//! the documented shapes of `views`. Every error is `{"error":{"code","message"}}` (see
//! [`ApiError`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post, put};

pub(crate) use super::ErrorBody;
use super::{AdminState, ApiError, session};

pub(crate) mod actions;
pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod config;
pub(crate) mod ops;
pub(crate) mod usage;
pub(crate) mod users;

/// Longest page any list endpoint returns.
const MAX_PAGE: u32 = 500;
/// Longest user id accepted in a path (the proxy refuses longer subjects too).
const MAX_USER_ID_BYTES: usize = 256;

pub(crate) fn router(state: Arc<AdminState>) -> Router {
    let admin_only = Router::new()
        .route("/api/admin/me", get(session::me))
        .route("/api/admin/users", get(users::users))
        .route("/api/admin/plans", get(users::plans))
        .route("/api/admin/user/{id}/usage", get(users::user_usage))
        .route("/api/admin/user/{id}/block", post(actions::block))
        .route("/api/admin/user/{id}/unblock", post(actions::unblock))
        .route("/api/admin/user/{id}/limits", put(actions::set_limits))
        .route("/api/admin/stats", get(usage::stats))
        .route("/api/admin/usage/series", get(usage::series))
        .route("/api/admin/usage.csv", get(usage::usage_csv))
        .route("/api/admin/audit", get(audit::audit))
        .route("/api/admin/alerts", get(alerts::alerts))
        .route("/api/admin/config", get(config::config))
        .route("/api/admin/reload", post(config::reload))
        .route("/api/admin/openapi.json", get(ops::openapi))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            session::require_admin,
        ));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/admin/login", post(session::login))
        .route("/api/admin/logout", post(session::logout))
        .merge(admin_only)
        .fallback(super::ui::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(session::same_origin))
        .layer(middleware::map_response(no_store))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            super::host::allowed_host,
        ))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method (changes are POST or PUT)",
    )
}

/// Admin answers carry user data: never cache them.
async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn user_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::invalid(e.body_text()))?;
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::invalid(format!(
            "a user id has 1 to {MAX_USER_ID_BYTES} bytes"
        )));
    }
    Ok(id)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(t)| t).map_err(|e| {
        let status = e.status();
        let code = "invalid_request";
        ApiError::new(status, code, e.body_text())
    })
}

fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match limit.unwrap_or(default) {
        0 => Err(ApiError::invalid("limit must be at least 1")),
        n if n > MAX_PAGE => Err(ApiError::invalid(format!(
            "limit must be at most {MAX_PAGE}"
        ))),
        n => Ok(n),
    }
}
