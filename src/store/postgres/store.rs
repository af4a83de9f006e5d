//! [`PgStore`]: the [`Store`] on PostgreSQL — the queue and writer of `writer`, the admin
//! side's reads and units of work on a pool of connections.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::Settings;
use super::lease::{self, Registration};
use crate::quota::{Fence, LeaseAsk, LeaseGrant, Ledger, QuotaSeed, Shared};
use crate::store::queue::{Options, Queue, WriterThread};
use crate::store::{
    AdminAccount, AuditRow, CallRow, Committed, ExportQuery, OpenCall, RowSlot, SeriesBy,
    SeriesPoint, Session, Stats, StatsQuery, Store, StoreError, UsageRow, UserUsage,
    UserUsageQuery, UsersPage, UsersQuery, Work, WriterStats,
};

/// The PostgreSQL store of one gateway.
pub struct PgStore {
    settings: Settings,
    pool: Pool,
    queue: Queue,
    writer: Mutex<Option<WriterThread>>,
    /// This gateway's name in `tollgate_gateways` and on its rows; `None` for a tool.
    registration: Option<Registration>,
    /// The ledger's side of the leases: its fence, renewed by the heartbeat.
    shared: Arc<Shared>,
    /// The heartbeat, and once the ledger shares its limits, the lease agent and the listener.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set by the writer while the database cannot be reached: new calls are refused (their
    /// rows could not be promised a place), until a batch is written again.
    down: Arc<AtomicBool>,
    /// `store.when_unavailable = "admit_locally"`: rows are promised a place in the queue even
    /// while the database is down.
    admit_locally: bool,
}

