//! The admin API's reads on PostgreSQL over the same generated history as `admin_queries`
//! (10 million calls by default): first call, p50 / p95 / max per query.
//!
//! Run: `cargo bench --bench admin_queries` first (it generates and keeps
//! `$TMPDIR/tollgate-admin-bench-<rows>.db`), then `cargo bench --bench admin_queries_pg`
//! (rows: `ADMIN_BENCH_ROWS`, default 10,000,000; iterations: `ADMIN_BENCH_ITERS`, default 200).
//!
//! The SQLite history is brought into the database `tollgate_admin_bench_<rows>` on the machine's
//! server (`TOLLGATE_TEST_DATABASE_URL`'s server, default 127.0.0.1:5432) by the code of
//! `tollgate import --from-sqlite` (`store::import::from_sqlite`: every call, the rollups summed
//! again from them, users with their controls), once: the database is kept, and an import that
//! finds it complete adds nothing (drop it to import again). Then `ANALYZE` (autovacuum would do
//! it soon after such a load on a real server). Every query runs through the `Store` trait on a
//! `PgStore` opened as the admin tools open it — a pool, as the admin API's handlers use it —
//! first call on its own, then `ADMIN_BENCH_ITERS` times (the CSV export a tenth as often).

#![allow(clippy::unwrap_used, reason = "bench")]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "bench arithmetic on small, known ranges"
)]

use std::sync::Arc;
use std::time::Instant;

use jiff::tz::TimeZone;
use tollgate::config::{StoreBackend, StoreConfig};
use tollgate::store::{
    ExportQuery, SeriesBy, StatsQuery, Store, UserSort, UserUsageQuery, UsersQuery,
};

