//! fake-upstream over real sockets: every endpoint answers parseable JSON or well-formed
//! streams with the documented usage, over HTTP/1.1 and h2c; keys and leaked JWTs are refused.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use tollgate_fake_upstream::{Defaults, Fake, Settings, serve};

const OPENAI_KEY: &str = "sk-fake-openai";
const GEMINI_KEY: &str = "AIza-fake-gemini";

async fn start() -> SocketAddr {
    start_with(false).await
}

async fn start_with(chunked_json: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = Fake::new(Settings {
        defaults: Defaults {
            chunks: 5,
            chunk_delay_ms: 0,
            head_delay_ms: 0,
        },
        expect_openai_key: Some(OPENAI_KEY.into()),
        expect_gemini_key: Some(GEMINI_KEY.into()),
        chunked_json,
    });
    tokio::spawn(serve(listener, fake));
    addr
}

struct Answer {
    status: StatusCode,
    content_type: String,
    content_length: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `data:` payloads of an SSE body (`\n\n` or `\r\n\r\n` framing), with their `event:`.
    fn sse(&self) -> Vec<(Option<String>, String)> {
        let normalized = self.body.replace("\r\n", "\n");
        assert!(
            normalized.ends_with("\n\n"),
            "SSE body must end with a blank line: {:?}",
            self.body
        );
        normalized
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|event| {
                let mut name = None;
                let mut data = None;
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(v.to_string());
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                (name, data.expect("every event has data"))
            })
            .collect()
    }
}

fn client(h2: bool) -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http()
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    send_with(&client(false), addr, method, path, headers, body).await
}

async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let resp = client
        .request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    let content_length = resp
        .headers()
        .get("content-length")
        .map(|v| v.to_str().expect("ascii").to_string());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        content_type,
        content_length,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

const OA: &[(&str, &str)] = &[("authorization", "Bearer sk-fake-openai")];
const GM: &[(&str, &str)] = &[("x-goog-api-key", "AIza-fake-gemini")];

fn chat_body(stream: bool, include_usage: bool) -> Value {
    let mut b = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three four"}]});
    if stream {
        b["stream"] = json!(true);
    }
    if include_usage {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

#[tokio::test]
async fn chat_json_has_usage() {
    let addr = start().await;
    let a = send(
        addr,
        "POST",
        "/v1/chat/completions",
        OA,
        Some(chat_body(false, false)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type.starts_with("application/json"));
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from fake-upstream: this answer"
    );
    assert_eq!(v["usage"]["prompt_tokens"], 7, "4 words + 3");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 12);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );
}

#[tokio::test]
async fn chat_stream_with_and_without_usage() {
    let addr = start().await;
    let a = send(
        addr,
        "POST",
        "/v1/chat/completions",
        OA,
        Some(chat_body(true, false)),
    )
    .await;
    assert!(a.content_type.starts_with("text/event-stream"));
    let events = a.sse();
    assert_eq!(
        events.len(),
        1 + 5 + 1 + 1,
        "role, 5 content, finish, [DONE]"
    );
    assert_eq!(events.last().expect("last").1, "[DONE]");
    for (_, data) in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(data).expect("chunk JSON");
        assert_eq!(v["object"], "chat.completion.chunk");
        assert!(
            v.get("usage").is_none(),
            "no usage field without include_usage"
        );
        assert_eq!(v["choices"].as_array().expect("choices").len(), 1);
    }

    let a = send(
        addr,
        "POST",
        "/v1/chat/completions",
        OA,
        Some(chat_body(true, true)),
    )
    .await;
    let events = a.sse();
    assert_eq!(events.len(), 1 + 5 + 1 + 1 + 1);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    for c in &chunks[..chunks.len() - 1] {
        assert!(
            c["usage"].is_null() && c.get("usage").is_some(),
            "earlier chunks carry usage:null"
        );
    }
    let usage_chunk = chunks.last().expect("usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 7);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from fake-upstream: this answer");
}

