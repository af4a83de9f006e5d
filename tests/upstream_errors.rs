//! An error answer the upstream sends whole (a 400 JSON error, to a plain or to a streaming
//! request) is relayed untouched and recorded as what it is — `outcome = 'upstream_error'`, no
//! tokens — not as a stream that failed. On real sockets: the gateway on 127.0.0.1:0, the mock
//! upstream speaking each provider's error format, a real SQLite file.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Harness, Reply, fixture};
use reqwest::StatusCode;

const OPENAI_400: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130542 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello there"}]}"#;
const GEMINI: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hello there"}]}]}"#;

#[tokio::test]
async fn upstream_400_answers_are_recorded_as_upstream_errors_not_stream_errors() {
    let mut h = Harness::start().await;
    let jwt = h.token("erin");
    let gemini_400 = fixture("gemini/generate_content_error.json");
    // In the order of the calls below: OpenAI plain and streaming, Gemini plain, SSE stream and
    // JSON-array stream, each answered with its provider's 400 (a 503 for the last).
    h.mock.push(Reply::json(400, OPENAI_400));
    h.mock.push(Reply::json(400, OPENAI_400).split_every(17));
    h.mock.push(Reply::json(400, gemini_400.clone()));
    h.mock
        .push(Reply::json(400, gemini_400.clone()).split_every(9));
    let overloaded = r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#;
    h.mock.push(Reply::json(503, overloaded));

    let calls: [(&str, &str, &[u8], u16); 5] = [
        (
            "/openai/v1/chat/completions",
            CHAT,
            OPENAI_400.as_bytes(),
            400,
        ),
        (
            "/openai/v1/chat/completions",
            CHAT_STREAM,
            OPENAI_400.as_bytes(),
            400,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            GEMINI,
            &gemini_400,
            400,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            GEMINI,
            &gemini_400,
            400,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            GEMINI,
            overloaded.as_bytes(),
            503,
        ),
    ];
    for (path, body, answer, status) in calls {
        let resp = if path.starts_with("/openai") {
            h.post_openai(path, &jwt, body).await
        } else {
            h.post_gemini(path, &jwt, body).await
        };
        assert_eq!(
            resp.status(),
            StatusCode::from_u16(status).unwrap(),
            "{path}"
        );
        assert_eq!(
            resp.bytes().await.unwrap(),
            answer,
            "{path}: the error passes through unchanged"
        );
    }
    let rows = h.wait_rows(5).await;
    let recorded: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.provider.as_str(),
                r.endpoint.as_str(),
                r.streamed,
                r.status,
                r.outcome.as_str(),
                r.usage(),
                r.total_tokens,
                r.cost_nano_usd,
            )
        })
        .collect();
    let nothing = (0, 0, 0, 0, "none");
    assert_eq!(
        recorded,
        [
            (
                "openai",
                "chat.completions",
                false,
                400,
                "upstream_error",
                nothing,
                0,
                Some(0)
            ),
            (
                "openai",
                "chat.completions",
                true,
                400,
                "upstream_error",
                nothing,
                0,
                Some(0)
            ),
            (
                "gemini",
                "generateContent",
                false,
                400,
                "upstream_error",
                nothing,
                0,
                Some(0)
            ),
            (
                "gemini",
                "streamGenerateContent",
                true,
                400,
                "upstream_error",
                nothing,
                0,
                Some(0)
            ),
            (
                "gemini",
                "streamGenerateContent",
                true,
                503,
                "upstream_error",
                nothing,
                0,
                Some(0)
            ),
        ]
    );
    // Nothing was consumed: the quota holds nothing for these calls.
    let status = h.ledger().status("erin");
    assert_eq!((status.day.used_tokens, status.day.reserved_tokens), (0, 0));
    h.stop().await;
}
