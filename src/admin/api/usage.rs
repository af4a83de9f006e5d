//! System-wide usage: statistics, the series behind the charts, and the CSV export of calls.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use jiff::ToSpan;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::query;
use crate::admin::views::{Series, StatsView};
use crate::admin::{AdminState, ApiError, csv};
use crate::calendar::Today;
use crate::store::{CallRow, ExportQuery, SeriesBy, StatsQuery, StoreError};

/// Users total / active today / active in 7 days / blocked; calls, tokens and cost today and
/// this month, by model and provider; share of calls whose usage was estimated.
#[utoipa::path(get, path = "/api/admin/stats", tag = "usage",
    responses(
        (status = 200, description = "Statistics", body = StatsView),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn stats(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<StatsView>, ApiError> {
    let today = state.today();
    let stats = state
        .store
        .stats(StatsQuery {
            today: today.day(),
            month_start: today.month_start(),
            today_start_ms: today.start_ms(today.date),
            week_ago_ms: today.now_ms - 7 * 86_400_000,
        })
        .await?;
    Ok(Json(StatsView {
        stats: stats.into(),
        day: today.day(),
        month_start: today.month_start(),
        timezone: today.zone_name().to_string(),
        generated_at: today.now_ms,
    }))
}

/// How to split a series.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Model,
    Provider,
}

/// `GET /api/admin/usage/series` parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    /// Days back, today included: 1 to 366 (default 30).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<u32>,
    /// `model` (default) or `provider`.
    #[param(inline)]
    pub by: Option<By>,
    /// Only this user's usage.
    pub user: Option<String>,
}

/// Tokens, calls and cost per day by model or provider (for charts).
#[utoipa::path(get, path = "/api/admin/usage/series", tag = "usage", params(SeriesParams),
    responses(
        (status = 200, description = "The series", body = Series),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn series(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Json<Series>, ApiError> {
    let p = query(params)?;
    let n = p.days.unwrap_or(30);
    if !(1..=366).contains(&n) {
        return Err(ApiError::invalid("days must be 1 to 366"));
    }
    let by = p.by.unwrap_or(By::Model);
    let user = p.user.filter(|u| !u.is_empty());
    let today = state.today();
    let since = today.since(n);
    let points = state
        .store
        .usage_series(
            &since,
            match by {
                By::Model => SeriesBy::Model,
                By::Provider => SeriesBy::Provider,
            },
            user.as_deref(),
        )
        .await?;
    Ok(Json(Series {
        days: n,
        by: match by {
            By::Model => "model",
            By::Provider => "provider",
        }
        .to_string(),
        since,
        today: today.day(),
        points: points.into_iter().map(Into::into).collect(),
        timezone: today.zone_name().to_string(),
    }))
}

/// `GET /api/admin/usage.csv` parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CsvParams {
    /// First day (`YYYY-MM-DD`, in `limits.timezone`) or unix ms; default 30 days ago.
    pub from: Option<String>,
    /// Last day, included (`YYYY-MM-DD`), or unix ms, excluded; default now.
    pub to: Option<String>,
    /// Only this user's calls.
    pub user: Option<String>,
}

fn parse_bound(value: &str, today: &Today, end: bool) -> Result<i64, ApiError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let date: jiff::civil::Date = value.parse().map_err(|_| {
        ApiError::invalid(format!(
            "{value:?} is neither a day (YYYY-MM-DD) nor unix milliseconds"
        ))
    })?;
    let date = if end {
        date.checked_add(1.day())
            .map_err(|_| ApiError::invalid(format!("{value:?} is out of range")))?
    } else {
        date
    };
    Ok(today.start_ms(date))
}

/// Every call in a period as CSV (the `token_usage` columns), streamed as it is read.
#[utoipa::path(get, path = "/api/admin/usage.csv", tag = "usage", params(CsvParams),
    responses(
        (status = 200, description = "CSV, one call per line", body = String, content_type = "text/csv"),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn usage_csv(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<CsvParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let today = state.today();
    // An empty bound is no bound, like an empty `user`.
    let from = match p.from.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => parse_bound(v, &today, false)?,
        None => today.start_ms(today.days_back(29)),
    };
    let to = match p.to.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => parse_bound(v, &today, true)?,
        None => today.now_ms + 1,
    };
    if to < from {
        return Err(ApiError::invalid("`to` is before `from`"));
    }
    let user = p.user.filter(|u| !u.is_empty());
    let rows = state.store.export_calls(ExportQuery {
        from_ms: from,
        to_ms: to,
        user,
    });
    let filename = format!("tollgate-usage-{from}-{to}.csv");
    let mut resp = Response::new(Body::new(CsvBody { rows, header: true }));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The export's body: the CSV header, then each chunk of rows from the store as one frame. A
/// store failure midway ends the body with an error, which aborts it for the client (the head
/// is already sent: a clean end would hide the loss).
struct CsvBody {
    rows: tokio::sync::mpsc::Receiver<Result<Vec<CallRow>, StoreError>>,
    header: bool,
}

impl http_body::Body for CsvBody {
    type Data = Bytes;
    type Error = StoreError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if std::mem::take(&mut self.header) {
            let mut out = Vec::with_capacity(256);
            csv::write_header(&mut out);
            return Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(out)))));
        }
        match self.rows.poll_recv(cx) {
            Poll::Ready(Some(Ok(rows))) => {
                let mut out = Vec::with_capacity(rows.len() * 160);
                for row in &rows {
                    csv::write_row(&mut out, row);
                }
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(out)))))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::error!(error = %e, "CSV export failed midway");
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
