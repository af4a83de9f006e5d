//! The user list on PostgreSQL: users with their usage today and this month, searched, sorted
//! and paged exactly as the SQLite store does it.

use foldhash::{HashMap, HashMapExt};
use tokio_postgres::{GenericClient, Row};

use super::{COLUMNS, next_month, totals_at};
use crate::quota::{UserControls, UserOverrides};
use crate::store::{StoreError, UserSort, UserSummary, UsersPage, UsersQuery};
use crate::usage::Totals;

/// The user columns of a [`UserSummary`], in the order [`user_from_row`] reads them: the
/// control columns from the seventh on.
const USER_COLUMNS: &str = "id, email, name, created_at, last_seen_at, plan, blocked, blocked_reason, \
     daily_tokens, monthly_tokens, daily_cost_nano_usd, monthly_cost_nano_usd, \
     requests_per_minute, max_concurrent";

/// The controls from column `at` on. Values an operator could only have put there by hand are
/// read leniently, as the SQLite store reads them: a negative limit as 0, a rate or cap past
/// `u32` as `u32::MAX`.
fn controls_at(row: &Row, at: usize) -> Result<UserControls, StoreError> {
    let count = |i: usize| -> Result<Option<u64>, StoreError> {
        Ok(row
            .try_get::<_, Option<i64>>(at + i)?
            .map(|v| u64::try_from(v).unwrap_or(0)))
    };
    let small = |i: usize| -> Result<Option<u32>, StoreError> {
        Ok(row
            .try_get::<_, Option<i64>>(at + i)?
            .map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX)))
    };
    Ok(UserControls {
        blocked: row.try_get(at)?,
        blocked_reason: row.try_get(at + 1)?,
        overrides: UserOverrides {
            daily_tokens: count(2)?,
            monthly_tokens: count(3)?,
            daily_cost_nano_usd: count(4)?,
            monthly_cost_nano_usd: count(5)?,
            requests_per_minute: small(6)?,
            max_concurrent: small(7)?,
        },
    })
}

fn user_from_row(row: &Row) -> Result<UserSummary, StoreError> {
    Ok(UserSummary {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        created_at: row.try_get(3)?,
        last_seen_at: row.try_get(4)?,
        plan: row.try_get(5)?,
        controls: controls_at(row, 6)?,
        today: Totals::default(),
        month: Totals::default(),
    })
}

/// Rollup rows of the users `ANY($n)` by user id.
async fn rollups_by_user(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<(String, Totals)>, StoreError> {
    c.query(sql, params)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, totals_at(r, 1)?)))
        .collect()
}

/// Fill in the usage of `users` of `today` and of the month starting `month_start` up to
/// `today`: the month's rollup row without the days after `today` (calls dated later than the
/// asker's today — none, unless a clock disagrees). Three queries for the whole page.
async fn with_usage(
    c: &impl GenericClient,
    users: &mut [UserSummary],
    today: &str,
    month_start: &str,
) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let day_sql = format!(
        "SELECT user_id, {} FROM usage_user_daily WHERE day = $1 AND user_id = ANY($2)",
        *COLUMNS
    );
    let month_sql = format!(
        "SELECT user_id, {} FROM usage_user_monthly WHERE month = $1 AND user_id = ANY($2)",
        *COLUMNS
    );
    let later_sql = format!(
        "SELECT user_id, {} FROM usage_user_daily \
         WHERE day > $1 AND day < $2 AND user_id = ANY($3)",
        *COLUMNS
    );
    let mut by_id: HashMap<String, usize> = HashMap::with_capacity(users.len());
    for (i, u) in users.iter().enumerate() {
        by_id.insert(u.id.clone(), i);
    }
    let today_rows = rollups_by_user(c, &day_sql, &[&today, &ids]).await?;
    let month_rows = rollups_by_user(c, &month_sql, &[&month_start, &ids]).await?;
    let next = next_month(month_start)?;
    let later_rows = rollups_by_user(c, &later_sql, &[&today, &next, &ids]).await?;
    for (id, t) in today_rows {
        if let Some(&i) = by_id.get(&id) {
            users[i].today = t;
        }
    }
    for (id, t) in month_rows {
        if let Some(&i) = by_id.get(&id) {
            users[i].month = t;
        }
    }
    for (id, t) in later_rows {
        if let Some(&i) = by_id.get(&id) {
            users[i].month.sub(&t);
        }
    }
    Ok(())
}

