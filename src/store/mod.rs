//! The store: everything Tollgate keeps, behind one interface a second database can fill.
//!
//! [`Store`] is what the rest of the program uses to persist and read: call rows (queued, never
//! awaited on the request path), the quota seed at start, operators' changes with their audit
//! row ([`Work`], one transaction each), admin accounts and sessions, the admin API's reads and
//! readiness. Its values are plain types of this module and of the domain (`usage`, `calendar`,
//! `quota::controls`); no query shape leaks out, and no serialisation format is chosen here
//! (the admin module maps results to its documented responses).
//!
//! [`sqlite`] is the first implementation and the embedded default: one writer thread commits
//! call rows in batches with their rollups, readers and the admin writer have connections of
//! their own, and every blocking SQLite call runs off the async runtime. It is the only module
//! of the crate that names `rusqlite`. A second backend is a new module implementing [`Store`];
//! nothing outside `store` changes.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::quota::{Change, OverridesPatch, QuotaSeed, UserControls, UserOverrides};
use crate::usage::{Outcome, Totals, Usage, UsageSource};

pub mod alerts;
pub mod import;
pub mod journal;
pub mod postgres;
pub mod queue;
pub mod rollup;
pub mod sqlite;
pub mod work;

// === the interface ===

/// Room for one row in a store's queue, reserved by [`Store::reserve_row`]. Dropping it unused
/// gives the room back; [`Store::record_reserved`] turns it into a queued row.
#[derive(Debug)]
#[must_use = "a slot holds room in the store's queue until it is used or dropped"]
pub struct RowSlot {
    reserved: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl RowSlot {
    /// A slot counted in `reserved` (which the caller has already incremented).
    pub fn counted(reserved: Arc<std::sync::atomic::AtomicUsize>) -> RowSlot {
        RowSlot {
            reserved: Some(reserved),
        }
    }

    /// Give the room back (the row was queued or the call ended without one).
    pub fn release(mut self) {
        self.give_back();
    }

    fn give_back(&mut self) {
        if let Some(r) = self.reserved.take() {
            r.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

impl Drop for RowSlot {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Everything Tollgate stores and reads. Share it as `Arc<dyn Store>`.
///
/// The call-row methods are synchronous and never block (the request path calls them); every
/// other method is `async` and does its I/O off the async runtime.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    // --- calls: the request path ---

    /// Queue a finished call's row for the writer. Never blocks and never waits for the disk.
    /// Returns false (and counts a drop) when the queue is full or the store is closing. Used
    /// for calls that were never forwarded (refusals), which may use the queue's last room.
    fn record(&self, row: UsageRow) -> bool;

    /// Room for one row, taken before a call is forwarded: `None` when the queue is too full
    /// to promise it (the call is then refused, not forwarded unrecorded). Never blocks.
    /// Part of the queue stays free of reservations, so refusals can still be recorded.
    fn reserve_row(&self) -> Option<RowSlot>;

    /// Queue a row into the room `slot` reserved. Fails only when the store is closing.
    fn record_reserved(&self, slot: RowSlot, row: UsageRow) -> bool;

    /// A new id for the call journal, or `None` when the journal is off (`store.journal`).
    fn journal_id(&self) -> Option<u64>;

    /// Write `call` into the call journal ([`journal`]) and resolve once it is kept as
    /// `store.journal` says (fsynced, or handed to the operating system). The proxy awaits it
    /// before forwarding, so a call the upstream may serve always has a row: its own when it
    /// ends, or, if the gateway dies first, a `recovered` row made from this entry at the next
    /// start. The entry is closed once the row carrying its `journal_id` is committed.
    async fn open_call(&self, call: OpenCall) -> Result<(), StoreError>;

    /// The writer's counters, for metrics and tests.
    fn writer_stats(&self) -> WriterStats;

    /// Stop accepting rows, commit every row already queued, and release the writer. Rows
    /// recorded afterwards are refused (and counted as dropped).
    async fn close(&self);

    // --- start ---

    /// What the quota ledger starts with: the controls of every user who has any, and usage
    /// totals of `today` and of the month starting `month_start` (both `YYYY-MM-DD` in
    /// `limits.timezone`).
    async fn quota_seed(&self, today: &str, month_start: &str) -> Result<QuotaSeed, StoreError>;

    // --- changes: one unit of work each ---

    /// Make a change and write its audit row in one transaction: both are committed, or
    /// neither. Every admin action, the `tollgate admin` commands, sign-in and sign-out, and
    /// configuration reloads go through here.
    async fn commit(&self, work: Work) -> Result<Committed, StoreError>;

    // --- admin accounts and sessions ---

    /// The argon2id PHC string of an admin account, `None` for an unknown name.
    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// The live session whose token hashes to `token_sha256`, `None` when expired or unknown.
    async fn session(&self, token_sha256: &str, now_ms: i64)
    -> Result<Option<Session>, StoreError>;

    /// Every admin account, by name.
    async fn accounts(&self) -> Result<Vec<AdminAccount>, StoreError>;

    // --- the admin API's reads ---

    /// A page of users with their usage today and this month.
    async fn users_page(&self, q: UsersQuery) -> Result<UsersPage, StoreError>;

    /// One user's summary, daily series, per-model usage and a page of recent calls; `None`
    /// when the store has never heard of the user.
    async fn user_usage(&self, q: UserUsageQuery) -> Result<Option<UserUsage>, StoreError>;

    /// System statistics.
    async fn stats(&self, q: StatsQuery) -> Result<Stats, StoreError>;

    /// Usage per day, by model or provider, from `since_day` to the newest day with usage.
    async fn usage_series(
        &self,
        since_day: &str,
        by: SeriesBy,
        user: Option<&str>,
    ) -> Result<Vec<SeriesPoint>, StoreError>;

    /// A page of the audit trail, newest first.
    async fn audit_page(
        &self,
        target: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError>;

    /// Stream the calls with `ts` in `[from_ms, to_ms)`, oldest first, in chunks through a
    /// bounded channel (the reader waits while the receiver is full, and stops when it is
    /// dropped). A failure midway arrives as the last message.
    fn export_calls(&self, q: ExportQuery) -> mpsc::Receiver<Result<Vec<CallRow>, StoreError>>;

    // --- operations ---

    /// Whether the store takes writes right now.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Delete the calls recorded before `before_ms` (unix ms UTC), at most `batch` rows per
    /// transaction so the writer never waits behind a long delete; the rollups — and so the
    /// dashboard's history and every total — stay. Returns the rows deleted.
    async fn prune(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError>;

    // --- alerts ---

    /// Record an alert unless one with its rule, subject, period and level is already there:
    /// `Some(id)` for a new row, `None` when it had fired before (here or on another gateway).
    async fn record_alert(&self, alert: alerts::NewAlert) -> Result<Option<i64>, StoreError>;

    /// Set an alert's delivery state and add `attempts` to its count; `Pending` only adds the
    /// attempts (it never takes back an outcome written before it).
    async fn alert_delivered(
        &self,
        id: i64,
        delivery: alerts::Delivery,
        attempts: u32,
        at_ms: i64,
    ) -> Result<(), StoreError>;

    /// A page of alerts, newest first (ids below `before_id`), and the number since `since_ms`.
    async fn alerts_page(
        &self,
        before_id: Option<i64>,
        limit: u32,
        since_ms: i64,
    ) -> Result<alerts::AlertsPage, StoreError>;

    /// `users`' usage recorded `today` and in the month starting `month_start` (`YYYY-MM-DD`
    /// in `limits.timezone`), and every user's spend in both.
    async fn alert_totals(
        &self,
        users: Vec<String>,
        today: &str,
        month_start: &str,
    ) -> Result<alerts::AlertTotals, StoreError>;

    // --- limits shared by several gateways ---

    /// Make `ledger` share its limits with the other gateways on this store, when the store
    /// is one several gateways use (PostgreSQL): its admissions then spend leases
    /// ([`crate::quota::lease`]), and operators' changes made through any gateway reach it.
    /// Nothing for a store of one gateway (SQLite).
    fn share_limits(&self, ledger: &Arc<crate::quota::Ledger>) {
        let _ = ledger;
    }

    /// Ask for what a call's [`LeaseAsk`](crate::quota::LeaseAsk) needs: one round trip.
    async fn lease(
        &self,
        ask: &crate::quota::LeaseAsk,
    ) -> Result<crate::quota::LeaseGrant, StoreError> {
        let _ = ask;
        Err(StoreError::Backend(
            "this store does not share limits".into(),
        ))
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database stayed busy (locked by another writer) past its timeout; retry later.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// A value the store cannot keep (e.g. a limit past `i64::MAX`); nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// Opening, migrating or any other failure of the database itself.
    #[error("{0}")]
    Backend(String),
}

/// The writer's counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows handed over and not yet committed (queued or in the batch being written).
    pub queue_depth: usize,
    /// Rows refused by [`Store::record`]: queue full or store closing.
    pub rows_dropped: u64,
    /// Rows accepted but never committed (the disk kept refusing them while stopping, or the
    /// database refused a row outright).
    pub rows_failed: u64,
    pub rows_committed: u64,
    /// Fsyncs of the call journal (with `store.journal = "durable"`; none with `"process"`).
    pub journal_commits: u64,
    /// Call-journal entries written: divided by `journal_commits`, the calls one fsync covers.
    pub journal_entries: u64,
    /// The database cannot be reached (PostgreSQL): new calls are refused until it is back.
    pub unavailable: bool,
}

/// Sees each batch of usage rows once the writer is done with it, on the writer's thread, off
/// the request path: how `metrics` counts calls. Keep it cheap and never block.
pub trait RowObserver: Send + Sync + fmt::Debug + 'static {
    fn rows_written(&self, rows: &[UsageRow]);
}

/// Several observers, called in order.
impl RowObserver for Vec<Arc<dyn RowObserver>> {
    fn rows_written(&self, rows: &[UsageRow]) {
        for observer in self {
            observer.rows_written(rows);
        }
    }
}

// === a call row ===

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
    pub outcome: Outcome,
    /// The call's entry in the call journal, closed when this row is committed (and stored
    /// with it, so that a start can tell the entries that have their row).
    pub journal_id: Option<u64>,
    /// The plan the call was admitted on (`[plans.NAME]`); `None`: no plan. Becomes the user's
    /// `users.plan` when it is their latest call.
    pub plan: Option<Arc<str>>,
}

/// A call about to be forwarded, as the call journal keeps it until its row is committed: who,
/// what, and the reservation, which becomes the recorded estimate if the gateway dies first.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenCall {
    pub journal_id: u64,
    pub request_id: String,
    /// Unix milliseconds, UTC, when the call was admitted (the row's `ts`).
    pub ts_ms: i64,
    pub user_id: Arc<str>,
    pub user_email: Option<String>,
    pub user_name: Option<String>,
    pub provider: Arc<str>,
    pub model: Option<String>,
    pub endpoint: &'static str,
    pub streamed: bool,
    /// The reservation as usage: the prompt estimate in, the output cap out.
    pub hold: Usage,
    /// The reservation's price; `None` when the model has none.
    pub hold_cost_nano_usd: Option<i64>,
}

impl OpenCall {
    /// The row of a call the gateway did not see end: its reservation as an estimate, status 0
    /// (what the client received is unknown), outcome `recovered`.
    pub fn recovered_row(self) -> UsageRow {
        UsageRow {
            request_id: self.request_id,
            ts_ms: self.ts_ms,
            user_id: self.user_id,
            user_email: self.user_email,
            user_name: self.user_name,
            provider: self.provider,
            model: self.model,
            endpoint: self.endpoint,
            streamed: self.streamed,
            status: 0,
            usage: self.hold,
            cost_nano_usd: self.hold_cost_nano_usd,
            usage_source: UsageSource::Estimated,
            latency_ms: 0,
            ttfb_ms: None,
            outcome: Outcome::Recovered,
            journal_id: Some(self.journal_id),
            plan: None,
        }
    }
}

// === units of work ===

/// One change and its audit row, committed together by [`Store::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    /// Who goes in the audit row: an admin account, `jwt:<subject>`, `cli:<user>`, `system`.
    pub actor: String,
    /// When (unix ms UTC): the audit row's `ts`, and a new user's `created_at`.
    pub at_ms: i64,
    pub op: Op,
}

/// The changes an operator (or the gateway itself) can make. Each names its audit action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Block a user (creating their row if they never called). Audited as `block`, with the
    /// reason as the detail.
    Block {
        user: String,
        reason: Option<String>,
    },
    /// Unblock a user, clearing the reason. Audited as `unblock`.
    Unblock { user: String },
    /// Set or clear some of a user's limit overrides. Audited as `set_limits`.
    SetLimits { user: String, patch: OverridesPatch },
    /// Create an admin account; nothing is written if the name is taken. `admin_add`.
    AddAccount { name: String, password_hash: String },
    /// Replace an account's password and end its sessions. `admin_set_password`.
    SetPassword { name: String, password_hash: String },
    /// Remove an account and end its sessions. `admin_remove`.
    RemoveAccount { name: String },
    /// A good sign-in: a session (only its token's SHA-256 is kept) and the account's last
    /// sign-in time. `login`, the actor being the account, `from <address>` the detail.
    SignIn {
        token_sha256: String,
        expires_at_ms: i64,
        from: String,
    },
    /// A refused sign-in: only the audit row. `login_failed`.
    SignInFailed { from: String },
    /// End a session: audited as `logout` (actor: its admin) only if it existed.
    SignOut { token_sha256: String },
    /// A configuration reload: only the audit row (`config_reload` or
    /// `config_reload_refused`), target the file, the changed keys as before/after JSON.
    ConfigReload {
        applied: bool,
        file: String,
        before_json: Option<String>,
        after_json: Option<String>,
        detail: String,
    },
}

impl Op {
    /// The audit action this change writes.
    pub fn action(&self) -> AuditAction {
        match self {
            Op::Block { .. } => AuditAction::Block,
            Op::Unblock { .. } => AuditAction::Unblock,
            Op::SetLimits { .. } => AuditAction::SetLimits,
            Op::AddAccount { .. } => AuditAction::AdminAdd,
            Op::SetPassword { .. } => AuditAction::AdminSetPassword,
            Op::RemoveAccount { .. } => AuditAction::AdminRemove,
            Op::SignIn { .. } => AuditAction::Login,
            Op::SignInFailed { .. } => AuditAction::LoginFailed,
            Op::SignOut { .. } => AuditAction::Logout,
            Op::ConfigReload { applied: true, .. } => AuditAction::ConfigReload,
            Op::ConfigReload { applied: false, .. } => AuditAction::ConfigReloadRefused,
        }
    }
}

/// What [`Store::commit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// A user's controls before and after (block, unblock, limits).
    Controls(Box<Change<UserControls>>),
    /// An account change: false when nothing matched (the name is taken for an add, unknown
    /// otherwise); nothing was written then, not even the audit row.
    Account { changed: bool },
    /// Sign-out: the session's admin, `None` when there was no such session (no audit row).
    SignedOut { admin: Option<String> },
    /// An audit-only unit (sign-in, refused sign-in, reload): the audit row's id.
    Audited { audit_id: i64 },
}

