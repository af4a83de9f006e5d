//! Gemini (Generative Language API) wire formats: generateContent, streamGenerateContent (SSE
//! with CRLF framing, or a JSON array written piece by piece), countTokens, embedContent,
//! batchEmbedContents, models, and the `{"error":{code,message,status}}` shape.

use std::fmt::Write as _;

use hyper::{Method, Response, StatusCode};
use serde_json::Value;

use crate::body::{FakeBody, Pieces};
use crate::text::{self, push_json_str};
use crate::{Call, Tokens, respond};

pub enum Endpoint {
    Generate,
    StreamSse,
    StreamArray,
    CountTokens,
    Embed,
    BatchEmbed,
}

const JSON: &str = "application/json; charset=UTF-8";
const SSE: &str = "text/event-stream";

/// Models listed by `GET /v1beta/models`.
const MODELS: [&str; 3] = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"];

fn output_cap(body: &Value) -> Option<u64> {
    body.get("generationConfig")
        .or_else(|| body.get("generation_config"))
        .and_then(|g| {
            g.get("maxOutputTokens")
                .or_else(|| g.get("max_output_tokens"))
        })
        .and_then(Value::as_u64)
}

fn finish_reason(t: &Tokens) -> &'static str {
    if t.capped { "MAX_TOKENS" } else { "STOP" }
}

