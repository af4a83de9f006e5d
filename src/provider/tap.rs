//! The response tap: sees every chunk of an upstream answer on its way to the client, reads the
//! provider's usage report out of it, and (only when Tollgate injected `include_usage`) removes
//! the extra usage chunk. Works on bytes as TCP delivered them; keeps bounded state only.
//!
//! - `ResponseTap::new(kind, &info, status, &headers)` picks a mode from the request info and the
//!   response head: JSON (non-streaming, incl. error bodies), SSE (`text/event-stream` or
//!   info.sse), JSON array (Gemini `streamGenerateContent` without `alt=sse`), or `Opaque` (no
//!   usage to read: binary, `countTokens`, an error answer from an endpoint not in the table).
//!   A successful answer from an endpoint not in the table (`Endpoint::Other`) is read like any
//!   JSON or SSE answer, and its usage report, if it carries one, is the call's usage. A `Content-Encoding: gzip`
//!   (or `deflate`) body is decoded on the side (flate2) for parsing while the original bytes are
//!   forwarded, except when the body must be rewritten: then the decoded bytes are forwarded and
//!   `adjust_headers` removes `content-encoding`.
//! - `push(chunk)` returns the bytes to forward now. Without rewriting it returns the very same
//!   `Bytes` (no copy). With rewriting (usage_injected) it returns every complete SSE event except
//!   the injected usage-only chunk (`"choices":[]` with a `usage` object), holding back only an
//!   unfinished event tail (at most [`MAX_EVENT_BYTES`](crate::stream::MAX_EVENT_BYTES); a larger
//!   event is forwarded as it is).
//! - `finish()` returns what is left to forward at a clean end of body.
//! - `report()` gives the latest usage report (cumulative for Gemini: the last one wins, never
//!   summed), the model the answer names, the count of output text characters relayed (for
//!   estimates), whether an error event/object was seen, and whether the stream reached its
//!   natural end marker.
//! - Every internal buffer has a bound ([`MAX_EVENT_BYTES`](crate::stream::MAX_EVENT_BYTES),
//!   [`JSON_TAIL_BYTES`]); an oversize
//!   event is skipped for parsing but still forwarded.
//!
//! The mechanics (framing, buffering, decoding, removing an event) live here; what the bytes
//! mean lives in the provider's [`Dialect`] (`openai`, `gemini`), which the tap calls per event,
//! element or body without knowing which provider it is.
//!
//! A non-streaming JSON answer is never parsed whole: the tap keeps the first chunk (for
//! `"model"` and `"error"`, which come first) and the last [`JSON_TAIL_BYTES`] as refcounted
//! chunks (usage comes last), and at the end finds the last `"usage"` / `"usageMetadata"` key
//! and deserializes that object alone. A 50 MB embeddings answer costs 64 KiB of retained
//! chunks.

use std::collections::VecDeque;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};

use super::dialect::{Dialect, Extract, Verdict};
use super::{Endpoint, ProviderKind, RequestInfo, Usage};
use crate::stream::{JsonArrayFramer, SseEvent, SseParser};

/// Bytes kept from the end of a non-streaming JSON answer: where the usage object is.
pub const JSON_TAIL_BYTES: usize = 64 * 1024;
/// Bytes kept from the start of a non-streaming JSON answer: where `model` and `error` are.
const JSON_HEAD_BYTES: usize = 8 * 1024;
/// A chunk larger than this is not retained by reference (that would pin all of it); the part
/// the tap needs is copied instead.
const RETAIN_MAX: usize = 256 * 1024;
/// Compressed input is decoded this much at a time, which bounds the decoded bytes per step.
const DECODE_STEP: usize = 4 * 1024;
/// Decoding stops past this many decoded bytes (a decompression bomb costs no more).
const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// What the tap learnt from an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapReport {
    /// The provider's latest usage report, if any, as the provider sent it: not judged here
    /// (`proxy::call` refuses one that is not [`Usage::is_plausible`]).
    pub usage: Option<Usage>,
    /// The model named by the answer (OpenAI `model`, Gemini `modelVersion`).
    pub model: Option<String>,
    /// Characters of generated text relayed so far (for estimates).
    pub output_chars: u64,
    /// The answer carried an error (an SSE `error` event, `response.failed`, `[{"error":…}]`), or
    /// its status is an error status (4xx/5xx).
    pub error_seen: bool,
    /// The stream reached its natural end (`[DONE]`, `response.completed`, the closing `]`,
    /// or a complete JSON body).
    pub complete: bool,
}

/// The dialect that interprets the answer, and the endpoint the answer is from.
#[derive(Clone, Copy)]
struct Reader {
    dialect: &'static dyn Dialect,
    endpoint: Endpoint,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}({:?})", self.dialect, self.endpoint)
    }
}

impl Reader {
    fn sse_event(self, ev: &SseEvent<'_>, x: &mut Extract) -> Verdict {
        self.dialect.sse_event(self.endpoint, ev, x)
    }

    fn array_element(self, element: &[u8], x: &mut Extract) {
        self.dialect.array_element(self.endpoint, element, x);
    }

    fn json_body(self, head: &[u8], tail: &[u8], x: &mut Extract) {
        self.dialect.json_body(self.endpoint, head, tail, x);
    }
}

/// The start and end of a non-streaming JSON answer, as refcounted chunks.
#[derive(Debug, Default)]
struct JsonBody {
    head: Bytes,
    /// Bytes after the first chunk while the head is shorter than `JSON_HEAD_BYTES`.
    head_more: Vec<u8>,
    /// The tail: `older` chunks, then `last` (kept apart so that a one-chunk answer, the common
    /// case, allocates nothing).
    older: VecDeque<Bytes>,
    last: Bytes,
    tail_len: usize,
    total: u64,
}

impl JsonBody {
    fn push(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.total == 0 {
            self.head = if chunk.len() > RETAIN_MAX {
                Bytes::copy_from_slice(&chunk[..JSON_HEAD_BYTES])
            } else {
                chunk.clone()
            };
        } else if self.head.len() + self.head_more.len() < JSON_HEAD_BYTES {
            let need = JSON_HEAD_BYTES - self.head.len() - self.head_more.len();
            self.head_more
                .extend_from_slice(&chunk[..need.min(chunk.len())]);
        }
        self.total += chunk.len() as u64;
        let piece = if chunk.len() > RETAIN_MAX {
            Bytes::copy_from_slice(&chunk[chunk.len() - JSON_TAIL_BYTES..])
        } else {
            chunk.clone()
        };
        self.tail_len += piece.len();
        let previous = std::mem::replace(&mut self.last, piece);
        if !previous.is_empty() {
            self.older.push_back(previous);
        }
        while let Some(front) = self.older.front() {
            if self.tail_len - front.len() < JSON_TAIL_BYTES {
                break;
            }
            self.tail_len -= front.len();
            self.older.pop_front();
        }
    }

