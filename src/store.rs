//! The store: the only module that speaks SQL.
//!
//! It owns the SQLite file: the schema (`schema.sql`, applied at every start), one writer thread
//! that owns the writing [`Connection`] and commits usage rows in batches, and the read queries
//! other modules need (on connections of their own, see [`open_reader`]).
//!
//! The request path hands a finished [`UsageRow`] to [`Store::record`], a `try_send` into a
//! bounded queue: it never blocks and never waits for the disk. When the queue is full the row is
//! dropped and counted ([`Store::rows_dropped`]) — losing a usage row is better than stalling
//! every call behind a slow disk. The writer blocks for the first row, drains up to `batch_max`
//! more without waiting, and commits them in one `BEGIN IMMEDIATE` transaction together with
//! the users they name and the daily rollups (`usage_daily`) they add to, so the rollups always
//! equal the sum of the rows. A transient failure (`SQLITE_BUSY` from a checkpointing reader,
//! disk full, I/O error) rolls the batch back and retries it with backoff; rows are only lost
//! when the store is stopping and the disk keeps refusing them, or when SQLite refuses a row
//! outright (both counted in [`Store::rows_failed`] and logged).
//!
//! [`StoreWriter::close`] stops the writer even while `Store` clones are still alive: it commits
//! everything already queued, checkpoints the WAL and joins the thread.
//!
//! This module never blocks the request path, never logs row contents beyond ids and counts,
//! and never decides what a row says (usage, price and outcome come from the caller).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use rusqlite::{Connection, ErrorCode, OpenFlags, Statement, TransactionBehavior, params};

use crate::calendar::DayCache;
use crate::usage::{Usage, UsageSource};

pub mod accounts;
pub mod audit;
pub mod reads;
pub use audit::{AuditEntry, AuditRow, audit_page, write_audit};

/// The schema, applied at every start. Idempotent.
pub const SCHEMA_SQL: &str = include_str!("../schema.sql");

/// `PRAGMA user_version` written by [`SCHEMA_SQL`]. A file with a newer version was written by a
/// newer Tollgate and is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// One call, as recorded in `token_usage`.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRow {
    pub request_id: String,
    /// Unix milliseconds, UTC, when the call was admitted.
    pub ts_ms: i64,
    pub user_id: Arc<str>,
    /// Claims that fill the user's row on first sight.
    pub user_email: Option<String>,
    pub user_name: Option<String>,
    pub provider: Arc<str>,
    pub model: Option<String>,
    pub endpoint: &'static str,
    pub streamed: bool,
    /// HTTP status the client received.
    pub status: u16,
    pub usage: Usage,
    pub cost_nano_usd: Option<i64>,
    pub usage_source: UsageSource,
    pub latency_ms: u64,
    /// Time to the upstream's response head, when there was one.
    pub ttfb_ms: Option<u64>,
    /// How the call ended: `complete`, `client_gone`, `upstream_error`, `timeout`, …
    pub outcome: &'static str,
}

/// Store failures at start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Other(String),
}

/// How the store runs. [`Store::open`] takes the two figures gateway.toml sets; the rest has
/// defaults that tests may shorten.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Rows that may wait for the writer before [`Store::record`] starts dropping them.
    pub queue_capacity: usize,
    /// Most rows committed in one transaction.
    pub batch_max: usize,
    /// How long one SQLite call waits for a lock held by another connection before it fails
    /// with `SQLITE_BUSY` (which the writer then retries).
    pub busy_timeout: Duration,
    /// Longest pause between two retries of a failing batch.
    pub max_backoff: Duration,
    /// Retries of a failing batch once the store is stopping, after which its rows are given
    /// up (and logged as lost). While running, the writer retries without limit.
    pub retries_when_stopping: u32,
    /// After the first row of a batch, how long the writer keeps collecting rows before it
    /// commits. Every commit costs an fsync (`synchronous=FULL`) and a rollup upsert per key,
    /// so a few milliseconds of patience turn many tiny transactions into a few large ones.
    /// Nobody waits for it: the request path has already moved on.
    pub linger: Duration,
    /// Told about every batch the writer has written (committed or given up), on the writer's
    /// thread, off the request path: how `metrics` counts calls.
    pub observer: Option<Arc<dyn RowObserver>>,
}

/// Sees each batch of usage rows once the writer is done with it (see
/// [`StoreOptions::observer`]). Runs on the writer thread: keep it cheap and never block.
pub trait RowObserver: Send + Sync + fmt::Debug + 'static {
    fn rows_written(&self, rows: &[UsageRow]);
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            queue_capacity: 65_536,
            batch_max: 4_096,
            busy_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            retries_when_stopping: 8,
            linger: Duration::from_millis(50),
            observer: None,
        }
    }
}

