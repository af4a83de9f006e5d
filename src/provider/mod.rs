//! What each upstream API looks like, as data: which endpoint a request targets, its model,
//! whether it streams, how many tokens it may produce, how it must be rewritten, and where the
//! provider reports token usage in the answer.
//!
//! This module never touches a socket, the store or the clock. The proxy hands it bytes and gets
//! bytes and [`Usage`] back; `openai` and `gemini` hold the per-provider knowledge, each as a
//! `dialect::Dialect` that [`inspect`] and the response tap (`tap`) drive without naming it —
//! only [`ProviderKind`] here picks one. `json` is the byte-level scanner they share, `stream`
//! (crate root) the provider-independent framing. `path` is the one spelling of a request path
//! that is routed, classified and forwarded ([`normalize_path`]).

mod dialect;
pub mod gemini;
pub(crate) mod json;
pub mod openai;
mod path;
mod tap;

use dialect::Dialect;

pub use path::{PathError, normalize_path};
pub use tap::{ResponseTap, TapReport};

/// Prompt tokens counted for one inline media part (an image as a base64 data URL or Gemini
/// `inlineData`, a file or image referenced by URL or id) instead of its bytes. A screenshot's
/// base64 would otherwise count as a million tokens. OpenAI bills a high-detail 1024×1024 image
/// at 765 tokens and Gemini a tile at 258; 1,000 is a round, slightly high figure for reserving.
pub const MEDIA_PART_TOKENS: u64 = 1_000;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The API family a provider speaks. Chosen by `kind` in `[[providers]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's REST API (`Authorization: Bearer` key).
    Openai,
    /// Google's Generative Language API (`x-goog-api-key` key).
    Gemini,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Gemini => "gemini",
        }
    }

    /// How this API's requests and answers read: the one place a kind meets its module.
    pub(crate) fn dialect(self) -> &'static dyn Dialect {
        match self {
            ProviderKind::Openai => &openai::Openai,
            ProviderKind::Gemini => &gemini::Gemini,
        }
    }
}

pub use crate::usage::{Usage, UsageSource};

/// The endpoint a request targets (`token_usage.endpoint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI legacy `POST /v1/completions`.
    Completions,
    /// Gemini `models/{model}:generateContent`.
    GenerateContent,
    /// Gemini `models/{model}:streamGenerateContent` (SSE with `alt=sse`, else a JSON array).
    StreamGenerateContent,
    /// Gemini `models/{model}:countTokens`: usage is *not* consumption.
    CountTokens,
    /// Gemini `models/{model}:embedContent`.
    EmbedContent,
    /// Gemini `models/{model}:batchEmbedContents`.
    BatchEmbedContents,
    /// Anything else under the prefix (any method other than `POST` included): forwarded unless
    /// the provider's `unknown_endpoints` is `"refuse"`; a successful answer that carries a
    /// usage report is metered, anything else is recorded with `usage_source = 'none'`.
    Other,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Completions => "completions",
            Endpoint::GenerateContent => "generateContent",
            Endpoint::StreamGenerateContent => "streamGenerateContent",
            Endpoint::CountTokens => "countTokens",
            Endpoint::EmbedContent => "embedContent",
            Endpoint::BatchEmbedContents => "batchEmbedContents",
            Endpoint::Other => "other",
        }
    }

    /// Every endpoint.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::ChatCompletions,
        Endpoint::Responses,
        Endpoint::Embeddings,
        Endpoint::Completions,
        Endpoint::GenerateContent,
        Endpoint::StreamGenerateContent,
        Endpoint::CountTokens,
        Endpoint::EmbedContent,
        Endpoint::BatchEmbedContents,
        Endpoint::Other,
    ];

    /// The endpoint stored as `s` (`token_usage.endpoint`); anything else is `Other`.
    pub fn parse(s: &str) -> Endpoint {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .unwrap_or(Endpoint::Other)
    }

    /// Whether a call to this endpoint is known to consume billable tokens (it reserves a hold,
    /// and is estimated when it ends without a report). An unknown endpoint's answer is still
    /// read for a usage report.
    pub fn consumes(self) -> bool {
        !matches!(self, Endpoint::CountTokens | Endpoint::Other)
    }
}

/// What the proxy needs to know about a request before forwarding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub endpoint: Endpoint,
    /// The model named by the request (OpenAI: body `model`; Gemini: the path's `models/{model}`,
    /// or for a path that names none, such as `cachedContents` or the OpenAI-compatible
    /// endpoints, the body's `model`).
    pub model: Option<String>,
    /// The body sets `model` so that no one model can be read from it: more than once, or not as
    /// a string (on any endpoint). A plan that restricts models refuses such a call.
    pub model_ambiguous: bool,
    /// The answer will be a stream (OpenAI `"stream": true`; Gemini `streamGenerateContent`).
    pub stream: bool,
    /// The request's cap on output tokens, if it sets one.
    pub max_output_tokens: Option<u64>,
    /// Rough prompt size in tokens: text counted, inline media by a per-part constant.
    pub prompt_tokens_estimate: u64,
    /// Inline or referenced media parts (images, audio) in the prompt, each counted in
    /// `prompt_tokens_estimate` as [`MEDIA_PART_TOKENS`].
    pub media_parts: u64,
    /// Tollgate added `stream_options.include_usage` upstream; the extra usage chunk must be
    /// removed from what the client receives.
    pub usage_injected: bool,
    /// Gemini `alt=sse` (or an OpenAI stream): the body is SSE rather than a JSON array.
    pub sse: bool,
}

