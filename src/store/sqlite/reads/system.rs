//! The whole system's figures: users, usage today and this month by model and provider, and the
//! usage series for charts — from `usage_model_daily`, one row per (day, provider, model).

use rusqlite::{Connection, params};

use super::{SUMS, sort_models, totals_at};
use crate::store::{ModelUsage, SeriesBy, SeriesPoint, Stats, StatsQuery, UserCounts};

const USERS_TOTAL_SQL: &str = "SELECT COUNT(*) FROM users";
const USERS_SEEN_SINCE_SQL: &str = "SELECT COUNT(*) FROM users WHERE last_seen_at >= ?1";
const USERS_BLOCKED_SQL: &str = "SELECT COUNT(*) FROM users WHERE blocked != 0";

fn count(conn: &Connection, sql: &str, param: Option<i64>) -> rusqlite::Result<i64> {
    conn.prepare_cached(sql)?
        .query_row(rusqlite::params_from_iter(param), |r| r.get(0))
}

fn models_sql() -> String {
    format!(
        "SELECT provider, model, {SUMS} FROM usage_model_daily WHERE day >= ?1 AND day <= ?2 \
         GROUP BY provider, model"
    )
}

/// Usage per (provider, model) over `[since_day, until_day]`, most tokens first.
fn models_between(
    conn: &Connection,
    since_day: &str,
    until_day: &str,
) -> rusqlite::Result<Vec<ModelUsage>> {
    let mut models = conn
        .prepare_cached(&models_sql())?
        .query_map(params![since_day, until_day], |row| {
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

/// System statistics: users, and usage today and this month.
pub fn stats(conn: &Connection, q: &StatsQuery) -> rusqlite::Result<Stats> {
    let users_total = count(conn, USERS_TOTAL_SQL, None)?;
    let users_active_today = count(conn, USERS_SEEN_SINCE_SQL, Some(q.today_start_ms))?;
    let users_active_7d = count(conn, USERS_SEEN_SINCE_SQL, Some(q.week_ago_ms))?;
    let users_blocked = count(conn, USERS_BLOCKED_SQL, None)?;
    let today = models_between(conn, &q.today, &q.today)?;
    let by_model = models_between(conn, &q.month_start, &q.today)?;
    let users = UserCounts {
        total: users_total,
        active_today: users_active_today,
        active_7d: users_active_7d,
        blocked: users_blocked,
    };
    Ok(Stats::from_models(users, &today, by_model))
}

fn series_sql(by: SeriesBy) -> String {
    let (key, group) = match by {
        SeriesBy::Model => ("model", "provider, model"),
        SeriesBy::Provider => ("provider", "provider"),
    };
    format!(
        "SELECT day, {key}, provider, {SUMS} FROM usage_model_daily \
         WHERE day >= ?1 AND day <= ?2 GROUP BY day, {group}"
    )
}

/// Today's date in the zone furthest ahead of UTC (+14:00): no caller's today is later.
pub fn latest_possible_day() -> String {
    crate::calendar::local_day(
        jiff::Timestamp::now().as_millisecond() + 14 * 3_600_000,
        &jiff::tz::TimeZone::UTC,
    )
}

/// Usage per day and model (or provider) from `since_day` to `until_day`, for everyone or one
/// user; ordered by day, then key, then provider. Days without calls have no points.
pub fn usage_series(
    conn: &Connection,
    since_day: &str,
    until_day: &str,
    by: SeriesBy,
    user: Option<&str>,
) -> rusqlite::Result<Vec<SeriesPoint>> {
    let mut points = match user {
        Some(user) => super::user::user_series(conn, user, since_day, until_day, by)?,
        None => conn
            .prepare_cached(&series_sql(by))?
            .query_map(params![since_day, until_day], |r| {
                Ok(SeriesPoint {
                    day: r.get(0)?,
                    key: r.get(1)?,
                    provider: r.get(2)?,
                    totals: totals_at(r, 3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    points.sort_by(|a, b| (&a.day, &a.key, &a.provider).cmp(&(&b.day, &b.key, &b.provider)));
    Ok(points)
}

pub(super) fn statements() -> Vec<String> {
    vec![
        USERS_TOTAL_SQL.to_string(),
        USERS_SEEN_SINCE_SQL.to_string(),
        USERS_BLOCKED_SQL.to_string(),
        models_sql(),
        series_sql(SeriesBy::Model),
        series_sql(SeriesBy::Provider),
    ]
}
