//! Usage figures from outside cannot break the gateway: an upstream reporting an impossible token
//! count (2⁶⁴ − 1) is relayed untouched but recorded with the estimate (`usage_source =
//! 'invalid'`), and a database an older Tollgate filled with such figures (tokens at i64::MAX,
//! rollups overflowed into REALs) is repaired at start instead of answering 500 or refusing to
//! start. On real sockets: the gateway on 127.0.0.1:0, the mock upstream speaking the providers'
//! wire formats, a real SQLite file, the admin API over HTTP.
#![allow(clippy::unwrap_used, reason = "tests")]

#[path = "common/admin.rs"]
mod admin;
mod common;

use std::path::Path;

use admin::AdminSide;
use bytes::Bytes;
use common::{Harness, Reply, fixture, test_env};
use reqwest::StatusCode;
use serde_json::Value;
use tollgate::config::Config;
use tollgate::provider::{self, ProviderKind};
use tollgate::usage::Usage;

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the world"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Count to three please"}]}"#;
const GEMINI_PATH: &str = "/gemini/v1beta/models/gemini-2.5-flash:generateContent";
const GEMINI_BODY: &str =
    r#"{"contents":[{"role":"user","parts":[{"text":"Explain how AI works in one line"}]}]}"#;

/// A chat completion whose usage says 2⁶⁴ − 1 prompt tokens.
const ABSURD_CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1753714021,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, world!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":5,"total_tokens":18446744073709551615}}"#;

/// A chat stream whose final usage chunk says 2⁶⁴ − 1 prompt tokens; 13 characters of text.
const ABSURD_STREAM: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"One two three\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":18446744073709551615,\"completion_tokens\":3,\"total_tokens\":18446744073709551615}}\n\n\
data: [DONE]\n\n";

/// A Gemini answer whose `usageMetadata.promptTokenCount` is far past 2⁶⁴.
const ABSURD_GEMINI: &str = r#"{"candidates":[{"content":{"parts":[{"text":"AI learns patterns from data."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":99999999999999999999999999,"candidatesTokenCount":4,"totalTokenCount":99999999999999999999999999},"modelVersion":"gemini-2.5-flash","responseId":"r-1"}"#;

/// The prompt estimate Tollgate makes of a request (the input of an estimated usage).
fn prompt_estimate(kind: ProviderKind, rest: &str, body: &str) -> u64 {
    let (info, _) = provider::inspect(
        kind,
        &http::Method::POST,
        rest,
        None,
        &Bytes::copy_from_slice(body.as_bytes()),
    )
    .expect("a readable request");
    assert!(info.prompt_tokens_estimate > 0);
    info.prompt_tokens_estimate
}

