//! Calls that end early still produce exactly one row: the provider's last usage report when
//! there was one, otherwise an estimate flagged `usage_source = 'estimated'`. An upstream cut
//! makes the client's stream fail visibly; a client that goes away stops the upstream call.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::time::Duration;

use common::*;

const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Count to ten please"}]}"#;
const GEMINI_BODY: &str =
    r#"{"contents":[{"role":"user","parts":[{"text":"Explain how AI works"}]}]}"#;

/// The byte offset just after the `n`th event (`sep` = the event separator).
fn after_events(body: &[u8], sep: &str, n: usize) -> usize {
    let s = std::str::from_utf8(body).unwrap();
    s.match_indices(sep)
        .nth(n - 1)
        .map(|(i, _)| i + sep.len())
        .unwrap()
}

#[tokio::test]
async fn upstream_cut_before_usage_fails_the_client_and_is_estimated() {
    let mut h = Harness::start().await;
    let body = fixture("openai/chat_stream_usage.sse");
    let cut = after_events(&body, "\n\n", 4);
    h.mock.push(Reply::sse(body).split_at(&[cut]).cut_after(1));
    let jwt = h.token("cut");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        read_all(resp).await.is_err(),
        "the client's stream must fail, not end cleanly"
    );
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.usage_source.as_str(), r.outcome.as_str(), r.status),
        ("estimated", "upstream_error", 200)
    );
    assert!(r.input_tokens > 0, "the prompt is estimated: {r:?}");
    assert!(r.output_tokens > 0, "the relayed text is estimated: {r:?}");
}

#[tokio::test]
async fn upstream_cut_after_gemini_reported_usage_keeps_the_report() {
    let mut h = Harness::start().await;
    let body = fixture("gemini/stream_sse.sse");
    // Cut after the second event: Gemini had already reported its running totals.
    let cut = after_events(&body, "\r\n\r\n", 2);
    h.mock
        .push(Reply::sse(body.clone()).split_at(&[cut]).cut_after(1));
    let jwt = h.token("gcut");
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            &jwt,
            GEMINI_BODY,
        )
        .await;
    assert!(read_all(resp).await.is_err());
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.usage_source.as_str(), r.outcome.as_str()),
        ("reported", "upstream_error")
    );
    // The second event's cumulative report (not the final one, never a sum).
    let second: serde_json::Value = serde_json::from_str(
        std::str::from_utf8(&body[..cut])
            .unwrap()
            .split("\r\n\r\n")
            .nth(1)
            .unwrap()
            .trim_start_matches("data: "),
    )
    .unwrap();
    let um = &second["usageMetadata"];
    let out = um["candidatesTokenCount"].as_i64().unwrap_or(0)
        + um["thoughtsTokenCount"].as_i64().unwrap_or(0);
    assert_eq!(
        (r.input_tokens, r.output_tokens),
        (um["promptTokenCount"].as_i64().unwrap(), out)
    );
}

#[tokio::test]
async fn client_disconnect_mid_stream_stops_the_upstream_and_records_a_row() {
    let mut h = Harness::start().await;
    let body = fixture("openai/chat_stream_usage.sse");
    let ev = after_events(&body, "\n\n", 1);
    // One event every 50 ms: the client reads two events, then hangs up.
    h.mock.push(
        Reply::sse(body)
            .split_every(ev)
            .gap(Duration::from_millis(50)),
    );
    let jwt = h.token("leaver");
    let mut resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
        .await;
    let _ = resp.chunk().await.unwrap();
    let _ = resp.chunk().await.unwrap();
    drop(resp);
    let rows = h.wait_rows(1).await;
    let r = &rows[0];
    assert_eq!(
        (r.usage_source.as_str(), r.outcome.as_str()),
        ("estimated", "client_gone")
    );
    assert!(r.input_tokens > 0);
    // The gateway closed the upstream connection: the mock's next write failed.
    for _ in 0..100 {
        if h.mock.broken_writes() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.mock.broken_writes(), 1, "the upstream call was stopped");
    h.stop().await;
    assert_eq!(h.rows().len(), 1, "exactly one row");
}

