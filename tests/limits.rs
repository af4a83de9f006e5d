//! Limits that hold, end to end: blocked users get 403 and used-up quotas 429 before anything is
//! forwarded, a burst of concurrent calls cannot spend past a limit by more than one call, the
//! counters survive a restart, and the app can read where its user stands.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tollgate::quota::OverridesPatch;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Tell me a joke"}],"max_tokens":2000}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":100,"messages":[{"role":"user","content":"Count to ten"}]}"#;

async fn chat(h: &Harness, jwt: &str) -> reqwest::Response {
    h.post_openai("/openai/v1/chat/completions", jwt, CHAT)
        .await
}

on_both_stores! {
    #[tokio::test]
    async fn a_blocked_user_gets_403_with_the_reason_and_the_upstream_is_never_called(backend: Backend) {
        let mut h = Harness::start_on(backend, |_| {}).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("blocked-user");
        assert_eq!(chat(&h, &jwt).await.status(), 200);
        let actions = h.actions();
        let change = actions
            .block(
                "test",
                "blocked-user",
                Some("abuse of the free tier".into()),
            )
            .await
            .unwrap();
        assert!(!change.before.blocked && change.after.blocked);

        let resp = chat(&h, &jwt).await;
        assert_eq!(resp.status(), 403);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "user_blocked");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("blocked") && msg.contains("abuse of the free tier"),
            "{msg}"
        );
        let resp = h
            .post_gemini(
                "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                &jwt,
                "{}",
            )
            .await;
        assert_eq!(resp.status(), 403);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(
            h.mock.hits(),
            1,
            "only the call before the block reached the upstream"
        );

        // Unblocking takes effect on the next call.
        actions.unblock("test", "blocked-user").await.unwrap();
        assert_eq!(chat(&h, &jwt).await.status(), 200);
        // The unblock is kept on the user's row in the store.
        let stored = h.stored_controls("blocked-user").await.unwrap();
        assert!(!stored.blocked && stored.blocked_reason.is_none(), "{stored:?}");
        h.stop().await;
        let rows = h.rows();
        assert_eq!(
            rows.iter()
                .map(|r| (r.status, r.usage_source.as_str(), r.outcome.as_str()))
                .collect::<Vec<_>>(),
            [
                (200, "reported", "complete"),
                (403, "none", "refused_blocked"),
                (403, "none", "refused_blocked"),
                (200, "reported", "complete"),
            ]
        );

    }
}

on_both_stores! {
    #[tokio::test]
    async fn a_user_at_the_daily_limit_gets_429_with_retry_after_and_no_retry(backend: Backend) {
        let mut h = Harness::start_on(backend, |c| c.limits.daily_tokens = 1_000).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("thrifty");
        // chat.json uses 1117 + 36 tokens: the first call is admitted (0 used) and crosses the limit.
        let resp = chat(&h, &jwt).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        h.wait_rows(1).await;

        let resp = chat(&h, &jwt).await;
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["x-should-retry"], "false");
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let status = h.ledger().status("thrifty");
        let to_midnight = (status.day.reset_at.as_second() - jiff::Timestamp::now().as_second()) as u64;
        assert!(
            retry_after.abs_diff(to_midnight) <= 2,
            "Retry-After {retry_after} = seconds to the daily reset {to_midnight}"
        );
        assert_eq!(resp.headers()["x-tollgate-daily-tokens-remaining"], "0");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "daily_token_limit_reached");
        assert_eq!(v["error"]["type"], "insufficient_quota");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("daily token limit of 1000") && msg.contains(&status.day.reset_at.to_string()),
            "{msg}"
        );
        assert_eq!(
            h.mock.hits(),
            1,
            "the refused call never reached the upstream"
        );

        // A per-user override raises the limit for the next call.
        let patch = OverridesPatch {
            daily_tokens: Some(Some(10_000)),
            ..Default::default()
        };
        h.actions()
            .set_limits("test", "thrifty", patch)
            .await
            .unwrap();
        assert_eq!(chat(&h, &jwt).await.status(), 200);
        h.stop().await;
        let rows = h.rows();
        assert_eq!(rows[1].status, 429);
        assert_eq!(
            (
                rows[1].usage_source.as_str(),
                rows[1].total_tokens,
                rows[1].outcome.as_str()
            ),
            ("none", 0, "refused_quota")
        );
    }
}

