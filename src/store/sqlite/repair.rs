//! The repair of impossible figures an older Tollgate could leave in a database, run once, in
//! the transaction that migrates the file to schema version 3 (`schema::apply_schema`).
//!
//! Before version 3 an upstream's usage report was stored as it came: a `prompt_tokens` of
//! 2⁶⁴ − 1 became `i64::MAX` tokens and a cost of billions of dollars, and the rollups' `x +
//! excluded.x` then overflowed into REALs that no read of an INTEGER column accepts — the admin
//! API answered 500 and the quota seed refused to start. What this does, soundly and once:
//!
//! 1. **Calls.** A `token_usage` row whose token counts are not integers within
//!    `[0, MAX_TOKENS_PER_CALL]` (or whose total is not input + output, or whose cost is not an
//!    integer within `[0, MAX_COST_NANO_USD_PER_CALL]`) is rewritten: each token count that is a
//!    number in range is kept (as an integer); any other is unknown and becomes 0; the total is
//!    input + output again; a row with an unknown count is flagged `usage_source = 'invalid'`
//!    and its cost, priced on the impossible count, becomes NULL (unknown: the call counts as
//!    unpriced). The provider's real numbers are lost for good — keeping the in-range fields is
//!    the best left to do.
//! 2. **Rollups.** A rollup row is wrong when it holds a repaired call, or a value that is not a
//!    non-negative integer, or more than its `calls` allow (more than the per-call ceilings
//!    times `calls`, more estimated/unpriced/error calls than calls). Each such `usage_daily`
//!    row is summed again from its calls in `token_usage` (the day's bounds in
//!    `limits.timezone`), then each coarse row (`usage_user_daily`, `usage_user_monthly`,
//!    `usage_model_daily`) over an affected key, or wrong itself, is summed again from
//!    `usage_daily` — so the rollups equal the sum of the rows again. Sums are made in Rust,
//!    saturating, never by SQL's `SUM`, which fails on an integer overflow.
//!
//! Only a file migrated from version 1 or 2 can hold such values: version 3 writers check every
//! report against the ceiling and saturate their sums. The scan of `token_usage` reads every row
//! (tens of seconds at ten million calls, once); nothing here runs at a later start.
//!
//! If `limits.timezone` changed since the rows were written, a rebuilt `usage_daily` row counts
//! the calls of its day in today's zone: the one approximation, and only on repaired keys.

use std::collections::BTreeSet;

use jiff::civil::Date;
use rusqlite::{Connection, Row, params};

use super::lenient_int;
use super::writer::{ROLLUP_COLUMNS, bind_totals};
use crate::calendar::{DayCache, midnight, month_start};
use crate::usage::{
    CallFigures, MAX_COST_NANO_USD_PER_CALL, MAX_TOKENS_PER_CALL, Totals, Usage, UsageSource,
};

/// How many rows the repair rewrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// `token_usage` rows.
    pub calls: usize,
    /// Rollup rows summed again (or removed, when no call is left in them).
    pub rollup_rows: usize,
}

impl Repaired {
    pub fn any(&self) -> bool {
        self.calls > 0 || self.rollup_rows > 0
    }
}

/// A `usage_daily` key: day, user, provider, model (`''` for none), endpoint.
type DailyKey = (String, String, String, String, String);

/// The repair in two steps (see the module doc): [`Repair::calls_and_daily`], then
/// [`Repair::coarse`], in the migration's transaction.
#[derive(Debug)]
pub struct Repair {
    days: DayCache,
    tz: jiff::tz::TimeZone,
    /// The `usage_daily` keys summed again, whose coarse rows must be too.
    daily: BTreeSet<DailyKey>,
    repaired: Repaired,
}

/// A token count as stored by a sound writer.
fn token_ok(column: &str, max: u64) -> String {
    format!("(typeof({column}) = 'integer' AND {column} BETWEEN 0 AND {max})")
}

