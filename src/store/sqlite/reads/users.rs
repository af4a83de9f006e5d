//! The user list: users with their usage today and this month, searched, sorted and paged.

use foldhash::{HashMap, HashMapExt};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{COLUMNS, next_month, totals_at};
use crate::store::sqlite::controls::{CONTROL_COLUMNS, controls_from_row};
use crate::store::{UserSort, UserSummary, UsersPage, UsersQuery};
use crate::usage::Totals;

/// The user columns of a [`UserSummary`], in the order [`user_from_row`] reads them: the
/// control columns from the seventh on.
fn user_columns() -> String {
    format!("id, email, name, created_at, last_seen_at, plan, {CONTROL_COLUMNS}")
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserSummary> {
    Ok(UserSummary {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
        last_seen_at: row.get(4)?,
        plan: row.get(5)?,
        controls: controls_from_row(row, 6)?,
        today: Totals::default(),
        month: Totals::default(),
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

fn user_day_sql() -> String {
    format!("SELECT {COLUMNS} FROM usage_user_daily WHERE day = ?1 AND user_id = ?2")
}

fn user_month_sql() -> String {
    format!("SELECT {COLUMNS} FROM usage_user_monthly WHERE month = ?1 AND user_id = ?2")
}

/// One row of a per-user rollup by its key (zeros when the user had no calls then).
fn rollup_row(conn: &Connection, sql: &str, key: &str, user: &str) -> rusqlite::Result<Totals> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![key, user], |r| totals_at(r, 0))
        .optional()?
        .unwrap_or_default())
}

fn user_later_sql() -> String {
    format!("SELECT {COLUMNS} FROM usage_user_daily WHERE day > ?1 AND day < ?2 AND user_id = ?3")
}

/// Fill in a user's usage of `today` and of the month starting `month_start` up to `today`:
/// the month's rollup row without the days after `today` (calls dated later than the asker's
/// today — none, unless a clock disagrees).
fn with_usage(
    conn: &Connection,
    mut user: UserSummary,
    today: &str,
    month_start: &str,
) -> rusqlite::Result<UserSummary> {
    user.today = rollup_row(conn, &user_day_sql(), today, &user.id)?;
    user.month = rollup_row(conn, &user_month_sql(), month_start, &user.id)?;
    let mut stmt = conn.prepare_cached(&user_later_sql())?;
    let mut later = stmt.query(params![today, next_month(month_start)?, user.id])?;
    while let Some(row) = later.next()? {
        user.month.sub(&totals_at(row, 0)?);
    }
    Ok(user)
}

/// One user with today's and this month's usage; `None` when the user has no row.
pub fn user_summary(
    conn: &Connection,
    id: &str,
    today: &str,
    month_start: &str,
) -> rusqlite::Result<Option<UserSummary>> {
    user_row(conn, id)?
        .map(|user| with_usage(conn, user, today, month_start))
        .transpose()
}

/// `text` as a LIKE pattern matching it anywhere, its wildcards escaped (`ESCAPE '\'`).
pub(super) fn like_pattern(text: &str) -> String {
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
/// `?2` is the plan, or NULL for every plan; `?3`, a JSON array of plans, also takes the users
/// on none of them (the default plan's, see `PlanFilter`).
const SEARCH: &str = "(?1 IS NULL OR id LIKE ?1 ESCAPE '\\' OR email LIKE ?1 ESCAPE '\\' \
     OR name LIKE ?1 ESCAPE '\\') AND (?2 IS NULL OR plan = ?2 OR (?3 IS NOT NULL \
     AND (plan IS NULL OR plan NOT IN (SELECT value FROM json_each(?3)))))";

fn users_count_sql() -> String {
    format!("SELECT COUNT(*) FROM users WHERE {SEARCH}")
}

fn users_ids_sql() -> String {
    format!("SELECT id FROM users WHERE {SEARCH}")
}

/// Every user's figure of one day (or month), for ranking: one row per user who called then.
const DAY_RANKS_SQL: &str =
    "SELECT user_id, total_tokens, cost_nano_usd FROM usage_user_daily WHERE day = ?1";
const MONTH_RANKS_SQL: &str =
    "SELECT user_id, total_tokens, cost_nano_usd FROM usage_user_monthly WHERE month = ?1";
/// What the days after today add to the month's ranks (nothing, unless a clock disagrees).
const LATER_RANKS_SQL: &str = "SELECT user_id, total_tokens, cost_nano_usd FROM usage_user_daily \
     WHERE day > ?1 AND day < ?2";

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
        "SELECT {} FROM users WHERE {SEARCH} ORDER BY {order} LIMIT ?4 OFFSET ?5",
        user_columns()
    ))
}