/// The `action` of an `admin_audit` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    Block,
    Unblock,
    SetLimits,
    AdminAdd,
    AdminSetPassword,
    AdminRemove,
    Login,
    LoginFailed,
    Logout,
    ConfigReload,
    ConfigReloadRefused,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Block => "block",
            AuditAction::Unblock => "unblock",
            AuditAction::SetLimits => "set_limits",
            AuditAction::AdminAdd => "admin_add",
            AuditAction::AdminSetPassword => "admin_set_password",
            AuditAction::AdminRemove => "admin_remove",
            AuditAction::Login => "login",
            AuditAction::LoginFailed => "login_failed",
            AuditAction::Logout => "logout",
            AuditAction::ConfigReload => "config_reload",
            AuditAction::ConfigReloadRefused => "config_reload_refused",
        }
    }
}

// === what the reads return ===

/// An admin account (never its password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAccount {
    pub name: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

/// A live admin session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub admin: String,
    pub expires_at: i64,
}

/// One `admin_audit` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub detail: Option<String>,
}

/// How [`Store::users_page`] orders users. Ties are broken by id, in the same direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UserSort {
    #[default]
    Id,
    LastSeen,
    Created,
    TokensToday,
    TokensMonth,
    CostToday,
    CostMonth,
}

/// A page of the user list, with the days its usage figures are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsersQuery {
    /// Case-insensitive (ASCII) substring of the id, email or name; `None` or empty = everyone.
    pub search: Option<String>,
    pub sort: UserSort,
    pub desc: bool,
    pub limit: u32,
    pub offset: u32,
    /// `YYYY-MM-DD`: the day of the `today` figures.
    pub today: String,
    /// `YYYY-MM-01`: the first day of the `month` figures.
    pub month_start: String,
    /// Only the users on one plan; `None` = everyone.
    pub plan: Option<PlanFilter>,
}

