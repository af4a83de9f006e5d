//! Gemini (Generative Language API): what a request says (endpoint and model from the path,
//! SSE or JSON-array streaming from the query, output cap and prompt size from the body), and
//! where usage sits in answers — `usageMetadata` in `generateContent` bodies, in every chunk of
//! `streamGenerateContent` (SSE with `alt=sse`, else one JSON array written piece by piece),
//! and in `embedContent`/`batchEmbedContents` bodies when the API reports it.
//!
//! Gemini never needs a rewrite: it reports usage in every answer. Its stream usage is
//! *cumulative* — each chunk repeats the running totals — so the last report wins and reports
//! are never summed. `countTokens` answers with a count, which is not consumption: the tap reads
//! no usage for it.
//!
//! Pure functions of bytes, like `openai`.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;

use super::dialect::{Dialect, Extract, Verdict};
use super::json;
use super::{BodyError, Endpoint, Refused, RequestInfo, Usage};
use crate::stream::SseEvent;

/// The endpoint and model of a request path such as `/v1beta/models/gemini-2.5-flash:generateContent`
/// (`rest`, after the provider prefix, as [`super::normalize_path`] left it: matched exactly,
/// and exactly what is forwarded). The model is the path's `models/{model}` without `models/`;
/// a tuned model keeps its `tunedModels/` prefix. Works on `/v1`, `/v1beta`, and on any path
/// whose last segment is `{model}:{method}` (an encoded `%3A` was decoded by the normaliser).
pub fn endpoint(method: &http::Method, rest: &str) -> (Endpoint, Option<String>) {
    let path = rest;
    let Some((resource, verb)) = split_method(path) else {
        return (Endpoint::Other, None);
    };
    let model = resource.rsplit_once('/').and_then(|(parent, name)| {
        let collection = parent.rsplit('/').next().unwrap_or_default();
        match collection {
            _ if name.is_empty() => None,
            "models" => Some(name.to_owned()),
            "tunedModels" => Some(format!("tunedModels/{name}")),
            _ => None,
        }
    });
    if method != http::Method::POST {
        return (Endpoint::Other, model);
    }
    let endpoint = match verb {
        "generateContent" => Endpoint::GenerateContent,
        "streamGenerateContent" => Endpoint::StreamGenerateContent,
        "countTokens" => Endpoint::CountTokens,
        "embedContent" => Endpoint::EmbedContent,
        "batchEmbedContents" => Endpoint::BatchEmbedContents,
        _ => Endpoint::Other,
    };
    (endpoint, model)
}

/// Split `…/models/x:verb` into `…/models/x` and `verb`; the colon must be in the last segment.
fn split_method(path: &str) -> Option<(&str, &str)> {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    let i = path[last..].rfind(':')?;
    Some((&path[..last + i], &path[last + i + 1..]))
}

/// Whether the query asks for SSE: `alt=sse` (also spelt `$alt=sse`, or percent-encoded).
pub fn wants_sse(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            matches!(key, "alt" | "$alt" | "%24alt")
                && value.to_ascii_lowercase().starts_with("sse")
        })
    })
}

/// Top-level request keys read by [`inspect`]: the REST API accepts both spellings.
const REQUEST_KEYS: [&[u8]; 3] = [b"generationConfig", b"generation_config", b"model"];
/// [`REQUEST_KEYS`]'s `model`: read only when the path names no model.
const BODY_MODEL: usize = 2;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(alias = "candidate_count")]
    candidate_count: Option<u64>,
}