/// A page of the users matching `q.search` (and on `q.plan`), ordered by `q.sort` over all of them (users without
/// usage count as 0; ties go by id in the same direction), and how many match.
///
/// Sorts on a `users` column are one indexed query. Sorts on usage rank every matching user by
/// one per-user rollup row of the day or month (a user without one counts 0), then read the
/// page's users by key.
pub fn users_page(conn: &Connection, q: &UsersQuery) -> rusqlite::Result<UsersPage> {
    let pattern = q
        .search
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(like_pattern);
    let plan = q.plan.as_ref().map(|p| p.name.as_str());
    let none_of = q
        .plan
        .as_ref()
        .and_then(crate::store::PlanFilter::none_of_json);
    if let Some(sql) = users_page_sql(q.sort, q.desc) {
        let total: i64 = conn
            .prepare_cached(&users_count_sql())?
            .query_row(params![pattern, plan, none_of], |r| r.get(0))?;
        let users = conn
            .prepare_cached(&sql)?
            .query_map(
                params![pattern, plan, none_of, q.limit, q.offset],
                user_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let users = users
            .into_iter()
            .map(|u| with_usage(conn, u, &q.today, &q.month_start))
            .collect::<rusqlite::Result<_>>()?;
        return Ok(UsersPage {
            users,
            total: u64::try_from(total).unwrap_or(0),
        });
    }
    let month_sort = matches!(q.sort, UserSort::TokensMonth | UserSort::CostMonth);
    let cost = matches!(q.sort, UserSort::CostToday | UserSort::CostMonth);
    let (sql, key) = if month_sort {
        (MONTH_RANKS_SQL, &q.month_start)
    } else {
        (DAY_RANKS_SQL, &q.today)
    };
    let column = if cost { 2 } else { 1 };
    let mut figures: HashMap<String, i64> = HashMap::new();
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([key])?;
    while let Some(row) = rows.next()? {
        let figure = super::int_at(row, column)?;
        figures.insert(row.get(0)?, figure);
    }
    if month_sort {
        let mut stmt = conn.prepare_cached(LATER_RANKS_SQL)?;
        let mut rows = stmt.query(params![q.today, next_month(&q.month_start)?])?;
        while let Some(row) = rows.next()? {
            let later = super::int_at(row, column)?;
            if let Some(figure) = figures.get_mut(row.get_ref(0)?.as_str()?) {
                *figure = figure.saturating_sub(later);
            }
        }
    }
    let mut ranked: Vec<(i64, String)> = conn
        .prepare_cached(&users_ids_sql())?
        .query_map(params![pattern, plan, none_of], |r| r.get::<_, String>(0))?
        .map(|id| id.map(|id| (figures.get(&id).copied().unwrap_or(0), id)))
        .collect::<rusqlite::Result<_>>()?;
    let total = ranked.len() as u64;
    if q.desc {
        ranked.sort_unstable_by(|a, b| b.cmp(a));
    } else {
        ranked.sort_unstable();
    }
    let offset = usize::try_from(q.offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let mut users = Vec::with_capacity(limit.min(ranked.len()));
    for (_, id) in ranked.into_iter().skip(offset).take(limit) {
        if let Some(user) = user_summary(conn, &id, &q.today, &q.month_start)? {
            users.push(user);
        }
    }
    Ok(UsersPage { users, total })
}

pub(super) fn statements() -> Vec<String> {
    let mut all = vec![
        user_row_sql(),
        user_day_sql(),
        user_month_sql(),
        users_count_sql(),
        users_ids_sql(),
        user_later_sql(),
        DAY_RANKS_SQL.to_string(),
        MONTH_RANKS_SQL.to_string(),
        LATER_RANKS_SQL.to_string(),
    ];
    for sort in [UserSort::Id, UserSort::LastSeen, UserSort::Created] {
        for desc in [false, true] {
            all.extend(users_page_sql(sort, desc));
        }
    }
    all
}
