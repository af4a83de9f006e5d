//! Usage from every answer, through real sockets: each endpoint and stream form is served by the
//! fake upstream exactly as the provider sends it — split at every byte boundary (for one
//! fixture of each framing), in pieces of 1, 3 and 64 bytes and whole, with LF and CRLF, with
//! comments and keep-alives, gzip-compressed — and each call's row is checked exactly.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::Semaphore;

/// (input, cached, output, reasoning, usage_source)
type Expect = (i64, i64, i64, i64, &'static str);

#[derive(Clone)]
struct Case {
    path: &'static str,
    body: &'static str,
    gemini: bool,
    reply: Reply,
    /// What the client must receive (defaults to the upstream body as sent).
    expect_body: Option<Vec<u8>>,
    usage: Expect,
    endpoint: &'static str,
    model: &'static str,
    streamed: bool,
}

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Tell me a joke"}]}"#;
const CHAT_STREAM_USAGE: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Count to ten"}]}"#;
const CHAT_STREAM_BARE: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to ten"}]}"#;
const RESPONSES: &str = r#"{"model":"gpt-4.1","input":"Say hi"}"#;
const RESPONSES_STREAM: &str = r#"{"model":"gpt-4.1-mini","input":"Say hi","stream":true}"#;
const EMBED: &str = r#"{"model":"text-embedding-3-small","input":"The food was delicious"}"#;
const COMPLETIONS: &str =
    r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":16}"#;
const COMPLETIONS_STREAM: &str = r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","stream":true,"stream_options":{"include_usage":true}}"#;
const GEMINI_BODY: &str =
    r#"{"contents":[{"role":"user","parts":[{"text":"Explain how AI works"}]}]}"#;

fn openai(
    path: &'static str,
    body: &'static str,
    reply: Reply,
    usage: Expect,
    endpoint: &'static str,
    model: &'static str,
    streamed: bool,
) -> Case {
    Case {
        path,
        body,
        gemini: false,
        reply,
        expect_body: None,
        usage,
        endpoint,
        model,
        streamed,
    }
}

fn gemini(
    path: &'static str,
    reply: Reply,
    usage: Expect,
    endpoint: &'static str,
    model: &'static str,
    streamed: bool,
) -> Case {
    Case {
        path,
        body: GEMINI_BODY,
        gemini: true,
        reply,
        expect_body: None,
        usage,
        endpoint,
        model,
        streamed,
    }
}

/// Run every case against one gateway, `parallel` at a time, and check the client's bytes and
/// each call's row.
async fn run_cases(cases: Vec<Case>, parallel: usize) {
    let mut h = Harness::start().await;
    let jwt = Arc::new(h.token("meter-user"));
    let sem = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::new();
    // Replies are matched to requests by the order the mock receives them, so each case gets
    // its own mock queue slot through a dedicated request id checked below.
    for (i, case) in cases.iter().enumerate() {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        let client = h.client.clone();
        let url = h.url(case.path);
        let jwt = Arc::clone(&jwt);
        let case = case.clone();
        let mock = h.mock.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            mock.push_for(&format!("case-{i}"), case.reply.clone());
            let mut req = client
                .post(url)
                .header("x-request-id", format!("case-{i}"))
                .header("content-type", "application/json")
                .body(case.body);
            req = if case.gemini {
                req.header("x-goog-api-key", jwt.as_str())
            } else {
                req.bearer_auth(jwt.as_str())
            };
            let resp = req.send().await.unwrap();
            let got = read_all(resp)
                .await
                .unwrap_or_else(|e| panic!("case {i} ({}): body failed: {e}", case.path));
            let want = case
                .expect_body
                .clone()
                .unwrap_or_else(|| case.reply.pieces.concat());
            assert!(
                got == want,
                "case {i} ({}): the client got different bytes\n got: {:?}\nwant: {:?}",
                case.path,
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), cases.len(), "one row per call");
    assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
    for row in rows {
        let i: usize = row
            .request_id
            .strip_prefix("case-")
            .unwrap()
            .parse()
            .unwrap();
        let c = &cases[i];
        assert_eq!(row.usage(), c.usage, "case {i} ({}, {:?})", c.path, row);
        assert_eq!(
            row.total_tokens,
            c.usage.0 + c.usage.2,
            "case {i}: total = input + output"
        );
        assert_eq!(
            (
                row.endpoint.as_str(),
                row.model.as_deref(),
                row.streamed,
                row.status
            ),
            (c.endpoint, Some(c.model), c.streamed, 200),
            "case {i} ({})",
            c.path
        );
        assert_eq!(
            (row.user_id.as_str(), row.outcome.as_str()),
            ("meter-user", "complete"),
            "case {i}"
        );
        assert_eq!(row.provider, if c.gemini { "gemini" } else { "openai" });
    }
}

/// Every fixture in every piece size, with `transform` applied to the body first.
fn all_fixtures(pieces: usize, transform: fn(Vec<u8>) -> Vec<u8>) -> Vec<Case> {
    let j = |f: &str| Reply::json(200, transform(fixture(f))).split_every(pieces);
    let s = |f: &str| Reply::sse(transform(fixture(f))).split_every(pieces);
    let a = |f: &str| Reply::json_stream(transform(fixture(f))).split_every(pieces);
    vec![
        openai(
            "/openai/v1/chat/completions",
            CHAT,
            j("openai/chat.json"),
            (1117, 1024, 36, 0, "reported"),
            "chat.completions",
            "gpt-4o-2024-08-06",
            false,
        ),
        openai(
            "/openai/v1/chat/completions",
            CHAT_STREAM_USAGE,
            s("openai/chat_stream_usage.sse"),
            (12, 0, 10, 0, "reported"),
            "chat.completions",
            "gpt-4o-mini-2024-07-18",
            true,
        ),
        openai(
            "/openai/v1/chat/completions",
            CHAT_STREAM_USAGE,
            s("openai/chat_stream_tool_usage.sse"),
            (2231, 1920, 219, 192, "reported"),
            "chat.completions",
            "o4-mini-2025-04-16",
            true,
        ),
        openai(
            "/openai/v1/responses",
            RESPONSES,
            j("openai/responses.json"),
            (1328, 1152, 27, 0, "reported"),
            "responses",
            "gpt-4.1-2025-04-14",
            false,
        ),
        openai(
            "/openai/v1/responses",
            RESPONSES_STREAM,
            s("openai/responses_stream.sse"),
            (37, 0, 15, 0, "reported"),
            "responses",
            "gpt-4.1-mini-2025-04-14",
            true,
        ),
        openai(
            "/openai/v1/responses",
            RESPONSES_STREAM,
            s("openai/responses_stream_incomplete.sse"),
            (24, 0, 16, 10, "reported"),
            "responses",
            "o4-mini-2025-04-16",
            true,
        ),
        openai(
            "/openai/v1/embeddings",
            EMBED,
            j("openai/embeddings.json"),
            (8, 0, 0, 0, "reported"),
            "embeddings",
            "text-embedding-3-small",
            false,
        ),
        openai(
            "/openai/v1/completions",
            COMPLETIONS,
            j("openai/completions.json"),
            (5, 0, 12, 0, "reported"),
            "completions",
            "gpt-3.5-turbo-instruct:20230824-v2",
            false,
        ),
        openai(
            "/openai/v1/completions",
            COMPLETIONS_STREAM,
            s("openai/completions_stream_usage.sse"),
            (7, 0, 14, 0, "reported"),
            "completions",
            "gpt-3.5-turbo-instruct:20230824-v2",
            true,
        ),
        gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            j("gemini/generate_content.json"),
            (2145, 2048, 589, 531, "reported"),
            "generateContent",
            "gemini-2.5-flash",
            false,
        ),
        gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            s("gemini/stream_sse.sse"),
            (9, 0, 659, 612, "reported"),
            "streamGenerateContent",
            "gemini-2.5-flash",
            true,
        ),
        gemini(
            "/gemini/v1/models/gemini-2.0-flash:streamGenerateContent",
            a("gemini/stream_array.json"),
            (11, 0, 22, 0, "reported"),
            "streamGenerateContent",
            "gemini-2.0-flash",
            true,
        ),
        gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:countTokens",
            j("gemini/count_tokens.json"),
            (0, 0, 0, 0, "none"),
            "countTokens",
            "gemini-2.5-flash",
            false,
        ),
    ]
}

