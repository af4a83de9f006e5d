//! The SQLite side of the store's writer: the [`Sink`] that commits a batch of call rows in one
//! `BEGIN IMMEDIATE` transaction together with the users they name and every rollup they add to
//! (`usage_daily`, `usage_user_daily`, `usage_user_monthly`, `usage_model_daily`), so the rollups
//! always equal the sum of the rows; and [`Queue::open`], which opens the file, recovers the call
//! journal's leftovers, and starts the queue's writer thread ([`crate::store::queue`]) on it.
//! Transient failures (`SQLITE_BUSY` from a checkpointing reader, disk full, I/O error) roll the
//! batch back for the queue to retry. The WAL is checkpointed by a thread of its own
//! (`checkpoint`), and once more, truncating, when the writer stops.
//!
//! This module never decides what a row says (usage, price and outcome come from the caller).

use std::path::Path;
use std::sync::LazyLock;

use jiff::tz::TimeZone;
use rusqlite::{Connection, ErrorCode, Statement, TransactionBehavior, params};

use crate::calendar::DayCache;
use crate::config::JournalMode;
use crate::store::journal::{self, Journal};
pub use crate::store::queue::{Options, Queue, Sink, WriterThread, refusal_headroom};
use crate::store::{StoreError, UsageRow};
use crate::usage::{Totals, stored_int};

impl Queue {
    /// Open (or create) the database at `path`, apply the schema, and start the writer thread.
    /// `tz` is `limits.timezone`, which decides the calendar day of each rollup.
    pub fn open(
        path: &Path,
        tz: jiff::tz::TimeZone,
        queue_capacity: usize,
        batch_max: usize,
    ) -> Result<(Queue, WriterThread), StoreError> {
        let options = Options {
            queue_capacity,
            batch_max,
            ..Options::default()
        };
        Queue::open_with(path, tz, options)
    }

    /// [`Queue::open`] with every option.
    pub fn open_with(
        path: &Path,
        tz: TimeZone,
        options: Options,
    ) -> Result<(Queue, WriterThread), StoreError> {
        let mut conn = super::schema::open_writer(path, options.busy_timeout, &tz)?;
        let mut days = DayCache::new(tz);
        let journal_dir = journal::dir_for(path);
        let (lock, journal, journal_thread) = if options.owns_journal {
            let lock = journal::DirLock::acquire(&journal_dir)?;
            // Recovered rows are fsynced whatever the mode: the segments they replace go next.
            super::journal::recover_table(&mut conn, &mut days)?;
            let max_id = super::journal::recover_file(&mut conn, &mut days, &journal_dir)?;
            match Journal::start(&journal_dir, options.journal, max_id)? {
                Some((journal, thread)) => (Some(lock), Some(journal), Some(thread)),
                None => (Some(lock), None, None),
            }
        } else {
            (None, None, None)
        };
        if options.journal == JournalMode::Process {
            // Commits reach the operating system, not the disk: a killed process loses nothing.
            conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        }
        // Checkpoints run beside the writer, never inside its commits (see `checkpoint`).
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        let checkpointer = super::checkpoint::Checkpointer::start(path)?;
        let sink = SqliteSink {
            conn,
            days,
            checkpointer: Some(checkpointer),
        };
        Queue::start(sink, options, journal, journal_thread, lock)
    }
}

/// The SQLite side of the writer thread: one transaction per batch on the writing connection,
/// the checkpointer beside it.
struct SqliteSink {
    conn: Connection,
    days: DayCache,
    checkpointer: Option<super::checkpoint::Checkpointer>,
}

impl Sink for SqliteSink {
    type Error = rusqlite::Error;

    /// A failed SQLite commit is rolled back, never half-known: no need for the batch's id.
    fn write(&mut self, batch: &[UsageRow], _batch_id: u64) -> Result<(), rusqlite::Error> {
        write_batch(&mut self.conn, &mut self.days, batch)
    }

    fn is_transient(&self, error: &rusqlite::Error) -> bool {
        is_transient(error)
    }

    fn stopped(&mut self) {
        if let Some(mut checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
        // Leave a small WAL behind; a busy reader only makes this partial, which is harmless.
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "store: WAL checkpoint at close failed");
        }
    }
}
fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

/// One transaction: the rows, the users they name and the rollups they add to.
pub(super) fn write_batch(
    conn: &mut Connection,
    days: &mut DayCache,
    batch: &[UsageRow],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    write_rows(&tx, days, batch)?;
    tx.commit()
}

/// [`write_batch`]'s work inside a transaction the caller holds.
pub(super) fn write_rows(
    tx: &Connection,
    days: &mut DayCache,
    batch: &[UsageRow],
) -> rusqlite::Result<()> {
    if !batch.is_empty() {
        insert_rows(tx, batch)?;
        upsert_users(tx, batch)?;
        upsert_rollups(tx, days, batch)?;
    }
    Ok(())
}

/// Rows per multi-row INSERT; the remainder goes one row at a time.
const INSERT_CHUNK: usize = 64;
const TOKEN_USAGE_COLUMNS: usize = 19;

