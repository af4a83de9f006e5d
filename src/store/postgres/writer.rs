//! The PostgreSQL side of the store's writer: the [`Sink`] that writes a batch of call rows to
//! the shared database, and [`open_queue`], which recovers this gateway's call journal and
//! starts the queue's writer thread ([`crate::store::queue`]) on it.
//!
//! The writer thread drives its own connection (not the pool's: the admin side's queries never
//! wait behind a batch, nor a batch behind them) with a current-thread runtime of its own, so
//! the queue's synchronous loop, its batching and its retries are the SQLite store's. When the
//! connection breaks (the database restarted, the network went away) the batch fails as
//! transient, and the next attempt connects again: rows wait in the queue meanwhile, and the
//! calls' journal entries stay open, so a crash in the meantime still records every call.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::calendar::DayCache;
use crate::store::journal::{self, Journal};
use crate::store::queue::{Options, Queue, Sink, WriterThread};
use crate::store::{StoreError, UsageRow};

use super::Settings;
use super::rows::{Month, ensure_partitions, months_of, write_rows};

/// Why a batch did not reach the database.
#[derive(Debug)]
pub enum SinkError {
    /// No connection (it broke, or could not be made): retried.
    Connection(String),
    /// The database refused the batch.
    Db(tokio_postgres::Error),
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkError::Connection(e) => write!(f, "{e}"),
            SinkError::Db(e) => write!(f, "{}", super::describe(e)),
        }
    }
}

/// The writer thread's view of the database.
pub struct PgSink {
    rt: tokio::runtime::Runtime,
    settings: Settings,
    client: Option<tokio_postgres::Client>,
    days: DayCache,
    /// Months whose partition this gateway has made (or found).
    months: BTreeSet<Month>,
    /// `token_usage.gateway` of this replica's rows.
    gateway: String,
    /// When `tollgate_batches` was last pruned of this gateway's old ids.
    pruned: std::time::Instant,
    /// Set while the database cannot be reached, cleared by the next batch written.
    down: Arc<AtomicBool>,
}

/// How long a batch's id is kept: far longer than any retry of it.
const BATCH_IDS_KEPT_MS: i64 = 24 * 3_600_000;

impl PgSink {
    fn new(
        settings: Settings,
        days: DayCache,
        gateway: String,
        down: Arc<AtomicBool>,
    ) -> Result<PgSink, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the writer's runtime: {e}")))?;
        Ok(PgSink {
            rt,
            settings,
            client: None,
            days,
            months: BTreeSet::new(),
            gateway,
            pruned: std::time::Instant::now(),
            down,
        })
    }

    async fn write_batch(
        client: &mut tokio_postgres::Client,
        days: &mut DayCache,
        months: &mut BTreeSet<Month>,
        batch: &[UsageRow],
        batch_id: u64,
        gateway: &str,
    ) -> Result<(), tokio_postgres::Error> {
        let needed: BTreeSet<Month> = months_of(batch).difference(months).copied().collect();
        if !needed.is_empty() {
            ensure_partitions(client, &needed).await?;
            months.extend(needed);
        }
        let tx = client.transaction().await?;
        // A batch whose commit was sent but whose answer was lost (the connection broke) is
        // retried: its id, kept in the same transaction, says it is already in.
        let id = i64::from_le_bytes(batch_id.to_le_bytes());
        let now = jiff::Timestamp::now().as_millisecond();
        let fresh = tx
            .execute(
                "INSERT INTO tollgate_batches (gateway, batch_id, rows, at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[&gateway, &id, &i64::try_from(batch.len()).unwrap_or(i64::MAX), &now],
            )
            .await?;
        if fresh == 0 {
            tracing::info!(
                rows = batch.len(),
                "store: a batch retried after a lost commit was already written"
            );
            return tx.rollback().await;
        }
        write_rows(&tx, days, batch, gateway).await?;
        tx.commit().await
    }
}

impl Sink for PgSink {
    type Error = SinkError;

    fn write(&mut self, batch: &[UsageRow], batch_id: u64) -> Result<(), SinkError> {
        let PgSink {
            rt,
            settings,
            client,
            days,
            months,
            gateway,
            pruned,
            down,
        } = self;
        rt.block_on(async {
            if client
                .as_ref()
                .is_none_or(tokio_postgres::Client::is_closed)
            {
                match settings.connect().await {
                    Ok(c) => *client = Some(c),
                    Err(e) => {
                        mark_down(down, &e.to_string());
                        return Err(SinkError::Connection(e.to_string()));
                    }
                }
            }
            let Some(c) = client.as_mut() else {
                return Err(SinkError::Connection("no connection".into()));
            };
            let result = PgSink::write_batch(c, days, months, batch, batch_id, gateway).await;
            if result.is_ok() && down.swap(false, Ordering::AcqRel) {
                tracing::warn!("store: the database is reachable again; calls are admitted");
            }
            if let Err(e) = &result
                && c.is_closed()
            {
                mark_down(down, &super::describe(e));
                *client = None;
            } else if result.is_ok() && pruned.elapsed() > std::time::Duration::from_secs(3_600) {
                *pruned = std::time::Instant::now();
                let before = jiff::Timestamp::now().as_millisecond() - BATCH_IDS_KEPT_MS;
                if let Err(e) = c
                    .execute(
                        "DELETE FROM tollgate_batches WHERE gateway = $1 AND at < $2",
                        &[&*gateway, &before],
                    )
                    .await
                {
                    tracing::warn!(error = %super::describe(&e), "store: old batch ids not pruned");
                }
            }
            result.map_err(SinkError::Db)
        })
    }

