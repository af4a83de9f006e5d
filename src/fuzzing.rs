//! Fuzz targets for every parser on the request and answer path, one function per target, each
//! taking the fuzzer's bytes: the SSE framer, the JSON-array framer, both usage extractors, the
//! response tap, both request inspectors (with OpenAI's `include_usage` rewrite), the output cap
//! a plan writes into a request, credential extraction and path normalisation.
//!
//! They live in the library, not in `fuzz/`, for two reasons: some of the functions they call
//! are crate-private (`parse_usage`), and `cargo test` must run exactly the same checks as the
//! fuzzer — `tests/fuzz_corpus.rs` replays the committed corpus (`fuzz/corpus/<target>/`) and a
//! bounded mutation pass through these functions on stable Rust, while `fuzz/fuzz_targets/*.rs`
//! are two-liners that hand libFuzzer's input to them (`scripts/fuzz`).
//!
//! Every target asserts properties, not just the absence of a panic: the framers give the same
//! events whatever way the input is cut into chunks and agree with a plain reading of their
//! format; the usage extractors agree with a model of the documented mapping over `serde_json`;
//! the tap forwards every byte it does not drop and reports the same whatever the chunking; the
//! inspectors never refuse well-formed JSON as malformed, read the same fields as `serde_json`,
//! and rewrite into valid JSON that changes nothing but `stream_options.include_usage`; what the
//! gateway reads as a credential is what it strips; an accepted path keeps every promise of
//! [`normalize_path`](crate::provider::normalize_path). A failed property panics (that is how a
//! fuzzer sees it), so these functions are not for production use.
//!
//! Control bytes: where a target needs a choice (a provider, a bound, split points), it takes it
//! from the first bytes of the input, so the fuzzer can mutate the choice like any other byte.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value};

use crate::auth::{
    CREDENTIAL_HEADERS, credential as read_credential, strip_credential_headers, strip_key_param,
};
use crate::provider::{
    self, BodyError, Endpoint, MEDIA_PART_TOKENS, ProviderKind, RequestInfo, ResponseTap,
    TapReport, Usage,
};
use crate::stream::{JsonArrayFramer, MAX_EVENT_BYTES, SseParser};

