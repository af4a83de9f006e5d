//! Opening the SQLite file: WAL and `synchronous = FULL` for writers, read-only connections for
//! readers, and the schema — `schema.sql` at every start, plus each version's migration once.
//!
//! `PRAGMA user_version` is the schema version. A file of an older version is migrated in the
//! same transaction that applies `schema.sql`, so a crash mid-migration leaves the old version
//! whole; a file of a newer version was written by a newer Tollgate and is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::writer::ROLLUP_COLUMNS;
use crate::store::StoreError;

/// The schema, applied at every start. Idempotent.
pub const SCHEMA_SQL: &str = include_str!("../../../schema.sql");

/// `PRAGMA user_version` written by [`SCHEMA_SQL`].
pub const SCHEMA_VERSION: i64 = 2;

/// Open a writing connection: WAL, `synchronous = FULL`, the schema applied and migrated. Its
/// writes wait up to `busy_timeout` for another writer's lock.
pub fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
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
    apply_schema(&conn)?;
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
/// written by a newer schema.
pub fn apply_schema(conn: &Connection) -> Result<(), StoreError> {
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
    if version == 1 {
        fill_coarse_rollups(&tx)?;
    }
    tx.commit()?;
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
