//! The gateway on PostgreSQL (`store.backend = "postgres"`), each test on a database of its own
//! on the machine's server (made and dropped by the test): calls recorded, controls and usage
//! kept across a restart, the admin side's reads, `tollgate migrate` / `check-config` /
//! `import` as an operator runs them, and the database going away. Several gateways on one
//! database: `tests/replicas.rs`.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::process::Command;

use common::*;
use tollgate::store::postgres::testing::TestDb;
use tollgate::store::{UserSort, UsersQuery};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_postgres_records_every_call_and_keeps_blocks_and_usage_across_a_restart() {
    let mut h = Harness::start_pg_with(|c| c.limits.daily_tokens = 1_000_000).await;
    let jwt = h.token("pg-user");
    h.mock.push(Reply::json(200, fixture("openai/chat.json")));
    h.mock
        .push(Reply::sse(fixture("openai/chat_stream_usage.sse")).split_every(40));
    h.mock
        .push(Reply::json(200, fixture("gemini/generate_content.json")));
    for body in [CHAT, STREAM] {
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, body)
            .await;
        assert_eq!(resp.status(), 200);
        read_all(resp).await.unwrap();
    }
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            &jwt,
            r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    read_all(resp).await.unwrap();

    let rows = h.wait_rows(3).await;
    assert_eq!(
        rows.iter()
            .map(|r| (
                r.provider.as_str(),
                r.streamed,
                r.outcome.as_str(),
                r.usage_source.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("openai", false, "complete", "reported"),
            ("openai", true, "complete", "reported"),
            ("gemini", false, "complete", "reported"),
        ]
    );
    let used: i64 = rows.iter().map(|r| r.total_tokens).sum();
    assert!(used > 0);

    // The admin side reads the same rows.
    let (today, month_start) = h.ledger().seed_days();
    let page = h
        .running()
        .store
        .users_page(UsersQuery {
            search: None,
            sort: UserSort::default(),
            desc: false,
            limit: 50,
            offset: 0,
            today,
            month_start,
            plan: None,
        })
        .await
        .unwrap();
    let me = page.users.iter().find(|u| u.id == "pg-user").unwrap();
    assert_eq!(me.month.total_tokens, used);
    assert_eq!(me.month.calls, 3);

    // A block is kept in the database: refused now, and after a restart.
    h.actions()
        .block("test", "pg-user", Some("pg test".into()))
        .await
        .unwrap();
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
        .await;
    assert_eq!(resp.status(), 403);
    h.restart().await;
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
        .await;
    assert_eq!(resp.status(), 403, "the block survived the restart");
    h.actions().unblock("test", "pg-user").await.unwrap();
    // Today's usage was seeded from the database.
    let usage = me_usage(&h.client, &h.url(""), &jwt).await;
    assert_eq!(usage["day"]["used_tokens"], used, "{usage}");
    assert_eq!(h.mock.hits(), 3, "refused calls never reached the upstream");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.iter()
            .filter(|r| r.outcome == "refused_blocked")
            .count(),
        2,
        "the refusals have their rows too: {rows:#?}"
    );
}

/// `tollgate migrate` and `tollgate check-config` against the real server, as an operator runs
/// them: the URL from the environment, never echoed with its password.
#[tokio::test]
async fn migrate_and_check_config_reach_the_database_named_in_the_environment() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = test_config("http://127.0.0.1:9", dir.path());
    raw.store.backend = tollgate::config::StoreBackend::Postgres;
    std::fs::write(dir.path().join("gateway.toml"), config_toml(&raw)).unwrap();
    let run = |args: &[&str], url: &str| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .current_dir(dir.path())
            .env_clear()
            .env("OPENAI_API_KEY", OPENAI_KEY)
            .env("GEMINI_API_KEY", GEMINI_KEY)
            .env("JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", url)
            .args(args)
            .args(["--config", "gateway.toml"])
            .output()
            .unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let out = run(&["check-config"], db.url());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("reachable, schema version 0"),
        "{}",
        text(&out)
    );
    let out = run(&["migrate"], db.url());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("migrated from schema version 0 to 5"),
        "{}",
        text(&out)
    );
    let out = run(&["migrate"], db.url());
    assert!(
        text(&out).contains("already at schema version 5"),
        "{}",
        text(&out)
    );
    // A server that is not there: exit 1, the host named, the password not.
    let out = run(
        &["check-config"],
        "postgres://tollgate:s3cret-pw@127.0.0.1:9/nowhere?sslmode=disable&connect_timeout=2",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("127.0.0.1:9"), "{}", text(&out));
    assert!(!text(&out).contains("s3cret-pw"), "{}", text(&out));
    // No URL at all: a configuration error naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir.path())
        .env_clear()
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("GEMINI_API_KEY", GEMINI_KEY)
        .env("JWT_SECRET", JWT_SECRET)
        .args(["check-config", "--config", "gateway.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("store.database_url_env"),
        "{}",
        text(&out)
    );
}

