//! Call rows into PostgreSQL: a batch is one transaction — the rows (one `INSERT … SELECT FROM
//! UNNEST` of column arrays), the users they name, and every rollup they add to (one upsert per
//! table, keys summed in memory first by [`crate::store::rollup`]) — so the rollups always equal
//! the sum of the rows, on every replica's database at once.
//!
//! `token_usage` is partitioned by UTC month: [`ensure_partitions`] makes the months a batch
//! needs, in a short transaction of its own before the batch's (DDL takes locks the rows'
//! transaction should not hold), under an advisory lock so that replicas do not race.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::LazyLock;

use tokio_postgres::Transaction;

use super::lease::Lowered;
use crate::calendar::DayCache;
use crate::store::UsageRow;
use crate::store::rollup::{Rollups, users_seen};
use crate::usage::{Totals, stored_int};

/// `pg_advisory_xact_lock` key for making partitions ("tgpart").
const PARTITION_LOCK: i64 = 0x7467_7061_7274;

/// The rollup columns every rollup table shares, in [`Totals`] order after the key columns.
const ROLLUP_COLUMNS: [&str; 11] = [
    "calls",
    "errors",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_nano_usd",
    "estimated_calls",
    "unpriced_calls",
    "latency_ms_sum",
];

/// A UTC month as (year, month 1–12).
pub type Month = (i16, i8);

/// The UTC month of a unix-ms timestamp.
pub fn utc_month(ts_ms: i64) -> Month {
    let ts = jiff::Timestamp::from_millisecond(ts_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let d = ts.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    (d.year(), d.month())
}

/// The partition of `month`: its table name and its bounds in unix ms, `[from, to)`.
pub fn partition(month: Month) -> (String, i64, i64) {
    let (y, m) = month;
    let start = jiff::civil::date(y, m, 1);
    let next = start
        .checked_add(jiff::Span::new().months(1))
        .unwrap_or(jiff::civil::Date::MAX);
    let ms = |d: jiff::civil::Date| {
        d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map_or(i64::MAX, |z| z.timestamp().as_millisecond())
    };
    (format!("token_usage_y{y:04}m{m:02}"), ms(start), ms(next))
}

/// Delete the calls before `before_ms`: every monthly partition that ends by then is dropped
/// whole (a month at a time, no row by row), then what is left before it — in the cut month and
/// the default partition — is deleted `batch` rows per statement. The rollups stay.
pub async fn prune(
    c: &deadpool_postgres::Client,
    before_ms: i64,
    batch: usize,
) -> Result<u64, crate::store::StoreError> {
    let parts = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = 'token_usage'",
            &[],
        )
        .await?;
    let mut deleted = 0u64;
    for row in parts {
        let name: String = row.try_get(0)?;
        let Some(month) = month_of_partition(&name) else {
            continue;
        };
        let (_, _, end) = partition(month);
        if end <= before_ms {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                .await?
                .try_get(0)?;
            c.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await?;
            deleted += u64::try_from(n).unwrap_or(0);
        }
    }
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    loop {
        let n = c
            .execute(
                "DELETE FROM token_usage WHERE id IN \
                 (SELECT id FROM token_usage WHERE ts < $1 LIMIT $2)",
                &[&before_ms, &batch],
            )
            .await?;
        deleted += n;
        if i64::try_from(n).unwrap_or(i64::MAX) < batch {
            return Ok(deleted);
        }
    }
}

/// The month of a partition's name (`token_usage_yYYYYmMM`).
fn month_of_partition(name: &str) -> Option<Month> {
    let rest = name.strip_prefix("token_usage_y")?;
    let (y, m) = rest.split_once('m')?;
    Some((y.parse().ok()?, m.parse().ok()?))
}

/// Make sure every month in `months` has its partition. Returns the months now known.
pub async fn ensure_partitions(
    client: &mut impl GenericClientMut,
    months: &BTreeSet<Month>,
) -> Result<(), tokio_postgres::Error> {
    if months.is_empty() {
        return Ok(());
    }
    let tx = client.begin().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await?;
    for month in months {
        let (name, from, to) = partition(*month);
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF token_usage \
             FOR VALUES FROM ({from}) TO ({to})"
        ))
        .await?;
    }
    tx.commit().await
}

