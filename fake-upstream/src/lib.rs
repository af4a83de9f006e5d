//! fake-upstream: a small, fast, deterministic fake of the OpenAI and Gemini HTTP APIs.
//!
//! It answers in the providers' exact wire formats (JSON, SSE, Gemini's piecewise JSON array)
//! with usage numbers that follow from the request alone (see README.md), so a test can assert
//! a gateway's usage rows to the token. It also polices what reaches it: with expected provider
//! keys set, a request without exactly that key gets the provider's 401, and a request that
//! carries a JWT-looking string anywhere gets a 400 "client credential leaked", counted in
//! `GET /__fake/stats`.
//!
//! Code map: `lib.rs` (server, routing, credential checks, stats) · `openai.rs` and `gemini.rs`
//! (rendering) · `knobs.rs` (per-request knobs) · `body.rs` (paced stream bodies) ·
//! `text.rs` (word counts, answer text, escaping).

pub mod body;
pub mod gemini;
pub mod knobs;
pub mod openai;
pub mod text;

use std::convert::Infallible;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

pub use body::FakeBody;
pub use knobs::{Defaults, Knobs};

/// How the fake is set up (command line / environment).
#[derive(Clone, Debug)]
pub struct Settings {
    pub defaults: Defaults,
    /// When set, OpenAI requests must carry exactly `Authorization: Bearer <key>`.
    pub expect_openai_key: Option<String>,
    /// When set, Gemini requests must carry exactly `x-goog-api-key: <key>`.
    pub expect_gemini_key: Option<String>,
    /// Send whole (non-stream) answers without `content-length` (chunked transfer encoding).
    pub chunked_json: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            defaults: Defaults {
                chunks: 20,
                chunk_delay_ms: 0,
                head_delay_ms: 0,
            },
            expect_openai_key: None,
            expect_gemini_key: None,
            chunked_json: false,
        }
    }
}

/// Counters served at `GET /__fake/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Every request except `/__fake/*` and health checks.
    pub requests: AtomicU64,
    /// Requests refused because they carried a JWT-looking string.
    pub leaks: AtomicU64,
    /// Requests refused for a missing or wrong provider key.
    pub unauthorized: AtomicU64,
    pub openai: AtomicU64,
    pub gemini: AtomicU64,
}

impl Stats {
    fn to_json(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            r#"{{"requests":{},"leaks":{},"unauthorized":{},"openai":{},"gemini":{}}}"#,
            get(&self.requests),
            get(&self.leaks),
            get(&self.unauthorized),
            get(&self.openai),
            get(&self.gemini)
        )
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.leaks,
            &self.unauthorized,
            &self.openai,
            &self.gemini,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Which API a request speaks (decides the auth check and the error shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Gemini,
}

/// One request, as the renderers see it.
pub struct Call<'a> {
    /// Per-process request number, used in ids (`chatcmpl-fake7`).
    pub seq: u64,
    /// The model, as the request names it (without Gemini's `models/`).
    pub model: &'a str,
    pub knobs: Knobs,
    pub body: &'a Value,
    pub query: Option<&'a str>,
}

/// Token counts of one answer; see README.md for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub cached: u64,
    /// Content chunks = visible output tokens.
    pub content: u64,
    pub reasoning: u64,
    /// The output was cut short by the request's own output cap.
    pub capped: bool,
}

impl Tokens {
    /// `cap`: the request's max output tokens, if any.
    pub fn new(call: &Call<'_>, cap: Option<u64>) -> Tokens {
        let prompt = text::count_words(call.body) + 3;
        let (content, capped) = match cap {
            Some(c) if c < call.knobs.chunks => (c.max(1), true),
            _ => (call.knobs.chunks, false),
        };
        Tokens {
            prompt,
            cached: call.knobs.cached_tokens.min(prompt),
            content,
            reasoning: call.knobs.reasoning_tokens,
            capped,
        }
    }

    /// Output tokens as billed: content plus reasoning.
    pub fn completion(&self) -> u64 {
        self.content + self.reasoning
    }

    pub fn total(&self) -> u64 {
        self.prompt + self.completion()
    }
}

/// The fake server's state.
pub struct Fake {
    settings: Settings,
    expect_openai_auth: Option<HeaderValue>,
    expect_gemini_key: Option<HeaderValue>,
    seq: AtomicU64,
    pub stats: Stats,
}

