//! The PostgreSQL admin reads over a database of their own written by the real writer path
//! (`rows::ensure_partitions` + `rows::write_rows`): every figure is checked against sums
//! computed from the rows themselves.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use jiff::tz::TimeZone;
use tokio_postgres::Client;

use super::export::{for_each_call, for_each_chunk};
use super::system::{stats, usage_series};
use super::user::{user_calls, user_daily, user_models, user_usage};
use super::users::{like_pattern, user_summary, users_page};
use crate::calendar::{DayCache, local_day};
use crate::store::postgres::rows::{ensure_partitions, months_of, write_rows};
use crate::store::postgres::schema::migrate;
use crate::store::postgres::testing::TestDb;
use crate::store::{
    CallRow, SeriesBy, Stats, StatsQuery, UsageRow, UserSort, UserUsageQuery, UsersPage, UsersQuery,
};
use crate::usage::{Outcome, Totals as UsageTotals, Usage, UsageSource};

const TODAY: &str = "2026-10-15";
const YESTERDAY: &str = "2026-10-14";
const MONTH: &str = "2026-10-01";

fn day_start(day: &str) -> i64 {
    format!("{day}T00:00:00Z")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

/// A call of `user` on `day`, `secs` after midnight UTC; the other fields vary with `n`.
fn call(n: u64, user: &str, day: &str, secs: i64, model: Option<&str>, input: u64) -> UsageRow {
    let output = 10 + n % 17;
    UsageRow {
        request_id: format!("req-{n}"),
        ts_ms: day_start(day) + secs * 1_000,
        user_id: Arc::from(user),
        user_email: Some(format!("{user}@Example.com")),
        user_name: Some(format!("Name {user}")),
        provider: Arc::from(if model.is_some_and(|m| m.starts_with("gemini")) {
            "gemini"
        } else {
            "openai"
        }),
        model: model.map(str::to_string),
        endpoint: if n.is_multiple_of(2) {
            "chat.completions"
        } else {
            "responses"
        },
        streamed: n % 2 == 1,
        status: if n.is_multiple_of(7) { 502 } else { 200 },
        usage: Usage {
            input_tokens: input,
            cached_input_tokens: input / 4,
            output_tokens: output,
            reasoning_tokens: output / 5,
        },
        cost_nano_usd: if n.is_multiple_of(5) {
            None
        } else {
            Some(i64::try_from(input * 3 + output * 7).unwrap())
        },
        usage_source: match n % 8 {
            0 => UsageSource::None,
            3 => UsageSource::Estimated,
            6 => UsageSource::Invalid,
            _ => UsageSource::Reported,
        },
        latency_ms: 100 + n,
        ttfb_ms: Some(10),
        outcome: Outcome::Complete,
        journal_id: None,
        plan: None,
    }
}

/// What one call adds to the rollups, computed from the row itself.
fn totals_of(r: &UsageRow) -> UsageTotals {
    let u = &r.usage;
    let int = |v: u64| i64::try_from(v).unwrap();
    UsageTotals {
        calls: 1,
        input_tokens: int(u.input_tokens),
        cached_input_tokens: int(u.cached_input_tokens),
        output_tokens: int(u.output_tokens),
        reasoning_tokens: int(u.reasoning_tokens),
        total_tokens: int(u.input_tokens + u.output_tokens),
        cost_nano_usd: r.cost_nano_usd.unwrap_or(0),
        estimated_calls: i64::from(matches!(
            r.usage_source,
            UsageSource::Estimated | UsageSource::Invalid
        )),
        unpriced_calls: i64::from(r.cost_nano_usd.is_none()),
        errors: i64::from(r.status >= 400),
        latency_ms_sum: int(r.latency_ms),
    }
}

/// The sum of the rows on days `[from, to]` (UTC) that `keep` keeps.
fn expect(
    rows: &[UsageRow],
    from: &str,
    to: &str,
    keep: impl Fn(&UsageRow) -> bool,
) -> UsageTotals {
    let mut sum = UsageTotals::default();
    for r in rows {
        let day = local_day(r.ts_ms, &TimeZone::UTC);
        if day.as_str() >= from && day.as_str() <= to && keep(r) {
            sum.add(&totals_of(r));
        }
    }
    sum
}

/// A page query for the fixture's today and month.
fn base() -> UsersQuery {
    UsersQuery {
        search: None,
        sort: UserSort::Id,
        desc: false,
        limit: 50,
        offset: 0,
        today: TODAY.into(),
        month_start: MONTH.into(),
        plan: None,
    }
}

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "a_b", "axb"];
const DAYS: [&str; 6] = [
    "2026-09-30",
    "2026-10-02",
    "2026-10-09",
    "2026-10-13",
    YESTERDAY,
    TODAY,
];
const MODELS: [Option<&str>; 4] = [Some("gpt-4o"), Some("gemini-2.5-flash"), None, Some("o3")];

/// 360 calls over six users, six days (one in the previous month) and four models.
fn fixture_rows() -> Vec<UsageRow> {
    (0..360_u64)
        .map(|n| {
            let i = usize::try_from(n).unwrap();
            // Users get different amounts (alice the most), days and models rotate.
            let user = USERS[[0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 0][i % 13]];
            let day = DAYS[i % 6];
            call(
                n,
                user,
                day,
                i64::try_from(n).unwrap() * 200,
                MODELS[i / 6 % 4],
                100 + n * 3,
            )
        })
        .collect()
}

