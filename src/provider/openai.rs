//! OpenAI: what a request to the REST API says (endpoint, model, stream, output cap, prompt
//! size), the one rewrite Tollgate makes (`stream_options.include_usage` on chat and legacy
//! completion streams), and where usage sits in answers — JSON bodies and SSE streams of chat
//! completions, legacy completions, embeddings and the Responses API.
//!
//! Everything here is a pure function of bytes: no sockets, no store, no clock. Request bodies
//! are read with one `memchr`-driven pass ([`json::scan_body`]) rather than a parse into a tree,
//! since a request with screenshots can be many megabytes; answers are read with targeted key
//! searches and only the usage object is ever deserialized.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem::{Finder, FinderRev};

use super::dialect::{Dialect, Extract, Verdict};
use super::json;
use super::{BodyError, Endpoint, Refused, RequestInfo, Usage};
use crate::stream::SseEvent;

/// The endpoint a request targets. `rest` is the path after the provider prefix, with or
/// without the `/v1` that the SDKs put in their base URL, as [`super::normalize_path`] left it:
/// it is matched exactly, and it is exactly what is forwarded.
pub fn endpoint(method: &http::Method, rest: &str) -> Endpoint {
    if method != http::Method::POST {
        return Endpoint::Other;
    }
    let path = rest.strip_prefix("/v1").unwrap_or(rest);
    match path {
        "/chat/completions" => Endpoint::ChatCompletions,
        "/responses" => Endpoint::Responses,
        "/embeddings" => Endpoint::Embeddings,
        "/completions" => Endpoint::Completions,
        _ => Endpoint::Other,
    }
}

/// OpenAI's [`Dialect`]: requests as [`inspect`] reads them; answers as JSON bodies or SSE
/// streams, never JSON arrays.
#[derive(Debug)]
pub(crate) struct Openai;

impl Dialect for Openai {
    fn endpoint(&self, method: &http::Method, rest: &str) -> Endpoint {
        endpoint(method, rest)
    }

