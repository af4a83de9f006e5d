//! Retention on both stores: the calls before a day are deleted in small batches while the
//! gateway serves — by the store (`Store::prune`, what `store.retain_days` runs hourly) and by
//! `tollgate prune --before DAY` as an operator runs it — and the rollups, so the dashboard's
//! history and every total, stay as they were. On PostgreSQL whole months go as partitions.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use tollgate::provider::{Usage, UsageSource};
use tollgate::store::UsageRow;
use tollgate::usage::Outcome;

/// A call of `user` at `day`'s noon (UTC) using `tokens` input tokens.
fn call(n: u32, user: &str, day: &str, tokens: u64) -> UsageRow {
    let ts_ms = format!("{day}T12:00:00Z")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
        + i64::from(n);
    UsageRow {
        request_id: format!("old-{n}"),
        ts_ms,
        user_id: Arc::from(user),
        user_email: None,
        user_name: None,
        provider: Arc::from("openai"),
        model: Some("gpt-4o-mini".into()),
        endpoint: "chat.completions",
        streamed: false,
        status: 200,
        usage: Usage {
            input_tokens: tokens,
            output_tokens: 10,
            ..Usage::default()
        },
        cost_nano_usd: Some(1_000),
        usage_source: UsageSource::Reported,
        latency_ms: 100,
        ttfb_ms: Some(10),
        outcome: Outcome::Complete,
        journal_id: None,
        plan: None,
    }
}

fn day_start(day: &str) -> i64 {
    format!("{day}T00:00:00Z")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

on_both_stores! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_before_a_day_are_deleted_in_batches_and_the_rollups_stay(backend: Backend) {
        let h = Harness::start_on(backend, |c| c.store.commit_interval_ms = 5).await;
        let store = &h.running().store;
        // 30 calls over three months, then today's traffic through the proxy.
        let days = ["2026-01-15", "2026-02-10", "2026-02-28", "2026-03-01", "2026-03-20"];
        for n in 0..30u32 {
            assert!(store.record(call(n, "ann", days[n as usize % days.len()], 100 + u64::from(n))));
        }
        h.mock.set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("bob");
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, r#"{"model":"gpt-4o-mini","messages":[]}"#)
            .await;
        assert_eq!(resp.status(), 200);
        read_all(resp).await.unwrap();
        h.wait_rows(31).await;
        let rollups = "SELECT day, user_id, CAST(calls AS TEXT), CAST(total_tokens AS TEXT) FROM usage_user_daily \
                       ORDER BY day, user_id";
        let months = "SELECT month, user_id, CAST(calls AS TEXT), CAST(total_tokens AS TEXT) FROM usage_user_monthly \
                      ORDER BY month, user_id";
        let (daily, monthly) = (h.text_rows(rollups), h.text_rows(months));

        // Everything before March, 7 rows a batch: January and February's 18 calls.
        let deleted = store.prune(day_start("2026-03-01"), 7).await.unwrap();
        assert_eq!(deleted, 18);
        let rows = h.rows();
        assert_eq!(rows.len(), 13, "March's 12 and today's");
        assert!(rows.iter().all(|r| r.user_id == "bob" || r.request_id != "old-0"));
        assert_eq!(h.text_rows(rollups), daily, "the daily rollups stay");
        assert_eq!(h.text_rows(months), monthly, "the monthly rollups stay");
        // Again: nothing left to delete.
        assert_eq!(store.prune(day_start("2026-03-01"), 7).await.unwrap(), 0);

        // The operator's command, while the gateway serves: March's calls go, today's stay.
        let config = h.dir.path().join("prune.toml");
        std::fs::write(&config, config_toml(&h.raw)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.env_clear()
            .args(["prune", "--before", "2026-04-01", "--config"])
            .arg(&config);
        if let Some(db) = &h.pg {
            cmd.env("DATABASE_URL", db.url());
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("deleted 12 calls recorded before 2026-04-01"), "{text}");
        let rows = h.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].user_id, "bob");
        assert_eq!(h.text_rows(rollups), daily);
    }
}

#[test]
fn a_day_that_is_not_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = test_config("http://127.0.0.1:9", dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&raw)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_clear()
        .args(["prune", "--before", "last tuesday", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a day"));
}
