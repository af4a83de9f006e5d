//! Sustained throughput of the store writer, in rows per second.
//!
//! Run: `cargo bench --bench store_writer` (one case: `cargo bench --bench store_writer -- batch_4096`).
//!
//! Each sample opens the SQLite writer (`store::sqlite::Queue`) on a fresh file in a temp dir
//! (WAL, `synchronous = FULL`, as in production; opening is not timed), then times:
//! `Queue::record` of 100,000 realistic rows (~500 users, 3 models, two providers, days of
//! rollups) as fast as one thread can hand them over, and `WriterThread::close()`, which commits
//! every queued row in batches of at most `batch_max` (one transaction per batch: rows, users and
//! every rollup) and checkpoints the WAL.
//! The queue holds all the rows (`queue_capacity` = the row count) so none is dropped and the
//! figure is the writer's own pace. Cases: `batch_4096` (the default `store.batch_max`) and
//! `batch_1024`.
//!
//! The rows land on whatever disk holds the temp dir (`TMPDIR`); fsync cost is part of the figure.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark's set-up fails loudly on a broken fixture"
)]

use std::sync::Arc;

use divan::Bencher;
use divan::counter::ItemsCount;
use jiff::tz::TimeZone;
use tempfile::TempDir;
use tollgate::provider::{Usage, UsageSource};
use tollgate::store::UsageRow;
use tollgate::store::sqlite::{Queue, WriterThread};
use tollgate::usage::Outcome;

/// Rows per sample.
const ROWS: usize = 100_000;
/// Distinct end users.
const USERS: usize = 500;
/// 2026-11-26T00:00:00Z: the rows spread over the following days.
const START_MS: i64 = 1_795_651_200_000;

fn main() {
    divan::main();
}

/// A tiny deterministic generator (xorshift64), so every sample writes the same rows.
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
}

/// The model mix: (provider, model, endpoint, USD per million input, cached input, output).
const MODELS: [(&str, &str, &str, u64, u64, u64); 3] = [
    (
        "openai",
        "gpt-4o-mini-2024-07-18",
        "chat.completions",
        150_000,
        75_000,
        600_000,
    ),
    (
        "openai",
        "gpt-4.1-2025-04-14",
        "responses",
        2_000_000,
        500_000,
        8_000_000,
    ),
    (
        "gemini",
        "gemini-2.5-flash",
        "streamGenerateContent",
        300_000,
        30_000,
        2_500_000,
    ),
];

/// `ROWS` rows as the proxy would record them over about three days.
fn rows() -> Vec<UsageRow> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let users: Vec<(Arc<str>, String, String)> = (0..USERS)
        .map(|i| {
            (
                Arc::from(format!("user-{i:05}-{:08x}", rng.next() as u32)),
                format!("person{i}@example.com"),
                format!("Person {i}"),
            )
        })
        .collect();
    let providers = [Arc::<str>::from("openai"), Arc::<str>::from("gemini")];
    (0..ROWS)
        .map(|i| {
            let (user_id, email, name) = &users[rng.below(USERS as u64) as usize];
            let (provider, model, endpoint, p_in, p_cached, p_out) =
                MODELS[rng.below(MODELS.len() as u64) as usize];
            let input = 200 + rng.below(6_000);
            let cached = if rng.below(3) == 0 {
                0
            } else {
                input / 2 / 1024 * 1024
            };
            let output = 20 + rng.below(1_500);
            let reasoning = if model.starts_with("gemini") {
                output / 3
            } else {
                0
            };
            let cost_pico = (input - cached) * p_in + cached * p_cached + output * p_out;
            let latency_ms = 300 + rng.below(20_000);
            let outcome = if rng.below(50) == 0 {
                Outcome::ClientGone
            } else {
                Outcome::Complete
            };
            UsageRow {
                request_id: format!("req_{:016x}{:08x}", rng.next(), i),
                ts_ms: START_MS + (i as i64) * 2_500 + rng.below(2_500) as i64,
                user_id: Arc::clone(user_id),
                user_email: Some(email.clone()),
                user_name: Some(name.clone()),
                provider: Arc::clone(&providers[usize::from(provider == "gemini")]),
                model: Some(model.to_owned()),
                endpoint,
                streamed: endpoint != "responses" || rng.below(2) == 0,
                status: 200,
                usage: Usage {
                    input_tokens: input,
                    cached_input_tokens: cached,
                    output_tokens: output,
                    reasoning_tokens: reasoning,
                },
                cost_nano_usd: Some(i64::try_from(cost_pico.div_ceil(1_000_000)).unwrap()),
                usage_source: if outcome == Outcome::Complete {
                    UsageSource::Reported
                } else {
                    UsageSource::Estimated
                },
                latency_ms,
                ttfb_ms: Some(150 + rng.below(1_000)),
                outcome,
                journal_id: None,
                plan: None,
            }
        })
        .collect()
}

