//! The request path, phase by phase. This is the only module that knows the order of the
//! phases and calls the others:
//!
//! ```text
//! 1 route         provider by path prefix                         404
//! 2 authenticate  JWT from Authorization / x-goog-api-key / ?key  401
//! 3 read          request body, bounded by server.max_request_bytes 413
//! 4 inspect       endpoint, model, stream flag; include_usage rewrite
//! 5 prepare       strip credentials and hop-by-hop headers, add the provider key
//! 6 forward       pooled client; connect failure 502, no head in time 504,
//!                 upstream refusing Tollgate's own key 502
//! 7 meter         the answer streams back through MeteredBody; headers go out now
//! 8 record        at the end of the body (or when the client goes away): usage, price,
//!                 one row handed to the store writer without waiting
//! ```
//!
//! After phase 7 nothing can change the status code: later failures abort the client's stream
//! and are recorded as the row's `outcome`.
//!
//! A call loads the [`Runtime`] (configuration, routes, JWT verifier, upstream client) once
//! when it starts and keeps it to its end, through its streamed body: a configuration reload
//! (`reload`) swaps the runtime for later calls and never changes a call in flight. The call
//! also counts in the in-flight gauge until it ends, and a refusal bumps its reason's counter
//! (`metrics`); every other figure is counted off the request path, by the store's writer.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use tracing::Instrument;

use crate::auth::{self, Caller, Verifier};
use crate::config::{Config, Provider};
use crate::error::GatewayError;
use crate::meter::{BodyEnd, MeteredBody, OnEnd};
use crate::metrics::{InFlight, Metrics};
use crate::provider::{self, ProviderKind, RequestInfo, ResponseTap, TapReport, UsageSource};
use crate::quota::{self, Estimate, Ledger, QuotaStatus, Reservation};
use crate::store::{Store, UsageRow};

/// The body Tollgate sends to clients: a metered upstream answer or its own small response.
pub type ProxyBody = Either<MeteredBody<UpstreamBody, CallEnd>, Full<Bytes>>;

/// An upstream answer's body: streamed as it comes, or (for a small error body Tollgate had to
/// read before deciding what to answer) already in memory.
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// The pooled upstream client (HTTPS via rustls, or plain HTTP for local upstreams).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The header carrying Tollgate's request id on every answer.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-tollgate-request-id");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the ones a proxy must recompute.
const HOP_HEADERS: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// A provider as the proxy uses it: its config and the header that carries its real key.
struct Route {
    provider: Provider,
    key_header: HeaderName,
    key_value: HeaderValue,
}

/// What a configuration reload replaces, whole: the configuration, the routes built from its
/// providers, the JWT verifier built from `[auth]` (with its token cache), and the upstream
/// client. A call loads it once when it starts and keeps it to its end (pricing included), so a
/// reload never changes a call in flight.
pub struct Runtime {
    pub config: Arc<Config>,
    routes: Vec<Route>,
    verifier: Arc<Verifier>,
    client: UpstreamClient,
}

impl Runtime {
    /// Build the routes of `config` (its verifier is `config.verifier`); calls go out through
    /// `client`.
    pub fn new(config: Arc<Config>, client: UpstreamClient) -> Result<Runtime, String> {
        let verifier = Arc::clone(&config.verifier);
        let mut routes = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            let (key_header, raw) = match p.kind {
                ProviderKind::Openai => (
                    header::AUTHORIZATION,
                    format!("Bearer {}", p.api_key.expose()),
                ),
                ProviderKind::Gemini => (auth::X_GOOG_API_KEY, p.api_key.expose().to_string()),
            };
            let mut key_value = HeaderValue::from_str(&raw)
                .map_err(|_| format!("the key in {} is not a valid header value", p.name))?;
            key_value.set_sensitive(true);
            routes.push(Route {
                provider: p.clone(),
                key_header,
                key_value,
            });
        }
        // Longest prefix first, so `/openai-beta` is not taken by `/openai`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.provider.prefix.len()));
        Ok(Runtime {
            config,
            routes,
            verifier,
            client,
        })
    }

    /// The upstream client calls go out through (a reload keeps it, and its pooled
    /// connections, unless the client's own settings changed).
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Phase 1: the provider whose prefix the path starts with, and the rest of the path.
    fn route<'p>(&self, path: &'p str) -> Option<(&Route, &'p str)> {
        self.routes.iter().find_map(|r| {
            let rest = path.strip_prefix(r.provider.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/'))
                .then_some((r, if rest.is_empty() { "/" } else { rest }))
        })
    }
}

