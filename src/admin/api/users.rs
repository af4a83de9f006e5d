//! The users list and one user's usage.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{page_limit, query, user_id};
use crate::admin::views::{Effective, PlansView, UserUsage, UserView, UsersPage};
use crate::admin::{AdminState, ApiError};
use crate::config::Config;
use crate::quota::Basis;
use crate::store::{self, PlanFilter, UserUsageQuery, UsersQuery};

fn user_view(config: &Config, summary: store::UserSummary) -> UserView {
    let plan = config.plans.for_name(summary.plan.as_deref());
    let effective = Effective::of(config, plan.map(|p| &**p), summary.overrides());
    UserView {
        summary: summary.into(),
        plan: plan.map(|p| p.name.to_string()),
        limits: effective.limits.into(),
        limit_sources: effective.sources,
    }
}

/// How the users list is ordered. Ties are broken by id, in the same direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserSort {
    #[default]
    Id,
    LastSeen,
    Created,
    TokensToday,
    TokensMonth,
    CostToday,
    CostMonth,
}

impl From<UserSort> for store::UserSort {
    fn from(s: UserSort) -> store::UserSort {
        match s {
            UserSort::Id => store::UserSort::Id,
            UserSort::LastSeen => store::UserSort::LastSeen,
            UserSort::Created => store::UserSort::Created,
            UserSort::TokensToday => store::UserSort::TokensToday,
            UserSort::TokensMonth => store::UserSort::TokensMonth,
            UserSort::CostToday => store::UserSort::CostToday,
            UserSort::CostMonth => store::UserSort::CostMonth,
        }
    }
}

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
    /// Only the users on this plan (their latest call's, `[plans.NAME]`; the default plan's
    /// include the users on no plan, or on one since removed).
    pub plan: Option<String>,
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
    let today = state.today();
    let q = UsersQuery {
        search: p.search.filter(|s| !s.is_empty()),
        sort: p.sort.unwrap_or(UserSort::TokensMonth).into(),
        desc: matches!(p.order.unwrap_or_default(), Order::Desc),
        limit,
        offset,
        today: today.day(),
        month_start: today.month_start(),
        plan: p.plan.filter(|s| !s.is_empty()).map(|name| {
            // The default plan's users include those on no plan (or on one since removed):
            // the list shows them on it.
            let config = state.config();
            let is_default = config
                .plans
                .default_plan()
                .is_some_and(|d| *d.name == *name);
            PlanFilter {
                or_none_of: is_default
                    .then(|| config.plans.iter().map(|p| p.name.to_string()).collect()),
                name,
            }
        }),
    };
    let page = state.store.users_page(q).await?;
    let config = state.config();
    Ok(Json(UsersPage {
        users: page
            .users
            .into_iter()
            .map(|u| user_view(&config, u))
            .collect(),
        total: page.total,
        limit,
        offset,
        today: today.day(),
        timezone: today.zone_name().to_string(),
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
    let today = state.today();
    let found = state
        .store
        .user_usage(UserUsageQuery {
            user: id.clone(),
            today: today.day(),
            month_start: today.month_start(),
            since_day: today.since(n_days),
            before_call: p.cursor,
            limit,
        })
        .await?;
    let Some(usage) = found else {
        return Err(ApiError::not_found(format!("no user {id:?}")));
    };
    let next_cursor = if usage.more_calls {
        usage.calls.last().map(|c| c.id)
    } else {
        None
    };
    let config = state.config();
    let plan = config.plans.for_name(usage.summary.plan.as_deref());
    let basis = Basis::new(&config.raw.limits, plan.map(|p| &**p));
    let mut status = state.ledger.status_on(&id, &basis);
    if state.ledger.shared().is_some() {
        // Several gateways: what all of them recorded, not only what this one counted.
        let (t, m) = (&usage.summary.today, &usage.summary.month);
        status.day.recorded(t.total_tokens, t.cost_nano_usd);
        status.month.recorded(m.total_tokens, m.cost_nano_usd);
    }
    Ok(Json(UserUsage {
        user: user_view(&config, usage.summary),
        days: n_days,
        daily: usage.daily.into_iter().map(Into::into).collect(),
        models: usage.models.into_iter().map(Into::into).collect(),
        calls: usage.calls.into_iter().map(Into::into).collect(),
        next_cursor,
        quota: (&status).into(),
        timezone: today.zone_name().to_string(),
    }))
}

/// The plans in force: `auth.plan_claim`, `limits.default_plan`, `[limits]`, and each
/// `[plans.NAME]` with its limits (and where each comes from), models and output ceiling.
#[utoipa::path(get, path = "/api/admin/plans", tag = "users",
    responses(
        (status = 200, description = "The plans in force", body = PlansView),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub(crate) async fn plans(State(state): State<Arc<AdminState>>) -> Json<PlansView> {
    Json(PlansView::of(&state.config()))
}