/// A token count that is a number in range (an integer, or a REAL an older writer left).
fn token_number(column: &str) -> String {
    format!(
        "(typeof({column}) IN ('integer', 'real') AND {column} BETWEEN 0 AND {MAX_TOKENS_PER_CALL})"
    )
}

const TOKENS: [&str; 4] = [
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
];

/// The `token_usage` rows that are not sound.
fn bad_calls() -> String {
    let tokens: Vec<String> = TOKENS
        .iter()
        .map(|c| token_ok(c, MAX_TOKENS_PER_CALL))
        .collect();
    format!(
        "NOT ({tokens} AND typeof(total_tokens) = 'integer' \
         AND total_tokens = input_tokens + output_tokens \
         AND (cost_nano_usd IS NULL OR {cost}))",
        tokens = tokens.join(" AND "),
        cost = token_ok("cost_nano_usd", MAX_COST_NANO_USD_PER_CALL.unsigned_abs()),
    )
}

/// The rewrite of a bad call (see the module doc), returning its rollup key.
fn repair_calls_sql() -> String {
    let fixed = |c: &str| {
        format!(
            "CASE WHEN {ok} THEN CAST({c} AS INTEGER) ELSE 0 END",
            ok = token_number(c)
        )
    };
    let all_known = TOKENS
        .iter()
        .map(|c| token_number(c))
        .collect::<Vec<_>>()
        .join(" AND ");
    let cost_ok = format!(
        "(typeof(cost_nano_usd) IN ('integer', 'real') \
         AND cost_nano_usd BETWEEN 0 AND {MAX_COST_NANO_USD_PER_CALL})"
    );
    format!(
        "UPDATE token_usage SET \
           usage_source = CASE WHEN {all_known} THEN usage_source ELSE 'invalid' END, \
           cost_nano_usd = CASE WHEN {all_known} AND {cost_ok} \
             THEN CAST(cost_nano_usd AS INTEGER) ELSE NULL END, \
           input_tokens = {input}, cached_input_tokens = {cached}, \
           output_tokens = {output}, reasoning_tokens = {reasoning}, \
           total_tokens = {input} + {output} \
         WHERE {bad} \
         RETURNING ts, user_id, provider, COALESCE(model, ''), endpoint",
        input = fixed("input_tokens"),
        cached = fixed("cached_input_tokens"),
        output = fixed("output_tokens"),
        reasoning = fixed("reasoning_tokens"),
        bad = bad_calls(),
    )
}

/// The rollup rows (of any rollup table) that are not sound.
fn bad_rollups() -> String {
    let int = |c: &str| format!("typeof({c}) = 'integer' AND {c} >= 0");
    let mut ok: Vec<String> = ROLLUP_COLUMNS.split(',').map(|c| int(c.trim())).collect();
    for c in TOKENS {
        ok.push(format!("{c} <= calls * {MAX_TOKENS_PER_CALL}"));
    }
    ok.push(format!(
        "total_tokens <= calls * {}",
        2 * MAX_TOKENS_PER_CALL
    ));
    ok.push(format!(
        "cost_nano_usd <= calls * {MAX_COST_NANO_USD_PER_CALL}"
    ));
    for c in ["estimated_calls", "unpriced_calls", "errors"] {
        ok.push(format!("{c} <= calls"));
    }
    format!("NOT ({})", ok.join(" AND "))
}

/// The rollup columns read into a [`Totals`] by [`totals_of`].
const SUM_COLUMNS: &str = "calls, input_tokens, cached_input_tokens, output_tokens, \
     reasoning_tokens, total_tokens, cost_nano_usd, estimated_calls, unpriced_calls, errors, \
     latency_ms_sum";

/// One rollup row as [`Totals`], whatever it holds (a REAL saturates, anything else is 0).
fn totals_of(row: &Row<'_>) -> rusqlite::Result<Totals> {
    let at = |i| row.get_ref(i).map(lenient_int);
    Ok(Totals {
        calls: at(0)?,
        input_tokens: at(1)?,
        cached_input_tokens: at(2)?,
        output_tokens: at(3)?,
        reasoning_tokens: at(4)?,
        total_tokens: at(5)?,
        cost_nano_usd: at(6)?,
        estimated_calls: at(7)?,
        unpriced_calls: at(8)?,
        errors: at(9)?,
        latency_ms_sum: at(10)?,
    })
}