/// Write `rows` as the writer does: partitions first, then batches of 64, one transaction
/// each.
async fn write(c: &mut Client, rows: &[UsageRow]) {
    ensure_partitions(c, &months_of(rows)).await.unwrap();
    let mut days = DayCache::new(TimeZone::UTC);
    for batch in rows.chunks(64) {
        let tx = c.transaction().await.unwrap();
        write_rows(&tx, &mut days, batch, "gw-test").await.unwrap();
        tx.commit().await.unwrap();
    }
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM token_usage WHERE request_id = ANY($1)",
            &[&rows
                .iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n >= rows.len() as i64);
}

/// A fresh, migrated database holding `rows`, and a client of it.
async fn db(rows: &[UsageRow]) -> (TestDb, Client) {
    let db = TestDb::create().await;
    let mut c = db.settings().connect().await.unwrap();
    migrate(&mut c).await.unwrap();
    write(&mut c, rows).await;
    (db, c)
}

/// Block `user` as an operator would (creating the row of a user who never called).
async fn block(c: &Client, user: &str) {
    c.execute(
        "INSERT INTO users (id, created_at, blocked, blocked_reason) VALUES ($1, $2, TRUE, 'spam') \
         ON CONFLICT (id) DO UPDATE SET blocked = TRUE, blocked_reason = 'spam'",
        &[&user, &day_start(TODAY)],
    )
    .await
    .unwrap();
}

