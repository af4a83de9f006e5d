//! Metering cannot be dodged by spelling. A path or body that Tollgate could read one way and a
//! provider another is refused (400, the provider's error shape, never forwarded, one row once
//! the caller is known); what is accepted is classified and forwarded as one and the same path;
//! request keys are read as the provider's parser reads them; and a usage report in any
//! successful answer is metered, whatever the endpoint. Paths go out on a raw socket where an
//! HTTP client library would clean them up first (`.`, `..`, `\`).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;
use tollgate::config::UnknownEndpoints;

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to ten"}]}"#;
const GEMINI_BODY: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}"#;

/// A Tollgate answer read off a raw socket.
struct RawAnswer {
    status: u16,
    body: serde_json::Value,
}

/// Send one request with exactly `target` as its request target, on a raw socket.
async fn raw(addr: SocketAddr, method: &str, target: &str, auth: &str, body: &str) -> RawAnswer {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: tollgate\r\nconnection: close\r\n{auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    RawAnswer {
        status,
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

fn bearer(jwt: &str) -> String {
    format!("authorization: Bearer {jwt}")
}

fn goog(jwt: &str) -> String {
    format!("x-goog-api-key: {jwt}")
}

/// OpenAI's 400: `{"error":{"message","type":"invalid_request_error","param":null,"code"}}`.
fn assert_openai_400(a: &RawAnswer, code: &str, what: &str) {
    assert_eq!(a.status, 400, "{what}: {}", a.body);
    let e = &a.body["error"];
    assert_eq!(e["type"], "invalid_request_error", "{what}");
    assert_eq!(e["code"], code, "{what}");
    assert!(e["param"].is_null(), "{what}");
    assert!(e["message"].as_str().unwrap().contains("refused"), "{what}");
    assert_eq!(e.as_object().unwrap().len(), 4, "{what}: {}", a.body);
}

/// Gemini's 400: `{"error":{"code":400,"message","status":"INVALID_ARGUMENT"}}`.
fn assert_gemini_400(a: &RawAnswer, what: &str) {
    assert_eq!(a.status, 400, "{what}: {}", a.body);
    let e = &a.body["error"];
    assert_eq!(e["code"], 400, "{what}");
    assert_eq!(e["status"], "INVALID_ARGUMENT", "{what}");
    assert!(e["message"].is_string(), "{what}");
    assert_eq!(e.as_object().unwrap().len(), 3, "{what}: {}", a.body);
}

/// Each refused path: never forwarded, and one row for the caller (400, no usage).
async fn refused_paths_leave_one_row_each(user: &str, paths: &[&str]) {
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token(user);
    for path in paths {
        let a = raw(h.addr, "POST", path, &bearer(&jwt), CHAT).await;
        assert_openai_400(&a, "invalid_path", path);
    }
    assert_eq!(
        h.mock.hits(),
        0,
        "a refused path never reaches the upstream"
    );
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), paths.len(), "{rows:#?}");
    for r in &rows {
        assert_eq!(
            (
                r.user_id.as_str(),
                r.provider.as_str(),
                r.status,
                r.outcome.as_str(),
                r.usage_source.as_str(),
                r.total_tokens,
                r.endpoint.as_str(),
            ),
            (
                user,
                "openai",
                400,
                "refused_invalid_request",
                "none",
                0,
                "other"
            )
        );
    }
}

#[tokio::test]
async fn double_slash_path_cannot_dodge_metering() {
    refused_paths_leave_one_row_each(
        "slashes",
        &[
            "/openai/v1//chat/completions",
            "/openai//v1/chat/completions",
            "/openai/v1/chat//completions",
            "/openai/v1/chat/completions//",
        ],
    )
    .await;
}

#[tokio::test]
async fn dot_segments_cannot_dodge_metering() {
    refused_paths_leave_one_row_each(
        "dots",
        &[
            "/openai/v1/chat/./completions",
            "/openai/./v1/chat/completions",
            "/openai/v1/x/../chat/completions",
            "/openai/v1/chat/completions/.",
        ],
    )
    .await;
}

#[tokio::test]
async fn case_variants_cannot_dodge_metering() {
    refused_paths_leave_one_row_each(
        "cases",
        &[
            "/openai/v1/Chat/Completions",
            "/openai/v1/chat/Completions",
            "/openai/V1/chat/completions",
            "/openai/v1/Responses",
        ],
    )
    .await;
}

#[tokio::test]
async fn path_parameters_cannot_dodge_metering() {
    refused_paths_leave_one_row_each(
        "params",
        &[
            "/openai/v1/chat/completions;x",
            "/openai/v1/chat;v=2/completions",
        ],
    )
    .await;
}

#[tokio::test]
async fn percent_encoding_cannot_dodge_metering() {
    refused_paths_leave_one_row_each(
        "encoded",
        &[
            "/openai/v1/chat%2Fcompletions",
            "/openai/v1/chat%2fcompletions",
            "/openai/v1/chat%5Ccompletions",
            "/openai/v1/chat/%2E/completions",
            "/openai/v1/%63hat/completions",
            "/openai/v1/chat/completions%00",
        ],
    )
    .await;
}

#[tokio::test]
async fn backslash_cannot_dodge_metering() {
    refused_paths_leave_one_row_each("backslash", &["/openai/v1/chat\\completions"]).await;
}

#[tokio::test]
async fn dot_dot_cannot_cross_to_another_provider() {
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("gemini/generate_content.json")));
    let jwt = h.token("crosser");
    // Under the OpenAI prefix: OpenAI's error shape, and nothing reaches any upstream.
    let a = raw(
        h.addr,
        "POST",
        "/openai/../gemini/v1beta/models/gemini-2.5-flash:generateContent",
        &bearer(&jwt),
        GEMINI_BODY,
    )
    .await;
    assert_openai_400(&a, "invalid_path", "openai/../gemini");
    // And the other way round, in Gemini's.
    let a = raw(
        h.addr,
        "POST",
        "/gemini/../openai/v1/chat/completions",
        &goog(&jwt),
        CHAT,
    )
    .await;
    assert_gemini_400(&a, "gemini/../openai");
    assert_eq!(h.mock.hits(), 0);
    assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.iter()
            .map(|r| (r.provider.as_str(), r.status, r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("openai", 400, "refused_invalid_request"),
            ("gemini", 400, "refused_invalid_request")
        ]
    );
}