impl Fake {
    pub fn new(settings: Settings) -> Arc<Fake> {
        let nonempty =
            |k: &Option<String>| k.as_deref().filter(|k| !k.is_empty()).map(str::to_owned);
        let expect_openai_auth = nonempty(&settings.expect_openai_key)
            .and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok());
        let expect_gemini_key =
            nonempty(&settings.expect_gemini_key).and_then(|k| HeaderValue::from_str(&k).ok());
        Arc::new(Fake {
            settings,
            expect_openai_auth,
            expect_gemini_key,
            seq: AtomicU64::new(0),
            stats: Stats::default(),
        })
    }

    /// Answer one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<FakeBody>
    where
        B: Body,
        B::Error: Display,
    {
        let resp = self.answer(req).await;
        if self.settings.chunked_json {
            resp.map(FakeBody::into_unsized)
        } else {
            resp
        }
    }

    async fn answer<B>(&self, req: Request<B>) -> Response<FakeBody>
    where
        B: Body,
        B::Error: Display,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let query = parts.uri.query();

        if let Some(own) = path.strip_prefix("/__fake/") {
            return match (&parts.method, own) {
                (&Method::GET, "stats") => json(StatusCode::OK, self.stats.to_json()),
                (&Method::POST, "reset") => {
                    self.stats.reset();
                    json(StatusCode::OK, self.stats.to_json())
                }
                _ => json(
                    StatusCode::NOT_FOUND,
                    r#"{"error":"unknown /__fake/ route"}"#,
                ),
            };
        }
        if parts.method == Method::GET && matches!(path, "/health" | "/healthz") {
            return json(StatusCode::OK, r#"{"status":"ok"}"#);
        }

        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let api = classify(path, query, &parts.headers);
        match api {
            Api::OpenAi => self.stats.openai.fetch_add(1, Ordering::Relaxed),
            Api::Gemini => self.stats.gemini.fetch_add(1, Ordering::Relaxed),
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;

        let bytes: Bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    api,
                    StatusCode::BAD_REQUEST,
                    &format!("could not read the request body: {e}"),
                );
            }
        };

        if leaked(path, query, &parts.headers, &bytes) {
            self.stats.leaks.fetch_add(1, Ordering::Relaxed);
            return error(api, StatusCode::BAD_REQUEST, "client credential leaked");
        }
        if !self.authorized(api, &parts.headers) {
            self.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            return match api {
                Api::OpenAi => openai::error(
                    StatusCode::UNAUTHORIZED,
                    "Incorrect API key provided (fake-upstream expected its configured key).",
                    "invalid_request_error",
                    Some("invalid_api_key"),
                ),
                Api::Gemini => gemini::error(
                    StatusCode::UNAUTHORIZED,
                    "API key not valid. Please pass a valid API key (fake-upstream expected its configured key).",
                ),
            };
        }

        match api {
            Api::OpenAi => self.openai(seq, &parts.method, path, query, &bytes).await,
            Api::Gemini => self.gemini(seq, &parts.method, path, query, &bytes).await,
        }
    }

    fn authorized(&self, api: Api, headers: &HeaderMap) -> bool {
        let (expected, name) = match api {
            Api::OpenAi => (&self.expect_openai_auth, "authorization"),
            Api::Gemini => (&self.expect_gemini_key, "x-goog-api-key"),
        };
        let Some(expected) = expected else {
            return true;
        };
        let mut values = headers.get_all(name).iter();
        values.next() == Some(expected) && values.next().is_none()
    }

    async fn openai(
        &self,
        seq: u64,
        method: &Method,
        path: &str,
        query: Option<&str>,
        bytes: &Bytes,
    ) -> Response<FakeBody> {
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        if *method == Method::GET {
            return match rest.strip_prefix("/models") {
                Some("" | "/") => openai::models(),
                Some(id) if id.starts_with('/') && id.len() > 1 => openai::model(&id[1..]),
                _ => openai::not_found(method, path),
            };
        }
        let endpoint = match (method, rest) {
            (&Method::POST, "/chat/completions") => openai::Endpoint::Chat,
            (&Method::POST, "/responses") => openai::Endpoint::Responses,
            (&Method::POST, "/embeddings") => openai::Endpoint::Embeddings,
            (&Method::POST, "/completions") => openai::Endpoint::Completions,
            _ => return openai::not_found(method, path),
        };
        let body: Value = match serde_json::from_slice(bytes) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return openai::error(
                    StatusCode::BAD_REQUEST,
                    "We could not parse the JSON body of your request. (fake-upstream)",
                    "invalid_request_error",
                    None,
                );
            }
        };
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return openai::error(
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter",
                "invalid_request_error",
                None,
            );
        };
        let knobs = Knobs::resolve(&self.settings.defaults, query, model);
        let call = Call {
            seq,
            model,
            knobs,
            body: &body,
            query,
        };
        if let Some(resp) = pause_or_fail(Api::OpenAi, &knobs).await {
            return resp;
        }
        match endpoint {
            openai::Endpoint::Chat => openai::chat(&call),
            openai::Endpoint::Responses => openai::responses(&call),
            openai::Endpoint::Embeddings => openai::embeddings(&call),
            openai::Endpoint::Completions => openai::completions(&call),
        }
    }

    async fn gemini(
        &self,
        seq: u64,
        method: &Method,
        path: &str,
        query: Option<&str>,
        bytes: &Bytes,
    ) -> Response<FakeBody> {
        let rest = ["/v1beta", "/v1alpha", "/v1"]
            .iter()
            .find_map(|v| path.strip_prefix(v).filter(|r| r.starts_with('/')))
            .unwrap_or(path);
        let Some(target) = rest.strip_prefix("/models") else {
            return gemini::not_found(method, path);
        };
        if *method == Method::GET {
            return match target {
                "" | "/" => gemini::models(),
                id if id.len() > 1 && !id.contains(':') => gemini::model(&id[1..]),
                _ => gemini::not_found(method, path),
            };
        }
        let Some((model, action)) = target.strip_prefix('/').and_then(|t| t.rsplit_once(':'))
        else {
            return gemini::not_found(method, path);
        };
        let endpoint = match (method, action) {
            (&Method::POST, "generateContent") => gemini::Endpoint::Generate,
            (&Method::POST, "streamGenerateContent") => {
                if alt_sse(query) {
                    gemini::Endpoint::StreamSse
                } else {
                    gemini::Endpoint::StreamArray
                }
            }
            (&Method::POST, "countTokens") => gemini::Endpoint::CountTokens,
            (&Method::POST, "embedContent") => gemini::Endpoint::Embed,
            (&Method::POST, "batchEmbedContents") => gemini::Endpoint::BatchEmbed,
            _ => return gemini::not_found(method, path),
        };
        let body: Value = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice(bytes) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return gemini::error(
                        StatusCode::BAD_REQUEST,
                        "Invalid JSON payload received. (fake-upstream)",
                    );
                }
            }
        };
        let knobs = Knobs::resolve(&self.settings.defaults, query, model);
        let call = Call {
            seq,
            model,
            knobs,
            body: &body,
            query,
        };
        if let Some(resp) = pause_or_fail(Api::Gemini, &knobs).await {
            return resp;
        }
        match endpoint {
            gemini::Endpoint::Generate => gemini::generate(&call),
            gemini::Endpoint::StreamSse => gemini::stream(&call, true),
            gemini::Endpoint::StreamArray => gemini::stream(&call, false),
            gemini::Endpoint::CountTokens => gemini::count_tokens(&call),
            gemini::Endpoint::Embed => gemini::embed(&call),
            gemini::Endpoint::BatchEmbed => gemini::batch_embed(&call),
        }
    }
}