/// Sum the rollup rows `sql` selects (as [`SUM_COLUMNS`]) in Rust, saturating.
fn sum_rollups(conn: &Connection, sql: &str, args: &[&str]) -> rusqlite::Result<Totals> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut sum = Totals::default();
    while let Some(row) = rows.next()? {
        sum.add(&totals_of(row)?);
    }
    Ok(sum)
}

/// Replace the rollup row of `table` at `key` (`key_columns` = `key`) with `totals`, or remove
/// it when no call is left in it.
fn replace_rollup(
    conn: &Connection,
    table: &str,
    key_columns: &[&str],
    key: &[&str],
    totals: &Totals,
) -> rusqlite::Result<()> {
    let matches = key_columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ?{}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    conn.prepare_cached(&format!("DELETE FROM {table} WHERE {matches}"))?
        .execute(rusqlite::params_from_iter(key))?;
    if totals.calls <= 0 {
        return Ok(());
    }
    let n = key_columns.len();
    let placeholders = (1..=n + 11)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO {table} ({}, {ROLLUP_COLUMNS}) VALUES ({placeholders})",
        key_columns.join(", ")
    ))?;
    for (i, k) in key.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, *k)?;
    }
    bind_totals(&mut stmt, n + 1, totals)?;
    stmt.raw_execute()?;
    Ok(())
}