/// `usageMetadata` after `candidates` content tokens so far (cumulative, as Gemini reports).
fn push_usage(out: &mut String, t: &Tokens, candidates: u64, details: bool) {
    let _ = write!(
        out,
        r#"{{"promptTokenCount":{},"candidatesTokenCount":{candidates},"totalTokenCount":{}"#,
        t.prompt,
        t.prompt + candidates + t.reasoning
    );
    if t.cached > 0 {
        let _ = write!(out, r#","cachedContentTokenCount":{}"#, t.cached);
    }
    if t.reasoning > 0 {
        let _ = write!(out, r#","thoughtsTokenCount":{}"#, t.reasoning);
    }
    if details {
        let _ = write!(
            out,
            r#","promptTokensDetails":[{{"modality":"TEXT","tokenCount":{}}}]"#,
            t.prompt
        );
    }
    out.push('}');
}

/// One `GenerateContentResponse`.
fn push_response(
    out: &mut String,
    call: &Call<'_>,
    t: &Tokens,
    text: &str,
    finish: Option<&str>,
    candidates: u64,
) {
    out.push_str(r#"{"candidates":[{"content":{"parts":[{"text":"#);
    push_json_str(out, text);
    out.push_str(r#"}],"role":"model"}"#);
    if let Some(reason) = finish {
        let _ = write!(out, r#","finishReason":"{reason}""#);
    }
    out.push_str(r#","index":0}],"usageMetadata":"#);
    push_usage(out, t, candidates, finish.is_some());
    out.push_str(r#","modelVersion":"#);
    push_json_str(out, call.model);
    let _ = write!(out, r#","responseId":"fake{}"}}"#, call.seq);
}

/// `models/{model}:generateContent`.
pub fn generate(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(call, output_cap(call.body));
    let answer = text::answer(t.content);
    let mut out = String::with_capacity(answer.len() + 500);
    push_response(
        &mut out,
        call,
        &t,
        &answer,
        Some(finish_reason(&t)),
        t.content,
    );
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

/// `models/{model}:streamGenerateContent`: one chunk per word, each with cumulative usage; the
/// last with `finishReason`. SSE (`data: …\r\n\r\n`) or a JSON array (`[{…}`, `\r\n,\r\n{…}`, `]`).
pub fn stream(call: &Call<'_>, sse: bool) -> Response<FakeBody> {
    let t = Tokens::new(call, output_cap(call.body));
    let n = t.content as usize;
    let mut p = Pieces::with_capacity(n * (call.model.len() + 260) + 200, n);
    for i in 0..t.content {
        if i > 0 {
            p.end_piece();
        }
        let (sep, word) = text::chunk_text(i);
        let last = i + 1 == t.content;
        p.buf.push_str(match (sse, i) {
            (true, _) => "data: ",
            (false, 0) => "[",
            (false, _) => "\r\n,\r\n",
        });
        let mut chunk_text = String::with_capacity(sep.len() + word.len());
        chunk_text.push_str(sep);
        chunk_text.push_str(word);
        push_response(
            &mut p.buf,
            call,
            &t,
            &chunk_text,
            last.then(|| finish_reason(&t)),
            i + 1,
        );
        if sse {
            p.buf.push_str("\r\n\r\n");
        }
    }
    if !sse {
        p.buf.push(']');
    }
    let content_type = if sse { SSE } else { JSON };
    respond(
        StatusCode::OK,
        content_type,
        p.into_body(call.knobs.chunk_delay(), call.knobs.cut_after),
    )
}

/// `models/{model}:countTokens`: the prompt count a `generateContent` with the same contents
/// would report.
pub fn count_tokens(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(call, None);
    let out = format!(
        r#"{{"totalTokens":{p},"promptTokensDetails":[{{"modality":"TEXT","tokenCount":{p}}}]}}"#,
        p = t.prompt
    );
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

fn push_values(out: &mut String, i: usize, dims: usize) {
    out.push_str(r#"{"values":["#);
    for j in 0..dims {
        if j > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", text::embedding_value(i, j));
    }
    out.push_str("]}");
}

fn dims(v: &Value) -> usize {
    v.get("outputDimensionality")
        .or_else(|| v.get("output_dimensionality"))
        .and_then(Value::as_u64)
        .unwrap_or(8)
        .clamp(1, 4096) as usize
}

fn push_embed_usage(out: &mut String, t: &Tokens) {
    let _ = write!(
        out,
        r#""usageMetadata":{{"promptTokenCount":{p},"totalTokenCount":{p}}}"#,
        p = t.prompt
    );
}

/// `models/{model}:embedContent`.
pub fn embed(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(call, None);
    let mut out = String::from(r#"{"embedding":"#);
    push_values(&mut out, 0, dims(call.body));
    out.push(',');
    push_embed_usage(&mut out, &t);
    out.push('}');
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

/// `models/{model}:batchEmbedContents`: one vector per `requests[]` entry.
pub fn batch_embed(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(call, None);
    let requests = call
        .body
        .get("requests")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut out = String::from(r#"{"embeddings":["#);
    for (i, r) in requests.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_values(&mut out, i, dims(r));
    }
    out.push_str("],");
    push_embed_usage(&mut out, &t);
    out.push('}');
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

fn push_model(out: &mut String, id: &str) {
    out.push_str(r#"{"name":"#);
    push_json_str(out, &format!("models/{id}"));
    out.push_str(r#","version":"001","displayName":"#);
    push_json_str(out, id);
    out.push_str(concat!(
        r#","inputTokenLimit":1048576,"outputTokenLimit":65536,"#,
        r#""supportedGenerationMethods":["generateContent","countTokens","embedContent","batchEmbedContents"]}"#
    ));
}

/// `GET /v1beta/models`.
pub fn models() -> Response<FakeBody> {
    let mut out = String::from(r#"{"models":["#);
    for (i, m) in MODELS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_model(&mut out, m);
    }
    out.push_str("]}");
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

/// `GET /v1beta/models/{model}`: any model exists.
pub fn model(id: &str) -> Response<FakeBody> {
    let mut out = String::new();
    push_model(&mut out, id);
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

/// Google's status name for an HTTP status.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// `{"error":{"code","message","status"}}`.
pub fn error(status: StatusCode, message: &str) -> Response<FakeBody> {
    let mut out = String::with_capacity(message.len() + 80);
    let _ = write!(out, r#"{{"error":{{"code":{},"message":"#, status.as_u16());
    push_json_str(&mut out, message);
    let _ = write!(out, r#","status":"{}"}}}}"#, status_name(status));
    respond(status, JSON, FakeBody::full(out))
}

pub fn not_found(method: &Method, path: &str) -> Response<FakeBody> {
    error(
        StatusCode::NOT_FOUND,
        &format!("{method} {path} is not served by fake-upstream"),
    )
}