/// The last day of the generated history (`admin_queries`' `TODAY`).
const TODAY: &str = "2026-10-30";
const DAY_MS: i64 = 86_400_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn day_start_ms(day: &str) -> i64 {
    format!("{day}T00:00:00Z")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

fn day_of(ms: i64) -> String {
    tollgate::calendar::local_day(ms, &TimeZone::UTC)
}

fn server_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn sql(url: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query(statement, &[]).await.unwrap()
}

fn main() {
    let rows = env_u64("ADMIN_BENCH_ROWS", 10_000_000);
    let iters = env_u64("ADMIN_BENCH_ITERS", 200) as usize;
    let file = std::env::temp_dir().join(format!("tollgate-admin-bench-{rows}.db"));
    assert!(
        file.exists(),
        "{} is missing: run `ADMIN_BENCH_ROWS={rows} cargo bench --bench admin_queries` first",
        file.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(rows, iters, &file));
}

async fn run(rows: u64, iters: usize, file: &std::path::Path) {
    let name = format!("tollgate_admin_bench_{rows}");
    let server = server_url();
    let exists = !sql(
        &server,
        &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
    )
    .await
    .is_empty();
    if !exists {
        sql(&server, &format!("CREATE DATABASE {name}")).await;
    }
    let mut config: tokio_postgres::Config = server.parse().unwrap();
    config.dbname(&name);
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_string();
    let url = format!("postgres://{user}@{host}:{port}/{name}?sslmode=disable");
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreConfig {
        backend: StoreBackend::Postgres,
        path: dir.path().join("unused.db"),
        ..StoreConfig::default()
    };
    let env_url = url.clone();
    let env = move |n: &str| (n == "DATABASE_URL").then(|| env_url.clone());

    let started = Instant::now();
    let mut last_tenth = 0;
    let imported = tollgate::store::import::from_sqlite(
        &settings,
        TimeZone::UTC,
        &env,
        file,
        &mut |done, total| {
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if tenth != last_tenth {
                last_tenth = tenth;
                eprintln!("imported {done} / {total} calls");
            }
        },
    )
    .await
    .unwrap();
    let took = started.elapsed().as_secs_f64();
    if imported.calls > 0 {
        println!(
            "imported {} calls, {} users in {took:.1} s ({:.0} calls/s)",
            imported.calls,
            imported.users,
            imported.calls as f64 / took
        );
        sql(&url, "ANALYZE").await;
    } else {
        println!(
            "database {name}: already holds the history ({} calls)",
            imported.calls_already
        );
    }
    let size = sql(
        &url,
        &format!("SELECT pg_size_pretty(pg_database_size('{name}'))"),
    )
    .await;
    let size: String = size[0].get(0);
    println!("database {name}: {size}");

    let store: Arc<dyn Store> = tollgate::store::open(
        &settings,
        TimeZone::UTC,
        None,
        &env,
        "bench",
        tollgate::store::Role::Tool,
    )
    .await
    .unwrap();
    let heavy = sql(
        &url,
        &format!(
            "SELECT user_id FROM usage_user_daily WHERE day = '{TODAY}' \
             ORDER BY calls DESC LIMIT 1"
        ),
    )
    .await;
    let heavy: String = heavy[0].get(0);
    let today_start = day_start_ms(TODAY);
    let month_start = format!("{}01", &TODAY[..8]);
    let since_90 = day_of(today_start - 89 * DAY_MS);
    let users = |sort, offset, search: Option<&str>| UsersQuery {
        search: search.map(str::to_string),
        sort,
        desc: true,
        limit: 50,
        offset,
        today: TODAY.into(),
        month_start: month_start.clone(),
        plan: None,
    };
    let first_page = store
        .user_usage(UserUsageQuery {
            user: heavy.clone(),
            today: TODAY.into(),
            month_start: month_start.clone(),
            since_day: since_90.clone(),
            before_call: None,
            limit: 50,
        })
        .await
        .unwrap()
        .unwrap();
    let cursor = first_page.calls.last().unwrap().id;

    println!("\n| query (PostgreSQL) | n | first call ms | p50 ms | p95 ms | max ms | rows |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    macro_rules! case {
        ($name:expr, $n:expr, $body:expr) => {{
            let t = Instant::now();
            let result: usize = $body;
            let first = t.elapsed().as_secs_f64() * 1e3;
            let mut times = Vec::with_capacity($n);
            for _ in 0..$n {
                let t = Instant::now();
                std::hint::black_box($body);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let pick = |p: f64| {
                times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1]
            };
            println!(
                "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
                $name,
                $n,
                first,
                pick(0.5),
                pick(0.95),
                times[times.len() - 1],
                result
            );
        }};
    }
    case!("stats", iters, {
        store
            .stats(StatsQuery {
                today: TODAY.into(),
                month_start: month_start.clone(),
                today_start_ms: today_start,
                week_ago_ms: today_start - 6 * DAY_MS,
            })
            .await
            .unwrap()
            .by_model
            .len()
    });
    case!("users_page tokens_month desc, 50", iters, {
        store
            .users_page(users(UserSort::TokensMonth, 0, None))
            .await
            .unwrap()
            .users
            .len()
    });
    case!("users_page cost_today desc, 50", iters, {
        store
            .users_page(users(UserSort::CostToday, 0, None))
            .await
            .unwrap()
            .users
            .len()
    });
    case!("users_page last_seen desc, 50 at offset 10,000", iters, {
        store
            .users_page(users(UserSort::LastSeen, 10_000, None))
            .await
            .unwrap()
            .users
            .len()
    });
    case!("users_page search \"son 12\", tokens_month desc", iters, {
        store
            .users_page(users(UserSort::TokensMonth, 0, Some("son 12")))
            .await
            .unwrap()
            .users
            .len()
    });
    case!(
        "user page, heaviest user: summary + 90-day series + models + 50 calls",
        iters,
        {
            store
                .user_usage(UserUsageQuery {
                    user: heavy.clone(),
                    today: TODAY.into(),
                    month_start: month_start.clone(),
                    since_day: since_90.clone(),
                    before_call: None,
                    limit: 50,
                })
                .await
                .unwrap()
                .unwrap()
                .calls
                .len()
        }
    );
    case!("user calls, next page by cursor", iters, {
        store
            .user_usage(UserUsageQuery {
                user: heavy.clone(),
                today: TODAY.into(),
                month_start: month_start.clone(),
                since_day: TODAY.into(),
                before_call: Some(cursor),
                limit: 50,
            })
            .await
            .unwrap()
            .unwrap()
            .calls
            .len()
    });
    case!("usage_series 30 days by model", iters, {
        store
            .usage_series(&day_of(today_start - 29 * DAY_MS), SeriesBy::Model, None)
            .await
            .unwrap()
            .len()
    });
    case!("usage_series 7 days by provider", iters, {
        store
            .usage_series(&day_of(today_start - 6 * DAY_MS), SeriesBy::Provider, None)
            .await
            .unwrap()
            .len()
    });
    case!("CSV export of one day (streamed)", (iters / 10).max(1), {
        let mut rx = store.export_calls(ExportQuery {
            from_ms: today_start,
            to_ms: today_start + DAY_MS,
            user: None,
        });
        let mut n = 0;
        while let Some(chunk) = rx.recv().await {
            n += chunk.unwrap().len();
        }
        n
    });
    store.close().await;
}
