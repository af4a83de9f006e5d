//! A user's controls (block, limit overrides) in PostgreSQL's `users` row, the changes an
//! operator makes to them, and the quota seed the ledger starts from.
//!
//! The changes run inside the unit of work's transaction (`work.rs`), so that the audit row
//! commits or rolls back with them, and are safe when several gateways change the same user at
//! once: a missing row is created with `INSERT … ON CONFLICT DO NOTHING` (the second writer
//! waits for the first and finds the row), then read `FOR UPDATE`, so that a change computed
//! from the row's "before" (a patch of some overrides) never overwrites a concurrent one.
//! Converting overrides to and from the stored integers is [`UserOverrides::to_stored`] and
//! [`UserOverrides::from_stored`], shared with the SQLite store.

use std::sync::LazyLock;

use tokio_postgres::GenericClient;

use crate::quota::{
    Change, OverridesPatch, QuotaSeed, SeedTotals, SeedUser, UserControls, UserOverrides,
};
use crate::store::StoreError;

/// The `users` columns of a user's controls, in the order [`controls_from_row`] reads them.
pub(crate) const CONTROL_COLUMNS: &str = "blocked, blocked_reason, daily_tokens, monthly_tokens, \
     daily_cost_nano_usd, monthly_cost_nano_usd, requests_per_minute, max_concurrent";

/// Read [`CONTROL_COLUMNS`] starting at column `at`, the overrides leniently
/// ([`UserOverrides::from_stored`]).
pub(crate) fn controls_from_row(
    row: &tokio_postgres::Row,
    at: usize,
) -> Result<UserControls, tokio_postgres::Error> {
    let int = |i: usize| row.try_get::<_, Option<i64>>(at + i);
    Ok(UserControls {
        blocked: row.try_get(at)?,
        blocked_reason: row.try_get(at + 1)?,
        overrides: UserOverrides::from_stored([
            int(2)?,
            int(3)?,
            int(4)?,
            int(5)?,
            int(6)?,
            int(7)?,
        ]),
    })
}

/// A user's controls, `None` when the user has no row. A pooled client is `&**client`.
pub async fn user_controls(
    c: &(impl GenericClient + Sync),
    user: &str,
) -> Result<Option<UserControls>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            &format!("SELECT {CONTROL_COLUMNS} FROM users WHERE id = $1"),
            &[&user],
        )
        .await?;
    row.map(|r| controls_from_row(&r, 0)).transpose()
}

/// The controls before a change, the row created (with `created_at = now_ms`) when missing and
/// locked until the caller's transaction ends; `true` when this call created it.
async fn controls_for_change(
    tx: &(impl GenericClient + Sync),
    user: &str,
    now_ms: i64,
) -> Result<(UserControls, bool), tokio_postgres::Error> {
    let created = tx
        .execute(
            "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[&user, &now_ms],
        )
        .await?
        == 1;
    let row = tx
        .query_one(
            &format!("SELECT {CONTROL_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"),
            &[&user],
        )
        .await?;
    Ok((controls_from_row(&row, 0)?, created))
}

/// Block (`blocked = true`, with an optional reason) or unblock (the reason is cleared) `user`,
/// creating their row if they never called. Runs in the caller's transaction.
pub async fn set_user_blocked(
    tx: &(impl GenericClient + Sync),
    user: &str,
    blocked: bool,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<Change<UserControls>, tokio_postgres::Error> {
    let (before, created) = controls_for_change(tx, user, now_ms).await?;
    let reason = if blocked { reason } else { None };
    let row = tx
        .query_one(
            &format!(
                "UPDATE users SET blocked = $2, blocked_reason = $3 WHERE id = $1 \
                 RETURNING {CONTROL_COLUMNS}"
            ),
            &[&user, &blocked, &reason],
        )
        .await?;
    Ok(Change {
        before,
        after: controls_from_row(&row, 0)?,
        created,
    })
}

/// Set or clear some of `user`'s overrides (see [`OverridesPatch`]), creating their row if they
/// never called. Runs in the caller's transaction. A value past `i64::MAX` is refused
/// ([`StoreError::Invalid`]) and the caller's transaction must then be dropped, not committed.
pub async fn set_user_overrides(
    tx: &(impl GenericClient + Sync),
    user: &str,
    patch: &OverridesPatch,
    now_ms: i64,
) -> Result<Change<UserControls>, StoreError> {
    let (before, created) = controls_for_change(tx, user, now_ms).await?;
    let next = patch
        .apply(&before.overrides)
        .to_stored()
        .map_err(|_| StoreError::Invalid("a limit is too large to store".into()))?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE users SET daily_tokens = $2, monthly_tokens = $3, \
                 daily_cost_nano_usd = $4, monthly_cost_nano_usd = $5, \
                 requests_per_minute = $6, max_concurrent = $7 WHERE id = $1 \
                 RETURNING {CONTROL_COLUMNS}"
            ),
            &[
                &user, &next[0], &next[1], &next[2], &next[3], &next[4], &next[5],
            ],
        )
        .await?;
    Ok(Change {
        before,
        after: controls_from_row(&row, 0)?,
        created,
    })
}