#[tokio::test]
async fn mid_stream_error_events_are_recorded() {
    let mut h = Harness::start().await;
    h.mock.push_for(
        "e1",
        Reply::sse(fixture("openai/chat_stream_error.sse")).split_every(64),
    );
    h.mock.push_for(
        "e2",
        Reply::sse(fixture("openai/responses_stream_failed.sse")).split_every(64),
    );
    h.mock.push_for(
        "e3",
        Reply::json_stream(fixture("gemini/stream_array_error.json")).split_every(16),
    );
    let jwt = h.token("errs");
    for (id, path, body, gemini) in [
        ("e1", "/openai/v1/chat/completions", CHAT_STREAM, false),
        (
            "e2",
            "/openai/v1/responses",
            r#"{"model":"gpt-4o","input":"hi","stream":true}"#,
            false,
        ),
        (
            "e3",
            "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            GEMINI_BODY,
            true,
        ),
    ] {
        let req = h
            .client
            .post(h.url(path))
            .header("x-request-id", id)
            .body(body);
        let req = if gemini {
            req.header("x-goog-api-key", &jwt)
        } else {
            req.bearer_auth(&jwt)
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        // The upstream ended its body normally: the client gets every byte, error event included.
        read_all(resp).await.unwrap();
    }
    h.stop().await;
    let rows = h.rows();
    let get = |id: &str| rows.iter().find(|r| r.request_id == id).unwrap().clone();
    let e1 = get("e1");
    assert_eq!(
        (e1.usage_source.as_str(), e1.outcome.as_str()),
        ("estimated", "stream_error")
    );
    assert!(e1.output_tokens > 0);
    let e2 = get("e2");
    assert_eq!(e2.usage(), (412, 384, 3, 0, "reported"));
    assert_eq!(e2.outcome, "stream_error");
    let e3 = get("e3");
    assert_eq!(e3.usage(), (1204, 0, 4, 0, "reported"));
    assert_eq!(e3.outcome, "stream_error");
}

#[tokio::test]
async fn upstream_error_statuses_and_non_consuming_calls_record_zero_tokens() {
    let mut h = Harness::start().await;
    h.mock
        .push(Reply::json(429, fixture("openai/chat_error.json")));
    h.mock.push(Reply::json(
        400,
        fixture("gemini/generate_content_error.json"),
    ));
    let jwt = h.token("zero");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
        .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.bytes().await.unwrap(),
        fixture("openai/chat_error.json"),
        "upstream errors pass through unchanged"
    );
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            &jwt,
            GEMINI_BODY,
        )
        .await;
    assert_eq!(resp.status(), 400);
    resp.bytes().await.unwrap();
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.iter()
            .map(|r| (r.status, r.usage_source.as_str(), r.total_tokens))
            .collect::<Vec<_>>(),
        [(429, "none", 0), (400, "none", 0)]
    );
}

#[tokio::test]
async fn client_gone_before_the_answer_head_is_still_recorded() {
    let mut h = Harness::start().await;
    h.mock.set_default(
        Reply::json(200, fixture("openai/chat.json")).head_delay(Duration::from_millis(600)),
    );
    let jwt = h.token("impatient");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for _ in 0..3 {
        let err = client
            .post(h.url("/openai/v1/chat/completions"))
            .bearer_auth(&jwt)
            .body(CHAT_STREAM)
            .send()
            .await
            .expect_err("the client gives up before the head");
        assert!(err.is_timeout());
    }
    let rows = h.wait_rows(3).await;
    for r in &rows {
        assert_eq!(
            (r.status, r.usage_source.as_str(), r.outcome.as_str()),
            (499, "estimated", "client_gone"),
            "{r:?}"
        );
        assert!(r.input_tokens > 0);
    }
    let status = h.ledger().status("impatient");
    assert_eq!(
        (status.in_flight, status.day.reserved_tokens),
        (0, 0),
        "reservations settled"
    );
    h.stop().await;
    assert_eq!(h.rows().len(), 3);
}
