//! The SQL of the `alerts` table and of the totals the alert rules read, on SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use super::lenient_int;
use crate::store::alerts::{AlertRow, AlertTotals, AlertsPage, Delivery, NewAlert, UserTotals};

/// Insert `alert` unless its key is there: the new row's id, or `None`.
pub fn record(conn: &Connection, alert: &NewAlert) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "INSERT INTO alerts (ts, rule, kind, subject, period, level, message, details, delivery) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (rule, subject, period, level) DO NOTHING RETURNING id",
    )?
    .query_row(
        params![
            alert.ts_ms,
            alert.rule,
            alert.kind,
            alert.subject,
            alert.period,
            alert.level,
            alert.message,
            alert.details.to_string(),
            alert.delivery.as_str(),
        ],
        |r| r.get(0),
    )
    .optional()
}

/// Set an alert's delivery state; `attempts` are added to its count.
pub fn delivered(
    conn: &Connection,
    id: i64,
    delivery: Delivery,
    attempts: u32,
    at_ms: i64,
) -> rusqlite::Result<()> {
    let at = (delivery == Delivery::Delivered).then_some(at_ms);
    conn.prepare_cached(
        "UPDATE alerts SET delivery = CASE WHEN ?2 = 'pending' THEN delivery ELSE ?2 END, \
         attempts = attempts + ?3, delivered_at = COALESCE(?4, delivered_at) WHERE id = ?1",
    )?
    .execute(params![id, delivery.as_str(), attempts, at])?;
    Ok(())
}

/// A page of alerts, newest first, and how many fired since `since_ms`.
pub fn page(
    conn: &Connection,
    before_id: Option<i64>,
    limit: u32,
    since_ms: i64,
) -> rusqlite::Result<AlertsPage> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, rule, kind, subject, period, level, message, details, delivery, \
         attempts, delivered_at FROM alerts WHERE (?1 IS NULL OR id < ?1) \
         ORDER BY id DESC LIMIT ?2",
    )?;
    let alerts = stmt
        .query_map(params![before_id, limit], |r| {
            let details: String = r.get(8)?;
            let delivery: String = r.get(9)?;
            Ok(AlertRow {
                id: r.get(0)?,
                ts_ms: r.get(1)?,
                rule: r.get(2)?,
                kind: r.get(3)?,
                subject: r.get(4)?,
                period: r.get(5)?,
                level: r.get(6)?,
                message: r.get(7)?,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                delivery: Delivery::parse(&delivery),
                attempts: r.get_ref(10).map(lenient_int)?,
                delivered_ms: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let recent = conn
        .prepare_cached("SELECT COUNT(*) FROM alerts WHERE ts >= ?1")?
        .query_row([since_ms], |r| r.get(0))?;
    Ok(AlertsPage { alerts, recent })
}

/// `users`' recorded usage today and this month, and every user's spend in both.
pub fn totals(
    conn: &Connection,
    users: &[String],
    today: &str,
    month_start: &str,
) -> rusqlite::Result<AlertTotals> {
    let mut day = conn.prepare_cached(
        "SELECT total_tokens, cost_nano_usd FROM usage_user_daily WHERE day = ?1 AND user_id = ?2",
    )?;
    let mut month = conn.prepare_cached(
        "SELECT total_tokens, cost_nano_usd FROM usage_user_monthly \
         WHERE month = ?1 AND user_id = ?2",
    )?;
    let mut out = AlertTotals::default();
    for user in users {
        let read = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get_ref(0).map(lenient_int)?,
                r.get_ref(1).map(lenient_int)?,
            ))
        };
        let d = day.query_row(params![today, user], read).optional()?;
        let m = month
            .query_row(params![month_start, user], read)
            .optional()?;
        if d.is_none() && m.is_none() {
            continue;
        }
        let (day_tokens, day_cost) = d.unwrap_or_default();
        let (month_tokens, month_cost) = m.unwrap_or_default();
        out.users.push(UserTotals {
            user_id: user.clone(),
            day_tokens,
            day_cost_nano_usd: day_cost,
            month_tokens,
            month_cost_nano_usd: month_cost,
        });
    }
    let spend = |sql: &str, key: &str| -> rusqlite::Result<i64> {
        conn.prepare_cached(sql)?
            .query_row([key], |r| r.get_ref(0).map(lenient_int))
    };
    out.day_cost_nano_usd = spend(
        "SELECT COALESCE(SUM(cost_nano_usd), 0) FROM usage_model_daily WHERE day = ?1",
        today,
    )?;
    out.month_cost_nano_usd = spend(
        "SELECT COALESCE(SUM(cost_nano_usd), 0) FROM usage_user_monthly WHERE month = ?1",
        month_start,
    )?;
    Ok(out)
}
