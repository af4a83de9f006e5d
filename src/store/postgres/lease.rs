//! Limits shared by every gateway on one database: the gateways' registry, the leases on each
//! user's budgets (`tollgate_lease()`, migration 0003), and the notices that carry an operator's
//! change to every gateway.
//!
//! ```text
//! claim      at start: this gateway's row in tollgate_gateways (lease_until = the database's
//!            now + store.lease_ms), its leases of an earlier life dropped
//! heartbeat  every lease_ms / 4: lease_until pushed forward; on success the ledger's fence
//!            holds for another 3/4 lease_ms (on this gateway's monotonic clock)
//! grant      Ledger::try_admit → Short → one call of tollgate_lease() → Ledger::admit_granted
//! writer     each batch lowers this gateway's leases by its rows' usage (rows::write_rows),
//!            in the transaction that adds it to the rollups
//! agent      every second: leases of users idle for 2 s are given back; every 5 s: every
//!            user's controls re-read; every hour: this gateway's leases of past days and
//!            months deleted
//! listen     LISTEN tollgate_controls: a block, unblock or limit change committed by any
//!            gateway names the user; their controls are re-read and applied
//! leave      a clean stop gives back every lease and removes the row
//! ```
//!
//! **Invariant.** For each user and budget, the rows written plus every live gateway's lease
//! stay below the limit plus one call's hold: a grant is made only while they are below the
//! limit, and grants at most the hold past it (`'last'`) — so over all gateways a burst goes
//! past a limit by at most one call, as on one gateway, and a gateway spends only what its
//! leases hold. A gateway's lease
//! counts while its `lease_until` has not passed: one that dies frees its share within
//! `store.lease_ms`; one cut off from the database stops spending its leases a quarter of that
//! earlier (its fence), before anyone else may grant them again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;

use crate::quota::{
    LeaseAsk, LeaseGrant, LeaseReturn, Ledger, Shared, UserControls, Verdict, lease::PerSlot,
};
use crate::store::StoreError;

use super::Settings;
use super::controls::{CONTROL_COLUMNS, controls_from_row};

/// The channel of the notices of a user's changed controls (payload: the user id; empty:
/// everyone's).
pub const CONTROLS_CHANNEL: &str = "tollgate_controls";

/// The database's clock, unix ms (leases are timed by it, never by a gateway's).
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// A user whose gateway admitted or asked nothing for this long gives their leases back.
const IDLE: Duration = Duration::from_secs(2);

/// This gateway in `tollgate_gateways`.
#[derive(Clone, Debug)]
pub struct Registration {
    pub replica: String,
    /// This process (a random name): a second process under the same `replica` is noticed.
    pub instance: String,
    /// `store.lease_ms`.
    pub lease: Duration,
}

impl Registration {
    pub fn new(replica: &str, lease: Duration) -> Registration {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        Registration {
            replica: replica.to_string(),
            instance: hex::encode(bytes),
            lease,
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// How long this gateway spends its leases after a renewal sent at some moment: three
    /// quarters of the time the others count them.
    pub fn fence(&self) -> Duration {
        self.lease * 3 / 4
    }
}

/// Register this gateway (or take its name back after a restart): its leases of an earlier
/// life are dropped, and a last call it held is free. A name another process renewed within
/// the lease time is taken over with a warning: two live gateways must not share one.
pub async fn claim(c: &impl GenericClient, reg: &Registration) -> Result<(), StoreError> {
    let taken = c
        .query_opt(
            &format!(
                "SELECT instance FROM tollgate_gateways WHERE replica_id = $1 \
                 AND lease_until > {DB_NOW_MS}"
            ),
            &[&reg.replica],
        )
        .await?;
    if let Some(row) = taken {
        let other: String = row.get(0);
        if !other.is_empty() {
            tracing::warn!(
                replica_id = %reg.replica,
                "store: this gateway's name was renewed moments ago by another process; if \
                 that gateway is still running, give each gateway its own store.replica_id"
            );
        }
    }
    c.execute(
        &format!(
            "INSERT INTO tollgate_gateways (replica_id, started_at, seen_at, lease_until, instance) \
             VALUES ($1, {DB_NOW_MS}, {DB_NOW_MS}, {DB_NOW_MS} + $2, $3) \
             ON CONFLICT (replica_id) DO UPDATE SET started_at = EXCLUDED.started_at, \
             seen_at = EXCLUDED.seen_at, lease_until = EXCLUDED.lease_until, \
             instance = EXCLUDED.instance"
        ),
        &[&reg.replica, &reg.lease_ms(), &reg.instance],
    )
    .await?;
    forget(c, &reg.replica).await?;
    Ok(())
}

/// Drop `gateway`'s leases and last calls.
async fn forget(c: &impl GenericClient, gateway: &str) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "DELETE FROM tollgate_leases WHERE gateway = $1",
        &[&gateway],
    )
    .await?;
    Ok(())
}