#[tokio::test]
async fn model_tokens_set_reasoning_cached_and_chunks() {
    let addr = start().await;
    let mut b = chat_body(false, false);
    b["model"] = json!("gpt-4o-mini-n2-r3-c4");
    let v = send(addr, "POST", "/v1/chat/completions", OA, Some(b))
        .await
        .json();
    assert_eq!(v["model"], "gpt-4o-mini-n2-r3-c4");
    assert_eq!(v["usage"]["completion_tokens"], 5, "2 chunks + 3 reasoning");
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        3
    );
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn responses_json_and_stream() {
    let addr = start().await;
    let body = json!({"model": "gpt-4o", "input": "a b", "instructions": "be nice"});
    let v = send(addr, "POST", "/v1/responses", OA, Some(body.clone()))
        .await
        .json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "Hello from fake-upstream: this answer"
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 12})
    );

    let mut sb = body;
    sb["stream"] = json!(true);
    let events = send(addr, "POST", "/v1/responses", OA, Some(sb))
        .await
        .sse();
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_deref().expect("event name"))
        .collect();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(["response.output_text.delta"; 5]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    for (i, (name, data)) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(data).expect("event JSON");
        assert_eq!(v["type"].as_str(), name.as_deref());
        assert_eq!(v["sequence_number"], i);
    }
    let done: Value = serde_json::from_str(&events.last().expect("completed").1).expect("JSON");
    assert_eq!(done["response"]["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn output_cap_truncates() {
    let addr = start().await;
    let body = json!({"model": "gpt-4o", "input": "a b", "max_output_tokens": 2, "stream": true});
    let events = send(addr, "POST", "/v1/responses", OA, Some(body))
        .await
        .sse();
    let last: Value = serde_json::from_str(&events.last().expect("last").1).expect("JSON");
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["usage"]["output_tokens"], 2);

    let mut b = chat_body(false, false);
    b["max_tokens"] = json!(3);
    let v = send(addr, "POST", "/v1/chat/completions", OA, Some(b))
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn embeddings_float_and_base64_agree() {
    let addr = start().await;
    let body = json!({"model": "text-embedding-3-small", "input": ["a b", "c"], "dimensions": 3});
    let v = send(addr, "POST", "/v1/embeddings", OA, Some(body.clone()))
        .await
        .json();
    assert_eq!(v["data"][1]["embedding"], json!([-0.4375, -0.375, -0.3125]));
    assert_eq!(v["usage"], json!({"prompt_tokens": 6, "total_tokens": 6}));
    let mut b64 = body;
    b64["encoding_format"] = json!("base64");
    let v = send(addr, "POST", "/v1/embeddings", OA, Some(b64))
        .await
        .json();
    // [-0.4375, -0.375, -0.3125] as little-endian f32.
    assert_eq!(v["data"][1]["embedding"], "AADgvgAAwL4AAKC+");
}

#[tokio::test]
async fn legacy_completions_and_models() {
    let addr = start().await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say it", "stream": true,
        "stream_options": {"include_usage": true}});
    let events = send(addr, "POST", "/v1/completions", OA, Some(body))
        .await
        .sse();
    assert_eq!(events.last().expect("done").1, "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2].1).expect("JSON");
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );
    let v = send(addr, "GET", "/v1/models", OA, None).await.json();
    assert_eq!(v["object"], "list");
    let v = send(addr, "GET", "/v1/models/gpt-4o", OA, None)
        .await
        .json();
    assert_eq!(v["id"], "gpt-4o");
}

fn gemini_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hello there world"}]}]})
}

#[tokio::test]
async fn gemini_generate_and_count() {
    let addr = start().await;
    for version in ["v1", "v1beta"] {
        let path = format!("/{version}/models/gemini-2.5-flash:generateContent");
        let v = send(addr, "POST", &path, GM, Some(gemini_body()))
            .await
            .json();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "Hello from fake-upstream: this answer"
        );
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 6);
        assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 5);
        assert_eq!(v["usageMetadata"]["totalTokenCount"], 11);
        assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    }
    let path = "/v1beta/models/gemini-2.5-flash:countTokens";
    let v = send(addr, "POST", path, GM, Some(gemini_body()))
        .await
        .json();
    assert_eq!(v["totalTokens"], 6);
}