    /// Hand the head and tail, each contiguous, to `read`.
    fn read(&self, read: impl FnOnce(&[u8], &[u8])) {
        let joined: Vec<u8>;
        let tail: &[u8] = if self.older.is_empty() {
            &self.last
        } else {
            let mut all = Vec::with_capacity(self.tail_len);
            for chunk in self.older.iter().chain(std::iter::once(&self.last)) {
                all.extend_from_slice(chunk);
            }
            joined = all;
            &joined
        };
        let whole = self.total == self.tail_len as u64;
        let head_joined: Vec<u8>;
        let head: &[u8] = if whole {
            tail
        } else if self.head_more.is_empty() {
            &self.head
        } else {
            head_joined = [&self.head[..], &self.head_more[..]].concat();
            &head_joined
        };
        read(&head[..head.len().min(JSON_HEAD_BYTES)], tail);
    }
}

/// How the answer is read.
#[derive(Debug)]
enum Mode {
    Json(JsonBody),
    Sse(SseParser),
    Array(JsonArrayFramer),
    Opaque,
}

/// The side decoder of a compressed answer.
enum Decoder {
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
    Zlib(Box<flate2::write::ZlibDecoder<Vec<u8>>>),
    Deflate(Box<flate2::write::DeflateDecoder<Vec<u8>>>),
    /// `Content-Encoding: deflate`, which servers send both zlib-wrapped (as the RFC says) and
    /// raw: decided on the first byte.
    DeflateUndecided,
    /// The stream did not decode (or decoded past the bound): nothing more is read.
    Failed,
}

impl Decoder {
    /// Decode `input`, handing the decoded bytes out in bounded pieces.
    fn decode(&mut self, input: &[u8], decoded: &mut u64, mut out: impl FnMut(Bytes)) {
        if let (Decoder::DeflateUndecided, Some(&first)) = (&*self, input.first()) {
            // A zlib header: CM = 8 in the low nibble, and the first two bytes a multiple of 31.
            let zlib = first & 0x0F == 8
                && input
                    .get(1)
                    .is_none_or(|&second| (u16::from(first) << 8 | u16::from(second)) % 31 == 0);
            *self = if zlib {
                Decoder::Zlib(Box::new(flate2::write::ZlibDecoder::new(Vec::new())))
            } else {
                Decoder::Deflate(Box::new(flate2::write::DeflateDecoder::new(Vec::new())))
            };
        }
        for piece in input.chunks(DECODE_STEP) {
            let produced = match self {
                Decoder::Gzip(d) => {
                    write_step(&mut **d, piece).map(|()| std::mem::take(d.get_mut()))
                }
                Decoder::Zlib(d) => {
                    write_step(&mut **d, piece).map(|()| std::mem::take(d.get_mut()))
                }
                Decoder::Deflate(d) => {
                    write_step(&mut **d, piece).map(|()| std::mem::take(d.get_mut()))
                }
                Decoder::DeflateUndecided | Decoder::Failed => return,
            };
            match produced {
                Ok(bytes) => {
                    *decoded += bytes.len() as u64;
                    if *decoded > MAX_DECODED_BYTES {
                        *self = Decoder::Failed;
                        return;
                    }
                    if !bytes.is_empty() {
                        out(Bytes::from(bytes));
                    }
                }
                Err(_) => {
                    *self = Decoder::Failed;
                    return;
                }
            }
        }
    }

    /// The compressed stream ended: whatever the decoder still holds.
    fn finish(&mut self) -> Option<Bytes> {
        let rest = match self {
            Decoder::Gzip(d) => d.try_finish().ok().map(|()| std::mem::take(d.get_mut())),
            Decoder::Zlib(d) => d.try_finish().ok().map(|()| std::mem::take(d.get_mut())),
            Decoder::Deflate(d) => d.try_finish().ok().map(|()| std::mem::take(d.get_mut())),
            Decoder::DeflateUndecided | Decoder::Failed => None,
        };
        rest.filter(|r| !r.is_empty()).map(Bytes::from)
    }
}

fn write_step(decoder: &mut impl Write, piece: &[u8]) -> std::io::Result<()> {
    decoder.write_all(piece)?;
    decoder.flush()
}

/// Held pieces merged at a time by [`Rewrite::coalesce_tail`].
const COALESCE_RUN: usize = 64;
/// A held piece smaller than this may be merged with its neighbours.
const SMALL_PIECE: usize = 1024;

/// Removes events from an SSE stream as it passes: holds back the bytes of the event still
/// open (as refcounted slices) and forwards everything else, minus the dropped events' bytes.
#[derive(Debug, Default)]
struct Rewrite {
    /// Bytes received and not forwarded yet, starting at stream offset `held_at`.
    held: Vec<Bytes>,
    held_at: u64,
    /// Stream ranges to remove, in order.
    drops: Vec<(u64, u64)>,
    /// A dropped event ended with a CR at the end of a chunk: the LF at this offset, if it
    /// comes, is part of it.
    drop_lf_at: Option<u64>,
}

impl Rewrite {
    /// Take in `chunk` (at stream offset `at`) and return what can be forwarded: the bytes
    /// before `forward_to`, minus the drops.
    fn take(&mut self, chunk: Bytes, at: u64, forward_to: u64) -> Bytes {
        let end = at + chunk.len() as u64;
        if self.held.is_empty() && self.drops.is_empty() && forward_to == end {
            self.held_at = end;
            return chunk;
        }
        if !chunk.is_empty() {
            self.held.push(chunk);
            self.coalesce_tail();
        }
        let forward_to = forward_to.max(self.held_at);
        if forward_to == self.held_at {
            // Nothing can go yet (an event is still arriving): don't walk what is held, so an
            // event that comes in many small pieces costs time in proportion to its size.
            return Bytes::new();
        }
        let mut out: Vec<Bytes> = Vec::new();
        let mut keep: Vec<Bytes> = Vec::new();
        let mut pos = self.held_at;
        for piece in self.held.drain(..) {
            let piece_end = pos + piece.len() as u64;
            // The part before `forward_to`, minus drops.
            let mut from = pos;
            let fwd_end = piece_end.min(forward_to);
            for &(d0, d1) in &self.drops {
                if d1 <= from || d0 >= fwd_end {
                    continue;
                }
                if d0 > from {
                    out.push(piece.slice((from - pos) as usize..(d0 - pos) as usize));
                }
                from = d1.min(fwd_end);
            }
            if from < fwd_end {
                out.push(piece.slice((from - pos) as usize..(fwd_end - pos) as usize));
            }
            if piece_end > forward_to {
                let keep_from = forward_to.max(pos);
                keep.push(piece.slice((keep_from - pos) as usize..));
            }
            pos = piece_end;
        }
        self.held = keep;
        self.held_at = forward_to;
        self.drops.retain(|&(_, d1)| d1 > forward_to);
        concat(out)
    }

    /// Merge the last [`COALESCE_RUN`] held pieces into one when each is smaller than
    /// [`SMALL_PIECE`]: an upstream sending an event a few bytes at a time would otherwise cost a
    /// `Bytes` handle (32 bytes) per byte held. Each byte is copied a bounded number of times.
    fn coalesce_tail(&mut self) {
        let n = self.held.len();
        if n < COALESCE_RUN {
            return;
        }
        let tail = &self.held[n - COALESCE_RUN..];
        if tail.iter().any(|p| p.len() >= SMALL_PIECE) {
            return;
        }
        let merged = concat(self.held.split_off(n - COALESCE_RUN));
        self.held.push(merged);
    }
}