/// A client that can open a transaction: a pooled connection or a plain one.
pub trait GenericClientMut: Send {
    fn begin(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Transaction<'_>, tokio_postgres::Error>> + Send;
}

impl GenericClientMut for tokio_postgres::Client {
    async fn begin(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        self.transaction().await
    }
}

impl GenericClientMut for deadpool_postgres::Client {
    async fn begin(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        use std::ops::DerefMut;
        let client: &mut tokio_postgres::Client = self.deref_mut().deref_mut();
        client.transaction().await
    }
}

/// Write `batch` (rows, users, rollups) inside `tx`; `gateway` names the replica. The caller
/// commits, and has made the rows' partitions ([`ensure_partitions`]).
pub async fn write_rows(
    tx: &Transaction<'_>,
    days: &mut DayCache,
    batch: &[UsageRow],
    gateway: &str,
) -> Result<(), tokio_postgres::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    insert_rows(tx, batch, gateway).await?;
    upsert_users(tx, batch).await?;
    let r = Rollups::of(days, batch);
    upsert_rollups(tx, &r).await?;
    // What these rows used is no longer this gateway's to spend (the rollups count it now).
    let mut spent = Lowered::default();
    for ((day, user), t) in &r.user_day {
        spent.push("day", day, user, spent_of(t));
    }
    for ((month, user), t) in &r.user_month {
        spent.push("month", month, user, spent_of(t));
    }
    super::lease::lower(tx, gateway, &spent).await
}

/// The tokens and cost a rollup's sums take off a lease.
fn spent_of(t: &Totals) -> [u64; 2] {
    [
        u64::try_from(t.total_tokens).unwrap_or(0),
        u64::try_from(t.cost_nano_usd).unwrap_or(0),
    ]
}

async fn insert_rows(
    tx: &Transaction<'_>,
    batch: &[UsageRow],
    gateway: &str,
) -> Result<(), tokio_postgres::Error> {
    let n = batch.len();
    let mut request_id = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut user_id = Vec::with_capacity(n);
    let mut provider = Vec::with_capacity(n);
    let mut model = Vec::with_capacity(n);
    let mut endpoint = Vec::with_capacity(n);
    let mut streamed = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut input = Vec::with_capacity(n);
    let mut cached = Vec::with_capacity(n);
    let mut output = Vec::with_capacity(n);
    let mut reasoning = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    let mut cost = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut latency = Vec::with_capacity(n);
    let mut ttfb = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut journal_id = Vec::with_capacity(n);
    for r in batch {
        let u = &r.usage;
        request_id.push(r.request_id.as_str());
        ts.push(r.ts_ms);
        user_id.push(&*r.user_id);
        provider.push(&*r.provider);
        model.push(r.model.as_deref());
        endpoint.push(r.endpoint);
        streamed.push(r.streamed);
        status.push(i64::from(r.status));
        input.push(stored_int(u.input_tokens));
        cached.push(stored_int(u.cached_input_tokens));
        output.push(stored_int(u.output_tokens));
        reasoning.push(stored_int(u.reasoning_tokens));
        total.push(stored_int(u.total()));
        cost.push(r.cost_nano_usd);
        source.push(r.usage_source.as_str());
        latency.push(stored_int(r.latency_ms));
        ttfb.push(r.ttfb_ms.map(stored_int));
        outcome.push(r.outcome.as_str());
        journal_id.push(r.journal_id.map(stored_int));
    }
    tx.execute(
        "INSERT INTO token_usage (request_id, ts, user_id, provider, model, endpoint, \
             streamed, status, input_tokens, cached_input_tokens, output_tokens, \
             reasoning_tokens, total_tokens, cost_nano_usd, usage_source, latency_ms, ttfb_ms, \
             outcome, journal_id, gateway) \
             SELECT r.*, $20 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::bool[], $8::int8[], $9::int8[], $10::int8[], \
             $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::text[], $16::int8[], \
             $17::int8[], $18::text[], $19::int8[]) AS r",
        &[
            &request_id,
            &ts,
            &user_id,
            &provider,
            &model,
            &endpoint,
            &streamed,
            &status,
            &input,
            &cached,
            &output,
            &reasoning,
            &total,
            &cost,
            &source,
            &latency,
            &ttfb,
            &outcome,
            &journal_id,
            &gateway,
        ],
    )
    .await?;
    Ok(())
}