impl RequestInfo {
    /// The prompt estimate with each media part counted as `media_part_tokens` instead of
    /// [`MEDIA_PART_TOKENS`] (`limits.media_part_tokens`).
    pub fn prompt_tokens_with(&self, media_part_tokens: u64) -> u64 {
        self.prompt_tokens_estimate
            .saturating_sub(self.media_parts.saturating_mul(MEDIA_PART_TOKENS))
            .saturating_add(self.media_parts.saturating_mul(media_part_tokens))
    }
}

/// Why a request body is refused (400, in the provider's error shape): Tollgate could read it
/// otherwise than the provider does, and so meter a call that is not the one served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// An endpoint of the table got a body that is not one well-formed JSON object (compressed,
    /// another charset, `NaN`, trailing bytes…).
    #[error("the request body must be one JSON object (UTF-8, not compressed)")]
    NotJson,
    /// A field Tollgate reads is set more than once (parsers disagree on which one wins).
    #[error("the request body sets `{0}` more than once")]
    DuplicateKey(&'static str),
    /// OpenAI `stream` is neither `true`, `false` nor `null`.
    #[error("`stream` must be true or false")]
    StreamNotBoolean,
}

/// A request refused on its body, with what is known of it (for the call's row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub info: RequestInfo,
    pub reason: BodyError,
}

impl Refused {
    pub(crate) fn new(info: RequestInfo, reason: BodyError) -> Refused {
        Refused { info, reason }
    }
}

/// The endpoint a request targets, from its method and `rest`, the path after the provider
/// prefix as [`normalize_path`] left it (the path that is forwarded). No body needed.
pub fn endpoint(kind: ProviderKind, method: &http::Method, rest: &str) -> Endpoint {
    kind.dialect().endpoint(method, rest)
}

/// Read a request: `rest` is the path after the provider prefix as [`normalize_path`] left it
/// (starts with `/`; the same path is forwarded), `query` the raw query without `?`. Returns
/// the request's description and, when the body must be rewritten (OpenAI streaming without
/// `include_usage`), the new body. A body Tollgate cannot read is forwarded as it is and
/// described as well as the path allows — except on an endpoint of the table, whose body is
/// read as the provider reads it or refused ([`Refused`]): not one JSON object, a field
/// Tollgate reads set twice, a `stream` that is not a boolean.
pub fn inspect(
    kind: ProviderKind,
    method: &http::Method,
    rest: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Result<(RequestInfo, Option<Bytes>), Refused> {
    kind.dialect().inspect(method, rest, query, body)
}

/// Why a request's output cap could not be written ([`cap_output`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// The body's output settings cannot be read (not a JSON object, a `generationConfig` that
    /// is not one).
    Unreadable,
    /// More choices (`n`, `best_of`, `candidateCount`) than the cap has tokens: each would get
    /// less than one.
    TooManyChoices { choices: u64 },
}

/// `body` (of a request `info` describes) with its cap on output tokens set so that the call
/// produces at most `total` tokens over all its choices, written where the provider reads it
/// (OpenAI: `max_completion_tokens`/`max_tokens`/`max_output_tokens` by endpoint; Gemini:
/// `generationConfig.maxOutputTokens`), every other byte the client's. Returns the new body and
/// the cap it sets over all choices (`total` rounded down to a multiple of the choices);
/// `Ok(None)` for an endpoint that generates nothing (embeddings, `countTokens`, endpoints not
/// in the table).
pub fn cap_output(
    kind: ProviderKind,
    info: &RequestInfo,
    body: &Bytes,
    total: u64,
) -> Result<Option<(Bytes, u64)>, CapError> {
    match kind {
        ProviderKind::Openai => openai::cap_output(info.endpoint, body, total),
        ProviderKind::Gemini => gemini::cap_output(info.endpoint, body, total),
    }
}

/// The usage to record for a call that ended without a provider report: the prompt estimate
/// plus the relayed output text at about four characters per token.
pub fn estimated_usage(info: &RequestInfo, report: &TapReport) -> Usage {
    Usage {
        input_tokens: info.prompt_tokens_estimate,
        cached_input_tokens: 0,
        output_tokens: report.output_chars.div_ceil(4),
        reasoning_tokens: 0,
    }
}