fn concat(mut pieces: Vec<Bytes>) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.pop().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for p in &pieces {
                out.extend_from_slice(p);
            }
            out.freeze()
        }
    }
}

/// Reads usage out of one upstream answer. See the module doc.
pub struct ResponseTap {
    reader: Reader,
    mode: Mode,
    x: Extract,
    decoder: Option<Decoder>,
    decoded: u64,
    /// Set when the injected usage chunk must be removed (SSE, `usage_injected`).
    rewrite: Option<Rewrite>,
    finished: bool,
}

impl std::fmt::Debug for ResponseTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseTap")
            .field("reader", &self.reader)
            .field("mode", &self.mode)
            .field("rewrite", &self.rewrite.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseTap {
    pub fn new(
        kind: ProviderKind,
        info: &RequestInfo,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> ResponseTap {
        let dialect = kind.dialect();
        let reader = Reader {
            dialect,
            endpoint: info.endpoint,
        };
        let content_type = header_str(headers, header::CONTENT_TYPE);
        let is_sse = starts_with_ignore_case(content_type, "text/event-stream");
        let declared_json = content_type
            .as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"json"));
        let success = status.is_success();
        let encoding = header_str(headers, header::CONTENT_ENCODING);
        let is = |name: &str| encoding.eq_ignore_ascii_case(name);
        let (decoder, readable) = match () {
            () if encoding.is_empty() || is("identity") => (None, true),
            () if is("gzip") || is("x-gzip") => (
                Some(Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(
                    Vec::new(),
                )))),
                true,
            ),
            () if is("deflate") => (Some(Decoder::DeflateUndecided), true),
            // br, zstd, …: Tollgate asks for identity, so this is unexpected; forward blind.
            () => (None, false),
        };
        // The response head decides when it says something; without a content type, the
        // request does. `countTokens` answers with a count, not consumption. An endpoint that
        // is not in the table is read too when it succeeds: whatever answer carries a usage
        // report (a new endpoint, a retrieved background response) is metered by it.
        let unknown_failed = info.endpoint == Endpoint::Other && !success;
        let mode = if !readable || info.endpoint == Endpoint::CountTokens || unknown_failed {
            Mode::Opaque
        } else if success && (is_sse || (info.sse && !declared_json)) {
            Mode::Sse(SseParser::new())
        } else if success && dialect.streams_json_array(info) {
            Mode::Array(JsonArrayFramer::new())
        } else if declared_json || content_type.is_empty() || !success {
            Mode::Json(JsonBody::default())
        } else {
            Mode::Opaque
        };
        let rewrite = (info.usage_injected && matches!(mode, Mode::Sse(_))).then(Rewrite::default);
        let mut x = Extract::default();
        x.error_seen = status.is_client_error() || status.is_server_error();
        ResponseTap {
            reader,
            mode,
            x,
            decoder: if readable { decoder } else { None },
            decoded: 0,
            rewrite,
            finished: false,
        }
    }

    /// Remove the response headers the tap invalidates (`content-length` when it rewrites the
    /// body, `content-encoding` when it forwards decoded bytes).
    pub fn adjust_headers(&self, headers: &mut HeaderMap) {
        if self.rewrite.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            if self.decoder.is_some() {
                headers.remove(header::CONTENT_ENCODING);
            }
        }
    }

    /// Read the next chunk of the answer; returns the bytes to forward now.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.finished {
            return chunk;
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return self.feed(chunk);
        };
        let mut out = Vec::new();
        let mut pieces = Vec::new();
        decoder.decode(&chunk, &mut self.decoded, |piece| pieces.push(piece));
        for piece in pieces {
            out.push(self.feed(piece));
        }
        if self.rewrite.is_some() {
            concat(out)
        } else {
            chunk
        }
    }

    /// The answer ended cleanly; returns what is left to forward.
    pub fn finish(&mut self) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        let mut out = Vec::new();
        if let Some(rest) = self.decoder.as_mut().and_then(Decoder::finish) {
            out.push(self.feed(rest));
        }
        self.finished = true;
        let reader = self.reader;
        let x = &mut self.x;
        match &mut self.mode {
            Mode::Json(body) => {
                body.read(|head, tail| {
                    reader.json_body(head, tail, x);
                    x.complete = tail
                        .iter()
                        .rev()
                        .find(|b| !b.is_ascii_whitespace())
                        .is_some_and(|&b| b == b'}' || b == b']');
                });
                *body = JsonBody::default();
            }
            Mode::Sse(parser) => {
                let end = parser.position();
                let rewrite = &mut self.rewrite;
                parser.finish(|ev| {
                    if reader.sse_event(&ev, x) == Verdict::Drop
                        && let Some(r) = rewrite.as_mut()
                    {
                        r.drops.push((ev.start, ev.end));
                    }
                });
                if let Some(r) = self.rewrite.as_mut() {
                    out.push(r.take(Bytes::new(), end, end));
                }
            }
            Mode::Array(framer) => x.complete = framer.finish(),
            Mode::Opaque => x.complete = true,
        }
        if self.rewrite.is_some() {
            concat(out)
        } else {
            Bytes::new()
        }
    }

    /// What the tap has learnt so far.
    pub fn report(&self) -> TapReport {
        TapReport {
            usage: self.x.usage(),
            model: self.x.model.clone(),
            output_chars: self.x.output_chars,
            error_seen: self.x.error_seen,
            complete: self.x.complete,
        }
    }

    /// Read one (decoded) chunk; returns what to forward when rewriting, else `chunk` itself.
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        let reader = self.reader;
        let x = &mut self.x;
        match &mut self.mode {
            Mode::Json(body) => body.push(&chunk),
            Mode::Array(framer) => {
                framer.push(&chunk, |element| reader.array_element(element, x));
                if framer.closed() {
                    x.complete = true;
                }
            }
            Mode::Sse(parser) => {
                let Some(r) = self.rewrite.as_mut() else {
                    parser.push(&chunk, |ev| {
                        reader.sse_event(&ev, x);
                    });
                    return chunk;
                };
                let at = parser.position();
                let end = at + chunk.len() as u64;
                if let Some(lf) = r.drop_lf_at.take()
                    && lf == at
                    && chunk.first() == Some(&b'\n')
                {
                    r.drops.push((at, at + 1));
                }
                parser.push(&chunk, |ev| {
                    if reader.sse_event(&ev, x) == Verdict::Drop {
                        r.drops.push((ev.start, ev.end));
                    }
                });
                if parser.pending_lf() && r.drops.last().is_some_and(|&(_, d1)| d1 == end) {
                    r.drop_lf_at = Some(end);
                }
                let forward_to = parser.hold_from().unwrap_or(end);
                return r.take(chunk, at, forward_to);
            }
            Mode::Opaque => {}
        }
        chunk
    }
}