/// One user with today's and this month's usage; `None` when the user has no row.
pub async fn user_summary(
    c: &impl GenericClient,
    id: &str,
    today: &str,
    month_start: &str,
) -> Result<Option<UserSummary>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let Some(row) = c.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    let mut users = [user_from_row(&row)?];
    with_usage(c, &mut users, today, month_start).await?;
    let [user] = users;
    Ok(Some(user))
}

/// `text` as a LIKE pattern matching it anywhere, its wildcards escaped (`ESCAPE '\'`), and
/// folded to lower case for ASCII letters only (what SQLite's `LIKE` ignores the case of).
pub(super) fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c.to_ascii_lowercase());
    }
    out.push('%');
    out
}

/// `$1` is the (ASCII-lower-cased) LIKE pattern, or NULL for everyone; `$2` the plan, or NULL
/// for every plan; `$3`, plans, also takes the users on none of them (the default plan's, see
/// `PlanFilter`). Each column is folded
/// for ASCII letters only (`lower` under the "C" collation), so that the search is
/// case-insensitive exactly where SQLite's `LIKE` is.
const SEARCH: &str = "($1::text IS NULL \
     OR lower(id COLLATE \"C\") LIKE $1 ESCAPE '\\' \
     OR lower(email COLLATE \"C\") LIKE $1 ESCAPE '\\' \
     OR lower(name COLLATE \"C\") LIKE $1 ESCAPE '\\') \
     AND ($2::text IS NULL OR plan = $2 OR ($3::text[] IS NOT NULL \
          AND (plan IS NULL OR plan <> ALL($3::text[]))))";

/// The page query of a sort on a `users` column: ids compared as bytes, and a user who never
/// called (`last_seen_at` NULL) first when ascending, last when descending — SQLite's order.
fn users_page_sql(sort: UserSort, desc: bool) -> Option<String> {
    let (dir, nulls) = if desc {
        ("DESC", "NULLS LAST")
    } else {
        ("ASC", "NULLS FIRST")
    };
    let id = format!("id COLLATE \"C\" {dir}");
    let order = match sort {
        UserSort::Id => id,
        UserSort::LastSeen => format!("last_seen_at {dir} {nulls}, {id}"),
        UserSort::Created => format!("created_at {dir}, {id}"),
        _ => return None,
    };
    Some(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE {SEARCH} ORDER BY {order} LIMIT $4 OFFSET $5"
    ))
}