/// The users of one plan, for [`UsersQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanFilter {
    /// Users whose `plan` (their latest call's) is this one.
    pub name: String,
    /// `Some(plans)` when `name` is the default plan: also the users whose `plan` is none of
    /// `plans` (NULL, or a plan since removed), who are on the default plan now.
    pub or_none_of: Option<Vec<String>>,
}

impl PlanFilter {
    /// `or_none_of` as a JSON array (for SQL's `json_each`), when set.
    pub fn none_of_json(&self) -> Option<String> {
        self.or_none_of
            .as_ref()
            .map(|plans| serde_json::Value::from(plans.clone()).to_string())
    }
}

/// One user with their usage today and this month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub controls: UserControls,
    /// Unix ms UTC.
    pub created_at: i64,
    /// Unix ms UTC of the latest recorded call; `None` if the user never called.
    pub last_seen_at: Option<i64>,
    /// The plan of the user's latest recorded call (`users.plan`); `None`: no plan.
    pub plan: Option<String>,
    pub today: Totals,
    /// From the first of the month to today, inclusive.
    pub month: Totals,
}

impl UserSummary {
    pub fn overrides(&self) -> &UserOverrides {
        &self.controls.overrides
    }
}

/// One page of users and how many match the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsersPage {
    pub users: Vec<UserSummary>,
    /// Users matching the search (all pages).
    pub total: u64,
}