    fn inspect(
        &self,
        method: &http::Method,
        rest: &str,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<(RequestInfo, Option<Bytes>), Refused> {
        inspect(method, rest, query, body)
    }

    fn streams_json_array(&self, _info: &RequestInfo) -> bool {
        false
    }

    fn sse_event(&self, endpoint: Endpoint, ev: &SseEvent<'_>, x: &mut Extract) -> Verdict {
        sse_event(endpoint, ev, x)
    }

    fn array_element(&self, _endpoint: Endpoint, _element: &[u8], _x: &mut Extract) {}

    fn json_body(&self, endpoint: Endpoint, head: &[u8], tail: &[u8], x: &mut Extract) {
        json_body(endpoint, head, tail, x);
    }
}

/// Top-level request keys read by [`inspect`], by index.
const REQUEST_KEYS: [&[u8]; 8] = [
    b"model",
    b"stream",
    b"stream_options",
    b"max_completion_tokens",
    b"max_tokens",
    b"max_output_tokens",
    b"n",
    b"best_of",
];
const MODEL: usize = 0;
const STREAM: usize = 1;
const STREAM_OPTIONS: usize = 2;
const MAX_COMPLETION_TOKENS: usize = 3;
const MAX_TOKENS: usize = 4;
const MAX_OUTPUT_TOKENS: usize = 5;
const N: usize = 6;
const BEST_OF: usize = 7;
/// [`REQUEST_KEYS`] as text, for the refusal of a repeated key.
const REQUEST_NAMES: [&str; 8] = [
    "model",
    "stream",
    "stream_options",
    "max_completion_tokens",
    "max_tokens",
    "max_output_tokens",
    "n",
    "best_of",
];

/// Read a request (see [`super::inspect`]). For a chat or legacy completions stream that does
/// not already ask for `stream_options.include_usage`, also returns the body with it added:
/// inserted as the first key when the body has no `stream_options`, else by replacing only the
/// `stream_options` value (its other fields kept). Every other byte is the client's.
///
/// Keys are read as OpenAI's parser reads them (`"\u0073tream"` is `stream`). A body that an
/// endpoint of the table could read in a way Tollgate does not is refused ([`BodyError`]): one
/// that is not a single JSON object, one that sets a key Tollgate reads (`model`, `stream`,
/// `stream_options` or its `include_usage`, the output caps, `n`, `best_of`) more than once,
/// or whose `stream` is not a boolean. Bodies of other endpoints are only described.
pub fn inspect(
    method: &http::Method,
    rest: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Result<(RequestInfo, Option<Bytes>), Refused> {
    let _ = query;
    let endpoint = endpoint(method, rest);
    let mut info = RequestInfo {
        endpoint,
        model: None,
        stream: false,
        max_output_tokens: None,
        prompt_tokens_estimate: 0,
        media_parts: 0,
        usage_injected: false,
        sse: false,
        model_ambiguous: false,
    };
    // Every endpoint of the table takes one JSON object; the others (multipart uploads,
    // empty bodies) are only described.
    let in_table = endpoint != Endpoint::Other;
    if !json::is_object(body) {
        return refuse_if(in_table, info, BodyError::NotJson);
    }
    let scan = json::scan_body(body, REQUEST_KEYS, &[b"input", b"prompt"]);
    info.prompt_tokens_estimate = scan.prompt_tokens();
    info.media_parts = scan.media_parts;
    if !scan.valid {
        return refuse_if(in_table, info, BodyError::NotJson);
    }
    let model = scan.value(body, MODEL);
    info.model = model.and_then(|v| json::decode_string(v, 0));
    info.model_ambiguous =
        (model.is_some() && info.model.is_none()) || scan.duplicate == Some(MODEL);
    if in_table {
        if let Some(k) = scan.duplicate {
            if k == MODEL {
                info.model = None;
            }
            return Err(Refused::new(
                info,
                BodyError::DuplicateKey(REQUEST_NAMES[k]),
            ));
        }
        if !matches!(
            scan.value(body, STREAM),
            None | Some(b"true" | b"false" | b"null")
        ) {
            return Err(Refused::new(info, BodyError::StreamNotBoolean));
        }
        if let Some(options) = scan.value(body, STREAM_OPTIONS)
            && options.first() == Some(&b'{')
        {
            let include_usage = |k: &[u8]| (k == b"include_usage").then_some("include_usage");
            match json::repeated_field(options, include_usage) {
                Ok(None) => {}
                Ok(Some(name)) => {
                    return Err(Refused::new(info, BodyError::DuplicateKey(name)));
                }
                Err(()) => return Err(Refused::new(info, BodyError::NotJson)),
            }
        }
    }
    info.stream = scan.value(body, STREAM) == Some(b"true");
    info.sse = info.stream;
    let number = |i: usize| scan.value(body, i).and_then(parse_u64);
    let cap = match endpoint {
        Endpoint::ChatCompletions => number(MAX_COMPLETION_TOKENS).or_else(|| number(MAX_TOKENS)),
        Endpoint::Completions => number(MAX_TOKENS),
        Endpoint::Responses => number(MAX_OUTPUT_TOKENS),
        _ => None,
    };
    // Each of `n` choices (and each of `best_of` candidates) is capped separately.
    let choices = number(N)
        .unwrap_or(1)
        .max(number(BEST_OF).unwrap_or(1))
        .max(1);
    info.max_output_tokens = cap.map(|c| c.saturating_mul(choices));

    let mut rewritten = None;
    if info.stream && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        rewritten = with_include_usage(body, scan.open, scan.spans[STREAM_OPTIONS]);
        info.usage_injected = rewritten.is_some();
    }
    Ok((info, rewritten))
}

/// Refuse with `reason` when `refuse`, else describe the request as far as `info` goes.
fn refuse_if(
    refuse: bool,
    info: RequestInfo,
    reason: BodyError,
) -> Result<(RequestInfo, Option<Bytes>), Refused> {
    if refuse {
        Err(Refused::new(info, reason))
    } else {
        Ok((info, None))
    }
}

fn parse_u64(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// The body with `stream_options.include_usage = true`, or `None` when it already asks for it
/// (or `stream_options` is something other than an object or null, which OpenAI rejects anyway).
/// The body with its output cap set so that all its choices together produce at most `total`
/// tokens: each of `n` (or `best_of`) choices gets `total / choices`, written where the endpoint
/// reads it — chat completions' `max_completion_tokens` and `max_tokens` (whichever are set;
/// `max_completion_tokens` added when neither is), legacy completions' `max_tokens`, responses'
/// `max_output_tokens`. Returns the body and the cap over all choices it sets; `Ok(None)` for an
/// endpoint that generates nothing.
pub(crate) fn cap_output(
    endpoint: Endpoint,
    body: &Bytes,
    total: u64,
) -> Result<Option<(Bytes, u64)>, super::CapError> {
    let (keys, insert): (&[usize], &str) = match endpoint {
        Endpoint::ChatCompletions => (
            &[MAX_COMPLETION_TOKENS, MAX_TOKENS],
            "max_completion_tokens",
        ),
        Endpoint::Completions => (&[MAX_TOKENS], "max_tokens"),
        Endpoint::Responses => (&[MAX_OUTPUT_TOKENS], "max_output_tokens"),
        _ => return Ok(None),
    };
    let scan = json::scan_body(body, REQUEST_KEYS, &[]);
    let Some(open) = scan.open.filter(|_| scan.valid) else {
        return Err(super::CapError::Unreadable);
    };
    let number = |i: usize| scan.value(body, i).and_then(parse_u64);
    let choices = number(N)
        .unwrap_or(1)
        .max(number(BEST_OF).unwrap_or(1))
        .max(1);
    if choices > total {
        return Err(super::CapError::TooManyChoices { choices });
    }
    let each = total / choices;
    let value = each.to_string();
    let spans: Vec<(usize, usize)> = keys.iter().filter_map(|&k| scan.spans[k]).collect();
    let added;
    let insert = if spans.is_empty() {
        let comma = if json::object_is_empty(body, open) {
            ""
        } else {
            ","
        };
        added = format!("\"{insert}\":{each}{comma}");
        Some((open, added.as_bytes()))
    } else {
        None
    };
    let out = json::splice(body, &spans, value.as_bytes(), insert);
    Ok(Some((out.into(), each.saturating_mul(choices))))
}

fn with_include_usage(
    body: &Bytes,
    open: Option<usize>,
    stream_options: Option<(usize, usize)>,
) -> Option<Bytes> {
    const INSERT: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let Some((start, end)) = stream_options else {
        let open = open?;
        let mut out = Vec::with_capacity(body.len() + INSERT.len());
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(INSERT);
        out.extend_from_slice(&body[open + 1..]);
        return Some(out.into());
    };
    // Rare: the client set other stream options. Rewrite only that small value.
    let mut options = match serde_json::from_slice(body.get(start..end)?).ok()? {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(map) => map,
        _ => return None,
    };
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    let value = serde_json::to_vec(&options).ok()?;
    let mut out = Vec::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&value);
    out.extend_from_slice(&body[end..]);
    Some(out.into())
}

/// Keys searched for in answers, with their quotes.
struct Keys {
    usage: Finder<'static>,
    usage_rev: FinderRev<'static>,
    model: Finder<'static>,
    model_rev: FinderRev<'static>,
    error: Finder<'static>,
    choices: Finder<'static>,
    content: Finder<'static>,
    arguments: Finder<'static>,
    refusal: Finder<'static>,
    text: Finder<'static>,
    delta: Finder<'static>,
    kind: Finder<'static>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    usage: Finder::new(b"\"usage\""),
    usage_rev: FinderRev::new(b"\"usage\""),
    model: Finder::new(b"\"model\""),
    model_rev: FinderRev::new(b"\"model\""),
    error: Finder::new(b"\"error\""),
    choices: Finder::new(b"\"choices\""),
    content: Finder::new(b"\"content\""),
    arguments: Finder::new(b"\"arguments\""),
    refusal: Finder::new(b"\"refusal\""),
    text: Finder::new(b"\"text\""),
    delta: Finder::new(b"\"delta\""),
    kind: Finder::new(b"\"type\""),
});

