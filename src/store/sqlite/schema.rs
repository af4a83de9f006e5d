//! Opening the SQLite file: WAL and `synchronous = FULL` for writers, read-only connections for
//! readers, and the schema — `schema.sql` at every start, plus each version's migration once.
//!
//! `PRAGMA user_version` is the schema version. A file of an older version is migrated in the
//! same transaction that applies `schema.sql`, so a crash mid-migration leaves the old version
//! whole; a file of a newer version was written by a newer Tollgate and is refused.
//!
//! Migrations: 1 → 2 fills the coarse rollups from `usage_daily`. 2 → 3 lets `usage_source` be
//! `'invalid'` and repairs, once, the impossible figures an older Tollgate could store (an
//! upstream's absurd usage report, rollups that overflowed into REALs): see [`super::repair`].
//! Files of version 3 are written only by writers that validate usage and saturate their sums,
//! so the repair never has to run again (and the reads tolerate a REAL regardless). 3 → 4 adds
//! `token_usage.journal_id`, 4 → 5 `users.plan`: nullable columns, nothing rewritten.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::writer::ROLLUP_COLUMNS;
use crate::store::StoreError;

/// The schema, applied at every start. Idempotent.
pub const SCHEMA_SQL: &str = include_str!("../../../schema.sql");

/// `PRAGMA user_version` written by [`SCHEMA_SQL`].
pub const SCHEMA_VERSION: i64 = 5;

/// The `usage_source` constraint of versions 1 and 2, and of version 3 (as in [`SCHEMA_SQL`]).
const OLD_SOURCE_CHECK: &str = "CHECK (usage_source IN ('reported', 'estimated', 'none'))";
const SOURCE_CHECK: &str = "CHECK (usage_source IN ('reported', 'estimated', 'none', 'invalid'))";

/// Open a writing connection: WAL, `synchronous = FULL`, the schema applied and migrated (`tz`
/// is `limits.timezone`, the calendar of the rollups a migration may rebuild). Its writes wait
/// up to `busy_timeout` for another writer's lock.
pub fn open_writer(
    path: &Path,
    busy_timeout: Duration,
    tz: &TimeZone,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "{}: cannot switch the database to WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -8192;
         PRAGMA wal_autocheckpoint = 16384;
         PRAGMA journal_size_limit = 67108864;",
    )?;
    apply_schema(&conn, tz)?;
    Ok(conn)
}

/// Open a read-only connection for queries. It never blocks the writer: in WAL mode readers and
/// the writer proceed concurrently.
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Apply [`SCHEMA_SQL`] and the migrations the file needs, in one transaction; refuse a file
/// written by a newer schema. `tz` is `limits.timezone`: the day of a rollup row the repair of
/// an older file rebuilds.
pub fn apply_schema(conn: &Connection, tz: &TimeZone) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {version}, newer than this Tollgate's {SCHEMA_VERSION}; \
             run a newer Tollgate or restore a copy"
        )));
    }
    let started = Instant::now();
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA_SQL)?;
    // Version 0 is a new file: nothing to migrate.
    let mut repaired = super::repair::Repaired::default();
    if (1..3).contains(&version) {
        allow_invalid_source(&tx)?;
        let mut repair = super::repair::Repair::new(tz.clone());
        // The calls and the finest rollup first: the coarse ones are sums of `usage_daily`.
        repair.calls_and_daily(&tx)?;
        if version == 1 {
            fill_coarse_rollups(&tx)?;
        }
        repaired = repair.coarse(&tx)?;
    }
    if (1..4).contains(&version) {
        add_journal_id(&tx)?;
    }
    if version < 5 {
        add_users_plan(&tx)?;
    }
    tx.commit()?;
    if repaired.any() {
        tracing::warn!(
            calls = repaired.calls,
            rollup_rows = repaired.rollup_rows,
            "store: repaired rows an older Tollgate left with impossible usage figures (token \
             counts above the per-call ceiling, sums past the integers): their calls are now \
             usage_source = 'invalid' and the rollups they are in were summed again"
        );
    }
    if version != 0 && version < SCHEMA_VERSION {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            ms = started.elapsed().as_millis(),
            "store: database migrated"
        );
    }
    Ok(())
}