/// What [`Store::user_usage`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserUsageQuery {
    pub user: String,
    pub today: String,
    pub month_start: String,
    /// The first day of the daily series and of the per-model sums.
    pub since_day: String,
    /// The id of the last call of the previous page.
    pub before_call: Option<i64>,
    /// Calls per page.
    pub limit: u32,
}

/// One user's usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserUsage {
    pub summary: UserSummary,
    /// One point per day from `since_day` to today, days without calls as zeros.
    pub daily: Vec<DayPoint>,
    /// Per (provider, model) since `since_day`, most tokens first.
    pub models: Vec<ModelUsage>,
    /// The page of calls, newest first.
    pub calls: Vec<CallRow>,
    /// There are calls after this page.
    pub more_calls: bool,
}

/// One day of a series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayPoint {
    /// `YYYY-MM-DD` in `limits.timezone`.
    pub day: String,
    pub totals: Totals,
}

/// Usage of one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelUsage {
    pub provider: String,
    /// `None` for calls whose request named no model.
    pub model: Option<String>,
    pub totals: Totals,
}

/// Usage of one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderUsage {
    pub provider: String,
    pub totals: Totals,
}

/// One recorded call: a `token_usage` row as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRow {
    pub id: i64,
    pub request_id: String,
    /// Unix ms UTC, when the call was admitted.
    pub ts: i64,
    pub user_id: String,
    pub provider: String,
    pub model: Option<String>,
    pub endpoint: String,
    pub streamed: bool,
    pub status: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost_nano_usd: Option<i64>,
    /// `reported`, `estimated`, `invalid` or `none` (`usage::UsageSource`).
    pub usage_source: String,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub outcome: String,
}

