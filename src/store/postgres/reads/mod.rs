//! The admin API's reads on PostgreSQL: users with their usage, one user's usage, system
//! statistics and series, and the export of calls — the same questions, answered the same way,
//! as the SQLite store's reads (`crate::store::sqlite::reads`).
//!
//! **Where the numbers come from.** Sums come from the rollups the writer keeps in the same
//! transaction as the rows (`usage_daily`, `usage_user_daily`, `usage_user_monthly`,
//! `usage_model_daily`), never from summing `token_usage`, whose rows are only read a page (or
//! one export, a chunk at a time) at a time through an index.
//!
//! **Where PostgreSQL differs, and how the answers stay the same.** `SUM` over a BIGINT is a
//! NUMERIC: every sum is clamped back into the BIGINT range (`SUMS`), as the SQLite reads
//! clamp. Text that is ordered or searched is compared as bytes (`COLLATE "C"`) and folded for
//! ASCII letters only, as SQLite's `BINARY` collation and `LIKE` do; `NULL`s sort first in
//! ascending order, as in SQLite. Days are `YYYY-MM-DD` text, which orders the same in any
//! collation.
//!
//! Every function takes any [`tokio_postgres::GenericClient`]: a plain client, a transaction,
//! or a pooled connection (`&**pooled`).

use std::sync::LazyLock;

use jiff::civil::Date;
use tokio_postgres::Row;

use crate::store::{CallRow, ModelUsage, StoreError};
use crate::usage::Totals;

pub mod export;
pub mod system;
pub mod user;
pub mod users;

/// The rollup columns of a [`Totals`], in the order [`totals_at`] reads them.
const TOTALS_COLUMNS: [&str; 11] = [
    "calls",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_nano_usd",
    "estimated_calls",
    "unpriced_calls",
    "errors",
    "latency_ms_sum",
];

/// The rollup columns summed into a [`Totals`], in [`totals_at`] order: each sum (a NUMERIC)
/// clamped into the BIGINT range, 0 over no rows.
static SUMS: LazyLock<String> = LazyLock::new(|| {
    TOTALS_COLUMNS
        .iter()
        .map(|c| {
            format!(
                "GREATEST(LEAST(COALESCE(SUM({c}), 0), {max}), {min})::int8",
                max = i64::MAX,
                min = i64::MIN
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
});

/// The rollup columns of one row, in [`totals_at`] order.
static COLUMNS: LazyLock<String> = LazyLock::new(|| TOTALS_COLUMNS.join(", "));

/// The [`Totals`] in the eleven BIGINT columns of `row` from `at` on.
fn totals_at(row: &Row, at: usize) -> Result<Totals, StoreError> {
    let int = |i: usize| row.try_get::<_, i64>(at + i);
    Ok(Totals {
        calls: int(0)?,
        input_tokens: int(1)?,
        cached_input_tokens: int(2)?,
        output_tokens: int(3)?,
        reasoning_tokens: int(4)?,
        total_tokens: int(5)?,
        cost_nano_usd: int(6)?,
        estimated_calls: int(7)?,
        unpriced_calls: int(8)?,
        errors: int(9)?,
        latency_ms_sum: int(10)?,
    })
}

/// A day (`YYYY-MM-DD`); a malformed one is an error naming it.
fn parse_day(day: &str) -> Result<Date, StoreError> {
    day.parse::<Date>()
        .map_err(|e| StoreError::Backend(format!("not a day: {day:?}: {e}")))
}

/// The first day of the month after the one starting `month_start` (`YYYY-MM-01`).
fn next_month(month_start: &str) -> Result<String, StoreError> {
    let first = parse_day(month_start)?.first_of_month();
    first
        .last_of_month()
        .tomorrow()
        .map(|d| d.to_string())
        .map_err(|e| StoreError::Backend(format!("no month after {month_start:?}: {e}")))
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

/// A [`ModelUsage`] from `provider, model, <SUMS>` (the rollups keep `''` for no model).
fn model_from_row(row: &Row) -> Result<ModelUsage, StoreError> {
    let model: String = row.try_get(1)?;
    Ok(ModelUsage {
        provider: row.try_get(0)?,
        model: (!model.is_empty()).then_some(model),
        totals: totals_at(row, 2)?,
    })
}

/// The `token_usage` columns of a [`CallRow`], in the contract's order.
const CALL_COLUMNS: &str = "id, request_id, ts, user_id, provider, model, endpoint, streamed, \
     status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, \
     cost_nano_usd, usage_source, latency_ms, ttfb_ms, outcome";

fn call_from_row(r: &Row) -> Result<CallRow, StoreError> {
    Ok(CallRow {
        id: r.try_get(0)?,
        request_id: r.try_get(1)?,
        ts: r.try_get(2)?,
        user_id: r.try_get(3)?,
        provider: r.try_get(4)?,
        model: r.try_get(5)?,
        endpoint: r.try_get(6)?,
        streamed: r.try_get(7)?,
        status: r.try_get(8)?,
        input_tokens: r.try_get(9)?,
        cached_input_tokens: r.try_get(10)?,
        output_tokens: r.try_get(11)?,
        reasoning_tokens: r.try_get(12)?,
        total_tokens: r.try_get(13)?,
        cost_nano_usd: r.try_get(14)?,
        usage_source: r.try_get(15)?,
        latency_ms: r.try_get(16)?,
        ttfb_ms: r.try_get(17)?,
        outcome: r.try_get(18)?,
    })
}

#[cfg(test)]
mod tests;