/// A cheap, cloneable handle for recording rows.
#[derive(Clone)]
pub struct Store {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

/// The writer thread; `close` flushes every queued row and joins it.
pub struct StoreWriter {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

enum Msg {
    /// Boxed so the channel's preallocated slots stay small (16 bytes, not a whole row).
    Row(Box<UsageRow>),
    /// Sent by [`StoreWriter::close`]: commit what is queued and exit.
    Stop,
}

/// Counters shared by the handles and the writer.
struct Shared {
    /// Rows handed to the writer and not yet committed (or given up).
    pending: AtomicUsize,
    dropped: AtomicU64,
    failed: AtomicU64,
    committed: AtomicU64,
    /// Set once the writer has been told to stop; later rows are refused.
    closing: AtomicBool,
    /// Rate limit for the "queue full" error: ms since `started` of the last report.
    last_drop_report_ms: AtomicU64,
    dropped_at_last_report: AtomicU64,
    started: Instant,
}

/// At most one "rows dropped" error per this many milliseconds.
const DROP_REPORT_INTERVAL_MS: u64 = 10_000;

impl Store {
    /// Open (or create) the database at `path`, apply the schema, and start the writer thread.
    /// `tz` is `limits.timezone`, which decides the calendar day of each rollup.
    pub fn open(
        path: &Path,
        tz: jiff::tz::TimeZone,
        queue_capacity: usize,
        batch_max: usize,
    ) -> Result<(Store, StoreWriter), StoreError> {
        let options = StoreOptions {
            queue_capacity,
            batch_max,
            ..StoreOptions::default()
        };
        Store::open_with(path, tz, options)
    }

    /// [`Store::open`] with every option.
    pub fn open_with(
        path: &Path,
        tz: TimeZone,
        options: StoreOptions,
    ) -> Result<(Store, StoreWriter), StoreError> {
        let conn = open_writer_connection(path, options.busy_timeout)?;
        let (tx, rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            last_drop_report_ms: AtomicU64::new(0),
            dropped_at_last_report: AtomicU64::new(0),
            started: Instant::now(),
        });
        let writer = Writer {
            conn,
            rx,
            shared: Arc::clone(&shared),
            days: DayCache::new(tz),
            batch_max: options.batch_max.max(1),
            max_backoff: options.max_backoff,
            retries_when_stopping: options.retries_when_stopping,
            linger: options.linger,
            observer: options.observer,
        };
        let thread = std::thread::Builder::new()
            .name("tollgate-store".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Other(format!("cannot start the store writer thread: {e}")))?;
        let store = Store {
            tx: tx.clone(),
            shared: Arc::clone(&shared),
        };
        Ok((
            store,
            StoreWriter {
                tx,
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Queue a row; never blocks. Returns false (and counts a drop) when the queue is full or the
    /// store is closing.
    pub fn record(&self, row: UsageRow) -> bool {
        if self.shared.closing.load(Ordering::Acquire) {
            self.count_drop("closing");
            return false;
        }
        // Count before sending so the writer's decrement can never run first.
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Row(Box::new(row))) {
            Ok(()) => true,
            Err(e) => {
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                self.count_drop(match e {
                    TrySendError::Full(_) => "queue full",
                    TrySendError::Disconnected(_) => "writer stopped",
                });
                false
            }
        }
    }

    /// Rows handed over and not yet committed (queued or in the batch being written).
    pub fn queue_depth(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Rows refused by [`Store::record`] since start.
    pub fn rows_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Rows accepted but never committed: a batch the disk kept refusing while stopping, or a
    /// row SQLite refused outright.
    pub fn rows_failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Rows committed since start.
    pub fn rows_committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Relaxed)
    }

    fn count_drop(&self, why: &'static str) {
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.shared.last_drop_report_ms.load(Ordering::Relaxed);
        let first_ever = total == 1;
        if (first_ever || now_ms.saturating_sub(last) >= DROP_REPORT_INTERVAL_MS)
            && self
                .shared
                .last_drop_report_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = self
                .shared
                .dropped_at_last_report
                .swap(total, Ordering::Relaxed);
            tracing::error!(
                reason = why,
                dropped_since_last_report = total - before,
                dropped_total = total,
                queue_depth = self.queue_depth(),
                "usage rows dropped: the store queue is full or the store is closing"
            );
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("queue_depth", &self.queue_depth())
            .field("rows_dropped", &self.rows_dropped())
            .finish_non_exhaustive()
    }
}

impl StoreWriter {
    /// Stop accepting rows, commit every row already queued, checkpoint the WAL, and join the
    /// writer. Works while `Store` clones are still alive: rows they record afterwards are
    /// refused and counted as dropped.
    pub fn close(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.closing.store(true, Ordering::Release);
        // Blocks while the queue is full, which is fine: the writer is draining it. Fails only
        // if the writer is already gone.
        let _ = self.tx.send(Msg::Stop);
        if thread.join().is_err() {
            tracing::error!("the store writer thread panicked");
        }
    }
}

impl Drop for StoreWriter {
    /// Dropping the writer without `close` still flushes: a `?` on the way out of `main` must
    /// not lose rows.
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreWriter")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

// === the writer thread ===

struct Writer {
    conn: Connection,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    days: DayCache,
    batch_max: usize,
    max_backoff: Duration,
    retries_when_stopping: u32,
    linger: Duration,
    observer: Option<Arc<dyn RowObserver>>,
}

/// Rows per multi-row INSERT; the remainder goes one row at a time.
const INSERT_CHUNK: usize = 64;
const TOKEN_USAGE_COLUMNS: usize = 18;

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<UsageRow> = Vec::with_capacity(self.batch_max);
        let mut stopping = false;
        loop {
            if !stopping {
                // Block for the first row. All senders gone means nobody can record any more.
                match self.rx.recv() {
                    Ok(Msg::Row(row)) => batch.push(*row),
                    Ok(Msg::Stop) | Err(_) => stopping = true,
                }
            }
            // Let the batch fill without being woken for each row (a blocked receiver costs
            // every sender a futex wake), then take what came.
            let backlog = self.shared.pending.load(Ordering::Relaxed);
            if !stopping && !self.linger.is_zero() && backlog < self.batch_max {
                std::thread::sleep(self.linger);
            }
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(Msg::Row(row)) => batch.push(*row),
                    Ok(Msg::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                if stopping {
                    break;
                }
                continue;
            }
            self.commit_with_retry(&batch, stopping);
            if let Some(observer) = &self.observer {
                observer.rows_written(&batch);
            }
            self.shared
                .pending
                .fetch_sub(batch.len(), Ordering::Relaxed);
            batch.clear();
        }
        // The queue was just seen empty: disconnect at once, so that a row recorded by a handle
        // that got past the `closing` check an instant ago is refused (and counted) rather than
        // left in a queue nobody reads.
        drop(self.rx);
        // Leave a small WAL behind; a busy reader only makes this partial, which is harmless.
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "store: WAL checkpoint at close failed");
        }
        tracing::debug!(
            committed = self.shared.committed.load(Ordering::Relaxed),
            "store writer stopped"
        );
    }

