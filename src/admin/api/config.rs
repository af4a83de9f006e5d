//! The configuration in force (secrets masked) and reloads of gateway.toml.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;

use crate::admin::session::Admin;
use crate::admin::views::{ConfigView, ReloadView};
use crate::admin::{AdminState, ApiError};

/// The effective configuration (defaults filled in), secrets masked.
#[utoipa::path(get, path = "/api/admin/config", tag = "configuration",
    responses(
        (status = 200, description = "The configuration in force", body = ConfigView),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn config(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<ConfigView>, ApiError> {
    let config = state.config();
    let value = serde_json::to_value(config.raw.shown()).map_err(ApiError::internal)?;
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert(
        config.raw.auth.jwt_secret_env.clone(),
        config.jwt_secret.is_some(),
    );
    for p in &config.providers {
        if let Some(raw) = config.raw.providers.iter().find(|r| r.name == *p.name) {
            secrets.insert(raw.api_key_env.clone(), !p.api_key.expose().is_empty());
        }
    }
    Ok(Json(ConfigView {
        config: value,
        secrets,
        toml: config.masked(),
    }))
}

/// Re-read gateway.toml now (as a file change or SIGHUP would). An invalid file is refused and
/// the running configuration stays; both are audited.
#[utoipa::path(post, path = "/api/admin/reload", tag = "configuration",
    responses(
        (status = 200, description = "Reloaded, or unchanged", body = ReloadView),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin, or a cross-origin request", body = super::ErrorBody),
        (status = 422, description = "The file is invalid; nothing changed", body = super::ErrorBody),
        (status = 503, description = "No configuration file to reload, or the reload failed", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn reload(
    State(state): State<Arc<AdminState>>,
    Extension(admin): Extension<Admin>,
) -> Result<Json<ReloadView>, ApiError> {
    use crate::reload::{ReloadError, Trigger};
    match state
        .reloader
        .reload(Trigger::Api { actor: admin.actor })
        .await
    {
        Ok(outcome) => Ok(Json(ReloadView(outcome))),
        Err(e @ ReloadError::Invalid(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("the configuration file was refused; the running one stays: {e}"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
    }
}
