//! The admin API's read queries (`store::sqlite::reads`) over a big generated database: p50 / p95
//! / max per query, alone and while the store writer commits rows into the same file.
//!
//! Run: `cargo bench --bench admin_queries` (rows: `ADMIN_BENCH_ROWS`, default 10,000,000;
//! iterations per query: `ADMIN_BENCH_ITERS`, default 200; rows per second offered to the writer
//! during the second pass: `ADMIN_BENCH_WRITE_RATE`, default 5,000, 0 = as fast as it commits;
//! print each statement's query plan: `ADMIN_BENCH_PLANS=1`).
//!
//! The database is generated once and kept as `$TMPDIR/tollgate-admin-bench-<rows>.db`
//! (regenerated when missing; delete it to start over): 20,000 users whose calls follow a Zipf
//! law (the heaviest makes ~10 % of all calls), 90 days ending on a 30th (so "this month" is 30
//! days of rollups), 20 models over two providers, each user on 1–4 (model, endpoint) pairs,
//! with refusals, upstream errors, estimated and usage-less calls, an unpriced model, blocked
//! users and per-user overrides. `token_usage`, its `usage_daily` rollups and `users` are written
//! consistently by multi-row INSERTs in big transactions (`synchronous = OFF`, indexes built
//! after the load) as a schema-version-1 file; the store's own migration to version 2 then
//! fills the per-user and per-model rollups (timed), and the file is switched to WAL like a real
//! one. No `ANALYZE`: the planner sees what it sees in production.
//!
//! Each query runs on a fresh reader from `store::sqlite::open_reader`, as the admin API's
//! handlers do; its first call is reported on its own ("first call": a cold statement cache, and
//! nothing kept between requests to warm — the reads have no cache), then it runs
//! `ADMIN_BENCH_ITERS` times. The second pass starts a real `Store` on the same file whose writer
//! commits rows for today (at the offered rate, for users of its own, removed again at the end
//! of the run or at the start of the next one), and reports the writer's committed rows per
//! second for 2 s without readers and during the read loop, and its deepest queue.

#![allow(clippy::unwrap_used, reason = "bench")]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "bench arithmetic on small, known ranges"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use rusqlite::Connection;
use tollgate::admin::csv;
use tollgate::calendar::{local_day, month_start};
use tollgate::store::sqlite::reads::{self, export, system, user, users};
use tollgate::store::sqlite::schema::apply_schema;
use tollgate::store::sqlite::{Queue, open_reader};
use tollgate::store::{SeriesBy, StatsQuery, UsageRow, UserSort, UsersQuery};
use tollgate::usage::{Outcome, Usage, UsageSource};

const USERS: usize = 20_000;
const DAYS: i64 = 90;
/// The last generated day, "today" for the queries: a 30th, so the month has 30 days.
const TODAY: &str = "2026-10-30";
const DAY_MS: i64 = 86_400_000;
/// Rows per multi-row INSERT.
const CHUNK: usize = 100;

/// (provider, model, endpoints, USD per million tokens: input, cached input, output; reasons).
/// A price of `None` = the model has no price (cost NULL).
type Model = (
    &'static str,
    &'static str,
    &'static [&'static str],
    Option<(u64, u64, u64)>,
    bool,
);
const CHAT: &[&str] = &["chat.completions", "responses"];
const GEN: &[&str] = &["generateContent", "streamGenerateContent"];
const MODELS: [Model; 20] = [
    (
        "openai",
        "gpt-4o-mini",
        CHAT,
        Some((150_000, 75_000, 600_000)),
        false,
    ),
    (
        "openai",
        "gpt-4o",
        CHAT,
        Some((2_500_000, 1_250_000, 10_000_000)),
        false,
    ),
    (
        "openai",
        "gpt-4.1",
        CHAT,
        Some((2_000_000, 500_000, 8_000_000)),
        false,
    ),
    (
        "openai",
        "gpt-4.1-mini",
        CHAT,
        Some((400_000, 100_000, 1_600_000)),
        false,
    ),
    (
        "openai",
        "gpt-4.1-nano",
        CHAT,
        Some((100_000, 25_000, 400_000)),
        false,
    ),
    (
        "openai",
        "o3",
        &["responses"],
        Some((2_000_000, 500_000, 8_000_000)),
        true,
    ),
    (
        "openai",
        "o4-mini",
        CHAT,
        Some((1_100_000, 275_000, 4_400_000)),
        true,
    ),
    (
        "openai",
        "gpt-5",
        &["responses"],
        Some((1_250_000, 125_000, 10_000_000)),
        true,
    ),
    (
        "openai",
        "gpt-5-mini",
        CHAT,
        Some((250_000, 25_000, 2_000_000)),
        true,
    ),
    (
        "openai",
        "text-embedding-3-small",
        &["embeddings"],
        Some((20_000, 0, 0)),
        false,
    ),
    (
        "openai",
        "text-embedding-3-large",
        &["embeddings"],
        Some((130_000, 0, 0)),
        false,
    ),
    (
        "openai",
        "gpt-3.5-turbo",
        &["chat.completions"],
        Some((500_000, 500_000, 1_500_000)),
        false,
    ),
    (
        "gemini",
        "gemini-2.5-flash",
        GEN,
        Some((300_000, 30_000, 2_500_000)),
        true,
    ),
    (
        "gemini",
        "gemini-2.5-pro",
        GEN,
        Some((1_250_000, 125_000, 10_000_000)),
        true,
    ),
    (
        "gemini",
        "gemini-2.5-flash-lite",
        GEN,
        Some((100_000, 10_000, 400_000)),
        false,
    ),
    (
        "gemini",
        "gemini-2.0-flash",
        GEN,
        Some((100_000, 25_000, 400_000)),
        false,
    ),
    (
        "gemini",
        "gemini-1.5-pro",
        GEN,
        Some((1_250_000, 312_500, 5_000_000)),
        false,
    ),
    (
        "gemini",
        "gemini-1.5-flash",
        GEN,
        Some((75_000, 18_750, 300_000)),
        false,
    ),
    (
        "gemini",
        "text-embedding-004",
        &["embedContent", "batchEmbedContents"],
        Some((0, 0, 0)),
        false,
    ),
    (
        "gemini",
        "gemini-embedding-001",
        &["embedContent"],
        None,
        false,
    ),
];

