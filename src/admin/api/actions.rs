//! Actions on a user: block, unblock, limits — each committed with its audit row before the
//! user's next call sees it (see `admin::actions`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::{json, user_id};
use crate::admin::session::Admin;
use crate::admin::views::{ControlsChange, Effective};
use crate::admin::{AdminState, ApiError, JsonObject};
use crate::quota::{Change, OverridesPatch, UserControls};

/// `POST /api/admin/user/{id}/block` body (optional).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// Shown to operators (not to the user), up to 500 characters.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

fn controls_change(
    state: &AdminState,
    user: String,
    change: Change<UserControls>,
) -> ControlsChange {
    let config = state.config();
    let plan = state.ledger.status(&user).plan;
    let plan = config.plans.for_name(plan.as_deref());
    let effective = Effective::of(&config, plan.map(|p| &**p), &change.after.overrides);
    ControlsChange {
        user,
        before: change.before.into(),
        after: change.after.into(),
        limits: effective.limits.into(),
        limit_sources: effective.sources,
    }
}

/// Block a user: their next call is refused with 403 (calls in flight finish).
#[utoipa::path(post, path = "/api/admin/user/{id}/block", tag = "actions",
    params(("id" = String, Path, description = "User id (JWT subject)")),
    request_body(content = Option<BlockRequest>, description = "Optional reason"),
    responses(
        (status = 200, description = "Blocked", body = ControlsChange),
        (status = 400, description = "Bad id or body", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin, or a cross-origin request", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn block(
    State(state): State<Arc<AdminState>>,
    Extension(admin): Extension<Admin>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<ControlsChange>, ApiError> {
    let id = user_id(path)?;
    // No body, or JSON `null` (as documented: the body is optional), means no reason.
    let request: BlockRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BlockRequest::default()
    } else {
        serde_json::from_slice::<Option<JsonObject<BlockRequest>>>(&body)
            .map_err(|e| ApiError::invalid(format!("the body must be {{\"reason\": \"…\"}}: {e}")))?
            .map_or_else(BlockRequest::default, |JsonObject(r)| r)
    };
    let reason = request
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid("reason must be at most 500 characters"));
    }
    let change = state.actions.block(&admin.actor, &id, reason).await?;
    tracing::info!(user = %id, "user blocked by an admin");
    Ok(Json(controls_change(&state, id, change)))
}

/// Unblock a user.
#[utoipa::path(post, path = "/api/admin/user/{id}/unblock", tag = "actions",
    params(("id" = String, Path, description = "User id (JWT subject)")),
    responses(
        (status = 200, description = "Unblocked", body = ControlsChange),
        (status = 400, description = "Bad id", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin, or a cross-origin request", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn unblock(
    State(state): State<Arc<AdminState>>,
    Extension(admin): Extension<Admin>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ControlsChange>, ApiError> {
    let id = user_id(path)?;
    let change = state.actions.unblock(&admin.actor, &id).await?;
    tracing::info!(user = %id, "user unblocked by an admin");
    Ok(Json(controls_change(&state, id, change)))
}

/// Deserialize a present field (even `null`) as `Some(...)`, so that an absent field (`None`)
/// can mean "leave as it is" and `null` "clear".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PUT /api/admin/user/{id}/limits` body: a field left out stays as it is, `null` clears the
/// override (back to the `[limits]` default), a value sets it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub daily_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub monthly_tokens: Option<Option<u64>>,
    /// USD.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 1e9)]
    pub daily_cost_usd: Option<Option<f64>>,
    /// USD.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 1e9)]
    pub monthly_cost_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, format = "uint32", minimum = 1, maximum = 4_294_967_295_u64)]
    pub requests_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, format = "uint32", minimum = 1, maximum = 4_294_967_295_u64)]
    pub max_concurrent: Option<Option<u32>>,
}

fn usd_field(key: &'static str, v: Option<Option<f64>>) -> Result<Option<Option<u64>>, ApiError> {
    v.map(|v| {
        v.map(|usd| {
            crate::config::usd_to_nano_usd(usd).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    format!("`{key}`: must be a non-negative amount of USD"),
                )
            })
        })
        .transpose()
    })
    .transpose()
}

/// Set or clear a user's limit overrides; the user's next call is judged by them.
#[utoipa::path(put, path = "/api/admin/user/{id}/limits", tag = "actions",
    params(("id" = String, Path, description = "User id (JWT subject)")),
    request_body = LimitsRequest,
    responses(
        (status = 200, description = "Limits changed", body = ControlsChange),
        (status = 400, description = "Bad id or malformed body", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin, or a cross-origin request", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
        (status = 422, description = "A value out of range", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn set_limits(
    State(state): State<Arc<AdminState>>,
    Extension(admin): Extension<Admin>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<JsonObject<LimitsRequest>>, JsonRejection>,
) -> Result<Json<ControlsChange>, ApiError> {
    let id = user_id(path)?;
    let JsonObject(req) = json(body)?;
    let patch = OverridesPatch {
        daily_tokens: req.daily_tokens,
        monthly_tokens: req.monthly_tokens,
        daily_cost_nano_usd: usd_field("daily_cost_usd", req.daily_cost_usd)?,
        monthly_cost_nano_usd: usd_field("monthly_cost_usd", req.monthly_cost_usd)?,
        requests_per_minute: req.requests_per_minute,
        max_concurrent: req.max_concurrent,
    };
    let change = state.actions.set_limits(&admin.actor, &id, patch).await?;
    tracing::info!(user = %id, "user limits changed by an admin");
    Ok(Json(controls_change(&state, id, change)))
}
