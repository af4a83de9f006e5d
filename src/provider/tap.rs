//! The response tap: sees every chunk of an upstream answer on its way to the client, reads the
//! provider's usage report out of it, and (only when Tollgate injected `include_usage`) removes
//! the extra usage chunk. Works on bytes as TCP delivered them; keeps bounded state only.
//!
//! SPEC (to be implemented):
//! - `ResponseTap::new(kind, &info, status, &headers)` picks a mode from the request info and the
//!   response head: JSON (non-streaming, incl. error bodies), SSE (`text/event-stream` or
//!   info.sse), JSON array (Gemini `streamGenerateContent` without `alt=sse`), or `Opaque` (no
//!   usage to read, e.g. binary, `Endpoint::Other`). A `Content-Encoding: gzip` (or `deflate`)
//!   body is decoded on the side (flate2) for parsing while the original bytes are forwarded,
//!   except when the body must be rewritten: then the decoded bytes are forwarded and
//!   `adjust_headers` removes `content-encoding`.
//! - `push(chunk)` returns the bytes to forward now. Without rewriting it returns the very same
//!   `Bytes` (no copy). With rewriting (usage_injected) it returns every complete SSE event except
//!   the injected usage-only chunk (`"choices":[]` with a `usage` object), holding back only an
//!   unfinished event tail.
//! - `finish()` returns what is left to forward at a clean end of body.
//! - `report()` gives the latest usage report (cumulative for Gemini: the last one wins, never
//!   summed), the model the answer names, the count of output text characters relayed (for
//!   estimates), whether an error event/object was seen, and whether the stream reached its
//!   natural end marker.
//! - Every internal buffer has a bound (`MAX_EVENT_BYTES`); an oversize event is skipped for
//!   parsing but still forwarded.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::{ProviderKind, RequestInfo, Usage};

/// What the tap learnt from an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapReport {
    /// The provider's latest usage report, if any.
    pub usage: Option<Usage>,
    /// The model named by the answer (OpenAI `model`, Gemini `modelVersion`).
    pub model: Option<String>,
    /// Characters of generated text relayed so far (for estimates).
    pub output_chars: u64,
    /// The answer carried an error (an SSE `error` event, `response.failed`, `[{"error":…}]`).
    pub error_seen: bool,
    /// The stream reached its natural end (`[DONE]`, `response.completed`, the closing `]`,
    /// or a complete JSON body).
    pub complete: bool,
}

/// Reads usage out of one upstream answer. See the module doc.
pub struct ResponseTap {
    _kind: ProviderKind,
}

impl ResponseTap {
    pub fn new(
        kind: ProviderKind,
        info: &RequestInfo,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> ResponseTap {
        let _ = (info, status, headers);
        ResponseTap { _kind: kind }
    }

    /// Remove the response headers the tap invalidates (`content-length` when it rewrites the
    /// body, `content-encoding` when it forwards decoded bytes).
    pub fn adjust_headers(&self, headers: &mut HeaderMap) {
        let _ = headers;
    }

    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        chunk
    }

    pub fn finish(&mut self) -> Bytes {
        Bytes::new()
    }

    pub fn report(&self) -> TapReport {
        TapReport::default()
    }
}
