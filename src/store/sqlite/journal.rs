//! The call journal's side in SQLite: what a start does with the entries left behind.
//!
//! The journal itself is a file of its own ([`crate::store::journal`]); a row carries its
//! entry's id in `token_usage.journal_id`. At start, before the quota ledger is seeded,
//! [`recover_file`] keeps every entry whose row is missing (the gateway was killed, or the
//! machine lost power, while the call was in flight) as a `recovered` row — its reservation as
//! the estimate — in one fsynced transaction, then removes the segments: a kill in between
//! finds the rows the next time and adds nothing twice.
//!
//! [`recover_table`] does the same, once, for the `call_journal` table in which Tollgate 0.x
//! before the file journal kept its entries, so an upgrade loses none of them.

use std::path::Path;
use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::writer::write_rows;
use super::{lenient_int, lenient_opt_int};
use crate::calendar::DayCache;
use crate::provider::Endpoint;
use crate::store::journal;
use crate::store::{OpenCall, StoreError, UsageRow};
use crate::usage::{MAX_COST_NANO_USD_PER_CALL, MAX_TOKENS_PER_CALL, Usage};

/// Record the calls the journal in `dir` holds without a row, then empty it. Returns the
/// highest journal id it saw, above which new ids start.
pub(super) fn recover_file(
    conn: &mut Connection,
    days: &mut DayCache,
    dir: &Path,
) -> Result<u64, StoreError> {
    let mut left = journal::read_dir(dir)?;
    if !left.calls.is_empty() {
        let seen = left.calls.len();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rows = Vec::new();
        {
            let mut has_row = tx.prepare(
                "SELECT 1 FROM token_usage WHERE user_id = ?1 AND ts = ?2 AND journal_id = ?3",
            )?;
            let calls = std::mem::take(&mut left.calls);
            for call in calls {
                let id = i64::try_from(call.journal_id).unwrap_or(i64::MAX);
                let found = has_row
                    .query_row(
                        rusqlite::params![&*call.user_id, call.ts_ms, id],
                        |_| Ok(()),
                    )
                    .optional()?;
                if found.is_none() {
                    rows.push(left.row_for(call));
                }
            }
        }
        write_rows(&tx, days, &rows)?;
        tx.commit()?;
        log_recovered(&rows, seen);
    }
    journal::clear_dir(dir)?;
    Ok(left.max_id)
}

/// Record the entries an older Tollgate left in the `call_journal` table, and empty it.
pub(super) fn recover_table(conn: &mut Connection, days: &mut DayCache) -> Result<(), StoreError> {
    let left = open_calls(conn)?;
    if left.is_empty() {
        return Ok(());
    }
    let seen = left.len();
    let rows: Vec<UsageRow> = left.into_iter().map(OpenCall::recovered_row).collect();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    write_rows(&tx, days, &rows)?;
    tx.execute("DELETE FROM call_journal", [])?;
    tx.commit()?;
    log_recovered(&rows, seen);
    Ok(())
}

fn log_recovered(rows: &[UsageRow], entries: usize) {
    if rows.is_empty() {
        tracing::info!(
            entries,
            "store: every call in the journal already had its row"
        );
        return;
    }
    let tokens: u64 = rows.iter().map(|r| r.usage.total()).sum();
    tracing::warn!(
        calls = rows.len(),
        estimated_tokens = tokens,
        "store: calls in flight when the gateway last stopped are recorded as 'recovered', \
         their reservations as the estimate"
    );
}