/// Map the usage object at the start of `object` (trailing bytes are ignored) to [`Usage`]:
///
/// | column | chat / completions / embeddings | Responses |
/// |---|---|---|
/// | input | `prompt_tokens` | `input_tokens` |
/// | output | `completion_tokens` | `output_tokens` |
/// | cached input | `prompt_tokens_details.cached_tokens` | `input_tokens_details.cached_tokens` |
/// | reasoning | `completion_tokens_details.reasoning_tokens` | `output_tokens_details.reasoning_tokens` |
///
/// Missing fields are 0 (embeddings report only `prompt_tokens`). An object with neither
/// `prompt_tokens` nor `input_tokens` is not a usage report.
pub(crate) fn parse_usage(object: &[u8]) -> Option<Usage> {
    let (mut prompt, mut completion, mut input, mut output) = (None, None, None, None);
    let (mut cached, mut reasoning) = (0, 0);
    json::object_numbers(object, |parent, key, n| {
        if parent.is_empty() {
            match key {
                b"prompt_tokens" => prompt = Some(n),
                b"completion_tokens" => completion = Some(n),
                b"input_tokens" => input = Some(n),
                b"output_tokens" => output = Some(n),
                _ => {}
            }
        } else if key == b"cached_tokens" {
            // `prompt_tokens_details` / `input_tokens_details`.
            if parent.starts_with(b"prompt") || parent.starts_with(b"input") {
                cached = n;
            }
        } else if key == b"reasoning_tokens"
            && (parent.starts_with(b"completion") || parent.starts_with(b"output"))
        {
            reasoning = n;
        }
    })?;
    let (input, output) = match (input, prompt) {
        (Some(input), _) => (input, output),
        (None, Some(prompt)) => (prompt, completion),
        (None, None) => return None,
    };
    Some(Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output.unwrap_or(0),
        reasoning_tokens: reasoning,
    })
}

