//! `/metrics` figures after real calls through the gateway: calls by provider, model and
//! status, tokens and cost equal to the recorded rows, latency histograms, refusals by reason,
//! calls in flight (streams included, also when the client goes away) and the writer's gauges.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Tell me a joke"}],"max_tokens":200}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":100,"messages":[{"role":"user","content":"Count to ten"}]}"#;
const WITHIN: Duration = Duration::from_secs(10);

fn render(h: &Harness) -> String {
    h.running().metrics.render()
}

/// The value of the sample line named exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

fn assert_sample(text: &str, series: &str, value: &str) {
    assert_eq!(
        sample(text, series).as_deref(),
        Some(value),
        "{series} in:\n{text}"
    );
}

#[tokio::test]
async fn calls_tokens_cost_and_refusals_match_what_happened() {
    let h = Harness::start_with(|c| c.limits.daily_tokens = 1_000).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token("metered");

    // 1: a success (chat.json: 1117 input, 36 output tokens, model gpt-4o-2024-08-06).
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
        .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    h.wait_rows(1).await;
    // 2: a bad credential (401, no row: the caller is unknown).
    let resp = h
        .post_openai("/openai/v1/chat/completions", "not-a-jwt", CHAT)
        .await;
    assert_eq!(resp.status(), 401);
    // 3: over the daily limit (429, a row).
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
        .await;
    assert_eq!(resp.status(), 429);
    // 4: an unknown prefix (404, no row).
    let resp = h.post_openai("/nowhere/v1/chat", &jwt, CHAT).await;
    assert_eq!(resp.status(), 404);
    let rows = h.wait_rows(2).await;
    let cost = rows[0].cost_nano_usd.unwrap();
    assert!(cost > 0);

    let text = eventually("both rows counted", WITHIN, || {
        let text = render(&h);
        sample(
            &text,
            r#"tollgate_calls_total{provider="openai",model="gpt-4o",status="429"}"#,
        )
        .is_some()
        .then_some(text)
    })
    .await;
    for (series, value) in [
        (
            r#"tollgate_calls_total{provider="openai",model="gpt-4o-2024-08-06",status="200"}"#,
            "1".to_string(),
        ),
        (
            r#"tollgate_calls_total{provider="openai",model="gpt-4o",status="429"}"#,
            "1".into(),
        ),
        (
            r#"tollgate_input_tokens_total{provider="openai",model="gpt-4o-2024-08-06"}"#,
            "1117".into(),
        ),
        (
            r#"tollgate_output_tokens_total{provider="openai",model="gpt-4o-2024-08-06"}"#,
            "36".into(),
        ),
        (
            r#"tollgate_cost_nano_usd_total{provider="openai",model="gpt-4o-2024-08-06"}"#,
            cost.to_string(),
        ),
        (
            r#"tollgate_upstream_ttfb_seconds_count{provider="openai"}"#,
            "1".into(),
        ),
        (
            r#"tollgate_upstream_latency_seconds_count{provider="openai"}"#,
            "1".into(),
        ),
        (
            r#"tollgate_refusals_total{reason="unauthenticated"}"#,
            "1".into(),
        ),
        (
            r#"tollgate_refusals_total{reason="daily_tokens"}"#,
            "1".into(),
        ),
        (r#"tollgate_refusals_total{reason="not_found"}"#, "1".into()),
        (r#"tollgate_refusals_total{reason="blocked"}"#, "0".into()),
        (r#"tollgate_refusals_total{reason="rate"}"#, "0".into()),
        ("tollgate_in_flight_calls", "0".into()),
        ("tollgate_store_rows_committed_total", "2".into()),
        ("tollgate_store_rows_dropped_total", "0".into()),
        ("tollgate_store_rows_failed_total", "0".into()),
        ("tollgate_store_queue_depth", "0".into()),
        (r#"tollgate_config_reloads_total{result="ok"}"#, "0".into()),
        (
            r#"tollgate_config_reloads_total{result="refused"}"#,
            "0".into(),
        ),
    ] {
        assert_sample(&text, series, &value);
    }
    assert_sample(
        &text,
        &format!(
            "tollgate_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        "1",
    );
    // Only calls with a row are in the call counters: 2 of them.
    let calls: u64 = text
        .lines()
        .filter(|l| l.starts_with("tollgate_calls_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(calls, 2);
    assert!(tollgate::metrics::CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
}

#[tokio::test]
async fn a_stream_counts_in_flight_until_its_body_ends_or_its_client_goes() {
    let h = Harness::start().await;
    let slow = || {
        Reply::sse(fixture("openai/chat_stream_usage.sse"))
            .split_every(500)
            .gap(Duration::from_millis(150))
    };
    h.mock.push(slow());
    h.mock.push(slow());
    let jwt = h.token("streamer");

    // Read to the end.
    let mut resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
        .await;
    assert_eq!(resp.status(), 200);
    resp.chunk().await.unwrap().unwrap();
    assert_eq!(h.running().metrics.in_flight(), 1);
    while resp.chunk().await.unwrap().is_some() {}
    eventually("the ended stream out of flight", WITHIN, || {
        (h.running().metrics.in_flight() == 0).then_some(())
    })
    .await;

    // The client goes away mid-stream.
    let mut resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
        .await;
    resp.chunk().await.unwrap().unwrap();
    assert_eq!(h.running().metrics.in_flight(), 1);
    drop(resp);
    eventually("the abandoned stream out of flight", WITHIN, || {
        (h.running().metrics.in_flight() == 0).then_some(())
    })
    .await;

    let rows = h.wait_rows(2).await;
    let text = eventually("both streams counted", WITHIN, || {
        let text = render(&h);
        (sample(&text, "tollgate_store_rows_committed_total").as_deref() == Some("2"))
            .then_some(text)
    })
    .await;
    let model = rows[0].model.clone().unwrap();
    let series =
        format!(r#"tollgate_calls_total{{provider="openai",model="{model}",status="200"}}"#);
    let counted = eventually("the observer's counts", WITHIN, || {
        sample(&render(&h), &series).filter(|v| v == "2")
    })
    .await;
    assert_eq!(counted, "2");
    assert_sample(&text, "tollgate_in_flight_calls", "0");
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["complete", "client_gone"]);
}
