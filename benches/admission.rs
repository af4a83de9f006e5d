//! Admission cost per call: `Ledger::admit` followed by `Reservation::settle`, and
//! `Ledger::status`, with 10,000 users known to the ledger, on the production clocks
//! (`SystemClock` for the calendar, governor's quanta clock for the rate).
//!
//! Run: `cargo bench --bench admission` (one case: `cargo bench --bench admission -- admit_settle`).
//!
//! Every user has been seen (and carries usage), so these are the hit paths that run on every
//! call: no allocation, one shard lock for the lookup, then the user's own lock. The users are
//! visited in a shuffled order so that consecutive calls touch unrelated memory, as different
//! users' calls do. Cases:
//! - `admit_settle`: one admitted call, admitted and settled (limits never reached).
//! - `admit_settle_threads`: the same on 1 and 2 threads at once, each from its own place in the
//!   order (the per-call figure is per thread).
//! - `admit_refused`: a call refused on quota (the user's daily limit is used up).
//! - `status`: one user's status (the `GET /me/usage` and header figures).

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark's set-up fails loudly on a broken fixture"
)]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use divan::Bencher;
use jiff::tz::TimeZone;
use tollgate::config::LimitsConfig;
use tollgate::quota::{Hold, Ledger};

/// Users known to the ledger.
const USERS: usize = 10_000;

fn main() {
    divan::main();
}

struct Fixture {
    ledger: Ledger,
    /// The users in a shuffled order.
    users: Vec<Arc<str>>,
}

/// Limits that admit every call of the bench (rate and tokens out of reach), in a zone with
/// DST so that the calendar is not the trivial UTC one.
fn fixture(daily_tokens: u64) -> Fixture {
    let limits = LimitsConfig {
        daily_tokens,
        monthly_tokens: u64::MAX,
        requests_per_minute: u32::MAX,
        daily_cost_usd: Some(1e9),
        ..LimitsConfig::default()
    };
    let ledger = Ledger::new(&limits, TimeZone::get("Europe/Berlin").unwrap());
    let mut rng = 0x2545_F491_4F6C_DD1D_u64;
    let mut users: Vec<Arc<str>> = (0..USERS)
        .map(|i| Arc::from(format!("user-{i:05}-{:08x}", next(&mut rng) as u32)))
        .collect();
    for i in (1..users.len()).rev() {
        users.swap(i, (next(&mut rng) % (i as u64 + 1)) as usize);
    }
    for user in &users {
        // First sight (allocates), with some usage on the books.
        if let Ok(call) = ledger.admit(user, ESTIMATE) {
            call.settle(1_000, 2_000);
        }
    }
    assert_eq!(ledger.tracked_users(), USERS);
    Fixture { ledger, users }
}

/// xorshift64: the same order on every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

const ESTIMATE: Hold = Hold {
    tokens: 4_500,
    cost_nano_usd: 45_000,
};

static OPEN: LazyLock<Fixture> = LazyLock::new(|| fixture(u64::MAX));
static EXHAUSTED: LazyLock<Fixture> = LazyLock::new(|| fixture(0));

#[divan::bench]
fn admit_settle(bencher: Bencher) {
    let f = &*OPEN;
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % USERS;
        let call = f.ledger.admit(&f.users[i], ESTIMATE).unwrap();
        call.settle(1_234, 12_340);
    });
}

/// Each bench thread starts at its own offset in the order.
static NEXT_OFFSET: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static CURSOR: Cell<usize> =
        Cell::new(NEXT_OFFSET.fetch_add(USERS / 7, Ordering::Relaxed) % USERS);
}

#[divan::bench(threads = [1, 2])]
fn admit_settle_threads(bencher: Bencher) {
    let f = &*OPEN;
    bencher.bench(|| {
        let i = CURSOR.with(|c| {
            let i = (c.get() + 1) % USERS;
            c.set(i);
            i
        });
        let call = f.ledger.admit(&f.users[i], ESTIMATE).unwrap();
        call.settle(1_234, 12_340);
    });
}

#[divan::bench]
fn admit_refused(bencher: Bencher) {
    let f = &*EXHAUSTED;
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % USERS;
        divan::black_box(f.ledger.admit(&f.users[i], ESTIMATE).is_err())
    });
}

#[divan::bench]
fn status(bencher: Bencher) {
    let f = &*OPEN;
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % USERS;
        divan::black_box(f.ledger.status(&f.users[i]))
    });
}
