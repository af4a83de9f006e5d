//! `tollgate import --from-sqlite FILE`: an existing SQLite history into the PostgreSQL store
//! the configuration names — users with their controls, every call row (the rollups summed
//! again from them, in `limits.timezone`), admin accounts and the audit trail. Sessions are not
//! carried over (they expire; admins sign in again).
//!
//! **Idempotent and resumable.** The history is known by a fingerprint (its first call), and
//! how far its import got is kept in `tollgate_imports`, moved forward in the same transaction
//! as each chunk of rows: run again after an interruption, the import continues where it
//! stopped; run again after it finished, it adds nothing. Users and accounts are upserts
//! (an operator's later change in PostgreSQL wins over the file's).
//!
//! The file is read with SQLite (`store::sqlite::dump`), written with PostgreSQL
//! (`store::postgres::import`); this module only drives the two and reports progress.

use std::path::Path;

use crate::store::{CallRow, StoreError, UsageRow};
use crate::usage::{Outcome, Usage, UsageSource};

/// Calls moved per transaction.
pub const CHUNK: usize = 5_000;

/// One user as the file keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportUser {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    pub daily_tokens: Option<i64>,
    pub monthly_tokens: Option<i64>,
    pub daily_cost_nano_usd: Option<i64>,
    pub monthly_cost_nano_usd: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub max_concurrent: Option<i64>,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    /// The plan of the user's latest call (`None` in a file older than schema version 5).
    pub plan: Option<String>,
}

/// An admin account as the file keeps it (the password only as its argon2id hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportAccount {
    pub name: String,
    pub password_hash: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub users: u64,
    pub calls: u64,
    /// Calls the file holds that an earlier run of this import already brought over.
    pub calls_already: u64,
    pub accounts: u64,
    pub audit_rows: u64,
}

/// A stored call as the writer's row: the usage, source and outcome read back from their
/// columns (a value this Tollgate does not know becomes `estimated` / `internal_error`, never a
/// refused import).
pub fn usage_row(c: CallRow) -> UsageRow {
    let tokens = |n: i64| u64::try_from(n).unwrap_or(0);
    UsageRow {
        request_id: c.request_id,
        ts_ms: c.ts,
        user_id: c.user_id.into(),
        user_email: None,
        user_name: None,
        provider: c.provider.into(),
        model: c.model,
        endpoint: crate::provider::Endpoint::parse(&c.endpoint).as_str(),
        streamed: c.streamed,
        status: u16::try_from(c.status).unwrap_or(0),
        usage: Usage {
            input_tokens: tokens(c.input_tokens),
            cached_input_tokens: tokens(c.cached_input_tokens),
            output_tokens: tokens(c.output_tokens),
            reasoning_tokens: tokens(c.reasoning_tokens),
        },
        cost_nano_usd: c.cost_nano_usd,
        usage_source: UsageSource::parse(&c.usage_source).unwrap_or(UsageSource::Estimated),
        latency_ms: u64::try_from(c.latency_ms).unwrap_or(0),
        ttfb_ms: c.ttfb_ms.and_then(|t| u64::try_from(t).ok()),
        outcome: Outcome::parse(&c.outcome).unwrap_or(Outcome::InternalError),
        journal_id: None,
        plan: None,
    }
}

/// Import the SQLite store at `file` into the PostgreSQL store `settings` names; `progress`
/// is told (calls done, calls in the file) after every chunk. The file is only read (it may
/// be a copy taken while a gateway ran: SQLite's WAL keeps it consistent).
pub async fn from_sqlite(
    settings: &crate::config::StoreConfig,
    tz: jiff::tz::TimeZone,
    env: &dyn Fn(&str) -> Option<String>,
    file: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Imported, StoreError> {
    if settings.backend != crate::config::StoreBackend::Postgres {
        return Err(StoreError::Backend(
            "the configuration's store is SQLite: set store.backend = \"postgres\" (and the \
             database URL's variable) to import into PostgreSQL"
                .into(),
        ));
    }
    let pg = super::postgres_settings(settings, env)?;
    let dump = super::sqlite::dump::Dump::open(file)?;
    let mut client = pg.connect().await?;
    super::postgres::schema::migrate(&mut client).await?;
    let fingerprint = dump.fingerprint()?;
    let source = file.display().to_string();
    let mut done = Imported::default();

    let users = dump.users()?;
    done.users = super::postgres::import::users(&mut client, &users).await?;
    let accounts = dump.accounts()?;
    done.accounts = super::postgres::import::accounts(&mut client, &accounts).await?;

    let total = dump.calls()?;
    let mut at = super::postgres::import::progress(&client, &fingerprint).await?;
    let mut days = crate::calendar::DayCache::new(tz);
    done.calls_already = dump.calls_up_to(at.last_call_id)?;
    let mut moved = done.calls_already;
    progress(moved, total);
    loop {
        let chunk = dump.calls_after(at.last_call_id, CHUNK)?;
        let Some(last) = chunk.last().map(|c| c.id) else {
            break;
        };
        let n = chunk.len() as u64;
        let rows: Vec<UsageRow> = chunk.into_iter().map(usage_row).collect();
        super::postgres::import::calls(&mut client, &fingerprint, &source, &rows, last, &mut days)
            .await?;
        at.last_call_id = last;
        done.calls += n;
        moved += n;
        progress(moved, total);
    }
    loop {
        let chunk = dump.audit_after(at.last_audit_id, CHUNK)?;
        let Some(last) = chunk.last().map(|a| a.id) else {
            break;
        };
        done.audit_rows += chunk.len() as u64;
        super::postgres::import::audit(&mut client, &fingerprint, &source, &chunk, last).await?;
        at.last_audit_id = last;
    }
    Ok(done)
}