/// Every entry left in the `call_journal` table, oldest first. Read leniently — the gateway
/// must start whatever its own history holds: a number that is not an integer is clamped (a
/// text reads as 0), the reservation is held within the per-call ceilings, a text that is not
/// text is empty.
pub(super) fn open_calls(conn: &Connection) -> rusqlite::Result<Vec<OpenCall>> {
    let mut stmt = conn.prepare(
        "SELECT id, request_id, ts, user_id, user_email, user_name, provider, model, endpoint, \
         streamed, hold_input_tokens, hold_output_tokens, hold_cost_nano_usd \
         FROM call_journal ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let int = |i: usize| r.get_ref(i).map(lenient_int);
        let text = |i: usize| -> rusqlite::Result<Option<String>> {
            Ok(match r.get_ref(i)? {
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Integer(n) => Some(n.to_string()),
                ValueRef::Real(f) => Some(f.to_string()),
                ValueRef::Null | ValueRef::Blob(_) => None,
            })
        };
        let tokens = |i: usize| -> rusqlite::Result<u64> {
            Ok(u64::try_from(int(i)?).unwrap_or(0).min(MAX_TOKENS_PER_CALL))
        };
        Ok(OpenCall {
            journal_id: u64::try_from(int(0)?).unwrap_or(0),
            request_id: text(1)?.unwrap_or_default(),
            ts_ms: int(2)?,
            user_id: Arc::from(text(3)?.unwrap_or_default()),
            user_email: text(4)?,
            user_name: text(5)?,
            provider: Arc::from(text(6)?.unwrap_or_default()),
            model: text(7)?,
            endpoint: Endpoint::parse(&text(8)?.unwrap_or_default()).as_str(),
            streamed: int(9)? != 0,
            hold: Usage {
                input_tokens: tokens(10)?,
                output_tokens: tokens(11)?,
                ..Usage::default()
            },
            hold_cost_nano_usd: r
                .get_ref(12)
                .map(lenient_opt_int)?
                .map(|c| c.clamp(0, MAX_COST_NANO_USD_PER_CALL)),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::config::JournalMode;
    use crate::store::sqlite::writer::{Options, Queue};
    use crate::usage::{Outcome, UsageSource};

    fn entry(jid: u64, user: &str) -> OpenCall {
        OpenCall {
            journal_id: jid,
            request_id: format!("req-{jid}"),
            ts_ms: 1_780_000_000_000,
            user_id: Arc::from(user),
            user_email: Some("a@example.com".into()),
            user_name: None,
            provider: Arc::from("openai"),
            model: Some("gpt-4o-mini".into()),
            endpoint: "chat.completions",
            streamed: true,
            hold: Usage {
                input_tokens: 120,
                output_tokens: 4_000,
                ..Usage::default()
            },
            hold_cost_nano_usd: Some(2_418_000),
        }
    }

    type Recorded = (String, String, String, i64, i64, i64, Option<i64>);

    fn recorded(conn: &Connection) -> Vec<Recorded> {
        conn.prepare(
            "SELECT user_id, outcome, usage_source, status, input_tokens, output_tokens, \
             cost_nano_usd FROM token_usage ORDER BY user_id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    fn segments(path: &Path) -> usize {
        std::fs::read_dir(journal::dir_for(path)).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".calls"))
            })
            .count()
        })
    }

    #[tokio::test]
    async fn an_entry_left_open_becomes_one_recovered_row_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let tz = jiff::tz::TimeZone::UTC;
        let (queue, writer) = Queue::open_with(&path, tz.clone(), Options::default()).unwrap();
        let open = queue.journal_id().unwrap();
        let closed = queue.journal_id().unwrap();
        assert!(closed > open, "ids only grow");
        queue.open_call(entry(open, "alice")).await.unwrap();
        queue.open_call(entry(closed, "bob")).await.unwrap();
        // bob's call ends and its row closes its entry; alice's never ends (the process dies).
        let mut row = entry(closed, "bob").recovered_row();
        row.outcome = Outcome::Complete;
        row.usage_source = UsageSource::Reported;
        row.status = 200;
        assert!(queue.record(row));
        writer.close();
        // Stopped with alice's entry open: the segment stays for the next start, and it still
        // holds bob's entry too, whose row the next start must find.
        assert_eq!(segments(&path), 1);
        let left = journal::read_dir(&journal::dir_for(&path)).unwrap();
        let ids: Vec<u64> = left.calls.iter().map(|c| c.journal_id).collect();
        assert_eq!(ids, [open, closed]);
        assert_eq!(
            left.calls[0],
            entry(open, "alice"),
            "the entry reads back whole"
        );

        // The next start records alice's call as recovered, once, and empties the journal.
        let (queue, writer) = Queue::open_with(&path, tz.clone(), Options::default()).unwrap();
        assert!(
            queue.journal_id().unwrap() > closed,
            "no id is handed out twice"
        );
        writer.close();
        assert_eq!(segments(&path), 0, "a clean stop leaves no segment");
        let (_queue, writer) = Queue::open_with(&path, tz, Options::default()).unwrap();
        writer.close();
        let conn = Connection::open(&path).unwrap();
        let rows = recorded(&conn);
        assert_eq!(
            rows[0],
            (
                "alice".into(),
                "recovered".into(),
                "estimated".into(),
                0,
                120,
                4_000,
                Some(2_418_000)
            )
        );
        assert_eq!(rows[1].1, "complete");
        assert_eq!(rows.len(), 2, "one row each, none recovered twice");
        let (calls, tokens): (i64, i64) = conn
            .query_row(
                "SELECT calls, total_tokens FROM usage_user_monthly WHERE user_id = 'alice'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((calls, tokens), (1, 4_120), "the rollups count it");
    }

    #[tokio::test]
    async fn a_torn_last_entry_is_skipped_and_the_ones_before_it_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let tz = jiff::tz::TimeZone::UTC;
        let options = Options {
            journal: JournalMode::Process,
            ..Options::default()
        };
        let (queue, writer) = Queue::open_with(&path, tz.clone(), options.clone()).unwrap();
        for user in ["carol", "dave", "erin"] {
            let id = queue.journal_id().unwrap();
            queue.open_call(entry(id, user)).await.unwrap();
        }
        writer.close();
        // The kill came in the middle of erin's write: her record is cut short.
        let segment = std::fs::read_dir(journal::dir_for(&path))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "calls"))
            .unwrap();
        let bytes = std::fs::read(&segment).unwrap();
        std::fs::write(&segment, &bytes[..bytes.len() - 7]).unwrap();

        let (_queue, writer) = Queue::open_with(&path, tz, options).unwrap();
        writer.close();
        let conn = Connection::open(&path).unwrap();
        let users: Vec<String> = recorded(&conn).into_iter().map(|r| r.0).collect();
        assert_eq!(users, ["carol", "dave"]);
        assert_eq!(segments(&path), 0);
    }

    #[tokio::test]
    async fn with_the_journal_off_nothing_is_written_and_no_id_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let options = Options {
            journal: JournalMode::Off,
            ..Options::default()
        };
        let (queue, writer) = Queue::open_with(&path, jiff::tz::TimeZone::UTC, options).unwrap();
        assert_eq!(queue.journal_id(), None);
        queue.open_call(entry(1, "frank")).await.unwrap();
        writer.close();
        assert_eq!(segments(&path), 0);
    }

    #[test]
    fn a_damaged_entry_is_recovered_within_the_ceilings_and_never_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let tz = jiff::tz::TimeZone::UTC;
        let (_queue, writer) = Queue::open_with(&path, tz.clone(), Options::default()).unwrap();
        writer.close();
        // What no writer of ours leaves, as a damaged or hand-edited file could hold it.
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO call_journal (id, request_id, ts, user_id, provider, model, endpoint, \
                 streamed, hold_input_tokens, hold_output_tokens, hold_cost_nano_usd) VALUES \
                 (7, 'req-7', 1.78e12, 'mallory', 'openai', NULL, 'nonsense', 'yes', \
                  'lots', 1e300, 9.9e300)",
                [],
            )
            .unwrap();
        let (_queue, writer) = Queue::open_with(&path, tz, Options::default()).unwrap();
        writer.close();
        let conn = Connection::open(&path).unwrap();
        let row: (i64, String, i64, i64, i64, String) = conn
            .query_row(
                "SELECT ts, endpoint, input_tokens, output_tokens, cost_nano_usd, outcome \
                 FROM token_usage WHERE user_id = 'mallory'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            row,
            (
                1_780_000_000_000,
                "other".into(),
                0,
                i64::try_from(MAX_TOKENS_PER_CALL).unwrap(),
                MAX_COST_NANO_USD_PER_CALL,
                "recovered".into()
            )
        );
        assert!(open_calls(&conn).unwrap().is_empty());
    }
}