/// One upsert for every user of the batch: created on first sight with the first email and
/// name seen, never overwriting stored ones, `last_seen_at` moved forward only. The plan of the
/// batch's latest call becomes a known user's unless a later call is already recorded (read
/// before the upsert moves `last_seen_at`), and a new user's.
async fn upsert_users(
    tx: &Transaction<'_>,
    batch: &[UsageRow],
) -> Result<(), tokio_postgres::Error> {
    let users = users_seen(batch);
    let mut ids = Vec::with_capacity(users.len());
    let mut emails = Vec::with_capacity(users.len());
    let mut names = Vec::with_capacity(users.len());
    let mut first = Vec::with_capacity(users.len());
    let mut last = Vec::with_capacity(users.len());
    let mut plans = Vec::with_capacity(users.len());
    let mut plan_at = Vec::with_capacity(users.len());
    for (id, seen) in &users {
        ids.push(*id);
        emails.push(seen.email);
        names.push(seen.name);
        first.push(seen.first_ms);
        last.push(seen.last_ms);
        plans.push(seen.plan.and_then(|(p, _)| p));
        plan_at.push(seen.plan.map(|(_, at)| at));
    }
    tx.execute(
        "UPDATE users SET plan = b.plan \
             FROM UNNEST($1::text[], $2::int8[], $3::text[]) AS b(id, plan_ms, plan) \
             WHERE users.id = b.id AND b.plan_ms IS NOT NULL \
               AND b.plan_ms >= COALESCE(users.last_seen_at, b.plan_ms) \
               AND users.plan IS DISTINCT FROM b.plan",
        &[&ids, &plan_at, &plans],
    )
    .await?;
    tx.execute(
        "INSERT INTO users (id, email, name, created_at, last_seen_at, plan) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], \
                                  $6::text[]) \
             ON CONFLICT (id) DO UPDATE SET \
               email = COALESCE(users.email, excluded.email), \
               name = COALESCE(users.name, excluded.name), \
               last_seen_at = GREATEST(users.last_seen_at, excluded.last_seen_at)",
        &[&ids, &emails, &names, &first, &last, &plans],
    )
    .await?;
    Ok(())
}

