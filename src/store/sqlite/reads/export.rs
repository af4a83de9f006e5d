//! The export of calls: every `token_usage` row of a period, in time order, one at a time.

use rusqlite::{Connection, params};

use super::{CALL_COLUMNS, call_from_row};
use crate::store::CallRow;

fn calls_sql(one_user: bool) -> String {
    if one_user {
        format!(
            "SELECT {CALL_COLUMNS} FROM token_usage WHERE user_id = ?3 AND ts >= ?1 AND ts < ?2 \
             ORDER BY ts, id"
        )
    } else {
        format!("SELECT {CALL_COLUMNS} FROM token_usage WHERE ts >= ?1 AND ts < ?2 ORDER BY ts, id")
    }
}

/// Visit the calls with `ts` in `[from_ms, to_ms)` (of one user, or everyone) in time order
/// (`ts`, then `id`: the order of the index that finds them, so nothing is sorted or held), one
/// row at a time: `f` returns false to stop. Returns how many rows were visited.
pub fn for_each_call(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
    user: Option<&str>,
    mut f: impl FnMut(CallRow) -> bool,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(&calls_sql(user.is_some()))?;
    let mut rows = match user {
        Some(user) => stmt.query(params![from_ms, to_ms, user])?,
        None => stmt.query(params![from_ms, to_ms])?,
    };
    let mut visited = 0;
    while let Some(row) = rows.next()? {
        visited += 1;
        if !f(call_from_row(row)?) {
            break;
        }
    }
    Ok(visited)
}

pub(super) fn statements() -> Vec<String> {
    vec![calls_sql(false), calls_sql(true)]
}