#[tokio::test]
async fn gemini_case_variant_method_cannot_dodge_metering() {
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("gemini/generate_content.json")));
    let jwt = h.token("gcase");
    for path in [
        "/gemini/v1beta/models/gemini-2.5-flash:GenerateContent",
        "/gemini/v1beta/models/gemini-2.5-flash%3AGenerateContent",
        "/gemini/v1beta/models/gemini-2.5-flash:streamgeneratecontent?alt=sse",
        "/gemini/v1beta/Models/gemini-2.5-flash:generateContent",
        "/gemini/v1beta/models/gemini-2.5-flash%253AgenerateContent",
    ] {
        let a = raw(h.addr, "POST", path, &goog(&jwt), GEMINI_BODY).await;
        assert_gemini_400(&a, path);
    }
    assert_eq!(h.mock.hits(), 0);
    h.stop().await;
    assert!(
        h.rows()
            .iter()
            .all(|r| r.status == 400 && r.outcome == "refused_invalid_request"),
        "{:#?}",
        h.rows()
    );
}

#[tokio::test]
async fn a_refused_path_without_a_credential_is_401_without_a_row() {
    let mut h = Harness::start().await;
    let a = raw(
        h.addr,
        "POST",
        "/openai/v1//chat/completions",
        "x-nothing: here",
        CHAT,
    )
    .await;
    assert_eq!(a.status, 401, "authentication comes first: {}", a.body);
    assert_eq!(h.mock.hits(), 0);
    h.stop().await;
    assert!(h.rows().is_empty());
}

