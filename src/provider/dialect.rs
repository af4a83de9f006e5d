//! The contract between the response tap and the providers: the [`Dialect`] trait that
//! `openai` and `gemini` implement, and what both sides share — [`Extract`] (what a dialect
//! learns from an answer), [`Verdict`] (keep or drop an SSE event) and [`UsageParser`]. The tap
//! drives any dialect through the trait and the dialects only fill an `Extract`, so neither
//! names the other; `provider` picks the dialect of a [`ProviderKind`](super::ProviderKind).

use bytes::Bytes;

use super::{Endpoint, Refused, RequestInfo, Usage, json};
use crate::stream::SseEvent;

/// A usage object longer than this is ignored (real ones are a few hundred bytes).
const MAX_USAGE_BYTES: usize = 16 * 1024;

/// A provider's reader of one usage object (the object first in the slice, trailing bytes
/// ignored).
pub(crate) type UsageParser = fn(&[u8]) -> Option<Usage>;

/// What a dialect learns from an answer; every mode of the tap fills the same fields.
#[derive(Debug, Default)]
pub(crate) struct Extract {
    usage: Option<Usage>,
    /// The latest usage object, not parsed yet: Gemini repeats its cumulative usage on every
    /// chunk and only the last one counts, so parsing is deferred to `report()`.
    pending: Vec<u8>,
    pending_parse: Option<UsageParser>,
    pub(crate) model: Option<String>,
    pub(crate) output_chars: u64,
    pub(crate) error_seen: bool,
    pub(crate) complete: bool,
}

impl Extract {
    /// Remember the usage object that starts at `value[0]` (`value` may run past its end) as
    /// the latest report; `parse` reads it when the report is asked for.
    pub(crate) fn usage_object(&mut self, value: &[u8], parse: UsageParser) {
        let object = if value.len() <= MAX_USAGE_BYTES {
            value
        } else {
            match json::value_end(value, 0) {
                Some(end) if end <= MAX_USAGE_BYTES => &value[..end],
                _ => return,
            }
        };
        self.pending.clear();
        self.pending.extend_from_slice(object);
        self.pending_parse = Some(parse);
    }

    /// A usage report parsed already.
    pub(crate) fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
        self.pending_parse = None;
    }

    /// The latest report that parses.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.pending_parse
            .and_then(|parse| parse(&self.pending))
            .or(self.usage)
    }

    /// Set the model from the string value at `hay[v]`, unless one is known already.
    pub(crate) fn model_at(&mut self, hay: &[u8], v: usize, strip: &str) {
        if self.model.is_some() {
            return;
        }
        if let Some(mut model) = json::decode_string(hay, v) {
            if !strip.is_empty() && model.starts_with(strip) {
                model.drain(..strip.len());
            }
            if !model.is_empty() {
                self.model = Some(model);
            }
        }
    }
}

/// What to do with one SSE event when the body is being rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    /// The usage-only chunk that exists only because Tollgate asked for it.
    Drop,
}

/// What one upstream API looks like to Tollgate: how its requests read, and where its answers
/// carry the model, the text, errors and the usage report. Implementations are pure functions
/// of bytes (no socket, store or clock) and stateless: all a call learns goes into its
/// [`Extract`].
pub(crate) trait Dialect: std::fmt::Debug + Sync {
    /// The endpoint of a request (see [`super::endpoint`]).
    fn endpoint(&self, method: &http::Method, rest: &str) -> Endpoint;

    /// Read a request (see [`super::inspect`]).
    fn inspect(
        &self,
        method: &http::Method,
        rest: &str,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<(RequestInfo, Option<Bytes>), Refused>;

    /// Whether a successful answer to this request is a JSON array whose elements arrive one by
    /// one (rather than SSE or a single JSON body).
    fn streams_json_array(&self, info: &RequestInfo) -> bool;

    /// One SSE event of an answer from `endpoint`. [`Verdict::Drop`] marks the usage chunk that
    /// exists only because Tollgate asked for it.
    fn sse_event(&self, endpoint: Endpoint, ev: &SseEvent<'_>, x: &mut Extract) -> Verdict;

    /// One element of a JSON-array answer from `endpoint`.
    fn array_element(&self, endpoint: Endpoint, element: &[u8], x: &mut Extract);

    /// A non-streaming answer (or error body) from `endpoint`, given its first and last bytes
    /// (the same slice when the body is small).
    fn json_body(&self, endpoint: Endpoint, head: &[u8], tail: &[u8], x: &mut Extract);
}