/// Everything the request path shares across calls.
pub struct Proxy {
    /// Swapped whole by a configuration reload; each call loads it once (one `Arc` clone).
    runtime: ArcSwap<Runtime>,
    store: Store,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    ids: RequestIds,
}

/// What the end of a call needs to write its row. Dropped with the call's future: a client
/// that goes away before the answer's head still leaves a row (see `Drop`).
struct CallCtx {
    proxy: Arc<Proxy>,
    /// The configuration this call started with; it keeps it to the end.
    rt: Arc<Runtime>,
    /// Counts the call in flight until the call (or its streamed body) ends.
    in_flight: Option<InFlight>,
    /// The call's span: request id, then provider, user, model and status as they are known.
    span: tracing::Span,
    /// The request was handed to the upstream client (it may have been billed).
    sent: bool,
    request_id: Arc<str>,
    started: Instant,
    ts_ms: i64,
    kind: Option<ProviderKind>,
    provider: Option<Arc<str>>,
    caller: Option<Caller>,
    /// The caller's id, kept for the quota headers after `caller` moved into the body.
    user: Option<Arc<str>>,
    info: Option<RequestInfo>,
    /// The admitted call's reservation, until the body (or a refusal) settles it.
    reservation: Option<Reservation>,
}

impl Drop for CallCtx {
    /// The client went away while Tollgate was still reading its body, waiting for admission
    /// or for the upstream's answer: hyper dropped the call's future. Record it (status 499,
    /// nginx's "client closed request"), estimated if the upstream may already be working on it.
    fn drop(&mut self) {
        if self.caller.is_none() {
            return;
        }
        let (usage, source) = match &self.info {
            Some(info) if self.sent && info.endpoint.consumes() => (
                provider::estimate(info, &TapReport::default()),
                UsageSource::Estimated,
            ),
            _ => (provider::Usage::default(), UsageSource::None),
        };
        let proxy = Arc::clone(&self.proxy);
        let span = self.span.clone();
        let _in_span = span.enter();
        proxy.record_unanswered(self, 499, usage, source, "client_gone");
    }
}

/// Response headers that tell the app where its user stands.
pub const DAILY_REMAINING: HeaderName =
    HeaderName::from_static("x-tollgate-daily-tokens-remaining");
pub const DAILY_RESET: HeaderName = HeaderName::from_static("x-tollgate-daily-reset");
pub const MONTHLY_REMAINING: HeaderName =
    HeaderName::from_static("x-tollgate-monthly-tokens-remaining");
pub const MONTHLY_RESET: HeaderName = HeaderName::from_static("x-tollgate-monthly-reset");

impl Proxy {
    pub fn new(
        runtime: Runtime,
        store: Store,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        Proxy {
            runtime: ArcSwap::from_pointee(runtime),
            store,
            ledger,
            metrics,
            ids: RequestIds::new(),
        }
    }

