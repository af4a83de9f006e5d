//! The admin API's reads: users with their usage, one user's usage, system statistics and
//! series, and the export of calls — each a handful of indexed lookups.
//!
//! **Where the numbers come from.** Sums come from the rollups the writer keeps in the same
//! transaction as the rows (`usage_daily` per user/model/endpoint and day, `usage_user_daily`,
//! `usage_user_monthly`, `usage_model_daily`), never from summing `token_usage`, whose rows are
//! only read a page (or one streamed export) at a time through an index. No read sums more than
//! one row per (day, model) over its period or one row per user, so every query stays fast from
//! a cold start over millions of calls, with nothing cached between requests.
//!
//! Readers never block the writer (WAL): each statement reads a snapshot while the writer keeps
//! committing.

use jiff::civil::Date;
use rusqlite::{Connection, Row};

use super::{lenient_int, lenient_opt_int};
use crate::store::{CallRow, ModelUsage};
use crate::usage::Totals;

pub mod export;
pub mod system;
pub mod user;
pub mod users;

/// The rollup columns summed into a [`Totals`], in the order [`totals_at`] reads them.
const SUMS: &str = "COALESCE(SUM(calls), 0), COALESCE(SUM(input_tokens), 0), \
     COALESCE(SUM(cached_input_tokens), 0), COALESCE(SUM(output_tokens), 0), \
     COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(total_tokens), 0), \
     COALESCE(SUM(cost_nano_usd), 0), COALESCE(SUM(estimated_calls), 0), \
     COALESCE(SUM(unpriced_calls), 0), COALESCE(SUM(errors), 0), COALESCE(SUM(latency_ms_sum), 0)";

/// The rollup columns of one row, in [`totals_at`] order.
const COLUMNS: &str = "calls, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, \
     total_tokens, cost_nano_usd, estimated_calls, unpriced_calls, errors, latency_ms_sum";

/// An integer column (or sum) of `row`, read by [`lenient_int`]: a REAL an older writer left
/// (or a `SUM` over one) is clamped, never a failed read.
fn int_at(row: &Row<'_>, at: usize) -> rusqlite::Result<i64> {
    row.get_ref(at).map(lenient_int)
}

fn totals_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Totals> {
    Ok(Totals {
        calls: int_at(row, at)?,
        input_tokens: int_at(row, at + 1)?,
        cached_input_tokens: int_at(row, at + 2)?,
        output_tokens: int_at(row, at + 3)?,
        reasoning_tokens: int_at(row, at + 4)?,
        total_tokens: int_at(row, at + 5)?,
        cost_nano_usd: int_at(row, at + 6)?,
        estimated_calls: int_at(row, at + 7)?,
        unpriced_calls: int_at(row, at + 8)?,
        errors: int_at(row, at + 9)?,
        latency_ms_sum: int_at(row, at + 10)?,
    })
}

fn parse_day(day: &str) -> rusqlite::Result<Date> {
    day.parse::<Date>()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The first day of the month after the one starting `month_start` (`YYYY-MM-01`).
fn next_month(month_start: &str) -> rusqlite::Result<String> {
    let first = parse_day(month_start)?.first_of_month();
    first
        .last_of_month()
        .tomorrow()
        .map(|d| d.to_string())
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Most tokens first, then provider and model.
fn sort_models(models: &mut [ModelUsage]) {
    models.sort_by(|a, b| {
        b.totals
            .total_tokens
            .cmp(&a.totals.total_tokens)
            .then_with(|| a.provider.cmp(&b.provider))
            .then_with(|| a.model.cmp(&b.model))
    });
}

/// The `token_usage` columns of a [`CallRow`], in the contract's order.
pub(super) const CALL_COLUMNS: &str = "id, request_id, ts, user_id, provider, model, endpoint, streamed, \
     status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, \
     cost_nano_usd, usage_source, latency_ms, ttfb_ms, outcome";

pub(super) fn call_from_row(r: &Row<'_>) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        id: r.get(0)?,
        request_id: r.get(1)?,
        ts: r.get(2)?,
        user_id: r.get(3)?,
        provider: r.get(4)?,
        model: r.get(5)?,
        endpoint: r.get(6)?,
        streamed: int_at(r, 7)? != 0,
        status: int_at(r, 8)?,
        input_tokens: int_at(r, 9)?,
        cached_input_tokens: int_at(r, 10)?,
        output_tokens: int_at(r, 11)?,
        reasoning_tokens: int_at(r, 12)?,
        total_tokens: int_at(r, 13)?,
        cost_nano_usd: r.get_ref(14).map(lenient_opt_int)?,
        usage_source: r.get(15)?,
        latency_ms: int_at(r, 16)?,
        ttfb_ms: r.get_ref(17).map(lenient_opt_int)?,
        outcome: r.get(18)?,
    })
}

/// Every statement the reads prepare, for `EXPLAIN QUERY PLAN` checks (tests, the bench).
#[doc(hidden)]
pub fn statements() -> Vec<String> {
    let mut all = Vec::new();
    all.extend(users::statements());
    all.extend(user::statements());
    all.extend(system::statements());
    all.extend(export::statements());
    all
}

/// `EXPLAIN QUERY PLAN` of every statement of [`statements`], with NULL parameters.
#[doc(hidden)]
pub fn query_plans(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    statements()
        .into_iter()
        .map(|sql| {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
            let plan = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((sql, plan))
        })
        .collect()
}

#[cfg(test)]
mod tests;