#[tokio::test]
async fn an_encoded_colon_is_forwarded_as_it_is_classified() {
    let mut h = Harness::start().await;
    h.mock
        .push(Reply::json(200, fixture("gemini/generate_content.json")));
    let jwt = h.token("colon");
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash%3AgenerateContent",
            &jwt,
            GEMINI_BODY,
        )
        .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(
        h.mock.last().target,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "the path classified is the path forwarded"
    );
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].endpoint, "generateContent");
    assert_eq!(rows[0].model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(rows[0].usage(), (2145, 2048, 589, 531, "reported"));
}

#[tokio::test]
async fn a_trailing_slash_is_forwarded_as_it_is_classified() {
    let mut h = Harness::start().await;
    h.mock
        .push(Reply::sse(fixture("openai/chat_stream_usage.sse")));
    let jwt = h.token("slash");
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to ten"}]}"#;
    let resp = h
        .post_openai("/openai/v1/chat/completions/", &jwt, body)
        .await;
    assert_eq!(resp.status(), 200);
    let got = String::from_utf8(read_all(resp).await.unwrap()).unwrap();
    assert!(
        !got.contains(r#""choices":[]"#),
        "the injected chunk is removed"
    );
    let seen = h.mock.last();
    assert_eq!(seen.target, "/v1/chat/completions");
    assert_eq!(seen.json()["stream_options"]["include_usage"], true);
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].endpoint.as_str(), rows[0].streamed),
        ("chat.completions", true)
    );
    assert_eq!(rows[0].usage(), (12, 0, 10, 0, "reported"));
}

#[tokio::test]
async fn escaped_stream_key_is_metered_as_a_stream() {
    let mut h = Harness::start().await;
    let full = fixture("openai/chat_stream_usage.sse");
    h.mock.push(Reply::sse(full.clone()).split_every(97));
    let jwt = h.token("escaper");
    let body = r#"{"mod\u0065l":"gpt-4o-mini","\u0073tream":true,"messages":[{"role":"user","content":"Count to ten"}]}"#;
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, body)
        .await;
    assert_eq!(resp.status(), 200);
    let got = String::from_utf8(read_all(resp).await.unwrap()).unwrap();
    let want: String = String::from_utf8(full)
        .unwrap()
        .split_inclusive("\n\n")
        .filter(|ev| !ev.contains(r#""choices":[]"#))
        .collect();
    assert_eq!(
        got, want,
        "the client gets the stream it asked for, without the usage chunk"
    );
    let upstream = h.mock.last().json();
    assert_eq!(upstream["stream"], true);
    assert_eq!(
        upstream["stream_options"],
        serde_json::json!({"include_usage": true}),
        "the upstream is asked for usage"
    );
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert!(r.streamed, "recorded as a stream");
    assert_eq!(r.endpoint, "chat.completions");
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(r.usage(), (12, 0, 10, 0, "reported"));
    assert_eq!(r.outcome, "complete");
}

#[tokio::test]
async fn escaped_stream_options_key_still_asks_for_usage() {
    let mut h = Harness::start().await;
    h.mock
        .push(Reply::sse(fixture("openai/chat_stream_usage.sse")));
    let jwt = h.token("options");
    let body = r#"{"model":"gpt-4o-mini","stream":true,"\u0073tream_options":{"include_usage":false},"messages":[]}"#;
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, body)
        .await;
    assert_eq!(resp.status(), 200);
    let got = String::from_utf8(read_all(resp).await.unwrap()).unwrap();
    assert!(!got.contains(r#""choices":[]"#));
    let seen = h.mock.last();
    let text = String::from_utf8(seen.body.clone()).unwrap();
    assert_eq!(
        text.matches("tream_options").count(),
        1,
        "one stream_options key: {text}"
    );
    assert_eq!(
        seen.json()["stream_options"],
        serde_json::json!({"include_usage": true})
    );
    h.stop().await;
    assert_eq!(h.rows()[0].usage(), (12, 0, 10, 0, "reported"));
}

#[tokio::test]
async fn duplicate_model_key_is_refused() {
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token("dupes");
    let cases = [
        (
            r#"{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}"#,
            "`model`",
        ),
        (
            r#"{"model":"gpt-4o","stream":false,"stream":true,"messages":[]}"#,
            "`stream`",
        ),
        (
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false,"include_usage":true},"messages":[]}"#,
            "`include_usage`",
        ),
        (
            r#"{"model":"gpt-4o","max_tokens":1,"m\u0061x_tokens":100000,"messages":[]}"#,
            "`max_tokens`",
        ),
    ];
    for (body, key) in cases {
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, body)
            .await;
        assert_eq!(resp.status(), 400, "{body}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "duplicate_key");
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["message"].as_str().unwrap().contains(key), "{v}");
    }
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            &jwt,
            r#"{"contents":[],"generationConfig":{"maxOutputTokens":1,"max_output_tokens":100000}}"#,
        )
        .await;
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(h.mock.hits(), 0, "never forwarded");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), cases.len() + 1);
    for r in &rows {
        assert_eq!(
            (
                r.status,
                r.outcome.as_str(),
                r.usage_source.as_str(),
                r.total_tokens
            ),
            (400, "refused_invalid_request", "none", 0)
        );
    }
    assert_eq!(rows[0].endpoint, "chat.completions");
    assert_eq!(rows[0].model, None, "a repeated model names no model");
    assert_eq!(
        (rows[4].endpoint.as_str(), rows[4].model.as_deref()),
        ("generateContent", Some("gemini-2.5-flash"))
    );
}