/// Renew this gateway's leases; `false` when another process holds the name now.
pub async fn renew(c: &impl GenericClient, reg: &Registration) -> Result<bool, StoreError> {
    let n = c
        .execute(
            &format!(
                "UPDATE tollgate_gateways SET seen_at = {DB_NOW_MS}, \
                 lease_until = {DB_NOW_MS} + $2 WHERE replica_id = $1 AND instance = $3"
            ),
            &[&reg.replica, &reg.lease_ms(), &reg.instance],
        )
        .await?;
    Ok(n == 1)
}

/// A clean stop: every lease given back, the row removed, so nobody waits for it to lapse.
pub async fn leave(c: &impl GenericClient, reg: &Registration) -> Result<(), StoreError> {
    forget(c, &reg.replica).await?;
    c.execute(
        "DELETE FROM tollgate_gateways WHERE replica_id = $1 AND instance = $2",
        &[&reg.replica, &reg.instance],
    )
    .await?;
    Ok(())
}

/// Renew the registration every quarter of the lease time; each success moves the ledger's
/// fence. A lost name lapses the fence at once (the leases are someone else's now).
pub async fn heartbeat(pool: Pool, reg: Registration, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(reg.lease / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let renewed = async {
            let c = pool.get().await?;
            renew(&**c, &reg).await
        };
        match tokio::time::timeout(reg.lease / 4, renewed).await {
            Ok(Ok(true)) => {
                shared.fence.renew(sent, reg.fence());
                warned = false;
            }
            Ok(Ok(false)) => {
                shared.fence.lapse();
                tracing::error!(
                    replica_id = %reg.replica,
                    "store: another process took this gateway's name; its leases are void and \
                     calls that need one are refused. Give each gateway its own store.replica_id"
                );
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "store: this gateway's leases were not renewed");
            }
            Err(_) if !warned => {
                warned = true;
                tracing::warn!("store: this gateway's leases were not renewed in time");
            }
            _ => {}
        }
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn ints(v: PerSlot<u64>) -> Vec<i64> {
    v.iter().copied().map(int).collect()
}

fn slots(v: &[i64]) -> PerSlot<u64> {
    std::array::from_fn(|i| v.get(i).map_or(0, |&n| u64::try_from(n).unwrap_or(0)))
}

const GRANT_SQL: &str = "SELECT verdict, refused, granted, used, elsewhere \
     FROM tollgate_lease($1, $2, $3, $4, $5, $6, $7, $8)";

/// Ask for what `ask` needs: one round trip (`tollgate_lease()` does it all under the user's
/// budget row lock).
pub async fn grant(
    c: &deadpool_postgres::Client,
    gateway: &str,
    ask: &LeaseAsk,
) -> Result<LeaseGrant, StoreError> {
    let statement = c.prepare_cached(GRANT_SQL).await?;
    let limit: Vec<Option<i64>> = ask.limit.iter().map(|l| l.map(int)).collect();
    let row = c
        .query_one(
            &statement,
            &[
                &&*ask.user,
                &gateway,
                &ask.day,
                &ask.month,
                &ints(ask.hold),
                &ints(ask.back),
                &limit,
                &ints(ask.want),
            ],
        )
        .await?;
    let verdict: String = row.try_get(0)?;
    let verdict = match verdict.as_str() {
        "fit" => Verdict::Fit,
        "last" => Verdict::Last,
        _ => {
            let slot: Option<i32> = row.try_get(1)?;
            let slot = slot.and_then(|s| usize::try_from(s - 1).ok()).unwrap_or(2);
            Verdict::Refused(slot.min(3))
        }
    };
    Ok(LeaseGrant {
        verdict,
        granted: slots(&row.try_get::<_, Vec<i64>>(2)?),
        used: slots(&row.try_get::<_, Vec<i64>>(3)?),
        elsewhere: slots(&row.try_get::<_, Vec<i64>>(4)?),
    })
}

/// Lower `gateway`'s leases by `amounts` (span, period, user, tokens, cost), locking the rows
/// in key order — as a grant does (day before month) — so that two of these, or one and a
/// grant, never wait on each other in a circle.
pub async fn lower(
    c: &impl GenericClient,
    gateway: &str,
    amounts: &Lowered<'_>,
) -> Result<(), tokio_postgres::Error> {
    if amounts.user.is_empty() {
        return Ok(());
    }
    c.execute(
        "WITH d AS (SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[], \
             $6::int8[]) AS d(span, period, user_id, tokens, cost)), \
         locked AS (SELECT l.user_id, l.span, l.period FROM tollgate_leases l \
             JOIN d USING (user_id, span, period) WHERE l.gateway = $1 \
             ORDER BY l.user_id, l.span, l.period FOR UPDATE OF l) \
         UPDATE tollgate_leases l SET tokens = GREATEST(l.tokens - d.tokens, 0), \
             cost = GREATEST(l.cost - d.cost, 0) \
         FROM d JOIN locked k USING (user_id, span, period) \
         WHERE l.gateway = $1 AND l.user_id = d.user_id AND l.span = d.span \
             AND l.period = d.period",
        &[
            &gateway,
            &amounts.span,
            &amounts.period,
            &amounts.user,
            &amounts.tokens,
            &amounts.cost,
        ],
    )
    .await?;
    Ok(())
}

/// What [`lower`] takes off leases, one entry per (span, period, user).
#[derive(Debug, Default)]
pub struct Lowered<'a> {
    pub span: Vec<&'static str>,
    pub period: Vec<&'a str>,
    pub user: Vec<&'a str>,
    pub tokens: Vec<i64>,
    pub cost: Vec<i64>,
}