fn insert_rows(conn: &Connection, batch: &[UsageRow]) -> rusqlite::Result<()> {
    let mut chunks = batch.chunks_exact(INSERT_CHUNK);
    if chunks.len() > 0 {
        let mut stmt = conn.prepare_cached(&insert_sql(INSERT_CHUNK))?;
        for chunk in chunks.by_ref() {
            bind_rows(&mut stmt, chunk)?;
            stmt.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut stmt = conn.prepare_cached(&insert_sql(1))?;
        for row in rest {
            bind_rows(&mut stmt, std::slice::from_ref(row))?;
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO token_usage (request_id, ts, user_id, provider, model, endpoint, streamed, status, \
         input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, \
         usage_source, latency_ms, ttfb_ms, outcome, journal_id) VALUES ",
    );
    let one = format!("({})", vec!["?"; TOKEN_USAGE_COLUMNS].join(","));
    sql.push_str(&vec![one; rows].join(","));
    sql
}

fn bind_rows(stmt: &mut Statement<'_>, rows: &[UsageRow]) -> rusqlite::Result<()> {
    for (n, row) in rows.iter().enumerate() {
        let base = n * TOKEN_USAGE_COLUMNS;
        let u = &row.usage;
        stmt.raw_bind_parameter(base + 1, row.request_id.as_str())?;
        stmt.raw_bind_parameter(base + 2, row.ts_ms)?;
        stmt.raw_bind_parameter(base + 3, &*row.user_id)?;
        stmt.raw_bind_parameter(base + 4, &*row.provider)?;
        stmt.raw_bind_parameter(base + 5, row.model.as_deref())?;
        stmt.raw_bind_parameter(base + 6, row.endpoint)?;
        stmt.raw_bind_parameter(base + 7, row.streamed)?;
        stmt.raw_bind_parameter(base + 8, row.status)?;
        stmt.raw_bind_parameter(base + 9, int(u.input_tokens))?;
        stmt.raw_bind_parameter(base + 10, int(u.cached_input_tokens))?;
        stmt.raw_bind_parameter(base + 11, int(u.output_tokens))?;
        stmt.raw_bind_parameter(base + 12, int(u.reasoning_tokens))?;
        stmt.raw_bind_parameter(base + 13, int(u.total()))?;
        stmt.raw_bind_parameter(base + 14, row.cost_nano_usd)?;
        stmt.raw_bind_parameter(base + 15, row.usage_source.as_str())?;
        stmt.raw_bind_parameter(base + 16, int(row.latency_ms))?;
        stmt.raw_bind_parameter(base + 17, row.ttfb_ms.map(int))?;
        stmt.raw_bind_parameter(base + 18, row.outcome.as_str())?;
        stmt.raw_bind_parameter(base + 19, row.journal_id.map(int))?;
    }
    Ok(())
}

/// SQLite integers are i64; a count past i64::MAX is stored as i64::MAX rather than refused.
fn int(n: u64) -> i64 {
    stored_int(n)
}

/// One upsert per distinct user in the batch: create on first sight with the first email and
/// name seen, never overwrite ones already stored, move `last_seen_at` forward only; the plan of
/// the batch's latest call becomes the user's unless a later call is already recorded.
fn upsert_users(conn: &Connection, batch: &[UsageRow]) -> rusqlite::Result<()> {
    let users = crate::store::rollup::users_seen(batch);
    let mut stmt = conn.prepare_cached(
        "INSERT INTO users (id, email, name, created_at, last_seen_at, plan) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?7) \
         ON CONFLICT (id) DO UPDATE SET \
           email = COALESCE(users.email, excluded.email), \
           name = COALESCE(users.name, excluded.name), \
           last_seen_at = max(COALESCE(users.last_seen_at, excluded.last_seen_at), excluded.last_seen_at), \
           plan = CASE WHEN ?6 IS NOT NULL AND ?6 >= COALESCE(users.last_seen_at, ?6) \
                  THEN ?7 ELSE users.plan END",
    )?;
    for (id, seen) in users {
        let (plan, plan_ms) = seen.plan.map_or((None, None), |(p, at)| (p, Some(at)));
        stmt.execute(params![
            id,
            seen.email,
            seen.name,
            seen.first_ms,
            seen.last_ms,
            plan_ms,
            plan
        ])?;
    }
    Ok(())
}

/// The rollup columns every rollup table shares, in [`Totals`] order after the key columns.
pub(super) const ROLLUP_COLUMNS: &str = "calls, errors, input_tokens, cached_input_tokens, \
     output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, estimated_calls, unpriced_calls, \
     latency_ms_sum";

/// `ON CONFLICT … DO UPDATE` that adds the new sums to the stored ones, saturating at
/// `i64::MAX`: SQLite turns an integer addition that overflows into a REAL, which no read of an
/// INTEGER column accepts, so the sum is compared with `i64::MAX - new` before it is made (the
/// new sums are never negative: [`Totals`] of calls).
static ROLLUP_ADD: LazyLock<String> = LazyLock::new(|| {
    ROLLUP_COLUMNS
        .split(',')
        .map(|c| {
            let c = c.trim();
            format!(
                "{c} = CASE WHEN excluded.{c} > 0 AND {c} > {max} - excluded.{c} THEN {max} \
                 ELSE {c} + excluded.{c} END",
                max = i64::MAX
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
});

/// The rollups of a batch, summed in memory per key before one upsert per key and table:
/// `usage_daily` (day, user, provider, model, endpoint) for one user's figures,
/// `usage_user_daily` and `usage_user_monthly` (per user) for ranking users,
/// `usage_model_daily` (day, provider, model) for the system's figures.
fn upsert_rollups(
    conn: &Connection,
    days: &mut DayCache,
    batch: &[UsageRow],
) -> rusqlite::Result<()> {
    let rollup_add = &*ROLLUP_ADD;
    let crate::store::rollup::Rollups {
        detail,
        user_day,
        user_month,
        model_day,
    } = crate::store::rollup::Rollups::of(days, batch);
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO usage_daily (day, user_id, provider, model, endpoint, {ROLLUP_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
         ON CONFLICT (day, user_id, provider, model, endpoint) DO UPDATE SET {rollup_add}"
    ))?;
    for ((day, user, provider, model, endpoint), t) in &detail {
        bind_totals(&mut stmt, 6, t)?;
        stmt.raw_bind_parameter(1, &**day)?;
        stmt.raw_bind_parameter(2, *user)?;
        stmt.raw_bind_parameter(3, *provider)?;
        stmt.raw_bind_parameter(4, *model)?;
        stmt.raw_bind_parameter(5, *endpoint)?;
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO usage_user_daily (day, user_id, {ROLLUP_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (day, user_id) DO UPDATE SET {rollup_add}"
    ))?;
    for ((day, user), t) in &user_day {
        bind_totals(&mut stmt, 3, t)?;
        stmt.raw_bind_parameter(1, &**day)?;
        stmt.raw_bind_parameter(2, *user)?;
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO usage_user_monthly (month, user_id, {ROLLUP_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (month, user_id) DO UPDATE SET {rollup_add}"
    ))?;
    for ((month, user), t) in &user_month {
        bind_totals(&mut stmt, 3, t)?;
        stmt.raw_bind_parameter(1, month.as_str())?;
        stmt.raw_bind_parameter(2, *user)?;
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO usage_model_daily (day, provider, model, {ROLLUP_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
         ON CONFLICT (day, provider, model) DO UPDATE SET {rollup_add}"
    ))?;
    for ((day, provider, model), t) in &model_day {
        bind_totals(&mut stmt, 4, t)?;
        stmt.raw_bind_parameter(1, &**day)?;
        stmt.raw_bind_parameter(2, *provider)?;
        stmt.raw_bind_parameter(3, *model)?;
        stmt.raw_execute()?;
    }
    Ok(())
}

/// Bind a [`Totals`] as [`ROLLUP_COLUMNS`] from parameter `at` on.
pub(super) fn bind_totals(stmt: &mut Statement<'_>, at: usize, t: &Totals) -> rusqlite::Result<()> {
    for (i, v) in [
        t.calls,
        t.errors,
        t.input_tokens,
        t.cached_input_tokens,
        t.output_tokens,
        t.reasoning_tokens,
        t.total_tokens,
        t.cost_nano_usd,
        t.estimated_calls,
        t.unpriced_calls,
        t.latency_ms_sum,
    ]
    .into_iter()
    .enumerate()
    {
        stmt.raw_bind_parameter(at + i, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::calendar::local_day;
    use crate::store::sqlite::controls::load_quota_seed;
    use crate::store::sqlite::schema::{SCHEMA_VERSION, apply_schema, open_reader};
    use crate::usage::{Outcome, Usage, UsageSource};
    use jiff::Timestamp;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn row(n: u64, user: &str, ts_ms: i64) -> UsageRow {
        UsageRow {
            request_id: format!("req-{n}"),
            ts_ms,
            user_id: Arc::from(user),
            user_email: Some(format!("{user}@example.com")),
            user_name: None,
            provider: Arc::from(if n.is_multiple_of(3) {
                "gemini"
            } else {
                "openai"
            }),
            model: if n.is_multiple_of(7) {
                None
            } else {
                Some(format!("model-{}", n % 4))
            },
            endpoint: if n.is_multiple_of(2) {
                "chat.completions"
            } else {
                "responses"
            },
            streamed: n % 2 == 1,
            status: if n.is_multiple_of(11) { 502 } else { 200 },
            usage: Usage {
                input_tokens: 100 + n,
                cached_input_tokens: n % 50,
                output_tokens: 20 + n % 13,
                reasoning_tokens: n % 5,
            },
            cost_nano_usd: if n.is_multiple_of(5) {
                None
            } else {
                Some(1_000 + i64::try_from(n).unwrap())
            },
            usage_source: match n % 10 {
                0 => UsageSource::None,
                1 => UsageSource::Estimated,
                2 => UsageSource::Invalid,
                _ => UsageSource::Reported,
            },
            latency_ms: 50 + n % 100,
            ttfb_ms: if n.is_multiple_of(4) {
                None
            } else {
                Some(10 + n % 20)
            },
            outcome: Outcome::Complete,
            journal_id: None,
            plan: None,
        }
    }

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.db");
        Db { _dir: dir, path }
    }

    fn options(queue_capacity: usize, batch_max: usize) -> Options {
        Options {
            queue_capacity,
            batch_max,
            busy_timeout: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            ..Options::default()
        }
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn rows_are_written_exactly_column_by_column() {
        let db = db();
        let full = UsageRow {
            request_id: "req-full".into(),
            ts_ms: 1_790_000_000_123,
            user_id: Arc::from("user-1"),
            user_email: Some("a@example.com".into()),
            user_name: Some("Ada".into()),
            provider: Arc::from("openai"),
            model: Some("gpt-4o-mini-2024-07-18".into()),
            endpoint: "chat.completions",
            streamed: true,
            status: 200,
            usage: Usage {
                input_tokens: 1_200,
                cached_input_tokens: 1_024,
                output_tokens: 300,
                reasoning_tokens: 128,
            },
            cost_nano_usd: Some(456_780),
            usage_source: UsageSource::Reported,
            latency_ms: 1_234,
            ttfb_ms: Some(321),
            outcome: Outcome::Complete,
            journal_id: None,
            plan: None,
        };
        let sparse = UsageRow {
            request_id: "req-sparse".into(),
            ts_ms: 1_790_000_000_999,
            user_id: Arc::from("user-2"),
            user_email: None,
            user_name: None,
            provider: Arc::from("gemini"),
            model: None,
            endpoint: "other",
            streamed: false,
            status: 429,
            usage: Usage::default(),
            cost_nano_usd: None,
            usage_source: UsageSource::None,
            latency_ms: 0,
            ttfb_ms: None,
            outcome: Outcome::RefusedQuota,
            journal_id: None,
            plan: None,
        };
        let (store, writer) = Queue::open(&db.path, TimeZone::UTC, 16, 16).unwrap();
        assert!(store.record(full.clone()));
        assert!(store.record(sparse.clone()));
        writer.close();
        assert_eq!(store.rows_committed(), 2);
        assert_eq!(store.queue_depth(), 0);

        let conn = open_reader(&db.path).unwrap();
        type Read = (
            (
                String,
                i64,
                String,
                String,
                Option<String>,
                String,
                bool,
                u16,
                i64,
                i64,
            ),
            (i64, i64, i64, Option<i64>, String, i64, Option<i64>, String),
        );
        let read = |request_id: &str| -> Read {
            conn.query_row(
                "SELECT request_id, ts, user_id, provider, model, endpoint, streamed, status, input_tokens, \
                 cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, usage_source, \
                 latency_ms, ttfb_ms, outcome FROM token_usage WHERE request_id = ?1",
                [request_id],
                |r| {
                    Ok((
                        (
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                            r.get(9)?,
                        ),
                        (r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?, r.get(16)?, r.get(17)?),
                    ))
                },
            )
            .unwrap()
        };
        assert_eq!(
            read("req-full"),
            (
                (
                    "req-full".into(),
                    1_790_000_000_123,
                    "user-1".into(),
                    "openai".into(),
                    Some("gpt-4o-mini-2024-07-18".into()),
                    "chat.completions".into(),
                    true,
                    200,
                    1_200,
                    1_024
                ),
                (
                    300,
                    128,
                    1_500,
                    Some(456_780),
                    "reported".into(),
                    1_234,
                    Some(321),
                    "complete".into()
                )
            )
        );
        assert_eq!(
            read("req-sparse"),
            (
                (
                    "req-sparse".into(),
                    1_790_000_000_999,
                    "user-2".into(),
                    "gemini".into(),
                    None,
                    "other".into(),
                    false,
                    429,
                    0,
                    0
                ),
                (
                    0,
                    0,
                    0,
                    None,
                    "none".into(),
                    0,
                    None,
                    "refused_quota".into()
                )
            )
        );
        let user: (Option<String>, Option<String>, i64, Option<i64>, i64) = conn
            .query_row(
                "SELECT email, name, created_at, last_seen_at, blocked FROM users WHERE id = 'user-1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            user,
            (
                Some("a@example.com".into()),
                Some("Ada".into()),
                1_790_000_000_123,
                Some(1_790_000_000_123),
                0
            )
        );
        // The model-less row rolls up under model ''.
        assert_eq!(
            count(
                &conn,
                "SELECT calls FROM usage_daily WHERE user_id = 'user-2' AND model = ''"
            ),
            1
        );
        assert_eq!(
            count(
                &conn,
                "SELECT errors FROM usage_daily WHERE user_id = 'user-2'"
            ),
            1
        );
        assert_eq!(
            count(
                &conn,
                "SELECT unpriced_calls FROM usage_daily WHERE user_id = 'user-2'"
            ),
            1
        );
    }

    /// The rollups recomputed in Rust, independently of the writer's day cache.
    fn expected_rollups(
        rows: &[UsageRow],
        tz: &TimeZone,
    ) -> BTreeMap<(String, String, String, String, String), [i64; 11]> {
        let mut out: BTreeMap<_, [i64; 11]> = BTreeMap::new();
        for r in rows {
            let day = Timestamp::from_millisecond(r.ts_ms)
                .unwrap()
                .to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d")
                .to_string();
            let key = (
                day,
                r.user_id.to_string(),
                r.provider.to_string(),
                r.model.clone().unwrap_or_default(),
                r.endpoint.to_string(),
            );
            let s = out.entry(key).or_default();
            let u = &r.usage;
            let add = [
                1,
                i64::from(r.status >= 400),
                int(u.input_tokens),
                int(u.cached_input_tokens),
                int(u.output_tokens),
                int(u.reasoning_tokens),
                int(u.input_tokens + u.output_tokens),
                r.cost_nano_usd.unwrap_or(0),
                // An invalid report's tokens are the estimate: both count as estimated.
                i64::from(matches!(
                    r.usage_source,
                    UsageSource::Estimated | UsageSource::Invalid
                )),
                i64::from(r.cost_nano_usd.is_none()),
                int(r.latency_ms),
            ];
            for (a, b) in s.iter_mut().zip(add) {
                *a += b;
            }
        }
        out
    }

    fn stored_rollups(
        conn: &Connection,
    ) -> BTreeMap<(String, String, String, String, String), [i64; 11]> {
        let mut stmt = conn
            .prepare(
                "SELECT day, user_id, provider, model, endpoint, calls, errors, input_tokens, cached_input_tokens, \
                 output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, estimated_calls, unpriced_calls, \
                 latency_ms_sum FROM usage_daily",
            )
            .unwrap();
        stmt.query_map([], |r| {
            let mut sums = [0_i64; 11];
            for (i, s) in sums.iter_mut().enumerate() {
                *s = r.get(5 + i)?;
            }
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                sums,
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    #[test]
    fn rollups_equal_the_sum_of_rows_across_batches_and_local_midnight() {
        let db = db();
        let tz = berlin();
        // 22:00Z–00:00Z on 2026-10-24 is 00:00–02:00 CEST on 2026-10-25 in Berlin (the night the
        // clocks go back): rows on both sides of local midnight, one UTC day, two local days.
        let start = ms("2026-10-24T21:30:00Z");
        let rows: Vec<UsageRow> = (0..2_000)
            .map(|n| {
                row(
                    n,
                    ["alice", "bob", "carol"][usize::try_from(n % 3).unwrap()],
                    start + i64::try_from(n).unwrap() * 2_700,
                )
            })
            .collect();
        // Small batches, fed in several waves: many transactions add to the same rollup keys.
        let (store, writer) = Queue::open_with(&db.path, tz.clone(), options(10_000, 37)).unwrap();
        for wave in rows.chunks(300) {
            for r in wave {
                assert!(store.record(r.clone()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.close();

        let conn = open_reader(&db.path).unwrap();
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM token_usage"), 2_000);
        let expected = expected_rollups(&rows, &tz);
        let days: std::collections::BTreeSet<_> = expected.keys().map(|k| k.0.clone()).collect();
        assert_eq!(
            days.into_iter().collect::<Vec<_>>(),
            ["2026-10-24", "2026-10-25"]
        );
        assert_eq!(stored_rollups(&conn), expected);
        // And against the rows as stored, summed by SQL over the whole table.
        assert_eq!(
            count(&conn, "SELECT SUM(total_tokens) FROM token_usage"),
            count(&conn, "SELECT SUM(total_tokens) FROM usage_daily")
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COALESCE(SUM(cost_nano_usd), 0) FROM token_usage"
            ),
            count(&conn, "SELECT SUM(cost_nano_usd) FROM usage_daily")
        );

        // The per-user and per-model rollups hold the same sums.
        for table in [
            "usage_user_daily",
            "usage_user_monthly",
            "usage_model_daily",
        ] {
            for column in ["calls", "total_tokens", "cost_nano_usd", "latency_ms_sum"] {
                assert_eq!(
                    count(&conn, &format!("SELECT SUM({column}) FROM usage_daily")),
                    count(&conn, &format!("SELECT SUM({column}) FROM {table}")),
                    "{table}.{column}"
                );
            }
        }
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM usage_user_daily WHERE day = '2026-10-25'"
            ),
            3
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM usage_user_monthly WHERE month = '2026-10-01'"
            ),
            3
        );
        let seed = load_quota_seed(&conn, "2026-10-25", "2026-10-01").unwrap();
        let today = |u: &str| seed.users[u].day;
        let month = |u: &str| seed.users[u].month;
        let alice_today: i64 = rows
            .iter()
            .filter(|r| &*r.user_id == "alice" && local_day(r.ts_ms, &tz) == "2026-10-25")
            .map(|r| int(r.usage.total()))
            .sum();
        assert_eq!(today("alice").tokens, alice_today);
        let alice_month: i64 = rows
            .iter()
            .filter(|r| &*r.user_id == "alice")
            .map(|r| int(r.usage.total()))
            .sum();
        assert_eq!(month("alice").tokens, alice_month);
        assert_eq!(
            ["alice", "bob", "carol"]
                .iter()
                .map(|u| month(u).calls)
                .sum::<i64>(),
            2_000
        );
        let later = load_quota_seed(&conn, "2026-10-26", "2026-11-01").unwrap();
        assert!(later.users.is_empty());
    }

    #[test]
    fn user_upsert_keeps_the_first_email_and_moves_last_seen_forward() {
        let db = db();
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
        let mut first = row(1, "dora", 2_000);
        first.user_email = None;
        store.record(first);
        let mut second = row(2, "dora", 3_000);
        second.user_email = Some("first@example.com".into());
        second.user_name = Some("Dora".into());
        store.record(second);
        writer.close();
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
        let mut later = row(3, "dora", 2_500); // arrives late with an older timestamp
        later.user_email = Some("second@example.com".into());
        later.user_name = Some("Dorothea".into());
        store.record(later);
        writer.close();

        let conn = open_reader(&db.path).unwrap();
        let user: (String, String, i64, i64) = conn
            .query_row(
                "SELECT email, name, created_at, last_seen_at FROM users WHERE id = 'dora'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            user,
            ("first@example.com".into(), "Dora".into(), 2_000, 3_000)
        );
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM users"), 1);
    }

    #[test]
    fn a_users_plan_is_their_latest_calls_and_a_recovered_row_leaves_it() {
        let db = db();
        let plan_of = |user: &str| -> Option<String> {
            let conn = open_reader(&db.path).unwrap();
            conn.query_row("SELECT plan FROM users WHERE id = ?1", [user], |r| r.get(0))
                .unwrap()
        };
        let on = |n: u64, ts_ms: i64, plan: Option<&str>| {
            let mut r = row(n, "eve", ts_ms);
            r.plan = plan.map(Arc::from);
            r
        };
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
        // One batch: the latest call's plan wins, whatever the order rows arrive in.
        store.record(on(1, 2_000, Some("free")));
        store.record(on(2, 4_000, Some("pro")));
        store.record(on(3, 3_000, Some("free")));
        writer.close();
        assert_eq!(plan_of("eve").as_deref(), Some("pro"));

        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
        // A later batch with an older call (a slow stream ending late) changes nothing…
        store.record(on(4, 3_500, Some("free")));
        writer.close();
        assert_eq!(plan_of("eve").as_deref(), Some("pro"));
        // …a recovered row carries no plan and leaves it…
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
        let mut recovered = on(5, 9_000, None);
        recovered.outcome = Outcome::Recovered;
        store.record(recovered);
        writer.close();
        assert_eq!(plan_of("eve").as_deref(), Some("pro"));
        // …and a later call on no plan clears it.
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
        store.record(on(6, 9_500, None));
        writer.close();
        assert_eq!(plan_of("eve"), None);
    }

    #[test]
    fn close_commits_every_queued_row() {
        let db = db();
        let (store, writer) =
            Queue::open_with(&db.path, TimeZone::UTC, options(60_000, 4_096)).unwrap();
        let clone = store.clone(); // still alive when close() runs
        for n in 0..50_000 {
            assert!(clone.record(row(
                n,
                "erin",
                1_790_000_000_000 + i64::try_from(n).unwrap()
            )));
        }
        writer.close();
        assert_eq!(store.rows_committed(), 50_000);
        assert_eq!(store.queue_depth(), 0);
        assert_eq!(store.rows_dropped(), 0);
        let conn = open_reader(&db.path).unwrap();
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM token_usage"), 50_000);
        assert_eq!(count(&conn, "SELECT SUM(calls) FROM usage_daily"), 50_000);
        // The clone outlived the writer: its rows are refused and counted, never lost silently.
        assert!(!clone.record(row(50_000, "erin", 0)));
        assert_eq!(store.rows_dropped(), 1);
    }

    #[test]
    fn committed_rows_reach_the_database_file_while_the_writer_runs() {
        let db = db();
        let (store, writer) =
            Queue::open_with(&db.path, TimeZone::UTC, options(10_000, 512)).unwrap();
        for n in 0..5_000 {
            assert!(store.record(row(n, "gail", 1_790_000_000_000)));
        }
        // The main file alone (`immutable=1` reads no WAL): the checkpoint thread has copied
        // the committed pages there, with the writer still open and its automatic checkpoint
        // off.
        let uri = format!("file:{}?immutable=1", db.path.display());
        let in_file = || -> i64 {
            let conn = rusqlite::Connection::open_with_flags(
                &uri,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )
            .unwrap();
            // Before the first checkpoint even the schema is only in the WAL.
            conn.query_row("SELECT COUNT(*) FROM token_usage", [], |r| r.get(0))
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while in_file() < 5_000 {
            assert!(Instant::now() < deadline, "{} rows in the file", in_file());
            std::thread::sleep(Duration::from_millis(50));
        }
        writer.close();
        assert_eq!(in_file(), 5_000);
    }

    #[test]
    fn dropping_the_writer_flushes_like_close() {
        let db = db();
        let (store, writer) =
            Queue::open_with(&db.path, TimeZone::UTC, options(1_000, 10)).unwrap();
        for n in 0..500 {
            store.record(row(n, "finn", 1_000));
        }
        drop(writer);
        assert_eq!(
            count(
                &open_reader(&db.path).unwrap(),
                "SELECT COUNT(*) FROM token_usage"
            ),
            500
        );
    }

    #[test]
    fn full_queue_drops_and_counts_while_a_locked_database_is_retried_without_loss() {
        let db = db();
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(4, 2)).unwrap();
        // Another connection holds the write lock: every commit fails with SQLITE_BUSY.
        let mut blocker = Connection::open(&db.path).unwrap();
        let lock = blocker
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let mut accepted = 0_u64;
        let mut refused = 0_u64;
        for n in 0..50 {
            if store.record(row(n, "gus", 1_000)) {
                accepted += 1;
            } else {
                refused += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            refused > 0,
            "a queue of 4 behind a locked database must overflow"
        );
        assert!(accepted >= 4);
        assert_eq!(store.rows_dropped(), refused);
        assert!(
            store.queue_depth() >= 4,
            "queued rows wait for the lock: {}",
            store.queue_depth()
        );
        std::thread::sleep(Duration::from_millis(200)); // a few BUSY retries
        lock.rollback().unwrap();
        writer.close();
        assert_eq!(store.rows_failed(), 0);
        assert_eq!(store.rows_committed(), accepted);
        let conn = open_reader(&db.path).unwrap();
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM token_usage"),
            i64::try_from(accepted).unwrap()
        );
    }

    #[test]
    fn close_gives_up_on_a_database_that_stays_locked() {
        let db = db();
        let mut opts = options(100, 100);
        opts.retries_when_stopping = 2;
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, opts).unwrap();
        let mut blocker = Connection::open(&db.path).unwrap();
        let lock = blocker
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        for n in 0..10 {
            store.record(row(n, "hal", 1_000));
        }
        writer.close(); // must return although the lock is never released
        assert_eq!(store.rows_failed() + store.rows_committed(), 10);
        assert_eq!(store.rows_committed(), 0);
        drop(lock);
    }

    #[test]
    fn rollup_sums_saturate_at_i64_max_and_stay_integers() {
        let db = db();
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(16, 16)).unwrap();
        let mut first = row(3, "max", 1_000);
        first.cost_nano_usd = Some(7);
        assert!(store.record(first.clone()));
        writer.close();
        let conn = Connection::open(&db.path).unwrap();
        // Every rollup of the user's key three short of i64::MAX, as after a very long life.
        let near = i64::MAX - 3;
        for table in [
            "usage_daily",
            "usage_user_daily",
            "usage_user_monthly",
            "usage_model_daily",
        ] {
            let set = ROLLUP_COLUMNS
                .split(',')
                .map(|c| format!("{} = {near}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            assert_eq!(
                conn.execute(&format!("UPDATE {table} SET {set}"), [])
                    .unwrap(),
                1
            );
        }
        drop(conn);
        let (store, writer) = Queue::open_with(&db.path, TimeZone::UTC, options(16, 16)).unwrap();
        let mut second = row(4, "max", 2_000);
        second.model.clone_from(&first.model);
        second.provider = Arc::clone(&first.provider);
        second.endpoint = first.endpoint;
        second.cost_nano_usd = Some(9);
        second.usage_source = UsageSource::Reported;
        second.status = 200;
        second.usage = Usage {
            input_tokens: 10,
            cached_input_tokens: 0,
            output_tokens: 2,
            reasoning_tokens: 0,
        };
        assert!(store.record(second));
        // A u64::MAX report (which the proxy never hands over) still cannot leave the integers.
        let mut absurd = row(5, "max", 3_000);
        absurd.model.clone_from(&first.model);
        absurd.provider = Arc::clone(&first.provider);
        absurd.endpoint = first.endpoint;
        absurd.usage = Usage {
            input_tokens: u64::MAX,
            cached_input_tokens: 5,
            output_tokens: 5,
            reasoning_tokens: 5,
        };
        absurd.status = 200;
        absurd.usage_source = UsageSource::Reported;
        absurd.cost_nano_usd = Some(i64::MAX);
        assert!(store.record(absurd));
        writer.close();
        assert_eq!(store.rows_committed(), 2);
        let conn = open_reader(&db.path).unwrap();
        for table in [
            "usage_daily",
            "usage_user_daily",
            "usage_user_monthly",
            "usage_model_daily",
        ] {
            for column in ROLLUP_COLUMNS.split(',').map(str::trim) {
                let (kind, value): (String, i64) = conn
                    .query_row(
                        &format!("SELECT typeof({column}), {column} FROM {table}"),
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .unwrap();
                assert_eq!(kind, "integer", "{table}.{column}");
                // Two calls add 2 to `calls`; every sum that would pass i64::MAX stops there.
                let want = match column {
                    "calls" => near + 2,
                    "errors" | "estimated_calls" | "unpriced_calls" => near,
                    _ => i64::MAX,
                };
                assert_eq!(value, want, "{table}.{column}");
            }
        }
        drop(conn);
        // The seed reads the saturated sums.
        let conn = open_reader(&db.path).unwrap();
        let seed = load_quota_seed(&conn, "1970-01-01", "1970-01-01").unwrap();
        assert_eq!(seed.users["max"].day.tokens, i64::MAX);
    }

    #[test]
    fn schema_applies_twice_and_refuses_a_newer_version() {
        let db = db();
        for _ in 0..2 {
            let (store, writer) = Queue::open(&db.path, TimeZone::UTC, 8, 8).unwrap();
            store.record(row(1, "ivy", 1_000));
            writer.close();
        }
        let conn = Connection::open(&db.path).unwrap();
        apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
        apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
        assert_eq!(count(&conn, "PRAGMA user_version"), SCHEMA_VERSION);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM token_usage"), 2);
        assert_eq!(count(&conn, "SELECT calls FROM usage_daily"), 2);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "WAL mode persists in the file");
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = Queue::open(&db.path, TimeZone::UTC, 8, 8).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn a_reader_reads_while_the_writer_writes() {
        let db = db();
        let (store, writer) =
            Queue::open_with(&db.path, TimeZone::UTC, options(30_000, 256)).unwrap();
        let reader = open_reader(&db.path).unwrap();
        let producer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0..20_000 {
                    assert!(store.record(row(n, "jo", 1_000)));
                }
            })
        };
        let mut seen = 0;
        let mut reads = 0;
        while seen < 20_000 && reads < 100_000 {
            let now = count(&reader, "SELECT COUNT(*) FROM token_usage");
            assert!(now >= seen, "row count went backwards: {now} < {seen}");
            // Rows and rollups commit together: a reader never sees one without the other.
            let rolled: i64 = reader
                .query_row("SELECT COALESCE(SUM(calls), 0) FROM usage_daily", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert!(rolled >= now, "rollup {rolled} behind rows {now}");
            seen = now;
            reads += 1;
        }
        producer.join().unwrap();
        writer.close();
        assert_eq!(count(&reader, "SELECT COUNT(*) FROM token_usage"), 20_000);
        assert!(reads > 1);
        let mode: String = reader
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// Sustained writer throughput: queue the rows as fast as possible and time until every one
    /// is committed. 500 users, each batch touching most of them with several rollup keys each
    /// (a heavier mix than most deployments see); request ids shaped like the proxy's own
    /// (a per-process prefix and a counter, so the request_id index grows at its end). 200,000
    /// rows at batch_max 1,024 (the config default) and 4,096 in release builds; 20,000 rows at
    /// 1,024 in debug ones so the normal suite stays fast.
    /// Run: `cargo test --release --lib store -- --nocapture sustained_write_rate`.
    #[test]
    fn sustained_write_rate() {
        let (rows, batch_sizes): (u64, &[usize]) = if cfg!(debug_assertions) {
            (20_000, &[1_024])
        } else {
            (200_000, &[1_024, 4_096])
        };
        let users: Vec<String> = (0..500).map(|u| format!("user-{u}")).collect();
        for &batch_max in batch_sizes {
            let db = db();
            let batch: Vec<UsageRow> = (0..rows)
                .map(|n| {
                    let mut r = row(
                        n,
                        &users[usize::try_from(n % 500).unwrap()],
                        1_790_000_000_000 + i64::try_from(n).unwrap() * 3,
                    );
                    r.request_id = format!("tg-{:012x}{n:08x}", 0x5eed_cafe_f00d_u64);
                    r
                })
                .collect();
            let (store, writer) = Queue::open(
                &db.path,
                TimeZone::UTC,
                usize::try_from(rows).unwrap(),
                batch_max,
            )
            .unwrap();
            let started = Instant::now();
            for r in batch {
                assert!(store.record(r));
            }
            let queued = started.elapsed();
            writer.close();
            let elapsed = started.elapsed();
            assert_eq!(store.rows_committed(), rows);
            #[expect(clippy::cast_precision_loss, reason = "a throughput figure")]
            let rate = rows as f64 / elapsed.as_secs_f64();
            println!(
                "store: {rows} rows, batch_max {batch_max}: committed in {:.3} s = {rate:.0} rows/s (queued in {:.3} s)",
                elapsed.as_secs_f64(),
                queued.as_secs_f64()
            );
            let conn = open_reader(&db.path).unwrap();
            assert_eq!(
                count(&conn, "SELECT COUNT(*) FROM token_usage"),
                i64::try_from(rows).unwrap()
            );
        }
    }
}
