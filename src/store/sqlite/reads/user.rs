//! One user's usage: daily series, per-model sums and their calls, page by page — a few rollup
//! rows through the user's index, and calls through `(user_id, ts)`.

use foldhash::HashMap;
use rusqlite::{Connection, OptionalExtension, params};

use super::{CALL_COLUMNS, SUMS, call_from_row, parse_day, sort_models, totals_at};
use crate::store::{
    CallRow, DayPoint, ModelUsage, SeriesBy, SeriesPoint, UserUsage, UserUsageQuery,
};
use crate::usage::Totals;

/// One user's summary, days, models and a page of calls; `None` when the user has no row.
pub fn user_usage(conn: &Connection, q: &UserUsageQuery) -> rusqlite::Result<Option<UserUsage>> {
    let Some(summary) = super::users::user_summary(conn, &q.user, &q.today, &q.month_start)? else {
        return Ok(None);
    };
    let daily = user_daily(conn, &q.user, &q.since_day, &q.today)?;
    let models = user_models(conn, &q.user, &q.since_day)?;
    // One more than the page, to know whether there is a next one.
    let mut calls = user_calls(conn, &q.user, q.before_call, q.limit.saturating_add(1))?;
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let more_calls = calls.len() > limit;
    calls.truncate(limit);
    Ok(Some(UserUsage {
        summary,
        daily,
        models,
        calls,
        more_calls,
    }))
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
    let mut found: HashMap<String, Totals> = conn
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

fn user_models_sql() -> String {
    format!(
        "SELECT provider, model, {SUMS} FROM usage_daily WHERE user_id = ?1 AND day >= ?2 \
         GROUP BY provider, model"
    )
}

/// A user's usage per (provider, model) since `since_day`, most tokens first.
pub fn user_models(
    conn: &Connection,
    user: &str,
    since_day: &str,
) -> rusqlite::Result<Vec<ModelUsage>> {
    let mut models = conn
        .prepare_cached(&user_models_sql())?
        .query_map(params![user, since_day], |row| {
            let model: String = row.get(1)?;
            Ok(ModelUsage {
                provider: row.get(0)?,
                model: (!model.is_empty()).then_some(model),
                totals: totals_at(row, 2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    sort_models(&mut models);
    Ok(models)
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

/// One user's usage per day and model (or provider) over `[since_day, until_day]`.
pub fn user_series(
    conn: &Connection,
    user: &str,
    since_day: &str,
    until_day: &str,
    by: SeriesBy,
) -> rusqlite::Result<Vec<SeriesPoint>> {
    conn.prepare_cached(&user_series_sql(by))?
        .query_map(params![user, since_day, until_day], |r| {
            Ok(SeriesPoint {
                day: r.get(0)?,
                key: r.get(1)?,
                provider: r.get(2)?,
                totals: totals_at(r, 3)?,
            })
        })?
        .collect()
}

pub(super) fn statements() -> Vec<String> {
    vec![
        user_daily_sql(),
        user_models_sql(),
        user_calls_first_sql(),
        user_calls_after_sql(),
        CALL_TS_SQL.to_string(),
        user_series_sql(SeriesBy::Model),
        user_series_sql(SeriesBy::Provider),
    ]
}