/// 2 → 3: let `usage_source` be `'invalid'`. SQLite cannot alter a constraint in place, and
/// copying `token_usage` (millions of rows) to a new table would make the upgrade take minutes,
/// so this edits the table's definition in `sqlite_schema` as SQLite documents for loosening a
/// CHECK ("Making Other Kinds Of Table Schema Changes" in its ALTER TABLE page): in this
/// transaction, replace the constraint's text, bump `schema_version`, reload the schema. Every
/// stored row meets the new, wider constraint, so the file stays consistent. A definition
/// without the old text was not written by Tollgate: refused, rather than guessed at.
fn allow_invalid_source(conn: &Connection) -> Result<(), StoreError> {
    let sql: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'token_usage'",
        [],
        |r| r.get(0),
    )?;
    if sql.contains(SOURCE_CHECK) {
        return Ok(());
    }
    if sql.matches(OLD_SOURCE_CHECK).count() != 1 {
        return Err(StoreError::Backend(
            "token_usage's usage_source constraint is not the one Tollgate wrote; \
             the database cannot be migrated to schema version 3"
                .into(),
        ));
    }
    let schema_version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA writable_schema = ON")?;
    let edited = conn.execute(
        "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2) \
         WHERE type = 'table' AND name = 'token_usage'",
        [OLD_SOURCE_CHECK, SOURCE_CHECK],
    );
    // Whatever happened, schema writing is switched off again and the schema reloaded.
    let bumped = conn.execute_batch(&format!("PRAGMA schema_version = {}", schema_version + 1));
    conn.execute_batch("PRAGMA writable_schema = RESET")?;
    edited?;
    bumped?;
    Ok(())
}

/// 3 → 4: `token_usage.journal_id`, the call's entry in the file journal. Adding a nullable
/// column rewrites nothing: the rows already stored read it as NULL.
fn add_journal_id(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('token_usage') WHERE name = 'journal_id'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE token_usage ADD COLUMN journal_id INTEGER")?;
    }
    Ok(())
}

/// 4 → 5: `users.plan` (new files have it from [`SCHEMA_SQL`]) and its index, which
/// `schema.sql` cannot create before an older file has the column.
fn add_users_plan(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('users') WHERE name = 'plan'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE users ADD COLUMN plan TEXT")?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS users_plan ON users (plan)")
}

/// 1 → 2: the per-user and per-model rollups, summed from `usage_daily` (which equals the sum of
/// the rows), so that they hold every call recorded before the migration.
fn fill_coarse_rollups(conn: &Connection) -> rusqlite::Result<()> {
    let sums = "SUM(calls), SUM(errors), SUM(input_tokens), SUM(cached_input_tokens), \
         SUM(output_tokens), SUM(reasoning_tokens), SUM(total_tokens), SUM(cost_nano_usd), \
         SUM(estimated_calls), SUM(unpriced_calls), SUM(latency_ms_sum)";
    conn.execute_batch(&format!(
        "INSERT INTO usage_user_daily (day, user_id, {ROLLUP_COLUMNS}) \
           SELECT day, user_id, {sums} FROM usage_daily GROUP BY day, user_id;
         INSERT INTO usage_user_monthly (month, user_id, {ROLLUP_COLUMNS}) \
           SELECT substr(day, 1, 8) || '01', user_id, {sums} FROM usage_daily \
           GROUP BY substr(day, 1, 8), user_id;
         INSERT INTO usage_model_daily (day, provider, model, {ROLLUP_COLUMNS}) \
           SELECT day, provider, model, {sums} FROM usage_daily GROUP BY day, provider, model;"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn a_version_4_file_gets_users_plan_and_keeps_its_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        {
            // A file as version 4 left it: the users table without `plan`.
            let conn = open_writer(&path, Duration::from_secs(1), &TimeZone::UTC).unwrap();
            conn.execute_batch(
                "DROP INDEX users_plan;
                 ALTER TABLE users DROP COLUMN plan;
                 INSERT INTO users (id, created_at, last_seen_at) VALUES ('old', 1, 2);
                 PRAGMA user_version = 4;",
            )
            .unwrap();
        }
        let conn = open_writer(&path, Duration::from_secs(1), &TimeZone::UTC).unwrap();
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(one("PRAGMA user_version"), SCHEMA_VERSION);
        assert_eq!(
            one("SELECT count(*) FROM pragma_table_info('users') WHERE name = 'plan'"),
            1
        );
        assert_eq!(
            one("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'users_plan'"),
            1
        );
        assert_eq!(
            one(
                "SELECT count(*) FROM users WHERE id = 'old' AND plan IS NULL AND last_seen_at = 2"
            ),
            1
        );
        // Opening it again changes nothing.
        drop(conn);
        let conn = open_writer(&path, Duration::from_secs(1), &TimeZone::UTC).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}