#[tokio::test]
async fn gemini_streams_sse_and_array() {
    let addr = start().await;
    let path = "/v1beta/models/gemini-2.5-flash-r2:streamGenerateContent?alt=sse";
    let a = send(addr, "POST", path, GM, Some(gemini_body())).await;
    assert!(
        a.body.contains("\r\n\r\n") && !a.body.replace("\r\n", "").contains('\n'),
        "CRLF framing"
    );
    let chunks: Vec<Value> = a
        .sse()
        .iter()
        .map(|(_, d)| serde_json::from_str(d).expect("JSON"))
        .collect();
    assert_eq!(chunks.len(), 5);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(
            c["usageMetadata"]["candidatesTokenCount"],
            i + 1,
            "cumulative"
        );
        assert_eq!(c["usageMetadata"]["thoughtsTokenCount"], 2);
        assert_eq!(c["usageMetadata"]["totalTokenCount"], 6 + i + 1 + 2);
        assert_eq!(c["candidates"][0].get("finishReason").is_some(), i == 4);
    }

    let path = "/v1/models/gemini-2.5-flash:streamGenerateContent";
    let a = send(addr, "POST", path, GM, Some(gemini_body())).await;
    assert!(a.content_type.starts_with("application/json"));
    assert!(
        a.body.starts_with("[{") && a.body.ends_with("}]"),
        "{}",
        a.body
    );
    assert_eq!(
        a.body.matches("}\r\n,\r\n{").count(),
        4,
        "pieces joined by CRLF , CRLF"
    );
    let arr: Value = serde_json::from_str(&a.body).expect("the whole body is a JSON array");
    assert_eq!(arr.as_array().expect("array").len(), 5);
    assert_eq!(arr[4]["usageMetadata"]["totalTokenCount"], 11);
}

#[tokio::test]
async fn gemini_embeddings_and_models() {
    let addr = start().await;
    let body = json!({"content": {"parts": [{"text": "a b c"}]}, "outputDimensionality": 2});
    let v = send(
        addr,
        "POST",
        "/v1beta/models/gemini-embedding-001:embedContent",
        GM,
        Some(body),
    )
    .await
    .json();
    assert_eq!(v["embedding"]["values"], json!([-0.5, -0.4375]));
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 6);
    let body = json!({"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b c"}]}}]});
    let v = send(
        addr,
        "POST",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        GM,
        Some(body),
    )
    .await
    .json();
    assert_eq!(v["embeddings"].as_array().expect("array").len(), 2);
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 6);
    let v = send(addr, "GET", "/v1beta/models", GM, None).await.json();
    assert!(v["models"].as_array().expect("models").len() >= 2);
    let v = send(addr, "GET", "/v1/models", GM, None).await.json();
    assert!(
        v.get("models").is_some(),
        "/v1/models with a Gemini key is Gemini's list"
    );
}

