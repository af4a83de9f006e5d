//! The read side of the admin API: users with their usage, one user's usage, system statistics,
//! usage series and the CSV export of calls.
//!
//! Every function takes a reader connection ([`crate::store::open_reader`]) and returns plain
//! serializable values; the HTTP layer only maps parameters to calls and values to answers.
//! Readers never block the writer (WAL): each statement reads a snapshot while the writer keeps
//! committing.
//!
//! **Where the numbers come from.** Sums come from the daily rollups (`usage_daily`), never from
//! summing `token_usage`, whose rows are only read a page (or one streamed export) at a time
//! through an index. One user's figures are a handful of rollup rows found through
//! `usage_daily_user_day`. System-wide figures are another matter: a month of rollups is one row
//! per (day, user, provider, model, endpoint) — about half a million rows at 10 million calls a
//! quarter — and summing them takes SQLite 1–2 s, far from the 50 ms the dashboard needs. So
//! system-wide sums go through a rollup cache kept per database file (`RollupCache`): per-model
//! totals of past days, per-user totals of the month up to yesterday, and every rollup row of
//! yesterday and today, kept current by re-reading only the rollup rows that calls recorded since
//! the last look have touched. It is a copy of rollups, checked against the file on every use,
//! never a second source of truth: anything it cannot prove current is read again.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use jiff::civil::Date;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::store::UserOverrides;

// === values ===

/// Sums over a set of calls, from the daily rollups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageTotals {
    pub calls: i64,
    pub input_tokens: i64,
    /// Included in `input_tokens`.
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    /// Included in `output_tokens`.
    pub reasoning_tokens: i64,
    /// input + output, the figure token limits count.
    pub total_tokens: i64,
    /// Priced calls only (see `unpriced_calls`); 1e-9 USD.
    pub cost_nano_usd: i64,
    /// Calls whose usage was estimated (`usage_source = 'estimated'`).
    pub estimated_calls: i64,
    /// Calls of a model without a price (their cost is not in `cost_nano_usd`).
    pub unpriced_calls: i64,
    /// Calls answered with a status >= 400.
    pub errors: i64,
    /// Sum of the calls' latencies: mean latency = `latency_ms_sum / calls`.
    pub latency_ms_sum: i64,
}

impl UsageTotals {
    /// Add `other` into `self` (saturating, like the writer's rollups).
    pub fn add(&mut self, other: &UsageTotals) {
        self.calls = self.calls.saturating_add(other.calls);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cost_nano_usd = self.cost_nano_usd.saturating_add(other.cost_nano_usd);
        self.estimated_calls = self.estimated_calls.saturating_add(other.estimated_calls);
        self.unpriced_calls = self.unpriced_calls.saturating_add(other.unpriced_calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
    }

    /// Take `other` out of `self` (the inverse of [`UsageTotals::add`] short of saturation).
    fn sub(&mut self, other: &UsageTotals) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.input_tokens = self.input_tokens.saturating_sub(other.input_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_sub(other.cached_input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_sub(other.reasoning_tokens);
        self.total_tokens = self.total_tokens.saturating_sub(other.total_tokens);
        self.cost_nano_usd = self.cost_nano_usd.saturating_sub(other.cost_nano_usd);
        self.estimated_calls = self.estimated_calls.saturating_sub(other.estimated_calls);
        self.unpriced_calls = self.unpriced_calls.saturating_sub(other.unpriced_calls);
        self.errors = self.errors.saturating_sub(other.errors);
        self.latency_ms_sum = self.latency_ms_sum.saturating_sub(other.latency_ms_sum);
    }

    /// `estimated_calls / calls`, 0 without calls.
    pub fn estimated_share(&self) -> f64 {
        share(self.estimated_calls, self.calls)
    }
}

#[expect(clippy::cast_precision_loss, reason = "a share for display")]
fn share(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The rollup columns summed into a [`UsageTotals`], in the order [`totals_at`] reads them.
const SUMS: &str = "COALESCE(SUM(calls), 0), COALESCE(SUM(input_tokens), 0), \
     COALESCE(SUM(cached_input_tokens), 0), COALESCE(SUM(output_tokens), 0), \
     COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(total_tokens), 0), \
     COALESCE(SUM(cost_nano_usd), 0), COALESCE(SUM(estimated_calls), 0), \
     COALESCE(SUM(unpriced_calls), 0), COALESCE(SUM(errors), 0), COALESCE(SUM(latency_ms_sum), 0)";

fn totals_at(row: &Row<'_>, at: usize) -> rusqlite::Result<UsageTotals> {
    Ok(UsageTotals {
        calls: row.get(at)?,
        input_tokens: row.get(at + 1)?,
        cached_input_tokens: row.get(at + 2)?,
        output_tokens: row.get(at + 3)?,
        reasoning_tokens: row.get(at + 4)?,
        total_tokens: row.get(at + 5)?,
        cost_nano_usd: row.get(at + 6)?,
        estimated_calls: row.get(at + 7)?,
        unpriced_calls: row.get(at + 8)?,
        errors: row.get(at + 9)?,
        latency_ms_sum: row.get(at + 10)?,
    })
}

/// How [`users_page`] orders users. Ties are broken by id, in the same direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A page of the user list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct UsersQuery {
    /// Case-insensitive (ASCII) substring of the id, email or name; `None` or empty = everyone.
    pub search: Option<String>,
    pub sort: UserSort,
    pub desc: bool,
    pub limit: u32,
    pub offset: u32,
}

impl Default for UsersQuery {
    fn default() -> Self {
        UsersQuery {
            search: None,
            sort: UserSort::Id,
            desc: false,
            limit: 50,
            offset: 0,
        }
    }
}

/// [`UserOverrides`] as the OpenAPI document shows it (the store's type carries no schema).
#[derive(utoipa::ToSchema)]
#[schema(as = UserOverrides)]
#[expect(dead_code, reason = "only its schema is used")]
pub struct UserOverridesSchema {
    daily_tokens: Option<u64>,
    monthly_tokens: Option<u64>,
    daily_cost_nano_usd: Option<u64>,
    monthly_cost_nano_usd: Option<u64>,
    requests_per_minute: Option<u32>,
    max_concurrent: Option<u32>,
}

/// One user with their usage today and this month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserSummary {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    /// The user's own limits; `None` fields follow the `[limits]` defaults.
    #[schema(value_type = UserOverridesSchema)]
    pub overrides: UserOverrides,
    /// Unix ms UTC.
    pub created_at: i64,
    /// Unix ms UTC of the latest recorded call; `None` if the user never called.
    pub last_seen_at: Option<i64>,
    pub today: UsageTotals,
    /// From the first of the month to today, inclusive.
    pub month: UsageTotals,
}

/// One page of users and how many match the search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserSummary>,
    /// Users matching the search (all pages).
    pub total: u64,
}

/// One day of a series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayPoint {
    /// `YYYY-MM-DD` in `limits.timezone`.
    pub day: String,
    pub totals: UsageTotals,
}

/// Usage of one model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ModelUsage {
    pub provider: String,
    /// `None` for calls whose request named no model.
    pub model: Option<String>,
    pub totals: UsageTotals,
}

/// Usage of one provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProviderUsage {
    pub provider: String,
    pub totals: UsageTotals,
}

/// One recorded call: a `token_usage` row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CallRow {
    pub id: i64,
    pub request_id: String,
    /// Unix ms UTC, when the call was admitted.
    pub ts: i64,
    pub user_id: String,
    pub provider: String,
    pub model: Option<String>,
    pub endpoint: String,
    pub streamed: bool,
    pub status: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost_nano_usd: Option<i64>,
    /// `reported`, `estimated` or `none`.
    pub usage_source: String,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub outcome: String,
}

/// System statistics.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub users_total: i64,
    /// Users whose latest call is from today.
    pub users_active_today: i64,
    /// Users whose latest call is from the last 7 days.
    pub users_active_7d: i64,
    pub users_blocked: i64,
    pub today: UsageTotals,
    pub month: UsageTotals,
    /// This month, most tokens first.
    pub by_model: Vec<ModelUsage>,
    /// This month, most tokens first.
    pub by_provider: Vec<ProviderUsage>,
    /// Share of today's calls whose usage was estimated, 0..=1.
    pub estimated_share_today: f64,
    pub estimated_share_month: f64,
}

/// What a usage series is broken down by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeriesBy {
    Model,
    Provider,
}

/// One (day, model or provider) point of a usage series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    pub day: String,
    /// The model (`""` for calls that named none) or the provider.
    pub key: String,
    /// The provider of the model (the key itself when the series is by provider).
    pub provider: String,
    pub totals: UsageTotals,
}

// === users ===