/// A header's value, trimmed; empty when absent or not text.
fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default()
}

fn starts_with_ignore_case(value: &str, prefix: &str) -> bool {
    value
        .as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode, header};

    use super::{ResponseTap, TapReport};
    use crate::provider::{Endpoint, ProviderKind, RequestInfo, Usage};

    const SSE: &str = "text/event-stream; charset=utf-8";
    const JSON: &str = "application/json";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }

    fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            reasoning_tokens: reasoning,
        })
    }

    /// How the request looked: what the tap is told.
    #[derive(Clone, Copy)]
    struct Call {
        kind: ProviderKind,
        endpoint: Endpoint,
        stream: bool,
        sse: bool,
        injected: bool,
        status: u16,
        content_type: &'static str,
    }

    const fn call(kind: ProviderKind, endpoint: Endpoint) -> Call {
        Call {
            kind,
            endpoint,
            stream: false,
            sse: false,
            injected: false,
            status: 200,
            content_type: JSON,
        }
    }

    impl Call {
        const fn sse(mut self) -> Call {
            self.stream = true;
            self.sse = true;
            self.content_type = SSE;
            self
        }
        const fn array(mut self) -> Call {
            self.stream = true;
            self
        }
        const fn injected(mut self) -> Call {
            self.injected = true;
            self
        }
        const fn status(mut self, status: u16) -> Call {
            self.status = status;
            self
        }
        fn info(&self) -> RequestInfo {
            RequestInfo {
                endpoint: self.endpoint,
                model: None,
                stream: self.stream,
                max_output_tokens: None,
                prompt_tokens_estimate: 0,
                media_parts: 0,
                usage_injected: self.injected,
                sse: self.sse,
                model_ambiguous: false,
            }
        }
        fn tap(&self, encoding: Option<&str>) -> ResponseTap {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            if let Some(e) = encoding {
                headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_str(e).expect("header"),
                );
            }
            let status = StatusCode::from_u16(self.status).expect("status");
            ResponseTap::new(self.kind, &self.info(), status, &headers)
        }
    }

    const OPENAI: ProviderKind = ProviderKind::Openai;
    const GEMINI: ProviderKind = ProviderKind::Gemini;
    const CHAT: Call = call(OPENAI, Endpoint::ChatCompletions);
    const CHAT_STREAM: Call = CHAT.sse();
    const RESPONSES: Call = call(OPENAI, Endpoint::Responses);
    const RESPONSES_STREAM: Call = RESPONSES.sse();
    const COMPLETIONS: Call = call(OPENAI, Endpoint::Completions);
    const EMBEDDINGS: Call = call(OPENAI, Endpoint::Embeddings);
    const GENERATE: Call = call(GEMINI, Endpoint::GenerateContent);
    const GEMINI_SSE: Call = call(GEMINI, Endpoint::StreamGenerateContent).sse();
    const GEMINI_ARRAY: Call = call(GEMINI, Endpoint::StreamGenerateContent).array();

    /// What the tap must report.
    #[derive(Clone, Copy)]
    struct Expect {
        usage: Option<Usage>,
        model: Option<&'static str>,
        chars: u64,
        error: bool,
        complete: bool,
    }

    fn expect(usage: Option<Usage>, model: Option<&'static str>, chars: u64) -> Expect {
        Expect {
            usage,
            model,
            chars,
            error: false,
            complete: true,
        }
    }

    impl Expect {
        fn error(mut self) -> Expect {
            self.error = true;
            self
        }
        fn incomplete(mut self) -> Expect {
            self.complete = false;
            self
        }
        fn assert(&self, report: &TapReport, what: &str) {
            assert_eq!(report.usage, self.usage, "usage of {what}");
            assert_eq!(report.model.as_deref(), self.model, "model of {what}");
            assert_eq!(report.output_chars, self.chars, "output chars of {what}");
            assert_eq!(report.error_seen, self.error, "error flag of {what}");
            assert_eq!(report.complete, self.complete, "complete flag of {what}");
        }
    }

    /// Ways of cutting the body into chunks.
    #[derive(Clone, Copy, Debug)]
    enum Chunking {
        Whole,
        Size(usize),
        SplitAt(usize),
    }

    fn cut(input: &[u8], chunking: Chunking) -> Vec<Bytes> {
        let body = Bytes::copy_from_slice(input);
        match chunking {
            Chunking::Whole => vec![body],
            Chunking::Size(n) => (0..input.len())
                .step_by(n)
                .map(|i| body.slice(i..(i + n).min(input.len())))
                .collect(),
            Chunking::SplitAt(i) => vec![body.slice(..i), body.slice(i..)],
        }
    }

    /// Push `input` through a tap; returns the bytes forwarded and the report.
    fn run(
        call: &Call,
        encoding: Option<&str>,
        input: &[u8],
        chunking: Chunking,
    ) -> (Vec<u8>, TapReport) {
        let mut tap = call.tap(encoding);
        let mut forwarded = Vec::with_capacity(input.len());
        let rewriting = call.injected;
        for chunk in cut(input, chunking) {
            let out = tap.push(chunk.clone());
            if !rewriting {
                assert!(
                    out.as_ptr() == chunk.as_ptr() && out.len() == chunk.len(),
                    "without rewriting, push must return the very chunk it got ({chunking:?})"
                );
            }
            forwarded.extend_from_slice(&out);
        }
        forwarded.extend_from_slice(&tap.finish());
        (forwarded, tap.report())
    }

    /// The chunkings every body goes through: whole, 1, 3 and 64 bytes, and two pieces split
    /// at every byte (at a stride for big bodies, to keep debug-mode tests quick).
    fn chunkings(len: usize, every_split: bool) -> Vec<Chunking> {
        let mut all = vec![
            Chunking::Whole,
            Chunking::Size(1),
            Chunking::Size(3),
            Chunking::Size(64),
        ];
        let stride = match (every_split, len <= 16 * 1024) {
            (true, true) => 1,
            (true, false) => 61,
            (false, _) => 127,
        };
        all.extend((0..=len).step_by(stride).map(Chunking::SplitAt));
        all
    }

    fn check_bytes(
        call: &Call,
        encoding: Option<&str>,
        input: &[u8],
        want_forwarded: &[u8],
        e: &Expect,
        what: &str,
    ) {
        check_cuts(call, encoding, input, want_forwarded, e, what, true);
    }

    fn check_cuts(
        call: &Call,
        encoding: Option<&str>,
        input: &[u8],
        want_forwarded: &[u8],
        e: &Expect,
        what: &str,
        every_split: bool,
    ) {
        for chunking in chunkings(input.len(), every_split) {
            let (forwarded, report) = run(call, encoding, input, chunking);
            let what = format!("{what} cut {chunking:?}");
            assert!(
                forwarded == want_forwarded,
                "forwarded bytes of {what} differ: got {} bytes, want {}\n{}",
                forwarded.len(),
                want_forwarded.len(),
                String::from_utf8_lossy(&forwarded)
            );
            e.assert(&report, &what);
        }
    }

    /// A fixture, cut every way; the bytes forwarded must be the input.
    fn check(call: Call, name: &str, e: Expect) {
        let input = fixture(name);
        check_bytes(&call, None, &input, &input, &e, name);
    }

    // --- line-end and framing variants of SSE bodies ---

    /// The same stream with every line end normalised to `eol`.
    fn with_eol(input: &[u8], eol: &str) -> Vec<u8> {
        let text = String::from_utf8(input.to_vec()).expect("utf-8 fixture");
        text.replace("\r\n", "\n").replace('\n', eol).into_bytes()
    }

    /// Keep-alive comments and blank lines between events, and a comment inside each event.
    fn with_comments(input: &[u8]) -> Vec<u8> {
        let text = String::from_utf8(with_eol(input, "\n")).expect("utf-8 fixture");
        let text = text
            .replace("\n\n", "\n\n: keep-alive\n\n\n")
            .replace("data: ", ": ping\ndata: ");
        format!(": OPENROUTER PROCESSING\n\n{text}").into_bytes()
    }

    fn gzip(input: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(input).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn deflate(input: &[u8], zlib: bool) -> Vec<u8> {
        if zlib {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(input).expect("zlib");
            enc.finish().expect("zlib")
        } else {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(input).expect("deflate");
            enc.finish().expect("deflate")
        }
    }

    /// An SSE fixture with LF, CRLF and CR line ends and with comments inserted, each cut
    /// every way, plus gzip-compressed in chunks.
    fn check_sse(call: Call, name: &str, e: Expect) {
        let original = fixture(name);
        for (label, input, every_split) in [
            ("LF", with_eol(&original, "\n"), true),
            ("CRLF", with_eol(&original, "\r\n"), true),
            ("CR", with_eol(&original, "\r"), false),
            ("with comments", with_comments(&original), false),
            (
                "with comments, CRLF",
                with_eol(&with_comments(&original), "\r\n"),
                false,
            ),
        ] {
            let what = format!("{name} ({label})");
            check_cuts(&call, None, &input, &input, &e, &what, every_split);
        }
        check_gzip(call, &original, &e, name);
    }

    fn check_gzip(call: Call, input: &[u8], e: &Expect, name: &str) {
        let compressed = gzip(input);
        for chunking in [
            Chunking::Whole,
            Chunking::Size(1),
            Chunking::Size(7),
            Chunking::Size(64),
        ] {
            let (forwarded, report) = run(&call, Some("gzip"), &compressed, chunking);
            assert!(
                forwarded == compressed,
                "gzip {name} must be forwarded compressed"
            );
            e.assert(&report, &format!("{name} gzip {chunking:?}"));
        }
    }

    // --- OpenAI ---

    #[test]
    fn chat_json_reads_usage_with_cached_tokens() {
        let e = expect(usage(1117, 1024, 36, 0), Some("gpt-4o-2024-08-06"), 0);
        check(CHAT, "openai/chat.json", e);
    }

    #[test]
    fn chat_error_body_has_no_usage_and_flags_the_error() {
        let e = expect(None, None, 0).error();
        check(CHAT.status(429), "openai/chat_error.json", e);
    }

    #[test]
    fn chat_stream_with_usage_reads_the_final_chunk() {
        let e = expect(usage(12, 0, 10, 0), Some("gpt-4o-mini-2024-07-18"), 34);
        check_sse(CHAT_STREAM, "openai/chat_stream_usage.sse", e);
    }

    #[test]
    fn chat_stream_without_usage_reports_none_but_counts_text() {
        let e = expect(None, Some("gpt-4o-mini-2024-07-18"), 81);
        check_sse(CHAT_STREAM, "openai/chat_stream_no_usage.sse", e);
    }

    #[test]
    fn chat_stream_error_event_is_flagged_and_not_complete() {
        let e = expect(None, Some("gpt-4o-mini-2024-07-18"), 23)
            .error()
            .incomplete();
        check_sse(CHAT_STREAM, "openai/chat_stream_error.sse", e);
    }

    #[test]
    fn chat_stream_tool_call_counts_arguments_and_reasoning() {
        let e = expect(usage(2231, 1920, 219, 192), Some("o4-mini-2025-04-16"), 45);
        check_sse(CHAT_STREAM, "openai/chat_stream_tool_usage.sse", e);
    }

    #[test]
    fn responses_json_takes_the_top_level_usage() {
        let e = expect(usage(1328, 1152, 27, 0), Some("gpt-4.1-2025-04-14"), 0);
        check(RESPONSES, "openai/responses.json", e);
    }

    #[test]
    fn responses_stream_reads_response_completed() {
        let e = expect(usage(37, 0, 15, 0), Some("gpt-4.1-mini-2025-04-14"), 74);
        check_sse(RESPONSES_STREAM, "openai/responses_stream.sse", e);
    }

    #[test]
    fn responses_stream_reads_response_incomplete() {
        let e = expect(usage(24, 0, 16, 10), Some("o4-mini-2025-04-16"), 35);
        check_sse(
            RESPONSES_STREAM,
            "openai/responses_stream_incomplete.sse",
            e,
        );
    }

    #[test]
    fn responses_stream_reads_response_failed_and_flags_it() {
        let e = expect(usage(412, 384, 3, 0), Some("gpt-4o-2024-08-06"), 11).error();
        check_sse(RESPONSES_STREAM, "openai/responses_stream_failed.sse", e);
    }

    #[test]
    fn embeddings_json_reads_prompt_tokens_only() {
        let e = expect(usage(8, 0, 0, 0), Some("text-embedding-3-small"), 0);
        check(EMBEDDINGS, "openai/embeddings.json", e);
    }

    #[test]
    fn legacy_completions_json_reads_usage() {
        let e = expect(
            usage(5, 0, 12, 0),
            Some("gpt-3.5-turbo-instruct:20230824-v2"),
            0,
        );
        check(COMPLETIONS, "openai/completions.json", e);
    }

    #[test]
    fn legacy_completions_stream_reads_usage() {
        let e = expect(
            usage(7, 0, 14, 0),
            Some("gpt-3.5-turbo-instruct:20230824-v2"),
            15,
        );
        check_sse(COMPLETIONS.sse(), "openai/completions_stream_usage.sse", e);
    }

    // --- Gemini ---

    #[test]
    fn gemini_json_counts_thoughts_as_output_and_cached_as_input() {
        let e = expect(usage(2145, 2048, 589, 531), Some("gemini-2.5-flash"), 0);
        check(GENERATE, "gemini/generate_content.json", e);
    }

    #[test]
    fn gemini_error_body_is_flagged() {
        let e = expect(None, None, 0).error();
        check(
            GENERATE.status(400),
            "gemini/generate_content_error.json",
            e,
        );
    }

    #[test]
    fn gemini_sse_stream_takes_the_last_cumulative_usage() {
        let e = expect(usage(9, 0, 659, 612), Some("gemini-2.5-flash"), 258);
        check_sse(GEMINI_SSE, "gemini/stream_sse.sse", e);
    }

    #[test]
    fn gemini_json_array_stream_takes_the_last_cumulative_usage() {
        let e = expect(usage(11, 0, 22, 0), Some("gemini-2.0-flash"), 67);
        check(GEMINI_ARRAY, "gemini/stream_array.json", e);
        let input = fixture("gemini/stream_array.json");
        check_gzip(GEMINI_ARRAY, &input, &e, "stream_array.json");
        let lf = with_eol(&input, "\n");
        check_bytes(&GEMINI_ARRAY, None, &lf, &lf, &e, "stream_array.json LF");
    }

    #[test]
    fn gemini_json_array_error_element_is_flagged() {
        let e = expect(usage(1204, 0, 4, 0), Some("gemini-2.5-pro"), 18).error();
        check(GEMINI_ARRAY, "gemini/stream_array_error.json", e);
    }

    #[test]
    fn gemini_count_tokens_is_not_consumption() {
        let e = expect(None, None, 0);
        check(
            call(GEMINI, Endpoint::CountTokens),
            "gemini/count_tokens.json",
            e,
        );
    }

    #[test]
    fn gemini_embed_content_without_usage_metadata_reports_none() {
        let e = expect(None, None, 0);
        check(
            call(GEMINI, Endpoint::EmbedContent),
            "gemini/embed_content.json",
            e,
        );
        let call = call(GEMINI, Endpoint::BatchEmbedContents);
        check(
            call,
            "gemini/batch_embed_contents.json",
            expect(None, None, 0),
        );
    }

    #[test]
    fn gemini_embed_content_with_usage_metadata_reads_it() {
        let body = br#"{"embedding": {"values": [0.1, -0.2]}, "usageMetadata": {"promptTokenCount": 6, "totalTokenCount": 6}}"#;
        let e = expect(usage(6, 0, 0, 0), None, 0);
        check_bytes(
            &call(GEMINI, Endpoint::EmbedContent),
            None,
            body,
            body,
            &e,
            "embed with usage",
        );
    }

    #[test]
    fn gemini_tool_use_prompt_tokens_count_as_input() {
        let body = br#"{"candidates": [], "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "toolUsePromptTokenCount": 50, "thoughtsTokenCount": 5, "totalTokenCount": 175}, "modelVersion": "models/gemini-2.5-pro"}"#;
        let e = expect(usage(150, 0, 25, 5), Some("gemini-2.5-pro"), 0);
        check_bytes(&GENERATE, None, body, body, &e, "tool use");
    }

    // --- injection: the usage chunk Tollgate asked for is removed ---

    /// The stream minus exactly its usage-only event (data line and blank line).
    fn without_usage_event(input: &[u8]) -> Vec<u8> {
        let text = String::from_utf8(input.to_vec()).expect("utf-8 fixture");
        let eol = if text.contains("\r\n") {
            "\r\n"
        } else if text.contains('\r') {
            "\r"
        } else {
            "\n"
        };
        let sep = format!("{eol}{eol}");
        let events: Vec<&str> = text.split_inclusive(sep.as_str()).collect();
        let kept: Vec<&str> = events
            .iter()
            .copied()
            .filter(|ev| !(ev.contains("\"choices\":[]") && ev.contains("\"usage\":{")))
            .collect();
        assert_eq!(kept.len() + 1, events.len(), "exactly one usage event");
        kept.concat().into_bytes()
    }

    fn check_injected(call: Call, name: &str, e: Expect) {
        let original = fixture(name);
        for (label, input, every_split) in [
            ("LF", with_eol(&original, "\n"), true),
            ("CRLF", with_eol(&original, "\r\n"), true),
            ("CR", with_eol(&original, "\r"), false),
        ] {
            let want = without_usage_event(&input);
            let what = format!("{name} injected ({label})");
            check_cuts(&call, None, &input, &want, &e, &what, every_split);
        }
        // Comments around it stay: the event runs from its first field line to its blank line.
        let commented = with_comments(&original);
        let text = String::from_utf8(commented.clone()).expect("utf-8");
        let usage_at = text.find("\"choices\":[]").expect("usage event");
        let start = text[..usage_at].rfind("data: ").expect("data line");
        let end = usage_at + text[usage_at..].find("\n\n").expect("blank line") + 2;
        let want = [&commented[..start], &commented[end..]].concat();
        let what = format!("{name} injected (comments)");
        check_cuts(&call, None, &commented, &want, &e, &what, false);
        // Compressed: the decoded stream is forwarded, minus the event.
        let compressed = gzip(&original);
        let want = without_usage_event(&original);
        for chunking in [Chunking::Whole, Chunking::Size(1), Chunking::Size(64)] {
            let (forwarded, report) = run(&call, Some("gzip"), &compressed, chunking);
            assert!(forwarded == want, "gzip {name} injected {chunking:?}");
            e.assert(&report, &format!("{name} injected gzip {chunking:?}"));
        }
    }

    #[test]
    fn injected_usage_chunk_is_removed_from_chat_stream() {
        let e = expect(usage(12, 0, 10, 0), Some("gpt-4o-mini-2024-07-18"), 34);
        check_injected(CHAT_STREAM.injected(), "openai/chat_stream_usage.sse", e);
    }

    #[test]
    fn injected_usage_chunk_is_removed_from_tool_call_stream() {
        let e = expect(usage(2231, 1920, 219, 192), Some("o4-mini-2025-04-16"), 45);
        check_injected(
            CHAT_STREAM.injected(),
            "openai/chat_stream_tool_usage.sse",
            e,
        );
    }

    #[test]
    fn injected_usage_chunk_is_removed_from_legacy_completions_stream() {
        let e = expect(
            usage(7, 0, 14, 0),
            Some("gpt-3.5-turbo-instruct:20230824-v2"),
            15,
        );
        check_injected(
            COMPLETIONS.sse().injected(),
            "openai/completions_stream_usage.sse",
            e,
        );
    }

    #[test]
    fn injection_holds_back_only_the_unfinished_event() {
        let mut tap = CHAT_STREAM.injected().tap(None);
        let first = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"cho",
        );
        let out = tap.push(first);
        assert_eq!(
            &out[..],
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
        );
        let out = tap.push(Bytes::from_static(b"ices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n: c\n\ndata: [DONE]\n\n"));
        assert_eq!(&out[..], b": c\n\ndata: [DONE]\n\n");
        assert!(tap.finish().is_empty());
        assert_eq!(tap.report().usage, usage(1, 0, 2, 0));
    }

    #[test]
    fn injection_forwards_a_stream_cut_mid_event_at_finish() {
        let mut tap = CHAT_STREAM.injected().tap(None);
        let out = tap.push(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"abc\"}}]}",
        ));
        assert!(out.is_empty(), "an unfinished event is held");
        let rest = tap.finish();
        assert_eq!(
            &rest[..],
            b"data: {\"choices\":[{\"delta\":{\"content\":\"abc\"}}]}"
        );
        assert_eq!(tap.report().output_chars, 3);
    }

    #[test]
    fn injection_removes_content_length_and_decoded_content_encoding() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let tap = CHAT_STREAM.injected().tap(Some("gzip"));
        tap.adjust_headers(&mut headers);
        assert!(headers.is_empty());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        CHAT_STREAM.tap(Some("gzip")).adjust_headers(&mut headers);
        assert_eq!(headers.len(), 1, "without rewriting, headers stay");
    }

    #[test]
    fn an_event_trickled_a_byte_at_a_time_is_held_in_few_pieces_and_forwarded_whole() {
        let mut tap = CHAT_STREAM.injected().tap(None);
        let mut input = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 64 * 1024));
        input.extend_from_slice(b"\"}}]}");
        let mut forwarded = Vec::new();
        for &b in &input {
            forwarded.extend_from_slice(&tap.push(Bytes::copy_from_slice(&[b])));
        }
        assert!(forwarded.is_empty(), "the unfinished event is held");
        let held = tap.rewrite.as_ref().map_or(0, |r| r.held.len());
        // One `Bytes` per byte would be 65,000 handles; merged, about one per KiB.
        assert!(held <= 200, "{held} pieces held for 64 KiB");
        forwarded.extend_from_slice(&tap.push(Bytes::from_static(b"\n\ndata: [DONE]\n\n")));
        forwarded.extend_from_slice(&tap.finish());
        input.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        assert!(forwarded == input, "every byte forwarded once, in order");
        assert_eq!(tap.report().output_chars, 64 * 1024);
    }

    #[test]
    fn injection_forwards_an_oversize_event_unchanged() {
        let mut tap = CHAT_STREAM.injected().tap(None);
        let big = vec![b'x'; crate::stream::MAX_EVENT_BYTES + 10];
        let mut input = b"data: ".to_vec();
        input.extend_from_slice(&big);
        let mut forwarded = Vec::new();
        for chunk in input.chunks(64 * 1024) {
            forwarded.extend_from_slice(&tap.push(Bytes::copy_from_slice(chunk)));
        }
        assert!(
            forwarded.len() >= crate::stream::MAX_EVENT_BYTES,
            "past the bound, bytes flow"
        );
        forwarded.extend_from_slice(&tap.push(Bytes::from_static(b"\n\ndata: [DONE]\n\n")));
        forwarded.extend_from_slice(&tap.finish());
        input.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        assert!(forwarded == input);
        assert!(tap.report().complete);
    }

    #[test]
    fn a_usage_chunk_that_is_not_injected_is_forwarded() {
        let input = fixture("openai/chat_stream_usage.sse");
        let (forwarded, _) = run(&CHAT_STREAM, None, &input, Chunking::Size(3));
        assert!(forwarded == input);
    }

    // --- modes, encodings, bounds ---

    #[test]
    fn deflate_zlib_and_raw_are_both_read() {
        let input = fixture("openai/chat_stream_usage.sse");
        let e = expect(usage(12, 0, 10, 0), Some("gpt-4o-mini-2024-07-18"), 34);
        for zlib in [true, false] {
            let compressed = deflate(&input, zlib);
            for chunking in [Chunking::Whole, Chunking::Size(1), Chunking::Size(5)] {
                let (forwarded, report) = run(&CHAT_STREAM, Some("deflate"), &compressed, chunking);
                assert!(forwarded == compressed);
                e.assert(&report, &format!("deflate zlib={zlib} {chunking:?}"));
            }
        }
    }

    #[test]
    fn gzip_json_body_is_read() {
        let input = fixture("openai/chat.json");
        let e = expect(usage(1117, 1024, 36, 0), Some("gpt-4o-2024-08-06"), 0);
        check_gzip(CHAT, &input, &e, "chat.json");
    }

    #[test]
    fn corrupt_gzip_is_forwarded_and_reads_nothing() {
        let input = b"\x1f\x8b\x08\x00garbage-garbage-garbage".to_vec();
        let (forwarded, report) = run(&CHAT_STREAM, Some("gzip"), &input, Chunking::Size(4));
        assert!(forwarded == input);
        assert_eq!(report.usage, None);
        assert!(!report.complete);
    }

    #[test]
    fn unknown_content_encoding_is_forwarded_blind() {
        let input = fixture("openai/chat.json");
        let (forwarded, report) = run(&CHAT, Some("br"), &input, Chunking::Whole);
        assert!(forwarded == input);
        assert_eq!(report.usage, None);
    }

    #[test]
    fn unknown_endpoint_answers_are_read_for_usage() {
        // A usage report in any successful answer is metered, whatever the endpoint.
        let e = expect(usage(1117, 1024, 36, 0), Some("gpt-4o-2024-08-06"), 0);
        check(call(OPENAI, Endpoint::Other), "openai/chat.json", e);
        let e = expect(usage(12, 0, 10, 0), Some("gpt-4o-mini-2024-07-18"), 34);
        let unknown_sse = Call {
            content_type: SSE,
            ..call(OPENAI, Endpoint::Other)
        };
        check_sse(unknown_sse, "openai/chat_stream_usage.sse", e);
        let (_, report) = run(
            &unknown_sse,
            None,
            &fixture("openai/responses_stream.sse"),
            Chunking::Size(64),
        );
        assert_eq!(
            report.usage,
            usage(37, 0, 15, 0),
            "response.completed's usage"
        );
        let e = expect(usage(2145, 2048, 589, 531), Some("gemini-2.5-flash"), 0);
        check(
            call(GEMINI, Endpoint::Other),
            "gemini/generate_content.json",
            e,
        );
        let e = expect(usage(9, 0, 659, 612), Some("gemini-2.5-flash"), 258);
        let gemini_sse = Call {
            content_type: SSE,
            ..call(GEMINI, Endpoint::Other)
        };
        check_sse(gemini_sse, "gemini/stream_sse.sse", e);
        // A JSON array of cumulative chunks: the last report is the total.
        let (_, report) = run(
            &call(GEMINI, Endpoint::Other),
            None,
            &fixture("gemini/stream_array.json"),
            Chunking::Size(100),
        );
        assert_eq!(
            report.usage,
            run(
                &GEMINI_ARRAY,
                None,
                &fixture("gemini/stream_array.json"),
                Chunking::Whole
            )
            .1
            .usage
        );
    }

    #[test]
    fn unknown_endpoint_errors_and_binary_answers_are_opaque() {
        for (status, content_type) in [(404, JSON), (500, JSON), (200, "application/octet-stream")]
        {
            let unknown = Call {
                content_type,
                ..call(OPENAI, Endpoint::Other).status(status)
            };
            let input = fixture("openai/chat.json");
            let (forwarded, report) = run(&unknown, None, &input, Chunking::Size(100));
            assert!(forwarded == input);
            assert_eq!(report.usage, None, "{status} {content_type}");
        }
    }

    #[test]
    fn count_tokens_is_opaque() {
        let input = fixture("gemini/count_tokens.json");
        let (forwarded, report) = run(
            &call(GEMINI, Endpoint::CountTokens),
            None,
            &input,
            Chunking::Size(100),
        );
        assert!(forwarded == input);
        assert_eq!(report.usage, None);
        assert!(report.complete);
    }

    #[test]
    fn a_huge_json_body_keeps_only_a_bounded_tail() {
        // A 20 MB embeddings answer in 1 MB chunks: usage still read, memory bounded.
        let mut body = b"{\"object\":\"list\",\"data\":[{\"embedding\":[".to_vec();
        while body.len() < 20 * 1024 * 1024 {
            body.extend_from_slice(b"0.0123456789,");
        }
        body.extend_from_slice(b"0.1]}],\"model\":\"text-embedding-3-large\",\"usage\":{\"prompt_tokens\":4000,\"total_tokens\":4000}}");
        let mut tap = EMBEDDINGS.tap(None);
        for chunk in body.chunks(1024 * 1024) {
            tap.push(Bytes::copy_from_slice(chunk));
            if let super::Mode::Json(json) = &tap.mode {
                assert!(
                    json.tail_len <= 2 * super::JSON_TAIL_BYTES,
                    "tail stays bounded"
                );
            }
        }
        tap.finish();
        let report = tap.report();
        assert_eq!(report.usage, usage(4000, 0, 0, 0));
        assert_eq!(report.model.as_deref(), Some("text-embedding-3-large"));
    }

    #[test]
    fn a_truncated_json_body_is_not_complete() {
        let input = fixture("openai/chat.json");
        let cut = &input[..input.len() / 2];
        let (_, report) = run(&CHAT, None, cut, Chunking::Whole);
        assert!(!report.complete);
        assert_eq!(report.usage, None);
    }

    #[test]
    fn a_cut_stream_keeps_the_usage_reported_before_the_cut() {
        // Gemini's cumulative usage: a stream cut after two chunks has the second's totals.
        let input = fixture("gemini/stream_sse.sse");
        let text = String::from_utf8(input).expect("utf-8");
        let cut_at = text
            .match_indices("data: ")
            .nth(2)
            .map(|(i, _)| i)
            .expect("three events");
        let mut tap = GEMINI_SSE.tap(None);
        tap.push(Bytes::copy_from_slice(&text.as_bytes()[..cut_at + 20]));
        let report = tap.report();
        assert_eq!(report.usage, usage(9, 0, 33 + 612, 612));
        assert!(!report.complete, "no finishReason yet");
    }

    #[test]
    fn report_before_finish_reads_the_latest_stream_usage() {
        let input = fixture("openai/chat_stream_usage.sse");
        let mut tap = CHAT_STREAM.tap(None);
        tap.push(Bytes::from(input));
        let report = tap.report();
        assert_eq!(report.usage, usage(12, 0, 10, 0));
        assert!(report.complete);
    }

    #[test]
    fn a_stream_without_content_type_is_read_as_the_request_says() {
        let input = fixture("openai/chat_stream_usage.sse");
        let mut c = CHAT_STREAM;
        c.content_type = "";
        let e = expect(usage(12, 0, 10, 0), Some("gpt-4o-mini-2024-07-18"), 34);
        check_cuts(&c, None, &input, &input, &e, "no content type", false);
        let input = fixture("gemini/stream_array.json");
        let mut c = GEMINI_ARRAY;
        c.content_type = "";
        let e = expect(usage(11, 0, 22, 0), Some("gemini-2.0-flash"), 67);
        check_cuts(&c, None, &input, &input, &e, "no content type", false);
    }

    #[test]
    fn responses_stream_without_event_lines_reads_the_type_from_data() {
        let text = String::from_utf8(fixture("openai/responses_stream.sse")).expect("utf-8");
        let input: String = text
            .split_inclusive('\n')
            .filter(|line| !line.starts_with("event: "))
            .collect();
        let e = expect(usage(37, 0, 15, 0), Some("gpt-4.1-mini-2025-04-14"), 74);
        check_cuts(
            &RESPONSES_STREAM,
            None,
            input.as_bytes(),
            input.as_bytes(),
            &e,
            "no event lines",
            false,
        );
    }

    #[test]
    fn sse_content_type_wins_over_the_request() {
        // A Gemini stream asked without alt=sse but answered as SSE is still read.
        let input = fixture("gemini/stream_sse.sse");
        let mut c = GEMINI_ARRAY;
        c.content_type = "text/event-stream";
        let e = expect(usage(9, 0, 659, 612), Some("gemini-2.5-flash"), 258);
        check_bytes(&c, None, &input, &input, &e, "array request, SSE answer");
    }

    #[test]
    fn a_streaming_request_answered_with_a_json_error_reads_it_as_json() {
        let input = fixture("openai/chat_error.json");
        let mut c = CHAT_STREAM.injected().status(429);
        c.content_type = JSON;
        let (forwarded, report) = run(&c, None, &input, Chunking::Size(10));
        assert!(forwarded == input, "errors pass through unchanged");
        assert!(report.error_seen);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        c.tap(None).adjust_headers(&mut headers);
        assert_eq!(
            headers.len(),
            1,
            "nothing is rewritten, so content-length stays"
        );
    }

    #[test]
    fn absurd_usage_numbers_are_reported_as_sent_and_signs_or_fractions_are_not_counts() {
        // The tap reports what the provider said; the proxy judges it (`Usage::is_plausible`).
        // A count past u64::MAX reads as u64::MAX, never as a missing field.
        for (prompt, want) in [
            ("18446744073709551615", u64::MAX),
            ("99999999999999999999999999", u64::MAX),
            ("1000000001", 1_000_000_001),
        ] {
            let body = format!(
                r#"{{"id":"c","model":"gpt-4o","choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":5,"total_tokens":5}}}}"#
            );
            let e = expect(usage(want, 0, 5, 0), Some("gpt-4o"), 0);
            check_bytes(&CHAT, None, body.as_bytes(), body.as_bytes(), &e, prompt);
            assert!(!usage(want, 0, 5, 0).is_some_and(|u| u.is_plausible()));
        }
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":18446744073709551615,\"completion_tokens\":1}}\n\n\
            data: [DONE]\n\n";
        let e = expect(usage(u64::MAX, 0, 1, 0), None, 2);
        check_bytes(
            &CHAT_STREAM,
            None,
            stream.as_bytes(),
            stream.as_bytes(),
            &e,
            "stream",
        );
        let gemini = r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":18446744073709551615,"candidatesTokenCount":1,"totalTokenCount":1}}"#;
        let e = expect(usage(u64::MAX, 0, 1, 0), None, 0);
        check_bytes(
            &GENERATE,
            None,
            gemini.as_bytes(),
            gemini.as_bytes(),
            &e,
            "gemini",
        );
        // A negative or fractional prompt count is no count: no report (the call is estimated).
        for prompt in ["-1", "1.5", "\"12\"", "null"] {
            let body = format!(
                r#"{{"model":"gpt-4o","usage":{{"prompt_tokens":{prompt},"completion_tokens":5}}}}"#
            );
            let e = expect(None, Some("gpt-4o"), 0);
            check_bytes(&CHAT, None, body.as_bytes(), body.as_bytes(), &e, prompt);
        }
    }
}
