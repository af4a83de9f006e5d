//! The admin reads over a real SQLite file written by the real writer: every figure is checked
//! against sums computed from the rows themselves.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use jiff::tz::TimeZone;
use rusqlite::Connection;

use super::export::for_each_call;
use super::system::{stats, usage_series};
use super::user::{user_calls, user_daily, user_models};
use super::users::{like_pattern, user_summary, users_page};
use super::{query_plans, statements};
use crate::calendar::local_day;
use crate::store::sqlite::{Queue, open_reader};
use crate::store::{
    CallRow, SeriesBy, Stats, StatsQuery, UsageRow, UserSort, UsersPage, UsersQuery,
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

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(path: &Path, rows: &[UsageRow]) {
    let (store, writer) = Queue::open(path, TimeZone::UTC, 10_000, 64).unwrap();
    for r in rows {
        assert!(store.record(r.clone()));
    }
    writer.close();
    assert_eq!(store.rows_committed(), rows.len() as u64);
}

fn db(rows: &[UsageRow]) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.db");
    write(&path, rows);
    Db { _dir: dir, path }
}

fn block(path: &Path, user: &str) {
    let mut conn = Connection::open(path).unwrap();
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

fn stats_now(conn: &Connection, today: &str) -> Stats {
    stats(
        conn,
        &StatsQuery {
            today: today.into(),
            month_start: crate::calendar::month_start(today),
            today_start_ms: day_start(today),
            week_ago_ms: day_start(today) - 6 * 86_400_000,
        },
    )
    .unwrap()
}

#[test]
fn stats_are_exact_sums_of_the_rollups() {
    let rows = fixture_rows();
    let db = db(&rows);
    block(&db.path, "bob");
    block(&db.path, "erin"); // never called: a row without usage
    let conn = open_reader(&db.path).unwrap();
    let s = stats_now(&conn, TODAY);

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
    assert!(
        (s.month.estimated_share() - s.month.estimated_calls as f64 / s.month.calls as f64).abs()
            < 1e-12
    );
    assert!(
        (s.today.estimated_share() - s.today.estimated_calls as f64 / s.today.calls as f64).abs()
            < 1e-12
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
    assert_eq!(
        s.by_provider
            .iter()
            .map(|p| p.provider.as_str())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    for p in &s.by_provider {
        assert_eq!(
            p.totals,
            expect(&rows, MONTH, TODAY, |r| *r.provider == *p.provider)
        );
    }

    // An empty database answers zeros.
    let empty = self::db(&[]);
    let s = stats_now(&open_reader(&empty.path).unwrap(), TODAY);
    assert_eq!(
        (s.users_total, s.today, s.month),
        (0, UsageTotals::default(), UsageTotals::default())
    );
    assert_eq!(s.month.estimated_share(), 0.0);
}

#[test]
fn a_small_day_adds_up_to_the_expected_figures() {
    // Hand-checked figures: two calls on one day.
    let a = call(3, "u1", TODAY, 10, Some("gpt-4o"), 1_000); // output 13, cost 3091, estimated
    let mut b = call(2, "u1", TODAY, 20, Some("gpt-4o"), 500); // output 12, cost 1584, reported
    b.status = 429;
    let db = db(&[a, b]);
    let conn = open_reader(&db.path).unwrap();
    let s = stats_now(&conn, TODAY);
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

#[test]
fn users_sort_over_everyone_search_and_page() {
    let rows = fixture_rows();
    let db = db(&rows);
    block(&db.path, "erin");
    let conn = open_reader(&db.path).unwrap();
    let month = user_totals_map(&rows, MONTH, TODAY);
    let today = user_totals_map(&rows, TODAY, TODAY);
    let page = |q: UsersQuery| users_page(&conn, &q).unwrap();

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
    });
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
            assert_eq!(u.month, month[&u.id], "{}", u.id);
            assert_eq!(u.today, today[&u.id], "{}", u.id);
            assert_eq!(
                u.email.as_deref(),
                Some(format!("{}@Example.com", u.id).as_str())
            );
            // The same figures as one user's summary.
            assert_eq!(
                user_summary(&conn, &u.id, TODAY, MONTH).unwrap().as_ref(),
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
        });
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
    });
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
    });
    assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());
    let mut want: Vec<(i64, &str)> = USERS.iter().map(|u| (today[*u].total_tokens, *u)).collect();
    want.push((0, "erin"));
    want.sort_by(|a, b| b.cmp(a));
    let p = page(UsersQuery {
        sort: UserSort::TokensToday,
        desc: true,
        limit: 100,
        ..base()
    });
    assert_eq!(ids(&p), want.iter().map(|(_, u)| *u).collect::<Vec<_>>());

    // Columns of `users`.
    let p = page(UsersQuery {
        sort: UserSort::Id,
        limit: 100,
        ..base()
    });
    assert_eq!(
        ids(&p),
        ["a_b", "alice", "axb", "bob", "carol", "dave", "erin"]
    );
    assert_eq!(p.users[1].month, month["alice"]);
    let p = page(UsersQuery {
        sort: UserSort::Id,
        desc: true,
        limit: 2,
        offset: 1,
        ..base()
    });
    assert_eq!((ids(&p), p.total), (vec!["dave", "carol"], 7));
    let p = page(UsersQuery {
        sort: UserSort::LastSeen,
        desc: true,
        limit: 100,
        ..base()
    });
    let seen: Vec<Option<i64>> = p.users.iter().map(|u| u.last_seen_at).collect();
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");
    assert_eq!(p.users.last().unwrap().id, "erin");
    let p = page(UsersQuery {
        sort: UserSort::Created,
        limit: 100,
        ..base()
    });
    let created: Vec<i64> = p.users.iter().map(|u| u.created_at).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");

    // Search: id, email or name, case-insensitive; LIKE wildcards are the user's text.
    let search = |text: &str, sort: UserSort| {
        let p = page(UsersQuery {
            search: Some(text.into()),
            sort,
            limit: 100,
            ..base()
        });
        (
            ids(&p).into_iter().map(str::to_string).collect::<Vec<_>>(),
            p.total,
        )
    };
    assert_eq!(search("a_b", UserSort::Id), (vec!["a_b".to_string()], 1));
    assert_eq!(
        search("A_B", UserSort::TokensMonth),
        (vec!["a_b".to_string()], 1)
    );
    assert_eq!(search("%", UserSort::Id), (vec![], 0));
    assert_eq!(
        search("NAME AL", UserSort::Id),
        (vec!["alice".to_string()], 1)
    );
    assert_eq!(search("example.COM", UserSort::Id).1, 6);
    assert_eq!(search("", UserSort::Id).1, 7);
    assert_eq!(
        search("car", UserSort::TokensToday),
        (vec!["carol".to_string()], 1)
    );
    // Every caller's name ("Name …") has an "a"; erin has neither name nor email.
    let (found, total) = search("a", UserSort::CostMonth);
    assert_eq!((found.len(), total), (6, 6));
    assert!(!found.contains(&"erin".to_string()));
}