/// A store on a fresh file, and the rows to record into it.
fn fresh(batch_max: usize) -> (TempDir, Queue, WriterThread, Vec<UsageRow>) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = Queue::open(
        &dir.path().join("tollgate.db"),
        TimeZone::UTC,
        ROWS,
        batch_max,
    )
    .unwrap();
    (dir, store, writer, rows())
}

fn bench_writer(bencher: Bencher<'_, '_>, batch_max: usize) {
    bencher
        .counter(ItemsCount::new(ROWS))
        .with_inputs(|| fresh(batch_max))
        .bench_values(|(dir, store, writer, rows)| {
            for row in rows {
                assert!(store.record(row), "the queue holds every row");
            }
            writer.close();
            assert_eq!(store.rows_committed(), ROWS as u64);
            assert_eq!(store.rows_dropped() + store.rows_failed(), 0);
            // Deleting the file happens after the timed section.
            dir
        });
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn batch_4096(bencher: Bencher<'_, '_>) {
    bench_writer(bencher, 4096);
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn batch_1024(bencher: Bencher<'_, '_>) {
    bench_writer(bencher, 1024);
}

/// The PostgreSQL writer (`store.backend = "postgres"`) on a fresh database of the machine's
/// server (`TOLLGATE_TEST_DATABASE_URL`, default 127.0.0.1:5432; made and dropped per sample):
/// the same rows through `Store::record`, and `Store::close`, which commits every queued row —
/// one `INSERT … UNNEST` per batch with users and rollups in the same transaction.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn postgres_batch_4096(bencher: Bencher<'_, '_>) {
    use tollgate::store::postgres::testing::TestDb;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    bencher
        .counter(ItemsCount::new(ROWS))
        .with_inputs(|| {
            rt.block_on(async {
                let db = TestDb::create().await;
                let dir = tempfile::tempdir().unwrap();
                let settings = tollgate::config::StoreConfig {
                    backend: tollgate::config::StoreBackend::Postgres,
                    path: dir.path().join("tollgate.db"),
                    queue_capacity: ROWS,
                    batch_max: 4096,
                    journal: tollgate::config::JournalMode::Off,
                    ..tollgate::config::StoreConfig::default()
                };
                let url = db.url().to_string();
                let env = move |name: &str| (name == "DATABASE_URL").then(|| url.clone());
                let store = tollgate::store::open(
                    &settings,
                    TimeZone::UTC,
                    None,
                    &env,
                    "bench",
                    tollgate::store::Role::Tool,
                )
                .await
                .unwrap();
                (db, dir, store, rows())
            })
        })
        .bench_values(|(db, dir, store, rows)| {
            for row in rows {
                assert!(store.record(row), "the queue holds every row");
            }
            rt.block_on(store.close());
            let stats = store.writer_stats();
            assert_eq!(stats.rows_committed, ROWS as u64);
            (db, dir)
        });
}