    /// The runtime the next call will start with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The configuration the next call will start with.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.runtime.load().config)
    }

    /// Replace the runtime (a configuration reload): calls that start from now on use `runtime`;
    /// calls in flight keep theirs. Returns the one replaced.
    pub fn swap_runtime(&self, runtime: Runtime) -> Arc<Runtime> {
        self.runtime.swap(Arc::new(runtime))
    }

    /// Serve one request. Never fails: every error becomes a response in the provider's shape.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if req.method() == Method::GET {
            match req.uri().path() {
                "/healthz" => return Ok(plain(StatusCode::OK, "ok\n")),
                "/me/usage" => return Ok(self.me_usage(&req)),
                _ => {}
            }
        }
        let request_id = self.ids.for_request(req.headers());
        let span = tracing::info_span!(
            "call",
            request_id = %request_id,
            provider = tracing::field::Empty,
            user = tracing::field::Empty,
            model = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let mut ctx = CallCtx {
            proxy: Arc::clone(&self),
            rt: self.runtime.load_full(),
            in_flight: Some(self.metrics.call_started()),
            span: span.clone(),
            sent: false,
            request_id,
            started: Instant::now(),
            ts_ms: unix_ms(),
            kind: None,
            provider: None,
            caller: None,
            user: None,
            info: None,
            reservation: None,
        };
        let request_id = ctx.request_id.clone();
        let result = self.proxy(req, &mut ctx).instrument(span.clone()).await;
        let _in_span = span.enter();
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let resp = e.response::<Full<Bytes>>(ctx.kind);
                self.metrics.refused(&e);
                self.record_refusal(&mut ctx, &e);
                resp.map(Either::Right)
            }
        };
        if let Some(user) = &ctx.user {
            quota_headers(resp.headers_mut(), &self.ledger.status(user));
        }
        let id = HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("invalid"));
        if !resp.headers().contains_key(X_REQUEST_ID) {
            resp.headers_mut().insert(X_REQUEST_ID, id.clone());
        }
        resp.headers_mut().insert(REQUEST_ID_HEADER, id);
        Ok(resp)
    }

    async fn proxy(
        self: &Arc<Self>,
        req: Request<Incoming>,
        ctx: &mut CallCtx,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let (parts, body) = req.into_parts();
        // A cheap clone (shared bytes): `rest` and `query` borrow from it while `parts` moves on.
        let uri = parts.uri.clone();

        // 1 route
        let rt = Arc::clone(&ctx.rt);
        let (route, rest) = rt.route(uri.path()).ok_or(GatewayError::UnknownPrefix)?;
        let provider = &route.provider;
        ctx.kind = Some(provider.kind);
        ctx.provider = Some(provider.name.clone());
        ctx.span.record("provider", &*provider.name);

        // 2 authenticate
        let query = uri.query();
        let caller = {
            let token = auth::credential(&parts.headers, query).ok_or(
                GatewayError::Unauthenticated(auth::AuthError::MissingCredential),
            )?;
            rt.verifier
                .verify(&token)
                .map_err(GatewayError::Unauthenticated)?
        };
        ctx.span.record("user", &*caller.user_id);
        ctx.user = Some(caller.user_id.clone());
        ctx.caller = Some(caller);

        // 3 read the body, bounded
        let body = read_body(&parts.headers, body, rt.config.raw.server.max_request_bytes).await?;

        // 4 inspect
        let (info, rewritten) = provider::inspect(provider.kind, &parts.method, rest, query, &body);
        let body = rewritten.unwrap_or(body);

        // 4b admit: blocked 403, quota or rate 429; the upstream is never contacted
        if let Some(model) = &info.model {
            ctx.span.record("model", model.as_str());
        }
        let estimate = estimate(&rt.config, &info);
        let user = ctx.user.as_ref().ok_or(GatewayError::Internal)?;
        ctx.info = Some(info);
        ctx.reservation = Some(
            self.ledger
                .admit(user, estimate)
                .map_err(GatewayError::Denied)?,
        );

        // 5 prepare
        let upstream_req = prepare(route, parts, rest, body)?;

        // 6 forward
        let sent = Instant::now();
        ctx.sent = true;
        let resp = match tokio::time::timeout(
            rt.config.response_header_timeout(),
            rt.client.request(upstream_req),
        )
        .await
        {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(request_id = %ctx.request_id, provider = %provider.name, error = %error_chain(&e), "upstream request failed");
                return Err(GatewayError::UpstreamUnreachable);
            }
            Ok(Ok(resp)) => resp,
        };
        let ttfb_ms = sent.elapsed().as_millis() as u64;
        let (mut head, upstream_body) = resp.into_parts();
        let upstream_body = self
            .screen_key_refusal(&rt.config, provider, &ctx.request_id, &head, upstream_body)
            .await?;

        // 7 meter
        strip_hop_headers(&mut head.headers);
        let info = ctx.info.as_ref().ok_or(GatewayError::Internal)?;
        let tap = ResponseTap::new(provider.kind, info, head.status, &head.headers);
        tap.adjust_headers(&mut head.headers);
        let exact_hint = head.headers.contains_key(header::CONTENT_LENGTH);
        let end = CallEnd {
            proxy: Arc::clone(self),
            rt: Arc::clone(&rt),
            _in_flight: ctx.in_flight.take(),
            span: ctx.span.clone(),
            request_id: ctx.request_id.clone(),
            started: ctx.started,
            ts_ms: ctx.ts_ms,
            provider: provider.name.clone(),
            caller: ctx.caller.take(),
            info: ctx.info.take(),
            reservation: ctx.reservation.take(),
            status: head.status.as_u16(),
            ttfb_ms,
        };
        let body = MeteredBody::new(
            upstream_body,
            tap,
            rt.config.idle_timeout(),
            exact_hint,
            end,
        );
        Ok(Response::from_parts(head, Either::Left(body)))
    }

    /// An upstream refusing Tollgate's own key is not the client's business, and its body can
    /// echo key fragments: OpenAI and Gemini answer 401/403, Gemini also 400 with reason
    /// `API_KEY_INVALID`. Those become a 502 of Tollgate's own and an error in the operator's
    /// log (with the provider's error code, never its message). Every other answer passes on.
    async fn screen_key_refusal(
        &self,
        config: &Config,
        provider: &Provider,
        request_id: &str,
        head: &http::response::Parts,
        body: Incoming,
    ) -> Result<UpstreamBody, GatewayError> {
        const SMALL: u64 = 64 * 1024;
        let status = head.status;
        let gemini_400 = provider.kind == ProviderKind::Gemini
            && status == StatusCode::BAD_REQUEST
            && http_body::Body::size_hint(&body)
                .upper()
                .is_some_and(|n| n <= SMALL);
        if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN && !gemini_400 {
            return Ok(Either::Left(body));
        }
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            Limited::new(body, SMALL as usize).collect(),
        )
        .await;
        let bytes = match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            _ if gemini_400 => return Err(GatewayError::UpstreamUnreachable),
            _ => Bytes::new(),
        };
        if gemini_400 && memchr::memmem::find(&bytes, b"API_KEY_INVALID").is_none() {
            return Ok(Either::Right(Full::new(bytes)));
        }
        let env = config
            .raw
            .providers
            .iter()
            .find(|p| p.name.as_str() == &*provider.name)
            .map_or("the provider's api_key_env", |p| p.api_key_env.as_str());
        tracing::error!(
            request_id,
            provider = %provider.name,
            upstream_status = status.as_u16(),
            upstream_error = %error_code(&bytes),
            "the upstream refused the gateway's provider key: check {env}"
        );
        Err(GatewayError::UpstreamRejectedKey)
    }

    /// A row for a call Tollgate answered itself after it knew who was calling.
    fn record_refusal(&self, ctx: &mut CallCtx, e: &GatewayError) {
        if ctx.caller.is_none() {
            tracing::info!(status = e.status().as_u16(), error = %e, "refused");
            return;
        }
        // A request that reached the upstream but got no answer in time may still be billed:
        // estimate it. Everything else consumed nothing.
        let (usage, source) = match (e, &ctx.info) {
            (GatewayError::UpstreamTimeout, Some(info)) if info.endpoint.consumes() => (
                provider::estimate(info, &TapReport::default()),
                UsageSource::Estimated,
            ),
            _ => (provider::Usage::default(), UsageSource::None),
        };
        self.record_unanswered(ctx, e.status().as_u16(), usage, source, e.outcome());
    }

    /// The row of an authenticated call that got no upstream answer (refused, failed, or its
    /// client gone before the answer's head); settles its reservation. Takes the caller out
    /// of `ctx`, so that a call is recorded once.
    fn record_unanswered(
        &self,
        ctx: &mut CallCtx,
        status: u16,
        usage: provider::Usage,
        source: UsageSource,
        outcome: &'static str,
    ) {
        let (Some(caller), Some(provider)) = (ctx.caller.take(), ctx.provider.clone()) else {
            return;
        };
        let cost = cost(
            &ctx.rt.config,
            ctx.info.as_ref().and_then(|i| i.model.as_deref()),
            &usage,
            &ctx.request_id,
        );
        // Settle what the call may have used; a call that consumed nothing releases its
        // reservation (dropping it does).
        let reservation = ctx.reservation.take();
        let ts_ms = reservation
            .as_ref()
            .map_or(ctx.ts_ms, |r| r.admitted_at().as_millisecond());
        if let Some(r) = reservation {
            r.settle(usage.total(), cost.map_or(0, |c| c.max(0) as u64));
        }
        self.write_row(RowParts {
            request_id: &ctx.request_id,
            ts_ms,
            started: ctx.started,
            caller: &caller,
            provider: &provider,
            info: ctx.info.as_ref(),
            response_model: None,
            status,
            usage,
            source,
            cost,
            ttfb_ms: None,
            outcome,
        });
    }

    /// `GET /me/usage`: the caller's own usage, limits and reset times, for the app to show.
    fn me_usage(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let caller = auth::credential(req.headers(), req.uri().query())
            .ok_or(GatewayError::Unauthenticated(
                auth::AuthError::MissingCredential,
            ))
            .and_then(|t| {
                self.runtime
                    .load()
                    .verifier
                    .verify(&t)
                    .map_err(GatewayError::Unauthenticated)
            });
        let caller = match caller {
            Ok(c) => c,
            Err(e) => return e.response::<Full<Bytes>>(None).map(Either::Right),
        };
        let status = self.ledger.status(&caller.user_id);
        let body = me_usage_json(&caller.user_id, self.ledger.timezone(), &status);
        let mut resp = crate::error::json_response::<Full<Bytes>>(
            StatusCode::OK,
            Bytes::from(body.to_string()),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        quota_headers(resp.headers_mut(), &status);
        resp.map(Either::Right)
    }

    fn write_row(&self, p: RowParts<'_>) {
        let model = p
            .response_model
            .or_else(|| p.info.and_then(|i| i.model.clone()));
        let cost = p.cost;
        let latency_ms = p.started.elapsed().as_millis() as u64;
        tracing::Span::current().record("status", p.status);
        let endpoint = p.info.map_or("other", |i| i.endpoint.as_str());
        tracing::info!(
            model = model.as_deref().unwrap_or("-"),
            endpoint,
            status = p.status,
            outcome = p.outcome,
            input_tokens = p.usage.input_tokens,
            output_tokens = p.usage.output_tokens,
            usage_source = p.source.as_str(),
            latency_ms,
            "call"
        );
        let row = UsageRow {
            request_id: p.request_id.to_string(),
            ts_ms: p.ts_ms,
            user_id: p.caller.user_id.clone(),
            user_email: p.caller.email.clone(),
            user_name: p.caller.name.clone(),
            provider: p.provider.clone(),
            model,
            endpoint,
            streamed: p.info.is_some_and(|i| i.stream),
            status: p.status,
            usage: p.usage,
            cost_nano_usd: cost,
            usage_source: p.source,
            latency_ms,
            ttfb_ms: p.ttfb_ms,
            outcome: p.outcome,
        };
        if !self.store.record(row) {
            tracing::error!(request_id = %p.request_id, "usage row dropped: the store queue is full");
        }
    }
}

