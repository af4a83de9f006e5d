//! The export of calls on PostgreSQL: every `token_usage` row of a period, in time order, a
//! chunk at a time through a portal (a server-side cursor), so that memory holds one chunk
//! however long the period is.

use std::future::Future;

use tokio_postgres::GenericClient;

use super::{CALL_COLUMNS, call_from_row};
use crate::store::{CallRow, StoreError};

fn calls_sql(one_user: bool) -> String {
    if one_user {
        format!(
            "SELECT {CALL_COLUMNS} FROM token_usage WHERE user_id = $3 AND ts >= $1 AND ts < $2 \
             ORDER BY ts, id"
        )
    } else {
        format!("SELECT {CALL_COLUMNS} FROM token_usage WHERE ts >= $1 AND ts < $2 ORDER BY ts, id")
    }
}

/// Hand the calls with `ts` in `[from_ms, to_ms)` (of one user, or everyone) to `send` in time
/// order (`ts`, then `id`), at most `chunk` rows at a time, never an empty chunk; `send`
/// returns false to stop. The rows are read in a transaction of their own (one snapshot) from
/// a portal, `chunk` rows per round trip.
pub async fn for_each_call(
    c: &mut impl GenericClient,
    from_ms: i64,
    to_ms: i64,
    user: Option<&str>,
    chunk: usize,
    mut send: impl FnMut(Vec<CallRow>) -> bool,
) -> Result<(), StoreError> {
    for_each_chunk(c, from_ms, to_ms, user, chunk, |rows| {
        std::future::ready(send(rows))
    })
    .await
}

/// [`for_each_call`] with a `send` that may wait (e.g. for room in a bounded channel): the
/// next chunk is read only once `send`'s future answers true.
pub async fn for_each_chunk<F, Fut>(
    c: &mut impl GenericClient,
    from_ms: i64,
    to_ms: i64,
    user: Option<&str>,
    chunk: usize,
    mut send: F,
) -> Result<(), StoreError>
where
    F: FnMut(Vec<CallRow>) -> Fut,
    Fut: Future<Output = bool>,
{
    let max_rows = i32::try_from(chunk.max(1)).unwrap_or(i32::MAX);
    let tx = c.transaction().await?;
    let sql = calls_sql(user.is_some());
    let portal = match user {
        Some(user) => tx.bind(sql.as_str(), &[&from_ms, &to_ms, &user]).await?,
        None => tx.bind(sql.as_str(), &[&from_ms, &to_ms]).await?,
    };
    loop {
        let rows = tx.query_portal(&portal, max_rows).await?;
        if rows.is_empty() {
            break;
        }
        // Fewer rows than asked for: the portal is done.
        let last = rows.len() < usize::try_from(max_rows).unwrap_or(usize::MAX);
        let calls = rows
            .iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        drop(rows);
        if !send(calls).await || last {
            break;
        }
    }
    drop(portal);
    tx.commit().await?;
    Ok(())
}
