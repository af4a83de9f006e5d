//! Framing and usage extraction on realistic answers, in bytes per second.
//!
//! Run: `cargo bench --bench stream_usage` (one case: `cargo bench --bench stream_usage -- openai_sse_chunk_1k`).
//!
//! - `tap::*`: the production path: `ResponseTap::new` → `push(Bytes)` per chunk → `finish()` →
//!   `report()`, on ~1 MiB streams built from the fixtures in `tests/fixtures/` (the content
//!   events repeated, the real end of the stream kept: OpenAI's usage chunk and `[DONE]`, Gemini's
//!   `finishReason` event or element), delivered in chunks of 64 B, 1 KiB, 16 KiB or whole.
//! - `injected::*`: the same OpenAI stream with `usage_injected = true`, where the tap forwards
//!   complete events only and removes the usage chunk it added.
//! - `framer::*`: the bare `SseParser` / `JsonArrayFramer` on the same streams and chunkings,
//!   without any provider parsing.
//! - `json_body::*`: non-streaming answers (OpenAI chat ~1 KB, OpenAI embeddings 33 KB, Gemini
//!   generateContent ~1 KB): time per body.
//!
//! `main` first checks that every synthetic stream still reports the fixture's usage, so a case
//! never times a path that silently stopped reading usage.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark's set-up fails loudly on a broken fixture"
)]

use std::sync::LazyLock;

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tollgate::provider::{Endpoint, ProviderKind, RequestInfo, ResponseTap, TapReport, Usage};
use tollgate::stream::{JsonArrayFramer, SseParser};

const OPENAI_SSE: &[u8] = include_bytes!("../tests/fixtures/openai/chat_stream_usage.sse");
const GEMINI_SSE: &[u8] = include_bytes!("../tests/fixtures/gemini/stream_sse.sse");
const GEMINI_ARRAY: &[u8] = include_bytes!("../tests/fixtures/gemini/stream_array.json");
const OPENAI_CHAT: &[u8] = include_bytes!("../tests/fixtures/openai/chat.json");
const OPENAI_EMBEDDINGS: &[u8] = include_bytes!("../tests/fixtures/openai/embeddings.json");
const GEMINI_GENERATE: &[u8] = include_bytes!("../tests/fixtures/gemini/generate_content.json");

/// Size the synthetic streams grow to (before their closing events).
const TARGET_BYTES: usize = 1 << 20;

fn main() {
    check_fixtures();
    divan::main();
}

// === the streams ===

/// Split `hay` after every `sep` (each piece keeps its separator).
fn split_after<'a>(hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = memchr::memmem::find(&hay[start..], sep) {
        let end = start + i + sep.len();
        out.push(&hay[start..end]);
        start = end;
    }
    if start < hay.len() {
        out.push(&hay[start..]);
    }
    out
}

/// `head`, then `body` repeated until the stream reaches [`TARGET_BYTES`], then `tail`.
fn grow(head: &[u8], body: &[u8], tail: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(TARGET_BYTES + body.len() + tail.len());
    out.extend_from_slice(head);
    while out.len() < TARGET_BYTES {
        out.extend_from_slice(body);
    }
    out.extend_from_slice(tail);
    Bytes::from(out)
}

/// OpenAI chat stream (`\n\n` between events): the role event, the ten content events repeated,
/// then the finish event, the usage-only chunk and `[DONE]`.
static OPENAI_STREAM: LazyLock<Bytes> = LazyLock::new(|| {
    let events = split_after(OPENAI_SSE, b"\n\n");
    assert_eq!(events.len(), 14, "chat_stream_usage.sse changed shape");
    grow(events[0], &events[1..11].concat(), &events[11..].concat())
});

/// The usage-only chunk Tollgate removes when it injected `include_usage`.
static OPENAI_USAGE_EVENT: LazyLock<&'static [u8]> = LazyLock::new(|| {
    let events = split_after(OPENAI_SSE, b"\n\n");
    assert!(
        events[12].starts_with(b"data: {")
            && memchr::memmem::find(events[12], b"\"choices\":[]").is_some()
    );
    events[12]
});

/// Gemini `alt=sse` stream (`\r\n\r\n` between events, running usage in each): the first two
/// events repeated, then the `finishReason` one.
static GEMINI_SSE_STREAM: LazyLock<Bytes> = LazyLock::new(|| {
    let events = split_after(GEMINI_SSE, b"\r\n\r\n");
    assert_eq!(events.len(), 3, "stream_sse.sse changed shape");
    grow(b"", &events[..2].concat(), events[2])
});

