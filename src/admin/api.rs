//! The admin API's endpoints and router.
//!
//! Reads go through `store::reads` on pooled reader connections (rollups for every sum, so they
//! stay fast over millions of rows); actions go through the quota [`Ledger`](crate::quota::Ledger),
//! which commits the change and its audit row in one transaction and only then applies it to the
//! proxy's counters. Every error is `{"error":{"code","message"}}` (see [`ApiError`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use jiff::ToSpan;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::session::{self, Admin};
use super::{AdminState, ApiError, JsonObject, now_ms};
use crate::quota::{Limits, QuotaStatus, WindowStatus};
use crate::store::reads::{self, CallRow, SeriesBy, UserSort, UsersQuery};
use crate::store::{self, AuditEntry, Change, OverridesPatch, UserControls};

/// Longest page any list endpoint returns.
const MAX_PAGE: u32 = 500;
/// Longest user id accepted in a path (the proxy refuses longer subjects too).
const MAX_USER_ID_BYTES: usize = 256;

pub(crate) fn router(state: Arc<AdminState>) -> Router {
    let admin_only = Router::new()
        .route("/api/admin/me", get(session::me))
        .route("/api/admin/users", get(users))
        .route("/api/admin/user/{id}/usage", get(user_usage))
        .route("/api/admin/user/{id}/block", post(block))
        .route("/api/admin/user/{id}/unblock", post(unblock))
        .route("/api/admin/user/{id}/limits", put(set_limits))
        .route("/api/admin/stats", get(stats))
        .route("/api/admin/usage/series", get(series))
        .route("/api/admin/usage.csv", get(usage_csv))
        .route("/api/admin/audit", get(audit))
        .route("/api/admin/config", get(config))
        .route("/api/admin/reload", post(reload))
        .route("/api/admin/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            session::require_admin,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/admin/login", post(session::login))
        .route("/api/admin/logout", post(session::logout))
        .merge(admin_only)
        .fallback(super::ui::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(session::same_origin))
        .layer(middleware::map_response(no_store))
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

// === operations ===

/// Liveness: the admin listener answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the configuration is loaded and the store takes writes.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "The store does not take writes", body = super::ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<Arc<AdminState>>) -> Result<&'static str, ApiError> {
    let _config = state.config();
    state
        .write(|conn| -> Result<(), ApiError> {
            // Take the write lock and give it back: proves the file is writable right now.
            conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                .map_err(|e| {
                    tracing::warn!(error = %e, "readyz: the store does not take writes");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the store does not take writes",
                    )
                })
        })
        .await?;
    Ok("ready\n")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

// === shared shapes ===

/// The limits in force for a user: `[limits]` defaults with the user's overrides applied.
#[derive(Serialize, ToSchema)]
pub struct LimitsView {
    pub daily_tokens: u64,
    pub monthly_tokens: u64,
    /// Nano-USD (1e-9 USD); absent = no budget.
    pub daily_cost_nano_usd: Option<u64>,
    pub monthly_cost_nano_usd: Option<u64>,
    pub requests_per_minute: u32,
    /// Absent = no cap.
    pub max_concurrent: Option<u32>,
}

impl From<Limits> for LimitsView {
    fn from(l: Limits) -> LimitsView {
        LimitsView {
            daily_tokens: l.daily_tokens,
            monthly_tokens: l.monthly_tokens,
            daily_cost_nano_usd: l.daily_cost_nano_usd,
            monthly_cost_nano_usd: l.monthly_cost_nano_usd,
            requests_per_minute: l.requests_per_minute.get(),
            max_concurrent: l.max_concurrent.map(std::num::NonZeroU32::get),
        }
    }
}

/// A user as listed: their row, usage today and this month, and the limits in force.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    #[serde(flatten)]
    pub summary: reads::UserSummary,
    pub limits: LimitsView,
}