/// The cost of `usage` on `model` at the test configuration's prices.
fn cost(h: &Harness, model: &str, usage: &Usage) -> i64 {
    let config = Config::from_raw(h.raw.clone(), &test_env).unwrap();
    config.prices.cost_nano_usd(model, usage).unwrap()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[tokio::test]
async fn absurd_prompt_tokens_do_not_brick_admin_or_restart() {
    let mut h = Harness::start().await;
    let jwt = h.token("hugo");
    h.mock.push(Reply::json(200, ABSURD_CHAT));
    h.mock.push(Reply::sse(ABSURD_STREAM).split_every(50));
    h.mock.push(Reply::json(200, ABSURD_GEMINI));

    // The client gets each answer untouched: status and bytes.
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), ABSURD_CHAT.as_bytes());
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        common::read_all(resp).await.unwrap(),
        ABSURD_STREAM.as_bytes(),
        "the client asked for usage: its chunk is forwarded as it came"
    );
    let resp = h.post_gemini(GEMINI_PATH, &jwt, GEMINI_BODY).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), ABSURD_GEMINI.as_bytes());

    // Each row: kept, flagged invalid, the estimate as its tokens and price.
    let estimate = |input_tokens, output_tokens| Usage {
        input_tokens,
        output_tokens,
        ..Usage::default()
    };
    let chat = estimate(
        prompt_estimate(ProviderKind::Openai, "/v1/chat/completions", CHAT_BODY),
        0,
    );
    // "One two three": 13 characters relayed, at four per token.
    let stream = estimate(
        prompt_estimate(ProviderKind::Openai, "/v1/chat/completions", CHAT_STREAM),
        4,
    );
    let gemini = estimate(
        prompt_estimate(
            ProviderKind::Gemini,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            GEMINI_BODY,
        ),
        0,
    );
    let want = [
        ("openai", "gpt-4o-mini", chat, false),
        ("openai", "gpt-4o-mini", stream, true),
        ("gemini", "gemini-2.5-flash", gemini, false),
    ];
    let rows = h.wait_rows(3).await;
    assert_eq!(rows.len(), 3);
    for (row, (provider, model, usage, streamed)) in rows.iter().zip(want) {
        let total = i64::try_from(usage.total()).unwrap();
        assert_eq!(
            (
                row.provider.as_str(),
                row.model.as_deref(),
                row.streamed,
                row.status,
                row.outcome.as_str()
            ),
            (provider, Some(model), streamed, 200, "complete"),
            "{row:?}"
        );
        assert_eq!(
            row.usage(),
            (
                i64::try_from(usage.input_tokens).unwrap(),
                0,
                i64::try_from(usage.output_tokens).unwrap(),
                0,
                "invalid"
            ),
            "{row:?}"
        );
        assert_eq!(row.total_tokens, total);
        assert_eq!(row.cost_nano_usd, Some(cost(&h, model, &usage)), "{row:?}");
    }
    let total_tokens: i64 = rows.iter().map(|r| r.total_tokens).sum();
    let total_cost: i64 = rows.iter().map(|r| r.cost_nano_usd.unwrap()).sum();
    assert!(total_tokens < 1_000, "{total_tokens}");

    // The quota settled on the estimate.
    let status = h.ledger().status("hugo");
    assert_eq!(
        (status.day.used_tokens, status.day.reserved_tokens),
        (u64::try_from(total_tokens).unwrap(), 0)
    );

    // The admin pages answer, with integer figures that are the estimates.
    let a = AdminSide::start(&h).await;
    let check_admin = |stats: &Value, users: &Value, usage: &Value, calls: i64, tokens: i64| {
        assert_eq!(int(&stats["today"]["calls"]), calls, "{stats}");
        assert_eq!(int(&stats["today"]["total_tokens"]), tokens, "{stats}");
        assert_eq!(int(&stats["month"]["total_tokens"]), tokens, "{stats}");
        assert_eq!(
            int(&users["users"][0]["today"]["total_tokens"]),
            tokens,
            "{users}"
        );
        assert_eq!(
            int(&usage["quota"]["day"]["used_tokens"]),
            tokens,
            "{usage}"
        );
    };
    let stats = a.get_ok("/api/admin/stats").await;
    let users = a.get_ok("/api/admin/users").await;
    let usage = a.get_ok("/api/admin/user/hugo/usage").await;
    check_admin(&stats, &users, &usage, 3, total_tokens);
    assert_eq!(int(&stats["today"]["cost_nano_usd"]), total_cost);
    assert_eq!(
        int(&stats["today"]["estimated_calls"]),
        3,
        "invalid counts as estimated"
    );
    assert_eq!(stats["estimated_share_today"], 1.0);
    assert_eq!(users["total"], 1);
    let sources: Vec<&str> = usage["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["usage_source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["invalid"; 3]);
    let (status, metrics) = a.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "tollgate_invalid_usage_total{provider=\"openai\"} 2",
        "tollgate_invalid_usage_total{provider=\"gemini\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    a.stop().await;

    // The gateway restarts on the file, seeds the quota from it, and the next call is counted.
    h.restart().await;
    assert_eq!(
        h.ledger().status("hugo").day.used_tokens,
        u64::try_from(total_tokens).unwrap(),
        "the quota seed reads the estimates"
    );
    h.mock.push(Reply::json(200, fixture("openai/chat.json")));
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();
    let rows = h.wait_rows(4).await;
    let last = &rows[3];
    assert_eq!(last.usage(), (1117, 1024, 36, 0, "reported"));
    let tokens = total_tokens + 1117 + 36;
    let a = AdminSide::start(&h).await;
    let stats = a.get_ok("/api/admin/stats").await;
    let users = a.get_ok("/api/admin/users").await;
    let usage = a.get_ok("/api/admin/user/hugo/usage").await;
    check_admin(&stats, &users, &usage, 4, tokens);
    assert_eq!(int(&stats["today"]["estimated_calls"]), 3);
    a.stop().await;
    h.stop().await;
}