/// Gemini JSON-array stream: `[`, the first two elements repeated, the last element, `]`.
static GEMINI_ARRAY_STREAM: LazyLock<Bytes> = LazyLock::new(|| {
    let inner = GEMINI_ARRAY.strip_prefix(b"[").unwrap();
    let inner = inner.trim_ascii_end().strip_suffix(b"]").unwrap();
    // Elements are separated by a line holding only a comma (CRLF line ends).
    let sep: &[u8] = b"\r\n,\r\n";
    let mut elements: Vec<&[u8]> = split_after(inner, sep);
    for e in &mut elements {
        *e = e.strip_suffix(sep).unwrap_or(e);
    }
    assert_eq!(elements.len(), 3, "stream_array.json changed shape");
    let mut body = Vec::new();
    for e in &elements[..2] {
        body.extend_from_slice(e);
        body.extend_from_slice(sep);
    }
    let mut tail = elements[2].trim_ascii_end().to_vec();
    tail.extend_from_slice(b"\r\n]");
    grow(b"[", &body, &tail)
});

/// What a stream is and how the tap must be set up for it.
#[derive(Clone, Copy)]
enum Stream {
    OpenaiSse,
    GeminiSse,
    GeminiArray,
}

impl Stream {
    fn bytes(self) -> &'static Bytes {
        match self {
            Stream::OpenaiSse => &OPENAI_STREAM,
            Stream::GeminiSse => &GEMINI_SSE_STREAM,
            Stream::GeminiArray => &GEMINI_ARRAY_STREAM,
        }
    }

    fn kind(self) -> ProviderKind {
        match self {
            Stream::OpenaiSse => ProviderKind::Openai,
            Stream::GeminiSse | Stream::GeminiArray => ProviderKind::Gemini,
        }
    }

    fn info(self, usage_injected: bool) -> RequestInfo {
        let (endpoint, model, sse) = match self {
            Stream::OpenaiSse => (Endpoint::ChatCompletions, "gpt-4o-mini", true),
            Stream::GeminiSse => (Endpoint::StreamGenerateContent, "gemini-2.5-flash", true),
            Stream::GeminiArray => (Endpoint::StreamGenerateContent, "gemini-2.0-flash", false),
        };
        RequestInfo {
            endpoint,
            model: Some(model.into()),
            stream: true,
            max_output_tokens: None,
            prompt_tokens_estimate: 12,
            media_parts: 0,
            usage_injected,
            sse,
            model_ambiguous: false,
        }
    }

    fn headers(self) -> HeaderMap {
        let content_type = match self {
            Stream::OpenaiSse => "text/event-stream; charset=utf-8",
            Stream::GeminiSse => "text/event-stream",
            Stream::GeminiArray => "application/json; charset=UTF-8",
        };
        content_headers(content_type)
    }
}

fn content_headers(content_type: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers
}

/// `stream` cut into `size`-byte chunks (refcounted slices of one buffer); 0 means whole.
fn chunks(stream: &Bytes, size: usize) -> Vec<Bytes> {
    if size == 0 {
        return vec![stream.clone()];
    }
    (0..stream.len())
        .step_by(size)
        .map(|at| stream.slice(at..(at + size).min(stream.len())))
        .collect()
}

// === what each case runs ===

/// One answer through the tap as `MeteredBody` drives it. Returns the report and the number of
/// bytes forwarded (which must equal the input unless the tap removes the injected chunk).
fn through_tap(
    kind: ProviderKind,
    info: &RequestInfo,
    headers: &HeaderMap,
    chunks: &[Bytes],
) -> (TapReport, usize) {
    let mut tap = ResponseTap::new(kind, info, StatusCode::OK, headers);
    let mut forwarded = 0;
    for chunk in chunks {
        forwarded += black_box(tap.push(chunk.clone())).len();
    }
    forwarded += black_box(tap.finish()).len();
    (tap.report(), forwarded)
}