/// The keys of the rows of `table` that are not sound, each as strings.
fn bad_keys(
    conn: &Connection,
    table: &str,
    key_columns: &[&str],
) -> rusqlite::Result<Vec<Vec<String>>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM {table} WHERE {}",
        key_columns.join(", "),
        bad_rollups()
    ))?;
    let mut rows = stmt.query([])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        keys.push(
            (0..key_columns.len())
                .map(|i| row.get::<_, String>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    Ok(keys)
}

impl Repair {
    pub fn new(tz: jiff::tz::TimeZone) -> Repair {
        Repair {
            days: DayCache::new(tz.clone()),
            tz,
            daily: BTreeSet::new(),
            repaired: Repaired::default(),
        }
    }

    /// Step 1 and the `usage_daily` part of step 2.
    pub fn calls_and_daily(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        {
            let mut stmt = conn.prepare(&repair_calls_sql())?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let ts: i64 = row.get(0)?;
                self.daily.insert((
                    self.days.day(ts).to_string(),
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ));
                self.repaired.calls += 1;
            }
        }
        for key in bad_keys(
            conn,
            "usage_daily",
            &["day", "user_id", "provider", "model", "endpoint"],
        )? {
            if let [day, user, provider, model, endpoint] = &key[..] {
                self.daily.insert((
                    day.clone(),
                    user.clone(),
                    provider.clone(),
                    model.clone(),
                    endpoint.clone(),
                ));
            }
        }
        let keys = std::mem::take(&mut self.daily);
        for key in &keys {
            if self.rebuild_daily(conn, key)? {
                self.repaired.rollup_rows += 1;
            }
        }
        self.daily = keys;
        Ok(())
    }

    /// Sum one `usage_daily` row again from its calls; false when its day is not a date (then
    /// the row is left alone: the reads tolerate what it holds).
    fn rebuild_daily(&self, conn: &Connection, key: &DailyKey) -> rusqlite::Result<bool> {
        let (day, user, provider, model, endpoint) = key;
        let Ok(date) = day.parse::<Date>() else {
            return Ok(false);
        };
        let (Some(start), Some(end)) = (
            midnight(date, &self.tz),
            date.tomorrow().ok().and_then(|d| midnight(d, &self.tz)),
        ) else {
            return Ok(false);
        };
        let mut stmt = conn.prepare_cached(
            "SELECT status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, \
             cost_nano_usd, usage_source, latency_ms FROM token_usage \
             WHERE user_id = ?1 AND ts >= ?2 AND ts < ?3 AND provider = ?4 \
             AND COALESCE(model, '') = ?5 AND endpoint = ?6",
        )?;
        let mut rows = stmt.query(params![user, start, end, provider, model, endpoint])?;
        let mut totals = Totals::default();
        while let Some(row) = rows.next()? {
            let count = |i| -> rusqlite::Result<u64> {
                Ok(u64::try_from(lenient_int(row.get_ref(i)?)).unwrap_or(0))
            };
            let usage = Usage {
                input_tokens: count(1)?,
                cached_input_tokens: count(2)?,
                output_tokens: count(3)?,
                reasoning_tokens: count(4)?,
            };
            let cost = match row.get_ref(5)? {
                rusqlite::types::ValueRef::Null => None,
                v => Some(lenient_int(v)),
            };
            let source: String = row.get(6)?;
            totals.add_call(CallFigures {
                usage: &usage,
                source: UsageSource::parse(&source).unwrap_or(UsageSource::None),
                status: u16::try_from(lenient_int(row.get_ref(0)?)).unwrap_or(0),
                cost_nano_usd: cost,
                latency_ms: count(7)?,
            });
        }
        replace_rollup(
            conn,
            "usage_daily",
            &["day", "user_id", "provider", "model", "endpoint"],
            &[day, user, provider, model, endpoint],
            &totals,
        )?;
        Ok(true)
    }

    /// Step 2 for the coarse rollups: each row over a `usage_daily` key summed again, and each
    /// row that is wrong itself, summed again from `usage_daily`. Returns what was repaired in
    /// all.
    pub fn coarse(mut self, conn: &Connection) -> rusqlite::Result<Repaired> {
        let mut user_days: BTreeSet<(String, String)> = BTreeSet::new();
        let mut user_months: BTreeSet<(String, String)> = BTreeSet::new();
        let mut model_days: BTreeSet<(String, String, String)> = BTreeSet::new();
        for (day, user, provider, model, _) in &self.daily {
            user_days.insert((day.clone(), user.clone()));
            user_months.insert((month_start(day), user.clone()));
            model_days.insert((day.clone(), provider.clone(), model.clone()));
        }
        for key in bad_keys(conn, "usage_user_daily", &["day", "user_id"])? {
            if let [day, user] = &key[..] {
                user_days.insert((day.clone(), user.clone()));
            }
        }
        for key in bad_keys(conn, "usage_user_monthly", &["month", "user_id"])? {
            if let [month, user] = &key[..] {
                user_months.insert((month.clone(), user.clone()));
            }
        }
        for key in bad_keys(conn, "usage_model_daily", &["day", "provider", "model"])? {
            if let [day, provider, model] = &key[..] {
                model_days.insert((day.clone(), provider.clone(), model.clone()));
            }
        }
        for (day, user) in &user_days {
            let totals = sum_rollups(
                conn,
                &format!("SELECT {SUM_COLUMNS} FROM usage_daily WHERE day = ?1 AND user_id = ?2"),
                &[day, user],
            )?;
            replace_rollup(
                conn,
                "usage_user_daily",
                &["day", "user_id"],
                &[day, user],
                &totals,
            )?;
        }
        for (month, user) in &user_months {
            // `YYYY-MM-` of the month: its days.
            let prefix = month.get(..8).unwrap_or(month);
            let totals = sum_rollups(
                conn,
                &format!(
                    "SELECT {SUM_COLUMNS} FROM usage_daily \
                     WHERE user_id = ?1 AND substr(day, 1, 8) = ?2"
                ),
                &[user, prefix],
            )?;
            replace_rollup(
                conn,
                "usage_user_monthly",
                &["month", "user_id"],
                &[month, user],
                &totals,
            )?;
        }
        for (day, provider, model) in &model_days {
            let totals = sum_rollups(
                conn,
                &format!(
                    "SELECT {SUM_COLUMNS} FROM usage_daily \
                     WHERE day = ?1 AND provider = ?2 AND model = ?3"
                ),
                &[day, provider, model],
            )?;
            replace_rollup(
                conn,
                "usage_model_daily",
                &["day", "provider", "model"],
                &[day, provider, model],
                &totals,
            )?;
        }
        self.repaired.rollup_rows += user_days.len() + user_months.len() + model_days.len();
        Ok(self.repaired)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::path::PathBuf;

    use jiff::tz::TimeZone;
    use rusqlite::{Connection, params};

    use crate::store::sqlite::controls::load_quota_seed;
    use crate::store::sqlite::schema::{SCHEMA_SQL, SCHEMA_VERSION, apply_schema};

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Db { _dir: dir, path }
    }

    /// The schema as version 2 wrote it: `usage_source` without `'invalid'`.
    fn version_2_schema() -> String {
        let old = SCHEMA_SQL
            .replace(
                "CHECK (usage_source IN ('reported', 'estimated', 'none', 'invalid'))",
                "CHECK (usage_source IN ('reported', 'estimated', 'none'))",
            )
            .replace(
                &format!("PRAGMA user_version = {};", SCHEMA_VERSION),
                "PRAGMA user_version = 2;",
            );
        assert!(!old.contains("'invalid'))") && old.contains("user_version = 2;"));
        old
    }

    const REAL_MAX: f64 = 9.223_372_036_854_776e18;

    fn call(conn: &Connection, user: &str, ts: i64, tokens: (i64, i64), cost: i64) {
        conn.execute(
            "INSERT INTO token_usage (request_id, ts, user_id, provider, model, endpoint, streamed, \
             status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, \
             total_tokens, cost_nano_usd, usage_source, latency_ms, ttfb_ms, outcome) \
             VALUES ('r', ?1, ?2, 'openai', 'gpt-4o', 'chat.completions', 0, 200, ?3, 0, ?4, 0, \
             ?5, ?6, 'reported', 10, 5, 'complete')",
            params![
                ts,
                user,
                tokens.0,
                tokens.1,
                tokens.0.saturating_add(tokens.1),
                cost
            ],
        )
        .unwrap();
    }

    /// A rollup row of `table` with `key`: 2 calls, 25 output tokens, and `huge` (a REAL an
    /// overflowing upsert made, or i64::MAX) in input, total and cost.
    fn rollup(
        conn: &Connection,
        table: &str,
        key_columns: &str,
        key: &[&str],
        huge: &dyn rusqlite::ToSql,
    ) {
        let marks = (1..=key.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let n = key.len();
        let sql = format!(
            "INSERT INTO {table} ({key_columns}, calls, errors, input_tokens, cached_input_tokens, \
             output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, estimated_calls, \
             unpriced_calls, latency_ms_sum) VALUES ({marks}, 2, 0, ?{h}, 0, 25, 0, ?{h}, ?{h}, 0, 0, 20)",
            h = n + 1
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        for (i, k) in key.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, *k).unwrap();
        }
        stmt.raw_bind_parameter(n + 1, huge).unwrap();
        stmt.raw_execute().unwrap();
    }

    fn one(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    const ROLLUPS: [&str; 4] = [
        "usage_daily",
        "usage_user_daily",
        "usage_user_monthly",
        "usage_model_daily",
    ];

    /// What an older Tollgate left after an upstream reported `prompt_tokens` 2⁶⁴ − 1 for one of
    /// al's two calls on 2026-03-10 (Berlin): the row at i64::MAX, the rollups overflowed into
    /// REALs; bo's call of the same day is sound, but shares the model's rollup row.
    fn old_file(path: &std::path::Path) -> (i64, i64) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&version_2_schema()).unwrap();
        let noon = 1_773_140_400_000; // 2026-03-10T11:00:00Z, 12:00 in Berlin
        call(&conn, "al", noon, (100, 20), 500);
        call(&conn, "al", noon + 1, (i64::MAX, 5), i64::MAX);
        call(&conn, "bo", noon + 2, (40, 2), 60);
        let daily = "day, user_id, provider, model, endpoint";
        rollup(
            &conn,
            "usage_daily",
            daily,
            &["2026-03-10", "al", "openai", "gpt-4o", "chat.completions"],
            &REAL_MAX,
        );
        rollup(
            &conn,
            "usage_user_daily",
            "day, user_id",
            &["2026-03-10", "al"],
            &REAL_MAX,
        );
        rollup(
            &conn,
            "usage_user_monthly",
            "month, user_id",
            &["2026-03-01", "al"],
            &REAL_MAX,
        );
        rollup(
            &conn,
            "usage_model_daily",
            "day, provider, model",
            &["2026-03-10", "openai", "gpt-4o"],
            &REAL_MAX,
        );
        conn.execute_batch(
            "INSERT INTO usage_daily VALUES ('2026-03-10', 'bo', 'openai', 'gpt-4o', \
               'chat.completions', 1, 0, 40, 0, 2, 0, 42, 60, 0, 0, 10);
             INSERT INTO usage_user_daily VALUES ('2026-03-10', 'bo', 1, 0, 40, 0, 2, 0, 42, 60, 0, 0, 10);
             INSERT INTO usage_user_monthly VALUES ('2026-03-01', 'bo', 1, 0, 40, 0, 2, 0, 42, 60, 0, 0, 10);
             INSERT INTO users (id, created_at) VALUES ('al', 0), ('bo', 0);",
        )
        .unwrap();
        // What broke the reads and the start: a REAL where an integer is read.
        assert_eq!(
            one(
                &conn,
                "SELECT COUNT(*) FROM usage_user_monthly WHERE typeof(total_tokens) = 'real'"
            ),
            1
        );
        (noon, noon + 1)
    }

    #[test]
    fn an_older_files_impossible_figures_are_repaired_once_at_migration() {
        let db = db();
        old_file(&db.path);
        let conn = Connection::open(&db.path).unwrap();
        apply_schema(&conn, &TimeZone::get("Europe/Berlin").unwrap()).unwrap();
        assert_eq!(one(&conn, "PRAGMA user_version"), SCHEMA_VERSION);

        // The impossible call: its counts that were numbers in range kept, the rest unknown (0),
        // flagged invalid, its cost unknown; the sound calls untouched.
        let mut stmt = conn
            .prepare(
                "SELECT user_id, input_tokens, output_tokens, total_tokens, cost_nano_usd, \
                 usage_source FROM token_usage ORDER BY id",
            )
            .unwrap();
        let calls: Vec<(String, i64, i64, i64, Option<i64>, String)> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            calls,
            [
                ("al".into(), 100, 20, 120, Some(500), "reported".into()),
                ("al".into(), 0, 5, 5, None, "invalid".into()),
                ("bo".into(), 40, 2, 42, Some(60), "reported".into()),
            ]
        );

        // Every rollup is summed again from the calls, in integers.
        for table in ROLLUPS {
            for column in super::SUM_COLUMNS.split(',') {
                let column = column.trim();
                assert_eq!(
                    one(
                        &conn,
                        &format!(
                            "SELECT COUNT(*) FROM {table} WHERE typeof({column}) != 'integer'"
                        )
                    ),
                    0,
                    "{table}.{column}"
                );
            }
        }
        let al = "SELECT calls, input_tokens, output_tokens, total_tokens, cost_nano_usd, \
                  estimated_calls, unpriced_calls, latency_ms_sum FROM";
        let figures = |sql: String| -> [i64; 8] {
            conn.query_row(&sql, [], |r| {
                Ok([
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ])
            })
            .unwrap()
        };
        let al_figures = [2, 100, 25, 125, 500, 1, 1, 20];
        assert_eq!(
            figures(format!("{al} usage_daily WHERE user_id = 'al'")),
            al_figures
        );
        assert_eq!(
            figures(format!("{al} usage_user_daily WHERE user_id = 'al'")),
            al_figures
        );
        assert_eq!(
            figures(format!(
                "{al} usage_user_monthly WHERE user_id = 'al' AND month = '2026-03-01'"
            )),
            al_figures
        );
        assert_eq!(
            figures(format!("{al} usage_model_daily WHERE day = '2026-03-10'")),
            [3, 140, 27, 167, 560, 1, 1, 30],
            "al's and bo's calls"
        );
        assert_eq!(
            figures(format!("{al} usage_user_daily WHERE user_id = 'bo'")),
            [1, 40, 2, 42, 60, 0, 0, 10],
            "bo's rows untouched"
        );

        // The quota seed reads sane sums.
        let seed = load_quota_seed(&conn, "2026-03-10", "2026-03-01").unwrap();
        assert_eq!(
            (
                seed.users["al"].day.tokens,
                seed.users["al"].month.tokens,
                seed.users["al"].month.cost_nano_usd
            ),
            (125, 125, 500)
        );

        // The constraint takes 'invalid' now, and still nothing else.
        let insert = |source: &str| {
            conn.execute(
                "INSERT INTO token_usage (request_id, ts, user_id, provider, endpoint, streamed, \
                 status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, \
                 total_tokens, usage_source, latency_ms, outcome) \
                 VALUES ('x', 0, 'x', 'openai', 'other', 0, 200, 0, 0, 0, 0, 0, ?1, 0, 'complete')",
                [source],
            )
        };
        insert("invalid").unwrap();
        assert!(insert("bogus").is_err());
        conn.execute("DELETE FROM token_usage WHERE request_id = 'x'", [])
            .unwrap();
        assert_eq!(
            conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                .unwrap(),
            "ok"
        );

        // Once: a later start finds nothing to do (and a file already at version 3 is not
        // scanned).
        conn.execute("UPDATE usage_daily SET calls = 7 WHERE user_id = 'bo'", [])
            .unwrap();
        apply_schema(&conn, &TimeZone::UTC).unwrap();
        assert_eq!(
            one(&conn, "SELECT calls FROM usage_daily WHERE user_id = 'bo'"),
            7
        );
    }

    #[test]
    fn a_version_1_file_is_repaired_before_its_coarse_rollups_are_filled() {
        let db = db();
        old_file(&db.path);
        let conn = Connection::open(&db.path).unwrap();
        // Version 1 had no coarse rollups: with two i64::MAX rows of a day, filling them with
        // SQL's SUM would fail on the overflow.
        conn.execute_batch(
            "DELETE FROM usage_user_daily; DELETE FROM usage_user_monthly; \
             DELETE FROM usage_model_daily; \
             UPDATE usage_daily SET input_tokens = 9223372036854775807, \
               total_tokens = 9223372036854775807, cost_nano_usd = 9223372036854775807; \
             PRAGMA user_version = 1;",
        )
        .unwrap();
        apply_schema(&conn, &TimeZone::get("Europe/Berlin").unwrap()).unwrap();
        assert_eq!(
            one(
                &conn,
                "SELECT total_tokens FROM usage_model_daily WHERE day = '2026-03-10'"
            ),
            167
        );
        assert_eq!(
            one(
                &conn,
                "SELECT total_tokens FROM usage_user_monthly WHERE user_id = 'al'"
            ),
            125
        );
        assert_eq!(
            one(
                &conn,
                "SELECT total_tokens FROM usage_user_daily WHERE user_id = 'bo'"
            ),
            42
        );
    }

    #[test]
    fn a_file_whose_constraint_tollgate_did_not_write_is_refused() {
        let db = db();
        let conn = Connection::open(&db.path).unwrap();
        conn.execute_batch(&version_2_schema().replace(
            "CHECK (usage_source IN ('reported', 'estimated', 'none'))",
            "CHECK (usage_source IN ('reported','estimated','none'))",
        ))
        .unwrap();
        let err = apply_schema(&conn, &TimeZone::UTC).unwrap_err();
        assert!(err.to_string().contains("usage_source constraint"), "{err}");
        assert_eq!(one(&conn, "PRAGMA user_version"), 2, "nothing changed");
    }
}