/// Read a request (see [`super::inspect`]). Never rewrites the body.
///
/// Keys are read as the API's parser reads them (escapes decoded; `generationConfig` and
/// `generation_config`, `maxOutputTokens` and `max_output_tokens` are one field each). A body
/// of an endpoint of the table is refused ([`BodyError`]) when it is not one JSON object, or
/// sets the generation config, its output cap or its candidate count more than once (in either
/// spelling). Bodies of other endpoints are only described.
pub fn inspect(
    method: &http::Method,
    rest: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Result<(RequestInfo, Option<Bytes>), Refused> {
    let (endpoint, model) = endpoint(method, rest);
    let stream = endpoint == Endpoint::StreamGenerateContent;
    let mut info = RequestInfo {
        endpoint,
        model,
        stream,
        max_output_tokens: None,
        prompt_tokens_estimate: 0,
        media_parts: 0,
        usage_injected: false,
        sse: stream && wants_sse(query),
        model_ambiguous: false,
    };
    let in_table = endpoint != Endpoint::Other;
    let refuse = |info: RequestInfo, reason: BodyError| {
        if in_table {
            Err(Refused::new(info, reason))
        } else {
            Ok((info, None))
        }
    };
    if !json::is_object(body) {
        return refuse(info, BodyError::NotJson);
    }
    let scan = json::scan_body(body, REQUEST_KEYS, &[]);
    info.prompt_tokens_estimate = scan.prompt_tokens();
    info.media_parts = scan.media_parts;
    if !scan.valid {
        return refuse(info, BodyError::NotJson);
    }
    if matches!(scan.duplicate, Some(0 | 1)) || (scan.spans[0].is_some() && scan.spans[1].is_some())
    {
        return refuse(info, BodyError::DuplicateKey("generationConfig"));
    }
    // A path without a model (`cachedContents`, the OpenAI-compatible endpoints): the body's
    // `model`, as `models/…` or bare.
    if info.model.is_none()
        && let Some(raw) = scan.value(body, BODY_MODEL)
    {
        info.model = json::decode_string(raw, 0)
            .map(|m| m.strip_prefix(MODEL_PREFIX).map(str::to_owned).unwrap_or(m));
        info.model_ambiguous = info.model.is_none() || scan.duplicate == Some(BODY_MODEL);
    }
    let Some(raw) = scan.value(body, 0).or_else(|| scan.value(body, 1)) else {
        return Ok((info, None));
    };
    if raw.first() == Some(&b'{') {
        match json::repeated_field(raw, generation_config_field) {
            Ok(None) => {}
            Ok(Some(name)) => return refuse(info, BodyError::DuplicateKey(name)),
            Err(()) => return refuse(info, BodyError::NotJson),
        }
    }
    if matches!(
        endpoint,
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent
    ) && let Ok(config) = serde_json::from_slice::<GenerationConfig>(raw)
    {
        // Each candidate is capped separately.
        let candidates = config.candidate_count.unwrap_or(1).max(1);
        info.max_output_tokens = config
            .max_output_tokens
            .map(|c| c.saturating_mul(candidates));
    }
    Ok((info, None))
}

/// The fields of `generationConfig` that Tollgate reads, by their one name.
/// The body with `generationConfig.maxOutputTokens` set so that all its candidates together
/// produce at most `total` tokens (each of `candidateCount` gets `total / candidates`): the
/// field's value replaced where the body sets it (either spelling), else added to the
/// `generationConfig` object, else a `generationConfig` added. Returns the body and the cap over
/// all candidates it sets; `Ok(None)` for an endpoint that generates nothing.
pub(crate) fn cap_output(
    endpoint: Endpoint,
    body: &Bytes,
    total: u64,
) -> Result<Option<(Bytes, u64)>, super::CapError> {
    use super::CapError;
    if !matches!(
        endpoint,
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent
    ) {
        return Ok(None);
    }
    let scan = json::scan_body(body, REQUEST_KEYS, &[]);
    let Some(open) = scan.open.filter(|_| scan.valid) else {
        return Err(CapError::Unreadable);
    };
    let config = scan.spans[0].or(scan.spans[1]);
    let raw = config.and_then(|(s, e)| body.get(s..e));
    let candidates = match raw {
        Some(raw) if raw.first() == Some(&b'{') => serde_json::from_slice::<GenerationConfig>(raw)
            .map_err(|_| CapError::Unreadable)?
            .candidate_count
            .unwrap_or(1)
            .max(1),
        _ => 1,
    };
    if candidates > total {
        return Err(CapError::TooManyChoices {
            choices: candidates,
        });
    }
    let each = total / candidates;
    let out = match (config, raw) {
        (Some((start, _)), Some(raw)) if raw.first() == Some(&b'{') => {
            let field = json::field_span(raw, |k| {
                matches!(k, b"maxOutputTokens" | b"max_output_tokens")
            })
            .map_err(|()| CapError::Unreadable)?;
            match field {
                Some((s, e)) => json::splice(
                    body,
                    &[(start + s, start + e)],
                    each.to_string().as_bytes(),
                    None,
                ),
                None => {
                    let comma = if json::object_is_empty(raw, 0) {
                        ""
                    } else {
                        ","
                    };
                    let added = format!("\"maxOutputTokens\":{each}{comma}");
                    json::splice(body, &[], b"", Some((start, added.as_bytes())))
                }
            }
        }
        (Some(span), Some(b"null")) => {
            let value = format!("{{\"maxOutputTokens\":{each}}}");
            json::splice(body, &[span], value.as_bytes(), None)
        }
        (Some(_), _) => return Err(CapError::Unreadable),
        (None, _) => {
            let comma = if json::object_is_empty(body, open) {
                ""
            } else {
                ","
            };
            let added = format!("\"generationConfig\":{{\"maxOutputTokens\":{each}}}{comma}");
            json::splice(body, &[], b"", Some((open, added.as_bytes())))
        }
    };
    Ok(Some((out.into(), each.saturating_mul(candidates))))
}

fn generation_config_field(key: &[u8]) -> Option<&'static str> {
    match key {
        b"maxOutputTokens" | b"max_output_tokens" => Some("generationConfig.maxOutputTokens"),
        b"candidateCount" | b"candidate_count" => Some("generationConfig.candidateCount"),
        _ => None,
    }
}

