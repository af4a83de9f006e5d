//! The audit trail, read-only: no endpoint changes it.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{page_limit, query};
use crate::admin::views::AuditPage;
use crate::admin::{AdminState, ApiError};

/// `GET /api/admin/audit` parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only entries about this target (usually a user id).
    pub target: Option<String>,
    /// Entries older than this id (the previous page's `next_cursor`).
    pub cursor: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The audit trail: every admin action, newest first. Read-only: no endpoint changes it.
#[utoipa::path(get, path = "/api/admin/audit", tag = "audit", params(AuditParams),
    responses(
        (status = 200, description = "Audit entries", body = AuditPage),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn audit(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let p = query(params)?;
    let limit = page_limit(p.limit, 100)?;
    let (target, cursor) = (p.target.filter(|t| !t.is_empty()), p.cursor);
    let mut entries = state
        .store
        .audit_page(target.as_deref(), cursor, limit + 1)
        .await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor = if more {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries: entries.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