impl<'a> Lowered<'a> {
    pub fn push(&mut self, span: &'static str, period: &'a str, user: &'a str, t: [u64; 2]) {
        if t == [0, 0] {
            return;
        }
        self.span.push(span);
        self.period.push(period);
        self.user.push(user);
        self.tokens.push(int(t[0]));
        self.cost.push(int(t[1]));
    }
}

/// Give back what idle users' leases did not spend.
async fn give_back(
    c: &impl GenericClient,
    gateway: &str,
    returns: &[LeaseReturn],
) -> Result<(), tokio_postgres::Error> {
    let mut amounts = Lowered::default();
    for r in returns {
        amounts.push("day", &r.day, &r.user, [r.back[0], r.back[1]]);
        amounts.push("month", &r.month, &r.user, [r.back[2], r.back[3]]);
    }
    lower(c, gateway, &amounts).await
}

/// Every user's controls (users with none left out).
pub async fn all_controls(
    c: &impl GenericClient,
) -> Result<HashMap<String, UserControls>, tokio_postgres::Error> {
    let rows = c
        .query(
            &format!(
                "SELECT id, {CONTROL_COLUMNS} FROM users WHERE blocked \
                 OR blocked_reason IS NOT NULL OR daily_tokens IS NOT NULL \
                 OR monthly_tokens IS NOT NULL OR daily_cost_nano_usd IS NOT NULL \
                 OR monthly_cost_nano_usd IS NOT NULL OR requests_per_minute IS NOT NULL \
                 OR max_concurrent IS NOT NULL"
            ),
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, controls_from_row(r, 1)?)))
        .collect()
}

/// The background work of a gateway whose limits are shared: idle leases given back, controls
/// re-read. Runs until aborted.
pub async fn agent(pool: Pool, gateway: String, ledger: Arc<Ledger>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let idle = ledger.idle_leases(IDLE);
        let reread = n.is_multiple_of(5);
        if idle.is_empty() && !reread && !n.is_multiple_of(3_600) {
            continue;
        }
        let c = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                // Not given back: the leases stay this gateway's, in memory as in the database.
                ledger.restore_leases(&idle);
                tracing::debug!(error = %e, "store: lease upkeep deferred");
                continue;
            }
        };
        if !idle.is_empty()
            && let Err(e) = give_back(&**c, &gateway, &idle).await
        {
            ledger.restore_leases(&idle);
            tracing::debug!(error = %super::describe(&e), "store: idle leases not given back yet");
        }
        // Only the give-back touches the leases: a failure below must not restore them.
        if n.is_multiple_of(3_600) {
            // Leases of days and months that are over limit nobody: this gateway's go.
            let (today, month) = ledger.seed_days();
            if let Err(e) = c
                .execute(
                    "DELETE FROM tollgate_leases WHERE gateway = $1 AND \
                     ((span = 'day' AND period < $2) OR (span = 'month' AND period < $3))",
                    &[&gateway, &today, &month],
                )
                .await
            {
                tracing::debug!(error = %super::describe(&e), "store: past leases not deleted yet");
            }
        }
        if reread {
            match all_controls(&**c).await {
                Ok(all) => {
                    let changed = ledger.replace_controls(&all);
                    if changed > 0 {
                        tracing::info!(
                            users = changed,
                            "store: controls re-read from the database"
                        );
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %super::describe(&e), "store: controls not re-read");
                }
            }
        }
    }
}

/// Listen for changed controls and apply each to the ledger; reconnect when the connection
/// breaks (re-reading everyone then, as notices may have been missed). Runs until aborted.
pub async fn listen(settings: Settings, pool: Pool, ledger: Arc<Ledger>) {
    loop {
        if let Err(e) = listen_once(&settings, &pool, &ledger).await {
            tracing::debug!(error = %e, "store: notices of changed controls interrupted");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(settings: &Settings, pool: &Pool, ledger: &Ledger) -> Result<(), StoreError> {
    let (client, mut notices) = settings.listen(CONTROLS_CHANNEL).await?;
    {
        let c = pool.get().await?;
        ledger.replace_controls(&all_controls(&**c).await?);
    }
    while let Some(user) = notices.recv().await {
        let c = pool.get().await?;
        if user.is_empty() {
            ledger.replace_controls(&all_controls(&**c).await?);
            continue;
        }
        let controls = super::controls::user_controls(&**c, &user)
            .await?
            .unwrap_or_default();
        ledger.apply_controls(&user, &controls);
    }
    drop(client);
    Ok(())
}