#[test]
fn one_users_days_models_and_summary() {
    let rows = fixture_rows();
    let db = db(&rows);
    let conn = open_reader(&db.path).unwrap();
    assert_eq!(user_summary(&conn, "nobody", TODAY, MONTH).unwrap(), None);

    let daily = user_daily(&conn, "alice", "2026-09-29", TODAY).unwrap();
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
        user_daily(&conn, "alice", "2026-10-16", TODAY)
            .unwrap()
            .is_empty()
    );
    assert!(user_daily(&conn, "alice", "not a day", TODAY).is_err());

    let models = user_models(&conn, "alice", MONTH).unwrap();
    assert!(
        models
            .windows(2)
            .all(|w| w[0].totals.total_tokens >= w[1].totals.total_tokens)
    );
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

    let s = user_summary(&conn, "alice", TODAY, MONTH).unwrap().unwrap();
    assert_eq!(
        s.today,
        expect(&rows, TODAY, TODAY, |r| &*r.user_id == "alice")
    );
    assert_eq!(s.month, sum);
    assert!(!s.controls.blocked);
}

#[test]
fn call_pages_follow_the_cursor_without_overlap_or_gap() {
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
    let db = db(&rows);
    let conn = open_reader(&db.path).unwrap();
    let all = user_calls(&conn, "pat", None, 100).unwrap();
    assert_eq!(all.len(), 23);
    assert!(
        all.windows(2)
            .all(|w| (w[0].ts, w[0].id) > (w[1].ts, w[1].id)),
        "newest first"
    );
    let mut paged: Vec<CallRow> = Vec::new();
    let mut cursor = None;
    loop {
        let page = user_calls(&conn, "pat", cursor, 5).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        cursor = Some(page.last().unwrap().id);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(
        user_calls(&conn, "pat", Some(123_456), 5)
            .unwrap()
            .is_empty()
    );

    let first = &all[0];
    let source = rows
        .iter()
        .find(|r| r.request_id == first.request_id)
        .unwrap();
    assert_eq!(first.user_id, "pat");
    assert_eq!(first.ts, source.ts_ms);
    assert_eq!(
        first.total_tokens,
        i64::try_from(source.usage.total()).unwrap()
    );
    assert_eq!(first.cost_nano_usd, source.cost_nano_usd);
    assert_eq!(first.usage_source, source.usage_source.as_str());
    assert_eq!(first.status, i64::from(source.status));
    assert_eq!(first.latency_ms, i64::try_from(source.latency_ms).unwrap());
}

#[test]
fn series_by_model_and_provider() {
    let rows = fixture_rows();
    let db = db(&rows);
    let conn = open_reader(&db.path).unwrap();
    let since = "2026-10-02";
    for user in [None, Some("carol")] {
        let keep_user = |r: &UsageRow| user.is_none_or(|u| *r.user_id == *u);
        let by_model = usage_series(&conn, since, TODAY, SeriesBy::Model, user).unwrap();
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
            &conn,
            since,
            &super::system::latest_possible_day(),
            SeriesBy::Provider,
            user,
        )
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

#[test]
fn reads_follow_new_calls_days_and_late_rows() {
    let rows = fixture_rows();
    let db = db(&rows);
    let conn = open_reader(&db.path).unwrap();
    let check = |rows: &[UsageRow], today: &str| {
        let month = crate::calendar::month_start(today);
        let s = stats_now(&conn, today);
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
            &conn,
            &UsersQuery {
                sort: UserSort::TokensMonth,
                desc: true,
                limit: 100,
                today: today.into(),
                month_start: month.clone(),
                ..base()
            },
        )
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
        let series = usage_series(&conn, "2026-09-01", today, SeriesBy::Provider, None).unwrap();
        let mut sum = UsageTotals::default();
        series.iter().for_each(|p| sum.add(&p.totals));
        assert_eq!(sum, expect(rows, "2026-09-01", today, |_| true));
    };
    // Yesterday, then today: the day rolls.
    check(&rows, YESTERDAY);
    check(&rows, TODAY);

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
        write(&db.path, &extra);
        more.extend(extra);
        check(&more, TODAY);
    }

    // A late row for a day long closed (and another for the previous month).
    let late = vec![
        call(3_000, "carol", "2026-10-02", 100, Some("o3"), 70_000),
        call(3_001, "bob", "2026-09-30", 100, Some("o3"), 80_000),
    ];
    write(&db.path, &late);
    more.extend(late);
    check(&more, TODAY);

    // A request computed just before midnight, after others asked about today; and one for
    // an earlier day.
    check(&more, YESTERDAY);
    check(&more, "2026-10-13");
    check(&more, TODAY);

    // A malformed day, and a day no zone has reached, are answered with nothing; neither
    // disturbs the next answers.
    let malformed = stats(
        &conn,
        &StatsQuery {
            today: "15/10/2026".into(),
            month_start: MONTH.into(),
            today_start_ms: 0,
            week_ago_ms: 0,
        },
    )
    .unwrap();
    assert_eq!((malformed.today.calls, malformed.month.calls), (0, 0));
    let future = stats_now(&conn, "2999-01-01");
    assert_eq!((future.today.calls, future.month.calls), (0, 0));
    check(&more, TODAY);
}