async fn stats_now(c: &Client, today: &str) -> Stats {
    stats(
        c,
        &StatsQuery {
            today: today.into(),
            month_start: crate::calendar::month_start(today),
            today_start_ms: day_start(today),
            week_ago_ms: day_start(today) - 6 * 86_400_000,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn stats_are_exact_sums_of_the_rollups() {
    let rows = fixture_rows();
    let (_db, c) = db(&rows).await;
    block(&c, "bob").await;
    block(&c, "erin").await; // never called: a row without usage
    let s = stats_now(&c, TODAY).await;

    assert_eq!(s.users_total, 7);
    assert_eq!(s.users_blocked, 2);
    let seen_since = |from: &str| {
        USERS
            .iter()
            .filter(|u| {
                rows.iter().any(|r| {
                    &*r.user_id == **u && local_day(r.ts_ms, &TimeZone::UTC).as_str() >= from
                })
            })
            .count()
    };
    assert_eq!(
        s.users_active_today,
        i64::try_from(seen_since(TODAY)).unwrap()
    );
    assert_eq!(
        s.users_active_7d,
        i64::try_from(seen_since("2026-10-09")).unwrap()
    );
    assert_eq!(s.today, expect(&rows, TODAY, TODAY, |_| true));
    assert_eq!(s.month, expect(&rows, MONTH, TODAY, |_| true));
    assert!(
        s.month.calls > 0 && s.month.calls < 360,
        "the previous month is left out"
    );
    assert!(s.today.estimated_share() > 0.0);

    // Per model and provider, most tokens first; a call without a model is `None`.
    assert_eq!(s.by_model.len(), 4);
    for m in &s.by_model {
        let want = expect(&rows, MONTH, TODAY, |r| {
            *r.provider == *m.provider && r.model.as_deref() == m.model.as_deref()
        });
        assert_eq!(m.totals, want, "{m:?}");
    }
    assert!(
        s.by_model
            .windows(2)
            .all(|w| w[0].totals.total_tokens >= w[1].totals.total_tokens)
    );
    assert!(s.by_model.iter().any(|m| m.model.is_none()));
    assert_eq!(s.by_provider.len(), 2);
    assert!(
        s.by_provider
            .windows(2)
            .all(|w| w[0].totals.total_tokens >= w[1].totals.total_tokens)
    );
    for p in &s.by_provider {
        assert_eq!(
            p.totals,
            expect(&rows, MONTH, TODAY, |r| *r.provider == *p.provider)
        );
    }

    // An empty database answers zeros.
    let (_empty, e) = db(&[]).await;
    let s = stats_now(&e, TODAY).await;
    assert_eq!(
        (s.users_total, s.users_blocked, s.today, s.month),
        (0, 0, UsageTotals::default(), UsageTotals::default())
    );
    assert!(s.by_model.is_empty() && s.by_provider.is_empty());
}

#[tokio::test]
async fn a_small_day_adds_up_to_the_expected_figures() {
    // Hand-checked figures: two calls on one day.
    let a = call(3, "u1", TODAY, 10, Some("gpt-4o"), 1_000); // output 13, cost 3091, estimated
    let mut b = call(2, "u1", TODAY, 20, Some("gpt-4o"), 500); // output 12, cost 1584, reported
    b.status = 429;
    let (_db, c) = db(&[a, b]).await;
    let s = stats_now(&c, TODAY).await;
    assert_eq!(
        s.today,
        UsageTotals {
            calls: 2,
            input_tokens: 1_500,
            cached_input_tokens: 250 + 125,
            output_tokens: 25,
            reasoning_tokens: 2 + 2,
            total_tokens: 1_525,
            cost_nano_usd: 3_091 + 1_584,
            estimated_calls: 1,
            unpriced_calls: 0,
            errors: 1,
            latency_ms_sum: 103 + 102,
        }
    );
    assert_eq!(s.today.estimated_share(), 0.5);
    assert_eq!((s.users_total, s.users_active_today), (1, 1));
}

fn user_totals_map(rows: &[UsageRow], from: &str, to: &str) -> HashMap<String, UsageTotals> {
    let mut out = HashMap::new();
    for u in USERS {
        out.insert(u.to_string(), expect(rows, from, to, |r| &*r.user_id == u));
    }
    out
}

fn ids(page: &UsersPage) -> Vec<&str> {
    page.users.iter().map(|u| u.id.as_str()).collect()
}

#[tokio::test]
async fn users_sort_over_everyone_search_and_page() {
    let rows = fixture_rows();
    let (_db, c) = db(&rows).await;
    block(&c, "erin").await;
    let month = user_totals_map(&rows, MONTH, TODAY);
    let today = user_totals_map(&rows, TODAY, TODAY);
    let c = &c;
    let page = |q: UsersQuery| async move { users_page(c, &q).await.unwrap() };

    // Month tokens, descending, over all 7 users (erin has none and comes last).
    let mut want: Vec<(i64, &str)> = USERS.iter().map(|u| (month[*u].total_tokens, *u)).collect();
    want.sort_by(|a, b| b.cmp(a));
    let mut want: Vec<&str> = want.into_iter().map(|(_, u)| u).collect();
    want.push("erin");
    let all = page(UsersQuery {
        sort: UserSort::TokensMonth,
        desc: true,
        limit: 100,
        ..base()
    })
    .await;
    assert_eq!(all.total, 7);
    assert_eq!(ids(&all), want);
    for u in &all.users {
        if u.id == "erin" {
            assert!(u.controls.blocked);
            assert_eq!(u.controls.blocked_reason.as_deref(), Some("spam"));
            assert_eq!(
                (u.today, u.month, u.last_seen_at),
                (UsageTotals::default(), UsageTotals::default(), None)
            );
        } else {
            assert!(!u.controls.blocked);
            assert_eq!(u.month, month[&u.id], "{}", u.id);
            assert_eq!(u.today, today[&u.id], "{}", u.id);
            assert_eq!(
                u.email.as_deref(),
                Some(format!("{}@Example.com", u.id).as_str())
            );
            // The same figures as one user's summary.
            assert_eq!(
                user_summary(c, &u.id, TODAY, MONTH).await.unwrap().as_ref(),
                Some(u)
            );
        }
    }
    // Pages of 3 are slices of the whole order, and `total` counts every match.
    let mut paged = Vec::new();
    for offset in [0, 3, 6, 9] {
        let p = page(UsersQuery {
            sort: UserSort::TokensMonth,
            desc: true,
            limit: 3,
            offset,
            ..base()
        })
        .await;
        assert_eq!(p.total, 7);
        paged.extend(p.users.into_iter().map(|u| u.id));
    }
    assert_eq!(paged, want);

    // Today's cost, ascending: users without usage today first, ties by id.
    let mut want: Vec<(i64, &str)> = USERS
        .iter()
        .map(|u| (today[*u].cost_nano_usd, *u))
        .collect();
    want.push((0, "erin"));
    want.sort();
    let p = page(UsersQuery {
        sort: UserSort::CostToday,
        desc: false,
        limit: 100,
        ..base()
    })
    .await;
    assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());
    let mut want: Vec<(i64, &str)> = USERS
        .iter()
        .map(|u| (month[*u].cost_nano_usd, *u))
        .collect();
    want.push((0, "erin"));
    want.sort_by(|a, b| b.cmp(a));
    let p = page(UsersQuery {
        sort: UserSort::CostMonth,
        desc: true,
        limit: 100,
        ..base()
    })
    .await;
    assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());
    let mut want: Vec<(i64, &str)> = USERS.iter().map(|u| (today[*u].total_tokens, *u)).collect();
    want.push((0, "erin"));
    want.sort_by(|a, b| b.cmp(a));
    let p = page(UsersQuery {
        sort: UserSort::TokensToday,
        desc: true,
        limit: 100,
        ..base()
    })
    .await;
    assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());
    for u in &p.users {
        if u.id != "erin" {
            assert_eq!((u.today, u.month), (today[&u.id], month[&u.id]), "{}", u.id);
        }
    }

    // Columns of `users`: ids as bytes ("a_b" before "alice": '_' < 'l').
    let p = page(UsersQuery {
        sort: UserSort::Id,
        limit: 100,
        ..base()
    })
    .await;
    assert_eq!(
        ids(&p),
        ["a_b", "alice", "axb", "bob", "carol", "dave", "erin"]
    );
    assert_eq!(p.users[1].month, month["alice"]);
    assert_eq!(p.users[1].today, today["alice"]);
    let p = page(UsersQuery {
        sort: UserSort::Id,
        desc: true,
        limit: 2,
        offset: 1,
        ..base()
    })
    .await;
    assert_eq!((ids(&p), p.total), (vec!["dave", "carol"], 7));
    // Last seen: a user who never called is last when descending, first when ascending.
    let p = page(UsersQuery {
        sort: UserSort::LastSeen,
        desc: true,
        limit: 100,
        ..base()
    })
    .await;
    let seen: Vec<Option<i64>> = p.users.iter().map(|u| u.last_seen_at).collect();
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");
    assert_eq!(p.users.last().unwrap().id, "erin");
    for u in &p.users {
        let want = rows
            .iter()
            .filter(|r| *r.user_id == *u.id)
            .map(|r| r.ts_ms)
            .max();
        assert_eq!(u.last_seen_at, want, "{}", u.id);
    }
    let p = page(UsersQuery {
        sort: UserSort::LastSeen,
        desc: false,
        limit: 100,
        ..base()
    })
    .await;
    assert_eq!(p.users.first().unwrap().id, "erin");
    let seen: Vec<Option<i64>> = p.users.iter().map(|u| u.last_seen_at).collect();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    let p = page(UsersQuery {
        sort: UserSort::Created,
        limit: 100,
        ..base()
    })
    .await;
    let created: Vec<i64> = p.users.iter().map(|u| u.created_at).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");

    // Search: id, email or name, case-insensitive; LIKE wildcards are the user's text.
    let search = |text: &str, sort: UserSort| {
        let q = UsersQuery {
            search: Some(text.into()),
            sort,
            limit: 100,
            ..base()
        };
        async move {
            let p = page(q).await;
            (
                ids(&p).into_iter().map(str::to_string).collect::<Vec<_>>(),
                p.total,
            )
        }
    };
    assert_eq!(
        search("a_b", UserSort::Id).await,
        (vec!["a_b".to_string()], 1)
    );
    assert_eq!(
        search("A_B", UserSort::TokensMonth).await,
        (vec!["a_b".to_string()], 1)
    );
    assert_eq!(search("%", UserSort::Id).await, (vec![], 0));
    assert_eq!(search("\\", UserSort::Id).await, (vec![], 0));
    assert_eq!(
        search("NAME AL", UserSort::Id).await,
        (vec!["alice".to_string()], 1)
    );
    assert_eq!(search("example.COM", UserSort::Id).await.1, 6);
    assert_eq!(search("", UserSort::Id).await.1, 7);
    assert_eq!(
        search("car", UserSort::TokensToday).await,
        (vec!["carol".to_string()], 1)
    );
    // Every caller's name ("Name …") has an "a"; erin has neither name nor email.
    let (found, total) = search("a", UserSort::CostMonth).await;
    assert_eq!((found.len(), total), (6, 6));
    assert!(!found.contains(&"erin".to_string()));
    // A page past the end is empty but still counts the matches.
    let p = page(UsersQuery {
        search: Some("a".into()),
        sort: UserSort::CostMonth,
        offset: 10,
        ..base()
    })
    .await;
    assert_eq!((p.users.len(), p.total), (0, 6));
}

