//! The call journal in SQLite: the `call_journal` table, written by the store's one writer.
//!
//! A call about to be forwarded is inserted here ([`insert_open`]) and the proxy waits for the
//! commit (one commit, and with `store.journal = "durable"` one fsync, covers every call that
//! arrived meanwhile). Its row deletes the entry ([`close`]) in the transaction that commits the
//! row, so at any moment a call the upstream may have served has exactly one of the two. At
//! start, [`recover`] turns every entry left behind (the gateway was killed, or the machine lost
//! power) into a `recovered` row — its reservation as the estimate — in one transaction, before
//! the quota ledger is seeded, so the lost call counts against its user's limits.

use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};

use super::{lenient_int, lenient_opt_int};
use crate::provider::Endpoint;
use crate::store::{OpenCall, UsageRow};
use crate::usage::{MAX_COST_NANO_USD_PER_CALL, MAX_TOKENS_PER_CALL, Usage};

/// Insert the entries of calls about to be forwarded.
pub(super) fn insert_open(conn: &Connection, calls: &[OpenCall]) -> rusqlite::Result<()> {
    if calls.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO call_journal (id, request_id, ts, user_id, user_email, user_name, \
         provider, model, endpoint, streamed, hold_input_tokens, hold_output_tokens, \
         hold_cost_nano_usd) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for c in calls {
        stmt.execute(params![
            id(c.journal_id),
            c.request_id,
            c.ts_ms,
            &*c.user_id,
            c.user_email,
            c.user_name,
            &*c.provider,
            c.model,
            c.endpoint,
            c.streamed,
            crate::usage::stored_int(c.hold.input_tokens),
            crate::usage::stored_int(c.hold.output_tokens),
            c.hold_cost_nano_usd,
        ])?;
    }
    Ok(())
}

/// Delete the entries of the calls whose rows are in `rows` (in the rows' transaction).
pub(super) fn close(conn: &Connection, rows: &[UsageRow]) -> rusqlite::Result<()> {
    let mut ids = rows.iter().filter_map(|r| r.journal_id).peekable();
    if ids.peek().is_none() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached("DELETE FROM call_journal WHERE id = ?1")?;
    for jid in ids {
        stmt.execute([id(jid)])?;
    }
    Ok(())
}

/// Every entry left in the journal, oldest first. Read leniently — the gateway must start
/// whatever its own history holds: a number that is not an integer is clamped (a text reads as
/// 0), the reservation is held within the per-call ceilings, a text that is not text is empty.
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

/// The next journal id to hand out: above every id still in the journal.
pub(super) fn next_id(conn: &Connection) -> rusqlite::Result<u64> {
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM call_journal", [], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(max).unwrap_or(0) + 1)
}

fn id(jid: u64) -> i64 {
    i64::try_from(jid).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
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

    #[tokio::test]
    async fn an_entry_left_open_becomes_one_recovered_row_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let tz = jiff::tz::TimeZone::UTC;
        let (queue, writer) = Queue::open_with(&path, tz.clone(), Options::default()).unwrap();
        let open = queue.journal_id().unwrap();
        let closed = queue.journal_id().unwrap();
        queue.open_call(entry(open, "alice")).await.unwrap();
        queue.open_call(entry(closed, "bob")).await.unwrap();
        // bob's call ends and its row closes its entry; alice's never ends (the process dies).
        let mut row = entry(closed, "bob").recovered_row();
        row.outcome = Outcome::Complete;
        row.usage_source = UsageSource::Reported;
        row.status = 200;
        assert!(queue.record(row));
        writer.close();
        let conn = Connection::open(&path).unwrap();
        let left: Vec<u64> = open_calls(&conn)
            .unwrap()
            .iter()
            .map(|c| c.journal_id)
            .collect();
        assert_eq!(left, [open]);
        drop(conn);

        // The next start records alice's call as recovered, once, and empties the journal.
        let (_queue, writer) = Queue::open_with(&path, tz.clone(), Options::default()).unwrap();
        writer.close();
        let (_queue, writer) = Queue::open_with(&path, tz, Options::default()).unwrap();
        writer.close();
        let conn = Connection::open(&path).unwrap();
        type Recorded = (String, String, String, i64, i64, i64, Option<i64>);
        let rows: Vec<Recorded> = conn
            .prepare(
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
            .unwrap();
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
        assert_eq!(rows.len(), 2, "one row each, none recovered twice");
        let (calls, tokens): (i64, i64) = conn
            .query_row(
                "SELECT calls, total_tokens FROM usage_user_monthly WHERE user_id = 'alice'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((calls, tokens), (1, 4_120), "the rollups count it");
        assert!(open_calls(&conn).unwrap().is_empty());
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