on_both_stores! {
    #[tokio::test]
    async fn over_the_request_rate_is_a_retryable_429(backend: Backend) {
        let h = Harness::start_on(backend, |c| c.limits.requests_per_minute = 2).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("chatty");
        assert_eq!(chat(&h, &jwt).await.status(), 200);
        assert_eq!(chat(&h, &jwt).await.status(), 200);
        let resp = chat(&h, &jwt).await;
        assert_eq!(resp.status(), 429);
        assert_ne!(resp.headers()["x-should-retry"], "false");
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry_after), "{retry_after}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
        assert_eq!(h.mock.hits(), 2);
    }
}

on_both_stores! {
    #[tokio::test]
    async fn every_answer_carries_the_quota_headers_and_me_usage_matches_the_rows(backend: Backend) {
        let mut h = Harness::start_on(backend, |c| {
            c.limits.daily_tokens = 50_000;
            c.limits.monthly_tokens = 900_000;
            c.limits.timezone = "Europe/Berlin".into();
        })
        .await;
        h.mock.push(Reply::json(200, fixture("openai/chat.json")));
        h.mock
            .push(Reply::sse(fixture("openai/chat_stream_usage.sse")));
        let jwt = h.token("watcher");
        let resp = chat(&h, &jwt).await;
        for name in [
            "x-tollgate-daily-tokens-remaining",
            "x-tollgate-daily-reset",
            "x-tollgate-monthly-tokens-remaining",
            "x-tollgate-monthly-reset",
        ] {
            assert!(resp.headers().contains_key(name), "{name}");
        }
        resp.bytes().await.unwrap();
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
            .await;
        read_all(resp).await.unwrap();
        h.wait_rows(2).await;

        let resp = h
            .client
            .get(h.url("/me/usage"))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let me: serde_json::Value = resp.json().await.unwrap();
        let rows = h.rows();
        let total: i64 = rows.iter().map(|r| r.total_tokens).sum();
        assert_eq!(total, 1153 + 22);
        assert_eq!(me["user"], "watcher");
        assert_eq!(me["timezone"], "Europe/Berlin");
        assert_eq!(me["day"]["used_tokens"], total);
        assert_eq!(me["month"]["used_tokens"], total);
        assert_eq!(me["day"]["reserved_tokens"], 0);
        assert_eq!(me["day"]["limit_tokens"], 50_000);
        assert_eq!(me["day"]["remaining_tokens"], 50_000 - total);
        assert_eq!(me["month"]["remaining_tokens"], 900_000 - total);
        assert_eq!(me["in_flight"], 0);
        let cost: i64 = rows.iter().map(|r| r.cost_nano_usd.unwrap()).sum();
        assert!((me["day"]["used_cost_usd"].as_f64().unwrap() - cost as f64 / 1e9).abs() < 1e-9);
        let reset = me["day"]["resets_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap();
        let local = reset.to_zoned_datetime(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
        assert_eq!(
            (local.hour(), local.minute(), local.second()),
            (0, 0, 0),
            "the day resets at Berlin midnight"
        );
        // Without a credential: 401.
        assert_eq!(
            h.client
                .get(h.url("/me/usage"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(h.mock.hits(), 2);
        h.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn counters_survive_a_restart(backend: Backend) {
        let mut h = Harness::start_on(backend, |c| c.limits.daily_tokens = 2_000).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("persistent");
        assert_eq!(chat(&h, &jwt).await.status(), 200);
        h.restart().await;
        let status = h.ledger().status("persistent");
        assert_eq!(status.day.used_tokens, 1153, "seeded from the store");
        assert_eq!(status.month.used_tokens, 1153);
        // 1153 < 2000: admitted, and now at 2306 ≥ 2000.
        assert_eq!(chat(&h, &jwt).await.status(), 200);
        h.restart().await;
        assert_eq!(
            chat(&h, &jwt).await.status(),
            429,
            "still over the limit after a restart"
        );
        assert_eq!(h.mock.hits(), 2);
    }
}

on_both_stores! {
    /// The guarantee: with 150 calls — streaming, non-streaming, and clients that hang up
    /// mid-stream — arriving together at a limit, the recorded total ends at most one call's
    /// usage past the limit, and no reservation is left behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_at_the_limit_overshoots_by_at_most_one_call(backend: Backend) {
        const LIMIT: u64 = 20_000;
        let mut h = Harness::start_on(backend, |c| c.limits.daily_tokens = LIMIT).await;
        let stream = fixture("openai/chat_stream_tool_usage.sse"); // 2231 + 219 tokens
        let event = String::from_utf8(stream.clone())
            .unwrap()
            .find("\n\n")
            .unwrap()
            + 2;
        let jwt = Arc::new(h.token("racer"));
        let mut statuses = Vec::new();
        // Three waves of 50: each wave arrives at once, the next after the previous settled, so
        // the later waves meet a limit that recorded usage (not only reservations) has nearly used.
        for wave in 0..3usize {
            let mut tasks = Vec::new();
            for i in wave * 50..(wave + 1) * 50 {
                let kind = i % 3;
                let reply = match kind {
                    0 => Reply::json(200, fixture("openai/chat.json")), // 1117 + 36 tokens
                    _ => Reply::sse(stream.clone())
                        .split_every(event)
                        .gap(Duration::from_millis(2)),
                };
                h.mock.push_for(&format!("race-{i}"), reply);
                let client = h.client.clone();
                let url = h.url("/openai/v1/chat/completions");
                let jwt = Arc::clone(&jwt);
                tasks.push(tokio::spawn(async move {
                let body = if kind == 0 { CHAT } else { r#"{"model":"o4-mini","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":3000,"messages":[{"role":"user","content":"go"}]}"# };
                let mut resp = client
                    .post(url)
                    .bearer_auth(jwt.as_str())
                    .header("x-request-id", format!("race-{i}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                if status == 200 && kind == 2 {
                    // Hang up after the first chunk.
                    let _ = resp.chunk().await;
                    drop(resp);
                } else {
                    let _ = read_all(resp).await;
                }
                status
            }));
            }
            for t in tasks {
                statuses.push(t.await.unwrap());
            }
        }
        let admitted = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!(admitted + refused, 150, "{statuses:?}");
        assert!(admitted >= 1 && refused >= 1);

        let ledger = h.ledger();
        for _ in 0..200 {
            if ledger.status("racer").in_flight == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = ledger.status("racer");
        assert_eq!(
            (
                status.in_flight,
                status.day.reserved_tokens,
                status.month.reserved_tokens
            ),
            (0, 0, 0),
            "every reservation settled"
        );
        h.stop().await;
        let rows = h.rows();
        assert_eq!(rows.len(), 150, "one row per call, refusals included");
        let recorded: u64 = rows.iter().map(|r| r.total_tokens as u64).sum();
        let largest_call = rows.iter().map(|r| r.total_tokens as u64).max().unwrap();
        assert!(
            recorded <= LIMIT + largest_call,
            "recorded {recorded} > limit {LIMIT} + one call {largest_call}"
        );
        assert_eq!(
            status.day.used_tokens, recorded,
            "the ledger agrees with the rows"
        );
        eprintln!(
            "burst: {admitted} admitted, {refused} refused, recorded {recorded} of {LIMIT} (overshoot {})",
            recorded.saturating_sub(LIMIT)
        );
    }
}