/// What [`Store::stats`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsQuery {
    pub today: String,
    pub month_start: String,
    /// "Active today" = `last_seen_at >= today_start_ms`.
    pub today_start_ms: i64,
    /// "Active in 7 days" = `last_seen_at >= week_ago_ms`.
    pub week_ago_ms: i64,
}

/// System statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub users_total: i64,
    pub users_active_today: i64,
    pub users_active_7d: i64,
    pub users_blocked: i64,
    pub today: Totals,
    pub month: Totals,
    /// This month, most tokens first.
    pub by_model: Vec<ModelUsage>,
    /// This month, most tokens first.
    pub by_provider: Vec<ProviderUsage>,
}

/// The users' counts of [`Stats`], as a store reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCounts {
    pub total: i64,
    pub active_today: i64,
    pub active_7d: i64,
    pub blocked: i64,
}

impl Stats {
    /// Assemble the statistics from the users' counts and the per-model sums of today and of
    /// the month (`by_model` already in the order [`Stats::by_model`] keeps): the totals and the
    /// per-provider breakdown (most tokens first, then by name) are summed here, the same for
    /// every store.
    pub fn from_models(
        users: UserCounts,
        today: &[ModelUsage],
        by_model: Vec<ModelUsage>,
    ) -> Stats {
        let mut today_totals = Totals::default();
        for m in today {
            today_totals.add(&m.totals);
        }
        let mut month = Totals::default();
        let mut by_provider: Vec<ProviderUsage> = Vec::new();
        for m in &by_model {
            month.add(&m.totals);
            match by_provider.iter_mut().find(|p| p.provider == m.provider) {
                Some(p) => p.totals.add(&m.totals),
                None => by_provider.push(ProviderUsage {
                    provider: m.provider.clone(),
                    totals: m.totals,
                }),
            }
        }
        by_provider.sort_by(|a, b| {
            b.totals
                .total_tokens
                .cmp(&a.totals.total_tokens)
                .then_with(|| a.provider.cmp(&b.provider))
        });
        Stats {
            users_total: users.total,
            users_active_today: users.active_today,
            users_active_7d: users.active_7d,
            users_blocked: users.blocked,
            today: today_totals,
            month,
            by_model,
            by_provider,
        }
    }
}