    fn is_transient(&self, error: &SinkError) -> bool {
        match error {
            SinkError::Connection(_) => true,
            SinkError::Db(e) => is_transient(e),
        }
    }

    fn stopped(&mut self) {
        // Dropping the client ends its connection task with the runtime.
        self.client = None;
    }
}

/// Note that the database cannot be reached (logged once per outage).
fn mark_down(down: &AtomicBool, why: &str) {
    if !down.swap(true, Ordering::AcqRel) {
        tracing::error!(
            error = why,
            "store: the database cannot be reached; new calls are refused (503) and the rows of \
             calls already admitted wait in the queue until it is back"
        );
    }
}

/// Whether a database error may go away by itself: the connection broke, or the server was
/// busy (serialization failure, deadlock, lock or statement timeout, too many connections, a
/// server shutting down or starting). A constraint or data error is the rows' own.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection (I/O, closed, timeout).
        return true;
    };
    let c = code.code();
    // Class 08 connection exception, 40 transaction rollback, 53 insufficient resources,
    // 57 operator intervention (admin shutdown, cannot connect now, query canceled), 58 system
    // error, 55P03 lock not available.
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| c.starts_with(class))
        || c == "55P03"
}

/// Recover this gateway's call journal into the database, then start the writer thread.
/// `dir` is the journal's directory (beside `store.path`); `gateway` names the replica's rows.
pub async fn open_queue(
    settings: &Settings,
    dir: &Path,
    tz: jiff::tz::TimeZone,
    gateway: &str,
    options: Options,
    down: Arc<AtomicBool>,
) -> Result<(Queue, WriterThread), StoreError> {
    let mut days = DayCache::new(tz);
    let (lock, journal, journal_thread) = if options.owns_journal {
        let lock = journal::DirLock::acquire(dir)?;
        let max_id = recover(settings, dir, &mut days, gateway).await?;
        match Journal::start(dir, options.journal, max_id)? {
            Some((journal, thread)) => (Some(lock), Some(journal), Some(thread)),
            None => (Some(lock), None, None),
        }
    } else {
        (None, None, None)
    };
    let sink = PgSink::new(settings.clone(), days, gateway.to_string(), down)?;
    Queue::start(sink, options, journal, journal_thread, lock)
}