impl PgStore {
    /// Connect, migrate (once, whatever the number of gateways starting), record this gateway's
    /// journal leftovers, and start the writer. `journal_dir` is beside `store.path`;
    /// `replica` names this gateway's rows.
    pub async fn open(
        settings: Settings,
        journal_dir: &Path,
        tz: jiff::tz::TimeZone,
        replica: &str,
        lease: std::time::Duration,
        admit_locally: bool,
        options: Options,
    ) -> Result<Arc<PgStore>, StoreError> {
        let mut client = settings.connect().await?;
        let migrated = super::schema::migrate(&mut client).await?;
        if migrated.from != migrated.to {
            tracing::info!(from = migrated.from, to = migrated.to, database = %settings.target(), "store: database migrated");
        }
        let registration = options
            .owns_journal
            .then(|| Registration::new(replica, lease));
        let shared = Arc::new(Shared::new(Fence::new()));
        if let Some(reg) = &registration {
            let sent = std::time::Instant::now();
            lease::claim(&client, reg).await.map_err(|e| match e {
                StoreError::Backend(m) => {
                    StoreError::Backend(format!("{}: {m}", settings.target()))
                }
                other => other,
            })?;
            shared.fence.renew(sent, reg.fence());
        }
        drop(client);
        let pool = settings.pool()?;
        let down = Arc::new(AtomicBool::new(false));
        // A database that went away is usually back within a second (a restart, a fail-over):
        // new calls are refused until the next batch goes in, so try it at least twice a second.
        let options = Options {
            max_backoff: options
                .max_backoff
                .min(std::time::Duration::from_millis(500)),
            ..options
        };
        let (queue, writer) = super::writer::open_queue(
            &settings,
            journal_dir,
            tz,
            replica,
            options,
            Arc::clone(&down),
        )
        .await?;
        let tasks = registration
            .iter()
            .map(|reg| {
                tokio::spawn(lease::heartbeat(
                    pool.clone(),
                    reg.clone(),
                    Arc::clone(&shared),
                ))
            })
            .collect();
        Ok(Arc::new(PgStore {
            settings,
            pool,
            queue,
            writer: Mutex::new(Some(writer)),
            registration,
            shared,
            tasks: Mutex::new(tasks),
            down,
            admit_locally,
        }))
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.settings.target())
            .field("writer", &self.queue)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for PgStore {
    fn record(&self, row: UsageRow) -> bool {
        self.queue.record(row)
    }

    fn reserve_row(&self) -> Option<RowSlot> {
        if self.down.load(Ordering::Acquire) && !self.admit_locally {
            return None;
        }
        self.queue.reserve()
    }

    fn record_reserved(&self, slot: RowSlot, row: UsageRow) -> bool {
        self.queue.record_reserved(slot, row)
    }

    fn journal_id(&self) -> Option<u64> {
        self.queue.journal_id()
    }

    async fn open_call(&self, call: OpenCall) -> Result<(), StoreError> {
        self.queue.open_call(call).await
    }

    fn writer_stats(&self) -> WriterStats {
        WriterStats {
            unavailable: self.down.load(Ordering::Relaxed),
            ..self.queue.stats()
        }
    }

    async fn close(&self) {
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.close()).await;
            for task in self.tasks.lock().drain(..) {
                task.abort();
            }
            let Some(reg) = &self.registration else {
                return;
            };
            // Stopped cleanly (every row written): its leases are given back now rather than
            // when they lapse.
            if let Ok(c) = self.pool.get().await
                && let Err(e) = lease::leave(&**c, reg).await
            {
                tracing::warn!(error = %e, "store: this gateway's leases were not given back");
            }
        }
    }

    async fn quota_seed(&self, today: &str, month_start: &str) -> Result<QuotaSeed, StoreError> {
        let c = self.client().await?;
        super::controls::load_quota_seed(&**c, today, month_start).await
    }

    async fn commit(&self, work: Work) -> Result<Committed, StoreError> {
        let mut c = self.client().await?;
        super::work::commit(&mut c, &work).await
    }

    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        super::accounts::password_hash(&**c, name).await
    }

    async fn session(
        &self,
        token_sha256: &str,
        now_ms: i64,
    ) -> Result<Option<Session>, StoreError> {
        let c = self.client().await?;
        super::accounts::session(&**c, token_sha256, now_ms).await
    }

    async fn accounts(&self) -> Result<Vec<AdminAccount>, StoreError> {
        let c = self.client().await?;
        super::accounts::list_accounts(&**c).await
    }

    async fn users_page(&self, q: UsersQuery) -> Result<UsersPage, StoreError> {
        let c = self.client().await?;
        super::reads::users::users_page(&**c, &q).await
    }

    async fn user_usage(&self, q: UserUsageQuery) -> Result<Option<UserUsage>, StoreError> {
        let c = self.client().await?;
        super::reads::user::user_usage(&**c, &q).await
    }

    async fn stats(&self, q: StatsQuery) -> Result<Stats, StoreError> {
        let c = self.client().await?;
        super::reads::system::stats(&**c, &q).await
    }

    async fn usage_series(
        &self,
        since_day: &str,
        by: SeriesBy,
        user: Option<&str>,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let c = self.client().await?;
        let until = crate::store::sqlite::reads::system::latest_possible_day();
        super::reads::system::usage_series(&**c, since_day, &until, by, user).await
    }

    async fn audit_page(
        &self,
        target: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let c = self.client().await?;
        super::audit::audit_page(&**c, target, before_id, limit).await
    }

    fn export_calls(&self, q: ExportQuery) -> mpsc::Receiver<Result<Vec<CallRow>, StoreError>> {
        /// Rows per message: a few hundred kilobytes of CSV at most.
        const CHUNK: usize = 512;
        let (tx, rx) = mpsc::channel(4);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let result = async {
                let mut c = pool.get().await?;
                let sender = tx.clone();
                super::reads::export::for_each_chunk(
                    &mut **c,
                    q.from_ms,
                    q.to_ms,
                    q.user.as_deref(),
                    CHUNK,
                    move |rows| {
                        let sender = sender.clone();
                        // The receiver gone (the client went away): stop reading.
                        async move { sender.send(Ok(rows)).await.is_ok() }
                    },
                )
                .await
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn prune(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        let c = self.client().await?;
        super::rows::prune(&c, before_ms, batch).await
    }

    async fn record_alert(
        &self,
        alert: crate::store::alerts::NewAlert,
    ) -> Result<Option<i64>, StoreError> {
        let c = self.client().await?;
        super::alerts::record(&**c, &alert).await
    }

    async fn alert_delivered(
        &self,
        id: i64,
        delivery: crate::store::alerts::Delivery,
        attempts: u32,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        super::alerts::delivered(&**c, id, delivery, attempts, at_ms).await
    }

    async fn alerts_page(
        &self,
        before_id: Option<i64>,
        limit: u32,
        since_ms: i64,
    ) -> Result<crate::store::alerts::AlertsPage, StoreError> {
        let c = self.client().await?;
        super::alerts::page(&**c, before_id, limit, since_ms).await
    }

    async fn alert_totals(
        &self,
        users: Vec<String>,
        today: &str,
        month_start: &str,
    ) -> Result<crate::store::alerts::AlertTotals, StoreError> {
        let c = self.client().await?;
        super::alerts::totals(&**c, &users, today, month_start).await
    }

    fn share_limits(&self, ledger: &Arc<Ledger>) {
        let Some(reg) = &self.registration else {
            return;
        };
        ledger.share(Arc::clone(&self.shared));
        let mut tasks = self.tasks.lock();
        tasks.push(tokio::spawn(lease::agent(
            self.pool.clone(),
            reg.replica.clone(),
            Arc::clone(ledger),
        )));
        tasks.push(tokio::spawn(lease::listen(
            self.settings.clone(),
            self.pool.clone(),
            Arc::clone(ledger),
        )));
    }

    async fn lease(&self, ask: &LeaseAsk) -> Result<LeaseGrant, StoreError> {
        let Some(reg) = &self.registration else {
            return Err(StoreError::Backend("a tool does not lease budgets".into()));
        };
        if self.down.load(Ordering::Acquire) {
            return Err(StoreError::Busy("the database cannot be reached".into()));
        }
        let c = self.client().await?;
        lease::grant(&c, &reg.replica, ask).await
    }
}
