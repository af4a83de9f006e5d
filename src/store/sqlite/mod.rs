//! The SQLite store, the embedded default: one file (`store.path`) in WAL mode.
//!
//! - `writer`: one thread owns the writing connection and commits call rows in batches with
//!   their rollups; the request path only `try_send`s to it, and waits only for a call's
//!   journal entry (`journal`: the `call_journal` table, recovered at start) before forwarding.
//! - `work`: operators' changes with their audit row, one `BEGIN IMMEDIATE` transaction each,
//!   on a writing connection of the admin side's own (its transactions are short).
//! - `reads`: the admin API's queries on a small pool of read-only connections.
//! - `schema`: opening, `schema.sql`, migrations; `repair`: the one-time repair of impossible
//!   figures an older Tollgate could store; `controls`, `accounts`, `audit`: the SQL of users'
//!   controls and the quota seed, admin accounts and sessions, the audit trail.
//!
//! Every figure read from a rollup or a call row goes through [`lenient_int`]: a REAL (which
//! only an older writer could leave) is clamped into the integers instead of failing the read,
//! so no admin page and no start-up fails on the database's own history.
//!
//! Every blocking call runs on tokio's blocking pool ([`SqliteStore`] does it), so the async
//! runtime never waits on the disk. This is the only module of the crate that names `rusqlite`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use tokio::sync::mpsc;

use crate::quota::QuotaSeed;
use crate::store::{
    AdminAccount, AuditRow, CallRow, Committed, ExportQuery, SeriesBy, SeriesPoint, Session, Stats,
    StatsQuery, Store, StoreError, UserUsage, UserUsageQuery, UsersPage, UsersQuery, Work,
    WriterStats,
};

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod backup;
mod checkpoint;
pub mod controls;
pub mod dump;
mod journal;
pub mod reads;
pub mod repair;
pub mod schema;
pub mod work;
pub mod writer;

pub use schema::{SCHEMA_SQL, SCHEMA_VERSION, open_reader};
pub use writer::{Options, Queue, WriterThread};

/// An INTEGER column's value, whatever the file holds: an integer as it is, a REAL clamped into
/// the integers (a NaN is 0), NULL, text and blobs 0. The writer only stores integers; a REAL is
/// what SQLite makes of an integer sum that overflowed, which an older Tollgate could write.
pub(crate) fn lenient_int(value: ValueRef<'_>) -> i64 {
    match value {
        ValueRef::Integer(i) => i,
        // `as` saturates at the integers' bounds and maps NaN to 0.
        #[expect(clippy::cast_possible_truncation, reason = "clamping is the point")]
        ValueRef::Real(f) => f as i64,
        ValueRef::Null | ValueRef::Text(_) | ValueRef::Blob(_) => 0,
    }
}

/// A nullable INTEGER column, read as [`lenient_int`] reads one.
pub(crate) fn lenient_opt_int(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Null => None,
        v => Some(lenient_int(v)),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy(e.to_string())
            }
            _ => StoreError::Backend(format!("sqlite: {e}")),
        }
    }
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    queue: Queue,
    writer: Mutex<Option<WriterThread>>,
    inner: Arc<Inner>,
}

/// What the blocking calls share.
struct Inner {
    path: PathBuf,
    /// `limits.timezone`, for a migration the admin writer's connection would run.
    tz: TimeZone,
    /// Idle read-only connections, opened on demand (at most `MAX_IDLE` kept).
    readers: Mutex<Vec<Connection>>,
    /// The admin side's writing connection, opened on first use; one unit of work at a time.
    admin: Mutex<Option<Connection>>,
}

impl Inner {
    const MAX_IDLE: usize = 4;

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.readers.lock().pop();
        let conn = match conn {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn).map_err(StoreError::from);
        let mut idle = self.readers.lock();
        if idle.len() < Self::MAX_IDLE {
            idle.push(conn);
        }
        result
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.admin.lock();
        if slot.is_none() {
            *slot = Some(schema::open_writer(
                &self.path,
                std::time::Duration::from_secs(5),
                &self.tz,
            )?);
        }
        match slot.as_mut() {
            Some(conn) => f(conn),
            None => Err(StoreError::Backend("no writing connection".into())),
        }
    }
}