/// The schema an older Tollgate (schema version 2) created: `usage_source` without `invalid`.
fn version_2_schema() -> String {
    let current = tollgate::store::sqlite::SCHEMA_SQL;
    let old = current
        .replace(
            "CHECK (usage_source IN ('reported', 'estimated', 'none', 'invalid'))",
            "CHECK (usage_source IN ('reported', 'estimated', 'none'))",
        )
        .replace(
            &format!(
                "PRAGMA user_version = {};",
                tollgate::store::sqlite::SCHEMA_VERSION
            ),
            "PRAGMA user_version = 2;",
        );
    assert_ne!(old, current);
    assert!(old.contains("PRAGMA user_version = 2;") && !old.contains("'none', 'invalid'"));
    old
}

/// What the older binary left after `victim`'s second call of today was answered with
/// `prompt_tokens` 2⁶⁴ − 1: the row at i64::MAX tokens and cost, every rollup overflowed into a
/// REAL. `bystander`'s call of today is sound.
fn old_database(path: &Path, now_ms: i64, today: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&version_2_schema()).unwrap();
    let mut call = conn
        .prepare(
            "INSERT INTO token_usage (request_id, ts, user_id, provider, model, endpoint, \
             streamed, status, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, \
             total_tokens, cost_nano_usd, usage_source, latency_ms, ttfb_ms, outcome) \
             VALUES (?1, ?2, ?3, 'openai', 'gpt-4o-mini', 'chat.completions', 0, 200, ?4, 0, ?5, \
             0, ?6, ?7, 'reported', 30, 10, 'complete')",
        )
        .unwrap();
    call.execute(rusqlite::params![
        "old-1",
        now_ms - 2_000,
        "victim",
        100,
        20,
        120,
        500
    ])
    .unwrap();
    call.execute(rusqlite::params![
        "old-2",
        now_ms - 1_000,
        "victim",
        i64::MAX,
        5,
        i64::MAX,
        i64::MAX
    ])
    .unwrap();
    call.execute(rusqlite::params![
        "old-3",
        now_ms - 500,
        "bystander",
        40,
        2,
        42,
        60
    ])
    .unwrap();
    let month = format!("{}01", &today[..8]);
    let real = 9.223_372_036_854_776e18_f64;
    let sums = "2, 0, ?9, 0, 25, 0, ?9, ?9, 0, 0, 60";
    for (sql, key) in [
        (
            format!("INSERT INTO usage_daily VALUES (?1, ?2, ?3, ?4, ?5, {sums})"),
            vec![today, "victim", "openai", "gpt-4o-mini", "chat.completions"],
        ),
        (
            format!("INSERT INTO usage_user_daily VALUES (?1, ?2, {sums})"),
            vec![today, "victim"],
        ),
        (
            format!("INSERT INTO usage_user_monthly VALUES (?1, ?2, {sums})"),
            vec![&month, "victim"],
        ),
        (
            format!("INSERT INTO usage_model_daily VALUES (?1, ?2, ?3, {sums})"),
            vec![today, "openai", "gpt-4o-mini"],
        ),
    ] {
        let mut stmt = conn.prepare(&sql).unwrap();
        for (i, k) in key.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, *k).unwrap();
        }
        stmt.raw_bind_parameter(9, real).unwrap();
        stmt.raw_execute().unwrap();
    }
    conn.execute_batch(&format!(
        "INSERT INTO usage_daily VALUES ('{today}', 'bystander', 'openai', 'gpt-4o-mini', \
           'chat.completions', 1, 0, 40, 0, 2, 0, 42, 60, 0, 0, 30);
         INSERT INTO usage_user_daily VALUES ('{today}', 'bystander', 1, 0, 40, 0, 2, 0, 42, 60, 0, 0, 30);
         INSERT INTO usage_user_monthly VALUES ('{month}', 'bystander', 1, 0, 40, 0, 2, 0, 42, 60, 0, 0, 30);
         INSERT INTO users (id, created_at, last_seen_at) VALUES ('victim', 0, {now_ms}), \
           ('bystander', 0, {now_ms});"
    ))
    .unwrap();
    // The values that made the old binary's reads fail.
    let reals: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM usage_user_monthly WHERE typeof(total_tokens) = 'real'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reals, 1);
}