/// The bare framer over the stream; returns the number of events or elements.
fn through_framer(stream: Stream, chunks: &[Bytes]) -> usize {
    let mut n = 0;
    match stream {
        Stream::OpenaiSse | Stream::GeminiSse => {
            let mut parser = SseParser::new();
            for chunk in chunks {
                parser.push(chunk, |ev| {
                    n += 1;
                    black_box(ev.data);
                });
            }
            parser.finish(|ev| {
                n += 1;
                black_box(ev.data);
            });
        }
        Stream::GeminiArray => {
            let mut framer = JsonArrayFramer::new();
            for chunk in chunks {
                framer.push(chunk, |element| {
                    n += 1;
                    black_box(element);
                });
            }
            black_box(framer.finish());
        }
    }
    n
}

fn bench_tap(bencher: Bencher<'_, '_>, stream: Stream, size: usize, usage_injected: bool) {
    let bytes = stream.bytes();
    let chunks = chunks(bytes, size);
    let (kind, info, headers) = (stream.kind(), stream.info(usage_injected), stream.headers());
    bencher
        .counter(BytesCount::new(bytes.len()))
        .bench(|| through_tap(kind, &info, &headers, &chunks));
}

fn bench_framer(bencher: Bencher<'_, '_>, stream: Stream, size: usize) {
    let bytes = stream.bytes();
    let chunks = chunks(bytes, size);
    bencher
        .counter(BytesCount::new(bytes.len()))
        .bench(|| through_framer(stream, &chunks));
}

/// One `#[divan::bench]` function per case, so that case names read `openai_sse_chunk_1k`.
macro_rules! cases {
    ($run:path, $stream:expr; $($name:ident => $size:expr),* $(,)?) => {
        $(
            #[divan::bench]
            fn $name(bencher: Bencher<'_, '_>) {
                $run(bencher, $stream, $size);
            }
        )*
    };
}

/// `ResponseTap`, the production path.
mod tap {
    use super::{Bencher, Stream};

    fn run(bencher: Bencher<'_, '_>, stream: Stream, size: usize) {
        super::bench_tap(bencher, stream, size, false);
    }

    cases!(run, Stream::OpenaiSse;
        openai_sse_chunk_64 => 64,
        openai_sse_chunk_1k => 1024,
        openai_sse_chunk_16k => 16 * 1024,
        openai_sse_whole => 0,
    );
    cases!(run, Stream::GeminiSse;
        gemini_sse_chunk_64 => 64,
        gemini_sse_chunk_1k => 1024,
        gemini_sse_chunk_16k => 16 * 1024,
        gemini_sse_whole => 0,
    );
    cases!(run, Stream::GeminiArray;
        gemini_array_chunk_64 => 64,
        gemini_array_chunk_1k => 1024,
        gemini_array_chunk_16k => 16 * 1024,
        gemini_array_whole => 0,
    );
}

/// `ResponseTap` removing the usage chunk Tollgate injected (`usage_injected = true`).
mod injected {
    use super::{Bencher, Stream};

    fn run(bencher: Bencher<'_, '_>, stream: Stream, size: usize) {
        super::bench_tap(bencher, stream, size, true);
    }

    cases!(run, Stream::OpenaiSse;
        openai_sse_injected_chunk_64 => 64,
        openai_sse_injected_chunk_1k => 1024,
        openai_sse_injected_chunk_16k => 16 * 1024,
        openai_sse_injected_whole => 0,
    );
}

/// The bare framers, without provider parsing.
mod framer {
    use super::{Bencher, Stream, bench_framer};

    cases!(bench_framer, Stream::OpenaiSse;
        sse_openai_chunk_64 => 64,
        sse_openai_chunk_1k => 1024,
        sse_openai_chunk_16k => 16 * 1024,
        sse_openai_whole => 0,
    );
    cases!(bench_framer, Stream::GeminiSse;
        sse_gemini_crlf_chunk_64 => 64,
        sse_gemini_crlf_chunk_1k => 1024,
        sse_gemini_crlf_chunk_16k => 16 * 1024,
        sse_gemini_crlf_whole => 0,
    );
    cases!(bench_framer, Stream::GeminiArray;
        json_array_gemini_chunk_64 => 64,
        json_array_gemini_chunk_1k => 1024,
        json_array_gemini_chunk_16k => 16 * 1024,
        json_array_gemini_whole => 0,
    );
}

/// Non-streaming answers: the tap keeps the head and tail of the body and reads `usage` at the end.
mod json_body {
    use super::*;