struct RowParts<'a> {
    request_id: &'a str,
    ts_ms: i64,
    started: Instant,
    caller: &'a Caller,
    provider: &'a Arc<str>,
    info: Option<&'a RequestInfo>,
    response_model: Option<String>,
    status: u16,
    usage: provider::Usage,
    source: UsageSource,
    cost: Option<i64>,
    ttfb_ms: Option<u64>,
    outcome: &'static str,
}

/// The end of a metered call: prices its usage and hands its row to the store.
pub struct CallEnd {
    proxy: Arc<Proxy>,
    /// The configuration the call started with: its prices price it.
    rt: Arc<Runtime>,
    /// Dropped with the call's end: the call no longer counts as in flight.
    _in_flight: Option<InFlight>,
    span: tracing::Span,
    request_id: Arc<str>,
    started: Instant,
    ts_ms: i64,
    provider: Arc<str>,
    caller: Option<Caller>,
    info: Option<RequestInfo>,
    reservation: Option<Reservation>,
    status: u16,
    ttfb_ms: u64,
}

impl OnEnd for CallEnd {
    fn on_end(self, how: BodyEnd, report: TapReport) {
        let span = self.span.clone();
        let _in_span = span.enter();
        let (Some(caller), Some(info)) = (&self.caller, &self.info) else {
            return;
        };
        let success = (200..300).contains(&self.status);
        let (usage, source) = match report.usage {
            Some(usage) => (usage, UsageSource::Reported),
            // The provider bills nothing for an error answer it completed.
            None if !success && how == BodyEnd::Complete => {
                (provider::Usage::default(), UsageSource::None)
            }
            None if !info.endpoint.consumes() => (provider::Usage::default(), UsageSource::None),
            None if success && how == BodyEnd::Complete && !info.stream => {
                // A complete answer without a usage report: nothing to estimate from the
                // provider's side, but the call did consume. Estimate it.
                (provider::estimate(info, &report), UsageSource::Estimated)
            }
            None => (provider::estimate(info, &report), UsageSource::Estimated),
        };
        let outcome = match how {
            BodyEnd::Complete if report.error_seen => "stream_error",
            BodyEnd::Complete if info.stream && !report.complete => "stream_truncated",
            other => other.as_str(),
        };
        let model = report.model.as_deref().or(info.model.as_deref());
        let cost = cost(&self.rt.config, model, &usage, &self.request_id);
        let ts_ms = self
            .reservation
            .as_ref()
            .map_or(self.ts_ms, |r| r.admitted_at().as_millisecond());
        if let Some(r) = self.reservation {
            r.settle(usage.total(), cost.map_or(0, |c| c.max(0) as u64));
        }
        self.proxy.write_row(RowParts {
            request_id: &self.request_id,
            ts_ms,
            started: self.started,
            caller,
            provider: &self.provider,
            info: Some(info),
            response_model: report.model,
            status: self.status,
            usage,
            source,
            cost,
            ttfb_ms: Some(self.ttfb_ms),
            outcome,
        });
    }
}

