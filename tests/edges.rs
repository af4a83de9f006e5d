//! The edges of the request path: body and header limits, upstream failures and timeouts, an
//! upstream refusing the gateway's own key. Each answer is in the provider's error shape and
//! each call after authentication leaves a row.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::time::Duration;

use common::*;

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;

#[tokio::test]
async fn body_over_the_limit_is_413_and_never_forwarded() {
    let mut h = Harness::start_with(|c| c.server.max_request_bytes = 1024).await;
    let jwt = h.token("big");
    let big = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
    // Without a Content-Length (chunked upload) the limit still holds while reading.
    let resp = h
        .client
        .post(h.url("/gemini/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", &jwt)
        .body(chunked_upload(big.into_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        v["error"]["status"], "INVALID_ARGUMENT",
        "Gemini callers get Gemini's error shape"
    );
    assert_eq!(h.mock.hits(), 0);
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.status == 413 && r.usage_source == "none" && r.total_tokens == 0)
    );
}

/// The body as a stream of 512-byte chunks with no known length, for a chunked upload.
fn chunked_upload(data: Vec<u8>) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(512).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(tokio_stream::iter(pieces))
}

#[tokio::test]
async fn too_many_request_headers_are_refused() {
    let h = Harness::start_with(|c| c.server.max_headers = 20).await;
    let jwt = h.token("hdr");
    let mut req = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .body(CHAT_BODY);
    for i in 0..40 {
        req = req.header(format!("x-extra-{i}"), "v");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(h.mock.hits(), 0);
}

#[tokio::test]
async fn unreachable_upstream_is_502_with_a_row() {
    // A port that was just closed: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut h = Harness::start_with(|c| {
        for p in &mut c.providers {
            p.upstream = format!("http://127.0.0.1:{port}");
        }
    })
    .await;
    let jwt = h.token("gone");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].status,
            rows[0].usage_source.as_str(),
            rows[0].outcome.as_str()
        ),
        (502, "none", "upstream_unreachable")
    );
    assert_eq!(rows[0].model.as_deref(), Some("gpt-4o-mini"));
}

#[tokio::test]
async fn no_response_head_in_time_is_504_and_estimated() {
    let mut h = Harness::start_with(|c| c.server.response_header_timeout_ms = 200).await;
    h.mock
        .push(Reply::json(200, "{}").head_delay(Duration::from_secs(2)));
    let jwt = h.token("slow");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 504);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status, rows[0].usage_source.as_str()),
        (504, "estimated")
    );
    assert!(
        rows[0].input_tokens > 0,
        "the prompt that reached the upstream is estimated"
    );
}

#[tokio::test]
async fn upstream_silent_between_chunks_cuts_the_stream_visibly() {
    let mut h = Harness::start_with(|c| c.server.idle_timeout_ms = 300).await;
    let events = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello world\"},\"finish_reason\":null}]}\n\n";
    h.mock.push(
        Reply::sse(format!("{events}{events}"))
            .split_every(events.len())
            .gap(Duration::from_secs(3)),
    );
    let jwt = h.token("idle");
    let resp = h
        .post_openai(
            "/openai/v1/chat/completions",
            &jwt,
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        read_all(resp).await.is_err(),
        "a cut stream must fail on the client, not end cleanly"
    );
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].usage_source.as_str(), rows[0].outcome.as_str()),
        ("estimated", "idle_timeout")
    );
}

#[tokio::test]
async fn upstream_refusing_the_gateway_key_is_502_without_its_body() {
    let mut h = Harness::start().await;
    let echo = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#,
        &OPENAI_KEY[..12]
    );
    h.mock.push(Reply::json(401, echo));
    h.mock.push(Reply::json(403, r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.","status":"PERMISSION_DENIED"}}"#));
    let jwt = h.token("keyless");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains(&OPENAI_KEY[..12]),
        "no key fragment reaches the client: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "upstream_credentials_refused");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateway's provider credentials")
    );

    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            &jwt,
            "{}",
        )
        .await;
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAVAILABLE");

    // Gemini reports a bad key as 400 with reason API_KEY_INVALID.
    h.mock.push(Reply::json(400, r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#));
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            &jwt,
            "{}",
        )
        .await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("API key not valid"), "{text}");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.iter()
            .map(|r| (r.status, r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [(502, "upstream_rejected_key"); 3]
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged_and_are_recorded() {
    let mut h = Harness::start().await;
    let body = r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    h.mock.push(Reply::json(400, body));
    h.mock.push(Reply::json(503, r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#));
    let jwt = h.token("err");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.unwrap(), body);
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            &jwt,
            r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        )
        .await;
    assert_eq!(resp.status(), 503);
    resp.text().await.unwrap();
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].status,
            rows[0].usage_source.as_str(),
            rows[0].total_tokens
        ),
        (400, "none", 0)
    );
    assert_eq!(
        (
            rows[1].status,
            rows[1].usage_source.as_str(),
            rows[1].provider.as_str()
        ),
        (503, "none", "gemini")
    );
    assert_eq!(rows[1].model.as_deref(), Some("gemini-2.5-flash"));
}