fn user_view(state: &AdminState, summary: reads::UserSummary) -> UserView {
    let limits = state.ledger.defaults().with_overrides(&summary.overrides);
    UserView {
        summary,
        limits: limits.into(),
    }
}

/// The calendar in `limits.timezone`: today, the month's first day, and day arithmetic.
pub(crate) struct Days {
    now_ms: i64,
    tz: jiff::tz::TimeZone,
    today: jiff::civil::Date,
}

/// `limits.timezone`'s IANA name, as the figures' days are counted in it.
fn timezone_name(state: &AdminState) -> String {
    state
        .ledger
        .timezone()
        .iana_name()
        .unwrap_or("UTC")
        .to_string()
}

impl Days {
    pub(crate) fn now(state: &AdminState) -> Days {
        let now_ms = now_ms();
        let tz = state.ledger.timezone().clone();
        let today = jiff::Timestamp::from_millisecond(now_ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(tz.clone())
            .date();
        Days { now_ms, tz, today }
    }

    pub(crate) fn today(&self) -> String {
        self.today.to_string()
    }

    pub(crate) fn month_start(&self) -> String {
        store::month_start(&self.today())
    }

    /// The first of the last `n` days (today included).
    fn since(&self, n: u32) -> String {
        let back = i64::from(n.saturating_sub(1));
        self.today
            .checked_sub(back.days())
            .unwrap_or(self.today)
            .to_string()
    }

    /// Unix ms of local midnight starting `date`.
    fn start_ms(&self, date: jiff::civil::Date) -> i64 {
        date.to_zoned_datetime(self.tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .unwrap_or(0)
    }
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

// === users ===

/// Sort order.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// `GET /api/admin/users` parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsersParams {
    /// Case-insensitive substring of the id, email or name.
    pub search: Option<String>,
    /// Default `tokens_month`.
    #[param(inline)]
    pub sort: Option<UserSort>,
    /// Default `desc`.
    #[param(inline)]
    pub order: Option<Order>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Rows to skip (default 0).
    #[param(format = "uint32", minimum = 0, maximum = 4_294_967_295_u64)]
    pub offset: Option<u32>,
}

/// A page of users.
#[derive(Serialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserView>,
    /// Users matching the search, over all pages.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    /// `YYYY-MM-DD` in `limits.timezone`: what "today" means in the figures.
    pub today: String,
    pub timezone: String,
}

/// Users with their usage today and this month, the limits in force, blocked or not, last
/// seen; searchable, sortable, paginated.
#[utoipa::path(get, path = "/api/admin/users", tag = "users", params(UsersParams),
    responses(
        (status = 200, description = "A page of users", body = UsersPage),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn users(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<UsersParams>, QueryRejection>,
) -> Result<Json<UsersPage>, ApiError> {
    let p = query(params)?;
    let limit = page_limit(p.limit, 50)?;
    let offset = p.offset.unwrap_or(0);
    let q = UsersQuery {
        search: p.search.filter(|s| !s.is_empty()),
        sort: p.sort.unwrap_or(UserSort::TokensMonth),
        desc: matches!(p.order.unwrap_or_default(), Order::Desc),
        limit,
        offset,
    };
    let days = Days::now(&state);
    let (today, month) = (days.today(), days.month_start());
    let page = {
        let today = today.clone();
        state
            .read(move |conn| reads::users_page(conn, &today, &month, &q))
            .await?
    };
    Ok(Json(UsersPage {
        users: page
            .users
            .into_iter()
            .map(|u| user_view(&state, u))
            .collect(),
        total: page.total,
        limit,
        offset,
        today,
        timezone: timezone_name(&state),
    }))
}

/// `GET /api/admin/user/{id}/usage` parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// 7, 30 or 90 (default 30).
    #[param(schema_with = usage_days_schema)]
    pub days: Option<u32>,
    /// Recent calls older than this call id (the previous page's `next_cursor`).
    pub cursor: Option<i64>,
    /// Recent calls per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// `days` of a user's usage: one of 7, 30 and 90.
fn usage_days_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .description(Some("7, 30 or 90 (default 30)."))
        .enum_values(Some([7, 30, 90]))
        .build()
}

/// One window of a user's live quota (the proxy's counters: recorded plus in flight).
#[derive(Serialize, ToSchema)]
pub struct WindowView {
    /// `day` or `month`.
    pub window: String,
    /// When the window started and when it resets (unix ms).
    pub start: i64,
    pub reset_at: i64,
    pub used_tokens: u64,
    pub reserved_tokens: u64,
    pub token_limit: u64,
    pub remaining_tokens: u64,
    pub used_cost_nano_usd: u64,
    pub cost_limit_nano_usd: Option<u64>,
    pub remaining_cost_nano_usd: Option<u64>,
}

impl From<&WindowStatus> for WindowView {
    fn from(w: &WindowStatus) -> WindowView {
        WindowView {
            window: w.window.as_str().to_string(),
            start: w.start.as_millisecond(),
            reset_at: w.reset_at.as_millisecond(),
            used_tokens: w.used_tokens,
            reserved_tokens: w.reserved_tokens,
            token_limit: w.token_limit,
            remaining_tokens: w.remaining_tokens,
            used_cost_nano_usd: w.used_cost_nano_usd,
            cost_limit_nano_usd: w.cost_limit_nano_usd,
            remaining_cost_nano_usd: w.remaining_cost_nano_usd,
        }
    }
}

/// A user's live quota.
#[derive(Serialize, ToSchema)]
pub struct QuotaView {
    pub day: WindowView,
    pub month: WindowView,
    /// Calls admitted and not finished yet.
    pub in_flight: u32,
}

impl From<&QuotaStatus> for QuotaView {
    fn from(s: &QuotaStatus) -> QuotaView {
        QuotaView {
            day: (&s.day).into(),
            month: (&s.month).into(),
            in_flight: s.in_flight,
        }
    }
}

/// One user's usage.
#[derive(Serialize, ToSchema)]
pub struct UserUsage {
    pub user: UserView,
    pub days: u32,
    /// One point per day, oldest first, days without calls included as zeros.
    pub daily: Vec<reads::DayPoint>,
    /// Per provider and model over the same days.
    pub models: Vec<reads::ModelUsage>,
    /// The most recent calls, newest first.
    pub calls: Vec<CallRow>,
    /// Pass as `cursor` for the next page of calls; absent on the last page.
    pub next_cursor: Option<i64>,
    pub quota: QuotaView,
    pub timezone: String,
}

/// One user's per-day series, per-model breakdown, recent calls (cursor-paginated) and live
/// quota.
#[utoipa::path(get, path = "/api/admin/user/{id}/usage", tag = "users",
    params(("id" = String, Path, description = "User id (JWT subject)"), UsageParams),
    responses(
        (status = 200, description = "The user's usage", body = UserUsage),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
        (status = 404, description = "No such user", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn user_usage(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<UserUsage>, ApiError> {
    let id = user_id(path)?;
    let p = query(params)?;
    let n_days = p.days.unwrap_or(30);
    if !matches!(n_days, 7 | 30 | 90) {
        return Err(ApiError::invalid("days must be 7, 30 or 90"));
    }
    let limit = page_limit(p.limit, 50)?;
    let days = Days::now(&state);
    let (today, month, since) = (days.today(), days.month_start(), days.since(n_days));
    let cursor = p.cursor;
    let user = id.clone();
    let found = state
        .read(move |conn| {
            let Some(summary) = reads::user_summary(conn, &user, &today, &month)? else {
                return Ok(None);
            };
            let daily = reads::user_daily(conn, &user, &since, &today)?;
            let models = reads::user_models(conn, &user, &since)?;
            // One more than the page, to know whether there is a next one.
            let mut calls = reads::user_calls(conn, &user, cursor, limit + 1)?;
            let more = calls.len() > limit as usize;
            calls.truncate(limit as usize);
            Ok(Some((summary, daily, models, calls, more)))
        })
        .await?;
    let Some((summary, daily, models, calls, more)) = found else {
        return Err(ApiError::not_found(format!("no user {id:?}")));
    };
    let next_cursor = if more {
        calls.last().map(|c| c.id)
    } else {
        None
    };
    let status = state.ledger.status(&id);
    Ok(Json(UserUsage {
        user: user_view(&state, summary),
        days: n_days,
        daily,
        models,
        calls,
        next_cursor,
        quota: (&status).into(),
        timezone: timezone_name(&state),
    }))
}

// === actions ===

/// `POST /api/admin/user/{id}/block` body (optional).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// Shown to operators (not to the user), up to 500 characters.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// A user's controls after an action, and what they were before.
#[derive(Serialize, ToSchema)]
pub struct ControlsChange {
    pub user: String,
    pub before: UserControls,
    pub after: UserControls,
    /// The limits in force from the user's next call on.
    pub limits: LimitsView,
}

fn controls_change(
    state: &AdminState,
    user: String,
    change: Change<UserControls>,
) -> ControlsChange {
    let limits = state
        .ledger
        .defaults()
        .with_overrides(&change.after.overrides);
    ControlsChange {
        user,
        before: change.before,
        after: change.after,
        limits: limits.into(),
    }
}

fn audit_hook<'a>(
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    detail: Option<String>,
) -> impl FnOnce(&rusqlite::Transaction<'_>, &Change<UserControls>) -> rusqlite::Result<()> + 'a {
    move |tx, change| {
        let json = |c: &UserControls| serde_json::to_string(c).ok();
        store::write_audit(
            tx,
            &AuditEntry {
                ts: now_ms(),
                actor,
                action,
                target: Some(target),
                before_json: json(&change.before),
                after_json: json(&change.after),
                detail,
            },
        )
        .map(drop)
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
    let s = Arc::clone(&state);
    let user = id.clone();
    let change = state
        .write(move |conn| {
            s.ledger.block(
                conn,
                &user,
                reason.as_deref(),
                audit_hook(&admin.actor, "block", &user, reason.clone()),
            )
        })
        .await?;
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
    let s = Arc::clone(&state);
    let user = id.clone();
    let change = state
        .write(move |conn| {
            s.ledger.unblock(
                conn,
                &user,
                audit_hook(&admin.actor, "unblock", &user, None),
            )
        })
        .await?;
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
    let s = Arc::clone(&state);
    let user = id.clone();
    let change = state
        .write(move |conn| {
            s.ledger.set_overrides(
                conn,
                &user,
                &patch,
                audit_hook(&admin.actor, "set_limits", &user, None),
            )
        })
        .await?;
    tracing::info!(user = %id, "user limits changed by an admin");
    Ok(Json(controls_change(&state, id, change)))
}

// === system-wide ===

/// System statistics.
#[derive(Serialize, ToSchema)]
pub struct StatsView {
    #[serde(flatten)]
    pub stats: reads::Stats,
    /// What "today" means in the figures: `YYYY-MM-DD` in `limits.timezone`.
    pub day: String,
    pub month_start: String,
    pub timezone: String,
    /// When the figures were read (unix ms).
    pub generated_at: i64,
}

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
    let days = Days::now(&state);
    let (today, month) = (days.today(), days.month_start());
    let today_start = days.start_ms(days.today);
    let week_ago = days.now_ms - 7 * 86_400_000;
    let stats = {
        let (today, month) = (today.clone(), month.clone());
        state
            .read(move |conn| reads::stats(conn, &today, &month, today_start, week_ago))
            .await?
    };
    Ok(Json(StatsView {
        stats,
        day: today,
        month_start: month,
        timezone: timezone_name(&state),
        generated_at: days.now_ms,
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

/// Usage per day, split by model or provider.
#[derive(Serialize, ToSchema)]
pub struct Series {
    pub days: u32,
    /// `model` or `provider`.
    pub by: String,
    pub since: String,
    pub today: String,
    pub points: Vec<reads::SeriesPoint>,
    pub timezone: String,
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
    let days = Days::now(&state);
    let since = days.since(n);
    let points = {
        let since = since.clone();
        let by = match by {
            By::Model => SeriesBy::Model,
            By::Provider => SeriesBy::Provider,
        };
        state
            .read(move |conn| reads::usage_series(conn, &since, by, user.as_deref()))
            .await?
    };
    Ok(Json(Series {
        days: n,
        by: match by {
            By::Model => "model",
            By::Provider => "provider",
        }
        .to_string(),
        since,
        today: days.today(),
        points,
        timezone: timezone_name(&state),
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

fn parse_bound(value: &str, days: &Days, end: bool) -> Result<i64, ApiError> {
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
    Ok(days.start_ms(date))
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
    let days = Days::now(&state);
    // An empty bound is no bound, like an empty `user`.
    let from = match p.from.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => parse_bound(v, &days, false)?,
        None => days.start_ms(days.today.checked_sub(29.days()).unwrap_or(days.today)),
    };
    let to = match p.to.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => parse_bound(v, &days, true)?,
        None => days.now_ms + 1,
    };
    if to < from {
        return Err(ApiError::invalid("`to` is before `from`"));
    }
    let user = p.user.filter(|u| !u.is_empty());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let readers = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        const CHUNK: usize = 64 * 1024;
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        reads::write_csv_header(&mut buf);
        let result = readers.readers.with(|conn| {
            reads::for_each_call(conn, from, to, user.as_deref(), |row| {
                reads::write_csv_row(&mut buf, row);
                if buf.len() >= CHUNK {
                    let chunk = Bytes::from(std::mem::replace(
                        &mut buf,
                        Vec::with_capacity(CHUNK + 1024),
                    ));
                    // The client went away: stop reading.
                    return tx.blocking_send(chunk).is_ok();
                }
                true
            })
        });
        match result {
            Ok(_) => {
                if !buf.is_empty() {
                    let _ = tx.blocking_send(Bytes::from(buf));
                }
            }
            // The head is sent: the only way to tell the client is to cut the body.
            Err(e) => {
                tracing::error!(code = e.code, message = %e.message, "CSV export failed midway")
            }
        }
    });
    let filename = format!("tollgate-usage-{from}-{to}.csv");
    let mut resp = Response::new(Body::new(ChannelBody { rx }));
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

/// A response body fed by a channel: each message is one frame; the sender's drop ends it.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

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

/// A page of the audit trail, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<store::AuditRow>,
    pub next_cursor: Option<i64>,
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
        .read(move |conn| store::audit_page(conn, target.as_deref(), cursor, limit + 1))
        .await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor = if more {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}

/// The effective configuration; secrets are never in it.
#[derive(Serialize, ToSchema)]
pub struct ConfigView {
    /// gateway.toml as in force (defaults filled in), as JSON. It names the environment
    /// variables that hold secrets, never their values.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// For each secret's environment variable: whether it is set.
    pub secrets: std::collections::BTreeMap<String, bool>,
    /// The same configuration as TOML, as `tollgate check-config` prints it.
    pub toml: String,
}

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
    let value = serde_json::to_value(&config.raw).map_err(ApiError::internal)?;
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

/// What a reload did: `{"result": "unchanged"}` or `{"result": "applied", "changes": [{"key",
/// "before", "after", "needs_restart"}], "needs_restart": [keys], "audit_id"}`.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ReloadView(crate::reload::ReloadOutcome);

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

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/admin/openapi.json", tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document_json(),
    )
        .into_response()
}