fn same(v: Vec<u8>) -> Vec<u8> {
    v
}

/// LF line ends → CRLF (Gemini's fixtures already use CRLF; OpenAI's use LF).
fn crlf(v: Vec<u8>) -> Vec<u8> {
    let s = String::from_utf8(v).unwrap().replace("\r\n", "\n");
    s.replace('\n', "\r\n").into_bytes()
}

/// CRLF → LF.
fn lf(v: Vec<u8>) -> Vec<u8> {
    String::from_utf8(v)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

/// SSE comments and keep-alive blank lines between events; JSON bodies untouched.
fn with_comments(v: Vec<u8>) -> Vec<u8> {
    let s = String::from_utf8(v).unwrap();
    if !s.starts_with("data:") && !s.starts_with("event:") {
        return s.into_bytes();
    }
    let nl = if s.contains("\r\n") { "\r\n" } else { "\n" };
    let sep = format!("{nl}{nl}");
    let mut out = format!(": OPENROUTER PROCESSING{sep}");
    for ev in s.split_inclusive(sep.as_str()) {
        out.push_str(ev);
        out.push_str(&format!(":keep-alive{nl}{nl}"));
    }
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_whole_and_in_pieces_of_1_3_and_64_bytes() {
    let mut cases = Vec::new();
    for pieces in [usize::MAX, 1, 3, 64] {
        cases.extend(all_fixtures(pieces, same));
    }
    run_cases(cases, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_with_crlf_lf_and_comments() {
    let mut cases = Vec::new();
    for t in [crlf as fn(Vec<u8>) -> Vec<u8>, lf, with_comments] {
        cases.extend(all_fixtures(7, t));
        cases.extend(all_fixtures(usize::MAX, t));
    }
    run_cases(cases, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_answers_are_read_and_forwarded_compressed() {
    let cases: Vec<Case> = all_fixtures(usize::MAX, same)
        .into_iter()
        .map(|mut c| {
            c.reply = c.reply.gzip().split_every(50);
            c
        })
        .collect();
    run_cases(cases, 8).await;
}

/// One fixture of each framing, split in two at every byte boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_split_at_every_byte_boundary() {
    let mut cases = Vec::new();
    for base in all_fixtures(usize::MAX, same) {
        let len = base.reply.pieces.concat().len();
        let every = matches!(base.endpoint, "streamGenerateContent")
            || base.body == CHAT_STREAM_USAGE && base.model.starts_with("gpt-4o-mini");
        if !every {
            continue;
        }
        for at in 1..len {
            let mut c = base.clone();
            c.reply = c.reply.split_at(&[at]);
            cases.push(c);
        }
    }
    assert!(cases.len() > 5000, "{}", cases.len());
    run_cases(cases, 32).await;
}

/// Tollgate adds `stream_options.include_usage` upstream when a streaming chat request lacks
/// it, reads the usage chunk, and removes exactly that chunk from what the client receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_usage_chunk_is_read_and_removed_for_the_client() {
    let full = fixture("openai/chat_stream_usage.sse");
    let text = String::from_utf8(full.clone()).unwrap();
    let expect: String = text
        .split_inclusive("\n\n")
        .filter(|ev| !ev.contains(r#""choices":[]"#))
        .collect();
    assert!(expect.len() < text.len());
    let mut cases = Vec::new();
    for pieces in [usize::MAX, 1, 3, 64, 100] {
        let mut c = openai(
            "/openai/v1/chat/completions",
            CHAT_STREAM_BARE,
            Reply::sse(full.clone()).split_every(pieces),
            (12, 0, 10, 0, "reported"),
            "chat.completions",
            "gpt-4o-mini-2024-07-18",
            true,
        );
        c.expect_body = Some(expect.clone().into_bytes());
        cases.push(c);
    }
    // And split at every byte.
    for at in 1..full.len() {
        let mut c = openai(
            "/openai/v1/chat/completions",
            CHAT_STREAM_BARE,
            Reply::sse(full.clone()).split_at(&[at]),
            (12, 0, 10, 0, "reported"),
            "chat.completions",
            "gpt-4o-mini-2024-07-18",
            true,
        );
        c.expect_body = Some(expect.clone().into_bytes());
        cases.push(c);
    }
    run_cases(cases, 32).await;
}

#[tokio::test]
async fn the_upstream_is_asked_for_usage_and_identity_encoding() {
    let h = Harness::start().await;
    h.mock
        .push(Reply::sse(fixture("openai/chat_stream_usage.sse")));
    let jwt = h.token("inject");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM_BARE)
        .await;
    read_all(resp).await.unwrap();
    let seen = h.mock.last();
    let v = seen.json();
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["messages"][0]["content"], "Count to ten");
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
}

/// Screenshots: multi-megabyte base64 images pass through byte for byte and the prompt estimate
/// is not inflated by them.
#[tokio::test]
async fn screenshot_requests_pass_through_intact() {
    let mut h = Harness::start().await;
    let image: String = (0..3_000_000)
        .map(|i| b"ABCDEFGHabcdefgh0123456789+/"[i % 28] as char)
        .collect();
    let chat = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":[{{"type":"text","text":"What is on my screen?"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{image}"}}}}]}}]}}"#
    );
    let gem = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"What is on my screen?"}},{{"inlineData":{{"mimeType":"image/png","data":"{image}"}}}}]}}]}}"#
    );
    h.mock.push(Reply::json(200, fixture("openai/chat.json")));
    h.mock
        .push(Reply::json(200, fixture("gemini/generate_content.json")));
    let jwt = h.token("screens");
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .body(chat.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = h
        .client
        .post(h.url("/gemini/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", &jwt)
        .body(gem.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let seen = h.mock.seen();
    assert!(
        seen[0].body == chat.as_bytes(),
        "the chat screenshot arrives byte for byte"
    );
    assert!(
        seen[1].body == gem.as_bytes(),
        "the Gemini screenshot arrives byte for byte"
    );
    h.stop().await;
    assert_eq!(h.rows().len(), 2);
}