/// A non-streaming answer (or error body), given its first and last bytes (the same slice
/// when the body is small).
fn json_body(endpoint: Endpoint, head: &[u8], tail: &[u8], x: &mut Extract) {
    let k = &*KEYS;
    if json::first_key_is(head, b"error") {
        x.error_seen = true;
    } else if endpoint == Endpoint::Responses
        && let Some((_, v)) = json::find_key(head, &k.error, 0)
        && !head[v..].starts_with(b"null")
    {
        // A Responses object with `"status": "failed"` carries a non-null `error`.
        x.error_seen = true;
    }
    let usage_at = match json::last_usage(tail, &k.usage, &k.usage_rev, parse_usage) {
        Some((at, usage)) => {
            x.set_usage(usage);
            at
        }
        None => tail.len(),
    };
    // Embeddings put `model` just before `usage`, after the (huge) data; everything else puts
    // it near the top.
    let from_tail = || json::rfind_key(tail, &k.model_rev, usage_at);
    let found = if endpoint == Endpoint::Embeddings {
        from_tail().map(|(_, v)| (tail, v))
    } else {
        json::find_key(head, &k.model, 0)
            .map(|(_, v)| (head, v))
            .or_else(|| from_tail().map(|(_, v)| (tail, v)))
    };
    if let Some((hay, v)) = found {
        x.model_at(hay, v, "");
    }
}

/// One event of a chat-completions, legacy-completions or Responses stream.
fn sse_event(endpoint: Endpoint, ev: &SseEvent<'_>, x: &mut Extract) -> Verdict {
    if endpoint == Endpoint::Responses {
        responses_event(ev, x);
        return Verdict::Keep;
    }
    let data = ev.data;
    if data == b"[DONE]" {
        x.complete = true;
        return Verdict::Keep;
    }
    // A failure mid-stream: `data: {"error": {…}}` (sometimes with `event: error`).
    if ev.event == b"error" || json::first_key_is(data, b"error") {
        x.error_seen = true;
        return Verdict::Keep;
    }
    let k = &*KEYS;
    if x.model.is_none()
        && let Some((_, v)) = json::find_key(data, &k.model, 0)
    {
        x.model_at(data, v, "");
    }
    let mut verdict = Verdict::Keep;
    // Every chunk of a stream with include_usage carries `"usage":null`; the last one an object.
    if let Some((_, v)) = json::find_key(data, &k.usage, 0)
        && data[v] == b'{'
    {
        x.usage_object(&data[v..], parse_usage);
        if choices_empty(data, &k.choices) {
            verdict = Verdict::Drop;
        }
    }
    let text = if endpoint == Endpoint::Completions {
        &k.text
    } else {
        &k.content
    };
    let chars = json::string_chars(data, text)
        .or_else(|| json::string_chars(data, &k.arguments))
        .or_else(|| json::string_chars(data, &k.refusal));
    x.output_chars += chars.unwrap_or(0);
    verdict
}

/// `"choices": []`: the chunk carries no choice, only the usage.
fn choices_empty(data: &[u8], key: &Finder<'_>) -> bool {
    json::find_key(data, key, 0).is_some_and(|(_, v)| {
        data[v] == b'[' && data.get(json::skip_ws(data, v + 1)) == Some(&b']')
    })
}