impl SqliteStore {
    /// Open (or create) the database at `path`, apply and migrate the schema, and start the
    /// writer thread. `tz` is `limits.timezone`, which decides the calendar day of each rollup.
    pub fn open(
        path: &Path,
        tz: TimeZone,
        options: Options,
    ) -> Result<Arc<SqliteStore>, StoreError> {
        let (queue, writer) = Queue::open_with(path, tz.clone(), options)?;
        Ok(Arc::new(SqliteStore {
            queue,
            writer: Mutex::new(Some(writer)),
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                tz,
                readers: Mutex::new(Vec::new()),
                admin: Mutex::new(None),
            }),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// [`Store::close`] for a caller outside the async runtime: blocks until every queued row
    /// is committed.
    pub fn close_blocking(&self) {
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            writer.close();
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Backend(format!("the store's task failed: {e}")))?
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("writer", &self.queue)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn record(&self, row: crate::store::UsageRow) -> bool {
        self.queue.record(row)
    }

    fn reserve_row(&self) -> Option<crate::store::RowSlot> {
        self.queue.reserve()
    }

    fn record_reserved(&self, slot: crate::store::RowSlot, row: crate::store::UsageRow) -> bool {
        self.queue.record_reserved(slot, row)
    }

    fn journal_id(&self) -> Option<u64> {
        self.queue.journal_id()
    }

    async fn open_call(&self, call: crate::store::OpenCall) -> Result<(), StoreError> {
        self.queue.open_call(call).await
    }

    fn writer_stats(&self) -> WriterStats {
        self.queue.stats()
    }

    async fn close(&self) {
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        }
    }

    async fn quota_seed(&self, today: &str, month_start: &str) -> Result<QuotaSeed, StoreError> {
        let (today, month_start) = (today.to_string(), month_start.to_string());
        self.blocking(move |s| s.read(|c| controls::load_quota_seed(c, &today, &month_start)))
            .await
    }

    async fn commit(&self, work: Work) -> Result<Committed, StoreError> {
        self.blocking(move |s| s.write(|c| work::commit(c, &work)))
            .await
    }

    async fn prune(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut deleted = 0u64;
        loop {
            // One short transaction per batch (the oldest first, by the `ts` index): the
            // writer waits for one batch at most.
            let n = self
                .blocking(move |s| {
                    s.write(|c| {
                        Ok(c.execute(
                            "DELETE FROM token_usage WHERE id IN (SELECT id FROM token_usage \
                             WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
                            rusqlite::params![before_ms, batch],
                        )?)
                    })
                })
                .await?;
            deleted += n as u64;
            if (n as i64) < batch {
                return Ok(deleted);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_string();
        self.blocking(move |s| s.read(|c| accounts::password_hash(c, &name)))
            .await
    }

    async fn session(
        &self,
        token_sha256: &str,
        now_ms: i64,
    ) -> Result<Option<Session>, StoreError> {
        let digest = token_sha256.to_string();
        self.blocking(move |s| s.read(|c| accounts::session(c, &digest, now_ms)))
            .await
    }

    async fn accounts(&self) -> Result<Vec<AdminAccount>, StoreError> {
        self.blocking(|s| s.read(accounts::list_accounts)).await
    }

    async fn users_page(&self, q: UsersQuery) -> Result<UsersPage, StoreError> {
        self.blocking(move |s| s.read(|c| reads::users::users_page(c, &q)))
            .await
    }

    async fn user_usage(&self, q: UserUsageQuery) -> Result<Option<UserUsage>, StoreError> {
        self.blocking(move |s| s.read(|c| reads::user::user_usage(c, &q)))
            .await
    }

    async fn stats(&self, q: StatsQuery) -> Result<Stats, StoreError> {
        self.blocking(move |s| s.read(|c| reads::system::stats(c, &q)))
            .await
    }

    async fn usage_series(
        &self,
        since_day: &str,
        by: SeriesBy,
        user: Option<&str>,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let since = since_day.to_string();
        let user = user.map(str::to_string);
        self.blocking(move |s| {
            s.read(|c| {
                let until = reads::system::latest_possible_day();
                reads::system::usage_series(c, &since, &until, by, user.as_deref())
            })
        })
        .await
    }

    async fn audit_page(
        &self,
        target: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let target = target.map(str::to_string);
        self.blocking(move |s| {
            s.read(|c| audit::audit_page(c, target.as_deref(), before_id, limit))
        })
        .await
    }

    fn export_calls(&self, q: ExportQuery) -> mpsc::Receiver<Result<Vec<CallRow>, StoreError>> {
        /// Rows per message: a few hundred kilobytes of CSV at most.
        const CHUNK: usize = 512;
        let (tx, rx) = mpsc::channel(4);
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            let result = inner.read(|conn| {
                reads::export::for_each_call(conn, q.from_ms, q.to_ms, q.user.as_deref(), |row| {
                    chunk.push(row);
                    if chunk.len() < CHUNK {
                        return true;
                    }
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    // The receiver is gone (the client went away): stop reading.
                    tx.blocking_send(Ok(full)).is_ok()
                })
            });
            let last = match result {
                Ok(_) if chunk.is_empty() => return,
                Ok(_) => Ok(chunk),
                Err(e) => Err(e),
            };
            let _ = tx.blocking_send(last);
        });
        rx
    }

    async fn record_alert(
        &self,
        alert: crate::store::alerts::NewAlert,
    ) -> Result<Option<i64>, StoreError> {
        self.blocking(move |s| s.write(|c| Ok(alerts::record(c, &alert)?)))
            .await
    }

    async fn alert_delivered(
        &self,
        id: i64,
        delivery: crate::store::alerts::Delivery,
        attempts: u32,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.blocking(move |s| {
            s.write(|c| Ok(alerts::delivered(c, id, delivery, attempts, at_ms)?))
        })
        .await
    }

    async fn alerts_page(
        &self,
        before_id: Option<i64>,
        limit: u32,
        since_ms: i64,
    ) -> Result<crate::store::alerts::AlertsPage, StoreError> {
        self.blocking(move |s| s.read(|c| alerts::page(c, before_id, limit, since_ms)))
            .await
    }

    async fn alert_totals(
        &self,
        users: Vec<String>,
        today: &str,
        month_start: &str,
    ) -> Result<crate::store::alerts::AlertTotals, StoreError> {
        let (today, month_start) = (today.to_string(), month_start.to_string());
        self.blocking(move |s| s.read(|c| alerts::totals(c, &users, &today, &month_start)))
            .await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.blocking(|s| {
            s.write(|conn| {
                // Take the write lock and give it back: proves the file is writable right now.
                conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                    .map_err(StoreError::from)
            })
        })
        .await
    }
}