/// What an admitted call may cost at most: its prompt estimate plus its output cap, priced.
fn estimate(config: &Config, info: &RequestInfo) -> Estimate {
    let limits = &config.raw.limits;
    let tokens = quota::estimate_tokens(
        info,
        limits.default_max_output_tokens,
        limits.media_part_tokens,
    );
    let input = info
        .prompt_tokens_with(limits.media_part_tokens)
        .min(tokens);
    let usage = provider::Usage {
        input_tokens: input,
        output_tokens: tokens - input,
        ..Default::default()
    };
    let cost = info
        .model
        .as_deref()
        .and_then(|m| config.prices.cost_nano_usd(m, &usage));
    Estimate {
        tokens,
        cost_nano_usd: cost.map_or(0, |c| c.max(0) as u64),
    }
}

/// The cost of `usage` on `model` in nano-USD at `config`'s prices; `None` (and a warning) when
/// it has no price.
fn cost(
    config: &Config,
    model: Option<&str>,
    usage: &provider::Usage,
    request_id: &str,
) -> Option<i64> {
    if usage.total() == 0 {
        return Some(0);
    }
    let cost = model.and_then(|m| config.prices.cost_nano_usd(m, usage));
    if cost.is_none() {
        tracing::warn!(
            request_id,
            model = model.unwrap_or("-"),
            "no price for this model: cost recorded as NULL"
        );
    }
    cost
}