/// A tiny deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn day_start_ms(day: &str) -> i64 {
    format!("{day}T00:00:00Z")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

fn day_of(ms: i64) -> String {
    local_day(ms, &TimeZone::UTC)
}

fn main() {
    let rows = env_u64("ADMIN_BENCH_ROWS", 10_000_000);
    let iters = env_u64("ADMIN_BENCH_ITERS", 200) as usize;
    let write_rate = env_u64("ADMIN_BENCH_WRITE_RATE", 5_000);
    let path = std::env::temp_dir().join(format!("tollgate-admin-bench-{rows}.db"));
    if path.exists() {
        println!(
            "database: {} (cached; delete it to regenerate)",
            path.display()
        );
        remove_live_rows(&path);
    } else {
        let started = Instant::now();
        generate(&path, rows);
        println!(
            "database: {} generated in {:.1} s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    describe(&path);

    let conn = open_reader(&path).unwrap();
    let queries = Queries::new(&conn);
    if std::env::var_os("ADMIN_BENCH_PLANS").is_some() {
        print_plans(&conn);
    }
    println!(
        "\n## Readers alone ({iters} iterations per query; CSV: {} )",
        iters / 10
    );
    let alone = run_all(&conn, &queries, iters);
    print_table(&alone);

    let offered = if write_rate == 0 {
        "as many rows as it takes".to_string()
    } else {
        format!("{write_rate} rows/s offered")
    };
    println!("\n## Readers while the writer commits ({offered})");
    let stop = Arc::new(AtomicBool::new(false));
    let (store, writer) = Queue::open(&path, TimeZone::UTC, 65_536, 4_096).unwrap();
    let max_depth = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let (store, stop, max_depth) = (store.clone(), Arc::clone(&stop), Arc::clone(&max_depth));
        std::thread::spawn(move || feed(&store, &stop, &max_depth, write_rate))
    };
    // Let the writer reach its pace, then take its rate without readers for comparison.
    std::thread::sleep(Duration::from_millis(500));
    let (before, t) = (store.rows_committed(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let alone_rate = (store.rows_committed() - before) as f64 / t.elapsed().as_secs_f64();
    let committed_before = store.rows_committed();
    let started = Instant::now();
    let busy = run_all(&conn, &queries, iters);
    let elapsed = started.elapsed().as_secs_f64();
    let committed = store.rows_committed() - committed_before;
    stop.store(true, Ordering::Release);
    let recorded = feeder.join().unwrap();
    writer.close();
    print_table(&busy);
    println!(
        "\nwriter: {alone_rate:.0} rows/s committed in the 2 s before the read loop (no readers); \
         {:.0} rows/s during it ({committed} rows in {elapsed:.1} s); deepest queue {} rows; \
         dropped {}, failed {}; {recorded} rows recorded in all",
        committed as f64 / elapsed,
        max_depth.load(Ordering::Relaxed),
        store.rows_dropped(),
        store.rows_failed(),
    );
    remove_live_rows(&path);
}

// === the queries ===

/// The parameters of every query, chosen from the data once.
struct Queries {
    today: String,
    /// The last day a series reaches (no zone's today is later).
    latest: String,
    month_start: String,
    since_7: String,
    since_30: String,
    since_90: String,
    today_start_ms: i64,
    week_ago_ms: i64,
    heavy_user: String,
    heavy_cursor: i64,
    search: String,
}

impl Queries {
    fn new(conn: &Connection) -> Self {
        let today = TODAY.to_string();
        let today_start_ms = day_start_ms(TODAY);
        let heavy_user: String = conn
            .query_row(
                "SELECT user_id FROM usage_daily WHERE day = ?1 GROUP BY user_id \
                 ORDER BY SUM(calls) DESC LIMIT 1",
                [TODAY],
                |r| r.get(0),
            )
            .unwrap();
        let first = user::user_calls(conn, &heavy_user, None, 50).unwrap();
        Queries {
            latest: system::latest_possible_day(),
            month_start: month_start(&today),
            since_7: day_of(today_start_ms - 6 * DAY_MS),
            since_30: day_of(today_start_ms - 29 * DAY_MS),
            since_90: day_of(today_start_ms - 89 * DAY_MS),
            week_ago_ms: today_start_ms - 6 * DAY_MS,
            today_start_ms,
            heavy_cursor: first.last().unwrap().id,
            heavy_user,
            search: "son 12".into(),
            today,
        }
    }
}

impl Queries {
    /// A users page of today and this month, sorted by id: the base of each users query.
    fn users(&self) -> UsersQuery {
        UsersQuery {
            search: None,
            sort: UserSort::Id,
            desc: false,
            limit: 50,
            offset: 0,
            today: self.today.clone(),
            month_start: self.month_start.clone(),
            plan: None,
        }
    }
}

type Run<'a> = (&'static str, usize, Box<dyn Fn() -> usize + 'a>);

fn cases<'a>(conn: &'a Connection, q: &'a Queries, iters: usize) -> Vec<Run<'a>> {
    vec![
        (
            "stats",
            iters,
            Box::new(move || {
                let s = system::stats(
                    conn,
                    &StatsQuery {
                        today: q.today.clone(),
                        month_start: q.month_start.clone(),
                        today_start_ms: q.today_start_ms,
                        week_ago_ms: q.week_ago_ms,
                    },
                )
                .unwrap();
                s.by_model.len()
            }),
        ),
        (
            "users_page tokens_month desc, 50",
            iters,
            Box::new(move || {
                let query = UsersQuery {
                    sort: UserSort::TokensMonth,
                    desc: true,
                    limit: 50,
                    ..q.users()
                };
                users::users_page(conn, &query).unwrap().users.len()
            }),
        ),
        (
            "users_page cost_today desc, 50",
            iters,
            Box::new(move || {
                let query = UsersQuery {
                    sort: UserSort::CostToday,
                    desc: true,
                    limit: 50,
                    ..q.users()
                };
                users::users_page(conn, &query).unwrap().users.len()
            }),
        ),
        (
            "users_page last_seen desc, 50, offset 10000",
            iters,
            Box::new(move || {
                let query = UsersQuery {
                    sort: UserSort::LastSeen,
                    desc: true,
                    limit: 50,
                    offset: 10_000,
                    ..q.users()
                };
                users::users_page(conn, &query).unwrap().users.len()
            }),
        ),
        (
            "users_page search, tokens_month desc",
            iters,
            Box::new(move || {
                let query = UsersQuery {
                    search: Some(q.search.clone()),
                    sort: UserSort::TokensMonth,
                    desc: true,
                    limit: 50,
                    ..q.users()
                };
                users::users_page(conn, &query).unwrap().users.len()
            }),
        ),
        (
            "user page (heaviest user, 90 days)",
            iters,
            Box::new(move || {
                let u = &q.heavy_user;
                let summary = users::user_summary(conn, u, &q.today, &q.month_start).unwrap();
                let daily = user::user_daily(conn, u, &q.since_90, &q.today).unwrap();
                let models = user::user_models(conn, u, &q.since_90).unwrap();
                let calls = user::user_calls(conn, u, None, 50).unwrap();
                usize::from(summary.is_some()) + daily.len() + models.len() + calls.len()
            }),
        ),
        (
            "  user_summary",
            iters,
            Box::new(move || {
                usize::from(
                    users::user_summary(conn, &q.heavy_user, &q.today, &q.month_start)
                        .unwrap()
                        .is_some(),
                )
            }),
        ),
        (
            "  user_daily 90 days",
            iters,
            Box::new(move || {
                user::user_daily(conn, &q.heavy_user, &q.since_90, &q.today)
                    .unwrap()
                    .len()
            }),
        ),
        (
            "  user_models 90 days",
            iters,
            Box::new(move || {
                user::user_models(conn, &q.heavy_user, &q.since_90)
                    .unwrap()
                    .len()
            }),
        ),
        (
            "  user_calls first page of 50",
            iters,
            Box::new(move || {
                user::user_calls(conn, &q.heavy_user, None, 50)
                    .unwrap()
                    .len()
            }),
        ),
        (
            "  user_calls next page (cursor)",
            iters,
            Box::new(move || {
                user::user_calls(conn, &q.heavy_user, Some(q.heavy_cursor), 50)
                    .unwrap()
                    .len()
            }),
        ),
        (
            "usage_series 30 days by model",
            iters,
            Box::new(move || {
                system::usage_series(conn, &q.since_30, &q.latest, SeriesBy::Model, None)
                    .unwrap()
                    .len()
            }),
        ),
        (
            "usage_series 7 days by provider",
            iters,
            Box::new(move || {
                system::usage_series(conn, &q.since_7, &q.latest, SeriesBy::Provider, None)
                    .unwrap()
                    .len()
            }),
        ),
        (
            "CSV export, one day (all users)",
            (iters / 10).max(3),
            Box::new(move || {
                let mut out = Vec::with_capacity(1 << 20);
                csv::write_header(&mut out);
                let mut bytes = 0;
                let from = q.today_start_ms - DAY_MS;
                let rows = export::for_each_call(conn, from, from + DAY_MS, None, |row| {
                    csv::write_row(&mut out, &row);
                    if out.len() >= 1 << 20 {
                        // What a streamed body would hand to the socket.
                        bytes += out.len();
                        out.clear();
                    }
                    true
                })
                .unwrap();
                std::hint::black_box(bytes + out.len());
                rows as usize
            }),
        ),
    ]
}

struct Measured {
    name: &'static str,
    n: usize,
    first: f64,
    p50: f64,
    p95: f64,
    max: f64,
    result: usize,
}

fn run_all(conn: &Connection, q: &Queries, iters: usize) -> Vec<Measured> {
    cases(conn, q, iters)
        .into_iter()
        .map(|(name, n, f)| {
            // The first call prepares the statements (the reads keep no other state).
            let t = Instant::now();
            let result = f();
            let first = t.elapsed().as_secs_f64() * 1e3;
            let _ = f();
            let mut times: Vec<f64> = (0..n)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(f());
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let pick = |p: f64| {
                times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1]
            };
            Measured {
                name,
                n,
                first,
                p50: pick(0.50),
                p95: pick(0.95),
                max: times[times.len() - 1],
                result,
            }
        })
        .collect()
}

fn print_table(results: &[Measured]) {
    println!("\n| query | n | first call ms | p50 ms | p95 ms | max ms | rows |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in results {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
            m.name, m.n, m.first, m.p50, m.p95, m.max, m.result
        );
    }
}

fn print_plans(conn: &Connection) {
    for (sql, plan) in reads::query_plans(conn).unwrap() {
        println!("\n{sql}");
        for step in plan {
            println!("  {step}");
        }
    }
}

// === the writer during the second pass ===

/// Offer `rate` rows per second (0: as many as the writer takes) to the store until stopped,
/// for users of its own (`live-…`) on today; never more than the queue holds. Returns the rows
/// recorded.
fn feed(store: &Queue, stop: &AtomicBool, max_depth: &AtomicUsize, rate: u64) -> u64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let users: Vec<Arc<str>> = (0..200)
        .map(|i| Arc::from(format!("live-{i:03}")))
        .collect();
    let provider = Arc::<str>::from("openai");
    let today_start = day_start_ms(TODAY);
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        let due = if rate == 0 {
            sent + 1_000
        } else {
            (started.elapsed().as_secs_f64() * rate as f64) as u64
        };
        if sent >= due {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        for _ in sent..due {
            // Leave room in the queue: a full queue drops rows, which is not what is measured.
            while store.queue_depth() >= 60_000 && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let input = 100 + rng.below(3_000);
            let output = 10 + rng.below(800);
            store.record(UsageRow {
                request_id: format!("live_{:016x}", rng.next()),
                ts_ms: today_start + rng.below(DAY_MS as u64) as i64,
                user_id: Arc::clone(&users[rng.below(users.len() as u64) as usize]),
                user_email: None,
                user_name: None,
                provider: Arc::clone(&provider),
                model: Some("gpt-4o-mini".into()),
                endpoint: "chat.completions",
                streamed: true,
                status: 200,
                usage: Usage {
                    input_tokens: input,
                    cached_input_tokens: 0,
                    output_tokens: output,
                    reasoning_tokens: 0,
                },
                cost_nano_usd: Some(((input * 150_000 + output * 600_000) / 1_000_000) as i64),
                usage_source: UsageSource::Reported,
                latency_ms: 200 + rng.below(5_000),
                ttfb_ms: Some(100 + rng.below(500)),
                outcome: Outcome::Complete,
                journal_id: None,
                plan: None,
            });
            max_depth.fetch_max(store.queue_depth(), Ordering::Relaxed);
        }
        sent = due;
    }
    sent
}