#[tokio::test]
async fn keys_are_checked_and_leaks_counted() {
    let addr = start().await;
    let a = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &[],
        Some(chat_body(false, false)),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"]["code"], "invalid_api_key");
    let wrong = [("authorization", "Bearer sk-other")];
    assert_eq!(
        send(
            addr,
            "POST",
            "/v1/chat/completions",
            &wrong,
            Some(chat_body(false, false))
        )
        .await
        .status,
        401
    );
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let a = send(
        addr,
        "POST",
        path,
        &[("x-goog-api-key", "nope")],
        Some(gemini_body()),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"]["status"], "UNAUTHENTICATED");
    // The right key, but through ?key= instead of the header: still refused.
    let a = send(
        addr,
        "POST",
        &format!("{path}?key={GEMINI_KEY}"),
        &[],
        Some(gemini_body()),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig";
    let leaky = [("authorization", "Bearer sk-fake-openai"), ("x-user", jwt)];
    let a = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &leaky,
        Some(chat_body(false, false)),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["message"], "client credential leaked");
    let a = send(
        addr,
        "POST",
        &format!("{path}?key={jwt}"),
        GM,
        Some(gemini_body()),
    )
    .await;
    assert_eq!(a.json()["error"]["message"], "client credential leaked");
    let mut b = chat_body(false, false);
    b["user"] = json!(jwt);
    let a = send(addr, "POST", "/v1/chat/completions", OA, Some(b)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let stats = send(addr, "GET", "/__fake/stats", &[], None).await.json();
    assert_eq!(stats["requests"], 7);
    assert_eq!(stats["leaks"], 3);
    assert_eq!(stats["unauthorized"], 4);
    send(addr, "POST", "/__fake/reset", &[], None).await;
    let stats = send(addr, "GET", "/__fake/stats", &[], None).await.json();
    assert_eq!(
        (stats["requests"].as_u64(), stats["leaks"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn status_knob_answers_provider_errors() {
    let addr = start().await;
    let mut b = chat_body(false, false);
    b["model"] = json!("gpt-4o-e429");
    let a = send(addr, "POST", "/v1/chat/completions", OA, Some(b)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["error"]["code"], "rate_limit_exceeded");
    let a = send(
        addr,
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent?status=503",
        GM,
        Some(gemini_body()),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error"]["status"], "UNAVAILABLE");
}

#[tokio::test]
async fn h2c_and_keep_alive() {
    let addr = start().await;
    for h2 in [false, true] {
        let c = client(h2);
        for _ in 0..3 {
            let a = send_with(
                &c,
                addr,
                "POST",
                "/v1/chat/completions?chunks=2",
                OA,
                Some(chat_body(true, true)),
            )
            .await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.sse().len(), 6);
        }
    }
}

#[tokio::test]
async fn delays_pace_the_stream() {
    let addr = start().await;
    let started = Instant::now();
    let a = send(
        addr,
        "POST",
        "/v1/chat/completions?chunks=4&chunk_delay_ms=20&delay_ms=30",
        OA,
        Some(chat_body(true, false)),
    )
    .await;
    assert_eq!(a.sse().len(), 7);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(30 + 4 * 20), "took {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn cut_after_aborts_the_stream() {
    let addr = start().await;
    let req = Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/v1/chat/completions?cut_after=2&chunk_delay_ms=1"
        ))
        .header("authorization", "Bearer sk-fake-openai")
        .body(Full::new(Bytes::from(chat_body(true, true).to_string())))
        .expect("request");
    let resp = client(false).request(req).await.expect("head");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let failed = loop {
        match body.frame().await {
            None => break false,
            Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap_or_default()),
            Some(Err(_)) => break true,
        }
    };
    assert!(
        failed,
        "the client must see the stream fail, got {}",
        String::from_utf8_lossy(&got)
    );
    assert!(!String::from_utf8_lossy(&got).contains("[DONE]"));
}

#[tokio::test]
async fn whole_answers_carry_a_length_unless_chunked_json() {
    for (chunked, expect_length) in [(false, true), (true, false)] {
        let addr = start_with(chunked).await;
        let a = send(
            addr,
            "POST",
            "/v1/chat/completions",
            OA,
            Some(chat_body(false, false)),
        )
        .await;
        assert_eq!(
            a.content_length.is_some(),
            expect_length,
            "chunked_json = {chunked}"
        );
        assert_eq!(a.json()["usage"]["total_tokens"], 12);
        let a = send(
            addr,
            "POST",
            "/v1/chat/completions",
            OA,
            Some(chat_body(true, false)),
        )
        .await;
        assert!(a.content_length.is_none(), "streams never carry a length");
    }
}