/// Gemini's [`Dialect`]: requests as [`inspect`] reads them; answers as JSON bodies, SSE
/// (`alt=sse`) or, for `streamGenerateContent` without it, a JSON array of chunks.
#[derive(Debug)]
pub(crate) struct Gemini;

impl Dialect for Gemini {
    fn endpoint(&self, method: &http::Method, rest: &str) -> Endpoint {
        endpoint(method, rest).0
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

    fn streams_json_array(&self, info: &RequestInfo) -> bool {
        info.endpoint == Endpoint::StreamGenerateContent && !info.sse
    }

    fn sse_event(&self, _endpoint: Endpoint, ev: &SseEvent<'_>, x: &mut Extract) -> Verdict {
        if chunk(ev.data, x) {
            // Gemini's SSE stream has no end marker: the chunk with a finishReason is the last
            // one.
            x.complete = true;
        }
        Verdict::Keep
    }

    fn array_element(&self, _endpoint: Endpoint, element: &[u8], x: &mut Extract) {
        chunk(element, x);
    }

    fn json_body(&self, endpoint: Endpoint, head: &[u8], tail: &[u8], x: &mut Extract) {
        json_body(endpoint, head, tail, x);
    }
}

/// Keys searched for in answers, with their quotes.
struct Keys {
    usage: Finder<'static>,
    usage_rev: FinderRev<'static>,
    model: Finder<'static>,
    text: Finder<'static>,
    finish_reason: Finder<'static>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    usage: Finder::new(b"\"usageMetadata\""),
    usage_rev: FinderRev::new(b"\"usageMetadata\""),
    model: Finder::new(b"\"modelVersion\""),
    text: Finder::new(b"\"text\""),
    finish_reason: Finder::new(b"\"finishReason\""),
});

/// `modelVersion` is sometimes `models/gemini-…`; the report names the bare model.
const MODEL_PREFIX: &str = "models/";