/// What a usage series is broken down by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesBy {
    Model,
    Provider,
}

/// One (day, model or provider) point of a usage series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesPoint {
    pub day: String,
    /// The model (`""` for calls that named none) or the provider.
    pub key: String,
    /// The provider of the model (the key itself when the series is by provider).
    pub provider: String,
    pub totals: Totals,
}

/// Which calls [`Store::export_calls`] streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub user: Option<String>,
}

// === choosing a backend ===

/// Who opens the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `tollgate serve`: owns the call journal (records what an earlier run left, appends to
    /// it) and, on PostgreSQL, announces itself to other gateways.
    Gateway,
    /// A command that only changes accounts or reads (`tollgate admin …`): leaves the journal
    /// and the gateways' registry to the gateway that may be running beside it.
    Tool,
}

/// Open the store `[store]` names, its rollup days in `tz` (`limits.timezone`), with the
/// writer's `observer`. `env` reads the PostgreSQL URL's variable; `replica` is this
/// gateway's name in a shared database when `store.replica_id` does not set one.
pub async fn open(
    settings: &crate::config::StoreConfig,
    tz: jiff::tz::TimeZone,
    observer: Option<Arc<dyn RowObserver>>,
    env: &dyn Fn(&str) -> Option<String>,
    replica: &str,
    role: Role,
) -> Result<Arc<dyn Store>, StoreError> {
    let options = queue::Options {
        owns_journal: role == Role::Gateway,
        journal: settings.journal,
        queue_capacity: settings.queue_capacity,
        batch_max: settings.batch_max,
        linger: std::time::Duration::from_millis(settings.commit_interval_ms),
        observer,
        ..queue::Options::default()
    };
    match settings.backend {
        crate::config::StoreBackend::Sqlite => {
            let store = sqlite::SqliteStore::open(&settings.path, tz, options)?;
            Ok(store)
        }
        crate::config::StoreBackend::Postgres => {
            let pg = postgres_settings(settings, env)?;
            let replica = settings.replica_id.as_deref().unwrap_or(replica);
            let store = postgres::PgStore::open(
                pg,
                &journal::dir_for(&settings.path),
                tz,
                replica,
                std::time::Duration::from_millis(settings.lease_ms),
                settings.when_unavailable == crate::config::WhenUnavailable::AdmitLocally,
                options,
            )
            .await?;
            Ok(store)
        }
    }
}