/// `tollgate import --from-sqlite` brings a gateway's SQLite history over — calls (with their
/// rollups), users and their controls, admin accounts, the audit trail — and run again adds
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_sqlite_brings_the_history_over_once() {
    // A history written by a real gateway on SQLite.
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    for user in ["imp-ann", "imp-bo", "imp-ann"] {
        let jwt = h.token(user);
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
            .await;
        assert_eq!(resp.status(), 200);
        read_all(resp).await.unwrap();
    }
    h.wait_rows(3).await;
    h.actions()
        .block("ops", "imp-bo", Some("imported block".into()))
        .await
        .unwrap();
    h.running()
        .store
        .commit(tollgate::store::Work {
            actor: "cli:test".into(),
            at_ms: 1_790_000_000_000,
            op: tollgate::store::Op::AddAccount {
                name: "ops".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                    .into(),
            },
        })
        .await
        .unwrap();
    h.stop().await;
    let sqlite_rows = h.rows();
    let sqlite_audit = h.audit_rows().len();
    assert!(sqlite_audit >= 2);

    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = test_config("http://127.0.0.1:9", dir.path());
    raw.store.backend = tollgate::config::StoreBackend::Postgres;
    std::fs::write(dir.path().join("gateway.toml"), config_toml(&raw)).unwrap();
    let import = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .current_dir(dir.path())
            .env_clear()
            .env("DATABASE_URL", db.url())
            .args(["import", "--from-sqlite"])
            .arg(&h.db)
            .args(["--config", "gateway.toml"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };
    let first = import();
    assert!(
        first.contains(": 3 calls (0 already there), 2 users, 1 new admin accounts"),
        "{first}"
    );
    assert!(
        first.contains("imported 3 / 3 calls"),
        "progress is shown: {first}"
    );
    let again = import();
    assert!(again.contains(": 0 calls (3 already there)"), "{again}");

    let pg_rows = read_pg_rows(db.url());
    let key = |r: &Row| {
        (
            r.request_id.clone(),
            r.user_id.clone(),
            r.total_tokens,
            r.outcome.clone(),
        )
    };
    let mut a: Vec<_> = sqlite_rows.iter().map(key).collect();
    let mut b: Vec<_> = pg_rows.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "every call once, as recorded");

    let c = db.settings().connect().await.unwrap();
    let one = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap() }
    };
    let blocked = one("SELECT blocked, blocked_reason FROM users WHERE id = 'imp-bo'").await;
    assert!(blocked.get::<_, bool>(0));
    assert_eq!(
        blocked.get::<_, Option<String>>(1).as_deref(),
        Some("imported block")
    );
    let ann: i64 = one("SELECT calls FROM usage_user_monthly WHERE user_id = 'imp-ann'")
        .await
        .get(0);
    assert_eq!(ann, 2, "the rollups are summed from the imported rows");
    let tokens: i64 = one("SELECT SUM(total_tokens)::int8 FROM usage_user_daily")
        .await
        .get(0);
    assert_eq!(
        tokens,
        sqlite_rows.iter().map(|r| r.total_tokens).sum::<i64>()
    );
    let accounts: i64 = one("SELECT count(*) FROM admin_accounts WHERE name = 'ops'")
        .await
        .get(0);
    assert_eq!(accounts, 1);
    let audit: i64 = one("SELECT count(*) FROM admin_audit").await.get(0);
    assert_eq!(
        usize::try_from(audit).unwrap(),
        sqlite_audit,
        "the audit trail, once"
    );
}