#[tokio::test]
async fn absurd_figures_an_older_version_stored_are_repaired_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    // The old rows are of today (UTC, the test gateway's zone) and the test must end on the same
    // day: keep clear of midnight.
    const DAY_MS: i64 = 86_400_000;
    let of_day = jiff::Timestamp::now().as_millisecond().rem_euclid(DAY_MS);
    let wait = if of_day < 5_000 {
        5_000 - of_day
    } else if of_day > DAY_MS - 60_000 {
        DAY_MS - of_day + 5_000
    } else {
        0
    };
    tokio::time::sleep(std::time::Duration::from_millis(wait.unsigned_abs())).await;
    let now = jiff::Timestamp::now();
    let today = tollgate::calendar::local_day(now.as_millisecond(), &jiff::tz::TimeZone::UTC);
    old_database(&db, now.as_millisecond(), &today);

    let mut h = Harness::start_with(|raw| raw.store.path = db.clone()).await;
    // The quota seed read sane sums: the impossible count is gone, 5 output tokens are left.
    assert_eq!(h.ledger().status("victim").day.used_tokens, 125);
    assert_eq!(h.ledger().status("victim").month.used_tokens, 125);
    assert_eq!(h.ledger().status("victim").day.used_cost_nano_usd, 500);
    assert_eq!(h.ledger().status("bystander").day.used_tokens, 42);

    let a = AdminSide::start(&h).await;
    let stats = a.get_ok("/api/admin/stats").await;
    for (field, want) in [
        ("calls", 3),
        ("input_tokens", 140),
        ("output_tokens", 27),
        ("total_tokens", 167),
        ("cost_nano_usd", 560),
        ("estimated_calls", 1),
        ("unpriced_calls", 1),
        ("latency_ms_sum", 90),
    ] {
        assert_eq!(int(&stats["today"][field]), want, "today.{field}: {stats}");
        assert_eq!(int(&stats["month"][field]), want, "month.{field}: {stats}");
    }
    let users = a
        .get_ok("/api/admin/users?sort=tokens_today&order=desc")
        .await;
    assert_eq!(users["total"], 2);
    assert_eq!(users["users"][0]["id"], "victim");
    assert_eq!(int(&users["users"][0]["today"]["total_tokens"]), 125);
    assert_eq!(int(&users["users"][0]["month"]["cost_nano_usd"]), 500);
    let usage = a.get_ok("/api/admin/user/victim/usage").await;
    let calls = usage["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    let repaired = &calls[0];
    assert_eq!(repaired["request_id"], "old-2");
    assert_eq!(
        (
            int(&repaired["input_tokens"]),
            int(&repaired["output_tokens"]),
            int(&repaired["total_tokens"]),
            repaired["cost_nano_usd"].clone(),
            repaired["usage_source"].as_str().unwrap()
        ),
        (0, 5, 5, Value::Null, "invalid")
    );
    assert_eq!(
        (
            int(&calls[1]["total_tokens"]),
            calls[1]["usage_source"].as_str().unwrap()
        ),
        (120, "reported")
    );
    assert_eq!(int(&usage["quota"]["day"]["used_tokens"]), 125);
    let (status, csv) = a.get_text("/api/admin/usage.csv").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    a.stop().await;

    // A call through the gateway works and is counted with the repaired history.
    let jwt = h.token("victim");
    h.mock.push(Reply::json(200, fixture("openai/chat.json")));
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();
    h.wait_rows(4).await;
    let a = AdminSide::start(&h).await;
    let stats = a.get_ok("/api/admin/stats").await;
    assert_eq!(int(&stats["today"]["calls"]), 4);
    assert_eq!(int(&stats["today"]["total_tokens"]), 167 + 1117 + 36);
    a.stop().await;
    assert_eq!(h.ledger().status("victim").day.used_tokens, 125 + 1117 + 36);
    // And again from the file: nothing left to repair, the same figures.
    h.restart().await;
    assert_eq!(h.ledger().status("victim").day.used_tokens, 125 + 1117 + 36);
    h.stop().await;
}