#[tokio::test]
async fn search_folds_ascii_letters_only_as_sqlite_like_does() {
    let mut e = call(1, "Émile", TODAY, 10, Some("gpt-4o"), 10);
    e.user_name = Some("ÉMILE Zola".into());
    let (_db, c) = db(&[e]).await;
    let hits = |text: &str| {
        let q = UsersQuery {
            search: Some(text.into()),
            ..base()
        };
        let c = &c;
        async move { users_page(c, &q).await.unwrap().total }
    };
    assert_eq!(hits("Émile").await, 1);
    assert_eq!(hits("ÉMILE").await, 1, "the ASCII letters fold");
    assert_eq!(hits("émILE").await, 0);
    // SQLite's LIKE leaves non-ASCII letters' case alone: "É" is not "é".
    assert_eq!(hits("émile").await, 0);
    assert_eq!(hits("zola").await, 1);
}

#[tokio::test]
async fn one_users_days_models_and_summary() {
    let rows = fixture_rows();
    let (_db, c) = db(&rows).await;
    assert_eq!(
        user_summary(&c, "nobody", TODAY, MONTH).await.unwrap(),
        None
    );

    let daily = user_daily(&c, "alice", "2026-09-29", TODAY).await.unwrap();
    assert_eq!(daily.len(), 17);
    assert_eq!(daily.first().unwrap().day, "2026-09-29");
    assert_eq!(daily.last().unwrap().day, TODAY);
    for p in &daily {
        assert_eq!(
            p.totals,
            expect(&rows, &p.day, &p.day, |r| &*r.user_id == "alice"),
            "{}",
            p.day
        );
    }
    assert_eq!(daily[1].day, "2026-09-30");
    assert!(daily[1].totals.calls > 0);
    assert_eq!(daily[2].totals, UsageTotals::default()); // 2026-10-01: no calls, still there
    assert_eq!(daily.iter().filter(|p| p.totals.calls > 0).count(), 6);
    assert!(
        user_daily(&c, "alice", "2026-10-16", TODAY)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(user_daily(&c, "alice", "not a day", TODAY).await.is_err());

    let models = user_models(&c, "alice", MONTH).await.unwrap();
    assert!(
        models
            .windows(2)
            .all(|w| w[0].totals.total_tokens >= w[1].totals.total_tokens)
    );
    assert_eq!(models.len(), 4);
    assert!(models.iter().any(|m| m.model.is_none()));
    let mut sum = UsageTotals::default();
    for m in &models {
        sum.add(&m.totals);
        let want = expect(&rows, MONTH, TODAY, |r| {
            &*r.user_id == "alice"
                && r.model.as_deref() == m.model.as_deref()
                && *r.provider == *m.provider
        });
        assert_eq!(m.totals, want);
    }
    assert_eq!(sum, expect(&rows, MONTH, TODAY, |r| &*r.user_id == "alice"));

    let s = user_summary(&c, "alice", TODAY, MONTH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.today,
        expect(&rows, TODAY, TODAY, |r| &*r.user_id == "alice")
    );
    assert_eq!(s.month, sum);
    assert!(!s.controls.blocked);
    assert_eq!(s.name.as_deref(), Some("Name alice"));

    // All of it in one read, with a page of calls.
    let q = |before_call: Option<i64>, limit: u32| UserUsageQuery {
        user: "alice".into(),
        today: TODAY.into(),
        month_start: MONTH.into(),
        since_day: "2026-09-29".into(),
        before_call,
        limit,
    };
    let u = user_usage(&c, &q(None, 10)).await.unwrap().unwrap();
    assert_eq!(u.summary, s);
    assert_eq!(u.daily, daily);
    let since = user_models(&c, "alice", "2026-09-29").await.unwrap();
    assert_eq!(u.models, since);
    let mut all = UsageTotals::default();
    since.iter().for_each(|m| all.add(&m.totals));
    assert_eq!(
        all,
        expect(&rows, "2026-09-29", TODAY, |r| &*r.user_id == "alice")
    );
    assert_eq!(u.calls.len(), 10);
    assert!(u.more_calls);
    assert_eq!(u.calls, user_calls(&c, "alice", None, 10).await.unwrap());
    let alice_calls = rows.iter().filter(|r| &*r.user_id == "alice").count();
    let rest = user_usage(&c, &q(Some(u.calls[9].id), 1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.calls.len(), alice_calls - 10);
    assert!(!rest.more_calls);
    let exact = user_usage(
        &c,
        &q(
            Some(u.calls[9].id),
            u32::try_from(alice_calls - 10).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!exact.more_calls);
    assert!(
        user_usage(
            &c,
            &UserUsageQuery {
                user: "nobody".into(),
                ..q(None, 10)
            }
        )
        .await
        .unwrap()
        .is_none()
    );
}

#[tokio::test]
async fn call_pages_follow_the_cursor_without_overlap_or_gap() {
    // 23 calls, several sharing a timestamp, recorded out of time order.
    let mut rows: Vec<UsageRow> = (0..23_u64)
        .map(|n| {
            call(
                n,
                "pat",
                TODAY,
                i64::try_from((n * 7) % 10).unwrap(),
                Some("gpt-4o"),
                100 + n,
            )
        })
        .collect();
    rows.push(call(99, "someone-else", TODAY, 5, Some("gpt-4o"), 1));
    let (_db, c) = db(&rows).await;
    let all = user_calls(&c, "pat", None, 100).await.unwrap();
    assert_eq!(all.len(), 23);
    assert!(
        all.windows(2)
            .all(|w| (w[0].ts, w[0].id) > (w[1].ts, w[1].id)),
        "newest first"
    );
    let mut paged: Vec<CallRow> = Vec::new();
    let mut cursor = None;
    loop {
        let page = user_calls(&c, "pat", cursor, 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        cursor = Some(page.last().unwrap().id);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(
        user_calls(&c, "pat", Some(123_456), 5)
            .await
            .unwrap()
            .is_empty()
    );

    // Every field as the row was recorded.
    for got in &all {
        let source = rows
            .iter()
            .find(|r| r.request_id == got.request_id)
            .unwrap();
        assert_eq!(got.user_id, "pat");
        assert_eq!(got.ts, source.ts_ms);
        assert_eq!(got.provider, "openai");
        assert_eq!(got.model.as_deref(), Some("gpt-4o"));
        assert_eq!(got.endpoint, source.endpoint);
        assert_eq!(got.streamed, source.streamed);
        assert_eq!(got.status, i64::from(source.status));
        let t = totals_of(source);
        assert_eq!(
            (
                got.input_tokens,
                got.cached_input_tokens,
                got.output_tokens,
                got.reasoning_tokens,
                got.total_tokens
            ),
            (
                t.input_tokens,
                t.cached_input_tokens,
                t.output_tokens,
                t.reasoning_tokens,
                t.total_tokens
            )
        );
        assert_eq!(got.cost_nano_usd, source.cost_nano_usd);
        assert_eq!(got.usage_source, source.usage_source.as_str());
        assert_eq!(got.latency_ms, i64::try_from(source.latency_ms).unwrap());
        assert_eq!(got.ttfb_ms, Some(10));
        assert_eq!(got.outcome, "complete");
    }
}

#[tokio::test]
async fn series_by_model_and_provider() {
    let rows = fixture_rows();
    let (_db, c) = db(&rows).await;
    let since = "2026-10-02";
    for user in [None, Some("carol")] {
        let keep_user = |r: &UsageRow| user.is_none_or(|u| *r.user_id == *u);
        let by_model = usage_series(&c, since, TODAY, SeriesBy::Model, user)
            .await
            .unwrap();
        assert!(by_model.windows(2).all(
            |w| (&w[0].day, &w[0].key, &w[0].provider) < (&w[1].day, &w[1].key, &w[1].provider)
        ));
        let days: std::collections::BTreeSet<&str> =
            by_model.iter().map(|p| p.day.as_str()).collect();
        assert_eq!(
            days.into_iter().collect::<Vec<_>>(),
            ["2026-10-02", "2026-10-09", "2026-10-13", YESTERDAY, TODAY]
        );
        for p in &by_model {
            let want = expect(&rows, &p.day, &p.day, |r| {
                keep_user(r)
                    && r.model.as_deref().unwrap_or("") == p.key
                    && *r.provider == *p.provider
            });
            assert_eq!(p.totals, want, "{p:?}");
        }
        let mut sum = UsageTotals::default();
        by_model.iter().for_each(|p| sum.add(&p.totals));
        assert_eq!(sum, expect(&rows, since, TODAY, keep_user));

        let by_provider = usage_series(
            &c,
            since,
            &crate::store::sqlite::reads::system::latest_possible_day(),
            SeriesBy::Provider,
            user,
        )
        .await
        .unwrap();
        for p in &by_provider {
            assert_eq!(p.key, p.provider);
            let want = expect(&rows, &p.day, &p.day, |r| {
                keep_user(r) && *r.provider == *p.key
            });
            assert_eq!(p.totals, want, "{p:?}");
        }
        let mut sum = UsageTotals::default();
        by_provider.iter().for_each(|p| sum.add(&p.totals));
        assert_eq!(sum, expect(&rows, since, TODAY, keep_user));
    }
}

/// Stats, the user list and a series for `today`, each checked against the rows.
async fn check(c: &Client, rows: &[UsageRow], today: &str) {
    let month = crate::calendar::month_start(today);
    let s = stats_now(c, today).await;
    assert_eq!(
        s.today,
        expect(rows, today, today, |_| true),
        "today {today}"
    );
    assert_eq!(
        s.month,
        expect(rows, &month, today, |_| true),
        "month {today}"
    );
    let p = users_page(
        c,
        &UsersQuery {
            sort: UserSort::TokensMonth,
            desc: true,
            limit: 100,
            today: today.into(),
            month_start: month.clone(),
            ..base()
        },
    )
    .await
    .unwrap();
    for u in &p.users {
        assert_eq!(
            u.month,
            expect(rows, &month, today, |r| *r.user_id == *u.id),
            "{} {today}",
            u.id
        );
        assert_eq!(
            u.today,
            expect(rows, today, today, |r| *r.user_id == *u.id),
            "{} {today}",
            u.id
        );
    }
    assert!(
        p.users
            .windows(2)
            .all(|w| w[0].month.total_tokens >= w[1].month.total_tokens)
    );
    let series = usage_series(c, "2026-09-01", today, SeriesBy::Provider, None)
        .await
        .unwrap();
    let mut sum = UsageTotals::default();
    series.iter().for_each(|p| sum.add(&p.totals));
    assert_eq!(sum, expect(rows, "2026-09-01", today, |_| true));
}

#[tokio::test]
async fn reads_follow_new_calls_days_and_late_rows() {
    let rows = fixture_rows();
    let (_db, mut c) = db(&rows).await;
    // Yesterday, then today: the day rolls.
    check(&c, &rows, YESTERDAY).await;
    check(&c, &rows, TODAY).await;

    // New calls today and yesterday (a new user, new keys, and more on existing keys).
    let mut more = rows.clone();
    for (batch, count) in [(1_000, 20), (2_000, 45)] {
        let extra: Vec<UsageRow> = (batch..batch + count)
            .map(|n| {
                let i = usize::try_from(n).unwrap();
                let day = if n % 3 == 0 { YESTERDAY } else { TODAY };
                call(
                    n,
                    ["alice", "zed", "dave"][i % 3],
                    day,
                    80_000,
                    MODELS[i % 4],
                    5_000 + n,
                )
            })
            .collect();
        write(&mut c, &extra).await;
        more.extend(extra);
        check(&c, &more, TODAY).await;
    }

    // A late row for a day long closed (and another for the previous month).
    let late = vec![
        call(3_000, "carol", "2026-10-02", 100, Some("o3"), 70_000),
        call(3_001, "bob", "2026-09-30", 100, Some("o3"), 80_000),
    ];
    write(&mut c, &late).await;
    more.extend(late);
    check(&c, &more, TODAY).await;

    // A request computed just before midnight, after others asked about today; and one for
    // an earlier day (the month's rollup then holds days after the asker's today).
    check(&c, &more, YESTERDAY).await;
    check(&c, &more, "2026-10-13").await;
    check(&c, &more, TODAY).await;

    // A malformed day, and a day no zone has reached, are answered with nothing; neither
    // disturbs the next answers.
    let malformed = stats(
        &c,
        &StatsQuery {
            today: "15/10/2026".into(),
            month_start: MONTH.into(),
            today_start_ms: 0,
            week_ago_ms: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!((malformed.today.calls, malformed.month.calls), (0, 0));
    let future = stats_now(&c, "2999-01-01").await;
    assert_eq!((future.today.calls, future.month.calls), (0, 0));
    // A malformed month start is an error where the month's end is needed.
    assert!(
        users_page(
            &c,
            &UsersQuery {
                sort: UserSort::TokensMonth,
                month_start: "October".into(),
                ..base()
            }
        )
        .await
        .is_err()
    );
    check(&c, &more, TODAY).await;
}

#[tokio::test]
async fn export_visits_calls_in_time_order_a_chunk_at_a_time() {
    let mut odd = call(1, "u,1", TODAY, 30, Some("my,\"model\""), 10);
    odd.cost_nano_usd = None;
    odd.ttfb_ms = None;
    let mut rows = vec![
        call(2, "u2", TODAY, 20, Some("gpt-4o"), 20),
        odd.clone(),
        call(3, "u2", TODAY, 40, None, 30),
        call(4, "u2", YESTERDAY, 10, Some("gpt-4o"), 40),
        // Another month: another partition.
        call(5, "u2", "2026-09-30", 10, Some("gpt-4o"), 50),
        call(6, "u2", "2026-11-01", 10, Some("gpt-4o"), 60),
    ];
    // Two calls at the same instant: by id, i.e. in the order they were written.
    rows.push(call(7, "u2", TODAY, 40, Some("o3"), 70));
    let (_db, mut c) = db(&rows).await;
    let (from, to) = (day_start(TODAY), day_start(TODAY) + 86_400_000);
    let mut seen: Vec<Vec<String>> = Vec::new();
    for_each_call(&mut c, from, to, None, 2, |chunk| {
        seen.push(chunk.into_iter().map(|r| r.request_id).collect());
        true
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        [vec!["req-2", "req-1"], vec!["req-3", "req-7"]],
        "chunks of 2, no empty chunk at the end"
    );
    let mut got: Vec<CallRow> = Vec::new();
    for_each_call(&mut c, from, to, None, 512, |chunk| {
        got.extend(chunk);
        true
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 4);
    let odd_row = got.iter().find(|r| r.request_id == "req-1").unwrap();
    assert_eq!(
        (
            odd_row.user_id.as_str(),
            odd_row.model.as_deref(),
            odd_row.cost_nano_usd,
            odd_row.ttfb_ms,
            odd_row.streamed
        ),
        ("u,1", Some("my,\"model\""), None, None, true)
    );
    assert!(
        got.windows(2)
            .all(|w| (w[0].ts, w[0].id) < (w[1].ts, w[1].id))
    );
    // The same rows as a user's page, oldest first.
    let mut u2 = user_calls(&c, "u2", None, 100).await.unwrap();
    u2.reverse();

    // One user, every month, stopped after the second chunk.
    let mut seen = Vec::new();
    for_each_call(&mut c, 0, i64::MAX, Some("u2"), 2, |chunk| {
        seen.extend(chunk);
        seen.len() < 4
    })
    .await
    .unwrap();
    assert_eq!(
        seen.iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        ["req-5", "req-4", "req-2", "req-3"]
    );
    assert_eq!(seen[..], u2[..4]);

    // A sender that waits: a bounded channel drained by another task.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<CallRow>>(1);
    let drain = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend(chunk.into_iter().map(|r| r.request_id));
        }
        all
    });
    for_each_chunk(&mut c, 0, i64::MAX, Some("u2"), 1, |chunk| {
        let tx = tx.clone();
        async move { tx.send(chunk).await.is_ok() }
    })
    .await
    .unwrap();
    drop(tx);
    assert_eq!(
        drain.await.unwrap(),
        ["req-5", "req-4", "req-2", "req-3", "req-7", "req-6"]
    );
    // Nothing in the period: `send` is never called.
    for_each_call(&mut c, 1, 2, None, 10, |_| panic!("no rows"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sums_past_i64_max_saturate_and_a_pooled_client_reads_too() {
    let rows = [
        call(1, "rex", TODAY, 10, Some("gpt-4o"), 100),
        call(2, "sam", TODAY, 20, Some("gpt-4o"), 50),
        call(3, "rex", TODAY, 30, Some("o3"), 50),
    ];
    let (db, c) = db(&rows).await;
    // Rollup rows at the top of the range, as the saturating writer leaves them.
    for table in ["usage_daily", "usage_model_daily"] {
        c.execute(
            &format!("UPDATE {table} SET total_tokens = $1, cost_nano_usd = $1"),
            &[&i64::MAX],
        )
        .await
        .unwrap();
    }
    let s = stats_now(&c, TODAY).await;
    assert_eq!(s.today.calls, 3);
    assert_eq!(
        (s.today.total_tokens, s.today.cost_nano_usd),
        (i64::MAX, i64::MAX)
    );
    assert_eq!(s.today.input_tokens, 200);
    let rex = user_models(&c, "rex", MONTH).await.unwrap();
    assert_eq!(rex.len(), 2);
    assert!(rex.iter().all(|m| m.totals.total_tokens == i64::MAX));
    let series = usage_series(&c, TODAY, TODAY, SeriesBy::Provider, Some("rex"))
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(
        (series[0].totals.calls, series[0].totals.total_tokens),
        (2, i64::MAX)
    );

    // The same reads through a pooled connection, in futures a multi-threaded runtime (and
    // an `async_trait` Store) can move between threads.
    fn sendable<F: std::future::Future + Send>(f: F) -> F {
        f
    }
    let pool = db.settings().pool().unwrap();
    let mut pooled = pool.get().await.unwrap();
    assert_eq!(stats_now(&pooled, TODAY).await, s);
    let page = sendable(users_page(&**pooled, &base())).await.unwrap();
    assert_eq!(ids(&page), ["rex", "sam"]);
    let q = UserUsageQuery {
        user: "rex".into(),
        today: TODAY.into(),
        month_start: MONTH.into(),
        since_day: MONTH.into(),
        before_call: None,
        limit: 1,
    };
    let rex_usage = sendable(user_usage(&**pooled, &q)).await.unwrap().unwrap();
    assert_eq!(rex_usage.models, rex);
    assert!(rex_usage.more_calls);
    let again = sendable(usage_series(
        &**pooled,
        TODAY,
        TODAY,
        SeriesBy::Provider,
        Some("rex"),
    ));
    assert_eq!(again.await.unwrap(), series);
    let mut n = 0;
    sendable(for_each_call(
        &mut **pooled,
        0,
        i64::MAX,
        None,
        2,
        |chunk| {
            n += chunk.len();
            true
        },
    ))
    .await
    .unwrap();
    assert_eq!(n, 3);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let export = tokio::spawn(async move {
        for_each_chunk(&mut **pooled, 0, i64::MAX, Some("rex"), 1, |chunk| {
            let tx = tx.clone();
            async move { tx.send(chunk).await.is_ok() }
        })
        .await
    });
    let mut got = Vec::new();
    while let Some(chunk) = rx.recv().await {
        got.extend(chunk.into_iter().map(|r: CallRow| r.request_id));
    }
    export.await.unwrap().unwrap();
    assert_eq!(got, ["req-1", "req-3"]);
}

#[test]
fn like_wildcards_are_escaped_and_ascii_letters_folded() {
    assert_eq!(like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    assert_eq!(like_pattern("ÉmILE"), "%Émile%");
}

/// The same rows through both stores' writers, and every read asked of both: the PostgreSQL
/// answers are the SQLite answers, field for field (ids, orders, ties, searches, sums).
#[tokio::test]
async fn every_read_answers_as_the_sqlite_store_does() {
    let mut rows = fixture_rows();
    // Ids, names and emails that orders and searches could treat differently.
    for (n, user, name, email) in [
        (5_000, "Émile", Some("ÉMILE Zola"), None),
        (5_001, "émile", None, Some("emile@EXAMPLE.com")),
        (5_002, "Zed", Some("zed"), None),
        (5_003, "a%b", None, None),
        (5_004, "a\\b", Some("Back\\Slash"), None),
        (5_005, "_x", Some("under_score"), None),
        (5_006, "MiXeD", None, Some("MIXED@EXAMPLE.COM")),
    ] {
        let i = usize::try_from(n).unwrap();
        let mut r = call(n, user, DAYS[i % 6], 500, MODELS[i % 4], 1_000 + n);
        r.user_name = name.map(str::to_string);
        r.user_email = email.map(str::to_string);
        rows.push(r);
    }
    let (_pg, c) = db(&rows).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.db");
    let (queue, writer) =
        crate::store::sqlite::Queue::open(&path, TimeZone::UTC, 10_000, 64).unwrap();
    for r in &rows {
        assert!(queue.record(r.clone()));
    }
    writer.close();
    assert_eq!(queue.rows_committed(), rows.len() as u64);
    for user in ["erin", "Yann", "bob"] {
        block(&c, user).await;
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        crate::store::sqlite::controls::set_user_blocked(
            &tx,
            user,
            true,
            Some("spam"),
            day_start(TODAY),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let conn = crate::store::sqlite::open_reader(&path).unwrap();
    compare_with_sqlite(&_pg, &c, &conn).await;

    // The same answers when the text columns order and compare as a language does (a database
    // made with `en_US.UTF-8` or an ICU locale, as many are): ids order as bytes, searches fold
    // ASCII letters only, days compare as the same strings.
    for (table, columns) in [
        ("users", &["id", "email", "name"][..]),
        ("usage_daily", &["day", "user_id", "provider", "model"][..]),
        ("usage_user_daily", &["day", "user_id"][..]),
        ("usage_user_monthly", &["month", "user_id"][..]),
        ("usage_model_daily", &["day", "provider", "model"][..]),
        ("token_usage", &["user_id", "provider", "model"][..]),
    ] {
        for column in columns {
            c.batch_execute(&format!(
                "ALTER TABLE {table} ALTER COLUMN {column} TYPE text COLLATE \"en-x-icu\""
            ))
            .await
            .unwrap();
        }
    }
    let icu: bool = c
        .query_one("SELECT 'Zed' > ('a_b' COLLATE \"en-x-icu\")", &[])
        .await
        .unwrap()
        .get(0);
    assert!(icu, "the collation orders unlike bytes");
    compare_with_sqlite(&_pg, &c, &conn).await;
}

/// Every read of both stores over the same rows, compared.
async fn compare_with_sqlite(pg: &TestDb, c: &Client, conn: &rusqlite::Connection) {
    use crate::store::sqlite::reads as lite;

    let sorts = [
        UserSort::Id,
        UserSort::LastSeen,
        UserSort::Created,
        UserSort::TokensToday,
        UserSort::TokensMonth,
        UserSort::CostToday,
        UserSort::CostMonth,
    ];
    let searches = [
        None,
        Some(""),
        Some("a"),
        Some("A"),
        Some("É"),
        Some("é"),
        Some("%"),
        Some("_"),
        Some("\\"),
        Some("mixed"),
        Some("EXAMPLE"),
        Some("zola"),
        Some("x"),
    ];
    let mut compared = 0;
    for today in [TODAY, "2026-10-13"] {
        let month_start = crate::calendar::month_start(today);
        for sort in sorts {
            for desc in [false, true] {
                for search in searches {
                    for (limit, offset) in [(100, 0), (3, 2)] {
                        let q = UsersQuery {
                            search: search.map(str::to_string),
                            sort,
                            desc,
                            limit,
                            offset,
                            today: today.into(),
                            month_start: month_start.clone(),
                            plan: None,
                        };
                        let want = lite::users::users_page(conn, &q).unwrap();
                        let got = users_page(c, &q).await.unwrap();
                        assert_eq!(got, want, "{q:?}");
                        compared += usize::from(!got.users.is_empty());
                    }
                }
            }
        }
        let sq = StatsQuery {
            today: today.into(),
            month_start: month_start.clone(),
            today_start_ms: day_start(today),
            week_ago_ms: day_start(today) - 6 * 86_400_000,
        };
        assert_eq!(
            stats(c, &sq).await.unwrap(),
            lite::system::stats(conn, &sq).unwrap()
        );
        for user in [None, Some("alice"), Some("Émile"), Some("nobody")] {
            for by in [SeriesBy::Model, SeriesBy::Provider] {
                assert_eq!(
                    usage_series(c, "2026-09-01", today, by, user)
                        .await
                        .unwrap(),
                    lite::system::usage_series(conn, "2026-09-01", today, by, user).unwrap(),
                    "{user:?} {by:?}"
                );
            }
        }
        for user in ["alice", "carol", "a\\b", "erin", "nobody"] {
            let mut before_call = None;
            loop {
                let q = UserUsageQuery {
                    user: user.into(),
                    today: today.into(),
                    month_start: month_start.clone(),
                    since_day: "2026-09-28".into(),
                    before_call,
                    limit: 7,
                };
                let want = lite::user::user_usage(conn, &q).unwrap();
                let got = user_usage(c, &q).await.unwrap();
                assert_eq!(got, want, "{q:?}");
                match got {
                    Some(u) if u.more_calls => before_call = u.calls.last().map(|r| r.id),
                    _ => break,
                }
            }
        }
    }
    assert!(compared > 300, "{compared}");

    for user in [None, Some("alice")] {
        let mut want = Vec::new();
        lite::export::for_each_call(conn, day_start(MONTH), i64::MAX, user, |r| {
            want.push(r);
            true
        })
        .unwrap();
        let mut got = Vec::new();
        let mut c = pg.settings().connect().await.unwrap();
        for_each_call(&mut c, day_start(MONTH), i64::MAX, user, 50, |chunk| {
            got.extend(chunk);
            true
        })
        .await
        .unwrap();
        assert!(!want.is_empty());
        assert_eq!(got, want, "{user:?}");
    }
}