/// A sum of BIGINTs (a NUMERIC in PostgreSQL) clamped back into BIGINT, as the SQLite store
/// clamps a sum that overflowed: a start never fails on the database's own figures.
fn clamped_sum(column: &str) -> String {
    format!(
        "LEAST(GREATEST(SUM({column}), {min}), {max})::int8",
        min = i64::MIN,
        max = i64::MAX
    )
}

/// The seed in one statement (one snapshot): the controls of every user who has any, full-
/// joined with the per-user sums of the months `>= $2` and of the days `>= $1`.
static SEED_SQL: LazyLock<String> = LazyLock::new(|| {
    let sums = format!(
        "{} AS tokens, {} AS cost, {} AS calls",
        clamped_sum("total_tokens"),
        clamped_sum("cost_nano_usd"),
        clamped_sum("calls")
    );
    format!(
        "WITH c AS (SELECT id, {CONTROL_COLUMNS} FROM users \
             WHERE blocked OR blocked_reason IS NOT NULL \
             OR daily_tokens IS NOT NULL OR monthly_tokens IS NOT NULL \
             OR daily_cost_nano_usd IS NOT NULL OR monthly_cost_nano_usd IS NOT NULL \
             OR requests_per_minute IS NOT NULL OR max_concurrent IS NOT NULL), \
         m AS (SELECT user_id, {sums} FROM usage_user_monthly WHERE month >= $2 \
             GROUP BY user_id), \
         d AS (SELECT user_id, {sums} FROM usage_user_daily WHERE day >= $1 \
             GROUP BY user_id) \
         SELECT COALESCE(c.id, m.user_id, d.user_id), c.blocked IS NOT NULL, \
             c.blocked, c.blocked_reason, c.daily_tokens, c.monthly_tokens, \
             c.daily_cost_nano_usd, c.monthly_cost_nano_usd, c.requests_per_minute, \
             c.max_concurrent, \
             m.tokens, m.cost, m.calls, d.tokens, d.cost, d.calls \
         FROM c FULL JOIN m ON m.user_id = c.id \
             FULL JOIN d ON d.user_id = COALESCE(c.id, m.user_id)"
    )
});