/// Bring the schema up to date and remove what an earlier second pass added (rows past the
/// generated ones, the `live-` users and their rollups), so every run reads the database as
/// generated.
fn remove_live_rows(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    // A file generated by an older schema gets the indexes added since.
    apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
    let max_id: i64 = conn
        .query_row("SELECT max_id FROM bench_meta", [], |r| r.get(0))
        .unwrap();
    let removed = conn
        .execute("DELETE FROM token_usage WHERE id > ?1", [max_id])
        .unwrap();
    conn.execute(
        "DELETE FROM usage_daily WHERE user_id >= 'live-' AND user_id < 'live.'",
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM users WHERE id >= 'live-' AND id < 'live.'", [])
        .unwrap();
    for table in ["usage_user_daily", "usage_user_monthly"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE user_id >= 'live-' AND user_id < 'live.'"),
            [],
        )
        .unwrap();
    }
    // The per-model rollup of today holds the live calls too: sum it again from usage_daily.
    conn.execute_batch(&format!(
        "DELETE FROM usage_model_daily WHERE day = '{TODAY}'; \
         INSERT INTO usage_model_daily (day, provider, model, calls, errors, input_tokens, \
           cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, \
           estimated_calls, unpriced_calls, latency_ms_sum) \
         SELECT day, provider, model, SUM(calls), SUM(errors), SUM(input_tokens), \
           SUM(cached_input_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(total_tokens), \
           SUM(cost_nano_usd), SUM(estimated_calls), SUM(unpriced_calls), SUM(latency_ms_sum) \
         FROM usage_daily WHERE day = '{TODAY}' GROUP BY day, provider, model;"
    ))
    .unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    if removed > 0 {
        println!("removed the {removed} rows the writer pass added");
    }
}