/// Phase 3: the request body, refused past `limit` bytes (413) before or while reading it.
async fn read_body(headers: &HeaderMap, body: Incoming, limit: u64) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::BodyTooLarge { limit })
        }
        Err(_) => Err(GatewayError::BodyRead),
    }
}

/// Phase 5: the upstream request — same method, path under the upstream's base, query without
/// `key`, end-to-end headers without any client credential, and the provider's real key.
fn prepare(
    route: &Route,
    parts: http::request::Parts,
    rest: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, GatewayError> {
    let p = &route.provider;
    let query = parts.uri.query();
    let stripped = query.and_then(auth::strip_key_param);
    let query = stripped.as_deref().or(query).filter(|q| !q.is_empty());
    let mut path_and_query = String::with_capacity(
        p.upstream_base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1),
    );
    path_and_query.push_str(&p.upstream_base_path);
    path_and_query.push_str(rest);
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let uri = Uri::builder()
        .scheme(p.upstream_scheme.clone())
        .authority(p.upstream_authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot build the upstream URI");
            GatewayError::Internal
        })?;

    let mut headers = parts.headers;
    strip_hop_headers(&mut headers);
    auth::strip_credential_headers(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.insert(route.key_header.clone(), route.key_value.clone());

    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_HEADERS {
        headers.remove(name);
    }
}