/// A page of the users matching `q.search`, ordered by `q.sort` over all of them (users without
/// usage count as 0; ties go by id in the same direction), and how many match.
///
/// Sorts on a `users` column are one query. Sorts on usage rank every matching user by one
/// per-user rollup row of the day or month (a user without one counts 0) in one query on the
/// server, then read the page's users by key.
pub async fn users_page(c: &impl GenericClient, q: &UsersQuery) -> Result<UsersPage, StoreError> {
    let pattern = q
        .search
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(like_pattern);
    let plan = q.plan.as_ref().map(|p| p.name.as_str());
    let none_of = q.plan.as_ref().and_then(|p| p.or_none_of.as_deref());
    if let Some(sql) = users_page_sql(q.sort, q.desc) {
        let count_sql = format!("SELECT COUNT(*) FROM users WHERE {SEARCH}");
        let total: i64 = c
            .query_one(&count_sql, &[&pattern, &plan, &none_of])
            .await?
            .try_get(0)?;
        let (limit, offset) = (i64::from(q.limit), i64::from(q.offset));
        let mut users = c
            .query(&sql, &[&pattern, &plan, &none_of, &limit, &offset])
            .await?
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        with_usage(c, &mut users, &q.today, &q.month_start).await?;
        return Ok(UsersPage {
            users,
            total: u64::try_from(total).unwrap_or(0),
        });
    }
    let month_sort = matches!(q.sort, UserSort::TokensMonth | UserSort::CostMonth);
    let cost = matches!(q.sort, UserSort::CostToday | UserSort::CostMonth);
    let column = if cost {
        "cost_nano_usd"
    } else {
        "total_tokens"
    };
    let dir = if q.desc { "DESC" } else { "ASC" };
    // Ranked on the server: every matching user joined with one rollup row of the day or month
    // (0 without one; the month less what days after today add), the page taken from the top.
    let (figure, join) = if month_sort {
        (
            format!("COALESCE(r.{column}, 0) - COALESCE(l.{column}, 0)"),
            format!(
                "LEFT JOIN usage_user_monthly r ON r.month = $4 AND r.user_id = u.id \
                 LEFT JOIN (SELECT user_id, \
                     LEAST(SUM({column}), 9223372036854775807)::BIGINT AS {column} \
                     FROM usage_user_daily WHERE day > $5 AND day < $6 GROUP BY user_id) l \
                     ON l.user_id = u.id"
            ),
        )
    } else {
        (
            format!("COALESCE(r.{column}, 0)"),
            "LEFT JOIN usage_user_daily r ON r.day = $4 AND r.user_id = u.id".to_string(),
        )
    };
    let search = SEARCH
        .replace("(id ", "(u.id ")
        .replace("(email ", "(u.email ")
        .replace("(name ", "(u.name ")
        .replace("OR plan = ", "OR u.plan = ")
        .replace("(plan IS NULL OR plan <> ", "(u.plan IS NULL OR u.plan <> ");
    let (limit_at, offset_at) = if month_sort { (7, 8) } else { (5, 6) };
    let page_sql = format!(
        "SELECT u.id, COUNT(*) OVER () FROM users u {join} WHERE {search} \
         ORDER BY {figure} {dir}, u.id COLLATE \"C\" {dir} LIMIT ${limit_at} OFFSET ${offset_at}"
    );
    let next = next_month(&q.month_start)?;
    let (limit, offset) = (i64::from(q.limit), i64::from(q.offset));
    let rows = if month_sort {
        c.query(
            &page_sql,
            &[
                &pattern,
                &plan,
                &none_of,
                &q.month_start,
                &q.today,
                &next,
                &limit,
                &offset,
            ],
        )
        .await?
    } else {
        c.query(
            &page_sql,
            &[&pattern, &plan, &none_of, &q.today, &limit, &offset],
        )
        .await?
    };
    let page: Vec<String> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let total = match rows.first() {
        Some(r) => u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
        // Past the last page: how many match, on their own.
        None => {
            let count_sql = format!("SELECT COUNT(*) FROM users WHERE {SEARCH}");
            let n: i64 = c
                .query_one(&count_sql, &[&pattern, &plan, &none_of])
                .await?
                .try_get(0)?;
            u64::try_from(n).unwrap_or(0)
        }
    };
    if page.is_empty() {
        return Ok(UsersPage {
            users: Vec::new(),
            total,
        });
    }
    // The page's users in one query, put back in rank order (a user deleted meanwhile is
    // left out).
    let rows_sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1)");
    let mut found: HashMap<String, UserSummary> = HashMap::with_capacity(page.len());
    for row in c.query(&rows_sql, &[&page]).await? {
        let user = user_from_row(&row)?;
        found.insert(user.id.clone(), user);
    }
    let mut users: Vec<UserSummary> = page.iter().filter_map(|id| found.remove(id)).collect();
    with_usage(c, &mut users, &q.today, &q.month_start).await?;
    Ok(UsersPage { users, total })
}