/// Map the `usageMetadata` object at the start of `object` to [`Usage`]:
/// input = `promptTokenCount + toolUsePromptTokenCount`, output = `candidatesTokenCount +
/// thoughtsTokenCount`, cached input = `cachedContentTokenCount`, reasoning =
/// `thoughtsTokenCount`. Missing fields are 0; an object with neither `promptTokenCount` nor
/// `totalTokenCount` is not a usage report.
pub(crate) fn parse_usage(object: &[u8]) -> Option<Usage> {
    let (mut prompt, mut total) = (None, None);
    let (mut candidates, mut cached, mut thoughts, mut tool_use) = (0u64, 0, 0u64, 0u64);
    json::object_numbers(object, |parent, key, n| {
        if !parent.is_empty() {
            return;
        }
        match key {
            b"promptTokenCount" | b"prompt_token_count" => prompt = Some(n),
            b"candidatesTokenCount" | b"candidates_token_count" => candidates = n,
            b"cachedContentTokenCount" | b"cached_content_token_count" => cached = n,
            b"thoughtsTokenCount" | b"thoughts_token_count" => thoughts = n,
            b"toolUsePromptTokenCount" | b"tool_use_prompt_token_count" => tool_use = n,
            b"totalTokenCount" | b"total_token_count" => total = Some(n),
            _ => {}
        }
    })?;
    if prompt.is_none() && total.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: prompt.unwrap_or(0).saturating_add(tool_use),
        cached_input_tokens: cached,
        output_tokens: candidates.saturating_add(thoughts),
        reasoning_tokens: thoughts,
    })
}

/// One streamed chunk (an SSE event's data or an element of the JSON array): its usage (the
/// running totals so far, replacing any earlier report), model, text and error. Returns
/// whether the chunk carries a `finishReason`, i.e. is the last one.
fn chunk(data: &[u8], x: &mut Extract) -> bool {
    if json::first_key_is(data, b"error") {
        x.error_seen = true;
        return false;
    }
    let k = &*KEYS;
    // A chunk is `candidates`, then `usageMetadata`, `modelVersion`, `responseId`: text and
    // finishReason are searched for only before the usage, the model only after it.
    let usage = json::find_key(data, &k.usage, 0);
    let (candidates, rest) = match usage {
        Some((at, v)) if data[v] == b'{' => {
            x.usage_object(&data[v..], parse_usage);
            (&data[..at], at)
        }
        Some((at, _)) => (&data[..at], at),
        None => (data, 0),
    };
    x.output_chars += json::string_chars(candidates, &k.text).unwrap_or(0);
    if x.model.is_none()
        && let Some((_, v)) = json::find_key(data, &k.model, rest)
    {
        x.model_at(data, v, MODEL_PREFIX);
    }
    json::find_key(candidates, &k.finish_reason, 0).is_some()
}

