//! OpenAI wire formats: chat completions, Responses, embeddings, legacy completions, models,
//! and the `{"error":{message,type,param,code}}` shape.

use std::fmt::Write as _;

use hyper::{Method, Response, StatusCode};
use serde_json::Value;

use crate::body::{FakeBody, Pieces};
use crate::text::{self, push_json_str};
use crate::{Call, Tokens, respond};

pub enum Endpoint {
    Chat,
    Responses,
    Embeddings,
    Completions,
}

const CREATED: u64 = 1_700_000_000;
const JSON: &str = "application/json";
const SSE: &str = "text/event-stream; charset=utf-8";

/// Models listed by `GET /v1/models`.
const MODELS: [&str; 6] = [
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-nano",
    "o4-mini",
    "text-embedding-3-small",
    "gpt-3.5-turbo-instruct",
];

fn flag(body: &Value, a: &str, b: &str) -> bool {
    body.get(a).and_then(|v| v.get(b)).and_then(Value::as_bool) == Some(true)
}

fn stream_requested(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool) == Some(true)
}

fn cap(body: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

fn push_usage(out: &mut String, t: &Tokens) {
    let _ = write!(
        out,
        concat!(
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"#,
            r#""prompt_tokens_details":{{"cached_tokens":{},"audio_tokens":0}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":{},"audio_tokens":0,"#,
            r#""accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#
        ),
        t.prompt,
        t.completion(),
        t.total(),
        t.cached,
        t.reasoning
    );
}

fn finish_reason(t: &Tokens) -> &'static str {
    if t.capped { "length" } else { "stop" }
}

// === chat completions ===