    /// Commit `batch`, retrying transient failures with backoff: forever while running, a few
    /// times when stopping. A permanent failure is retried row by row so one bad row cannot
    /// take its batch down with it.
    fn commit_with_retry(&mut self, batch: &[UsageRow], stopping: bool) {
        let mut backoff = Duration::from_millis(10);
        let mut attempt: u32 = 0;
        loop {
            let error = match write_batch(&mut self.conn, &mut self.days, batch) {
                Ok(()) => {
                    self.shared
                        .committed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if attempt > 0 {
                        tracing::info!(
                            rows = batch.len(),
                            attempts = attempt + 1,
                            "store: batch committed after retrying"
                        );
                    }
                    return;
                }
                Err(e) => e,
            };
            attempt += 1;
            if !is_transient(&error) {
                if batch.len() > 1 {
                    tracing::error!(error = %error, rows = batch.len(), "store: batch refused; writing its rows one by one");
                    for row in batch {
                        self.commit_with_retry(std::slice::from_ref(row), stopping);
                    }
                } else {
                    self.give_up(batch, &error);
                }
                return;
            }
            let stopping = stopping || self.shared.closing.load(Ordering::Acquire);
            if stopping && attempt > self.retries_when_stopping {
                self.give_up(batch, &error);
                return;
            }
            tracing::warn!(
                error = %error,
                rows = batch.len(),
                attempt,
                retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                "store: batch not committed; retrying"
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    fn give_up(&self, batch: &[UsageRow], error: &rusqlite::Error) {
        self.shared
            .failed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let first = batch
            .first()
            .map(|r| r.request_id.as_str())
            .unwrap_or_default();
        tracing::error!(error = %error, rows = batch.len(), first_request_id = first, "store: usage rows lost");
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

/// One transaction: the rows, the users they name, the rollups they add to.
fn write_batch(
    conn: &mut Connection,
    days: &mut DayCache,
    batch: &[UsageRow],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_rows(&tx, batch)?;
    upsert_users(&tx, batch)?;
    upsert_rollups(&tx, days, batch)?;
    tx.commit()
}

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
         usage_source, latency_ms, ttfb_ms, outcome) VALUES ",
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
        stmt.raw_bind_parameter(base + 18, row.outcome)?;
    }
    Ok(())
}

/// SQLite integers are i64; a count past i64::MAX is stored as i64::MAX rather than refused.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One upsert per distinct user in the batch: create on first sight with the first email and
/// name seen, never overwrite ones already stored, move `last_seen_at` forward only.
fn upsert_users(conn: &Connection, batch: &[UsageRow]) -> rusqlite::Result<()> {
    struct Seen<'a> {
        email: Option<&'a str>,
        name: Option<&'a str>,
        first_ms: i64,
        last_ms: i64,
    }
    let mut users: HashMap<&str, Seen<'_>> = HashMap::new();
    for row in batch {
        match users.entry(&row.user_id) {
            Entry::Vacant(v) => {
                v.insert(Seen {
                    email: row.user_email.as_deref(),
                    name: row.user_name.as_deref(),
                    first_ms: row.ts_ms,
                    last_ms: row.ts_ms,
                });
            }
            Entry::Occupied(mut o) => {
                let seen = o.get_mut();
                seen.email = seen.email.or(row.user_email.as_deref());
                seen.name = seen.name.or(row.user_name.as_deref());
                seen.first_ms = seen.first_ms.min(row.ts_ms);
                seen.last_ms = seen.last_ms.max(row.ts_ms);
            }
        }
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO users (id, email, name, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (id) DO UPDATE SET \
           email = COALESCE(users.email, excluded.email), \
           name = COALESCE(users.name, excluded.name), \
           last_seen_at = max(COALESCE(users.last_seen_at, excluded.last_seen_at), excluded.last_seen_at)",
    )?;
    for (id, seen) in users {
        stmt.execute(params![
            id,
            seen.email,
            seen.name,
            seen.first_ms,
            seen.last_ms
        ])?;
    }
    Ok(())
}

#[derive(Default)]
struct Rollup {
    calls: i64,
    errors: i64,
    input_tokens: i64,
    cached_input_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    total_tokens: i64,
    cost_nano_usd: i64,
    estimated_calls: i64,
    unpriced_calls: i64,
    latency_ms_sum: i64,
}

impl Rollup {
    fn add(&mut self, row: &UsageRow) {
        let u = &row.usage;
        self.calls += 1;
        self.errors += i64::from(row.status >= 400);
        self.input_tokens = self.input_tokens.saturating_add(int(u.input_tokens));
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(int(u.cached_input_tokens));
        self.output_tokens = self.output_tokens.saturating_add(int(u.output_tokens));
        self.reasoning_tokens = self
            .reasoning_tokens
            .saturating_add(int(u.reasoning_tokens));
        self.total_tokens = self.total_tokens.saturating_add(int(u.total()));
        match row.cost_nano_usd {
            Some(cost) => self.cost_nano_usd = self.cost_nano_usd.saturating_add(cost),
            None => self.unpriced_calls += 1,
        }
        self.estimated_calls += i64::from(row.usage_source == UsageSource::Estimated);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(int(row.latency_ms));
    }
}

/// Sum the batch per (day, user, provider, model, endpoint) in memory, then one upsert per key.
fn upsert_rollups(
    conn: &Connection,
    days: &mut DayCache,
    batch: &[UsageRow],
) -> rusqlite::Result<()> {
    type Key<'a> = (Arc<str>, &'a str, &'a str, &'a str, &'a str);
    let mut sums: HashMap<Key<'_>, Rollup> = HashMap::new();
    for row in batch {
        let key = (
            days.day(row.ts_ms),
            &*row.user_id,
            &*row.provider,
            row.model.as_deref().unwrap_or(""),
            row.endpoint,
        );
        sums.entry(key).or_default().add(row);
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO usage_daily (day, user_id, provider, model, endpoint, calls, errors, input_tokens, \
           cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, estimated_calls, \
           unpriced_calls, latency_ms_sum) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
         ON CONFLICT (day, user_id, provider, model, endpoint) DO UPDATE SET \
           calls = calls + excluded.calls, \
           errors = errors + excluded.errors, \
           input_tokens = input_tokens + excluded.input_tokens, \
           cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens, \
           output_tokens = output_tokens + excluded.output_tokens, \
           reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
           total_tokens = total_tokens + excluded.total_tokens, \
           cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd, \
           estimated_calls = estimated_calls + excluded.estimated_calls, \
           unpriced_calls = unpriced_calls + excluded.unpriced_calls, \
           latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum",
    )?;
    for ((day, user, provider, model, endpoint), r) in &sums {
        stmt.execute(params![
            &**day,
            user,
            provider,
            model,
            endpoint,
            r.calls,
            r.errors,
            r.input_tokens,
            r.cached_input_tokens,
            r.output_tokens,
            r.reasoning_tokens,
            r.total_tokens,
            r.cost_nano_usd,
            r.estimated_calls,
            r.unpriced_calls,
            r.latency_ms_sum,
        ])?;
    }
    Ok(())
}

// === reads, on connections of their own ===

pub use crate::calendar::{local_day, month_start};

/// Open a read-only connection for queries (admin API, seeding the quota counters, tests).
/// It never blocks the writer: in WAL mode readers and the writer proceed concurrently.
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

/// A user's usage summed over a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserTotals {
    /// input + output tokens, the figure limits count.
    pub tokens: i64,
    /// Priced calls only.
    pub cost_nano_usd: i64,
    pub calls: i64,
}

/// Per-user totals from the rollups for every day `>= since_day` (`YYYY-MM-DD`): today's with
/// today's day, the month's with [`month_start`]. Users without usage are absent.
pub fn totals_since(
    conn: &Connection,
    since_day: &str,
) -> rusqlite::Result<HashMap<String, UserTotals>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, SUM(total_tokens), SUM(cost_nano_usd), SUM(calls) \
         FROM usage_daily WHERE day >= ?1 GROUP BY user_id",
    )?;
    let rows = stmt.query_map([since_day], |r| {
        Ok((
            r.get::<_, String>(0)?,
            UserTotals {
                tokens: r.get(1)?,
                cost_nano_usd: r.get(2)?,
                calls: r.get(3)?,
            },
        ))
    })?;
    rows.collect()
}