/// The machine-readable code of an upstream error body (never its message, which can echo key
/// fragments).
fn error_code(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return "unreadable".into();
    };
    let err = &v["error"];
    let mut parts = Vec::new();
    for k in ["code", "type", "status"] {
        match &err[k] {
            serde_json::Value::String(s) => parts.push(format!("{k}={s}")),
            serde_json::Value::Number(n) => parts.push(format!("{k}={n}")),
            _ => {}
        }
    }
    if let Some(reason) = err["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["reason"].as_str()))
    {
        parts.push(format!("reason={reason}"));
    }
    if parts.is_empty() {
        "no code".into()
    } else {
        parts.join(" ")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn plain(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Request ids: the client's `x-request-id` when it is sane, else a new one.
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let prefix = nanos ^ (u64::from(std::process::id()) << 32);
        RequestIds {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    fn for_request(&self, headers: &HeaderMap) -> Arc<str> {
        if let Some(v) = headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok())
            && is_sane_request_id(v)
        {
            return v.into();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("tg-{:012x}{:08x}", self.prefix & 0xffff_ffff_ffff, n).into()
    }
}

/// 1 to 128 characters from `[A-Za-z0-9._:-]`: safe to log, store and echo.
fn is_sane_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The quota headers on every answer to an authenticated caller.
fn quota_headers(headers: &mut HeaderMap, status: &QuotaStatus) {
    headers.insert(
        DAILY_REMAINING,
        HeaderValue::from(status.day.remaining_tokens),
    );
    headers.insert(
        MONTHLY_REMAINING,
        HeaderValue::from(status.month.remaining_tokens),
    );
    for (name, at) in [
        (DAILY_RESET, status.day.reset_at),
        (MONTHLY_RESET, status.month.reset_at),
    ] {
        if let Ok(v) = HeaderValue::from_str(&at.to_string()) {
            headers.insert(name, v);
        }
    }
}

/// The body of `GET /me/usage`.
fn me_usage_json(user: &str, tz: &jiff::tz::TimeZone, s: &QuotaStatus) -> serde_json::Value {
    fn usd(nano: u64) -> f64 {
        nano as f64 / 1e9
    }
    let window = |w: &quota::WindowStatus| {
        serde_json::json!({
            "start": w.start.to_string(),
            "resets_at": w.reset_at.to_string(),
            "resets_in_secs": (w.reset_at.as_second() - jiff::Timestamp::now().as_second()).max(0),
            "used_tokens": w.used_tokens,
            "reserved_tokens": w.reserved_tokens,
            "limit_tokens": w.token_limit,
            "remaining_tokens": w.remaining_tokens,
            "used_cost_usd": usd(w.used_cost_nano_usd),
            "cost_limit_usd": w.cost_limit_nano_usd.map(usd),
            "remaining_cost_usd": w.remaining_cost_nano_usd.map(usd),
        })
    };
    serde_json::json!({
        "user": user,
        "timezone": tz.iana_name().unwrap_or("UTC"),
        "blocked": s.blocked,
        "blocked_reason": s.blocked_reason,
        "day": window(&s.day),
        "month": window(&s.month),
        "requests_per_minute": s.limits.requests_per_minute.get(),
        "max_concurrent": s.limits.max_concurrent.map(|n| n.get()),
        "in_flight": s.in_flight,
    })
}