/// `SET col = col + excluded.col, …` for `table`, saturating at `i64::MAX` (an overflowing
/// BIGINT addition is an error in PostgreSQL, which would refuse the whole batch).
fn rollup_add(table: &str) -> String {
    ROLLUP_COLUMNS
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN excluded.{c} > 0 AND {table}.{c} > {max} - excluded.{c} \
                 THEN {max} ELSE {table}.{c} + excluded.{c} END",
                max = i64::MAX
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The upsert of one rollup table whose key is `keys` (text columns), fed by arrays: the
/// keys, then the eleven sums.
fn rollup_sql(table: &str, keys: &[&str]) -> String {
    let mut sql = format!(
        "INSERT INTO {table} ({}, {}) SELECT * FROM UNNEST(",
        keys.join(", "),
        ROLLUP_COLUMNS.join(", ")
    );
    let mut n = 0;
    for _ in keys {
        n += 1;
        let _ = write!(sql, "${n}::text[], ");
    }
    for i in 0..ROLLUP_COLUMNS.len() {
        n += 1;
        let _ = write!(sql, "${n}::int8[]");
        if i + 1 < ROLLUP_COLUMNS.len() {
            sql.push_str(", ");
        }
    }
    let _ = write!(
        sql,
        ") ON CONFLICT ({}) DO UPDATE SET {}",
        keys.join(", "),
        rollup_add(table)
    );
    sql
}

static DETAIL_SQL: LazyLock<String> = LazyLock::new(|| {
    rollup_sql(
        "usage_daily",
        &["day", "user_id", "provider", "model", "endpoint"],
    )
});
static USER_DAY_SQL: LazyLock<String> =
    LazyLock::new(|| rollup_sql("usage_user_daily", &["day", "user_id"]));
static USER_MONTH_SQL: LazyLock<String> =
    LazyLock::new(|| rollup_sql("usage_user_monthly", &["month", "user_id"]));
static MODEL_DAY_SQL: LazyLock<String> =
    LazyLock::new(|| rollup_sql("usage_model_daily", &["day", "provider", "model"]));

/// The eleven sums of [`Totals`] as arrays, in [`ROLLUP_COLUMNS`] order.
#[derive(Default)]
struct Sums([Vec<i64>; 11]);

impl Sums {
    fn push(&mut self, t: &Totals) {
        let v = [
            t.calls,
            t.errors,
            t.input_tokens,
            t.cached_input_tokens,
            t.output_tokens,
            t.reasoning_tokens,
            t.total_tokens,
            t.cost_nano_usd,
            t.estimated_calls,
            t.unpriced_calls,
            t.latency_ms_sum,
        ];
        for (col, x) in self.0.iter_mut().zip(v) {
            col.push(x);
        }
    }
}

/// Run a rollup upsert: `keys` are the key columns' arrays.
async fn upsert(
    tx: &Transaction<'_>,
    sql: &str,
    keys: &[Vec<&str>],
    sums: &Sums,
) -> Result<(), tokio_postgres::Error> {
    if keys.first().is_none_or(Vec::is_empty) {
        return Ok(());
    }
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::with_capacity(16);
    for k in keys {
        params.push(k);
    }
    for s in &sums.0 {
        params.push(s);
    }
    tx.execute(sql, &params).await?;
    Ok(())
}

async fn upsert_rollups(
    tx: &Transaction<'_>,
    r: &Rollups<'_>,
) -> Result<(), tokio_postgres::Error> {
    {
        let mut keys: [Vec<&str>; 5] = Default::default();
        let mut sums = Sums::default();
        for ((day, user, provider, model, endpoint), t) in &r.detail {
            for (col, v) in keys
                .iter_mut()
                .zip([&**day, user, provider, model, endpoint])
            {
                col.push(v);
            }
            sums.push(t);
        }
        upsert(tx, &DETAIL_SQL, &keys, &sums).await?;
    }
    {
        let mut keys: [Vec<&str>; 2] = Default::default();
        let mut sums = Sums::default();
        for ((day, user), t) in &r.user_day {
            keys[0].push(day);
            keys[1].push(user);
            sums.push(t);
        }
        upsert(tx, &USER_DAY_SQL, &keys, &sums).await?;
    }
    {
        let mut keys: [Vec<&str>; 2] = Default::default();
        let mut sums = Sums::default();
        for ((month, user), t) in &r.user_month {
            keys[0].push(month);
            keys[1].push(user);
            sums.push(t);
        }
        upsert(tx, &USER_MONTH_SQL, &keys, &sums).await?;
    }
    {
        let mut keys: [Vec<&str>; 3] = Default::default();
        let mut sums = Sums::default();
        for ((day, provider, model), t) in &r.model_day {
            keys[0].push(day);
            keys[1].push(provider);
            keys[2].push(model);
            sums.push(t);
        }
        upsert(tx, &MODEL_DAY_SQL, &keys, &sums).await?;
    }
    Ok(())
}

/// The UTC months of the rows of `batch`.
pub fn months_of(batch: &[UsageRow]) -> BTreeSet<Month> {
    batch.iter().map(|r| utc_month(r.ts_ms)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::sync::Arc;

    use super::*;
    use crate::store::postgres::schema::migrate;
    use crate::store::postgres::testing::TestDb;
    use crate::usage::{Outcome, Usage, UsageSource};

    pub(crate) fn row(n: u64, user: &str, ts_ms: i64) -> UsageRow {
        UsageRow {
            request_id: format!("req-{n}"),
            ts_ms,
            user_id: Arc::from(user),
            user_email: Some(format!("{user}@example.com")),
            user_name: None,
            provider: Arc::from("openai"),
            model: (!n.is_multiple_of(3)).then(|| "gpt-4o-mini".to_string()),
            endpoint: "chat.completions",
            streamed: n.is_multiple_of(2),
            status: if n.is_multiple_of(5) { 502 } else { 200 },
            usage: Usage {
                input_tokens: 100 + n,
                cached_input_tokens: 10,
                output_tokens: 20,
                reasoning_tokens: 0,
            },
            cost_nano_usd: (!n.is_multiple_of(4)).then_some(1_000 * i64::try_from(n).unwrap()),
            usage_source: UsageSource::Reported,
            latency_ms: 30,
            ttfb_ms: Some(10),
            outcome: Outcome::Complete,
            journal_id: Some(n),
            plan: None,
        }
    }

    #[test]
    fn a_month_partition_covers_exactly_its_month() {
        let (name, from, to) = partition((2026, 12));
        assert_eq!(name, "token_usage_y2026m12");
        assert_eq!(from, 1_796_083_200_000); // 2026-12-01T00:00:00Z
        assert_eq!(to, 1_798_761_600_000); // 2027-01-01T00:00:00Z
        assert_eq!(utc_month(from), (2026, 12));
        assert_eq!(utc_month(to - 1), (2026, 12));
        assert_eq!(utc_month(to), (2027, 1));
    }

    #[tokio::test]
    async fn a_users_plan_is_their_latest_calls_and_a_recovered_row_leaves_it() {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        let base = partition((2026, 12)).1 + 3_600_000;
        let on = |n: u64, at: i64, plan: Option<&str>| {
            let mut r = row(n, "eve", base + at);
            r.plan = plan.map(Arc::from);
            r
        };
        let mut days = DayCache::new(jiff::tz::TimeZone::UTC);
        let mut write = async |batch: Vec<UsageRow>| -> Option<String> {
            ensure_partitions(&mut c, &months_of(&batch)).await.unwrap();
            let tx = c.transaction().await.unwrap();
            write_rows(&tx, &mut days, &batch, "gw-a").await.unwrap();
            tx.commit().await.unwrap();
            c.query_one("SELECT plan FROM users WHERE id = 'eve'", &[])
                .await
                .unwrap()
                .get(0)
        };
        let in_order = vec![
            on(1, 2_000, Some("free")),
            on(2, 4_000, Some("pro")),
            on(3, 3_000, Some("free")),
        ];
        assert_eq!(write(in_order).await.as_deref(), Some("pro"));
        assert_eq!(
            write(vec![on(4, 3_500, Some("free"))]).await.as_deref(),
            Some("pro"),
            "an older call written later changes nothing"
        );
        let mut recovered = on(5, 9_000, None);
        recovered.outcome = Outcome::Recovered;
        assert_eq!(write(vec![recovered]).await.as_deref(), Some("pro"));
        assert_eq!(write(vec![on(6, 9_500, None)]).await, None);
    }

    #[tokio::test]
    async fn rows_land_in_their_month_and_the_rollups_equal_their_sums() {
        let db = TestDb::create().await;
        let settings = db.settings();
        let mut c = settings.connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        let nov = partition((2026, 11)).1 + 3_600_000;
        let dec = partition((2026, 12)).1 + 3_600_000;
        let batch: Vec<UsageRow> = (1..=40)
            .map(|n| {
                row(
                    n,
                    ["ann", "bo"][(n % 2) as usize],
                    if n <= 25 { nov } else { dec },
                )
            })
            .collect();
        let mut days = DayCache::new(jiff::tz::TimeZone::UTC);
        ensure_partitions(&mut c, &months_of(&batch)).await.unwrap();
        // Twice: the second batch adds to the rollups the first made.
        for _ in 0..2 {
            let tx = c.transaction().await.unwrap();
            write_rows(&tx, &mut days, &batch, "gw-a").await.unwrap();
            tx.commit().await.unwrap();
        }
        let count = |sql: &str| {
            let c = &c;
            let sql = sql.to_string();
            async move { c.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        assert_eq!(count("SELECT count(*) FROM token_usage_y2026m11").await, 50);
        assert_eq!(count("SELECT count(*) FROM token_usage_y2026m12").await, 30);
        assert_eq!(count("SELECT count(*) FROM token_usage_default").await, 0);
        for (rollup, rows) in [
            ("usage_daily", "token_usage"),
            ("usage_user_daily", "token_usage"),
            ("usage_user_monthly", "token_usage"),
            ("usage_model_daily", "token_usage"),
        ] {
            let a = count(&format!(
                "SELECT (SUM(calls) * 1000000 + SUM(total_tokens) + SUM(errors) * 7 \
                 + SUM(cost_nano_usd) + SUM(unpriced_calls))::int8 FROM {rollup}"
            ))
            .await;
            let b = count(&format!(
                "SELECT (count(*) * 1000000 + SUM(total_tokens) \
                 + SUM(CASE WHEN status >= 400 THEN 7 ELSE 0 END) \
                 + SUM(COALESCE(cost_nano_usd, 0)) \
                 + SUM(CASE WHEN cost_nano_usd IS NULL THEN 1 ELSE 0 END))::int8 FROM {rows}"
            ))
            .await;
            assert_eq!(a, b, "{rollup}");
        }
        let row = c
            .query_one(
                "SELECT email, created_at, last_seen_at FROM users WHERE id = 'ann'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, Option<String>>(0).as_deref(),
            Some("ann@example.com")
        );
        assert_eq!((row.get::<_, i64>(1), row.get::<_, i64>(2)), (nov, dec));
        assert_eq!(
            count(
                "SELECT count(*) FROM token_usage WHERE gateway = 'gw-a' AND journal_id IS NOT NULL"
            )
            .await,
            80
        );
    }

    #[tokio::test]
    async fn rollups_saturate_instead_of_failing_the_batch() {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        let ts = partition((2026, 12)).1;
        let day = "2026-12-01";
        c.execute(
            "INSERT INTO usage_user_daily (day, user_id, total_tokens) VALUES ($1, 'ann', $2)",
            &[&day, &(i64::MAX - 5)],
        )
        .await
        .unwrap();
        let batch = vec![row(1, "ann", ts)];
        ensure_partitions(&mut c, &months_of(&batch)).await.unwrap();
        let mut days = DayCache::new(jiff::tz::TimeZone::UTC);
        let tx = c.transaction().await.unwrap();
        write_rows(&tx, &mut days, &batch, "gw").await.unwrap();
        tx.commit().await.unwrap();
        let total: i64 = c
            .query_one(
                "SELECT total_tokens FROM usage_user_daily WHERE user_id = 'ann'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(total, i64::MAX);
    }
}