/// A non-streaming answer (or error body), given its first and last bytes.
fn json_body(endpoint: Endpoint, head: &[u8], tail: &[u8], x: &mut Extract) {
    let k = &*KEYS;
    if json::first_key_is(head, b"error") {
        x.error_seen = true;
    }
    let mut usage_at = 0;
    if endpoint != Endpoint::CountTokens
        && let Some((at, usage)) = json::last_usage(tail, &k.usage, &k.usage_rev, parse_usage)
    {
        x.set_usage(usage);
        usage_at = at;
    }
    // `modelVersion` follows `usageMetadata`.
    let found = json::find_key(tail, &k.model, usage_at)
        .map(|(_, v)| (tail, v))
        .or_else(|| json::find_key(head, &k.model, 0).map(|(_, v)| (head, v)));
    if let Some((hay, v)) = found {
        x.model_at(hay, v, MODEL_PREFIX);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::Method;

    use super::{endpoint, inspect, wants_sse};
    use crate::provider::{BodyError, Endpoint, MEDIA_PART_TOKENS, RequestInfo};

    fn post(rest: &str, query: Option<&str>, body: &str) -> (RequestInfo, Option<Bytes>) {
        inspect(
            &Method::POST,
            rest,
            query,
            &Bytes::copy_from_slice(body.as_bytes()),
        )
        .expect("a readable request")
    }

    const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

    fn refused(rest: &str, body: &str) -> BodyError {
        let refused = inspect(
            &Method::POST,
            rest,
            None,
            &Bytes::copy_from_slice(body.as_bytes()),
        )
        .expect_err("refused");
        assert_eq!(
            refused.info.model.as_deref(),
            Some("gemini-2.5-flash"),
            "the path still names the model"
        );
        refused.reason
    }

    #[test]
    fn endpoint_and_model_come_from_the_path() {
        let cases = [
            (
                "/v1beta/models/gemini-2.5-flash:generateContent",
                Endpoint::GenerateContent,
                Some("gemini-2.5-flash"),
            ),
            (
                "/v1/models/gemini-2.0-flash:streamGenerateContent",
                Endpoint::StreamGenerateContent,
                Some("gemini-2.0-flash"),
            ),
            (
                "/v1beta/models/gemini-2.5-pro:countTokens",
                Endpoint::CountTokens,
                Some("gemini-2.5-pro"),
            ),
            (
                "/v1beta/models/text-embedding-004:embedContent",
                Endpoint::EmbedContent,
                Some("text-embedding-004"),
            ),
            (
                "/v1beta/models/gemini-embedding-001:batchEmbedContents",
                Endpoint::BatchEmbedContents,
                Some("gemini-embedding-001"),
            ),
            (
                "/v1beta/tunedModels/my-model-7x2k:generateContent",
                Endpoint::GenerateContent,
                Some("tunedModels/my-model-7x2k"),
            ),
            (
                "/v1beta/models/gemini-2.5-flash%3AgenerateContent",
                Endpoint::Other,
                None,
            ),
            (
                "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
                Endpoint::Other,
                Some("gemini-2.5-flash"),
            ),
            ("/v1beta/models", Endpoint::Other, None),
            ("/v1beta/models/gemini-2.5-flash", Endpoint::Other, None),
            ("/v1beta/cachedContents", Endpoint::Other, None),
            ("/upload/v1beta/files", Endpoint::Other, None),
            ("/v1beta/files/abc-123:download", Endpoint::Other, None),
        ];
        for (rest, want, model) in cases {
            let (got, got_model) = endpoint(&Method::POST, rest);
            assert_eq!((got, got_model.as_deref()), (want, model), "{rest}");
        }
        let (got, _) = endpoint(
            &Method::GET,
            "/v1beta/models/gemini-2.5-flash:generateContent",
        );
        assert_eq!(got, Endpoint::Other);
    }

    #[test]
    fn alt_sse_selects_sse_framing() {
        assert!(wants_sse(Some("alt=sse")));
        assert!(wants_sse(Some("key=abc&alt=sse")));
        assert!(wants_sse(Some("$alt=sse")));
        assert!(wants_sse(Some("%24alt=sse")));
        assert!(!wants_sse(Some("alt=json")));
        assert!(!wants_sse(Some("$alt=json;enum-encoding=int")));
        assert!(!wants_sse(None));
        let rest = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
        let (info, _) = post(rest, Some("alt=sse"), "{}");
        assert!(info.stream && info.sse);
        let (info, _) = post(rest, None, "{}");
        assert!(
            info.stream && !info.sse,
            "without alt=sse the answer is a JSON array"
        );
        let (info, _) = post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            Some("alt=sse"),
            "{}",
        );
        assert!(!info.stream && !info.sse);
    }

    #[test]
    fn generation_config_gives_the_output_cap() {
        let body = r#"{"contents":[{"role":"user","parts":[{"text":"Explain how AI works in a few words"}]}],"generationConfig":{"temperature":0.2,"maxOutputTokens":800,"thinkingConfig":{"thinkingBudget":0}}}"#;
        let (info, rewritten) = post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            None,
            body,
        );
        assert_eq!(info.model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(info.max_output_tokens, Some(800));
        assert_eq!(info.prompt_tokens_estimate, 9, "35 characters");
        assert!(rewritten.is_none() && !info.usage_injected);
    }

    #[test]
    fn snake_case_config_and_candidate_count() {
        let body =
            r#"{"contents":[],"generation_config":{"max_output_tokens":100,"candidate_count":2}}"#;
        let (info, _) = post("/v1/models/gemini-2.0-flash:generateContent", None, body);
        assert_eq!(info.max_output_tokens, Some(200));
    }

    #[test]
    fn inline_screenshot_counts_as_one_media_part() {
        let data = "iVBORw0KGgoAAAANSUhEUgAAB4AAAAQ4CAIAAABnsVYUAAAAA".repeat(120_000);
        let body = format!(
            r#"{{"contents":[{{"role":"user","parts":[{{"inlineData":{{"mimeType":"image/png","data":"{data}"}}}},{{"text":"Describe this"}}]}}]}}"#
        );
        let (info, rewritten) = post(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            Some("alt=sse"),
            &body,
        );
        assert_eq!(info.prompt_tokens_estimate, MEDIA_PART_TOKENS + 4);
        assert!(rewritten.is_none(), "Gemini bodies are never rewritten");
        let snake = format!(
            r#"{{"contents":[{{"parts":[{{"inline_data":{{"mime_type":"image/png","data":"{data}"}}}},{{"file_data":{{"file_uri":"https://generativelanguage.googleapis.com/v1beta/files/abc"}}}}]}}]}}"#
        );
        let (info, _) = post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            None,
            &snake,
        );
        assert_eq!(info.prompt_tokens_estimate, 2 * MEDIA_PART_TOKENS);
    }

    #[test]
    fn embed_and_count_requests_are_estimated() {
        let body = r#"{"model":"models/text-embedding-004","content":{"parts":[{"text":"What is the meaning of life?"}]}}"#;
        let (info, _) = post("/v1beta/models/text-embedding-004:embedContent", None, body);
        assert_eq!(info.endpoint, Endpoint::EmbedContent);
        assert_eq!(info.prompt_tokens_estimate, 7);
        assert_eq!(info.max_output_tokens, None);
    }

    #[test]
    fn garbage_bodies_of_metered_endpoints_are_refused() {
        for body in ["", "{", "{\"contents\": [", "null", "{\"contents\":[]} x"] {
            assert_eq!(refused(GENERATE, body), BodyError::NotJson, "{body:?}");
        }
        let (info, _) = post("/v1beta/cachedContents", None, "{");
        assert_eq!(
            info.endpoint,
            Endpoint::Other,
            "not in the table: described"
        );
    }

    #[test]
    fn odd_generation_configs_are_forwarded_without_a_cap() {
        for body in [
            "{\"generationConfig\": 5}",
            "{\"generationConfig\":{\"maxOutputTokens\":-1}}",
        ] {
            let (info, rewritten) = post(GENERATE, None, body);
            assert_eq!(info.endpoint, Endpoint::GenerateContent);
            assert_eq!(info.model.as_deref(), Some("gemini-2.5-flash"));
            assert_eq!(info.max_output_tokens, None);
            assert!(rewritten.is_none());
        }
    }

    #[test]
    fn escaped_keys_read_as_the_keys_they_spell() {
        let (info, _) = post(
            GENERATE,
            None,
            r#"{"contents":[],"gener\u0061tionConfig":{"m\u0061xOutputTokens":64}}"#,
        );
        assert_eq!(info.max_output_tokens, Some(64));
    }

    #[test]
    fn a_generation_config_set_twice_is_refused() {
        for (body, key) in [
            (
                r#"{"contents":[],"generationConfig":{"maxOutputTokens":1},"generationConfig":{"maxOutputTokens":9000}}"#,
                "generationConfig",
            ),
            (
                r#"{"contents":[],"generationConfig":{},"generation_config":{"max_output_tokens":9000}}"#,
                "generationConfig",
            ),
            (
                r#"{"contents":[],"generationConfig":{"maxOutputTokens":1,"max_output_tokens":9000}}"#,
                "generationConfig.maxOutputTokens",
            ),
            (
                r#"{"contents":[],"generationConfig":{"maxOutputTokens":1,"m\u0061xOutputTokens":9000}}"#,
                "generationConfig.maxOutputTokens",
            ),
            (
                r#"{"contents":[],"generationConfig":{"candidateCount":1,"candidate_count":8}}"#,
                "generationConfig.candidateCount",
            ),
        ] {
            assert_eq!(
                refused(GENERATE, body),
                BodyError::DuplicateKey(key),
                "{body}"
            );
        }
    }

    fn capped(body: &str, total: u64) -> (serde_json::Value, u64) {
        let (out, cap) = super::cap_output(
            Endpoint::GenerateContent,
            &Bytes::from(body.to_owned()),
            total,
        )
        .unwrap()
        .unwrap();
        (serde_json::from_slice(&out).unwrap(), cap)
    }

    #[test]
    fn an_output_cap_goes_into_generation_config() {
        let (v, cap) = capped(r#"{"contents":[]}"#, 50);
        assert_eq!(v["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(v["contents"], serde_json::json!([]));
        assert_eq!(cap, 50);
        let (v, _) = capped(r#"{"generationConfig":{"temperature":0.5}}"#, 50);
        assert_eq!(v["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(v["generationConfig"]["temperature"], 0.5);
        let (v, _) = capped(r#"{"generation_config":{"max_output_tokens":9000}}"#, 50);
        assert_eq!(v["generation_config"]["max_output_tokens"], 50);
        assert!(v.get("generationConfig").is_none());
        let (v, _) = capped(r#"{"generationConfig":{}}"#, 50);
        assert_eq!(
            v["generationConfig"],
            serde_json::json!({"maxOutputTokens": 50})
        );
        let (v, _) = capped(r#"{"generationConfig":null}"#, 50);
        assert_eq!(v["generationConfig"]["maxOutputTokens"], 50);
        let (v, cap) = capped(r#"{"generationConfig":{"candidateCount":4}}"#, 50);
        assert_eq!(
            (v["generationConfig"]["maxOutputTokens"].clone(), cap),
            (serde_json::json!(12), 48)
        );
        let (v, _) = capped("{}", 5);
        assert_eq!(
            v,
            serde_json::json!({"generationConfig": {"maxOutputTokens": 5}})
        );
        assert_eq!(
            super::cap_output(
                Endpoint::GenerateContent,
                &Bytes::from_static(br#"{"generationConfig":"x"}"#),
                5
            )
            .unwrap_err(),
            crate::provider::CapError::Unreadable
        );
        assert!(
            super::cap_output(Endpoint::CountTokens, &Bytes::from_static(b"{}"), 5)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_path_without_a_model_takes_the_bodys() {
        let read = |rest: &str, body: &'static [u8]| {
            inspect(&Method::POST, rest, None, &Bytes::from_static(body))
                .map(|(info, _)| (info.model, info.model_ambiguous))
                .unwrap()
        };
        assert_eq!(
            read(
                "/v1beta/cachedContents",
                br#"{"model":"models/gemini-2.5-pro"}"#
            ),
            (Some("gemini-2.5-pro".into()), false)
        );
        assert_eq!(
            read(
                "/v1beta/openai/chat/completions",
                br#"{"model":"gemini-2.5-flash"}"#
            ),
            (Some("gemini-2.5-flash".into()), false)
        );
        assert_eq!(
            read("/v1beta/openai/chat/completions", br#"{"model":1}"#),
            (None, true)
        );
        // The path's model wins: Google binds path parameters over the body.
        assert_eq!(
            read(
                "/v1beta/models/gemini-2.5-flash:generateContent",
                br#"{"model":"models/gemini-2.5-pro"}"#
            ),
            (Some("gemini-2.5-flash".into()), false)
        );
    }
}