/// A small deterministic generator (SplitMix64) for split points, seeded from control bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u8, len: usize) -> Rng {
        Rng(u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ len as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// The ways an input is cut into chunks: whole, at up to eight points drawn from `seed` (empty
/// chunks included), and — for inputs up to `bytewise` bytes — one byte at a time. Each
/// chunking comes with its cut offsets.
fn chunkings(input: &[u8], seed: u8, bytewise: usize) -> Vec<(Vec<&[u8]>, Vec<usize>)> {
    let mut out = vec![(vec![input], Vec::new())];
    let mut rng = Rng::new(seed, input.len());
    let mut cuts: Vec<usize> = (0..1 + rng.below(8))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0;
    for &c in &cuts {
        chunks.push(&input[prev..c]);
        prev = c;
    }
    chunks.push(&input[prev..]);
    out.push((chunks, cuts));
    if input.len() <= bytewise {
        out.push((input.chunks(1).collect(), (1..input.len()).collect()));
    }
    out
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

// ------------------------------------------------------------------------------------------
// SSE framer
// ------------------------------------------------------------------------------------------

/// One event as the checks compare them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    event: Vec<u8>,
    data: Vec<u8>,
    start: u64,
    end: u64,
}

/// Push `chunks` through a parser bounded by `max`, then finish; checks what must hold after
/// every push. Returns the events and the count of skipped ones.
fn sse_run(max: usize, chunks: &[&[u8]]) -> (Vec<Ev>, u64) {
    let mut parser = SseParser::with_max_event_bytes(max);
    let mut events: Vec<Ev> = Vec::new();
    let mut pushed = 0u64;
    for chunk in chunks {
        parser.push(chunk, |ev| {
            events.push(Ev {
                event: ev.event.to_vec(),
                data: ev.data.to_vec(),
                start: ev.start,
                end: ev.end,
            });
        });
        pushed += chunk.len() as u64;
        assert_eq!(
            parser.position(),
            pushed,
            "position counts every byte pushed"
        );
        if let Some(hold) = parser.hold_from() {
            assert!(
                hold <= pushed,
                "hold_from {hold} is past the bytes received"
            );
            let settled = events.last().map_or(0, |e| e.end);
            assert!(
                hold >= settled,
                "hold_from {hold} reaches back into an event already dispatched (ends {settled})"
            );
        }
    }
    parser.finish(|ev| {
        events.push(Ev {
            event: ev.event.to_vec(),
            data: ev.data.to_vec(),
            start: ev.start,
            end: ev.end,
        });
    });
    (events, parser.skipped())
}

/// A plain reading of the WHATWG event-stream algorithm over the whole input, line by line, with
/// the parser's two documented choices: an event still open at the end of the stream is
/// dispatched when it has data, and an event whose bytes — from its first field line to the end
/// of its last line before the blank line, comments and line ends included — exceed `max` is
/// skipped up to the next blank line. Returns the events with their stream offsets, and the
/// count of skipped events.
fn sse_reference(input: &[u8], max: usize) -> (Vec<Ev>, u64) {
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut i = if input.starts_with(BOM) { BOM.len() } else { 0 };
    let mut start: Option<usize> = None;
    let mut event: Vec<u8> = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    let mut skipping = false;
    while i < input.len() {
        let content_end = input[i..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(input.len(), |j| i + j);
        let terminated = content_end < input.len();
        let mut next = content_end;
        if terminated {
            next += 1;
            if input[content_end] == b'\r' && input.get(next) == Some(&b'\n') {
                next += 1;
            }
        }
        let line = &input[i..content_end];
        if skipping {
            if line.is_empty() {
                skipping = false;
            }
        } else if line.is_empty() {
            if let Some(d) = data.take() {
                out.push(Ev {
                    event: std::mem::take(&mut event),
                    data: d,
                    start: start.unwrap_or(i) as u64,
                    end: next as u64,
                });
            }
            event.clear();
            start = None;
        } else {
            if line[0] != b':' {
                start.get_or_insert(i);
                let (field, value) = match line.iter().position(|&b| b == b':') {
                    Some(c) => {
                        let v = &line[c + 1..];
                        (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
                    }
                    None => (line, &b""[..]),
                };
                match field {
                    b"data" => match &mut data {
                        Some(d) => {
                            d.push(b'\n');
                            d.extend_from_slice(value);
                        }
                        None => data = Some(value.to_vec()),
                    },
                    b"event" => event = value.to_vec(),
                    _ => {}
                }
            }
            if let Some(s) = start
                && next - s > max
            {
                skipping = true;
                skipped += 1;
                start = None;
                event.clear();
                data = None;
            }
        }
        i = next;
    }
    if !skipping && let Some(d) = data {
        out.push(Ev {
            event,
            data: d,
            start: start.unwrap_or(input.len()) as u64,
            end: input.len() as u64,
        });
    }
    (out, skipped)
}

/// Control byte: the bound (the default, or a small one so that skipping is exercised), then a
/// seed for split points, then the stream.
///
/// Asserts: the events (type, data, offsets) and the skip count are the same for every chunking
/// — an event's end excepted where a chunk ends between the CR and the LF of its blank line,
/// where it is just past the CR by design — and equal [`sse_reference`]'s reading of the whole
/// input; no event is longer than the bound (plus its blank line) and no data longer than the
/// bound; `hold_from` never reaches back before a dispatched event or past the input.
pub fn sse_framer(input: &[u8]) {
    let [ctl, seed, stream @ ..] = input else {
        return;
    };
    let max = match ctl % 4 {
        0 => MAX_EVENT_BYTES,
        1 => 8,
        2 => 40,
        _ => 200,
    };
    let (want, want_skipped) = sse_reference(stream, max);
    for (chunks, cuts) in chunkings(stream, *seed, 4096) {
        let (got, skipped) = sse_run(max, &chunks);
        assert_eq!(got.len(), want.len(), "event count, cuts {cuts:?}: {got:?}");
        assert_eq!(skipped, want_skipped, "skipped events, cuts {cuts:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (&g.event, &g.data, g.start),
                (&w.event, &w.data, w.start),
                "cuts {cuts:?}"
            );
            let cut_in_crlf = w.end >= 2
                && stream[w.end as usize - 2..w.end as usize] == *b"\r\n"
                && cuts.contains(&(w.end as usize - 1));
            if cut_in_crlf && g.end + 1 == w.end {
                // Dispatched at the CR, which ended its chunk.
            } else {
                assert_eq!(g.end, w.end, "event end, cuts {cuts:?}");
            }
            assert!(g.start < g.end && g.end <= stream.len() as u64);
            assert!(g.data.len() <= max, "data over the bound");
            assert!(g.end - g.start <= max as u64 + 2, "event over the bound");
            let first = stream[g.start as usize];
            assert!(
                !matches!(first, b':' | b'\r' | b'\n'),
                "an event starts at a field line"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// JSON-array framer
// ------------------------------------------------------------------------------------------

/// Push `chunks` through a framer bounded by `max`: (elements, closed, invalid, skipped).
fn array_run(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool, bool, u64) {
    let mut framer = JsonArrayFramer::with_max_element_bytes(max);
    let mut elements = Vec::new();
    let (mut was_closed, mut was_invalid) = (false, false);
    for chunk in chunks {
        framer.push(chunk, |e| elements.push(e.to_vec()));
        assert!(!(framer.closed() && framer.invalid()));
        assert!(
            !was_closed || framer.closed(),
            "a closed array stays closed"
        );
        assert!(
            !was_invalid || framer.invalid(),
            "an invalid input stays invalid"
        );
        was_closed = framer.closed();
        was_invalid = framer.invalid();
    }
    let closed = framer.finish();
    assert_eq!(closed, framer.closed());
    (elements, closed, framer.invalid(), framer.skipped())
}

/// Control byte: the bound (the default or a small one), then a seed for split points, then the
/// stream.
///
/// Asserts: elements, `closed`, `invalid` and the skip count are the same for every chunking; no
/// element is empty or over the bound; the elements are slices of the input, in order; and when
/// `serde_json` reads the input (a leading BOM aside) as an array, the elements are exactly its
/// values in order — those over the bound counted as skipped instead — and the array is closed.
pub fn json_array_framer(input: &[u8]) {
    let [ctl, seed, stream @ ..] = input else {
        return;
    };
    let max = match ctl % 4 {
        0 => MAX_EVENT_BYTES,
        1 => 4,
        2 => 32,
        _ => 256,
    };
    let all = chunkings(stream, *seed, 4096);
    let (want, closed, invalid, skipped) = array_run(max, &all[0].0);
    for (chunks, cuts) in &all[1..] {
        let got = array_run(max, chunks);
        assert_eq!(
            got,
            (want.clone(), closed, invalid, skipped),
            "cuts {cuts:?}"
        );
    }
    let mut from = 0;
    for element in &want {
        assert!(!element.is_empty() && element.len() <= max);
        let at = memchr::memmem::find(&stream[from..], element)
            .expect("an element is a slice of the input, in order");
        from += at + element.len();
    }
    let body = stream.strip_prefix(BOM).unwrap_or(stream);
    if let Ok(values) = serde_json::from_slice::<Vec<Value>>(body) {
        assert!(closed && !invalid, "a well-formed array is closed");
        assert_eq!(want.len() as u64 + skipped, values.len() as u64);
        let mut values = values.iter();
        for element in &want {
            let got: Value =
                serde_json::from_slice(element).expect("an element of a JSON array is JSON");
            assert!(
                values.any(|v| *v == got),
                "element {:?} is not one of the array's values, in order",
                String::from_utf8_lossy(element)
            );
        }
        if skipped == 0 {
            assert!(values.next().is_none());
        }
    }
}

// ------------------------------------------------------------------------------------------
// Usage extractors
// ------------------------------------------------------------------------------------------

/// A top-level or nested member that the walker reads as a count: a non-negative integer.
fn count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// OpenAI's documented mapping over a parsed object (see `openai::parse_usage`): top-level
/// `prompt_tokens`/`completion_tokens` or `input_tokens`/`output_tokens`, `cached_tokens` one
/// level down under a `prompt…`/`input…` key, `reasoning_tokens` under a `completion…`/`output…`
/// key, the last one met winning.
fn openai_model(object: &Map<String, Value>) -> Option<Usage> {
    let (mut prompt, mut completion, mut input, mut output) = (None, None, None, None);
    let (mut cached, mut reasoning) = (0, 0);
    for (key, value) in object {
        if let Some(n) = count(value) {
            match key.as_str() {
                "prompt_tokens" => prompt = Some(n),
                "completion_tokens" => completion = Some(n),
                "input_tokens" => input = Some(n),
                "output_tokens" => output = Some(n),
                _ => {}
            }
        } else if let Value::Object(inner) = value {
            for (k, v) in inner {
                let Some(n) = count(v) else { continue };
                if k == "cached_tokens" && (key.starts_with("prompt") || key.starts_with("input")) {
                    cached = n;
                } else if k == "reasoning_tokens"
                    && (key.starts_with("completion") || key.starts_with("output"))
                {
                    reasoning = n;
                }
            }
        }
    }
    let (input, output) = match (input, prompt) {
        (Some(i), _) => (i, output),
        (None, Some(p)) => (p, completion),
        (None, None) => return None,
    };
    Some(Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output.unwrap_or(0),
        reasoning_tokens: reasoning,
    })
}

/// Gemini's documented mapping over a parsed object (see `gemini::parse_usage`).
fn gemini_model(object: &Map<String, Value>) -> Option<Usage> {
    let (mut prompt, mut total) = (None, None);
    let (mut candidates, mut cached, mut thoughts, mut tool_use) = (0u64, 0, 0u64, 0u64);
    for (key, value) in object {
        let Some(n) = count(value) else { continue };
        match key.as_str() {
            "promptTokenCount" | "prompt_token_count" => prompt = Some(n),
            "candidatesTokenCount" | "candidates_token_count" => candidates = n,
            "cachedContentTokenCount" | "cached_content_token_count" => cached = n,
            "thoughtsTokenCount" | "thoughts_token_count" => thoughts = n,
            "toolUsePromptTokenCount" | "tool_use_prompt_token_count" => tool_use = n,
            "totalTokenCount" | "total_token_count" => total = Some(n),
            _ => {}
        }
    }
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

/// The checks shared by both extractors. `parse` is the extractor, `model` its documented
/// mapping.
fn usage_target(
    input: &[u8],
    parse: fn(&[u8]) -> Option<Usage>,
    model: fn(&Map<String, Value>) -> Option<Usage>,
) {
    let got = parse(input);
    let end = provider::json::object_numbers(input, |_, _, _| {});
    if got.is_some() {
        assert!(end.is_some(), "a report is read only from a whole object");
    }
    let Some(end) = end else {
        return;
    };
    // Trailing bytes are ignored: the object alone, or followed by anything, reads the same.
    let object = &input[..end];
    assert_eq!(parse(object), got, "the object alone");
    let mut followed = object.to_vec();
    followed.extend_from_slice(b",\"usage\":{\"prompt_tokens\":1}}]x");
    assert_eq!(parse(&followed), got, "the object followed by more");
    // On JSON as a serializer writes it, the extractor is the documented mapping — counts above
    // `MAX_TOKENS_PER_CALL` included: the tap reports what the provider said, and the proxy
    // judges it (`Usage::is_plausible`), so nothing may be clamped or dropped here.
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(object) {
        let want = model(&map);
        let compact = serde_json::to_vec(&map).expect("a map serializes");
        assert_eq!(
            parse(&compact),
            want,
            "{}",
            String::from_utf8_lossy(&compact)
        );
        let pretty = serde_json::to_vec_pretty(&map).expect("a map serializes");
        assert_eq!(parse(&pretty), want, "pretty-printed");
    }
}

/// Asserts for `openai::parse_usage`: a report only from a whole object, trailing bytes
/// ignored, and on serializer-written JSON exactly the documented mapping.
pub fn openai_usage(input: &[u8]) {
    usage_target(input, provider::openai::parse_usage, openai_model);
}

/// Asserts for `gemini::parse_usage`: as [`openai_usage`], with Gemini's mapping.
pub fn gemini_usage(input: &[u8]) {
    usage_target(input, provider::gemini::parse_usage, gemini_model);
}

// ------------------------------------------------------------------------------------------
// Response tap
// ------------------------------------------------------------------------------------------

const OPENAI_ENDPOINTS: [Endpoint; 5] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Responses,
    Endpoint::Embeddings,
    Endpoint::Other,
];

const GEMINI_ENDPOINTS: [Endpoint; 6] = [
    Endpoint::GenerateContent,
    Endpoint::StreamGenerateContent,
    Endpoint::CountTokens,
    Endpoint::EmbedContent,
    Endpoint::BatchEmbedContents,
    Endpoint::Other,
];

/// One answer as the tap is told about it.
#[derive(Clone, Debug)]
struct Answer {
    kind: ProviderKind,
    info: RequestInfo,
    status: StatusCode,
    headers: HeaderMap,
}

impl Answer {
    fn tap(&self) -> ResponseTap {
        ResponseTap::new(self.kind, &self.info, self.status, &self.headers)
    }

    /// Push `chunks`, then finish: (bytes forwarded, report). Without a rewrite every push
    /// must hand back the very chunk.
    fn run(&self, chunks: &[&[u8]], rewriting: bool) -> (Vec<u8>, TapReport) {
        let mut tap = self.tap();
        let mut out = Vec::new();
        for chunk in chunks {
            let chunk = Bytes::copy_from_slice(chunk);
            let forwarded = tap.push(chunk.clone());
            if !rewriting {
                assert_eq!(
                    forwarded, chunk,
                    "without a rewrite a chunk is forwarded as it is"
                );
            }
            out.extend_from_slice(&forwarded);
        }
        out.extend_from_slice(&tap.finish());
        let report = tap.report();
        assert_eq!(
            tap.finish(),
            Bytes::new(),
            "a second finish forwards nothing"
        );
        (out, report)
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// Control byte: bit 0 the provider, bits 1–3 the endpoint, bits 4–5 the answer's shape (a JSON
/// body; an SSE stream; a streamed JSON array, or for OpenAI a JSON body without a content type;
/// an error status with a JSON body), bit 6 `usage_injected` (OpenAI chat and legacy
/// completion streams, as `inspect` sets it), bit 7 gzip. Then a seed for split points, then
/// the answer's body (at most 60,000 bytes are used, below the tap's retained tail).
///
/// Asserts: without a rewrite the tap forwards every byte, each chunk as it came; with one
/// (`usage_injected` on an SSE answer) it forwards the decoded body minus exactly the events
/// that it drops when each is shown to it alone, and reports what a tap without the rewrite
/// reports; the report and the bytes forwarded are the same for every chunking; an error
/// status is always flagged; `countTokens` never reports usage; `adjust_headers` removes
/// `content-length` (and a decoded `content-encoding`) exactly when the body is rewritten.
pub fn response_tap(input: &[u8]) {
    let [ctl, seed, body @ ..] = input else {
        return;
    };
    let ctl = *ctl;
    let body = &body[..body.len().min(60_000)];
    let kind = if ctl & 1 == 0 {
        ProviderKind::Openai
    } else {
        ProviderKind::Gemini
    };
    let endpoints: &[Endpoint] = match kind {
        ProviderKind::Openai => &OPENAI_ENDPOINTS,
        ProviderKind::Gemini => &GEMINI_ENDPOINTS,
    };
    let endpoint = endpoints[usize::from((ctl >> 1) & 7) % endpoints.len()];
    let shape = (ctl >> 4) & 3;
    let compressed = ctl & 0x80 != 0;
    let injected = ctl & 0x40 != 0
        && shape == 1
        && kind == ProviderKind::Openai
        && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
    let mut headers = HeaderMap::new();
    let (content_type, status, stream, sse) = match shape {
        0 => (Some("application/json"), StatusCode::OK, false, false),
        1 => (
            Some("text/event-stream; charset=utf-8"),
            StatusCode::OK,
            true,
            true,
        ),
        2 if kind == ProviderKind::Gemini => (
            Some("application/json; charset=UTF-8"),
            StatusCode::OK,
            true,
            false,
        ),
        2 => (None, StatusCode::OK, false, false),
        _ => (
            Some("application/json"),
            StatusCode::TOO_MANY_REQUESTS,
            false,
            false,
        ),
    };
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let plain_headers = headers.clone();
    if compressed {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let info = RequestInfo {
        endpoint,
        model: None,
        stream,
        max_output_tokens: None,
        prompt_tokens_estimate: 0,
        media_parts: 0,
        usage_injected: injected,
        sse,
        model_ambiguous: false,
    };
    let answer = Answer {
        kind,
        info: info.clone(),
        status,
        headers,
    };
    let wire = if compressed {
        Cow::Owned(gzip(body))
    } else {
        Cow::Borrowed(body)
    };

    let mut adjusted = answer.headers.clone();
    adjusted.insert(header::CONTENT_LENGTH, HeaderValue::from(wire.len()));
    answer.tap().adjust_headers(&mut adjusted);
    assert_eq!(
        !adjusted.contains_key(header::CONTENT_LENGTH),
        injected,
        "content-length goes exactly when the body is rewritten"
    );
    assert_eq!(
        adjusted.contains_key(header::CONTENT_ENCODING),
        compressed && !injected,
        "content-encoding goes exactly when decoded bytes are forwarded"
    );

    // What must be forwarded: everything, or with the rewrite the decoded body less the events
    // the tap drops. Whether an event is dropped depends on that event alone, so each one is
    // shown to a fresh tap, after a blank line (so that no BOM can open the little stream).
    let expected: Vec<u8> = if injected {
        let alone = Answer {
            headers: plain_headers,
            ..answer.clone()
        };
        let mut events = Vec::new();
        let mut parser = SseParser::new();
        parser.push(body, |ev| events.push((ev.start, ev.end)));
        parser.finish(|ev| events.push((ev.start, ev.end)));
        let mut kept = Vec::with_capacity(body.len());
        let mut at = 0;
        for (start, end) in events {
            let (start, end) = (start as usize, end as usize);
            let mut one = b"\n".to_vec();
            one.extend_from_slice(&body[start..end]);
            let (out, _) = alone.run(&[&one], true);
            if out == b"\n" {
                kept.extend_from_slice(&body[at..start]);
                at = end;
            }
        }
        kept.extend_from_slice(&body[at..]);
        kept
    } else {
        wire.to_vec()
    };

    let mut first: Option<TapReport> = None;
    for (chunks, cuts) in chunkings(&wire, *seed, 1024) {
        let (out, report) = answer.run(&chunks, injected);
        assert!(
            out == expected,
            "forwarded bytes, cuts {cuts:?}: {:?} instead of {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        if !status.is_success() {
            assert!(report.error_seen, "an error status is an error");
        }
        if endpoint == Endpoint::CountTokens {
            assert_eq!(report.usage, None, "countTokens is not consumption");
        }
        match &first {
            None => first = Some(report),
            Some(want) => assert_eq!(&report, want, "report, cuts {cuts:?}"),
        }
    }
    if injected {
        let plain = Answer {
            info: RequestInfo {
                usage_injected: false,
                ..info
            },
            ..answer
        };
        let (_, report) = plain.run(&[&wire], false);
        assert_eq!(
            Some(report),
            first,
            "removing the injected chunk changes nothing in the report"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Request inspectors
// ------------------------------------------------------------------------------------------

const OPENAI_PATHS: [&str; 8] = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/models",
    "/v1/chat/completions/chatcmpl-123",
    "/v1/images/generations",
];

const GEMINI_PATHS: [&str; 8] = [
    "/v1beta/models/gemini-2.5-flash:generateContent",
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    "/v1beta/models/gemini-2.5-pro:countTokens",
    "/v1beta/models/text-embedding-004:embedContent",
    "/v1beta/models/gemini-embedding-001:batchEmbedContents",
    "/v1beta/tunedModels/my-model-7x2k:generateContent",
    "/v1/models/gemini-2.0-flash:streamGenerateContent",
    "/v1beta/models",
];

const GEMINI_QUERIES: [Option<&str>; 4] = [
    None,
    Some("alt=sse"),
    Some("$alt=sse&x=1"),
    Some("alt=json"),
];

/// The body as strict JSON, when `serde_json` reads it as one object (no BOM, no trailing
/// bytes, nesting within its limit, strings valid UTF-8).
fn strict_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// What holds for both providers' `inspect`.
fn inspect_common(
    kind: ProviderKind,
    method: &Method,
    rest: &str,
    body: &Bytes,
    result: &Result<(RequestInfo, Option<Bytes>), provider::Refused>,
) {
    let endpoint = provider::endpoint(kind, method, rest);
    let info = match result {
        Ok((info, _)) => info,
        Err(refused) => {
            assert_ne!(
                endpoint,
                Endpoint::Other,
                "only table endpoints refuse a body"
            );
            &refused.info
        }
    };
    assert_eq!(info.endpoint, endpoint, "inspect and endpoint agree");
    assert!(!info.sse || info.stream, "SSE is a stream");
    let bound =
        (body.len() as u64).saturating_add(info.media_parts.saturating_mul(MEDIA_PART_TOKENS));
    assert!(
        info.prompt_tokens_estimate <= bound && info.media_parts <= body.len() as u64,
        "the prompt estimate is bounded by the body"
    );
    if endpoint != Endpoint::Other && strict_object(body).is_some() {
        assert!(
            !matches!(result, Err(r) if r.reason == BodyError::NotJson),
            "a well-formed JSON object is refused as malformed"
        );
    }
}

/// Control byte: bits 0–2 the path (chat, legacy and `/v1`-less paths, Responses, embeddings,
/// and paths outside the table), bit 3 `GET` instead of `POST`. Then the body.
///
/// Asserts, besides what holds for both providers (only a table endpoint refuses; `inspect`
/// and `endpoint` agree; the prompt estimate is bounded by the body; a well-formed JSON object
/// is never refused as malformed): a rewrite happens exactly when `usage_injected` is set, only
/// on chat and legacy completion streams; on a body `serde_json` reads, the model, `stream` and
/// the output cap are what it reads, and the rewrite is JSON with `stream_options.include_usage
/// == true` and every other member — and every other member of `stream_options` — unchanged; a
/// stream left alone already asks for usage; inspecting the rewritten body describes the same
/// request and rewrites nothing.
pub fn openai_inspect(input: &[u8]) {
    let [ctl, body @ ..] = input else {
        return;
    };
    let rest = OPENAI_PATHS[usize::from(ctl & 7)];
    let method = if ctl & 8 == 0 {
        Method::POST
    } else {
        Method::GET
    };
    let body = Bytes::copy_from_slice(body);
    let result = provider::inspect(ProviderKind::Openai, &method, rest, None, &body);
    inspect_common(ProviderKind::Openai, &method, rest, &body, &result);
    let strict = strict_object(&body);
    match &result {
        Ok((info, rewritten)) => {
            assert_eq!(info.usage_injected, rewritten.is_some());
            if let Some(new) = rewritten {
                assert!(info.stream && info.sse);
                assert!(matches!(
                    info.endpoint,
                    Endpoint::ChatCompletions | Endpoint::Completions
                ));
                let again = provider::inspect(ProviderKind::Openai, &method, rest, None, new)
                    .expect("the rewritten body is read");
                assert_eq!(again.1, None, "a rewritten body needs no second rewrite");
                // A `stream_options` that was there is re-serialized, which may spell its
                // strings differently or fold its repeated members (and so change the prompt
                // estimate); an inserted one holds no text.
                let had_options = provider::json::scan_body(&body, [&b"stream_options"[..]], &[])
                    .spans[0]
                    .is_some();
                assert_eq!(
                    again.0,
                    RequestInfo {
                        usage_injected: false,
                        prompt_tokens_estimate: if had_options {
                            again.0.prompt_tokens_estimate
                        } else {
                            info.prompt_tokens_estimate
                        },
                        media_parts: if had_options {
                            again.0.media_parts
                        } else {
                            info.media_parts
                        },
                        ..info.clone()
                    },
                    "the rewritten body describes the same request"
                );
            }
            if let Some(orig) = &strict {
                check_openai_fields(info, orig);
                if let Some(new) = rewritten {
                    check_rewrite(orig, new);
                } else if info.stream
                    && matches!(
                        info.endpoint,
                        Endpoint::ChatCompletions | Endpoint::Completions
                    )
                {
                    match orig.get("stream_options") {
                        Some(Value::Object(options)) => assert_eq!(
                            options.get("include_usage"),
                            Some(&Value::Bool(true)),
                            "a stream left alone already asks for usage"
                        ),
                        Some(Value::Null) | None => {
                            panic!("a stream without stream_options is left alone")
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Err(refused) => {
            if let Some(orig) = &strict
                && refused.reason == BodyError::StreamNotBoolean
            {
                assert!(!matches!(
                    orig.get("stream"),
                    None | Some(Value::Bool(_) | Value::Null)
                ));
            }
        }
    }
}

/// `model`, `stream` and the output cap as `serde_json` reads them.
fn check_openai_fields(info: &RequestInfo, body: &Map<String, Value>) {
    assert_eq!(
        info.model.as_deref(),
        body.get("model").and_then(Value::as_str),
        "model"
    );
    assert_eq!(
        info.stream,
        body.get("stream") == Some(&Value::Bool(true)),
        "stream"
    );
    let number = |key: &str| body.get(key).and_then(Value::as_u64);
    let cap = match info.endpoint {
        Endpoint::ChatCompletions => {
            number("max_completion_tokens").or_else(|| number("max_tokens"))
        }
        Endpoint::Completions => number("max_tokens"),
        Endpoint::Responses => number("max_output_tokens"),
        _ => None,
    };
    let choices = number("n")
        .unwrap_or(1)
        .max(number("best_of").unwrap_or(1))
        .max(1);
    assert_eq!(
        info.max_output_tokens,
        cap.map(|c| c.saturating_mul(choices)),
        "output cap"
    );
}

/// The rewrite is JSON that differs from `orig` only in `stream_options.include_usage`.
fn check_rewrite(orig: &Map<String, Value>, new: &[u8]) {
    let new = strict_object(new).unwrap_or_else(|| {
        panic!(
            "the rewrite of a JSON body is not a JSON object: {}",
            String::from_utf8_lossy(new)
        )
    });
    let Some(Value::Object(options)) = new.get("stream_options") else {
        panic!("the rewrite has no stream_options object");
    };
    assert_eq!(options.get("include_usage"), Some(&Value::Bool(true)));
    if let Some(Value::Object(before)) = orig.get("stream_options") {
        // A `stream_options` the client set is re-serialized by `serde_json`, which reads a
        // float to the nearest double but not always back to the same one (`9.999e35` comes
        // back as `9.999000000000001e35`): its members are kept as `serde_json` writes them.
        // OpenAI's stream options are booleans.
        let written = |v: &Value| {
            serde_json::to_vec(v)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        };
        for (k, v) in before {
            if k != "include_usage" {
                assert_eq!(
                    options.get(k).cloned(),
                    written(v),
                    "stream_options.{k} is kept"
                );
            }
        }
        assert_eq!(
            options.len(),
            before.len() + usize::from(!before.contains_key("include_usage"))
        );
    } else {
        assert_eq!(options.len(), 1, "only include_usage is added");
    }
    for (k, v) in orig {
        if k != "stream_options" {
            assert_eq!(new.get(k), Some(v), "member {k} is kept");
        }
    }
    assert_eq!(
        new.len(),
        orig.len() + usize::from(!orig.contains_key("stream_options"))
    );
}

/// `provider::cap_output` (a plan's output ceiling written into a request) on a body `inspect`
/// accepted, for either provider: it never panics; `TooManyChoices` only when the choices
/// outnumber the tokens; an endpoint that generates is always capped (or, for Gemini, refused
/// as unreadable), one that does not never is; a rewrite sets a cap between 1 and the ceiling
/// that the body, read again, states — same endpoint, model and stream flag — and, on a body
/// `serde_json` reads, changes nothing but the cap fields. Control bytes: provider and path,
/// then the ceiling.
pub fn cap_output(input: &[u8]) {
    let [ctl, ceiling, body @ ..] = input else {
        return;
    };
    let (kind, rest) = if ctl & 8 == 0 {
        (ProviderKind::Openai, OPENAI_PATHS[usize::from(ctl & 7)])
    } else {
        (ProviderKind::Gemini, GEMINI_PATHS[usize::from(ctl & 7)])
    };
    // Small ceilings (where choices can outnumber tokens) as often as large ones.
    let total = if *ceiling < 128 {
        u64::from(*ceiling).max(1)
    } else {
        u64::from(*ceiling) * 1_000
    };
    let body = Bytes::copy_from_slice(body);
    let Ok((info, rewritten)) = provider::inspect(kind, &Method::POST, rest, None, &body) else {
        return;
    };
    let body = rewritten.unwrap_or(body);
    let generates = matches!(
        info.endpoint,
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Responses
            | Endpoint::GenerateContent
            | Endpoint::StreamGenerateContent
    );
    let (new, cap) = match provider::cap_output(kind, &info, &body, total) {
        Err(provider::CapError::TooManyChoices { choices }) => {
            assert!(
                generates && choices > total,
                "{choices} choices, {total} tokens"
            );
            return;
        }
        Err(provider::CapError::Unreadable) => {
            assert!(
                generates && kind == ProviderKind::Gemini,
                "only a Gemini generation config can be unreadable"
            );
            return;
        }
        Ok(None) => {
            assert!(
                !generates,
                "{:?} generates: it must be capped",
                info.endpoint
            );
            return;
        }
        Ok(Some(capped)) => capped,
    };
    assert!(generates);
    assert!((1..=total).contains(&cap), "cap {cap} of {total}");
    let (again, _) =
        provider::inspect(kind, &Method::POST, rest, None, &new).expect("the capped body is read");
    assert_eq!(
        again.max_output_tokens,
        Some(cap),
        "the body states its cap"
    );
    assert_eq!(
        (again.endpoint, &again.model, again.stream),
        (info.endpoint, &info.model, info.stream)
    );
    let Some(mut before) = strict_object(&body) else {
        return;
    };
    let mut after = strict_object(&new).expect("a capped JSON object stays one");
    match kind {
        ProviderKind::Openai => {
            for key in ["max_completion_tokens", "max_tokens", "max_output_tokens"] {
                before.remove(key);
                after.remove(key);
            }
        }
        ProviderKind::Gemini => {
            // Absent, null and `{}` all set nothing; the rewrite makes any of them an object
            // holding only the cap.
            for map in [&mut before, &mut after] {
                for key in ["generationConfig", "generation_config"] {
                    let nothing = match map.get_mut(key) {
                        Some(Value::Object(config)) => {
                            config.remove("maxOutputTokens");
                            config.remove("max_output_tokens");
                            config.is_empty()
                        }
                        Some(Value::Null) => true,
                        _ => false,
                    };
                    if nothing {
                        map.remove(key);
                    }
                }
            }
        }
    }
    assert_eq!(before, after, "only the cap changed");
}

/// Control byte: bits 0–2 the path (every Gemini endpoint, a tuned model, a path outside the
/// table), bits 3–4 the query (`alt=sse` spellings or none), bit 5 `GET`. Then the body.
///
/// Asserts, besides what holds for both providers: Gemini bodies are never rewritten; SSE is
/// asked for only on `streamGenerateContent` with `alt=sse`; on a body `serde_json` reads whose
/// generation config is an object of counts, the output cap is its `maxOutputTokens` (either
/// spelling) times its candidate count.
pub fn gemini_inspect(input: &[u8]) {
    let [ctl, body @ ..] = input else {
        return;
    };
    let rest = GEMINI_PATHS[usize::from(ctl & 7)];
    let query = GEMINI_QUERIES[usize::from((ctl >> 3) & 3)];
    let method = if ctl & 0x20 == 0 {
        Method::POST
    } else {
        Method::GET
    };
    let body = Bytes::copy_from_slice(body);
    let result = provider::inspect(ProviderKind::Gemini, &method, rest, query, &body);
    inspect_common(ProviderKind::Gemini, &method, rest, &body, &result);
    let Ok((info, rewritten)) = &result else {
        return;
    };
    assert_eq!(rewritten, &None, "Gemini bodies are never rewritten");
    assert!(!info.usage_injected);
    assert_eq!(
        info.sse,
        info.endpoint == Endpoint::StreamGenerateContent && provider::gemini::wants_sse(query),
    );
    if !matches!(
        info.endpoint,
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent
    ) {
        return;
    }
    let Some(orig) = strict_object(&body) else {
        return;
    };
    let config = orig
        .get("generationConfig")
        .or_else(|| orig.get("generation_config"));
    let Some(Value::Object(config)) = config else {
        return;
    };
    let field = |a: &str, b: &str| config.get(a).or_else(|| config.get(b));
    let (cap, candidates) = (
        field("maxOutputTokens", "max_output_tokens"),
        field("candidateCount", "candidate_count"),
    );
    let readable = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_u64().is_some());
    if readable(cap) && readable(candidates) {
        let candidates = candidates.and_then(Value::as_u64).unwrap_or(1).max(1);
        assert_eq!(
            info.max_output_tokens,
            cap.and_then(Value::as_u64)
                .map(|c| c.saturating_mul(candidates)),
            "output cap"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Credentials
// ------------------------------------------------------------------------------------------

/// The input's first line is the query; each further line `name: value` is a header (lines that
/// are not a valid header are left out).
///
/// Asserts: whatever `credential` reads from the query, `strip_key_param` removes — the stripped
/// query yields no credential, and a query from which nothing is stripped yields none either;
/// the pairs kept are the others, byte for byte and in order; stripping is idempotent; after
/// `strip_credential_headers` and `strip_key_param` nothing the gateway reads as a credential
/// is left for the provider, no credential header remains and every other header does; a
/// credential read is never blank, and one read from a header has no surrounding whitespace.
pub fn credential(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim_start()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let none = HeaderMap::new();

    let stripped = strip_key_param(query);
    let from_query = read_credential(&none, Some(query));
    if let Some(token) = &from_query {
        assert!(
            !token.trim().is_empty(),
            "a blank credential is no credential"
        );
        assert!(stripped.is_some(), "a key that is read is stripped");
    }
    let forwarded = stripped.as_deref().unwrap_or(query);
    assert_eq!(
        read_credential(&none, Some(forwarded)),
        None,
        "a credential is left in the forwarded query {forwarded:?}"
    );
    if let Some(s) = &stripped {
        assert_eq!(
            strip_key_param(s),
            None,
            "stripping twice strips nothing more"
        );
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| strip_key_param(pair).is_none())
            .collect();
        assert_eq!(
            *s,
            kept.join("&"),
            "the other pairs are kept, byte for byte and in order"
        );
    }

    let token = read_credential(&headers, Some(query));
    if let Some(t) = &token {
        assert!(!t.trim().is_empty());
        let in_headers = read_credential(&headers, None);
        if let Some(h) = &in_headers {
            assert_eq!(h, t, "a header credential wins over the query");
            assert_eq!(h.trim(), h.as_ref(), "a header credential is trimmed");
        } else {
            assert_eq!(
                token, from_query,
                "without a header credential, the query's"
            );
        }
    }
    let others = headers
        .keys()
        .filter(|k| !CREDENTIAL_HEADERS.contains(k))
        .map(|k| (k.clone(), headers.get_all(k).iter().count()))
        .collect::<Vec<_>>();
    let mut clean = headers.clone();
    strip_credential_headers(&mut clean);
    assert_eq!(
        read_credential(&clean, Some(forwarded)),
        None,
        "a credential reaches the provider"
    );
    for name in &CREDENTIAL_HEADERS {
        assert!(!clean.contains_key(name), "{name} is forwarded");
    }
    for (name, n) in others {
        assert_eq!(clean.get_all(&name).iter().count(), n, "{name} is kept");
    }
}

// ------------------------------------------------------------------------------------------
// Path normalisation
// ------------------------------------------------------------------------------------------

/// The words of the endpoint table, as `provider::path` lists them: the checks keep their own
/// copy so that they are an independent reading of the rule.
const TABLE_WORDS: [&str; 14] = [
    "v1",
    "v1beta",
    "v1alpha",
    "chat",
    "completions",
    "responses",
    "embeddings",
    "models",
    "tunedModels",
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
];

/// RFC 3986 unreserved characters and the sub-delimiters other than `;`, with `:`, `@`, `/`.
fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b)
}

fn case_variant(part: &str) -> bool {
    TABLE_WORDS
        .iter()
        .any(|w| w.eq_ignore_ascii_case(part) && *w != part)
}

/// The rule `normalize_path` documents, read independently: the normalised path when `path`
/// is accepted, else `None`.
fn path_rule(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return None;
    }
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if matches!(bytes.get(i + 1..i + 3), Some(b"3A" | b"3a")) => {
                decoded.push(':');
                i += 3;
            }
            b if path_byte(b) => {
                decoded.push(char::from(b));
                i += 1;
            }
            _ => return None,
        }
    }
    if decoded.contains("//") {
        return None;
    }
    if decoded.len() > 1 && decoded.ends_with('/') {
        decoded.pop();
    }
    if decoded != "/" {
        let segments: Vec<&str> = decoded[1..].split('/').collect();
        for (n, segment) in segments.iter().enumerate() {
            if segment.is_empty() || *segment == "." || *segment == ".." || case_variant(segment) {
                return None;
            }
            if n + 1 == segments.len()
                && let Some((_, method)) = segment.rsplit_once(':')
                && case_variant(method)
            {
                return None;
            }
        }
    }
    Some(decoded)
}

/// The input as a path (invalid UTF-8 replaced).
///
/// Asserts: `normalize_path` accepts exactly the paths its documented rule accepts, and
/// normalises them the same way (`%3A` decoded, one trailing `/` removed); an accepted path
/// starts with `/`, has only the allowed characters, no `%`, no empty, `.` or `..` segment, no
/// trailing `/` (but `/`), no case variant of a table word; normalising it again changes
/// nothing and copies nothing.
pub fn normalize_path(input: &[u8]) {
    let path = String::from_utf8_lossy(input);
    let got = provider::normalize_path(&path);
    let want = path_rule(&path);
    assert_eq!(
        got.as_deref().ok(),
        want.as_deref(),
        "{path:?}: {got:?} where the rule says {want:?}"
    );
    let Ok(out) = got else {
        return;
    };
    assert!(out.starts_with('/'));
    assert!(out.bytes().all(path_byte) && !out.contains('%'));
    assert!(out == "/" || !out.ends_with('/'));
    assert!(!out.contains("//"));
    for segment in out.split('/').skip(1) {
        assert!(out == "/" || !segment.is_empty());
        assert!(segment != "." && segment != "..");
    }
    match provider::normalize_path(&out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out, "normalising twice changes nothing"),
        other => panic!("{out:?} normalised again gives {other:?}"),
    }
}