#[test]
fn a_replaced_file_is_read_as_it_now_is() {
    let rows = fixture_rows();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.db");
    write(&path, &rows);
    let s = stats_now(&open_reader(&path).unwrap(), TODAY);
    assert_eq!(s.month, expect(&rows, MONTH, TODAY, |_| true));
    // Another database at the same path, with as many rows but different ones.
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    let _ = std::fs::remove_file(path.with_extension("db-shm"));
    let other: Vec<UsageRow> = rows
        .iter()
        .map(|r| UsageRow {
            request_id: format!("other-{}", r.request_id),
            ts_ms: r.ts_ms + 1,
            ..r.clone()
        })
        .take(300)
        .collect();
    write(&path, &other);
    let s = stats_now(&open_reader(&path).unwrap(), TODAY);
    assert_eq!(s.month, expect(&other, MONTH, TODAY, |_| true));
}

#[test]
fn export_visits_calls_in_time_order() {
    let mut odd = call(1, "u,1", TODAY, 30, Some("my,\"model\""), 10);
    odd.cost_nano_usd = None;
    odd.ttfb_ms = None;
    let rows = vec![
        call(2, "u2", TODAY, 20, Some("gpt-4o"), 20),
        odd,
        call(3, "u2", TODAY, 40, None, 30),
        call(4, "u2", YESTERDAY, 10, Some("gpt-4o"), 40),
    ];
    let db = db(&rows);
    let conn = open_reader(&db.path).unwrap();
    let (from, to) = (day_start(TODAY), day_start(TODAY) + 86_400_000);
    let mut seen = Vec::new();
    let visited = for_each_call(&conn, from, to, None, |r| {
        seen.push(r.request_id.clone());
        true
    })
    .unwrap();
    assert_eq!(
        (visited, seen),
        (3, vec!["req-2".to_string(), "req-1".into(), "req-3".into()])
    );
    let mut seen = Vec::new();
    let visited = for_each_call(&conn, 0, i64::MAX, Some("u2"), |r| {
        seen.push(r.request_id.clone());
        seen.len() < 2
    })
    .unwrap();
    assert_eq!(
        (visited, seen),
        (2, vec!["req-4".to_string(), "req-2".into()])
    );
}