#[tokio::test]
async fn a_body_tollgate_cannot_read_is_refused_on_a_metered_endpoint() {
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token("gzipper");
    // A compressed body, a body with NaN, a stream flag that is a string.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut gz,
        br#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
    )
    .unwrap();
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    let resp = h
        .post_openai(
            "/openai/v1/chat/completions",
            &jwt,
            r#"{"model":"gpt-4o","stream":true,"temperature":NaN,"messages":[]}"#,
        )
        .await;
    assert_eq!(resp.status(), 400);
    let resp = h
        .post_openai(
            "/openai/v1/chat/completions",
            &jwt,
            r#"{"model":"gpt-4o","stream":"true","messages":[]}"#,
        )
        .await;
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_type");
    assert_eq!(h.mock.hits(), 0);
    // Endpoints Tollgate does not meter take whatever body they take.
    let resp = h
        .client
        .post(h.url("/openai/v1/audio/transcriptions"))
        .bearer_auth(&jwt)
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(h.mock.hits(), 1);
    h.stop().await;
    assert_eq!(h.rows().len(), 4);
}

#[tokio::test]
async fn unknown_endpoint_usage_is_metered() {
    let mut h = Harness::start().await;
    // An endpoint not in the table whose answer carries OpenAI usage (gpt-image-1 does)…
    h.mock.push(Reply::json(
        200,
        r#"{"created":1,"data":[{"b64_json":"aGVsbG8="}],"usage":{"input_tokens":50,"input_tokens_details":{"text_tokens":50,"image_tokens":0},"output_tokens":4160,"total_tokens":4210}}"#,
    ));
    // …a stored response fetched back (background mode)…
    h.mock
        .push(Reply::json(200, fixture("openai/responses.json")));
    // …a stream from an endpoint not in the table…
    h.mock
        .push(Reply::sse(fixture("openai/chat_stream_usage.sse")).split_every(50));
    // …Gemini usage on a method not in the table, as SSE.
    h.mock
        .push(Reply::sse(fixture("gemini/stream_sse.sse")).split_every(64));
    // An answer without usage is still recorded with none.
    h.mock
        .push(Reply::json(200, r#"{"object":"list","data":[]}"#));
    let jwt = h.token("unknown");
    let resp = h
        .post_openai(
            "/openai/v1/images/generations",
            &jwt,
            r#"{"model":"gpt-image-1","prompt":"a cat"}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = h
        .client
        .get(h.url("/openai/v1/responses/resp_123"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.text().await.unwrap().as_bytes(),
        fixture("openai/responses.json")
    );
    let resp = h
        .post_openai(
            "/openai/v1/chat/completions/extra",
            &jwt,
            r#"{"model":"gpt-4o-mini","messages":[]}"#,
        )
        .await;
    assert_eq!(
        read_all(resp).await.unwrap(),
        fixture("openai/chat_stream_usage.sse"),
        "forwarded untouched"
    );
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:futureGenerateContent?alt=sse",
            &jwt,
            GEMINI_BODY,
        )
        .await;
    read_all(resp).await.unwrap();
    let resp = h
        .client
        .get(h.url("/openai/v1/models"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    resp.bytes().await.unwrap();
    h.stop().await;
    let rows = h.rows();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.endpoint.as_str(), r.model.as_deref(), r.usage()))
        .collect();
    assert_eq!(
        got,
        [
            ("other", Some("gpt-image-1"), (50, 0, 4160, 0, "reported")),
            (
                "other",
                Some("gpt-4.1-2025-04-14"),
                (1328, 1152, 27, 0, "reported")
            ),
            (
                "other",
                Some("gpt-4o-mini-2024-07-18"),
                (12, 0, 10, 0, "reported")
            ),
            (
                "other",
                Some("gemini-2.5-flash"),
                (9, 0, 659, 612, "reported")
            ),
            ("other", None, (0, 0, 0, 0, "none")),
        ]
    );
    assert!(
        rows[3].cost_nano_usd.is_some_and(|c| c > 0),
        "priced like any call"
    );
}

#[tokio::test]
async fn unknown_endpoints_refuse_is_enforced() {
    let mut h = Harness::start_with(|c| {
        c.providers[0].unknown_endpoints = UnknownEndpoints::Refuse;
        c.providers[1].unknown_endpoints = UnknownEndpoints::Refuse;
    })
    .await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token("strict");
    let resp = h
        .post_openai(
            "/openai/v1/images/generations",
            &jwt,
            r#"{"model":"gpt-image-1","prompt":"a cat"}"#,
        )
        .await;
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": {
            "message": v["error"]["message"],
            "type": "invalid_request_error",
            "param": null,
            "code": "unknown_endpoint",
        }})
    );
    for (method, path) in [
        ("GET", "/openai/v1/models"),
        ("GET", "/openai/v1/chat/completions"),
        ("DELETE", "/openai/v1/files/file-abc"),
    ] {
        let resp = h
            .client
            .request(method.parse().unwrap(), h.url(path))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:batchGenerateContent",
            &jwt,
            GEMINI_BODY,
        )
        .await;
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], 404);
    assert_eq!(v["error"]["status"], "NOT_FOUND");
    assert_eq!(h.mock.hits(), 0, "refused before forwarding");
    // The endpoints of the table still work.
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
        .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(h.mock.hits(), 1);
    h.stop().await;
    let rows = h.rows();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.provider.as_str(),
                r.status,
                r.outcome.as_str(),
                r.total_tokens,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("openai", 404, "refused_unknown_endpoint", 0),
            ("openai", 404, "refused_unknown_endpoint", 0),
            ("openai", 404, "refused_unknown_endpoint", 0),
            ("openai", 404, "refused_unknown_endpoint", 0),
            ("gemini", 404, "refused_unknown_endpoint", 0),
            ("openai", 200, "complete", 1153),
        ]
    );
}

#[tokio::test]
async fn the_query_stays_as_it_came_when_the_path_is_normalised() {
    let mut h = Harness::start().await;
    h.mock
        .push(Reply::sse(fixture("gemini/stream_sse.sse")).split_every(40));
    let jwt = h.token("query");
    // The JWT in `?key=`, an encoded colon and a trailing slash: the path is normalised, the
    // query keeps `alt=sse` and loses `key`.
    let resp = h
        .client
        .post(h.url(&format!(
            "/gemini/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent/?alt=sse&key={jwt}&$x=a;b"
        )))
        .body(GEMINI_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        read_all(resp).await.unwrap(),
        fixture("gemini/stream_sse.sse")
    );
    assert_eq!(
        h.mock.last().target,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&$x=a;b"
    );
    assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        (
            rows[0].endpoint.as_str(),
            rows[0].streamed,
            rows[0].outcome.as_str()
        ),
        ("streamGenerateContent", true, "complete")
    );
    assert_eq!(rows[0].usage(), (9, 0, 659, 612, "reported"));
}