/// The database goes away under a running gateway: calls already admitted finish and their rows
/// wait; new calls are refused with 503 (the store cannot promise their rows), `/readyz` and
/// `tollgate_store_unavailable` say so; when it is back, calls are served again and every call
/// the upstream served has exactly one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_new_calls_are_refused_and_no_row_is_lost() {
    let mut h = Harness::start_pg_with(|c| c.store.commit_interval_ms = 10).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let db = std::sync::Arc::clone(h.pg.as_ref().unwrap());
    let jwt = h.token("away");
    assert_eq!(status_of(&h, &jwt, CHAT).await, 200);
    h.wait_rows(1).await;

    // Cut off: no new connections, and the open ones ended.
    cut_off(&db).await;
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let status = status_of(&h, &jwt, CHAT).await;
        statuses.push(status);
        if status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    assert!(h.running().store.writer_stats().unavailable);
    assert!(h.running().store.ready().await.is_err(), "not ready");
    let served_while_away = h.mock.hits();
    assert_eq!(status_of(&h, &jwt, CHAT).await, 503);
    assert_eq!(h.mock.hits(), served_while_away, "refused, not forwarded");

    // Back.
    let_in(&db).await;
    let mut back = false;
    for _ in 0..400 {
        if status_of(&h, &jwt, CHAT).await == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(back, "served again once the database is back");
    assert!(!h.running().store.writer_stats().unavailable);
    h.stop().await;
    let rows = h.rows();
    let complete = rows.iter().filter(|r| r.outcome == "complete").count();
    assert_eq!(
        complete,
        h.mock.hits(),
        "every served call has its row, once"
    );
    assert_no_row_twice(&rows);
    assert!(rows.iter().any(|r| r.outcome == "refused_store_full"));
}

/// `store.when_unavailable = "admit_locally"`: with the database away, a user is served out of
/// the gateway's leases and then a local allowance of a sixteenth of their limit (at least four
/// holds), once; past it, 503. Back, every call has its row, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admit_locally_serves_a_bounded_allowance_while_the_database_is_away() {
    const SMALL: &str =
        r#"{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    const ANSWER: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":40,"total_tokens":50}}"#;
    let mut h = Harness::start_pg_with(|c| {
        c.store.commit_interval_ms = 10;
        c.store.when_unavailable = tollgate::config::WhenUnavailable::AdmitLocally;
        c.limits.daily_tokens = 1_600;
    })
    .await;
    h.mock.set_default(Reply::json(200, ANSWER));
    let db = std::sync::Arc::clone(h.pg.as_ref().unwrap());
    let jwt = h.token("offline");
    assert_eq!(status_of(&h, &jwt, SMALL).await, 200);
    h.wait_rows(1).await;

    cut_off(&db).await;
    let mut statuses = Vec::new();
    let mut served_down = 0;
    for _ in 0..100 {
        let status = status_of(&h, &jwt, SMALL).await;
        statuses.push(status);
        if status == 503 {
            break;
        }
        if h.running().store.writer_stats().unavailable {
            served_down += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "the allowance ends: {statuses:?}"
    );
    assert!(
        served_down > 0,
        "served while the database was known away: {statuses:?}"
    );
    // The lease (hold + 420 of 1,600) and the allowance (420): at most ~19 calls of 50 tokens
    // in all, nowhere near one per request forever.
    let served = statuses.iter().filter(|&&s| s == 200).count();
    assert!(
        served <= 20,
        "{served} calls served on the way: {statuses:?}"
    );

    let_in(&db).await;
    h.stop().await;
    let rows = h.rows();
    let complete = rows.iter().filter(|r| r.outcome == "complete").count();
    assert_eq!(
        complete,
        h.mock.hits(),
        "every served call has its row, once"
    );
    assert_no_row_twice(&rows);
}

/// POST `body` as `jwt`'s call; the status, the body read to its end.
async fn status_of(h: &Harness, jwt: &str, body: &'static str) -> u16 {
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(jwt)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

/// The database away: no new connections, and the open ones ended.
async fn cut_off(db: &TestDb) {
    let name = db.name();
    db.on_server(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
}

/// The database back.
async fn let_in(db: &TestDb) {
    db.on_server(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        db.name()
    ))
    .await;
}

fn assert_no_row_twice(rows: &[Row]) {
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no row written twice");
}
