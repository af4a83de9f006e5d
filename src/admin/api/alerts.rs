//! The alerts the `[[alerts]]` rules fired, read-only (the watcher records them).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{page_limit, query};
use crate::admin::views::AlertsPageView;
use crate::admin::{AdminState, ApiError};

/// `GET /api/admin/alerts` parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsParams {
    /// Alerts older than this id (the previous page's `next_cursor`).
    pub cursor: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Alerts fired by the `[[alerts]]` rules, newest first, with their webhook delivery state, and
/// the number fired in the last 24 hours.
#[utoipa::path(get, path = "/api/admin/alerts", tag = "alerts", params(AlertsParams),
    responses(
        (status = 200, description = "Alerts", body = AlertsPageView),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn alerts(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<AlertsParams>, QueryRejection>,
) -> Result<Json<AlertsPageView>, ApiError> {
    let p = query(params)?;
    let limit = page_limit(p.limit, 100)?;
    let since = jiff::Timestamp::now().as_millisecond() - 24 * 3_600_000;
    let mut page = state.store.alerts_page(p.cursor, limit + 1, since).await?;
    let more = page.alerts.len() > limit as usize;
    page.alerts.truncate(limit as usize);
    let next_cursor = if more {
        page.alerts.last().map(|a| a.id)
    } else {
        None
    };
    Ok(Json(AlertsPageView {
        alerts: page.alerts.into_iter().map(Into::into).collect(),
        next_cursor,
        last_24h: page.recent,
    }))
}
