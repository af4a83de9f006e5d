//! A whole SQLite store read out, for `tollgate import --from-sqlite` (`crate::store::import`):
//! users, calls in id order a chunk at a time, admin accounts, the audit trail. Read-only, and
//! lenient like every other read of the file's history (`lenient_int`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::lenient_opt_int;
use super::reads::{CALL_COLUMNS, call_from_row};
use crate::store::import::{ImportAccount, ImportUser};
use crate::store::{AuditRow, CallRow, StoreError};

/// An open SQLite store, read-only.
pub struct Dump {
    conn: Connection,
}

impl Dump {
    /// Open `path` read-only; refused when it is not a Tollgate database.
    pub fn open(path: &Path) -> Result<Dump, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Backend(format!(
                "{}: no such file",
                path.display()
            )));
        }
        let conn = super::open_reader(path)?;
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' \
             AND name IN ('token_usage', 'users', 'admin_accounts', 'admin_audit')",
            [],
            |r| r.get(0),
        )?;
        if tables != 4 {
            return Err(StoreError::Backend(format!(
                "{}: not a Tollgate database (its tables are missing)",
                path.display()
            )));
        }
        Ok(Dump { conn })
    }

    /// What identifies this history wherever the file is: its first call (or `empty`).
    pub fn fingerprint(&self) -> Result<String, StoreError> {
        let first: Option<(String, i64, String)> = self
            .conn
            .query_row(
                "SELECT request_id, ts, user_id FROM token_usage ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match first {
            Some((request_id, ts, user)) => format!("sqlite:{ts}:{user}:{request_id}"),
            None => "sqlite:empty".into(),
        })
    }

    /// Calls in the file.
    pub fn calls(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM token_usage", 0)
    }

    /// Calls with an id up to `id`.
    pub fn calls_up_to(&self, id: i64) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM token_usage WHERE id <= ?1", id)
    }

    fn count(&self, sql: &str, id: i64) -> Result<u64, StoreError> {
        let n: i64 = if sql.contains("?1") {
            self.conn.query_row(sql, [id], |r| r.get(0))?
        } else {
            self.conn.query_row(sql, [], |r| r.get(0))?
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `limit` calls with an id above `after`, in id order.
    pub fn calls_after(&self, after: i64, limit: usize) -> Result<Vec<CallRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CALL_COLUMNS} FROM token_usage WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], call_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every user with their controls.
    pub fn users(&self) -> Result<Vec<ImportUser>, StoreError> {
        // A file older than schema version 5 has no `plan` (the dump never migrates the file).
        let has_plan: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('users') WHERE name = 'plan'",
            [],
            |r| r.get(0),
        )?;
        let plan = if has_plan { "plan" } else { "NULL" };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, email, name, blocked, blocked_reason, daily_tokens, monthly_tokens, \
             daily_cost_nano_usd, monthly_cost_nano_usd, requests_per_minute, max_concurrent, \
             created_at, last_seen_at, {plan} FROM users ORDER BY id"
        ))?;
        let opt = |r: &rusqlite::Row<'_>, i: usize| r.get_ref(i).map(lenient_opt_int);
        let rows = stmt.query_map([], |r| {
            Ok(ImportUser {
                id: r.get(0)?,
                email: r.get(1)?,
                name: r.get(2)?,
                blocked: opt(r, 3)?.unwrap_or(0) != 0,
                blocked_reason: r.get(4)?,
                daily_tokens: opt(r, 5)?,
                monthly_tokens: opt(r, 6)?,
                daily_cost_nano_usd: opt(r, 7)?,
                monthly_cost_nano_usd: opt(r, 8)?,
                requests_per_minute: opt(r, 9)?,
                max_concurrent: opt(r, 10)?,
                created_at: opt(r, 11)?.unwrap_or(0),
                last_seen_at: opt(r, 12)?,
                plan: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every admin account.
    pub fn accounts(&self) -> Result<Vec<ImportAccount>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, password_hash, created_at, last_login_at FROM admin_accounts ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ImportAccount {
                name: r.get(0)?,
                password_hash: r.get(1)?,
                created_at: r.get_ref(2).map(lenient_opt_int)?.unwrap_or(0),
                last_login_at: r.get_ref(3).map(lenient_opt_int)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` audit rows with an id above `after`, oldest first (`id` is the file's).
    pub fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, ts, actor, action, target, before_json, after_json, detail \
             FROM admin_audit WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                ts: r.get_ref(1).map(lenient_opt_int)?.unwrap_or(0),
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                before_json: r.get(5)?,
                after_json: r.get(6)?,
                detail: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
