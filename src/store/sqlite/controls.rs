//! A user's controls (block, limit overrides) in the `users` row, the changes an operator makes
//! to them, and the quota seed the ledger starts from.
//!
//! The changes run inside a transaction their caller owns (the unit of work in `work.rs`), so
//! that the audit row commits — or rolls back — with the change; each returns the row's controls
//! before and after.

use std::collections::HashMap;

use super::lenient_int;
use rusqlite::{Connection, params};

use crate::quota::{
    Change, OverridesPatch, QuotaSeed, SeedTotals, SeedUser, UserControls, UserOverrides,
};

pub(crate) const CONTROL_COLUMNS: &str = "blocked, blocked_reason, daily_tokens, monthly_tokens, \
     daily_cost_nano_usd, monthly_cost_nano_usd, requests_per_minute, max_concurrent";

/// Read [`CONTROL_COLUMNS`] starting at column `at`, the overrides as
/// [`UserOverrides::from_stored`] reads them (leniently).
pub(crate) fn controls_from_row(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<UserControls> {
    let int = |i: usize| row.get::<_, Option<i64>>(at + i);
    Ok(UserControls {
        blocked: row.get::<_, i64>(at)? != 0,
        blocked_reason: row.get(at + 1)?,
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
    let next = patch
        .apply(&before.overrides)
        .to_stored()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached(
        "UPDATE users SET daily_tokens = ?2, monthly_tokens = ?3, daily_cost_nano_usd = ?4, \
         monthly_cost_nano_usd = ?5, requests_per_minute = ?6, max_concurrent = ?7 WHERE id = ?1",
    )?
    .execute(params![
        user, next[0], next[1], next[2], next[3], next[4], next[5]
    ])?;
    let after = user_controls(tx, user)?.unwrap_or_default();
    Ok(Change {
        before,
        after,
        created,
    })
}

/// Load the [`QuotaSeed`] for `today` and the month starting `month_start` (both in
/// `limits.timezone`): the controls of every user who has any, and the usage totals from the
/// per-user rollups (one row per user and day or month). Users with neither are left out.
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
    for (id, totals) in totals_since(conn, MONTH_TOTALS_SQL, month_start)? {
        users.entry(id).or_default().month = totals;
    }
    for (id, totals) in totals_since(conn, DAY_TOTALS_SQL, today)? {
        users.entry(id).or_default().day = totals;
    }
    Ok(QuotaSeed {
        day: today.to_string(),
        month_start: month_start.to_string(),
        users,
    })
}

/// Per-user usage from the per-user rollups of every day (or month) `>= ?1`.
const DAY_TOTALS_SQL: &str = "SELECT user_id, SUM(total_tokens), SUM(cost_nano_usd), SUM(calls) \
     FROM usage_user_daily WHERE day >= ?1 GROUP BY user_id";
const MONTH_TOTALS_SQL: &str = "SELECT user_id, SUM(total_tokens), SUM(cost_nano_usd), SUM(calls) \
     FROM usage_user_monthly WHERE month >= ?1 GROUP BY user_id";

fn totals_since(
    conn: &Connection,
    sql: &str,
    since: &str,
) -> rusqlite::Result<HashMap<String, SeedTotals>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([since], |r| {
        Ok((
            r.get::<_, String>(0)?,
            SeedTotals {
                tokens: r.get_ref(1).map(lenient_int)?,
                cost_nano_usd: r.get_ref(2).map(lenient_int)?,
                calls: r.get_ref(3).map(lenient_int)?,
            },
        ))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    //! The operator's controls on `users` and the quota seed, on a temp SQLite file.

    use std::path::PathBuf;
    use std::sync::Arc;

    use jiff::tz::TimeZone;
    use rusqlite::TransactionBehavior;

    use super::*;
    use crate::store::UsageRow;
    use crate::store::sqlite::Queue;
    use crate::store::sqlite::schema::{apply_schema, open_reader};
    use crate::usage::{Outcome, Usage, UsageSource};

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn db() -> (Db, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.db");
        let conn = Connection::open(&path).unwrap();
        apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
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
            outcome: Outcome::Complete,
            journal_id: None,
            plan: None,
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
        let (store, writer) = Queue::open(&db.path, TimeZone::UTC, 8, 8).unwrap();
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
        let (store, writer) = Queue::open(&db.path, TimeZone::UTC, 64, 64).unwrap();
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
        assert_eq!(seed.users["hal"].month, SeedTotals::default());
        let ivy = seed.users["ivy"].controls.overrides;
        assert_eq!(
            (ivy.daily_tokens, ivy.requests_per_minute),
            (Some(0), Some(u32::MAX))
        );
    }

    #[test]
    fn seeding_restores_todays_and_this_months_usage_in_the_configured_zone() {
        use crate::quota::{Ledger, Limits, ManualClock};
        use governor::clock::FakeRelativeClock;

        let (db, _conn) = db();
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let utc = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let row = |n: u64, user: &str, at: &str, tokens: u64, cost: Option<i64>| UsageRow {
            cost_nano_usd: cost,
            ..usage_row(n, user, utc(at).as_millisecond(), tokens)
        };
        let (store, writer) = Queue::open(&db.path, tz.clone(), 64, 64).unwrap();
        // Today in Berlin is 10 June 2025; 23:30 UTC on the 9th is already the 10th there.
        store.record(row(1, "amy", "2025-06-09T23:30:00Z", 300, Some(3_000)));
        store.record(row(2, "amy", "2025-06-10T09:00:00Z", 200, None));
        store.record(row(3, "amy", "2025-06-09T21:00:00Z", 1_000, Some(10)));
        store.record(row(4, "amy", "2025-05-31T22:30:00Z", 50, None)); // 1 June, Berlin
        store.record(row(5, "amy", "2025-05-31T21:59:00Z", 7, None)); // 31 May, Berlin
        store.record(row(6, "bea", "2025-06-02T10:00:00Z", 40, None));
        writer.close();

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
        let conn = open_reader(&db.path).unwrap();
        let seed = load_quota_seed(&conn, &today, &month).unwrap();
        assert_eq!(ledger.seed(&seed), 2);
        let amy = ledger.status("amy");
        assert_eq!(amy.day.used_tokens, 500);
        assert_eq!(amy.day.used_cost_nano_usd, 3_000);
        assert_eq!(amy.month.used_tokens, 1_550);
        assert_eq!(amy.month.used_cost_nano_usd, 3_010);
        let bea = ledger.status("bea");
        assert_eq!((bea.day.used_tokens, bea.month.used_tokens), (0, 40));

        // A seed loaded before midnight is stale after it: its day totals are skipped.
        let seed = load_quota_seed(&conn, "2025-06-09", "2025-06-01").unwrap();
        let later = ledger_at("2025-06-09T22:00:01Z");
        later.seed(&seed);
        let amy = later.status("amy");
        assert_eq!(amy.day.used_tokens, 0);
        assert_eq!(amy.month.used_tokens, 1_550);
    }
}