/// One event of a Responses API stream. The type comes from the `event:` field, or from the
/// data's `type` when a server leaves the field out.
fn responses_event(ev: &SseEvent<'_>, x: &mut Extract) {
    let k = &*KEYS;
    let data = ev.data;
    let kind: &[u8] = if ev.event.is_empty() {
        json::find_key(data, &k.kind, 0)
            .and_then(|(_, v)| json::string_at(data, v))
            .unwrap_or_default()
    } else {
        ev.event
    };
    match kind {
        b"response.completed" | b"response.incomplete" | b"response.failed" => {
            x.complete = true;
            if kind == b"response.failed" {
                x.error_seen = true;
            }
            if let Some((_, usage)) = json::last_usage(data, &k.usage, &k.usage_rev, parse_usage) {
                x.set_usage(usage);
            }
            if x.model.is_none()
                && let Some((_, v)) = json::find_key(data, &k.model, 0)
            {
                x.model_at(data, v, "");
            }
        }
        b"error" => x.error_seen = true,
        b"response.created" | b"response.in_progress" => {
            if x.model.is_none()
                && let Some((_, v)) = json::find_key(data, &k.model, 0)
            {
                x.model_at(data, v, "");
            }
        }
        // Text, refusal, tool-argument and reasoning-summary deltas; audio deltas are base64.
        kind if kind.ends_with(b".delta") && kind != b"response.audio.delta" => {
            x.output_chars += json::string_chars(data, &k.delta).unwrap_or(0);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::Method;
    use serde_json::{Value, json};

    use super::inspect;
    use crate::provider::{BodyError, Endpoint, MEDIA_PART_TOKENS, RequestInfo};

    fn post(rest: &str, body: &str) -> (RequestInfo, Option<Bytes>) {
        inspect(
            &Method::POST,
            rest,
            None,
            &Bytes::copy_from_slice(body.as_bytes()),
        )
        .expect("a readable request")
    }

    fn refused(rest: &str, body: &[u8]) -> BodyError {
        inspect(&Method::POST, rest, None, &Bytes::copy_from_slice(body))
            .expect_err("refused")
            .reason
    }

    fn parse(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("the rewritten body is JSON")
    }

    #[test]
    fn endpoints_are_recognised_with_or_without_v1() {
        let cases = [
            ("/v1/chat/completions", Endpoint::ChatCompletions),
            ("/chat/completions", Endpoint::ChatCompletions),
            ("/v1/responses", Endpoint::Responses),
            ("/responses", Endpoint::Responses),
            ("/v1/embeddings", Endpoint::Embeddings),
            ("/v1/completions", Endpoint::Completions),
            ("/v1/models", Endpoint::Other),
            ("/v1/chat/completions/chatcmpl-123", Endpoint::Other),
            ("/v1/images/generations", Endpoint::Other),
        ];
        for (rest, want) in cases {
            assert_eq!(post(rest, "{}").0.endpoint, want, "{rest}");
        }
        let get = inspect(&Method::GET, "/v1/chat/completions", None, &Bytes::new())
            .expect("not in the table: described");
        assert_eq!(
            get.0.endpoint,
            Endpoint::Other,
            "listing stored completions"
        );
    }

    #[test]
    fn chat_request_gives_model_stream_and_cap() {
        let (info, body) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, how are you?"}],"max_completion_tokens":256,"max_tokens":999}"#,
        );
        assert_eq!(info.model.as_deref(), Some("gpt-4o-mini"));
        assert!(!info.stream && !info.sse && !info.usage_injected);
        assert_eq!(
            info.max_output_tokens,
            Some(256),
            "max_completion_tokens wins"
        );
        assert_eq!(info.prompt_tokens_estimate, 7, "25 characters of text");
        assert!(body.is_none());
    }

    #[test]
    fn chat_max_tokens_is_the_older_spelling() {
        let (info, _) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[],"max_tokens":100}"#,
        );
        assert_eq!(info.max_output_tokens, Some(100));
    }

    #[test]
    fn several_choices_multiply_the_cap() {
        let (info, _) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[],"max_tokens":100,"n":3}"#,
        );
        assert_eq!(info.max_output_tokens, Some(300));
        let (info, _) = post(
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"x","max_tokens":10,"best_of":4,"n":2}"#,
        );
        assert_eq!(info.max_output_tokens, Some(40));
    }

    #[test]
    fn responses_request_reads_max_output_tokens_and_never_injects() {
        let (info, body) = post(
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"Tell me a story","stream":true,"max_output_tokens":500}"#,
        );
        assert_eq!(info.endpoint, Endpoint::Responses);
        assert_eq!(info.model.as_deref(), Some("gpt-4.1"));
        assert!(info.stream && info.sse);
        assert_eq!(info.max_output_tokens, Some(500));
        assert!(
            !info.usage_injected && body.is_none(),
            "response.completed always has usage"
        );
    }

    #[test]
    fn embeddings_request_counts_text_and_token_arrays() {
        let (info, _) = post(
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":["abcd","efgh"]}"#,
        );
        assert_eq!(info.model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(info.prompt_tokens_estimate, 2);
        assert_eq!(info.max_output_tokens, None);
        let (info, _) = post("/v1/embeddings", r#"{"model":"m","input":[[1,2,3],[4,5]]}"#);
        assert_eq!(info.prompt_tokens_estimate, 5, "one token per number");
    }

    #[test]
    fn escaped_model_name_is_decoded() {
        let (info, _) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o\u002dmini","messages":[]}"#,
        );
        assert_eq!(info.model.as_deref(), Some("gpt-4o-mini"));
    }

    #[test]
    fn streaming_chat_without_include_usage_gets_it_inserted() {
        let original =
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let (info, body) = post("/v1/chat/completions", original);
        assert!(info.stream && info.sse && info.usage_injected);
        let body = body.expect("rewritten");
        assert_eq!(
            &body[..],
            format!(
                r#"{{"stream_options":{{"include_usage":true}},{}"#,
                &original[1..]
            )
            .as_bytes(),
            "a textual insert after the opening brace; every other byte kept"
        );
        let mut want = parse(original.as_bytes());
        want["stream_options"] = json!({"include_usage": true});
        assert_eq!(parse(&body), want);
    }

    #[test]
    fn insert_works_with_whitespace_and_a_bom() {
        let original =
            "\u{feff}  {\n  \"model\": \"gpt-4o\",\n  \"messages\": [],\n  \"stream\": true\n}\n";
        let (info, body) = post("/v1/chat/completions", original);
        assert!(info.usage_injected);
        let body = body.expect("rewritten");
        let text = std::str::from_utf8(&body).expect("utf-8");
        let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).expect("JSON");
        assert_eq!(value["stream_options"]["include_usage"], json!(true));
        assert_eq!(value["model"], json!("gpt-4o"));
    }

    #[test]
    fn existing_stream_options_are_kept_and_completed() {
        let original = r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_obfuscation":false},"user":"u1"}"#;
        let (info, body) = post("/v1/chat/completions", original);
        assert!(info.usage_injected);
        let body = body.expect("rewritten");
        let value = parse(&body);
        assert_eq!(
            value["stream_options"],
            json!({"include_obfuscation": false, "include_usage": true})
        );
        assert_eq!(value["user"], json!("u1"));
        let text = std::str::from_utf8(&body).expect("utf-8");
        assert_eq!(
            text.matches("stream_options").count(),
            1,
            "no duplicate key"
        );
        assert!(
            text.starts_with(r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":"#)
        );
        assert!(
            text.ends_with(r#","user":"u1"}"#),
            "bytes outside the value are untouched"
        );
    }

    #[test]
    fn include_usage_false_is_turned_on_and_marked_injected() {
        let (info, body) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":false}}"#,
        );
        assert!(info.usage_injected);
        let value = parse(&body.expect("rewritten"));
        assert_eq!(value["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn null_stream_options_are_replaced() {
        let (info, body) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":null}"#,
        );
        assert!(info.usage_injected);
        assert_eq!(
            parse(&body.expect("rewritten"))["stream_options"],
            json!({"include_usage": true})
        );
    }

    #[test]
    fn include_usage_already_true_is_not_injected_twice() {
        let (info, body) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert!(info.stream && !info.usage_injected);
        assert!(
            body.is_none(),
            "the client asked for usage: its chunk is forwarded"
        );
    }

    #[test]
    fn non_streaming_requests_are_not_rewritten() {
        let (info, body) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[],"stream":false}"#,
        );
        assert!(!info.stream && !info.usage_injected && body.is_none());
    }

    #[test]
    fn legacy_completions_stream_gets_include_usage() {
        let (info, body) = post(
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","stream":true,"max_tokens":7}"#,
        );
        assert_eq!(info.endpoint, Endpoint::Completions);
        assert!(info.usage_injected);
        assert_eq!(info.max_output_tokens, Some(7));
        assert_eq!(
            parse(&body.expect("rewritten"))["stream_options"],
            json!({"include_usage": true})
        );
    }

    /// A chat request with a `size`-byte base64 PNG screenshot.
    fn screenshot_request(size: usize, stream: bool) -> String {
        let base64 = "iVBORw0KGgoAAAANSUhEUgAAB4AAAAQ4CAIAAABnsVYUAAAAA".repeat(size / 50 + 1);
        format!(
            r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":[{{"type":"text","text":"What is on this screen?"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{base64}","detail":"high"}}}}]}}]}}"#
        )
    }

    #[test]
    fn screenshot_counts_as_one_media_part_and_the_body_is_untouched() {
        let body = screenshot_request(6 * 1024 * 1024, false);
        let (info, rewritten) = post("/v1/chat/completions", &body);
        assert_eq!(info.model.as_deref(), Some("gpt-4o"));
        assert_eq!(
            info.prompt_tokens_estimate,
            MEDIA_PART_TOKENS + 6,
            "23 characters + 1 image"
        );
        assert!(rewritten.is_none());
    }

    #[test]
    fn streaming_screenshot_request_keeps_every_byte_after_the_insert() {
        let body = screenshot_request(3 * 1024 * 1024, true);
        let (info, rewritten) = post("/v1/chat/completions", &body);
        assert!(info.usage_injected);
        let rewritten = rewritten.expect("rewritten");
        let insert = br#""stream_options":{"include_usage":true},"#;
        assert_eq!(rewritten.len(), body.len() + insert.len());
        assert!(rewritten[1 + insert.len()..] == body.as_bytes()[1..]);
    }

    #[test]
    fn responses_input_image_and_urls_count_as_media() {
        let body = r#"{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_text","text":"abcdefgh"},{"type":"input_image","image_url":"data:image/jpeg;base64,/9j/4AAQSkZJRg"},{"type":"input_image","image_url":"https://example.com/cat.png"},{"type":"input_file","file_id":"file-abc"}]}]}"#;
        let (info, _) = post("/v1/responses", body);
        assert_eq!(info.prompt_tokens_estimate, 2 + 3 * MEDIA_PART_TOKENS);
    }

    #[test]
    fn garbage_bodies_of_metered_endpoints_are_refused_and_never_panic() {
        let deep_array = "[".repeat(100_000);
        let deep_object = r#"{"a":"#.repeat(100_000);
        let cases: Vec<&[u8]> = vec![
            b"",
            b"{",
            b"{not json",
            b"{\"model\":\"gpt-4o\",\"stream\":true",
            b"{\"model\":\"unterminated",
            b"{\"model\":\"gpt-4o\"} trailing",
            b"{\"model\":\"gpt-4o\",\"stream\":true}}",
            b"\xff\xfe\x00{",
            b"[1,2,3]",
            b"{\"a\":tru}",
            b"{\"model\":\"\\",
            b"{\"model\":\"gpt-4o\",\"temperature\":NaN,\"stream\":true}",
            b"{\"\\u00zzstream\":true}",
            deep_array.as_bytes(),
            deep_object.as_bytes(),
        ];
        for body in cases {
            for rest in ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"] {
                assert_eq!(
                    refused(rest, body),
                    BodyError::NotJson,
                    "{rest} {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                );
            }
            // Not in the table: forwarded as it is, described as far as the path goes.
            let (info, rewritten) = inspect(
                &Method::POST,
                "/v1/audio/transcriptions",
                None,
                &Bytes::copy_from_slice(body),
            )
            .expect("described");
            assert_eq!(info.endpoint, Endpoint::Other);
            assert!(rewritten.is_none() && !info.usage_injected);
        }
        let (info, _) = post(
            "/v1/audio/transcriptions",
            "--boundary\r\nContent-Disposition: form-data",
        );
        assert_eq!(info.endpoint, Endpoint::Other);
    }

    #[test]
    fn escaped_keys_read_as_the_keys_they_spell() {
        let (info, body) = post(
            "/v1/chat/completions",
            r#"{"mod\u0065l":"gpt-4o","\u0073tream":true,"max_\u0074okens":50,"messages":[{"role":"user","content":"abcdefgh"}]}"#,
        );
        assert_eq!(info.model.as_deref(), Some("gpt-4o"));
        assert!(info.stream && info.sse && info.usage_injected);
        assert_eq!(info.max_output_tokens, Some(50));
        assert_eq!(info.prompt_tokens_estimate, 2);
        let value = parse(&body.expect("rewritten"));
        assert_eq!(value["stream"], json!(true));
        assert_eq!(value["stream_options"], json!({"include_usage": true}));
        // Token arrays under an escaped `input` key are still counted.
        let (info, _) = post(
            "/v1/embeddings",
            r#"{"model":"m","\u0069nput":[[1,2,3],[4,5]]}"#,
        );
        assert_eq!(info.prompt_tokens_estimate, 5);
    }

    #[test]
    fn an_escaped_stream_options_key_is_rewritten_in_place() {
        for options in [
            r#"{"include_usage":false}"#,
            r#"{"\u0069nclude_usage":false,"include_obfuscation":false}"#,
            "null",
            "{}",
        ] {
            let original = format!(
                r#"{{"model":"gpt-4o","stream":true,"\u0073tream_options":{options},"messages":[]}}"#
            );
            let (info, body) = post("/v1/chat/completions", &original);
            assert!(info.usage_injected, "{options}");
            let body = body.expect("rewritten");
            let text = std::str::from_utf8(&body).expect("utf-8");
            assert!(
                !text.contains(r#""stream_options""#) && text.contains(r#""\u0073tream_options""#),
                "one stream_options key, the client's own spelling: {text}"
            );
            let value = parse(&body);
            assert_eq!(
                value["stream_options"]["include_usage"],
                json!(true),
                "{text}"
            );
            assert_eq!(value.as_object().map(|o| o.len()), Some(4), "{text}");
        }
    }

    #[test]
    fn repeated_keys_tollgate_reads_are_refused() {
        for (body, key) in [
            (
                r#"{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}"#,
                "model",
            ),
            (
                r#"{"model":"gpt-4o","mod\u0065l":"o3","messages":[]}"#,
                "model",
            ),
            (
                r#"{"model":"gpt-4o","stream":false,"\u0073tream":true,"messages":[]}"#,
                "stream",
            ),
            (
                r#"{"model":"gpt-4o","stream":true,"stream_options":{},"stream_options":{"include_usage":false},"messages":[]}"#,
                "stream_options",
            ),
            (
                r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false,"include_usage":true},"messages":[]}"#,
                "include_usage",
            ),
            (
                r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true,"\u0069nclude_usage":false},"messages":[]}"#,
                "include_usage",
            ),
            (
                r#"{"model":"gpt-4o","max_tokens":1,"max_tokens":100000,"messages":[]}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"gpt-4o","max_completion_tokens":1,"max_completion_tokens":9,"messages":[]}"#,
                "max_completion_tokens",
            ),
            (r#"{"model":"gpt-4o","n":1,"n":8,"messages":[]}"#, "n"),
        ] {
            assert_eq!(
                refused("/v1/chat/completions", body.as_bytes()),
                BodyError::DuplicateKey(key),
                "{body}"
            );
        }
        assert_eq!(
            refused(
                "/v1/responses",
                br#"{"model":"gpt-4.1","input":"x","max_output_tokens":1,"max_output_tokens":99}"#
            ),
            BodyError::DuplicateKey("max_output_tokens")
        );
        // Repeated keys Tollgate does not read (nested ones included) are the provider's
        // business; repeated prompt text only makes the estimate larger.
        let (info, _) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","role":"user","content":"abcd"}],"user":"a","user":"b"}"#,
        );
        assert_eq!(info.model.as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn a_stream_flag_that_is_not_a_boolean_is_refused() {
        for value in ["\"true\"", "1", "0", "{}", "[]", "\"false\""] {
            let body = format!(r#"{{"model":"gpt-4o","stream":{value},"messages":[]}}"#);
            assert_eq!(
                refused("/v1/chat/completions", body.as_bytes()),
                BodyError::StreamNotBoolean,
                "{value}"
            );
        }
        let (info, body) = post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","stream":null,"messages":[]}"#,
        );
        assert!(!info.stream && body.is_none());
    }

    fn capped(endpoint: Endpoint, body: &str, total: u64) -> (Value, u64) {
        let (out, cap) = super::cap_output(endpoint, &Bytes::from(body.to_owned()), total)
            .unwrap()
            .unwrap();
        (serde_json::from_slice(&out).unwrap(), cap)
    }

    #[test]
    fn an_output_cap_is_written_where_each_endpoint_reads_it() {
        let chat = Endpoint::ChatCompletions;
        // Added when the request sets none: the object keeps every other byte.
        let (v, cap) = capped(chat, r#"{"model":"gpt-4o","messages":[]}"#, 100);
        assert_eq!(v["max_completion_tokens"], 100);
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(cap, 100);
        // Replaced where it is set, in either spelling, whatever the value was.
        let (v, _) = capped(chat, r#"{"max_tokens": 4000, "model":"m"}"#, 100);
        assert_eq!(v["max_tokens"], 100);
        assert!(v.get("max_completion_tokens").is_none());
        let (v, _) = capped(
            chat,
            r#"{"max_completion_tokens":null,"max_tokens":"9","model":"m"}"#,
            100,
        );
        assert_eq!(
            (v["max_completion_tokens"].clone(), v["max_tokens"].clone()),
            (json!(100), json!(100))
        );
        let (v, _) = capped(chat, r#"{"\u006dax_tokens":5000}"#, 64);
        assert_eq!(v["max_tokens"], 64, "an escaped key is the key");
        // n choices share the cap.
        let (v, cap) = capped(chat, r#"{"n":3,"model":"m"}"#, 100);
        assert_eq!((v["max_completion_tokens"].clone(), cap), (json!(33), 99));
        let too_many = super::cap_output(chat, &Bytes::from_static(br#"{"n":500}"#), 100);
        assert_eq!(
            too_many.unwrap_err(),
            crate::provider::CapError::TooManyChoices { choices: 500 }
        );
        // Empty object, other endpoints.
        let (v, _) = capped(chat, "{ }", 7);
        assert_eq!(v, json!({"max_completion_tokens": 7}));
        let (v, _) = capped(Endpoint::Completions, r#"{"prompt":"x"}"#, 7);
        assert_eq!(v["max_tokens"], 7);
        let (v, _) = capped(
            Endpoint::Responses,
            r#"{"input":"x","max_output_tokens":900}"#,
            7,
        );
        assert_eq!(v["max_output_tokens"], 7);
        assert!(
            super::cap_output(Endpoint::Embeddings, &Bytes::from_static(b"{}"), 7)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            super::cap_output(chat, &Bytes::from_static(b"[1]"), 7).unwrap_err(),
            crate::provider::CapError::Unreadable
        );
    }

    #[test]
    fn a_model_named_twice_or_not_as_a_string_is_ambiguous() {
        let read = |rest: &str, body: &'static [u8]| {
            inspect(&Method::POST, rest, None, &Bytes::from_static(body))
                .map(|(info, _)| (info.model, info.model_ambiguous))
        };
        assert_eq!(
            read("/v1/chat/completions", br#"{"model":"gpt-4o"}"#).unwrap(),
            (Some("gpt-4o".into()), false)
        );
        assert_eq!(
            read("/v1/chat/completions", br#"{"model":["gpt-4o"]}"#).unwrap(),
            (None, true)
        );
        assert_eq!(
            read("/v1/chat/completions", br#"{}"#).unwrap(),
            (None, false)
        );
        assert!(
            read("/v1/audio/speech", br#"{"model":"a","model":"b"}"#)
                .unwrap()
                .1,
            "outside the table too"
        );
    }
}