// === opening ===

fn open_writer_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
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

/// Open a writing connection on the store file outside the writer thread (the admin side, the
/// `tollgate admin` commands): WAL, `synchronous = FULL`, the schema applied. Writes on it wait
/// up to 5 s for the writer's lock.
pub fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    open_writer_connection(path, Duration::from_secs(5))
}

/// Apply [`SCHEMA_SQL`] (idempotent), refusing a file written by a newer schema.
pub fn apply_schema(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Other(format!(
            "the database has schema version {version}, newer than this Tollgate's {SCHEMA_VERSION}; \
             run a newer Tollgate or restore a copy"
        )));
    }
    conn.execute_batch(SCHEMA_SQL)?;
    Ok(())
}

// === users: the operator's controls (block, per-user limits) and the quota seed ===
//
// The admin side changes a user's row inside a transaction the caller owns, so that its audit
// row commits (or rolls back) with the change; each function returns the row's controls before
// and after. `quota::Ledger` applies the `after` to its in-memory counters once committed, and
// reads everything back at start through `load_quota_seed`.

/// A user's own limits, set by an operator. `None` = the `[limits]` default from gateway.toml.
/// Stored in the `users` columns of the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserOverrides {
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub daily_cost_nano_usd: Option<u64>,
    pub monthly_cost_nano_usd: Option<u64>,
    pub requests_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
}

impl UserOverrides {
    /// Whether no limit is overridden.
    pub fn is_empty(&self) -> bool {
        *self == UserOverrides::default()
    }
}

/// A change to some of a user's overrides: for each field, `None` leaves it as it is,
/// `Some(None)` clears it (back to the default) and `Some(Some(v))` sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverridesPatch {
    pub daily_tokens: Option<Option<u64>>,
    pub monthly_tokens: Option<Option<u64>>,
    pub daily_cost_nano_usd: Option<Option<u64>>,
    pub monthly_cost_nano_usd: Option<Option<u64>>,
    pub requests_per_minute: Option<Option<u32>>,
    pub max_concurrent: Option<Option<u32>>,
}