/// Wait the head delay; then answer with the `status` knob's error, if set.
async fn pause_or_fail(api: Api, knobs: &Knobs) -> Option<Response<FakeBody>> {
    if knobs.head_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.head_delay_ms)).await;
    }
    let status = StatusCode::from_u16(knobs.status?).ok()?;
    let mut resp = error(
        api,
        status,
        "error requested from fake-upstream (status knob)",
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    Some(resp)
}

/// Gemini when the path says so (`/v1beta`, `/v1alpha`, a `:action`), or for the ambiguous
/// `/v1/models…` when a Gemini key is present; OpenAI otherwise.
pub fn classify(path: &str, query: Option<&str>, headers: &HeaderMap) -> Api {
    if path.starts_with("/v1beta/") || path.starts_with("/v1alpha/") || path.contains(':') {
        return Api::Gemini;
    }
    if path.starts_with("/v1/models") {
        let key_in_query = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("key=")));
        if headers.contains_key("x-goog-api-key") || key_in_query {
            return Api::Gemini;
        }
    }
    Api::OpenAi
}

fn alt_sse(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| matches!(kv.split_once('='), Some(("alt" | "$alt" | "%24alt", v)) if v.starts_with("sse")))
    })
}

fn leaked(path: &str, query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> bool {
    text::has_jwt(path.as_bytes())
        || query.is_some_and(|q| text::has_jwt(q.as_bytes()))
        || headers.values().any(|v| text::has_jwt(v.as_bytes()))
        || text::has_jwt(body)
}

/// An error in the API's own shape.
pub fn error(api: Api, status: StatusCode, message: &str) -> Response<FakeBody> {
    match api {
        Api::OpenAi => {
            let (kind, code) = openai::error_kind(status);
            openai::error(status, message, kind, code)
        }
        Api::Gemini => gemini::error(status, message),
    }
}

pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: FakeBody,
) -> Response<FakeBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<FakeBody> {
    respond(status, "application/json", FakeBody::full(body))
}

/// Serve HTTP/1.1 (keep-alive) and HTTP/2 (cleartext, prior knowledge) on `listener` forever.
pub async fn serve(listener: TcpListener, fake: Arc<Fake>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                eprintln!("fake-upstream: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let fake = Arc::clone(&fake);
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let fake = Arc::clone(&fake);
                async move { Ok::<_, Infallible>(fake.handle(req).await) }
            });
            // A client that goes away mid-answer is normal here.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
