//! One user's usage on PostgreSQL: daily series, per-model sums and their calls, page by page —
//! rollup rows through the user's index, and calls through `(user_id, ts)`.

use foldhash::HashMap;
use tokio_postgres::GenericClient;

use super::{CALL_COLUMNS, SUMS, call_from_row, model_from_row, parse_day, sort_models};
use super::{totals_at, users::user_summary};
use crate::store::{
    CallRow, DayPoint, ModelUsage, SeriesBy, SeriesPoint, StoreError, UserUsage, UserUsageQuery,
};
use crate::usage::Totals;

/// One user's summary, days, models and a page of calls; `None` when the user has no row.
pub async fn user_usage(
    c: &impl GenericClient,
    q: &UserUsageQuery,
) -> Result<Option<UserUsage>, StoreError> {
    let Some(summary) = user_summary(c, &q.user, &q.today, &q.month_start).await? else {
        return Ok(None);
    };
    let daily = user_daily(c, &q.user, &q.since_day, &q.today).await?;
    let models = user_models(c, &q.user, &q.since_day).await?;
    // One more than the page, to know whether there is a next one.
    let mut calls = user_calls(c, &q.user, q.before_call, q.limit.saturating_add(1)).await?;
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
fn days_between(since_day: &str, today: &str) -> Result<Vec<String>, StoreError> {
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

/// A user's usage per day from `since_day` to `today` inclusive, oldest first; days without
/// calls are included as zeros.
pub async fn user_daily(
    c: &impl GenericClient,
    user: &str,
    since_day: &str,
    today: &str,
) -> Result<Vec<DayPoint>, StoreError> {
    let all_days = days_between(since_day, today)?;
    let sql = format!(
        "SELECT day, {} FROM usage_daily WHERE user_id = $1 AND day >= $2 AND day <= $3 \
         GROUP BY day",
        *SUMS
    );
    let mut found: HashMap<String, Totals> = c
        .query(&sql, &[&user, &since_day, &today])
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, totals_at(r, 1)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok(all_days
        .into_iter()
        .map(|day| {
            let totals = found.remove(&day).unwrap_or_default();
            DayPoint { day, totals }
        })
        .collect())
}

/// A user's usage per (provider, model) since `since_day`, most tokens first.
pub async fn user_models(
    c: &impl GenericClient,
    user: &str,
    since_day: &str,
) -> Result<Vec<ModelUsage>, StoreError> {
    let sql = format!(
        "SELECT provider, model, {} FROM usage_daily WHERE user_id = $1 AND day >= $2 \
         GROUP BY provider, model",
        *SUMS
    );
    let mut models = c
        .query(&sql, &[&user, &since_day])
        .await?
        .iter()
        .map(model_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    sort_models(&mut models);
    Ok(models)
}

/// A user's calls, newest first — by admission time (`ts`), then id, the order of the
/// `(user_id, ts)` index — at most `limit`. `before_id` is the cursor: the id of the last row
/// of the previous page; the page continues right after that row, so pages neither overlap nor
/// skip. A cursor that names no row gives an empty page.
pub async fn user_calls(
    c: &impl GenericClient,
    user: &str,
    before_id: Option<i64>,
    limit: u32,
) -> Result<Vec<CallRow>, StoreError> {
    let limit = i64::from(limit);
    let rows = match before_id {
        None => {
            let sql = format!(
                "SELECT {CALL_COLUMNS} FROM token_usage WHERE user_id = $1 \
                 ORDER BY ts DESC, id DESC LIMIT $2"
            );
            c.query(&sql, &[&user, &limit]).await?
        }
        Some(cursor) => {
            let Some(at) = c
                .query_opt("SELECT ts FROM token_usage WHERE id = $1", &[&cursor])
                .await?
            else {
                return Ok(Vec::new());
            };
            let cursor_ts: i64 = at.try_get(0)?;
            let sql = format!(
                "SELECT {CALL_COLUMNS} FROM token_usage WHERE user_id = $1 AND ts <= $2 \
                 AND (ts < $2 OR id < $3) ORDER BY ts DESC, id DESC LIMIT $4"
            );
            c.query(&sql, &[&user, &cursor_ts, &cursor, &limit]).await?
        }
    };
    rows.iter().map(call_from_row).collect()
}

/// One user's usage per day and model (or provider) over `[since_day, until_day]`, unordered.
pub(super) async fn user_series(
    c: &impl GenericClient,
    user: &str,
    since_day: &str,
    until_day: &str,
    by: SeriesBy,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let (key, group) = match by {
        SeriesBy::Model => ("model", "provider, model"),
        SeriesBy::Provider => ("provider", "provider"),
    };
    let sql = format!(
        "SELECT day, {key}, provider, {} FROM usage_daily \
         WHERE user_id = $1 AND day >= $2 AND day <= $3 GROUP BY day, {group}",
        *SUMS
    );
    c.query(&sql, &[&user, &since_day, &until_day])
        .await?
        .iter()
        .map(super::system::point_from_row)
        .collect()
}