impl OverridesPatch {
    /// `current` with this patch applied.
    pub fn apply(&self, current: &UserOverrides) -> UserOverrides {
        UserOverrides {
            daily_tokens: self.daily_tokens.unwrap_or(current.daily_tokens),
            monthly_tokens: self.monthly_tokens.unwrap_or(current.monthly_tokens),
            daily_cost_nano_usd: self
                .daily_cost_nano_usd
                .unwrap_or(current.daily_cost_nano_usd),
            monthly_cost_nano_usd: self
                .monthly_cost_nano_usd
                .unwrap_or(current.monthly_cost_nano_usd),
            requests_per_minute: self
                .requests_per_minute
                .unwrap_or(current.requests_per_minute),
            max_concurrent: self.max_concurrent.unwrap_or(current.max_concurrent),
        }
    }
}

/// The operator-owned columns of a `users` row. A user without a row has the default (not
/// blocked, no overrides).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserControls {
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    pub overrides: UserOverrides,
}

impl UserControls {
    /// Whether these are the defaults (nothing for the quota ledger to remember).
    pub fn is_default(&self) -> bool {
        !self.blocked && self.blocked_reason.is_none() && self.overrides.is_empty()
    }
}

/// What an admin operation did to a user's row, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change<T> {
    pub before: T,
    pub after: T,
    /// The row did not exist and was created (`before` is then the default).
    pub created: bool,
}

pub(crate) const CONTROL_COLUMNS: &str = "blocked, blocked_reason, daily_tokens, monthly_tokens, \
     daily_cost_nano_usd, monthly_cost_nano_usd, requests_per_minute, max_concurrent";

/// Read [`CONTROL_COLUMNS`] starting at column `at`. Values an operator could only have put there
/// by hand are read leniently: a negative limit as 0, a rate or cap past `u32` as `u32::MAX`.
pub(crate) fn controls_from_row(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<UserControls> {
    let count = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(row
            .get::<_, Option<i64>>(at + i)?
            .map(|v| u64::try_from(v).unwrap_or(0)))
    };
    let small = |i: usize| -> rusqlite::Result<Option<u32>> {
        Ok(row
            .get::<_, Option<i64>>(at + i)?
            .map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX)))
    };
    Ok(UserControls {
        blocked: row.get::<_, i64>(at)? != 0,
        blocked_reason: row.get(at + 1)?,
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

/// A user's controls, `None` when the user has no row.
pub fn user_controls(conn: &Connection, user: &str) -> rusqlite::Result<Option<UserControls>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CONTROL_COLUMNS} FROM users WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([user])?;
    match rows.next()? {
        Some(row) => controls_from_row(row, 0).map(Some),
        None => Ok(None),
    }
}

/// The controls before a change, creating the row (with `created_at = now_ms`) when missing.
fn controls_for_change(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    now_ms: i64,
) -> rusqlite::Result<(UserControls, bool)> {
    if let Some(before) = user_controls(tx, user)? {
        return Ok((before, false));
    }
    tx.prepare_cached("INSERT INTO users (id, created_at) VALUES (?1, ?2)")?
        .execute(params![user, now_ms])?;
    Ok((UserControls::default(), true))
}

/// A limit as an SQLite integer; one past `i64::MAX` cannot be stored and is refused.
fn limit_sql(value: Option<u64>) -> rusqlite::Result<Option<i64>> {
    value
        .map(|v| i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
        .transpose()
}

/// Block (`blocked = true`, with an optional reason) or unblock (the reason is cleared) `user`,
/// creating their row if they never called. Runs in the caller's transaction, so the caller can
/// add its audit row before committing.
pub fn set_user_blocked(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    blocked: bool,
    reason: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<Change<UserControls>> {
    let (before, created) = controls_for_change(tx, user, now_ms)?;
    let reason = if blocked { reason } else { None };
    tx.prepare_cached("UPDATE users SET blocked = ?2, blocked_reason = ?3 WHERE id = ?1")?
        .execute(params![user, blocked, reason])?;
    let after = user_controls(tx, user)?.unwrap_or_default();
    Ok(Change {
        before,
        after,
        created,
    })
}

/// Set or clear some of `user`'s overrides (see [`OverridesPatch`]), creating their row if they
/// never called. Runs in the caller's transaction. A value past `i64::MAX` is refused
/// (`ToSqlConversionFailure`) and nothing is written.
pub fn set_user_overrides(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    patch: &OverridesPatch,
    now_ms: i64,
) -> rusqlite::Result<Change<UserControls>> {
    let (before, created) = controls_for_change(tx, user, now_ms)?;
    let next = patch.apply(&before.overrides);
    tx.prepare_cached(
        "UPDATE users SET daily_tokens = ?2, monthly_tokens = ?3, daily_cost_nano_usd = ?4, \
         monthly_cost_nano_usd = ?5, requests_per_minute = ?6, max_concurrent = ?7 WHERE id = ?1",
    )?
    .execute(params![
        user,
        limit_sql(next.daily_tokens)?,
        limit_sql(next.monthly_tokens)?,
        limit_sql(next.daily_cost_nano_usd)?,
        limit_sql(next.monthly_cost_nano_usd)?,
        next.requests_per_minute,
        next.max_concurrent,
    ])?;
    let after = user_controls(tx, user)?.unwrap_or_default();
    Ok(Change {
        before,
        after,
        created,
    })
}

/// One user as the quota ledger starts with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedUser {
    pub controls: UserControls,
    /// Usage of the seed's `day`.
    pub day: UserTotals,
    /// Usage from the seed's `month_start` on.
    pub month: UserTotals,
}

/// What the quota ledger needs at start: every user with controls set or usage this month.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaSeed {
    /// The local day (`YYYY-MM-DD`) the `day` totals are for.
    pub day: String,
    /// The first day of the month (`YYYY-MM-01`) the `month` totals start at.
    pub month_start: String,
    pub users: std::collections::BTreeMap<String, SeedUser>,
}