/// `POST /v1/chat/completions`, JSON or SSE.
pub fn chat(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(
        call,
        cap(call.body, &["max_completion_tokens", "max_tokens"]),
    );
    if stream_requested(call.body) {
        return chat_stream(call, &t, flag(call.body, "stream_options", "include_usage"));
    }
    let answer = text::answer(t.content);
    let mut out = String::with_capacity(answer.len() + 700);
    let _ = write!(
        out,
        r#"{{"id":"chatcmpl-fake{}","object":"chat.completion","created":{CREATED},"model":"#,
        call.seq
    );
    push_json_str(&mut out, call.model);
    out.push_str(r#","choices":[{"index":0,"message":{"role":"assistant","content":"#);
    push_json_str(&mut out, &answer);
    let _ = write!(
        out,
        r#","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"{}"}}],"usage":"#,
        finish_reason(&t)
    );
    push_usage(&mut out, &t);
    out.push_str(r#","service_tier":"default","system_fingerprint":"fp_fake"}"#);
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

fn chat_stream(call: &Call<'_>, t: &Tokens, include_usage: bool) -> Response<FakeBody> {
    let mut prefix = String::with_capacity(200);
    let _ = write!(
        prefix,
        r#"data: {{"id":"chatcmpl-fake{}","object":"chat.completion.chunk","created":{CREATED},"model":"#,
        call.seq
    );
    push_json_str(&mut prefix, call.model);
    prefix.push_str(r#","service_tier":"default","system_fingerprint":"fp_fake","choices":["#);
    // Every chunk carries `"usage":null` when usage was asked for, as OpenAI does.
    let suffix = if include_usage {
        "],\"usage\":null}\n\n"
    } else {
        "]}\n\n"
    };

    let n = t.content as usize;
    let mut p = Pieces::with_capacity((prefix.len() + suffix.len() + 80) * (n + 4) + 400, n + 1);
    let b = &mut p;
    b.buf.push_str(&prefix);
    b.buf.push_str(r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#);
    b.buf.push_str(suffix);
    for i in 0..t.content {
        b.end_piece();
        let (sep, word) = text::chunk_text(i);
        b.buf.push_str(&prefix);
        let _ = write!(
            b.buf,
            r#"{{"index":0,"delta":{{"content":"{sep}{word}"}},"logprobs":null,"finish_reason":null}}"#
        );
        b.buf.push_str(suffix);
    }
    b.buf.push_str(&prefix);
    let _ = write!(
        b.buf,
        r#"{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{}"}}"#,
        finish_reason(t)
    );
    b.buf.push_str(suffix);
    if include_usage {
        b.buf.push_str(&prefix);
        b.buf.push_str("],\"usage\":");
        push_usage(&mut b.buf, t);
        b.buf.push_str("}\n\n");
    }
    b.buf.push_str("data: [DONE]\n\n");
    respond(
        StatusCode::OK,
        SSE,
        p.into_body(call.knobs.chunk_delay(), call.knobs.cut_after),
    )
}

// === Responses API ===

fn push_response_usage(out: &mut String, t: &Tokens) {
    let _ = write!(
        out,
        concat!(
            r#"{{"input_tokens":{},"input_tokens_details":{{"cached_tokens":{}}},"#,
            r#""output_tokens":{},"output_tokens_details":{{"reasoning_tokens":{}}},"total_tokens":{}}}"#
        ),
        t.prompt,
        t.cached,
        t.completion(),
        t.reasoning,
        t.total()
    );
}

/// The output message item; `text` None = in progress with no content yet.
fn push_message(out: &mut String, seq: u64, text: Option<&str>) {
    let _ = write!(out, r#"{{"id":"msg_fake{seq}","type":"message","status":"#);
    match text {
        None => out.push_str(r#""in_progress","content":[],"role":"assistant"}"#),
        Some(text) => {
            out.push_str(r#""completed","content":["#);
            push_output_text(out, text);
            out.push_str(r#"],"role":"assistant"}"#);
        }
    }
}

fn push_output_text(out: &mut String, text: &str) {
    out.push_str(r#"{"type":"output_text","annotations":[],"logprobs":[],"text":"#);
    push_json_str(out, text);
    out.push('}');
}

/// The response object. `done` None = in progress (no output, no usage).
fn push_response(out: &mut String, call: &Call<'_>, t: &Tokens, done: Option<&str>) {
    let status = match (done, t.capped) {
        (None, _) => "in_progress",
        (Some(_), false) => "completed",
        (Some(_), true) => "incomplete",
    };
    let _ = write!(
        out,
        r#"{{"id":"resp_fake{}","object":"response","created_at":{CREATED},"status":"{status}","background":false,"error":null,"incomplete_details":"#,
        call.seq
    );
    if done.is_some() && t.capped {
        out.push_str(r#"{"reason":"max_output_tokens"}"#);
    } else {
        out.push_str("null");
    }
    out.push_str(r#","instructions":null,"max_output_tokens":"#);
    match cap(call.body, &["max_output_tokens"]) {
        Some(c) => {
            let _ = write!(out, "{c}");
        }
        None => out.push_str("null"),
    }
    out.push_str(r#","model":"#);
    push_json_str(out, call.model);
    out.push_str(r#","output":["#);
    if let Some(text) = done {
        push_message(out, call.seq, Some(text));
    }
    out.push_str(concat!(
        r#"],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"#,
        r#""service_tier":"default","store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"#,
        r#""tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":"#
    ));
    if done.is_some() {
        push_response_usage(out, t);
    } else {
        out.push_str("null");
    }
    out.push_str(r#","user":null,"metadata":{}}"#);
}

/// `POST /v1/responses`, JSON or SSE (`event:` + `data:` lines).
pub fn responses(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(call, cap(call.body, &["max_output_tokens"]));
    let answer = text::answer(t.content);
    if !stream_requested(call.body) {
        let mut out = String::with_capacity(answer.len() + 1000);
        push_response(&mut out, call, &t, Some(&answer));
        return respond(StatusCode::OK, JSON, FakeBody::full(out));
    }

    let n = t.content as usize;
    let mut p = Pieces::with_capacity(220 * n + 3 * answer.len() + 5000, n + 1);
    let b = &mut p;
    let mut sn = 0u64;
    let mut event = |b: &mut Pieces, name: &str| {
        let _ = write!(
            b.buf,
            "event: {name}\ndata: {{\"type\":\"{name}\",\"sequence_number\":{sn}"
        );
        sn += 1;
    };
    for name in ["response.created", "response.in_progress"] {
        event(b, name);
        b.buf.push_str(r#","response":"#);
        push_response(&mut b.buf, call, &t, None);
        b.buf.push_str("}\n\n");
    }
    event(b, "response.output_item.added");
    b.buf.push_str(r#","output_index":0,"item":"#);
    push_message(&mut b.buf, call.seq, None);
    b.buf.push_str("}\n\n");
    event(b, "response.content_part.added");
    let _ = write!(
        b.buf,
        r#","item_id":"msg_fake{}","output_index":0,"content_index":0,"part":"#,
        call.seq
    );
    push_output_text(&mut b.buf, "");
    b.buf.push_str("}\n\n");
    for i in 0..t.content {
        b.end_piece();
        let (sep, word) = text::chunk_text(i);
        event(b, "response.output_text.delta");
        let _ = write!(
            b.buf,
            r#","item_id":"msg_fake{}","output_index":0,"content_index":0,"delta":"{sep}{word}","logprobs":[]}}"#,
            call.seq
        );
        b.buf.push_str("\n\n");
    }
    event(b, "response.output_text.done");
    let _ = write!(
        b.buf,
        r#","item_id":"msg_fake{}","output_index":0,"content_index":0,"text":"#,
        call.seq
    );
    push_json_str(&mut b.buf, &answer);
    b.buf.push_str(",\"logprobs\":[]}\n\n");
    event(b, "response.content_part.done");
    let _ = write!(
        b.buf,
        r#","item_id":"msg_fake{}","output_index":0,"content_index":0,"part":"#,
        call.seq
    );
    push_output_text(&mut b.buf, &answer);
    b.buf.push_str("}\n\n");
    event(b, "response.output_item.done");
    b.buf.push_str(r#","output_index":0,"item":"#);
    push_message(&mut b.buf, call.seq, Some(&answer));
    b.buf.push_str("}\n\n");
    event(
        b,
        if t.capped {
            "response.incomplete"
        } else {
            "response.completed"
        },
    );
    b.buf.push_str(r#","response":"#);
    push_response(&mut b.buf, call, &t, Some(&answer));
    b.buf.push_str("}\n\n");
    respond(
        StatusCode::OK,
        SSE,
        p.into_body(call.knobs.chunk_delay(), call.knobs.cut_after),
    )
}

// === embeddings ===

/// How many vectors an embeddings `input` asks for.
fn input_count(input: Option<&Value>) -> usize {
    match input {
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_number) => 1,
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    }
}

/// `POST /v1/embeddings`: `encoding_format` `float` (default) or `base64` (little-endian f32).
pub fn embeddings(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(call, None);
    let count = input_count(call.body.get("input"));
    let dims = call
        .body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8)
        .clamp(1, 4096) as usize;
    let base64 = call.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut out = String::with_capacity(count * (dims * 8 + 60) + 200);
    out.push_str(r#"{"object":"list","data":["#);
    let mut raw = Vec::with_capacity(dims * 4);
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"object":"embedding","index":{i},"embedding":"#);
        if base64 {
            raw.clear();
            for j in 0..dims {
                raw.extend_from_slice(&text::embedding_value(i, j).to_le_bytes());
            }
            out.push('"');
            out.push_str(&text::base64(&raw));
            out.push('"');
        } else {
            out.push('[');
            for j in 0..dims {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}", text::embedding_value(i, j));
            }
            out.push(']');
        }
        out.push('}');
    }
    out.push_str(r#"],"model":"#);
    push_json_str(&mut out, call.model);
    let _ = write!(
        out,
        r#","usage":{{"prompt_tokens":{p},"total_tokens":{p}}}}}"#,
        p = t.prompt
    );
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

// === legacy completions ===

/// `POST /v1/completions`, JSON or SSE.
pub fn completions(call: &Call<'_>) -> Response<FakeBody> {
    let t = Tokens::new(call, cap(call.body, &["max_tokens"]));
    let legacy_usage = |out: &mut String| {
        let _ = write!(
            out,
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
            t.prompt,
            t.completion(),
            t.total()
        );
    };
    if !stream_requested(call.body) {
        let answer = text::answer(t.content);
        let mut out = String::with_capacity(answer.len() + 400);
        let _ = write!(
            out,
            r#"{{"id":"cmpl-fake{}","object":"text_completion","created":{CREATED},"model":"#,
            call.seq
        );
        push_json_str(&mut out, call.model);
        out.push_str(r#","choices":[{"text":"#);
        push_json_str(&mut out, &answer);
        let _ = write!(
            out,
            r#","index":0,"logprobs":null,"finish_reason":"{}"}}],"usage":"#,
            finish_reason(&t)
        );
        legacy_usage(&mut out);
        out.push_str(r#","system_fingerprint":"fp_fake"}"#);
        return respond(StatusCode::OK, JSON, FakeBody::full(out));
    }
    let include_usage = flag(call.body, "stream_options", "include_usage");
    let mut prefix = String::with_capacity(160);
    let _ = write!(
        prefix,
        r#"data: {{"id":"cmpl-fake{}","object":"text_completion","created":{CREATED},"model":"#,
        call.seq
    );
    push_json_str(&mut prefix, call.model);
    prefix.push_str(r#","system_fingerprint":"fp_fake","choices":["#);
    let suffix = if include_usage {
        "],\"usage\":null}\n\n"
    } else {
        "]}\n\n"
    };
    let n = t.content as usize;
    let mut p = Pieces::with_capacity((prefix.len() + 100) * (n + 3) + 300, n + 1);
    for i in 0..t.content {
        if i > 0 {
            p.end_piece();
        }
        let (sep, word) = text::chunk_text(i);
        p.buf.push_str(&prefix);
        let _ = write!(
            p.buf,
            r#"{{"text":"{sep}{word}","index":0,"logprobs":null,"finish_reason":null}}"#
        );
        p.buf.push_str(suffix);
    }
    p.buf.push_str(&prefix);
    let _ = write!(
        p.buf,
        r#"{{"text":"","index":0,"logprobs":null,"finish_reason":"{}"}}"#,
        finish_reason(&t)
    );
    p.buf.push_str(suffix);
    if include_usage {
        p.buf.push_str(&prefix);
        p.buf.push_str("],\"usage\":");
        legacy_usage(&mut p.buf);
        p.buf.push_str("}\n\n");
    }
    p.buf.push_str("data: [DONE]\n\n");
    respond(
        StatusCode::OK,
        SSE,
        p.into_body(call.knobs.chunk_delay(), call.knobs.cut_after),
    )
}

// === models ===

fn push_model(out: &mut String, id: &str) {
    out.push_str(r#"{"id":"#);
    push_json_str(out, id);
    let _ = write!(
        out,
        r#","object":"model","created":{CREATED},"owned_by":"fake-upstream"}}"#
    );
}

/// `GET /v1/models`.
pub fn models() -> Response<FakeBody> {
    let mut out = String::from(r#"{"object":"list","data":["#);
    for (i, m) in MODELS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_model(&mut out, m);
    }
    out.push_str("]}");
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

/// `GET /v1/models/{id}`: any id exists.
pub fn model(id: &str) -> Response<FakeBody> {
    let mut out = String::new();
    push_model(&mut out, id);
    respond(StatusCode::OK, JSON, FakeBody::full(out))
}

// === errors ===

/// OpenAI's `type` and `code` for a status.
pub fn error_kind(status: StatusCode) -> (&'static str, Option<&'static str>) {
    match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
        ),
        404 => ("invalid_request_error", None),
        429 => ("requests", Some("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

/// `{"error":{"message","type","param","code"}}`.
pub fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<FakeBody> {
    let mut out = String::with_capacity(message.len() + 100);
    out.push_str(r#"{"error":{"message":"#);
    push_json_str(&mut out, message);
    out.push_str(r#","type":"#);
    push_json_str(&mut out, kind);
    out.push_str(r#","param":null,"code":"#);
    match code {
        Some(c) => push_json_str(&mut out, c),
        None => out.push_str("null"),
    }
    out.push_str("}}");
    respond(status, JSON, FakeBody::full(out))
}

pub fn not_found(method: &Method, path: &str) -> Response<FakeBody> {
    error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {path}) (fake-upstream)"),
        "invalid_request_error",
        None,
    )
}