/// Every entry of the journal in `dir` whose row the database lacks becomes a `recovered` row
/// (in one transaction); then the segments go. Returns the highest journal id seen.
async fn recover(
    settings: &Settings,
    dir: &Path,
    days: &mut DayCache,
    gateway: &str,
) -> Result<u64, StoreError> {
    let mut left = journal::read_dir(dir)?;
    if left.calls.is_empty() {
        journal::clear_dir(dir)?;
        return Ok(left.max_id);
    }
    let seen = left.calls.len();
    let mut client = settings.connect().await?;
    let mut missing: Vec<UsageRow> = Vec::new();
    let calls = std::mem::take(&mut left.calls);
    for call in calls {
        let id = i64::try_from(call.journal_id).unwrap_or(i64::MAX);
        let found = client
            .query_opt(
                "SELECT 1 FROM token_usage WHERE user_id = $1 AND ts = $2 AND journal_id = $3",
                &[&&*call.user_id, &call.ts_ms, &id],
            )
            .await?;
        if found.is_none() {
            missing.push(left.row_for(call));
        }
    }
    if !missing.is_empty() {
        ensure_partitions(&mut client, &months_of(&missing)).await?;
        let tx = client.transaction().await?;
        write_rows(&tx, days, &missing, gateway).await?;
        tx.commit().await?;
        let tokens: u64 = missing.iter().map(|r| r.usage.total()).sum();
        tracing::warn!(
            calls = missing.len(),
            estimated_tokens = tokens,
            "store: calls in flight when the gateway last stopped are recorded as 'recovered', \
             their reservations as the estimate"
        );
    } else {
        tracing::info!(
            entries = seen,
            "store: every call in the journal already had its row"
        );
    }
    journal::clear_dir(dir)?;
    Ok(left.max_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::sync::Arc;

    use super::*;
    use crate::config::JournalMode;
    use crate::store::OpenCall;
    use crate::store::postgres::schema::migrate;
    use crate::store::postgres::testing::TestDb;
    use crate::usage::{Outcome, Usage, UsageSource};

    fn entry(id: u64, user: &str) -> OpenCall {
        OpenCall {
            journal_id: id,
            request_id: format!("req-{id}"),
            ts_ms: 1_796_083_200_000 + 5_000,
            user_id: Arc::from(user),
            user_email: None,
            user_name: None,
            provider: Arc::from("openai"),
            model: Some("gpt-4o-mini".into()),
            endpoint: "chat.completions",
            streamed: false,
            hold: Usage {
                input_tokens: 50,
                output_tokens: 500,
                ..Usage::default()
            },
            hold_cost_nano_usd: Some(99),
        }
    }

    #[tokio::test]
    async fn a_batch_retried_after_its_commit_is_written_once() {
        let db = TestDb::create().await;
        let settings = db.settings();
        let mut c = settings.connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        let mut days = DayCache::new(jiff::tz::TimeZone::UTC);
        let mut months = BTreeSet::new();
        let batch = vec![
            entry(1, "dee").recovered_row(),
            entry(2, "dee").recovered_row(),
        ];
        for _ in 0..2 {
            PgSink::write_batch(&mut c, &mut days, &mut months, &batch, u64::MAX - 3, "gw")
                .await
                .unwrap();
        }
        // Another batch id is another batch.
        PgSink::write_batch(&mut c, &mut days, &mut months, &batch[..1], 7, "gw")
            .await
            .unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM token_usage").await, 3);
        assert_eq!(
            count(
                &db,
                "SELECT calls FROM usage_user_daily WHERE user_id = 'dee'"
            )
            .await,
            3
        );
    }

    async fn count(db: &TestDb, sql: &str) -> i64 {
        let c = db.settings().connect().await.unwrap();
        c.query_one(sql, &[]).await.unwrap().get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_reach_the_database_and_a_call_left_open_is_recovered_once() {
        let db = TestDb::create().await;
        let settings = db.settings();
        migrate(&mut settings.connect().await.unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("calls");
        let options = Options {
            journal: JournalMode::Durable,
            linger: std::time::Duration::from_millis(5),
            ..Options::default()
        };
        let (queue, writer) = open_queue(
            &settings,
            &journal_dir,
            jiff::tz::TimeZone::UTC,
            "gw-a",
            options.clone(),
            Arc::default(),
        )
        .await
        .unwrap();
        let done = queue.journal_id().unwrap();
        let cut = queue.journal_id().unwrap();
        queue.open_call(entry(done, "ann")).await.unwrap();
        queue.open_call(entry(cut, "bo")).await.unwrap();
        let mut row = entry(done, "ann").recovered_row();
        row.outcome = Outcome::Complete;
        row.usage_source = UsageSource::Reported;
        row.status = 200;
        assert!(queue.record(row));
        tokio::task::spawn_blocking(move || writer.close())
            .await
            .unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM token_usage").await, 1);

        // The next start records bo's call, once; ann's entry found its row.
        for _ in 0..2 {
            let (_queue, writer) = open_queue(
                &settings,
                &journal_dir,
                jiff::tz::TimeZone::UTC,
                "gw-a",
                options.clone(),
                Arc::default(),
            )
            .await
            .unwrap();
            tokio::task::spawn_blocking(move || writer.close())
                .await
                .unwrap();
        }
        assert_eq!(count(&db, "SELECT count(*) FROM token_usage").await, 2);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM token_usage WHERE user_id = 'bo' AND outcome = 'recovered' \
                 AND total_tokens = 550 AND gateway = 'gw-a'"
            )
            .await,
            1
        );
        assert_eq!(
            count(
                &db,
                "SELECT total_tokens FROM usage_user_monthly WHERE user_id = 'bo'"
            )
            .await,
            550
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_wait_while_the_database_is_away_and_none_is_written_twice() {
        let db = TestDb::create().await;
        let settings = db.settings();
        migrate(&mut settings.connect().await.unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            journal: JournalMode::Off,
            linger: std::time::Duration::from_millis(5),
            max_backoff: std::time::Duration::from_millis(50),
            ..Options::default()
        };
        let (queue, writer) = open_queue(
            &settings,
            &dir.path().join("calls"),
            jiff::tz::TimeZone::UTC,
            "gw-b",
            options,
            Arc::default(),
        )
        .await
        .unwrap();
        let write = |n: u64| {
            let mut r = entry(n, "cy").recovered_row();
            r.request_id = format!("away-{n}");
            r.journal_id = None;
            assert!(queue.record(r));
        };
        write(1);
        // The writer's connection is cut (the database restarted, say).
        let admin = settings.connect().await.unwrap();
        let wait_rows = |n: i64| {
            let db = &db;
            async move {
                for _ in 0..200 {
                    if count(db, "SELECT count(*) FROM token_usage").await == n {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                panic!("never {n} rows");
            }
        };
        wait_rows(1).await;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        write(2);
        write(3);
        wait_rows(3).await;
        tokio::task::spawn_blocking(move || writer.close())
            .await
            .unwrap();
        assert_eq!(
            count(&db, "SELECT count(DISTINCT request_id) FROM token_usage").await,
            3
        );
        assert_eq!(
            count(
                &db,
                "SELECT calls FROM usage_user_monthly WHERE user_id = 'cy'"
            )
            .await,
            3
        );
    }
}
