//! The whole system's figures on PostgreSQL: users, usage today and this month by model and
//! provider, and the usage series for charts — from `usage_model_daily`, one row per (day,
//! provider, model).
//!
//! The last day a series may reach is the caller's: the Store passes
//! [`crate::store::sqlite::reads::system::latest_possible_day`], which depends on no database.

use tokio_postgres::{GenericClient, Row};

use super::{SUMS, model_from_row, sort_models, totals_at};
use crate::store::{ModelUsage, SeriesBy, SeriesPoint, Stats, StatsQuery, StoreError, UserCounts};

const USERS_TOTAL_SQL: &str = "SELECT COUNT(*) FROM users";
const USERS_SEEN_SINCE_SQL: &str = "SELECT COUNT(*) FROM users WHERE last_seen_at >= $1";
/// Through the partial index `users_blocked`.
const USERS_BLOCKED_SQL: &str = "SELECT COUNT(*) FROM users WHERE blocked";

async fn count(c: &impl GenericClient, sql: &str, since: Option<i64>) -> Result<i64, StoreError> {
    let row = match since {
        Some(ms) => c.query_one(sql, &[&ms]).await?,
        None => c.query_one(sql, &[]).await?,
    };
    Ok(row.try_get(0)?)
}

/// Usage per (provider, model) over `[since_day, until_day]`, most tokens first.
async fn models_between(
    c: &impl GenericClient,
    since_day: &str,
    until_day: &str,
) -> Result<Vec<ModelUsage>, StoreError> {
    let sql = format!(
        "SELECT provider, model, {} FROM usage_model_daily WHERE day >= $1 AND day <= $2 \
         GROUP BY provider, model",
        *SUMS
    );
    let mut models = c
        .query(&sql, &[&since_day, &until_day])
        .await?
        .iter()
        .map(model_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    sort_models(&mut models);
    Ok(models)
}

/// System statistics: users, and usage today and this month.
pub async fn stats(c: &impl GenericClient, q: &StatsQuery) -> Result<Stats, StoreError> {
    let users_total = count(c, USERS_TOTAL_SQL, None).await?;
    let users_active_today = count(c, USERS_SEEN_SINCE_SQL, Some(q.today_start_ms)).await?;
    let users_active_7d = count(c, USERS_SEEN_SINCE_SQL, Some(q.week_ago_ms)).await?;
    let users_blocked = count(c, USERS_BLOCKED_SQL, None).await?;
    let today = models_between(c, &q.today, &q.today).await?;
    let by_model = models_between(c, &q.month_start, &q.today).await?;
    let users = UserCounts {
        total: users_total,
        active_today: users_active_today,
        active_7d: users_active_7d,
        blocked: users_blocked,
    };
    Ok(Stats::from_models(users, &today, by_model))
}

/// A [`SeriesPoint`] from `day, key, provider, <SUMS>`.
pub(super) fn point_from_row(r: &Row) -> Result<SeriesPoint, StoreError> {
    Ok(SeriesPoint {
        day: r.try_get(0)?,
        key: r.try_get(1)?,
        provider: r.try_get(2)?,
        totals: totals_at(r, 3)?,
    })
}

/// Usage per day and model (or provider) from `since_day` to `until_day`, for everyone or one
/// user; ordered by day, then key, then provider (as bytes). Days without calls have no points.
pub async fn usage_series(
    c: &impl GenericClient,
    since_day: &str,
    until_day: &str,
    by: SeriesBy,
    user: Option<&str>,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let mut points = match user {
        Some(user) => super::user::user_series(c, user, since_day, until_day, by).await?,
        None => {
            let (key, group) = match by {
                SeriesBy::Model => ("model", "provider, model"),
                SeriesBy::Provider => ("provider", "provider"),
            };
            let sql = format!(
                "SELECT day, {key}, provider, {} FROM usage_model_daily \
                 WHERE day >= $1 AND day <= $2 GROUP BY day, {group}",
                *SUMS
            );
            c.query(&sql, &[&since_day, &until_day])
                .await?
                .iter()
                .map(point_from_row)
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    points.sort_by(|a, b| (&a.day, &a.key, &a.provider).cmp(&(&b.day, &b.key, &b.provider)));
    Ok(points)
}
