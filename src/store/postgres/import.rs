//! The PostgreSQL side of `tollgate import --from-sqlite` (`crate::store::import`): upserts of
//! users and accounts, and chunks of calls and audit rows, each in one transaction with the
//! import's progress in `tollgate_imports`, so that an import run again continues where it
//! stopped and never adds a row twice.

use tokio_postgres::Client;

use super::rows::{ensure_partitions, months_of, write_rows};
use crate::calendar::DayCache;
use crate::store::import::{ImportAccount, ImportUser};
use crate::store::{AuditRow, StoreError, UsageRow};

/// How far the import of one history got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The file's id of the last call brought over.
    pub last_call_id: i64,
    /// The file's id of the last audit row brought over.
    pub last_audit_id: i64,
}

/// Where the import of `fingerprint` stands (nothing done: zeros).
pub async fn progress(c: &Client, fingerprint: &str) -> Result<Progress, StoreError> {
    let row = c
        .query_opt(
            "SELECT last_call_id, last_audit_id FROM tollgate_imports WHERE fingerprint = $1",
            &[&fingerprint],
        )
        .await?;
    Ok(row.map_or_else(Progress::default, |r| Progress {
        last_call_id: r.get(0),
        last_audit_id: r.get(1),
    }))
}

/// Upsert `users`: a user PostgreSQL already has keeps its controls (an operator's change
/// there is newer than the file); only a missing email or name is filled in and
/// `last_seen_at` moves forward. Returns how many users the file had.
pub async fn users(c: &mut Client, users: &[ImportUser]) -> Result<u64, StoreError> {
    let tx = c.transaction().await?;
    for u in users {
        tx.execute(
            "INSERT INTO users (id, email, name, blocked, blocked_reason, daily_tokens, \
             monthly_tokens, daily_cost_nano_usd, monthly_cost_nano_usd, requests_per_minute, \
             max_concurrent, created_at, last_seen_at, plan) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (id) DO UPDATE SET \
               email = COALESCE(users.email, excluded.email), \
               name = COALESCE(users.name, excluded.name), \
               plan = COALESCE(users.plan, excluded.plan), \
               created_at = LEAST(users.created_at, excluded.created_at), \
               last_seen_at = GREATEST(users.last_seen_at, excluded.last_seen_at)",
            &[
                &u.id,
                &u.email,
                &u.name,
                &u.blocked,
                &u.blocked_reason,
                &u.daily_tokens,
                &u.monthly_tokens,
                &u.daily_cost_nano_usd,
                &u.monthly_cost_nano_usd,
                &u.requests_per_minute,
                &u.max_concurrent,
                &u.created_at,
                &u.last_seen_at,
                &u.plan,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(users.len() as u64)
}

/// Insert the accounts PostgreSQL does not have (an existing one keeps its password).
pub async fn accounts(c: &mut Client, accounts: &[ImportAccount]) -> Result<u64, StoreError> {
    let tx = c.transaction().await?;
    let mut added = 0;
    for a in accounts {
        added += tx
            .execute(
                "INSERT INTO admin_accounts (name, password_hash, created_at, last_login_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[&a.name, &a.password_hash, &a.created_at, &a.last_login_at],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// One chunk of calls, `last_id` the file's id of its last, with their rollups and the
/// import's progress, in one transaction.
pub async fn calls(
    c: &mut Client,
    fingerprint: &str,
    source: &str,
    rows: &[UsageRow],
    last_id: i64,
    days: &mut DayCache,
) -> Result<(), StoreError> {
    ensure_partitions(c, &months_of(rows)).await?;
    let tx = c.transaction().await?;
    write_rows(&tx, days, rows, "import").await?;
    tx.execute(
        "INSERT INTO tollgate_imports (fingerprint, source, last_call_id, last_audit_id, at) \
         VALUES ($1, $2, $3, 0, $4) ON CONFLICT (fingerprint) DO UPDATE SET \
         last_call_id = excluded.last_call_id, source = excluded.source, at = excluded.at",
        &[&fingerprint, &source, &last_id, &now()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One chunk of audit rows (new ids in PostgreSQL, the file's times and texts), with the
/// import's progress.
pub async fn audit(
    c: &mut Client,
    fingerprint: &str,
    source: &str,
    rows: &[AuditRow],
    last_id: i64,
) -> Result<(), StoreError> {
    let tx = c.transaction().await?;
    for a in rows {
        tx.execute(
            "INSERT INTO admin_audit (ts, actor, action, target, before_json, after_json, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &a.ts,
                &a.actor,
                &a.action,
                &a.target,
                &a.before_json,
                &a.after_json,
                &a.detail,
            ],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO tollgate_imports (fingerprint, source, last_call_id, last_audit_id, at) \
         VALUES ($1, $2, 0, $3, $4) ON CONFLICT (fingerprint) DO UPDATE SET \
         last_audit_id = excluded.last_audit_id, source = excluded.source, at = excluded.at",
        &[&fingerprint, &source, &last_id, &now()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