/// `tollgate migrate`: bring the store's schema to this version and say what was done. On
/// PostgreSQL under the migration lock (any number of gateways may be starting meanwhile).
pub async fn migrate(
    settings: &crate::config::StoreConfig,
    tz: &jiff::tz::TimeZone,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, StoreError> {
    match settings.backend {
        crate::config::StoreBackend::Sqlite => {
            let path = settings.path.clone();
            let tz = tz.clone();
            tokio::task::spawn_blocking(move || {
                sqlite::schema::open_writer(&path, std::time::Duration::from_secs(30), &tz).map(
                    |_| {
                        format!(
                            "{}: schema version {}",
                            path.display(),
                            sqlite::SCHEMA_VERSION
                        )
                    },
                )
            })
            .await
            .map_err(|e| StoreError::Backend(format!("the migration's task failed: {e}")))?
        }
        crate::config::StoreBackend::Postgres => {
            let pg = postgres_settings(settings, env)?;
            let mut client = pg.connect().await?;
            let done = postgres::schema::migrate(&mut client).await?;
            Ok(if done.from == done.to {
                format!("{}: already at schema version {}", pg.target(), done.to)
            } else {
                format!(
                    "{}: migrated from schema version {} to {}",
                    pg.target(),
                    done.from,
                    done.to
                )
            })
        }
    }
}

/// `tollgate check-config` with `store.backend = "postgres"`: connect and read the schema's
/// version, without changing anything.
pub async fn check(
    settings: &crate::config::StoreConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, StoreError> {
    match settings.backend {
        crate::config::StoreBackend::Sqlite => Ok(format!(
            "SQLite file {} (created on first start)",
            settings.path.display()
        )),
        crate::config::StoreBackend::Postgres => {
            let pg = postgres_settings(settings, env)?;
            let client = pg.connect().await?;
            let version: i64 = match client
                .query_opt("SELECT MAX(version) FROM tollgate_migrations", &[])
                .await
            {
                Ok(row) => row.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0),
                // No table yet: a database Tollgate has not used; `serve` or `migrate` makes it.
                Err(_) => 0,
            };
            Ok(format!(
                "PostgreSQL {} reachable, schema version {version} (this Tollgate writes {})",
                pg.target(),
                postgres::schema::SCHEMA_VERSION
            ))
        }
    }
}

pub(crate) fn postgres_settings(
    settings: &crate::config::StoreConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<postgres::Settings, StoreError> {
    let url = crate::config::database_url(settings, env)
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    postgres::Settings::new(
        url.expose(),
        settings.pool_size,
        std::time::Duration::from_millis(settings.statement_timeout_ms),
    )
}

/// Where the store is, as an error message may name it: the SQLite file, or the PostgreSQL
/// server (never its password).
pub fn describe(
    settings: &crate::config::StoreConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    match settings.backend {
        crate::config::StoreBackend::Sqlite => format!("{} (store.path)", settings.path.display()),
        crate::config::StoreBackend::Postgres => crate::config::database_url(settings, env)
            .ok()
            .and_then(|url| {
                postgres::Settings::new(url.expose(), 1, std::time::Duration::from_secs(1)).ok()
            })
            .map_or_else(
                || {
                    format!(
                        "the database in ${} (store.database_url_env)",
                        settings.database_url_env
                    )
                },
                |s| format!("{} (store.database_url_env)", s.target()),
            ),
    }
}