/// Load the [`QuotaSeed`] for `today` and the month starting `month_start` (both in
/// `limits.timezone`, from [`local_day`] and [`month_start`]): the controls of every user who
/// has any, and the usage totals from the daily rollups. Users with neither are left out.
pub fn load_quota_seed(
    conn: &Connection,
    today: &str,
    month_start: &str,
) -> rusqlite::Result<QuotaSeed> {
    let mut users = std::collections::BTreeMap::<String, SeedUser>::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT id, {CONTROL_COLUMNS} FROM users WHERE blocked != 0 OR blocked_reason IS NOT NULL \
         OR daily_tokens IS NOT NULL OR monthly_tokens IS NOT NULL \
         OR daily_cost_nano_usd IS NOT NULL OR monthly_cost_nano_usd IS NOT NULL \
         OR requests_per_minute IS NOT NULL OR max_concurrent IS NOT NULL"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        users.entry(id).or_default().controls = controls_from_row(row, 1)?;
    }
    for (id, totals) in totals_since(conn, month_start)? {
        users.entry(id).or_default().month = totals;
    }
    for (id, totals) in totals_since(conn, today)? {
        users.entry(id).or_default().day = totals;
    }
    Ok(QuotaSeed {
        day: today.to_string(),
        month_start: month_start.to_string(),
        users,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
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
                1 | 2 => UsageSource::Estimated,
                _ => UsageSource::Reported,
            },
            latency_ms: 50 + n % 100,
            ttfb_ms: if n.is_multiple_of(4) {
                None
            } else {
                Some(10 + n % 20)
            },
            outcome: "complete",
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

    fn options(queue_capacity: usize, batch_max: usize) -> StoreOptions {
        StoreOptions {
            queue_capacity,
            batch_max,
            busy_timeout: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            ..StoreOptions::default()
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
            outcome: "complete",
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
            outcome: "refused",
        };
        let (store, writer) = Store::open(&db.path, TimeZone::UTC, 16, 16).unwrap();
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
                (0, 0, 0, None, "none".into(), 0, None, "refused".into())
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
                i64::from(r.usage_source == UsageSource::Estimated),
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
        let (store, writer) = Store::open_with(&db.path, tz.clone(), options(10_000, 37)).unwrap();
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

        let today = totals_since(&conn, "2026-10-25").unwrap();
        let month = totals_since(&conn, &month_start("2026-10-25")).unwrap();
        let alice_today: i64 = rows
            .iter()
            .filter(|r| &*r.user_id == "alice" && local_day(r.ts_ms, &tz) == "2026-10-25")
            .map(|r| int(r.usage.total()))
            .sum();
        assert_eq!(today["alice"].tokens, alice_today);
        let alice_month: i64 = rows
            .iter()
            .filter(|r| &*r.user_id == "alice")
            .map(|r| int(r.usage.total()))
            .sum();
        assert_eq!(month["alice"].tokens, alice_month);
        assert_eq!(month.values().map(|t| t.calls).sum::<i64>(), 2_000);
        assert!(totals_since(&conn, "2026-10-26").unwrap().is_empty());
    }

    #[test]
    fn local_day_follows_the_zone_not_utc() {
        let tz = berlin();
        assert_eq!(local_day(ms("2026-03-28T22:59:59.999Z"), &tz), "2026-03-28");
        assert_eq!(local_day(ms("2026-03-28T23:00:00Z"), &tz), "2026-03-29");
        assert_eq!(
            local_day(ms("2026-03-28T23:00:00Z"), &TimeZone::UTC),
            "2026-03-28"
        );
        let mut cache = DayCache::new(tz.clone());
        for t in [
            "2026-03-28T22:59:59.999Z",
            "2026-03-28T23:00:00Z",
            "2026-03-29T21:59:59.999Z",
            "2026-03-29T22:00:00Z",
        ] {
            assert_eq!(&*cache.day(ms(t)), local_day(ms(t), &tz), "{t}");
        }
        assert_eq!(month_start("2026-03-29"), "2026-03-01");
    }

    #[test]
    fn user_upsert_keeps_the_first_email_and_moves_last_seen_forward() {
        let db = db();
        let (store, writer) = Store::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
        let mut first = row(1, "dora", 2_000);
        first.user_email = None;
        store.record(first);
        let mut second = row(2, "dora", 3_000);
        second.user_email = Some("first@example.com".into());
        second.user_name = Some("Dora".into());
        store.record(second);
        writer.close();
        let (store, writer) = Store::open_with(&db.path, TimeZone::UTC, options(100, 100)).unwrap();
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
    fn close_commits_every_queued_row() {
        let db = db();
        let (store, writer) =
            Store::open_with(&db.path, TimeZone::UTC, options(60_000, 4_096)).unwrap();
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
    fn dropping_the_writer_flushes_like_close() {
        let db = db();
        let (store, writer) =
            Store::open_with(&db.path, TimeZone::UTC, options(1_000, 10)).unwrap();
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
        let (store, writer) = Store::open_with(&db.path, TimeZone::UTC, options(4, 2)).unwrap();
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
        let (store, writer) = Store::open_with(&db.path, TimeZone::UTC, opts).unwrap();
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
    fn schema_applies_twice_and_refuses_a_newer_version() {
        let db = db();
        for _ in 0..2 {
            let (store, writer) = Store::open(&db.path, TimeZone::UTC, 8, 8).unwrap();
            store.record(row(1, "ivy", 1_000));
            writer.close();
        }
        let conn = Connection::open(&db.path).unwrap();
        apply_schema(&conn).unwrap();
        apply_schema(&conn).unwrap();
        assert_eq!(count(&conn, "PRAGMA user_version"), SCHEMA_VERSION);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM token_usage"), 2);
        assert_eq!(count(&conn, "SELECT calls FROM usage_daily"), 2);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "WAL mode persists in the file");
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = Store::open(&db.path, TimeZone::UTC, 8, 8).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn a_reader_reads_while_the_writer_writes() {
        let db = db();
        let (store, writer) =
            Store::open_with(&db.path, TimeZone::UTC, options(30_000, 256)).unwrap();
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
            let (store, writer) = Store::open(
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

#[cfg(test)]
mod user_control_tests {
    //! The operator's controls on `users` and the quota seed, on a temp SQLite file.

    use std::path::PathBuf;

    use super::*;

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn db() -> (Db, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.db");
        let conn = Connection::open(&path).unwrap();
        apply_schema(&conn).unwrap();
        (Db { _dir: dir, path }, conn)
    }

    fn in_tx<T>(
        conn: &mut Connection,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn usage_row(n: u64, user: &str, ts_ms: i64, tokens: u64) -> UsageRow {
        UsageRow {
            request_id: format!("req-{n}"),
            ts_ms,
            user_id: Arc::from(user),
            user_email: Some(format!("{user}@example.com")),
            user_name: None,
            provider: Arc::from("openai"),
            model: Some("gpt-4o".into()),
            endpoint: "chat.completions",
            streamed: false,
            status: 200,
            usage: Usage {
                input_tokens: tokens,
                cached_input_tokens: 0,
                output_tokens: 0,
                reasoning_tokens: 0,
            },
            cost_nano_usd: Some(i64::try_from(tokens).unwrap() * 10),
            usage_source: UsageSource::Reported,
            latency_ms: 5,
            ttfb_ms: None,
            outcome: "complete",
        }
    }

    fn created_at(conn: &Connection, user: &str) -> i64 {
        conn.query_row("SELECT created_at FROM users WHERE id = ?1", [user], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[test]
    fn blocking_a_user_never_seen_creates_their_row_and_reports_before_and_after() {
        let (_db, mut conn) = db();
        let change = in_tx(&mut conn, |tx| {
            set_user_blocked(tx, "ann", true, Some("spam"), 1_000)
        })
        .unwrap();
        assert!(change.created);
        assert_eq!(change.before, UserControls::default());
        assert_eq!(
            change.after,
            UserControls {
                blocked: true,
                blocked_reason: Some("spam".into()),
                overrides: UserOverrides::default(),
            }
        );
        assert_eq!(created_at(&conn, "ann"), 1_000);
        assert_eq!(user_controls(&conn, "ann").unwrap(), Some(change.after));
        assert_eq!(user_controls(&conn, "nobody").unwrap(), None);
    }

    #[test]
    fn blocking_again_replaces_the_reason_and_unblocking_clears_it() {
        let (_db, mut conn) = db();
        in_tx(&mut conn, |tx| {
            set_user_blocked(tx, "bo", true, Some("first"), 1)
        })
        .unwrap();
        let again = in_tx(&mut conn, |tx| set_user_blocked(tx, "bo", true, None, 2)).unwrap();
        assert!(!again.created);
        assert_eq!(again.before.blocked_reason.as_deref(), Some("first"));
        assert_eq!(again.after.blocked_reason, None);
        in_tx(&mut conn, |tx| {
            set_user_blocked(tx, "bo", true, Some("third"), 3)
        })
        .unwrap();
        let unblocked = in_tx(&mut conn, |tx| {
            set_user_blocked(tx, "bo", false, Some("ignored"), 4)
        })
        .unwrap();
        assert!(unblocked.before.blocked);
        assert_eq!(unblocked.after, UserControls::default());
        assert_eq!(created_at(&conn, "bo"), 1, "created once");
    }

    #[test]
    fn an_overrides_patch_sets_clears_and_leaves_each_field() {
        let (_db, mut conn) = db();
        let first = in_tx(&mut conn, |tx| {
            set_user_overrides(
                tx,
                "cy",
                &OverridesPatch {
                    daily_tokens: Some(Some(5_000)),
                    monthly_tokens: Some(Some(0)),
                    daily_cost_nano_usd: Some(Some(2_000_000_000)),
                    requests_per_minute: Some(Some(10)),
                    max_concurrent: Some(Some(2)),
                    ..OverridesPatch::default()
                },
                10,
            )
        })
        .unwrap();
        assert!(first.created);
        assert_eq!(
            first.after.overrides,
            UserOverrides {
                daily_tokens: Some(5_000),
                monthly_tokens: Some(0),
                daily_cost_nano_usd: Some(2_000_000_000),
                monthly_cost_nano_usd: None,
                requests_per_minute: Some(10),
                max_concurrent: Some(2),
            }
        );
        let second = in_tx(&mut conn, |tx| {
            set_user_overrides(
                tx,
                "cy",
                &OverridesPatch {
                    daily_tokens: Some(None),
                    monthly_cost_nano_usd: Some(Some(7)),
                    ..OverridesPatch::default()
                },
                20,
            )
        })
        .unwrap();
        assert_eq!(second.before, first.after);
        assert_eq!(
            second.after.overrides,
            UserOverrides {
                daily_tokens: None,
                monthly_cost_nano_usd: Some(7),
                ..first.after.overrides
            }
        );
        let stored: (Option<i64>, i64) = conn
            .query_row(
                "SELECT daily_tokens, monthly_cost_nano_usd FROM users WHERE id = 'cy'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(stored, (None, 7), "a cleared override is NULL");
    }

    #[test]
    fn a_change_rolled_back_leaves_nothing_and_an_unstorable_limit_writes_nothing() {
        let (_db, mut conn) = db();
        {
            let tx = conn.transaction().unwrap();
            set_user_blocked(&tx, "di", true, Some("x"), 1).unwrap();
            tx.rollback().unwrap();
        }
        assert_eq!(user_controls(&conn, "di").unwrap(), None);

        in_tx(&mut conn, |tx| set_user_blocked(tx, "di", true, None, 1)).unwrap();
        let err = in_tx(&mut conn, |tx| {
            set_user_overrides(
                tx,
                "di",
                &OverridesPatch {
                    daily_tokens: Some(Some(1)),
                    monthly_tokens: Some(Some(u64::MAX)),
                    ..OverridesPatch::default()
                },
                2,
            )
        })
        .unwrap_err();
        assert!(
            matches!(err, rusqlite::Error::ToSqlConversionFailure(_)),
            "{err}"
        );
        let controls = user_controls(&conn, "di").unwrap().unwrap();
        assert!(controls.overrides.is_empty());
    }

    #[test]
    fn the_writer_keeps_an_operators_controls_when_it_records_the_users_calls() {
        let (db, mut conn) = db();
        in_tx(&mut conn, |tx| {
            set_user_blocked(tx, "ed", true, Some("review"), 100)
        })
        .unwrap();
        let (store, writer) = Store::open(&db.path, TimeZone::UTC, 8, 8).unwrap();
        store.record(usage_row(1, "ed", 5_000, 10));
        writer.close();
        let controls = user_controls(&conn, "ed").unwrap().unwrap();
        assert!(controls.blocked);
        assert_eq!(controls.blocked_reason.as_deref(), Some("review"));
        let email: String = conn
            .query_row("SELECT email FROM users WHERE id = 'ed'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(email, "ed@example.com", "the writer fills in the claims");
        assert_eq!(created_at(&conn, "ed"), 100);
    }

    #[test]
    fn the_quota_seed_holds_every_user_with_controls_or_usage_this_month() {
        let (db, mut conn) = db();
        let day = |d: &str| {
            d.parse::<jiff::civil::Date>()
                .unwrap()
                .at(12, 0, 0, 0)
                .to_zoned_datetime(TimeZone::UTC)
                .unwrap()
                .timestamp()
                .as_millisecond()
        };
        let (store, writer) = Store::open(&db.path, TimeZone::UTC, 64, 64).unwrap();
        store.record(usage_row(1, "fay", day("2025-06-10"), 100));
        store.record(usage_row(2, "fay", day("2025-06-10"), 20));
        store.record(usage_row(3, "fay", day("2025-06-03"), 3));
        store.record(usage_row(4, "fay", day("2025-05-31"), 1_000)); // last month
        store.record(usage_row(5, "gil", day("2025-06-01"), 7));
        store.record(usage_row(6, "old", day("2025-05-20"), 9)); // nothing this month
        writer.close();
        in_tx(&mut conn, |tx| {
            set_user_overrides(
                tx,
                "hal",
                &OverridesPatch {
                    max_concurrent: Some(Some(3)),
                    ..OverridesPatch::default()
                },
                1,
            )
        })
        .unwrap();
        in_tx(&mut conn, |tx| set_user_blocked(tx, "gil", true, None, 1)).unwrap();
        // Hand-edited values are read leniently rather than failing the start.
        conn.execute(
            "INSERT INTO users (id, created_at, daily_tokens, requests_per_minute) \
             VALUES ('ivy', 1, -5, 99999999999)",
            [],
        )
        .unwrap();

        let seed =
            load_quota_seed(&open_reader(&db.path).unwrap(), "2025-06-10", "2025-06-01").unwrap();
        assert_eq!(
            (seed.day.as_str(), seed.month_start.as_str()),
            ("2025-06-10", "2025-06-01")
        );
        let ids: Vec<&str> = seed.users.keys().map(String::as_str).collect();
        assert_eq!(ids, ["fay", "gil", "hal", "ivy"]);
        let fay = &seed.users["fay"];
        assert_eq!((fay.day.tokens, fay.month.tokens), (120, 123));
        assert_eq!(
            (fay.day.cost_nano_usd, fay.month.cost_nano_usd),
            (1_200, 1_230)
        );
        assert!(fay.controls.is_default());
        let gil = &seed.users["gil"];
        assert!(gil.controls.blocked);
        assert_eq!((gil.day.tokens, gil.month.tokens), (0, 7));
        assert_eq!(seed.users["hal"].controls.overrides.max_concurrent, Some(3));
        assert_eq!(seed.users["hal"].month, UserTotals::default());
        let ivy = seed.users["ivy"].controls.overrides;
        assert_eq!(
            (ivy.daily_tokens, ivy.requests_per_minute),
            (Some(0), Some(u32::MAX))
        );
    }
}