/// The user columns of a [`UserSummary`], in the order [`user_from_row`] reads them: the
/// store's control columns from the sixth on.
fn user_columns() -> String {
    format!(
        "id, email, name, created_at, last_seen_at, {}",
        crate::store::CONTROL_COLUMNS
    )
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserSummary> {
    let controls = crate::store::controls_from_row(row, 5)?;
    Ok(UserSummary {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
        last_seen_at: row.get(4)?,
        blocked: controls.blocked,
        blocked_reason: controls.blocked_reason,
        overrides: controls.overrides,
        today: UsageTotals::default(),
        month: UsageTotals::default(),
    })
}

fn user_row_sql() -> String {
    format!("SELECT {} FROM users WHERE id = ?1", user_columns())
}

/// The user's row without usage; `None` when there is none.
fn user_row(conn: &Connection, id: &str) -> rusqlite::Result<Option<UserSummary>> {
    conn.prepare_cached(&user_row_sql())?
        .query_row([id], user_from_row)
        .optional()
}

fn user_totals_sql() -> String {
    format!("SELECT {SUMS} FROM usage_daily WHERE user_id = ?1 AND day >= ?2 AND day <= ?3")
}

/// A user's totals over `[since_day, until_day]`: a few rollup rows through the user's index.
fn user_totals(
    conn: &Connection,
    user: &str,
    since_day: &str,
    until_day: &str,
) -> rusqlite::Result<UsageTotals> {
    conn.prepare_cached(&user_totals_sql())?
        .query_row(params![user, since_day, until_day], |r| totals_at(r, 0))
}

/// One user with today's and this month's usage; `None` when the user has no row.
pub fn user_summary(
    conn: &Connection,
    id: &str,
    today: &str,
    month_start: &str,
) -> rusqlite::Result<Option<UserSummary>> {
    let Some(mut user) = user_row(conn, id)? else {
        return Ok(None);
    };
    user.today = user_totals(conn, id, today, today)?;
    user.month = user_totals(conn, id, month_start, today)?;
    Ok(Some(user))
}

/// `text` as a LIKE pattern matching it anywhere, its wildcards escaped (`ESCAPE '\'`).
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// `?1` is the LIKE pattern, or NULL for everyone. LIKE is case-insensitive for ASCII letters.
const SEARCH: &str = "(?1 IS NULL OR id LIKE ?1 ESCAPE '\\' OR email LIKE ?1 ESCAPE '\\' \
     OR name LIKE ?1 ESCAPE '\\')";

fn users_count_sql() -> String {
    format!("SELECT COUNT(*) FROM users WHERE {SEARCH}")
}

fn users_ids_sql() -> String {
    format!("SELECT id FROM users WHERE {SEARCH}")
}

/// The page query of a sort on a `users` column.
fn users_page_sql(sort: UserSort, desc: bool) -> Option<String> {
    let dir = if desc { "DESC" } else { "ASC" };
    let order = match sort {
        UserSort::Id => format!("id {dir}"),
        UserSort::LastSeen => format!("last_seen_at {dir}, id {dir}"),
        UserSort::Created => format!("created_at {dir}, id {dir}"),
        _ => return None,
    };
    Some(format!(
        "SELECT {} FROM users WHERE {SEARCH} ORDER BY {order} LIMIT ?2 OFFSET ?3",
        user_columns()
    ))
}

/// A page of the users matching `q.search`, ordered by `q.sort` over all of them (users without
/// usage count as 0; ties go by id in the same direction), and how many match.
///
/// Sorts on a `users` column are one indexed query; sorts on usage rank every matching user by
/// the cached per-user totals (see the module docs).
pub fn users_page(
    conn: &Connection,
    today: &str,
    month_start: &str,
    q: &UsersQuery,
) -> rusqlite::Result<UsersPage> {
    let pattern = q
        .search
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(like_pattern);
    if let Some(sql) = users_page_sql(q.sort, q.desc) {
        let total: i64 = conn
            .prepare_cached(&users_count_sql())?
            .query_row([&pattern], |r| r.get(0))?;
        let mut users = conn
            .prepare_cached(&sql)?
            .query_map(params![pattern, q.limit, q.offset], user_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for user in &mut users {
            user.today = user_totals(conn, &user.id, today, today)?;
            user.month = user_totals(conn, &user.id, month_start, today)?;
        }
        return Ok(UsersPage {
            users,
            total: u64::try_from(total).unwrap_or(0),
        });
    }
    let ids: Vec<String> = conn
        .prepare_cached(&users_ids_sql())?
        .query_map([&pattern], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let total = ids.len() as u64;
    let month_sort = matches!(q.sort, UserSort::TokensMonth | UserSort::CostMonth);
    let cost = matches!(q.sort, UserSort::CostToday | UserSort::CostMonth);
    let page: Vec<(String, UsageTotals, UsageTotals)> = with_cache(conn, today, |cache, conn| {
        let today_sums = cache.prepare_users(conn, today, today)?;
        let month_sums = cache.prepare_users(conn, month_start, today)?;
        let by_today = cache.users_view(today, today, today_sums);
        let by_month = cache.users_view(month_start, today, month_sums);
        let by = if month_sort { &by_month } else { &by_today };
        let mut ranked: Vec<(i64, &str)> = ids
            .iter()
            .map(|id| {
                let t = by.get(id);
                (
                    if cost {
                        t.cost_nano_usd
                    } else {
                        t.total_tokens
                    },
                    id.as_str(),
                )
            })
            .collect();
        if q.desc {
            ranked.sort_unstable_by(|a, b| b.cmp(a));
        } else {
            ranked.sort_unstable();
        }
        let offset = usize::try_from(q.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
        Ok(ranked
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, id)| (id.to_string(), by_today.get(id), by_month.get(id)))
            .collect())
    })?;
    let mut users = Vec::with_capacity(page.len());
    for (id, today_totals, month_totals) in page {
        if let Some(mut user) = user_row(conn, &id)? {
            user.today = today_totals;
            user.month = month_totals;
            users.push(user);
        }
    }
    Ok(UsersPage { users, total })
}

// === one user's usage ===

fn parse_day(day: &str) -> rusqlite::Result<Date> {
    day.parse::<Date>()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The day before `day` (`YYYY-MM-DD`).
fn day_before(day: &str) -> rusqlite::Result<String> {
    parse_day(day)?
        .yesterday()
        .map(|d| d.to_string())
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The days `since_day..=today` (`YYYY-MM-DD`); an error names a malformed day.
fn days_between(since_day: &str, today: &str) -> rusqlite::Result<Vec<String>> {
    let (mut day, last) = (parse_day(since_day)?, parse_day(today)?);
    let mut out = Vec::new();
    while day <= last {
        out.push(day.to_string());
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    Ok(out)
}

fn user_daily_sql() -> String {
    format!(
        "SELECT day, {SUMS} FROM usage_daily WHERE user_id = ?1 AND day >= ?2 AND day <= ?3 \
         GROUP BY day ORDER BY day"
    )
}

/// A user's usage per day from `since_day` to `today` inclusive, oldest first; days without
/// calls are included as zeros.
pub fn user_daily(
    conn: &Connection,
    user: &str,
    since_day: &str,
    today: &str,
) -> rusqlite::Result<Vec<DayPoint>> {
    let all_days = days_between(since_day, today)?;
    let mut found: HashMap<String, UsageTotals> = conn
        .prepare_cached(&user_daily_sql())?
        .query_map(params![user, since_day, today], |r| {
            Ok((r.get::<_, String>(0)?, totals_at(r, 1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(all_days
        .into_iter()
        .map(|day| {
            let totals = found.remove(&day).unwrap_or_default();
            DayPoint { day, totals }
        })
        .collect())
}

fn model_usage(row: &Row<'_>) -> rusqlite::Result<ModelUsage> {
    let model: String = row.get(1)?;
    Ok(ModelUsage {
        provider: row.get(0)?,
        model: (!model.is_empty()).then_some(model),
        totals: totals_at(row, 2)?,
    })
}

fn user_models_sql() -> String {
    format!(
        "SELECT provider, model, {SUMS} FROM usage_daily WHERE user_id = ?1 AND day >= ?2 \
         GROUP BY provider, model"
    )
}

/// Most tokens first, then provider and model.
fn sort_models(models: &mut [ModelUsage]) {
    models.sort_by(|a, b| {
        b.totals
            .total_tokens
            .cmp(&a.totals.total_tokens)
            .then_with(|| a.provider.cmp(&b.provider))
            .then_with(|| a.model.cmp(&b.model))
    });
}

/// A user's usage per (provider, model) since `since_day`, most tokens first.
pub fn user_models(
    conn: &Connection,
    user: &str,
    since_day: &str,
) -> rusqlite::Result<Vec<ModelUsage>> {
    let mut models = conn
        .prepare_cached(&user_models_sql())?
        .query_map(params![user, since_day], model_usage)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    sort_models(&mut models);
    Ok(models)
}

/// The `token_usage` columns of a [`CallRow`], in the contract's order.
const CALL_COLUMNS: &str = "id, request_id, ts, user_id, provider, model, endpoint, streamed, \
     status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, \
     cost_nano_usd, usage_source, latency_ms, ttfb_ms, outcome";

fn call_from_row(r: &Row<'_>) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        id: r.get(0)?,
        request_id: r.get(1)?,
        ts: r.get(2)?,
        user_id: r.get(3)?,
        provider: r.get(4)?,
        model: r.get(5)?,
        endpoint: r.get(6)?,
        streamed: r.get::<_, i64>(7)? != 0,
        status: r.get(8)?,
        input_tokens: r.get(9)?,
        cached_input_tokens: r.get(10)?,
        output_tokens: r.get(11)?,
        reasoning_tokens: r.get(12)?,
        total_tokens: r.get(13)?,
        cost_nano_usd: r.get(14)?,
        usage_source: r.get(15)?,
        latency_ms: r.get(16)?,
        ttfb_ms: r.get(17)?,
        outcome: r.get(18)?,
    })
}

fn user_calls_first_sql() -> String {
    format!(
        "SELECT {CALL_COLUMNS} FROM token_usage WHERE user_id = ?1 \
         ORDER BY ts DESC, id DESC LIMIT ?2"
    )
}

fn user_calls_after_sql() -> String {
    format!(
        "SELECT {CALL_COLUMNS} FROM token_usage WHERE user_id = ?1 AND ts <= ?2 \
         AND (ts < ?2 OR id < ?3) ORDER BY ts DESC, id DESC LIMIT ?4"
    )
}

const CALL_TS_SQL: &str = "SELECT ts FROM token_usage WHERE id = ?1";

/// A user's calls, newest first — by admission time (`ts`), then id, the order of the
/// `(user_id, ts)` index — at most `limit`. `before_id` is the cursor: the id of the last row
/// of the previous page; the page continues right after that row, so pages neither overlap nor
/// skip. A cursor that names no row gives an empty page.
pub fn user_calls(
    conn: &Connection,
    user: &str,
    before_id: Option<i64>,
    limit: u32,
) -> rusqlite::Result<Vec<CallRow>> {
    let Some(cursor) = before_id else {
        return conn
            .prepare_cached(&user_calls_first_sql())?
            .query_map(params![user, limit], call_from_row)?
            .collect();
    };
    let Some(cursor_ts) = conn
        .prepare_cached(CALL_TS_SQL)?
        .query_row([cursor], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(Vec::new());
    };
    conn.prepare_cached(&user_calls_after_sql())?
        .query_map(params![user, cursor_ts, cursor, limit], call_from_row)?
        .collect()
}

// === the whole system ===

const USERS_TOTAL_SQL: &str = "SELECT COUNT(*) FROM users";
const USERS_SEEN_SINCE_SQL: &str = "SELECT COUNT(*) FROM users WHERE last_seen_at >= ?1";
const USERS_BLOCKED_SQL: &str = "SELECT COUNT(*) FROM users WHERE blocked != 0";

fn count(conn: &Connection, sql: &str, param: Option<i64>) -> rusqlite::Result<i64> {
    conn.prepare_cached(sql)?
        .query_row(rusqlite::params_from_iter(param), |r| r.get(0))
}

fn model_list(by_model: HashMap<ModelKey, UsageTotals>) -> Vec<ModelUsage> {
    let mut models: Vec<ModelUsage> = by_model
        .into_iter()
        .map(|((provider, model), totals)| ModelUsage {
            provider: provider.to_string(),
            model: (!model.is_empty()).then(|| model.to_string()),
            totals,
        })
        .collect();
    sort_models(&mut models);
    models
}

/// System statistics: users, and usage today and this month. `today_start_ms` and
/// `week_ago_ms` bound "active" (`last_seen_at >= …`).
pub fn stats(
    conn: &Connection,
    today: &str,
    month_start: &str,
    today_start_ms: i64,
    week_ago_ms: i64,
) -> rusqlite::Result<Stats> {
    let users_total = count(conn, USERS_TOTAL_SQL, None)?;
    let users_active_today = count(conn, USERS_SEEN_SINCE_SQL, Some(today_start_ms))?;
    let users_active_7d = count(conn, USERS_SEEN_SINCE_SQL, Some(week_ago_ms))?;
    let users_blocked = count(conn, USERS_BLOCKED_SQL, None)?;
    let (today_models, month_models) = with_cache(conn, today, |cache, conn| {
        // The month's per-user fold reads the same days as the per-model sums; filling it here
        // lets the first users page after a start find them read.
        cache.prepare_users(conn, month_start, today)?;
        Ok((
            cache.models_between(conn, today, today)?,
            cache.models_between(conn, month_start, today)?,
        ))
    })?;
    let mut today_totals = UsageTotals::default();
    for t in today_models.values() {
        today_totals.add(t);
    }
    let by_model = model_list(month_models);
    let mut month = UsageTotals::default();
    let mut by_provider: Vec<ProviderUsage> = Vec::new();
    for m in &by_model {
        month.add(&m.totals);
        match by_provider.iter_mut().find(|p| p.provider == m.provider) {
            Some(p) => p.totals.add(&m.totals),
            None => by_provider.push(ProviderUsage {
                provider: m.provider.clone(),
                totals: m.totals,
            }),
        }
    }
    by_provider.sort_by(|a, b| {
        b.totals
            .total_tokens
            .cmp(&a.totals.total_tokens)
            .then_with(|| a.provider.cmp(&b.provider))
    });
    Ok(Stats {
        users_total,
        users_active_today,
        users_active_7d,
        users_blocked,
        estimated_share_today: today_totals.estimated_share(),
        estimated_share_month: month.estimated_share(),
        today: today_totals,
        month,
        by_model,
        by_provider,
    })
}

fn user_series_sql(by: SeriesBy) -> String {
    let (key, group) = match by {
        SeriesBy::Model => ("model", "provider, model"),
        SeriesBy::Provider => ("provider", "provider"),
    };
    format!(
        "SELECT day, {key}, provider, {SUMS} FROM usage_daily \
         WHERE user_id = ?1 AND day >= ?2 AND day <= ?3 GROUP BY day, {group}"
    )
}

/// The newest day with usage, not later than any zone's today (future-dated rows aside).
const LATEST_DAY_SQL: &str = "SELECT MAX(day) FROM usage_daily WHERE day <= ?1";

/// Usage per day and model (or provider) from `since_day` on, for everyone or one user; ordered
/// by day, then key, then provider. Days without calls have no points. The last day is the
/// newest day with usage (see [`usage_series_until`] to give it).
pub fn usage_series(
    conn: &Connection,
    since_day: &str,
    by: SeriesBy,
    user: Option<&str>,
) -> rusqlite::Result<Vec<SeriesPoint>> {
    let latest_possible = latest_possible_day();
    let latest: Option<String> = conn
        .prepare_cached(LATEST_DAY_SQL)?
        .query_row([&latest_possible], |r| r.get(0))?;
    let Some(latest) = latest else {
        return Ok(Vec::new());
    };
    let today = match cached_today(conn) {
        Some(cached) if cached > latest => cached,
        _ => latest,
    };
    usage_series_until(conn, since_day, &today, by, user)
}

/// [`usage_series`] over `[since_day, today]`.
pub fn usage_series_until(
    conn: &Connection,
    since_day: &str,
    today: &str,
    by: SeriesBy,
    user: Option<&str>,
) -> rusqlite::Result<Vec<SeriesPoint>> {
    let mut points = match user {
        Some(user) => conn
            .prepare_cached(&user_series_sql(by))?
            .query_map(params![user, since_day, today], |r| {
                Ok(SeriesPoint {
                    day: r.get(0)?,
                    key: r.get(1)?,
                    provider: r.get(2)?,
                    totals: totals_at(r, 3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => with_cache(conn, today, |cache, conn| {
            let mut points = Vec::new();
            for (day, models) in cache.series(conn, since_day, today)? {
                let mut keyed: HashMap<(&str, &str), UsageTotals> = HashMap::new();
                for ((provider, model), totals) in &models {
                    let key = match by {
                        SeriesBy::Model => &**model,
                        SeriesBy::Provider => &**provider,
                    };
                    keyed.entry((key, provider)).or_default().add(totals);
                }
                points.extend(
                    keyed
                        .into_iter()
                        .map(|((key, provider), totals)| SeriesPoint {
                            day: day.clone(),
                            key: key.to_string(),
                            provider: provider.to_string(),
                            totals,
                        }),
                );
            }
            Ok(points)
        })?,
    };
    points.sort_by(|a, b| (&a.day, &a.key, &a.provider).cmp(&(&b.day, &b.key, &b.provider)));
    Ok(points)
}

// === the rollup cache ===

/// (provider, model); model `""` when the request named none, as in `usage_daily`.
type ModelKey = (Arc<str>, Arc<str>);
/// A `usage_daily` row's key within its day: (user, provider, model, endpoint).
type RowKey = (Arc<str>, Arc<str>, Arc<str>, Arc<str>);

/// A day's rollups summed per model and per user.
#[derive(Debug, Default)]
struct DayAgg {
    by_model: HashMap<ModelKey, UsageTotals>,
    by_user: HashMap<Arc<str>, UsageTotals>,
}

/// Yesterday or today: every rollup row, so that one re-read row can replace its old value in
/// the sums.
#[derive(Debug, Default)]
struct LiveDay {
    rows: HashMap<RowKey, UsageTotals>,
    agg: DayAgg,
}

/// Per-user totals of `[from, until)`, `until` being the cache's yesterday.
#[derive(Debug)]
struct UsersFold {
    from: String,
    until: String,
    by_user: HashMap<Arc<str>, UsageTotals>,
    /// `by_user` plus the live days from `from` on: per-user totals of `[from, today]`, kept
    /// current with the live days so that ranking every user is one lookup each. `None` until
    /// needed, and again after the days move.
    through_today: Option<HashMap<Arc<str>, UsageTotals>>,
}

/// Repeated strings (user ids, providers, models, endpoints) stored once.
#[derive(Debug, Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&a));
        a
    }
}

/// More calls recorded since the last look than this, and the cache starts over rather than
/// read them (reading them costs about as much as rebuilding).
const MAX_CATCH_UP: i64 = if cfg!(test) { 30 } else { 200_000 };

/// What the system-wide queries know about one database file's rollups, kept between calls.
///
/// - `closed`: per-model totals of days before yesterday, filled on first use.
/// - `users`: per-user totals from a first day (the month's) up to yesterday, extended a day at a
///   time as days pass.
/// - `live`: every rollup row of yesterday and today, and their per-model and per-user sums.
///
/// **Kept current.** `mark` is the highest `token_usage.id` accounted for. The writer adds rows
/// and their rollups in one transaction, with ids above every committed one, so the rollups can
/// only have changed where rows above `mark` point: each use reads those rows (by rowid range:
/// only the new ones) for their (user, provider, model, endpoint) and re-reads those rollup rows
/// of yesterday and today (by primary key), replacing their old values in the sums. Re-reading is
/// idempotent, so a row seen twice is harmless. A day's rollup key is its calendar day in
/// `limits.timezone`, which the cache does not know; but no zone is more than 12 hours behind
/// UTC, so a row admitted at or after noon UTC of yesterday cannot belong to a day before
/// yesterday. A new row admitted earlier (a call that ran for half a day, a clock set back)
/// drops every cached day it could belong to; they are read again when next needed.
///
/// **Same file.** The row at `mark` must still carry the same request id; if not (the file was
/// replaced, restored from a copy), or if there are fewer rows than before, everything is
/// dropped. Anything else that rewrites `usage_daily` must call [`forget_cached_rollups`].
///
/// Memory: for 20,000 users, 20 models and 18,000 rollup rows a day, about 10 MB.
#[derive(Debug, Default)]
struct RollupCache {
    mark: i64,
    mark_request_id: Option<String>,
    /// `""` until first used.
    today: String,
    yesterday: String,
    live: BTreeMap<String, LiveDay>,
    closed: BTreeMap<String, HashMap<ModelKey, UsageTotals>>,
    users: Option<UsersFold>,
    strings: Interner,
}

/// One cache per database file (the path SQLite reports), shared by every reader connection.
static CACHES: LazyLock<Mutex<HashMap<String, Arc<Mutex<RollupCache>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Drop every cached rollup (for something that rewrites `usage_daily` behind the writer's back;
/// tests).
pub fn forget_cached_rollups() {
    CACHES.lock().clear();
}

/// Fill the cache of `conn`'s database for `today` and the month starting `month_start`, so the
/// first dashboard load after a start does not pay for it (a few hundred ms at 10 million calls).
pub fn warm_cache(conn: &Connection, today: &str, month_start: &str) -> rusqlite::Result<()> {
    with_cache(conn, today, |cache, conn| {
        cache.users_between(conn, month_start, today)?;
        cache.models_between(conn, month_start, today)?;
        Ok(())
    })
}

fn cached_today(conn: &Connection) -> Option<String> {
    let path = conn.path().filter(|p| !p.is_empty())?;
    let cache = CACHES.lock().get(path).cloned()?;
    let today = cache.lock().today.clone();
    (!today.is_empty()).then_some(today)
}

/// Today's date in the zone furthest ahead of UTC (+14:00): no caller's today is later.
fn latest_possible_day() -> String {
    crate::store::local_day(
        jiff::Timestamp::now().as_millisecond() + 14 * 3_600_000,
        &jiff::tz::TimeZone::UTC,
    )
}

/// Run `f` on the cache of `conn`'s database, brought up to date for `today` first. A database
/// without a file (in memory), or a `today` in the future, gets a fresh cache for the call.
fn with_cache<T>(
    conn: &Connection,
    today: &str,
    f: impl FnOnce(&mut RollupCache, &Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    parse_day(today)?;
    // A day no zone has reached yet would move the shared cache past every real caller.
    let shared = match conn.path().filter(|p| !p.is_empty()) {
        Some(path) if today <= latest_possible_day().as_str() => {
            Arc::clone(CACHES.lock().entry(path.to_string()).or_default())
        }
        _ => Arc::default(),
    };
    let mut cache = shared.lock();
    let result = cache
        .refresh(conn, today)
        .and_then(|()| f(&mut cache, conn));
    if result.is_err() {
        // Whatever state it was left in, start over next time.
        *cache = RollupCache::default();
    }
    result
}

const DAY_ROWS_SQL: &str = "SELECT user_id, provider, model, endpoint, calls, input_tokens, \
     cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, \
     estimated_calls, unpriced_calls, errors, latency_ms_sum FROM usage_daily WHERE day = ?1";
const ROLLUP_ROW_SQL: &str = "SELECT calls, input_tokens, cached_input_tokens, output_tokens, \
     reasoning_tokens, total_tokens, cost_nano_usd, estimated_calls, unpriced_calls, errors, \
     latency_ms_sum FROM usage_daily \
     WHERE day = ?1 AND user_id = ?2 AND provider = ?3 AND model = ?4 AND endpoint = ?5";
const NEXT_DAY_SQL: &str = "SELECT MIN(day) FROM usage_daily WHERE day >= ?1 AND day < ?2";
const MAX_ID_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM token_usage";
const REQUEST_ID_SQL: &str = "SELECT request_id FROM token_usage WHERE id = ?1";
const NEW_CALLS_SQL: &str = "SELECT ts, user_id, provider, COALESCE(model, ''), endpoint \
     FROM token_usage WHERE id > ?1 AND id <= ?2";

/// Unix ms of noon UTC on `day`: calls admitted from then on belong to `day` or later in every
/// zone (none is more than 12 hours behind UTC).
fn noon_utc_ms(day: &str) -> rusqlite::Result<i64> {
    let date = parse_day(day)?;
    let noon = date
        .at(12, 0, 0, 0)
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok(noon.timestamp().as_millisecond())
}

impl RollupCache {
    /// Bring the cache up to date with the file, for `today`.
    fn refresh(&mut self, conn: &Connection, today: &str) -> rusqlite::Result<()> {
        let max_id: i64 = conn
            .prepare_cached(MAX_ID_SQL)?
            .query_row([], |r| r.get(0))?;
        if !self.today.is_empty() && !self.same_file(conn, max_id)? {
            *self = RollupCache::default();
        }
        if self.today.is_empty() {
            // Every row up to max_id is in what is read from here on.
            self.roll(conn, today)?;
            return self.set_mark(conn, max_id);
        }
        if today > self.today.as_str() {
            self.roll(conn, today)?;
        }
        if max_id > self.mark {
            self.catch_up(conn, max_id)?;
        }
        Ok(())
    }

    fn same_file(&self, conn: &Connection, max_id: i64) -> rusqlite::Result<bool> {
        if max_id < self.mark {
            return Ok(false);
        }
        if self.mark == 0 {
            return Ok(true);
        }
        let at_mark: Option<String> = conn
            .prepare_cached(REQUEST_ID_SQL)?
            .query_row([self.mark], |r| r.get(0))
            .optional()?;
        Ok(at_mark == self.mark_request_id)
    }

    fn set_mark(&mut self, conn: &Connection, max_id: i64) -> rusqlite::Result<()> {
        self.mark = max_id;
        self.mark_request_id = conn
            .prepare_cached(REQUEST_ID_SQL)?
            .query_row([max_id], |r| r.get(0))
            .optional()?;
        Ok(())
    }

    /// Make `today` the newest day: days before its yesterday leave `live` for `closed`, and the
    /// new live days are read whole.
    fn roll(&mut self, conn: &Connection, today: &str) -> rusqlite::Result<()> {
        let yesterday = day_before(today)?;
        let keep = self.live.split_off(&yesterday);
        for (day, old) in std::mem::replace(&mut self.live, keep) {
            self.closed.insert(day, old.agg.by_model);
        }
        for day in [yesterday.as_str(), today] {
            if !self.live.contains_key(day) {
                let live = self.read_live_day(conn, day)?;
                self.live.insert(day.to_string(), live);
            }
        }
        self.today = today.to_string();
        self.yesterday = yesterday;
        if let Some(fold) = &mut self.users {
            fold.through_today = None;
        }
        Ok(())
    }

    /// Account for the calls with ids in `(mark, max_id]`.
    fn catch_up(&mut self, conn: &Connection, max_id: i64) -> rusqlite::Result<()> {
        if max_id - self.mark > MAX_CATCH_UP {
            let today = std::mem::take(&mut self.today);
            *self = RollupCache::default();
            self.roll(conn, &today)?;
            return self.set_mark(conn, max_id);
        }
        let mut keys: HashSet<(String, String, String, String)> = HashSet::new();
        let mut earliest = i64::MAX;
        {
            let mut stmt = conn.prepare_cached(NEW_CALLS_SQL)?;
            let mut rows = stmt.query(params![self.mark, max_id])?;
            while let Some(row) = rows.next()? {
                earliest = earliest.min(row.get(0)?);
                let text = |i: usize| -> rusqlite::Result<String> {
                    Ok(row.get_ref(i)?.as_str()?.to_string())
                };
                keys.insert((text(1)?, text(2)?, text(3)?, text(4)?));
            }
        }
        if earliest < noon_utc_ms(&self.yesterday)? {
            // Possibly a day before yesterday: drop every cached day it could belong to (no
            // zone is more than 12 hours behind UTC).
            let from = crate::store::local_day(
                earliest.saturating_sub(12 * 3_600_000),
                &jiff::tz::TimeZone::UTC,
            );
            self.closed.split_off(&from);
            if self.users.as_ref().is_some_and(|f| f.until > from) {
                self.users = None;
            }
        }
        let mut stmt = conn.prepare_cached(ROLLUP_ROW_SQL)?;
        for (user, provider, model, endpoint) in keys {
            let key = (
                self.strings.get(&user),
                self.strings.get(&provider),
                self.strings.get(&model),
                self.strings.get(&endpoint),
            );
            for (day, live) in &mut self.live {
                let now = stmt
                    .query_row(params![day, user, provider, model, endpoint], |r| {
                        totals_at(r, 0)
                    })
                    .optional()?;
                let before = live.replace(&key, now);
                let through_today = self
                    .users
                    .as_mut()
                    .filter(|f| day.as_str() >= f.from.as_str())
                    .and_then(|f| f.through_today.as_mut());
                if let Some(sums) = through_today {
                    let t = sums.entry(Arc::clone(&key.0)).or_default();
                    if let Some(before) = before {
                        t.sub(&before);
                    }
                    if let Some(now) = now {
                        t.add(&now);
                    }
                }
            }
        }
        self.set_mark(conn, max_id)
    }

    /// Every rollup row of `day`, with their sums.
    fn read_live_day(&mut self, conn: &Connection, day: &str) -> rusqlite::Result<LiveDay> {
        let mut live = LiveDay::default();
        let strings = &mut self.strings;
        scan_day(conn, day, |user, provider, model, endpoint, totals| {
            let key = (
                strings.get(user),
                strings.get(provider),
                strings.get(model),
                strings.get(endpoint),
            );
            live.replace(&key, Some(totals));
        })?;
        Ok(live)
    }

    /// `day`'s rollups summed per model and per user.
    fn read_day(&mut self, conn: &Connection, day: &str) -> rusqlite::Result<DayAgg> {
        let mut agg = DayAgg::default();
        let strings = &mut self.strings;
        scan_day(conn, day, |user, provider, model, _, totals| {
            add_to(&mut agg.by_user, strings, user, &totals);
            agg.by_model
                .entry((strings.get(provider), strings.get(model)))
                .or_default()
                .add(&totals);
        })?;
        Ok(agg)
    }

    /// The days with rollups in `[from, until)`, oldest first (one index seek each).
    fn days_with_usage(
        conn: &Connection,
        from: &str,
        until: &str,
    ) -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare_cached(NEXT_DAY_SQL)?;
        let mut days = Vec::new();
        let mut next = from.to_string();
        while let Some(day) =
            stmt.query_row(params![next, until], |r| r.get::<_, Option<String>>(0))?
        {
            next = format!("{day}\u{1}");
            days.push(day);
        }
        Ok(days)
    }

    /// Per-model totals of each day with usage in `[from, to]`.
    fn series(
        &mut self,
        conn: &Connection,
        from: &str,
        to: &str,
    ) -> rusqlite::Result<Vec<(String, HashMap<ModelKey, UsageTotals>)>> {
        let mut out = Vec::new();
        let closed_until = if to < self.yesterday.as_str() {
            format!("{to}\u{1}")
        } else {
            self.yesterday.clone()
        };
        for day in Self::days_with_usage(conn, from, &closed_until)? {
            if !self.closed.contains_key(&day) {
                let agg = self.read_day(conn, &day)?;
                self.closed.insert(day.clone(), agg.by_model);
            }
            if let Some(models) = self.closed.get(&day) {
                out.push((day, models.clone()));
            }
        }
        for (day, live) in &self.live {
            if day.as_str() >= from && day.as_str() <= to && !live.rows.is_empty() {
                out.push((day.clone(), live.agg.by_model.clone()));
            }
        }
        Ok(out)
    }

    /// Per-model totals over `[from, to]`.
    fn models_between(
        &mut self,
        conn: &Connection,
        from: &str,
        to: &str,
    ) -> rusqlite::Result<HashMap<ModelKey, UsageTotals>> {
        let mut sums: HashMap<ModelKey, UsageTotals> = HashMap::new();
        for (_, models) in self.series(conn, from, to)? {
            for (key, totals) in models {
                sums.entry(key).or_default().add(&totals);
            }
        }
        Ok(sums)
    }

    /// Per-user totals over `[from, to]`: [`RollupCache::prepare_users`], then
    /// [`RollupCache::users_view`].
    fn users_between(
        &mut self,
        conn: &Connection,
        from: &str,
        to: &str,
    ) -> rusqlite::Result<UsersView<'_>> {
        let summed = self.prepare_users(conn, from, to)?;
        Ok(self.users_view(from, to, summed))
    }

    /// Make per-user totals over `[from, to]` available to [`RollupCache::users_view`]: a range
    /// that reaches yesterday or today is served by the fold and the live days (the fold is
    /// extended as needed); an older one is summed here and returned.
    fn prepare_users(
        &mut self,
        conn: &Connection,
        from: &str,
        to: &str,
    ) -> rusqlite::Result<Option<HashMap<Arc<str>, UsageTotals>>> {
        if to < self.yesterday.as_str() {
            let mut sums: HashMap<Arc<str>, UsageTotals> = HashMap::new();
            for day in Self::days_with_usage(conn, from, &format!("{to}\u{1}"))? {
                for (user, totals) in self.read_day(conn, &day)?.by_user {
                    sums.entry(user).or_default().add(&totals);
                }
            }
            return Ok(Some(sums));
        }
        if from < self.yesterday.as_str() {
            self.extend_users_fold(conn, from)?;
            if to == self.today {
                self.fill_through_today();
            }
        }
        Ok(None)
    }

    /// Compute the fold's `through_today` if it is missing.
    fn fill_through_today(&mut self) {
        let Some(fold) = self.users.as_mut() else {
            return;
        };
        if fold.through_today.is_some() {
            return;
        }
        let mut sums = fold.by_user.clone();
        for (day, live) in &self.live {
            if day.as_str() >= fold.from.as_str() {
                for (user, totals) in &live.agg.by_user {
                    sums.entry(Arc::clone(user)).or_default().add(totals);
                }
            }
        }
        fold.through_today = Some(sums);
    }

    /// Per-user totals over `[from, to]`, after [`RollupCache::prepare_users`] (pass what it
    /// returned).
    fn users_view(
        &self,
        from: &str,
        to: &str,
        summed: Option<HashMap<Arc<str>, UsageTotals>>,
    ) -> UsersView<'_> {
        if let Some(sums) = summed {
            return UsersView::Summed(sums);
        }
        let through_today = self
            .users
            .as_ref()
            .filter(|f| from < self.yesterday.as_str() && f.from == from && to == self.today)
            .and_then(|f| f.through_today.as_ref());
        if let Some(sums) = through_today {
            return UsersView::Cached {
                fold: Some(sums),
                live: Vec::new(),
            };
        }
        let fold = self
            .users
            .as_ref()
            .filter(|f| from < self.yesterday.as_str() && f.from == from)
            .map(|f| &f.by_user);
        let live = self
            .live
            .iter()
            .filter(|(day, _)| day.as_str() >= from && day.as_str() <= to)
            .map(|(_, live)| &live.agg.by_user)
            .collect();
        UsersView::Cached { fold, live }
    }

    /// Make `users` the per-user totals of `[from, yesterday)`, reading only the days it lacks.
    fn extend_users_fold(&mut self, conn: &Connection, from: &str) -> rusqlite::Result<()> {
        let until = self.yesterday.clone();
        let mut fold = match self.users.take() {
            Some(f) if f.from == from && f.until <= until => f,
            _ => UsersFold {
                from: from.to_string(),
                until: from.to_string(),
                by_user: HashMap::new(),
                through_today: None,
            },
        };
        if fold.until < until {
            fold.through_today = None;
            for day in Self::days_with_usage(conn, &fold.until, &until)? {
                let agg = self.read_day(conn, &day)?;
                for (user, totals) in &agg.by_user {
                    fold.by_user
                        .entry(Arc::clone(user))
                        .or_default()
                        .add(totals);
                }
                self.closed.entry(day).or_insert(agg.by_model);
            }
            fold.until = until;
        }
        self.users = Some(fold);
        Ok(())
    }
}

/// Per-user totals over a range of days, as [`RollupCache::users_between`] found them.
enum UsersView<'a> {
    /// A fold of earlier days plus the live days in the range.
    Cached {
        fold: Option<&'a HashMap<Arc<str>, UsageTotals>>,
        live: Vec<&'a HashMap<Arc<str>, UsageTotals>>,
    },
    /// Summed for this call.
    Summed(HashMap<Arc<str>, UsageTotals>),
}

impl UsersView<'_> {
    /// `user`'s totals (zero without usage).
    fn get(&self, user: &str) -> UsageTotals {
        match self {
            UsersView::Cached { fold, live } => {
                let mut totals = fold.and_then(|f| f.get(user)).copied().unwrap_or_default();
                for day in live {
                    if let Some(t) = day.get(user) {
                        totals.add(t);
                    }
                }
                totals
            }
            UsersView::Summed(sums) => sums.get(user).copied().unwrap_or_default(),
        }
    }
}

impl LiveDay {
    /// Set the rollup row `key` to `now` (`None`: it does not exist), moving the sums with it;
    /// returns the row's previous value.
    fn replace(&mut self, key: &RowKey, now: Option<UsageTotals>) -> Option<UsageTotals> {
        let before = match now {
            Some(totals) => self.rows.insert(key.clone(), totals),
            None => self.rows.remove(key),
        };
        let (user, provider, model, _) = key;
        let model_key = (Arc::clone(provider), Arc::clone(model));
        if let Some(before) = before {
            if let Some(t) = self.agg.by_model.get_mut(&model_key) {
                t.sub(&before);
            }
            if let Some(t) = self.agg.by_user.get_mut(user) {
                t.sub(&before);
            }
        }
        if let Some(now) = now {
            self.agg.by_model.entry(model_key).or_default().add(&now);
            self.agg
                .by_user
                .entry(Arc::clone(user))
                .or_default()
                .add(&now);
        }
        before
    }
}

fn add_to(
    sums: &mut HashMap<Arc<str>, UsageTotals>,
    strings: &mut Interner,
    key: &str,
    totals: &UsageTotals,
) {
    match sums.get_mut(key) {
        Some(t) => t.add(totals),
        None => {
            sums.insert(strings.get(key), *totals);
        }
    }
}

/// Every rollup row of `day`: (user, provider, model, endpoint, sums).
fn scan_day(
    conn: &Connection,
    day: &str,
    mut each: impl FnMut(&str, &str, &str, &str, UsageTotals),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(DAY_ROWS_SQL)?;
    let mut rows = stmt.query([day])?;
    while let Some(row) = rows.next()? {
        let totals = totals_at(row, 4)?;
        each(
            row.get_ref(0)?.as_str()?,
            row.get_ref(1)?.as_str()?,
            row.get_ref(2)?.as_str()?,
            row.get_ref(3)?.as_str()?,
            totals,
        );
    }
    Ok(())
}

/// Every statement this module prepares, for `EXPLAIN QUERY PLAN` checks (tests, the bench).
#[doc(hidden)]
pub fn statements() -> Vec<String> {
    let mut all = vec![
        user_row_sql(),
        user_totals_sql(),
        users_count_sql(),
        users_ids_sql(),
        user_daily_sql(),
        user_models_sql(),
        user_calls_first_sql(),
        user_calls_after_sql(),
        CALL_TS_SQL.to_string(),
        USERS_TOTAL_SQL.to_string(),
        USERS_SEEN_SINCE_SQL.to_string(),
        USERS_BLOCKED_SQL.to_string(),
        user_series_sql(SeriesBy::Model),
        user_series_sql(SeriesBy::Provider),
        LATEST_DAY_SQL.to_string(),
        DAY_ROWS_SQL.to_string(),
        ROLLUP_ROW_SQL.to_string(),
        NEXT_DAY_SQL.to_string(),
        MAX_ID_SQL.to_string(),
        REQUEST_ID_SQL.to_string(),
        NEW_CALLS_SQL.to_string(),
        calls_sql(false),
        calls_sql(true),
    ];
    for sort in [UserSort::Id, UserSort::LastSeen, UserSort::Created] {
        for desc in [false, true] {
            all.extend(users_page_sql(sort, desc));
        }
    }
    all
}

/// `EXPLAIN QUERY PLAN` of every statement of [`statements`], with NULL parameters.
#[doc(hidden)]
pub fn query_plans(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    statements()
        .into_iter()
        .map(|sql| {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
            let plan = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((sql, plan))
        })
        .collect()
}

// === the export ===

fn calls_sql(one_user: bool) -> String {
    if one_user {
        format!(
            "SELECT {CALL_COLUMNS} FROM token_usage WHERE user_id = ?3 AND ts >= ?1 AND ts < ?2 \
             ORDER BY ts, id"
        )
    } else {
        format!("SELECT {CALL_COLUMNS} FROM token_usage WHERE ts >= ?1 AND ts < ?2 ORDER BY ts, id")
    }
}

/// Visit the calls with `ts` in `[from_ms, to_ms)` (of one user, or everyone) in time order
/// (`ts`, then `id`: the order of the index that finds them, so nothing is sorted or held), one
/// row at a time: `f` returns false to stop. Returns how many rows were visited.
pub fn for_each_call(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
    user: Option<&str>,
    mut f: impl FnMut(&CallRow) -> bool,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(&calls_sql(user.is_some()))?;
    let mut rows = match user {
        Some(user) => stmt.query(params![from_ms, to_ms, user])?,
        None => stmt.query(params![from_ms, to_ms])?,
    };
    let mut visited = 0;
    while let Some(row) = rows.next()? {
        visited += 1;
        if !f(&call_from_row(row)?) {
            break;
        }
    }
    Ok(visited)
}

/// The CSV header: the `token_usage` contract columns, in order.
pub const CSV_COLUMNS: [&str; 19] = [
    "id",
    "request_id",
    "ts",
    "user_id",
    "provider",
    "model",
    "endpoint",
    "streamed",
    "status",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_nano_usd",
    "usage_source",
    "latency_ms",
    "ttfb_ms",
    "outcome",
];

/// Append the CSV header line (CRLF-terminated, RFC 4180).
pub fn write_csv_header(out: &mut Vec<u8>) {
    out.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Append one field, quoted when it holds a comma, quote, CR or LF (quotes doubled).
fn csv_field(out: &mut Vec<u8>, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        for b in field.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

fn csv_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Append one call as a CSV line in [`CSV_COLUMNS`] order; NULL is an empty field.
pub fn write_csv_row(out: &mut Vec<u8>, row: &CallRow) {
    csv_int(out, row.id);
    out.push(b',');
    csv_field(out, &row.request_id);
    out.push(b',');
    csv_int(out, row.ts);
    out.push(b',');
    csv_field(out, &row.user_id);
    out.push(b',');
    csv_field(out, &row.provider);
    out.push(b',');
    csv_field(out, row.model.as_deref().unwrap_or(""));
    out.push(b',');
    csv_field(out, &row.endpoint);
    out.push(b',');
    csv_int(out, i64::from(row.streamed));
    for n in [
        row.status,
        row.input_tokens,
        row.cached_input_tokens,
        row.output_tokens,
        row.reasoning_tokens,
        row.total_tokens,
    ] {
        out.push(b',');
        csv_int(out, n);
    }
    out.push(b',');
    if let Some(cost) = row.cost_nano_usd {
        csv_int(out, cost);
    }
    out.push(b',');
    csv_field(out, &row.usage_source);
    out.push(b',');
    csv_int(out, row.latency_ms);
    out.push(b',');
    if let Some(ttfb) = row.ttfb_ms {
        csv_int(out, ttfb);
    }
    out.push(b',');
    csv_field(out, &row.outcome);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::path::{Path, PathBuf};

    use jiff::tz::TimeZone;

    use super::*;
    use crate::provider::{Usage, UsageSource};
    use crate::store::{Store, UsageRow, local_day, open_reader};

    const TODAY: &str = "2026-10-15";
    const YESTERDAY: &str = "2026-10-14";
    const MONTH: &str = "2026-10-01";

    fn day_start(day: &str) -> i64 {
        format!("{day}T00:00:00Z")
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond()
    }

    /// A call of `user` on `day`, `secs` after midnight UTC; the other fields vary with `n`.
    fn call(n: u64, user: &str, day: &str, secs: i64, model: Option<&str>, input: u64) -> UsageRow {
        let output = 10 + n % 17;
        UsageRow {
            request_id: format!("req-{n}"),
            ts_ms: day_start(day) + secs * 1_000,
            user_id: Arc::from(user),
            user_email: Some(format!("{user}@Example.com")),
            user_name: Some(format!("Name {user}")),
            provider: Arc::from(if model.is_some_and(|m| m.starts_with("gemini")) {
                "gemini"
            } else {
                "openai"
            }),
            model: model.map(str::to_string),
            endpoint: if n.is_multiple_of(2) {
                "chat.completions"
            } else {
                "responses"
            },
            streamed: n % 2 == 1,
            status: if n.is_multiple_of(7) { 502 } else { 200 },
            usage: Usage {
                input_tokens: input,
                cached_input_tokens: input / 4,
                output_tokens: output,
                reasoning_tokens: output / 5,
            },
            cost_nano_usd: if n.is_multiple_of(5) {
                None
            } else {
                Some(i64::try_from(input * 3 + output * 7).unwrap())
            },
            usage_source: match n % 8 {
                0 => UsageSource::None,
                3 | 6 => UsageSource::Estimated,
                _ => UsageSource::Reported,
            },
            latency_ms: 100 + n,
            ttfb_ms: Some(10),
            outcome: "complete",
        }
    }

    /// What one call adds to the rollups, computed from the row itself.
    fn totals_of(r: &UsageRow) -> UsageTotals {
        let u = &r.usage;
        let int = |v: u64| i64::try_from(v).unwrap();
        UsageTotals {
            calls: 1,
            input_tokens: int(u.input_tokens),
            cached_input_tokens: int(u.cached_input_tokens),
            output_tokens: int(u.output_tokens),
            reasoning_tokens: int(u.reasoning_tokens),
            total_tokens: int(u.input_tokens + u.output_tokens),
            cost_nano_usd: r.cost_nano_usd.unwrap_or(0),
            estimated_calls: i64::from(r.usage_source == UsageSource::Estimated),
            unpriced_calls: i64::from(r.cost_nano_usd.is_none()),
            errors: i64::from(r.status >= 400),
            latency_ms_sum: int(r.latency_ms),
        }
    }

    /// The sum of the rows on days `[from, to]` (UTC) that `keep` keeps.
    fn expect(
        rows: &[UsageRow],
        from: &str,
        to: &str,
        keep: impl Fn(&UsageRow) -> bool,
    ) -> UsageTotals {
        let mut sum = UsageTotals::default();
        for r in rows {
            let day = local_day(r.ts_ms, &TimeZone::UTC);
            if day.as_str() >= from && day.as_str() <= to && keep(r) {
                sum.add(&totals_of(r));
            }
        }
        sum
    }

    const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "a_b", "axb"];
    const DAYS: [&str; 6] = [
        "2026-09-30",
        "2026-10-02",
        "2026-10-09",
        "2026-10-13",
        YESTERDAY,
        TODAY,
    ];
    const MODELS: [Option<&str>; 4] = [Some("gpt-4o"), Some("gemini-2.5-flash"), None, Some("o3")];

    /// 360 calls over six users, six days (one in the previous month) and four models.
    fn fixture_rows() -> Vec<UsageRow> {
        (0..360_u64)
            .map(|n| {
                let i = usize::try_from(n).unwrap();
                // Users get different amounts (alice the most), days and models rotate.
                let user = USERS[[0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 0][i % 13]];
                let day = DAYS[i % 6];
                call(
                    n,
                    user,
                    day,
                    i64::try_from(n).unwrap() * 200,
                    MODELS[i / 6 % 4],
                    100 + n * 3,
                )
            })
            .collect()
    }

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn write(path: &Path, rows: &[UsageRow]) {
        let (store, writer) = Store::open(path, TimeZone::UTC, 10_000, 64).unwrap();
        for r in rows {
            assert!(store.record(r.clone()));
        }
        writer.close();
        assert_eq!(store.rows_committed(), rows.len() as u64);
    }

    fn db(rows: &[UsageRow]) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.db");
        write(&path, rows);
        Db { _dir: dir, path }
    }

    fn block(path: &Path, user: &str) {
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        crate::store::set_user_blocked(&tx, user, true, Some("spam"), day_start(TODAY)).unwrap();
        tx.commit().unwrap();
    }

    fn stats_now(conn: &Connection, today: &str) -> Stats {
        stats(
            conn,
            today,
            &crate::store::month_start(today),
            day_start(today),
            day_start(today) - 6 * 86_400_000,
        )
        .unwrap()
    }

    #[test]
    fn stats_are_exact_sums_of_the_rollups() {
        let rows = fixture_rows();
        let db = db(&rows);
        block(&db.path, "bob");
        block(&db.path, "erin"); // never called: a row without usage
        let conn = open_reader(&db.path).unwrap();
        let s = stats_now(&conn, TODAY);

        assert_eq!(s.users_total, 7);
        assert_eq!(s.users_blocked, 2);
        let seen_since = |from: &str| {
            USERS
                .iter()
                .filter(|u| {
                    rows.iter().any(|r| {
                        &*r.user_id == **u && local_day(r.ts_ms, &TimeZone::UTC).as_str() >= from
                    })
                })
                .count()
        };
        assert_eq!(
            s.users_active_today,
            i64::try_from(seen_since(TODAY)).unwrap()
        );
        assert_eq!(
            s.users_active_7d,
            i64::try_from(seen_since("2026-10-09")).unwrap()
        );
        assert_eq!(s.today, expect(&rows, TODAY, TODAY, |_| true));
        assert_eq!(s.month, expect(&rows, MONTH, TODAY, |_| true));
        assert!(
            s.month.calls > 0 && s.month.calls < 360,
            "the previous month is left out"
        );
        assert!(
            (s.estimated_share_month - s.month.estimated_calls as f64 / s.month.calls as f64).abs()
                < 1e-12
        );
        assert!(
            (s.estimated_share_today - s.today.estimated_calls as f64 / s.today.calls as f64).abs()
                < 1e-12
        );
        assert!(s.estimated_share_today > 0.0);

        // Per model and provider, most tokens first; a call without a model is `None`.
        assert_eq!(s.by_model.len(), 4);
        for m in &s.by_model {
            let want = expect(&rows, MONTH, TODAY, |r| {
                *r.provider == *m.provider && r.model.as_deref() == m.model.as_deref()
            });
            assert_eq!(m.totals, want, "{m:?}");
        }
        assert!(
            s.by_model
                .windows(2)
                .all(|w| w[0].totals.total_tokens >= w[1].totals.total_tokens)
        );
        assert!(s.by_model.iter().any(|m| m.model.is_none()));
        assert_eq!(
            s.by_provider
                .iter()
                .map(|p| p.provider.as_str())
                .collect::<Vec<_>>()
                .len(),
            2
        );
        for p in &s.by_provider {
            assert_eq!(
                p.totals,
                expect(&rows, MONTH, TODAY, |r| *r.provider == *p.provider)
            );
        }

        // An empty database answers zeros.
        let empty = self::db(&[]);
        let s = stats_now(&open_reader(&empty.path).unwrap(), TODAY);
        assert_eq!(
            (s.users_total, s.today, s.month),
            (0, UsageTotals::default(), UsageTotals::default())
        );
        assert_eq!(s.estimated_share_month, 0.0);
    }

    #[test]
    fn a_small_day_adds_up_to_the_expected_figures() {
        // Hand-checked figures: two calls on one day.
        let a = call(3, "u1", TODAY, 10, Some("gpt-4o"), 1_000); // output 13, cost 3091, estimated
        let mut b = call(2, "u1", TODAY, 20, Some("gpt-4o"), 500); // output 12, cost 1584, reported
        b.status = 429;
        let db = db(&[a, b]);
        let conn = open_reader(&db.path).unwrap();
        let s = stats_now(&conn, TODAY);
        assert_eq!(
            s.today,
            UsageTotals {
                calls: 2,
                input_tokens: 1_500,
                cached_input_tokens: 250 + 125,
                output_tokens: 25,
                reasoning_tokens: 2 + 2,
                total_tokens: 1_525,
                cost_nano_usd: 3_091 + 1_584,
                estimated_calls: 1,
                unpriced_calls: 0,
                errors: 1,
                latency_ms_sum: 103 + 102,
            }
        );
        assert_eq!(s.estimated_share_today, 0.5);
    }

    fn user_totals_map(rows: &[UsageRow], from: &str, to: &str) -> HashMap<String, UsageTotals> {
        let mut out = HashMap::new();
        for u in USERS {
            out.insert(u.to_string(), expect(rows, from, to, |r| &*r.user_id == u));
        }
        out
    }

    fn ids(page: &UsersPage) -> Vec<&str> {
        page.users.iter().map(|u| u.id.as_str()).collect()
    }

    #[test]
    fn users_sort_over_everyone_search_and_page() {
        let rows = fixture_rows();
        let db = db(&rows);
        block(&db.path, "erin");
        let conn = open_reader(&db.path).unwrap();
        let month = user_totals_map(&rows, MONTH, TODAY);
        let today = user_totals_map(&rows, TODAY, TODAY);
        let page = |q: UsersQuery| users_page(&conn, TODAY, MONTH, &q).unwrap();

        // Month tokens, descending, over all 7 users (erin has none and comes last).
        let mut want: Vec<(i64, &str)> =
            USERS.iter().map(|u| (month[*u].total_tokens, *u)).collect();
        want.sort_by(|a, b| b.cmp(a));
        let mut want: Vec<&str> = want.into_iter().map(|(_, u)| u).collect();
        want.push("erin");
        let all = page(UsersQuery {
            sort: UserSort::TokensMonth,
            desc: true,
            limit: 100,
            ..UsersQuery::default()
        });
        assert_eq!(all.total, 7);
        assert_eq!(ids(&all), want);
        for u in &all.users {
            if u.id == "erin" {
                assert!(u.blocked);
                assert_eq!(u.blocked_reason.as_deref(), Some("spam"));
                assert_eq!(
                    (u.today, u.month, u.last_seen_at),
                    (UsageTotals::default(), UsageTotals::default(), None)
                );
            } else {
                assert_eq!(u.month, month[&u.id], "{}", u.id);
                assert_eq!(u.today, today[&u.id], "{}", u.id);
                assert_eq!(
                    u.email.as_deref(),
                    Some(format!("{}@Example.com", u.id).as_str())
                );
                // The same figures as one user's summary.
                assert_eq!(
                    user_summary(&conn, &u.id, TODAY, MONTH).unwrap().as_ref(),
                    Some(u)
                );
            }
        }
        // Pages of 3 are slices of the whole order, and `total` counts every match.
        let mut paged = Vec::new();
        for offset in [0, 3, 6, 9] {
            let p = page(UsersQuery {
                sort: UserSort::TokensMonth,
                desc: true,
                limit: 3,
                offset,
                ..UsersQuery::default()
            });
            assert_eq!(p.total, 7);
            paged.extend(p.users.into_iter().map(|u| u.id));
        }
        assert_eq!(paged, want);

        // Today's cost, ascending: users without usage today first, ties by id.
        let mut want: Vec<(i64, &str)> = USERS
            .iter()
            .map(|u| (today[*u].cost_nano_usd, *u))
            .collect();
        want.push((0, "erin"));
        want.sort();
        let p = page(UsersQuery {
            sort: UserSort::CostToday,
            desc: false,
            limit: 100,
            ..UsersQuery::default()
        });
        assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());
        let mut want: Vec<(i64, &str)> = USERS
            .iter()
            .map(|u| (month[*u].cost_nano_usd, *u))
            .collect();
        want.push((0, "erin"));
        want.sort_by(|a, b| b.cmp(a));
        let p = page(UsersQuery {
            sort: UserSort::CostMonth,
            desc: true,
            limit: 100,
            ..UsersQuery::default()
        });
        assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());
        let mut want: Vec<(i64, &str)> =
            USERS.iter().map(|u| (today[*u].total_tokens, *u)).collect();
        want.push((0, "erin"));
        want.sort_by(|a, b| b.cmp(a));
        let p = page(UsersQuery {
            sort: UserSort::TokensToday,
            desc: true,
            limit: 100,
            ..UsersQuery::default()
        });
        assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());

        // Columns of `users`.
        let p = page(UsersQuery {
            sort: UserSort::Id,
            limit: 100,
            ..UsersQuery::default()
        });
        assert_eq!(
            ids(&p),
            ["a_b", "alice", "axb", "bob", "carol", "dave", "erin"]
        );
        assert_eq!(p.users[1].month, month["alice"]);
        let p = page(UsersQuery {
            sort: UserSort::Id,
            desc: true,
            limit: 2,
            offset: 1,
            ..UsersQuery::default()
        });
        assert_eq!((ids(&p), p.total), (vec!["dave", "carol"], 7));
        let p = page(UsersQuery {
            sort: UserSort::LastSeen,
            desc: true,
            limit: 100,
            ..UsersQuery::default()
        });
        let seen: Vec<Option<i64>> = p.users.iter().map(|u| u.last_seen_at).collect();
        assert!(seen.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");
        assert_eq!(p.users.last().unwrap().id, "erin");
        let p = page(UsersQuery {
            sort: UserSort::Created,
            limit: 100,
            ..UsersQuery::default()
        });
        let created: Vec<i64> = p.users.iter().map(|u| u.created_at).collect();
        assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");

        // Search: id, email or name, case-insensitive; LIKE wildcards are the user's text.
        let search = |text: &str, sort: UserSort| {
            let p = page(UsersQuery {
                search: Some(text.into()),
                sort,
                limit: 100,
                ..UsersQuery::default()
            });
            (
                ids(&p).into_iter().map(str::to_string).collect::<Vec<_>>(),
                p.total,
            )
        };
        assert_eq!(search("a_b", UserSort::Id), (vec!["a_b".to_string()], 1));
        assert_eq!(
            search("A_B", UserSort::TokensMonth),
            (vec!["a_b".to_string()], 1)
        );
        assert_eq!(search("%", UserSort::Id), (vec![], 0));
        assert_eq!(
            search("NAME AL", UserSort::Id),
            (vec!["alice".to_string()], 1)
        );
        assert_eq!(search("example.COM", UserSort::Id).1, 6);
        assert_eq!(search("", UserSort::Id).1, 7);
        assert_eq!(
            search("car", UserSort::TokensToday),
            (vec!["carol".to_string()], 1)
        );
        // Every caller's name ("Name …") has an "a"; erin has neither name nor email.
        let (found, total) = search("a", UserSort::CostMonth);
        assert_eq!((found.len(), total), (6, 6));
        assert!(!found.contains(&"erin".to_string()));
    }

    #[test]
    fn one_users_days_models_and_summary() {
        let rows = fixture_rows();
        let db = db(&rows);
        let conn = open_reader(&db.path).unwrap();
        assert_eq!(user_summary(&conn, "nobody", TODAY, MONTH).unwrap(), None);

        let daily = user_daily(&conn, "alice", "2026-09-29", TODAY).unwrap();
        assert_eq!(daily.len(), 17);
        assert_eq!(daily.first().unwrap().day, "2026-09-29");
        assert_eq!(daily.last().unwrap().day, TODAY);
        for p in &daily {
            assert_eq!(
                p.totals,
                expect(&rows, &p.day, &p.day, |r| &*r.user_id == "alice"),
                "{}",
                p.day
            );
        }
        assert_eq!(daily[1].day, "2026-09-30");
        assert!(daily[1].totals.calls > 0);
        assert_eq!(daily[2].totals, UsageTotals::default()); // 2026-10-01: no calls, still there
        assert_eq!(daily.iter().filter(|p| p.totals.calls > 0).count(), 6);
        assert!(
            user_daily(&conn, "alice", "2026-10-16", TODAY)
                .unwrap()
                .is_empty()
        );
        assert!(user_daily(&conn, "alice", "not a day", TODAY).is_err());

        let models = user_models(&conn, "alice", MONTH).unwrap();
        assert!(
            models
                .windows(2)
                .all(|w| w[0].totals.total_tokens >= w[1].totals.total_tokens)
        );
        let mut sum = UsageTotals::default();
        for m in &models {
            sum.add(&m.totals);
            let want = expect(&rows, MONTH, TODAY, |r| {
                &*r.user_id == "alice"
                    && r.model.as_deref() == m.model.as_deref()
                    && *r.provider == *m.provider
            });
            assert_eq!(m.totals, want);
        }
        assert_eq!(sum, expect(&rows, MONTH, TODAY, |r| &*r.user_id == "alice"));

        let s = user_summary(&conn, "alice", TODAY, MONTH).unwrap().unwrap();
        assert_eq!(
            s.today,
            expect(&rows, TODAY, TODAY, |r| &*r.user_id == "alice")
        );
        assert_eq!(s.month, sum);
        assert!(!s.blocked);
    }

    #[test]
    fn call_pages_follow_the_cursor_without_overlap_or_gap() {
        // 23 calls, several sharing a timestamp, recorded out of time order.
        let mut rows: Vec<UsageRow> = (0..23_u64)
            .map(|n| {
                call(
                    n,
                    "pat",
                    TODAY,
                    i64::try_from((n * 7) % 10).unwrap(),
                    Some("gpt-4o"),
                    100 + n,
                )
            })
            .collect();
        rows.push(call(99, "someone-else", TODAY, 5, Some("gpt-4o"), 1));
        let db = db(&rows);
        let conn = open_reader(&db.path).unwrap();
        let all = user_calls(&conn, "pat", None, 100).unwrap();
        assert_eq!(all.len(), 23);
        assert!(
            all.windows(2)
                .all(|w| (w[0].ts, w[0].id) > (w[1].ts, w[1].id)),
            "newest first"
        );
        let mut paged: Vec<CallRow> = Vec::new();
        let mut cursor = None;
        loop {
            let page = user_calls(&conn, "pat", cursor, 5).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 5);
            cursor = Some(page.last().unwrap().id);
            paged.extend(page);
        }
        assert_eq!(paged, all);
        assert!(
            user_calls(&conn, "pat", Some(123_456), 5)
                .unwrap()
                .is_empty()
        );

        let first = &all[0];
        let source = rows
            .iter()
            .find(|r| r.request_id == first.request_id)
            .unwrap();
        assert_eq!(first.user_id, "pat");
        assert_eq!(first.ts, source.ts_ms);
        assert_eq!(
            first.total_tokens,
            i64::try_from(source.usage.total()).unwrap()
        );
        assert_eq!(first.cost_nano_usd, source.cost_nano_usd);
        assert_eq!(first.usage_source, source.usage_source.as_str());
        assert_eq!(first.status, i64::from(source.status));
        assert_eq!(first.latency_ms, i64::try_from(source.latency_ms).unwrap());
    }

    #[test]
    fn series_by_model_and_provider() {
        let rows = fixture_rows();
        let db = db(&rows);
        let conn = open_reader(&db.path).unwrap();
        let since = "2026-10-02";
        for user in [None, Some("carol")] {
            let keep_user = |r: &UsageRow| user.is_none_or(|u| *r.user_id == *u);
            let by_model = usage_series_until(&conn, since, TODAY, SeriesBy::Model, user).unwrap();
            assert!(
                by_model
                    .windows(2)
                    .all(|w| (&w[0].day, &w[0].key, &w[0].provider)
                        < (&w[1].day, &w[1].key, &w[1].provider))
            );
            let days: std::collections::BTreeSet<&str> =
                by_model.iter().map(|p| p.day.as_str()).collect();
            assert_eq!(
                days.into_iter().collect::<Vec<_>>(),
                ["2026-10-02", "2026-10-09", "2026-10-13", YESTERDAY, TODAY]
            );
            for p in &by_model {
                let want = expect(&rows, &p.day, &p.day, |r| {
                    keep_user(r)
                        && r.model.as_deref().unwrap_or("") == p.key
                        && *r.provider == *p.provider
                });
                assert_eq!(p.totals, want, "{p:?}");
            }
            let mut sum = UsageTotals::default();
            by_model.iter().for_each(|p| sum.add(&p.totals));
            assert_eq!(sum, expect(&rows, since, TODAY, keep_user));

            let by_provider = usage_series(&conn, since, SeriesBy::Provider, user).unwrap();
            for p in &by_provider {
                assert_eq!(p.key, p.provider);
                let want = expect(&rows, &p.day, &p.day, |r| {
                    keep_user(r) && *r.provider == *p.key
                });
                assert_eq!(p.totals, want, "{p:?}");
            }
            let mut sum = UsageTotals::default();
            by_provider.iter().for_each(|p| sum.add(&p.totals));
            assert_eq!(sum, expect(&rows, since, TODAY, keep_user));
        }
    }

    #[test]
    fn the_cache_follows_new_calls_days_and_late_rows() {
        let rows = fixture_rows();
        let db = db(&rows);
        let conn = open_reader(&db.path).unwrap();
        let check = |rows: &[UsageRow], today: &str| {
            let month = crate::store::month_start(today);
            let s = stats_now(&conn, today);
            assert_eq!(
                s.today,
                expect(rows, today, today, |_| true),
                "today {today}"
            );
            assert_eq!(
                s.month,
                expect(rows, &month, today, |_| true),
                "month {today}"
            );
            let p = users_page(
                &conn,
                today,
                &month,
                &UsersQuery {
                    sort: UserSort::TokensMonth,
                    desc: true,
                    limit: 100,
                    ..UsersQuery::default()
                },
            )
            .unwrap();
            for u in &p.users {
                assert_eq!(
                    u.month,
                    expect(rows, &month, today, |r| *r.user_id == *u.id),
                    "{} {today}",
                    u.id
                );
                assert_eq!(
                    u.today,
                    expect(rows, today, today, |r| *r.user_id == *u.id),
                    "{} {today}",
                    u.id
                );
            }
            assert!(
                p.users
                    .windows(2)
                    .all(|w| w[0].month.total_tokens >= w[1].month.total_tokens)
            );
            let series =
                usage_series_until(&conn, "2026-09-01", today, SeriesBy::Provider, None).unwrap();
            let mut sum = UsageTotals::default();
            series.iter().for_each(|p| sum.add(&p.totals));
            assert_eq!(sum, expect(rows, "2026-09-01", today, |_| true));
        };
        // Yesterday first (the cache starts there), then today: the day rolls.
        check(&rows, YESTERDAY);
        check(&rows, TODAY);

        // New calls today and yesterday (a new user, new keys, and more on existing keys): a
        // few are caught up with, many more than `MAX_CATCH_UP` start the cache over.
        let mut more = rows.clone();
        for (batch, count) in [(1_000, 20), (2_000, 45)] {
            let extra: Vec<UsageRow> = (batch..batch + count)
                .map(|n| {
                    let i = usize::try_from(n).unwrap();
                    let day = if n % 3 == 0 { YESTERDAY } else { TODAY };
                    call(
                        n,
                        ["alice", "zed", "dave"][i % 3],
                        day,
                        80_000,
                        MODELS[i % 4],
                        5_000 + n,
                    )
                })
                .collect();
            write(&db.path, &extra);
            more.extend(extra);
            check(&more, TODAY);
        }

        // A late row for a day long closed (and another for the previous month): the cached
        // days it could belong to are read again.
        let late = vec![
            call(3_000, "carol", "2026-10-02", 100, Some("o3"), 70_000),
            call(3_001, "bob", "2026-09-30", 100, Some("o3"), 80_000),
        ];
        write(&db.path, &late);
        more.extend(late);
        check(&more, TODAY);

        // A request computed just before midnight, after the cache moved on to today; and one
        // for a day before the live ones.
        check(&more, YESTERDAY);
        check(&more, "2026-10-13");
        check(&more, TODAY);

        // A malformed day is refused; a day no zone has reached is answered (with nothing)
        // without moving the shared cache; neither disturbs the next answers.
        assert!(stats(&conn, "15/10/2026", MONTH, 0, 0).is_err());
        let future = stats_now(&conn, "2999-01-01");
        assert_eq!((future.today.calls, future.month.calls), (0, 0));
        check(&more, TODAY);

        // Forgetting everything gives the same answers.
        forget_cached_rollups();
        check(&more, TODAY);
    }

    #[test]
    fn a_replaced_file_is_not_mistaken_for_the_cached_one() {
        let rows = fixture_rows();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.db");
        write(&path, &rows);
        let s = stats_now(&open_reader(&path).unwrap(), TODAY);
        assert_eq!(s.month, expect(&rows, MONTH, TODAY, |_| true));
        // Another database at the same path, with as many rows but different ones.
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_file(path.with_extension("db-wal"));
        let _ = std::fs::remove_file(path.with_extension("db-shm"));
        let other: Vec<UsageRow> = rows
            .iter()
            .map(|r| UsageRow {
                request_id: format!("other-{}", r.request_id),
                ts_ms: r.ts_ms + 1,
                ..r.clone()
            })
            .take(300)
            .collect();
        write(&path, &other);
        let s = stats_now(&open_reader(&path).unwrap(), TODAY);
        assert_eq!(s.month, expect(&other, MONTH, TODAY, |_| true));
    }

    #[test]
    fn export_visits_calls_in_time_order_and_quotes_csv() {
        let mut odd = call(1, "u,1", TODAY, 30, Some("my,\"model\""), 10);
        odd.cost_nano_usd = None;
        odd.ttfb_ms = None;
        let rows = vec![
            call(2, "u2", TODAY, 20, Some("gpt-4o"), 20),
            odd,
            call(3, "u2", TODAY, 40, None, 30),
            call(4, "u2", YESTERDAY, 10, Some("gpt-4o"), 40),
        ];
        let db = db(&rows);
        let conn = open_reader(&db.path).unwrap();
        let (from, to) = (day_start(TODAY), day_start(TODAY) + 86_400_000);
        let mut seen = Vec::new();
        let visited = for_each_call(&conn, from, to, None, |r| {
            seen.push(r.request_id.clone());
            true
        })
        .unwrap();
        assert_eq!(
            (visited, seen),
            (3, vec!["req-2".to_string(), "req-1".into(), "req-3".into()])
        );
        let mut seen = Vec::new();
        let visited = for_each_call(&conn, 0, i64::MAX, Some("u2"), |r| {
            seen.push(r.request_id.clone());
            seen.len() < 2
        })
        .unwrap();
        assert_eq!(
            (visited, seen),
            (2, vec!["req-4".to_string(), "req-2".into()])
        );

        let mut out = Vec::new();
        write_csv_header(&mut out);
        for_each_call(&conn, from, to, Some("u,1"), |r| {
            write_csv_row(&mut out, r);
            true
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "id,request_id,ts,user_id,provider,model,endpoint,streamed,status,input_tokens,\
             cached_input_tokens,output_tokens,reasoning_tokens,total_tokens,cost_nano_usd,\
             usage_source,latency_ms,ttfb_ms,outcome"
        );
        let ts = day_start(TODAY) + 30_000;
        assert_eq!(
            lines[1],
            format!(
                "2,req-1,{ts},\"u,1\",openai,\"my,\"\"model\"\"\",responses,1,200,10,2,11,2,21,,reported,101,,complete"
            )
        );
        assert_eq!(lines[2], "");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn no_query_scans_calls_or_rollups() {
        let db = db(&fixture_rows());
        let conn = open_reader(&db.path).unwrap();
        let plans = query_plans(&conn).unwrap();
        assert_eq!(plans.len(), statements().len());
        for (sql, plan) in plans {
            for step in &plan {
                assert!(
                    !step.starts_with("SCAN token_usage") && !step.starts_with("SCAN usage_daily"),
                    "{sql}\n{plan:?}"
                );
                if sql.contains("FROM token_usage") {
                    assert!(!step.contains("TEMP B-TREE"), "{sql}\n{plan:?}");
                }
            }
        }
        // The blocked count reads only the blocked users.
        let (_, plan) = query_plans(&conn)
            .unwrap()
            .into_iter()
            .find(|(sql, _)| sql == USERS_BLOCKED_SQL)
            .unwrap();
        assert!(plan.iter().any(|s| s.contains("users_blocked")), "{plan:?}");
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