#[test]
fn no_query_scans_calls_or_rollups() {
    let db = db(&fixture_rows());
    let conn = open_reader(&db.path).unwrap();
    let plans = query_plans(&conn).unwrap();
    assert_eq!(plans.len(), statements().len());
    for (sql, plan) in plans {
        for step in &plan {
            assert!(
                !step.starts_with("SCAN token_usage") && !step.starts_with("SCAN usage_daily"),
                "{sql}\n{plan:?}"
            );
            if sql.contains("FROM token_usage") {
                assert!(!step.contains("TEMP B-TREE"), "{sql}\n{plan:?}");
            }
        }
    }
    // The blocked count reads only the blocked users.
    let (_, plan) = query_plans(&conn)
        .unwrap()
        .into_iter()
        .find(|(sql, _)| sql == "SELECT COUNT(*) FROM users WHERE blocked != 0")
        .unwrap();
    assert!(plan.iter().any(|s| s.contains("users_blocked")), "{plan:?}");
}

#[test]
fn like_wildcards_are_escaped() {
    assert_eq!(like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
}

#[test]
fn reads_tolerate_reals_an_older_writer_left_in_any_figure() {
    // A file whose rows and rollups hold what an overflowing upsert of an older Tollgate made
    // (REALs past i64::MAX), as if its repair had not run: every read still answers, clamped.
    let rows = [
        call(1, "rex", TODAY, 10, Some("gpt-4o"), 100),
        call(2, "sam", TODAY, 20, Some("gpt-4o"), 50),
    ];
    let db = db(&rows);
    let conn = Connection::open(&db.path).unwrap();
    for table in [
        "usage_daily",
        "usage_user_daily",
        "usage_user_monthly",
        "usage_model_daily",
    ] {
        conn.execute(
            &format!(
                "UPDATE {table} SET total_tokens = 9.223372036854776e18, \
                 cost_nano_usd = 1e300, input_tokens = -1e30"
            ),
            [],
        )
        .unwrap();
    }
    conn.execute(
        "UPDATE token_usage SET total_tokens = 9.223372036854776e18, cost_nano_usd = 2.5 \
         WHERE user_id = 'rex'",
        [],
    )
    .unwrap();
    drop(conn);
    let conn = open_reader(&db.path).unwrap();
    let s = stats_now(&conn, TODAY);
    assert_eq!(s.today.calls, 2);
    // Each REAL is clamped to i64::MAX (or i64::MIN); sums saturate.
    assert_eq!(s.today.total_tokens, i64::MAX);
    assert_eq!(s.today.cost_nano_usd, i64::MAX);
    let page = users_page(
        &conn,
        &UsersQuery {
            sort: UserSort::TokensToday,
            desc: true,
            ..base()
        },
    )
    .unwrap();
    assert_eq!(page.total, 2);
    let rex = user_summary(&conn, "rex", TODAY, MONTH).unwrap().unwrap();
    assert_eq!(rex.today.total_tokens, i64::MAX);
    assert_eq!(user_models(&conn, "rex", MONTH).unwrap()[0].totals.calls, 1);
    let calls = user_calls(&conn, "rex", None, 10).unwrap();
    assert_eq!(
        (calls[0].total_tokens, calls[0].cost_nano_usd),
        (i64::MAX, Some(2))
    );
    let seed = crate::store::sqlite::controls::load_quota_seed(&conn, TODAY, MONTH).unwrap();
    assert_eq!(seed.users["sam"].day.tokens, i64::MAX);
}
