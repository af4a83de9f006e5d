//! The SQL of the `alerts` table and of the totals the alert rules read, on PostgreSQL. Every
//! gateway on the database inserts the alerts it sees; the table's unique key lets the first
//! insert in and ignores the rest, so each alert is delivered once.

use tokio_postgres::GenericClient;

use crate::store::StoreError;
use crate::store::alerts::{AlertRow, AlertTotals, AlertsPage, Delivery, NewAlert, UserTotals};

/// Insert `alert` unless its key is there: the new row's id, or `None`.
pub async fn record(
    c: &(impl GenericClient + Sync),
    alert: &NewAlert,
) -> Result<Option<i64>, StoreError> {
    let row = c
        .query_opt(
            "INSERT INTO alerts (ts, rule, kind, subject, period, level, message, details, \
             delivery) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (rule, subject, period, level) DO NOTHING RETURNING id",
            &[
                &alert.ts_ms,
                &alert.rule,
                &alert.kind,
                &alert.subject,
                &alert.period,
                &alert.level,
                &alert.message,
                &alert.details.to_string(),
                &alert.delivery.as_str(),
            ],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Set an alert's delivery state; `attempts` are added to its count.
pub async fn delivered(
    c: &(impl GenericClient + Sync),
    id: i64,
    delivery: Delivery,
    attempts: u32,
    at_ms: i64,
) -> Result<(), StoreError> {
    let at = (delivery == Delivery::Delivered).then_some(at_ms);
    c.execute(
        "UPDATE alerts SET delivery = CASE WHEN $2::text = 'pending' THEN delivery ELSE $2::text END, \
         attempts = attempts + $3, delivered_at = COALESCE($4, delivered_at) WHERE id = $1",
        &[&id, &delivery.as_str(), &i64::from(attempts), &at],
    )
    .await?;
    Ok(())
}

/// A page of alerts, newest first, and how many fired since `since_ms`.
pub async fn page(
    c: &(impl GenericClient + Sync),
    before_id: Option<i64>,
    limit: u32,
    since_ms: i64,
) -> Result<AlertsPage, StoreError> {
    let rows = c
        .query(
            "SELECT id, ts, rule, kind, subject, period, level, message, details, delivery, \
             attempts, delivered_at FROM alerts WHERE ($1::int8 IS NULL OR id < $1) \
             ORDER BY id DESC LIMIT $2",
            &[&before_id, &i64::from(limit)],
        )
        .await?;
    let alerts = rows
        .iter()
        .map(|r| {
            let details: String = r.try_get(8)?;
            let delivery: String = r.try_get(9)?;
            Ok(AlertRow {
                id: r.try_get(0)?,
                ts_ms: r.try_get(1)?,
                rule: r.try_get(2)?,
                kind: r.try_get(3)?,
                subject: r.try_get(4)?,
                period: r.try_get(5)?,
                level: r.try_get(6)?,
                message: r.try_get(7)?,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                delivery: Delivery::parse(&delivery),
                attempts: r.try_get(10)?,
                delivered_ms: r.try_get(11)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let recent: i64 = c
        .query_one("SELECT COUNT(*) FROM alerts WHERE ts >= $1", &[&since_ms])
        .await?
        .try_get(0)?;
    Ok(AlertsPage { alerts, recent })
}

/// `users`' recorded usage today and this month, and every user's spend in both: one round
/// trip for the users, one for the spend.
pub async fn totals(
    c: &(impl GenericClient + Sync),
    users: &[String],
    today: &str,
    month_start: &str,
) -> Result<AlertTotals, StoreError> {
    let rows = c
        .query(
            "SELECT u.id, COALESCE(d.total_tokens, 0), COALESCE(d.cost_nano_usd, 0), \
             COALESCE(m.total_tokens, 0), COALESCE(m.cost_nano_usd, 0) \
             FROM unnest($1::text[]) AS u(id) \
             LEFT JOIN usage_user_daily d ON d.day = $2 AND d.user_id = u.id \
             LEFT JOIN usage_user_monthly m ON m.month = $3 AND m.user_id = u.id \
             WHERE d.user_id IS NOT NULL OR m.user_id IS NOT NULL",
            &[&users, &today, &month_start],
        )
        .await?;
    let users = rows
        .iter()
        .map(|r| {
            Ok(UserTotals {
                user_id: r.try_get(0)?,
                day_tokens: r.try_get(1)?,
                day_cost_nano_usd: r.try_get(2)?,
                month_tokens: r.try_get(3)?,
                month_cost_nano_usd: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let spend = c
        .query_one(
            "SELECT (SELECT COALESCE(SUM(cost_nano_usd), 0)::int8 FROM usage_model_daily \
             WHERE day = $1), \
             (SELECT COALESCE(SUM(cost_nano_usd), 0)::int8 FROM usage_user_monthly \
             WHERE month = $2)",
            &[&today, &month_start],
        )
        .await?;
    Ok(AlertTotals {
        users,
        day_cost_nano_usd: spend.try_get(0)?,
        month_cost_nano_usd: spend.try_get(1)?,
    })
}