fn describe(path: &Path) {
    let conn = open_reader(path).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "token_usage {} rows, usage_daily {} rows ({} this month), users {}, file {:.2} GB",
        count("SELECT COUNT(*) FROM token_usage"),
        count("SELECT COUNT(*) FROM usage_daily"),
        conn.query_row(
            "SELECT COUNT(*) FROM usage_daily WHERE day >= ?1",
            [month_start(TODAY)],
            |r| r.get::<_, i64>(0)
        )
        .unwrap(),
        count("SELECT COUNT(*) FROM users"),
        size as f64 / 1e9
    );
}

// === generation ===

/// One user of the generated population.
struct GenUser {
    id: String,
    email: Option<String>,
    name: Option<String>,
    /// First day (index) the user may call.
    joins: i64,
    /// Indexes into `combos`: (model, endpoint) pairs this user's app uses, most used first.
    combos: Vec<(usize, &'static str)>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

#[derive(Default, Clone, Copy)]
struct Sums {
    calls: i64,
    errors: i64,
    input: i64,
    cached: i64,
    output: i64,
    reasoning: i64,
    total: i64,
    cost: i64,
    estimated: i64,
    unpriced: i64,
    latency: i64,
}

fn generate(path: &Path, rows: u64) {
    let tmp: PathBuf = path.with_extension("db.partial");
    let _ = std::fs::remove_file(&tmp);
    let mut conn = Connection::open(&tmp).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA locking_mode = EXCLUSIVE; \
         PRAGMA cache_size = -1000000; PRAGMA temp_store = MEMORY;",
    )
    .unwrap();
    apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
    // Indexes are built after the load (one sort each instead of 10 million random inserts).
    let indexes: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name IN ('token_usage', 'usage_daily', 'users')",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for name in &indexes {
        conn.execute_batch(&format!("DROP INDEX {name}")).unwrap();
    }

    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    // Users: a Zipf law over a shuffled order (so the heaviest users are not the first ids).
    let mut users: Vec<GenUser> = (0..USERS)
        .map(|i| {
            let heavy = i < 1_000;
            let n_combos = if heavy {
                1 + rng.below(4)
            } else {
                1 + rng.below(2)
            } as usize;
            let combos = (0..n_combos)
                .map(|_| {
                    // Popular models first: a Zipf law over the model list.
                    let m = zipf_pick(&mut rng, MODELS.len(), 1.1);
                    let endpoints = MODELS[m].2;
                    (m, endpoints[rng.below(endpoints.len() as u64) as usize])
                })
                .collect();
            GenUser {
                id: String::new(),
                email: None,
                name: None,
                joins: if i < 100 || rng.below(10) < 6 {
                    0
                } else {
                    rng.below(DAYS as u64) as i64
                },
                combos,
                first_ms: None,
                last_ms: None,
            }
        })
        .collect();
    let mut ids: Vec<usize> = (0..USERS).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (rank, user) in users.iter_mut().enumerate() {
        let n = ids[rank];
        user.id = format!("user-{n:05}-{:06x}", rng.below(1 << 24));
        user.email = (rng.below(10) != 0).then(|| format!("person{n}@example{}.com", n % 7));
        user.name = (rng.below(4) != 0).then(|| format!("Person {n}"));
    }
    let cumulative: Vec<f64> = {
        let mut acc = 0.0;
        (0..USERS)
            .map(|k| {
                acc += 1.0 / (k as f64 + 1.0);
                acc
            })
            .collect()
    };