    /// A non-streaming answer of `kind` for `endpoint`, delivered in `size`-byte chunks (0: whole).
    fn bench_body(
        bencher: Bencher<'_, '_>,
        kind: ProviderKind,
        endpoint: Endpoint,
        body: &'static [u8],
        size: usize,
    ) {
        let info = json_info(endpoint);
        let headers = content_headers("application/json");
        let chunks = chunks(&Bytes::from_static(body), size);
        bencher
            .counter(BytesCount::new(body.len()))
            .bench(|| through_tap(kind, &info, &headers, &chunks));
    }

    #[divan::bench]
    fn openai_json_chat(bencher: Bencher<'_, '_>) {
        bench_body(
            bencher,
            ProviderKind::Openai,
            Endpoint::ChatCompletions,
            OPENAI_CHAT,
            0,
        );
    }

    #[divan::bench]
    fn openai_json_embeddings(bencher: Bencher<'_, '_>) {
        bench_body(
            bencher,
            ProviderKind::Openai,
            Endpoint::Embeddings,
            OPENAI_EMBEDDINGS,
            0,
        );
    }

    #[divan::bench]
    fn openai_json_embeddings_chunk_1k(bencher: Bencher<'_, '_>) {
        bench_body(
            bencher,
            ProviderKind::Openai,
            Endpoint::Embeddings,
            OPENAI_EMBEDDINGS,
            1024,
        );
    }

    #[divan::bench]
    fn gemini_json_generate(bencher: Bencher<'_, '_>) {
        bench_body(
            bencher,
            ProviderKind::Gemini,
            Endpoint::GenerateContent,
            GEMINI_GENERATE,
            0,
        );
    }
}

fn json_info(endpoint: Endpoint) -> RequestInfo {
    RequestInfo {
        endpoint,
        model: None,
        stream: false,
        max_output_tokens: None,
        prompt_tokens_estimate: 0,
        media_parts: 0,
        usage_injected: false,
        sse: false,
        model_ambiguous: false,
    }
}

// === set-up check ===

fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        reasoning_tokens: reasoning,
    }
}

/// Every case must still read the fixture's usage (see tests/fixtures/README.md) and forward
/// every byte, whatever the chunking.
fn check_fixtures() {
    let expected = [
        (Stream::OpenaiSse, usage(12, 0, 10, 0)),
        (Stream::GeminiSse, usage(9, 0, 659, 612)),
        (Stream::GeminiArray, usage(11, 0, 22, 0)),
    ];
    for (stream, want) in expected {
        let bytes = stream.bytes();
        assert!(bytes.len() >= TARGET_BYTES);
        for size in [64, 1024, 16 * 1024, 0] {
            let chunks = chunks(bytes, size);
            let (report, forwarded) = through_tap(
                stream.kind(),
                &stream.info(false),
                &stream.headers(),
                &chunks,
            );
            assert_eq!(report.usage, Some(want), "chunk size {size}");
            assert!(report.complete && !report.error_seen, "chunk size {size}");
            assert_eq!(forwarded, bytes.len(), "chunk size {size}");
            assert!(through_framer(stream, &chunks) > 1000, "chunk size {size}");
        }
    }
    let bytes = Stream::OpenaiSse.bytes();
    for size in [64, 1024, 16 * 1024, 0] {
        let chunks = chunks(bytes, size);
        let s = Stream::OpenaiSse;
        let (report, forwarded) = through_tap(s.kind(), &s.info(true), &s.headers(), &chunks);
        assert_eq!(report.usage, Some(usage(12, 0, 10, 0)), "chunk size {size}");
        assert_eq!(
            forwarded,
            bytes.len() - OPENAI_USAGE_EVENT.len(),
            "chunk size {size}"
        );
    }
    let bodies = [
        (
            ProviderKind::Openai,
            Endpoint::ChatCompletions,
            OPENAI_CHAT,
            usage(1117, 1024, 36, 0),
        ),
        (
            ProviderKind::Openai,
            Endpoint::Embeddings,
            OPENAI_EMBEDDINGS,
            usage(8, 0, 0, 0),
        ),
        (
            ProviderKind::Gemini,
            Endpoint::GenerateContent,
            GEMINI_GENERATE,
            usage(2145, 2048, 589, 531),
        ),
    ];
    for (kind, endpoint, body, want) in bodies {
        let headers = content_headers("application/json");
        for size in [1024, 0] {
            let chunks = chunks(&Bytes::from_static(body), size);
            let (report, _) = through_tap(kind, &json_info(endpoint), &headers, &chunks);
            assert_eq!(report.usage, Some(want), "{endpoint:?} chunk size {size}");
        }
    }
}