/// Load the [`QuotaSeed`] for `today` and the month starting `month_start` (both in
/// `limits.timezone`): the controls of every user who has any, and the usage totals from the
/// per-user rollups. Users with neither are left out. A pooled client is `&**client`.
pub async fn load_quota_seed(
    c: &(impl GenericClient + Sync),
    today: &str,
    month_start: &str,
) -> Result<QuotaSeed, StoreError> {
    let rows = c.query(SEED_SQL.as_str(), &[&today, &month_start]).await?;
    let mut users = std::collections::BTreeMap::<String, SeedUser>::new();
    for row in rows {
        let totals = |at: usize| -> Result<SeedTotals, tokio_postgres::Error> {
            Ok(SeedTotals {
                tokens: row.try_get::<_, Option<i64>>(at)?.unwrap_or(0),
                cost_nano_usd: row.try_get::<_, Option<i64>>(at + 1)?.unwrap_or(0),
                calls: row.try_get::<_, Option<i64>>(at + 2)?.unwrap_or(0),
            })
        };
        let has_controls: bool = row.try_get(1)?;
        let user = SeedUser {
            controls: if has_controls {
                controls_from_row(&row, 2)?
            } else {
                UserControls::default()
            },
            month: totals(10)?,
            day: totals(13)?,
        };
        users.insert(row.try_get(0)?, user);
    }
    Ok(QuotaSeed {
        day: today.to_string(),
        month_start: month_start.to_string(),
        users,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    //! The operator's controls on `users` and the quota seed, each test on a database of its
    //! own; usage arrives through the real row writer (`rows::write_rows`).

    use std::sync::Arc;

    use jiff::tz::TimeZone;

    use super::*;
    use crate::calendar::DayCache;
    use crate::store::UsageRow;
    use crate::store::postgres::rows::{ensure_partitions, months_of, write_rows};
    use crate::store::postgres::schema::migrate;
    use crate::store::postgres::testing::TestDb;
    use crate::usage::{Outcome, Usage, UsageSource};

    async fn db() -> (TestDb, tokio_postgres::Client) {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        (db, c)
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
            outcome: Outcome::Complete,
            journal_id: None,
            plan: None,
        }
    }

    /// Write `batch` as a gateway whose `limits.timezone` is `tz` does.
    async fn record(c: &mut tokio_postgres::Client, tz: TimeZone, batch: &[UsageRow]) {
        ensure_partitions(c, &months_of(batch)).await.unwrap();
        let mut days = DayCache::new(tz);
        let tx = c.transaction().await.unwrap();
        write_rows(&tx, &mut days, batch, "gw-test").await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn blocked(
        c: &mut tokio_postgres::Client,
        user: &str,
        on: bool,
        reason: Option<&str>,
        at: i64,
    ) -> Change<UserControls> {
        let tx = c.transaction().await.unwrap();
        let change = set_user_blocked(&tx, user, on, reason, at).await.unwrap();
        tx.commit().await.unwrap();
        change
    }

    async fn patched(
        c: &mut tokio_postgres::Client,
        user: &str,
        patch: OverridesPatch,
        at: i64,
    ) -> Result<Change<UserControls>, StoreError> {
        let tx = c.transaction().await.unwrap();
        let change = set_user_overrides(&tx, user, &patch, at).await?;
        tx.commit().await.unwrap();
        Ok(change)
    }

    async fn created_at(c: &tokio_postgres::Client, user: &str) -> i64 {
        c.query_one("SELECT created_at FROM users WHERE id = $1", &[&user])
            .await
            .unwrap()
            .get(0)
    }

    fn noon(d: &str) -> i64 {
        d.parse::<jiff::civil::Date>()
            .unwrap()
            .at(12, 0, 0, 0)
            .to_zoned_datetime(TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    #[tokio::test]
    async fn blocking_a_user_never_seen_creates_their_row_and_reports_before_and_after() {
        let (_db, mut c) = db().await;
        let change = blocked(&mut c, "ann", true, Some("spam"), 1_000).await;
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
        assert_eq!(created_at(&c, "ann").await, 1_000);
        assert_eq!(user_controls(&c, "ann").await.unwrap(), Some(change.after));
        assert_eq!(user_controls(&c, "nobody").await.unwrap(), None);
    }

    #[tokio::test]
    async fn blocking_again_replaces_the_reason_and_unblocking_clears_it() {
        let (_db, mut c) = db().await;
        blocked(&mut c, "bo", true, Some("first"), 1).await;
        let again = blocked(&mut c, "bo", true, None, 2).await;
        assert!(!again.created);
        assert_eq!(again.before.blocked_reason.as_deref(), Some("first"));
        assert_eq!(again.after.blocked_reason, None);
        assert!(again.after.blocked);
        blocked(&mut c, "bo", true, Some("third"), 3).await;
        let unblocked = blocked(&mut c, "bo", false, Some("ignored"), 4).await;
        assert!(unblocked.before.blocked);
        assert_eq!(unblocked.before.blocked_reason.as_deref(), Some("third"));
        assert_eq!(unblocked.after, UserControls::default());
        assert_eq!(created_at(&c, "bo").await, 1, "created once");
    }

    #[tokio::test]
    async fn an_overrides_patch_sets_clears_and_leaves_each_field() {
        let (_db, mut c) = db().await;
        let first = patched(
            &mut c,
            "cy",
            OverridesPatch {
                daily_tokens: Some(Some(5_000)),
                monthly_tokens: Some(Some(0)),
                daily_cost_nano_usd: Some(Some(2_000_000_000)),
                requests_per_minute: Some(Some(10)),
                max_concurrent: Some(Some(2)),
                ..OverridesPatch::default()
            },
            10,
        )
        .await
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
        let second = patched(
            &mut c,
            "cy",
            OverridesPatch {
                daily_tokens: Some(None),
                monthly_cost_nano_usd: Some(Some(7)),
                ..OverridesPatch::default()
            },
            20,
        )
        .await
        .unwrap();
        assert!(!second.created);
        assert_eq!(second.before, first.after);
        assert_eq!(
            second.after.overrides,
            UserOverrides {
                daily_tokens: None,
                monthly_cost_nano_usd: Some(7),
                ..first.after.overrides
            }
        );
        let stored = c
            .query_one(
                "SELECT daily_tokens, monthly_cost_nano_usd, requests_per_minute \
                 FROM users WHERE id = 'cy'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                stored.get::<_, Option<i64>>(0),
                stored.get::<_, Option<i64>>(1),
                stored.get::<_, Option<i64>>(2)
            ),
            (None, Some(7), Some(10)),
            "a cleared override is NULL"
        );
        assert_eq!(created_at(&c, "cy").await, 10);
    }

    #[tokio::test]
    async fn a_change_rolled_back_leaves_nothing_and_an_unstorable_limit_writes_nothing() {
        let (_db, mut c) = db().await;
        {
            let tx = c.transaction().await.unwrap();
            set_user_blocked(&tx, "di", true, Some("x"), 1)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
        }
        assert_eq!(user_controls(&c, "di").await.unwrap(), None);

        blocked(&mut c, "di", true, None, 1).await;
        let err = patched(
            &mut c,
            "di",
            OverridesPatch {
                daily_tokens: Some(Some(1)),
                monthly_tokens: Some(Some(u64::MAX)),
                ..OverridesPatch::default()
            },
            2,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        let controls = user_controls(&c, "di").await.unwrap().unwrap();
        assert!(controls.blocked);
        assert!(controls.overrides.is_empty());
    }

    #[tokio::test]
    async fn the_writer_keeps_an_operators_controls_when_it_records_the_users_calls() {
        let (_db, mut c) = db().await;
        blocked(&mut c, "ed", true, Some("review"), 100).await;
        record(
            &mut c,
            TimeZone::UTC,
            &[usage_row(1, "ed", noon("2025-06-10"), 10)],
        )
        .await;
        let controls = user_controls(&c, "ed").await.unwrap().unwrap();
        assert!(controls.blocked);
        assert_eq!(controls.blocked_reason.as_deref(), Some("review"));
        let email: Option<String> = c
            .query_one("SELECT email FROM users WHERE id = 'ed'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            email.as_deref(),
            Some("ed@example.com"),
            "the writer fills in the claims"
        );
        assert_eq!(created_at(&c, "ed").await, 100);
        // And a row the writer made first is the one an operator's change finds.
        record(
            &mut c,
            TimeZone::UTC,
            &[usage_row(2, "fin", noon("2025-06-10"), 10)],
        )
        .await;
        let change = blocked(&mut c, "fin", true, None, 99_999_999_999_999).await;
        assert!(!change.created);
        assert_eq!(created_at(&c, "fin").await, noon("2025-06-10"));
    }

    #[tokio::test]
    async fn the_quota_seed_holds_every_user_with_controls_or_usage_this_month() {
        let (_db, mut c) = db().await;
        record(
            &mut c,
            TimeZone::UTC,
            &[
                usage_row(1, "fay", noon("2025-06-10"), 100),
                usage_row(2, "fay", noon("2025-06-10"), 20),
                usage_row(3, "fay", noon("2025-06-03"), 3),
                usage_row(4, "fay", noon("2025-05-31"), 1_000), // last month
                usage_row(5, "gil", noon("2025-06-01"), 7),
                usage_row(6, "old", noon("2025-05-20"), 9), // nothing this month
            ],
        )
        .await;
        patched(
            &mut c,
            "hal",
            OverridesPatch {
                max_concurrent: Some(Some(3)),
                ..OverridesPatch::default()
            },
            1,
        )
        .await
        .unwrap();
        blocked(&mut c, "gil", true, None, 1).await;
        // Hand-edited values are read leniently rather than failing the start.
        c.batch_execute(
            "INSERT INTO users (id, created_at, daily_tokens, requests_per_minute) \
             VALUES ('ivy', 1, -5, 99999999999)",
        )
        .await
        .unwrap();
        // Only users with controls are seeded for them: a plain row is not.
        c.batch_execute("INSERT INTO users (id, created_at) VALUES ('joe', 1)")
            .await
            .unwrap();

        let seed = load_quota_seed(&c, "2025-06-10", "2025-06-01")
            .await
            .unwrap();
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
        assert_eq!((fay.day.calls, fay.month.calls), (2, 3));
        assert!(fay.controls.is_default());
        let gil = &seed.users["gil"];
        assert!(gil.controls.blocked);
        assert_eq!((gil.day.tokens, gil.month.tokens), (0, 7));
        assert_eq!(gil.day, SeedTotals::default());
        assert_eq!(seed.users["hal"].controls.overrides.max_concurrent, Some(3));
        assert_eq!(seed.users["hal"].month, SeedTotals::default());
        let ivy = seed.users["ivy"].controls.overrides;
        assert_eq!(
            (ivy.daily_tokens, ivy.requests_per_minute),
            (Some(0), Some(u32::MAX))
        );

        // A user with usage today but none in the monthly rollup (hand-edited) still gets a day.
        c.batch_execute(
            "INSERT INTO usage_user_daily (day, user_id, total_tokens, calls) \
             VALUES ('2025-06-10', 'kim', 4, 1)",
        )
        .await
        .unwrap();
        // Sums past BIGINT are clamped, not a failed start.
        c.execute(
            "INSERT INTO usage_user_monthly (month, user_id, total_tokens) \
             VALUES ('2025-07-01', 'fay', $1)",
            &[&(i64::MAX - 5)],
        )
        .await
        .unwrap();
        let seed = load_quota_seed(&c, "2025-06-10", "2025-06-01")
            .await
            .unwrap();
        assert_eq!(seed.users["kim"].day.tokens, 4);
        assert_eq!(seed.users["kim"].month, SeedTotals::default());
        assert!(seed.users["kim"].controls.is_default());
        assert_eq!(seed.users["fay"].month.tokens, i64::MAX);
        assert_eq!(seed.users["fay"].month.cost_nano_usd, 1_230);
        assert_eq!(seed.users["fay"].day.tokens, 120);
    }

    #[tokio::test]
    async fn seeding_restores_todays_and_this_months_usage_in_the_configured_zone() {
        use crate::quota::{Ledger, Limits, ManualClock};
        use governor::clock::FakeRelativeClock;

        let (_db, mut c) = db().await;
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let utc = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let row = |n: u64, user: &str, at: &str, tokens: u64, cost: Option<i64>| UsageRow {
            cost_nano_usd: cost,
            ..usage_row(n, user, utc(at).as_millisecond(), tokens)
        };
        // Today in Berlin is 10 June 2025; 23:30 UTC on the 9th is already the 10th there.
        record(
            &mut c,
            tz.clone(),
            &[
                row(1, "amy", "2025-06-09T23:30:00Z", 300, Some(3_000)),
                row(2, "amy", "2025-06-10T09:00:00Z", 200, None),
                row(3, "amy", "2025-06-09T21:00:00Z", 1_000, Some(10)),
                row(4, "amy", "2025-05-31T22:30:00Z", 50, None), // 1 June, Berlin
                row(5, "amy", "2025-05-31T21:59:00Z", 7, None),  // 31 May, Berlin
                row(6, "bea", "2025-06-02T10:00:00Z", 40, None),
            ],
        )
        .await;

        let limits = Limits {
            daily_tokens: 1_000,
            monthly_tokens: 1_000_000,
            daily_cost_nano_usd: None,
            monthly_cost_nano_usd: None,
            requests_per_minute: std::num::NonZeroU32::new(1_000_000).unwrap(),
            max_concurrent: None,
        };
        let ledger_at = |at: &str| {
            Ledger::with_clocks(
                limits,
                tz.clone(),
                ManualClock::new(utc(at)),
                FakeRelativeClock::default(),
            )
        };
        let ledger = ledger_at("2025-06-10T10:00:00Z");
        let (today, month) = ledger.seed_days();
        assert_eq!(
            (today.as_str(), month.as_str()),
            ("2025-06-10", "2025-06-01")
        );
        let seed = load_quota_seed(&c, &today, &month).await.unwrap();
        assert_eq!(ledger.seed(&seed), 2);
        let amy = ledger.status("amy");
        assert_eq!(amy.day.used_tokens, 500);
        assert_eq!(amy.day.used_cost_nano_usd, 3_000);
        assert_eq!(amy.month.used_tokens, 1_550);
        assert_eq!(amy.month.used_cost_nano_usd, 3_010);
        let bea = ledger.status("bea");
        assert_eq!((bea.day.used_tokens, bea.month.used_tokens), (0, 40));

        // A seed loaded before midnight is stale after it: its day totals are skipped.
        let seed = load_quota_seed(&c, "2025-06-09", "2025-06-01")
            .await
            .unwrap();
        let later = ledger_at("2025-06-09T22:00:01Z");
        later.seed(&seed);
        let amy = later.status("amy");
        assert_eq!(amy.day.used_tokens, 0);
        assert_eq!(amy.month.used_tokens, 1_550);
    }
}