    let today_start = day_start_ms(TODAY);
    let first_day_start = today_start - (DAYS - 1) * DAY_MS;
    // Weekdays busier than weekends (2026-08-02, the first day, is a Sunday).
    let weights: Vec<f64> = (0..DAYS)
        .map(|d| if d % 7 == 0 || d % 7 == 6 { 0.6 } else { 1.0 })
        .collect();
    let weight_sum: f64 = weights.iter().sum();
    let mut per_day: Vec<u64> = weights
        .iter()
        .map(|w| (rows as f64 * w / weight_sum) as u64)
        .collect();
    let assigned: u64 = per_day.iter().sum();
    per_day[DAYS as usize - 1] += rows - assigned;

    let insert_sql = |n: usize| {
        format!(
            "INSERT INTO token_usage (id, request_id, ts, user_id, provider, model, endpoint, streamed, status, \
             input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, \
             usage_source, latency_ms, ttfb_ms, outcome) VALUES {}",
            vec![format!("({})", vec!["?"; 19].join(",")); n].join(",")
        )
    };
    let rollup_sql = |n: usize| {
        format!(
            "INSERT INTO usage_daily (day, user_id, provider, model, endpoint, calls, errors, input_tokens, \
             cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd, estimated_calls, \
             unpriced_calls, latency_ms_sum) VALUES {}",
            vec![format!("({})", vec!["?"; 16].join(",")); n].join(",")
        )
    };
    let mut id: i64 = 0;
    let tx = conn.transaction().unwrap();
    {
        let mut insert_chunk = tx.prepare(&insert_sql(CHUNK)).unwrap();
        let mut insert_one = tx.prepare(&insert_sql(1)).unwrap();
        let mut rollup_chunk = tx.prepare(&rollup_sql(CHUNK)).unwrap();
        let mut rollup_one = tx.prepare(&rollup_sql(1)).unwrap();
        let mut pending: Vec<Call> = Vec::with_capacity(CHUNK);
        for d in 0..DAYS {
            let day_start = first_day_start + d * DAY_MS;
            let day = day_of(day_start);
            let n = per_day[d as usize];
            let mut rollups: HashMap<(usize, usize, &'static str), Sums> = HashMap::new();
            for i in 0..n {
                // A user who has joined by this day, drawn by the Zipf law.
                let rank = loop {
                    let x = rng.unit() * cumulative[USERS - 1];
                    let rank = cumulative.partition_point(|&c| c < x).min(USERS - 1);
                    if users[rank].joins <= d {
                        break rank;
                    }
                };
                let ts = day_start + (i as i64 * DAY_MS) / n as i64 + rng.below(500) as i64;
                let call = make_call(&mut rng, &users[rank], rank, ts);
                let user = &mut users[rank];
                user.first_ms = Some(user.first_ms.map_or(ts, |f| f.min(ts)));
                user.last_ms = Some(user.last_ms.map_or(ts, |l| l.max(ts)));
                let s = rollups
                    .entry((rank, call.model, call.endpoint))
                    .or_default();
                s.calls += 1;
                s.errors += i64::from(call.status >= 400);
                s.input += call.input;
                s.cached += call.cached;
                s.output += call.output;
                s.reasoning += call.reasoning;
                s.total += call.input + call.output;
                s.cost += call.cost.unwrap_or(0);
                s.estimated += i64::from(call.source == "estimated");
                s.unpriced += i64::from(call.cost.is_none());
                s.latency += call.latency;
                pending.push(call);
                if pending.len() == CHUNK {
                    bind_calls(&mut insert_chunk, &pending, &users, &mut id);
                    insert_chunk.raw_execute().unwrap();
                    pending.clear();
                }
            }
            for call in pending.drain(..) {
                bind_calls(
                    &mut insert_one,
                    std::slice::from_ref(&call),
                    &users,
                    &mut id,
                );
                insert_one.raw_execute().unwrap();
            }
            // Rollups in primary-key order: appends to the clustered table.
            let mut keys: Vec<_> = rollups.into_iter().collect();
            let model_key = |m: usize| if m == usize::MAX { "" } else { MODELS[m].1 };
            let provider_of = |m: usize| {
                if m == usize::MAX {
                    "openai"
                } else {
                    MODELS[m].0
                }
            };
            keys.sort_by(|a, b| {
                let (ka, kb) = (&a.0, &b.0);
                (
                    users[ka.0].id.as_str(),
                    provider_of(ka.1),
                    model_key(ka.1),
                    ka.2,
                )
                    .cmp(&(
                        users[kb.0].id.as_str(),
                        provider_of(kb.1),
                        model_key(kb.1),
                        kb.2,
                    ))
            });
            for chunk in keys.chunks(CHUNK) {
                let (stmt, parts) = if chunk.len() == CHUNK {
                    (&mut rollup_chunk, chunk.chunks(CHUNK))
                } else {
                    (&mut rollup_one, chunk.chunks(1))
                };
                for part in parts {
                    for (j, ((rank, m, endpoint), s)) in part.iter().enumerate() {
                        let b = j * 16;
                        let values: [i64; 11] = [
                            s.calls,
                            s.errors,
                            s.input,
                            s.cached,
                            s.output,
                            s.reasoning,
                            s.total,
                            s.cost,
                            s.estimated,
                            s.unpriced,
                            s.latency,
                        ];
                        stmt.raw_bind_parameter(b + 1, day.as_str()).unwrap();
                        stmt.raw_bind_parameter(b + 2, users[*rank].id.as_str())
                            .unwrap();
                        stmt.raw_bind_parameter(b + 3, provider_of(*m)).unwrap();
                        stmt.raw_bind_parameter(b + 4, model_key(*m)).unwrap();
                        stmt.raw_bind_parameter(b + 5, *endpoint).unwrap();
                        for (k, v) in values.iter().enumerate() {
                            stmt.raw_bind_parameter(b + 6 + k, *v).unwrap();
                        }
                    }
                    stmt.raw_execute().unwrap();
                }
            }
        }
        // Users: who called, with the operator's controls on a few; plus some who never called
        // but were blocked or given limits ahead of time.
        let mut insert_user = tx
            .prepare(
                "INSERT INTO users (id, email, name, blocked, blocked_reason, daily_tokens, monthly_tokens, \
                 daily_cost_nano_usd, monthly_cost_nano_usd, requests_per_minute, max_concurrent, created_at, \
                 last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .unwrap();
        for (i, u) in users.iter().enumerate() {
            let blocked = rng.below(100) == 0;
            let limits = rng.below(20) == 0;
            let created = u.first_ms.unwrap_or(first_day_start + u.joins * DAY_MS);
            insert_user
                .execute(rusqlite::params![
                    u.id,
                    u.email,
                    u.name,
                    blocked,
                    blocked.then_some("abuse report"),
                    limits.then_some(500_000),
                    limits.then_some(5_000_000),
                    (limits && i % 2 == 0).then_some(2_000_000_000_i64),
                    (limits && i % 2 == 0).then_some(20_000_000_000_i64),
                    (limits && i % 3 == 0).then_some(120),
                    Option::<i64>::None,
                    created,
                    u.last_ms,
                ])
                .unwrap();
        }
        for i in 0..50 {
            insert_user
                .execute(rusqlite::params![
                    format!("pending-{i:03}"),
                    Option::<String>::None,
                    Option::<String>::None,
                    i % 2 == 0,
                    (i % 2 == 0).then_some("blocked before first call"),
                    (i % 2 == 1).then_some(1_000),
                    Option::<i64>::None,
                    Option::<i64>::None,
                    Option::<i64>::None,
                    Option::<i64>::None,
                    Option::<i64>::None,
                    today_start - 3 * DAY_MS,
                    Option::<i64>::None,
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    // Written as a version 1 file (rows, users and daily rollups only): the store's migration
    // builds the indexes, fills the per-user and per-model rollups from usage_daily and scans
    // the rows for impossible figures, as it does for an operator's existing database.
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    let load_done = Instant::now();
    apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
    println!(
        "  indexes built and migrated to the current schema version in {:.1} s",
        load_done.elapsed().as_secs_f64()
    );
    conn.execute_batch(&format!(
        "CREATE TABLE bench_meta (max_id INTEGER NOT NULL); INSERT INTO bench_meta VALUES ({id});"
    ))
    .unwrap();
    conn.execute_batch("PRAGMA locking_mode = NORMAL; PRAGMA journal_mode = WAL;")
        .unwrap();
    drop(conn);
    std::fs::rename(&tmp, path).unwrap();
}

/// Zipf-distributed index in `0..n` with exponent `s` (small n: linear scan).
fn zipf_pick(rng: &mut Rng, n: usize, s: f64) -> usize {
    let total: f64 = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).sum();
    let mut x = rng.unit() * total;
    for k in 0..n {
        x -= 1.0 / ((k + 1) as f64).powf(s);
        if x <= 0.0 {
            return k;
        }
    }
    n - 1
}

/// One generated call. `model == usize::MAX`: the request named no model.
struct Call {
    request: u64,
    ts: i64,
    user: usize,
    model: usize,
    endpoint: &'static str,
    streamed: bool,
    status: i64,
    input: i64,
    cached: i64,
    output: i64,
    reasoning: i64,
    cost: Option<i64>,
    source: &'static str,
    latency: i64,
    ttfb: Option<i64>,
    outcome: &'static str,
}

fn make_call(rng: &mut Rng, user: &GenUser, rank: usize, ts: i64) -> Call {
    // The user's first pair most of the time.
    let pick = if user.combos.len() == 1 || rng.below(10) < 6 {
        0
    } else {
        rng.below(user.combos.len() as u64) as usize
    };
    let (model, endpoint) = user.combos[pick];
    let (_, _, _, price, reasons) = MODELS[model];
    let embedding = endpoint.contains("mbed");
    let streamed = !embedding && (endpoint == "streamGenerateContent" || rng.below(2) == 0);
    let roll = rng.below(1_000);
    let mut call = Call {
        request: rng.next(),
        ts,
        user: rank,
        model,
        endpoint,
        streamed,
        status: 200,
        input: 0,
        cached: 0,
        output: 0,
        reasoning: 0,
        cost: None,
        source: "reported",
        latency: 0,
        ttfb: None,
        outcome: "complete",
    };
    match roll {
        0..=9 => {
            call.status = 429;
            call.source = "none";
            call.outcome = "refused";
            call.latency = rng.below(3) as i64;
        }
        10..=21 => {
            call.status = [500, 502, 503, 400][rng.below(4) as usize];
            call.source = "none";
            call.outcome = "upstream_error";
            call.latency = 50 + rng.below(2_000) as i64;
            call.ttfb = Some(call.latency);
        }
        22..=24 => {
            call.model = usize::MAX;
            call.endpoint = "other";
            call.status = 404;
            call.source = "none";
            call.latency = 20 + rng.below(200) as i64;
            call.ttfb = Some(call.latency);
        }
        _ => {
            let input = (20.0 * (rng.unit() * 6.0).exp()) as i64; // ~20 … 8,000, log-uniform
            call.input = input;
            call.cached = if rng.below(3) == 0 {
                input / 2 / 1024 * 1024
            } else {
                0
            };
            if !embedding {
                call.output = 5 + (rng.unit() * 7.0).exp() as i64;
                call.reasoning = if reasons { call.output / 2 } else { 0 };
            }
            call.latency = if embedding {
                50 + rng.below(300)
            } else {
                300 + rng.below(20_000)
            } as i64;
            call.ttfb = Some(call.latency.min(100 + rng.below(900) as i64));
            if streamed && roll < 60 {
                call.source = "estimated";
                call.outcome = if roll < 50 {
                    "client_gone"
                } else {
                    "stream_truncated"
                };
                call.status = 200;
            }
        }
    }
    call.cost = price.map(|(p_in, p_cached, p_out)| {
        let pico = (call.input - call.cached) as u64 * p_in
            + call.cached as u64 * p_cached
            + call.output as u64 * p_out;
        (pico.div_ceil(1_000_000)) as i64
    });
    call
}

fn bind_calls(stmt: &mut rusqlite::Statement<'_>, calls: &[Call], users: &[GenUser], id: &mut i64) {
    for (j, c) in calls.iter().enumerate() {
        *id += 1;
        let b = j * 19;
        let (provider, model) = if c.model == usize::MAX {
            ("openai", None)
        } else {
            (MODELS[c.model].0, Some(MODELS[c.model].1))
        };
        stmt.raw_bind_parameter(b + 1, *id).unwrap();
        stmt.raw_bind_parameter(b + 2, format!("req_{:016x}{:08x}", c.request, *id as u32))
            .unwrap();
        stmt.raw_bind_parameter(b + 3, c.ts).unwrap();
        stmt.raw_bind_parameter(b + 4, users[c.user].id.as_str())
            .unwrap();
        stmt.raw_bind_parameter(b + 5, provider).unwrap();
        stmt.raw_bind_parameter(b + 6, model).unwrap();
        stmt.raw_bind_parameter(b + 7, c.endpoint).unwrap();
        stmt.raw_bind_parameter(b + 8, c.streamed).unwrap();
        stmt.raw_bind_parameter(b + 9, c.status).unwrap();
        stmt.raw_bind_parameter(b + 10, c.input).unwrap();
        stmt.raw_bind_parameter(b + 11, c.cached).unwrap();
        stmt.raw_bind_parameter(b + 12, c.output).unwrap();
        stmt.raw_bind_parameter(b + 13, c.reasoning).unwrap();
        stmt.raw_bind_parameter(b + 14, c.input + c.output).unwrap();
        stmt.raw_bind_parameter(b + 15, c.cost).unwrap();
        stmt.raw_bind_parameter(b + 16, c.source).unwrap();
        stmt.raw_bind_parameter(b + 17, c.latency).unwrap();
        stmt.raw_bind_parameter(b + 18, c.ttfb).unwrap();
        stmt.raw_bind_parameter(b + 19, c.outcome).unwrap();
    }
}
