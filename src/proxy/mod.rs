//! The request path, phase by phase. This is the only module that knows the order of the
//! phases and calls the others:
//!
//! ```text
//! 1 route         the path checked (provider::normalize_path), then
//!                 provider by path prefix                         404
//! 2 authenticate  JWT from Authorization / x-goog-api-key / ?key  401
//! 2b path         a path that could be read two ways              400
//!                 an endpoint not in the table, if refused        404
//! 2c door         calls in flight: all (server.max_in_flight)       503 + Retry-After
//!                 and this user's (server.max_in_flight_per_user)  429
//! 3 read          request body, bounded by server.max_request_bytes 413
//!                 and server.request_body_timeout_ms               408
//! 4 inspect       endpoint, model, stream flag; include_usage rewrite;
//!                 a body of a metered endpoint read two ways      400
//! 4a plan         the caller's plan (JWT plan claim): a model it does 403
//!                 not allow, more output than its ceiling (or the
//!                 ceiling written into the request)
//! 4b admit        room for the call's row in the store's queue      503 + Retry-After
//!                 the call's hold against the user's limits        403 / 429
//! 4c journal      the call's entry in the store's call journal, kept  503 + Retry-After
//!                 before anything leaves (store.journal)
//! 5 prepare       strip credentials and hop-by-hop headers, add the provider key
//! 6 forward       pooled client; connect failure 502, no head in time 504,
//!                 upstream refusing Tollgate's own key 502
//! 7 meter         the answer streams back through MeteredBody; headers go out now
//! 8 finish        at the end of the body, on a refusal, or when the client goes away:
//!                 usage, price, settlement, one row handed to the store without waiting
//! ```
//!
//! The [`call::Call`] is the call's one record: it learns each phase's result, moves whole into
//! the streamed body, and ends exactly once in [`call::Call::finish`].
//!
//! After phase 7 nothing can change the status code: later failures abort the client's stream
//! and are recorded as the row's `outcome`.
//!
//! The path classified is the path forwarded: phase 1 routes the path
//! [`provider::normalize_path`] accepted (and normalised), and the `rest` after the prefix is
//! what phase 4 classifies and phase 5 puts after the upstream's base path, byte for byte.
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

pub mod call;
pub mod gate;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

use tracing::Instrument;

use crate::auth::{self, Verifier};
use crate::config::{Config, Provider, UnknownEndpoints};
use crate::error::GatewayError;
use crate::meter::MeteredBody;
use crate::metrics::{LeaseResult, Metrics};
use crate::plan::{OutputCap, Plan, PlanRefusal};
use crate::provider::{self, CapError, Endpoint, ProviderKind, ResponseTap};
use crate::quota::{self, Denied, Ledger, QuotaStatus};
use crate::store::Store;
pub use crate::upstream::UpstreamClient;
use call::{Call, End};

/// Longest wait for a call's journal entry before the call is refused (503): the disk is
/// failing or far behind.
const JOURNAL_WAIT: Duration = Duration::from_secs(5);
/// Longest a call waits for the store's grant of a lease (limits shared by several gateways);
/// past it the call is refused with 503.
const LEASE_WAIT: Duration = Duration::from_secs(2);

/// The body Tollgate sends to clients: a metered upstream answer or its own small response.
pub type ProxyBody = Either<MeteredBody<UpstreamBody, Call>, Full<Bytes>>;

/// An upstream answer's body: streamed as it comes, or (for a small error body Tollgate had to
/// read before deciding what to answer) already in memory.
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

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

/// Why a configuration cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A provider's key holds characters no HTTP header may carry.
    #[error("the key in {0} is not a valid header value")]
    KeyNotAHeader(String),
}

impl Runtime {
    /// Build the routes of `config` (its verifier is `config.verifier`); calls go out through
    /// `client`.
    pub fn new(config: Arc<Config>, client: UpstreamClient) -> Result<Runtime, RuntimeError> {
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
                .map_err(|_| RuntimeError::KeyNotAHeader(p.name.to_string()))?;
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
    store: Arc<dyn Store>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    gate: Arc<gate::UserGate>,
    ids: RequestIds,
    /// A store that cannot lease is warned about once a minute, not per call.
    lease_warnings: crate::telemetry::Throttle,
    /// A plan claim naming no plan is logged once an hour per value, not per call.
    plan_warnings: crate::telemetry::Throttle,
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
        store: Arc<dyn Store>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        Proxy {
            runtime: ArcSwap::from_pointee(runtime),
            store,
            ledger,
            metrics,
            gate: Arc::default(),
            ids: RequestIds::new(),
            lease_warnings: crate::telemetry::Throttle::new(Duration::from_secs(60)),
            plan_warnings: crate::telemetry::Throttle::new(Duration::from_secs(3_600)),
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
                "/me/usage" => return Ok(self.me_usage(&req).await),
                _ => {}
            }
        }
        let request_id = self.ids.for_request(req.headers());
        // At `debug`, every line about the call carries its request id, provider, user and
        // model. At the default level the span is disabled (costs a level check): lines on
        // the request path name the request id themselves, and the call's own line is the
        // access log's, written off the path from its row.
        let span = tracing::debug_span!(
            "call",
            request_id = %request_id,
            provider = tracing::field::Empty,
            user = tracing::field::Empty,
            model = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        // Dropped with this future if the client goes away before the answer's head: the
        // call's `Drop` records it then.
        let mut call = Call::start(
            Arc::clone(&self.store),
            self.runtime.load_full(),
            self.metrics.call_started(),
            span.clone(),
            Arc::clone(&request_id),
        );
        let result = self.phases(req, &mut call).instrument(span.clone()).await;
        let _in_span = span.enter();
        // Where the user stands on the call's own plan, also when the call was refused before
        // admission (the ledger has not seen this plan for the user yet).
        let user = call.user().cloned().zip(call.basis().cloned());
        let mut resp = match result {
            Ok(Answer {
                head,
                body,
                tap,
                ttfb_ms,
                exact_hint,
                idle,
            }) => {
                call.answered(head.status.as_u16(), ttfb_ms);
                // The call moves whole into the body, which ends it.
                let body = MeteredBody::new(body, tap, idle, exact_hint, call);
                Response::from_parts(head, Either::Left(body))
            }
            Err(e) => {
                let resp = e.response::<Full<Bytes>>(call.kind());
                self.metrics.refused(&e);
                call.finish(End::Refused(&e));
                resp.map(Either::Right)
            }
        };
        if let Some((user, basis)) = &user {
            quota_headers(resp.headers_mut(), &self.ledger.status_on(user, basis));
        }
        let id = HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("invalid"));
        if !resp.headers().contains_key(X_REQUEST_ID) {
            resp.headers_mut().insert(X_REQUEST_ID, id.clone());
        }
        resp.headers_mut().insert(REQUEST_ID_HEADER, id);
        Ok(resp)
    }

    /// Phases 1 to 7, up to the upstream's answer head; `call` learns each step.
    async fn phases(
        self: &Arc<Self>,
        req: Request<Incoming>,
        call: &mut Call,
    ) -> Result<Answer, GatewayError> {
        let (parts, body) = req.into_parts();
        // A cheap clone (shared bytes): `rest` and `query` borrow from it while `parts` moves on.
        let uri = parts.uri.clone();

        // 1 route, on the path as it will be forwarded: `normalize_path` refuses a path that
        // could be read two ways (`//`, `..`, `%2F`, `;`, `/Chat/Completions`…) and gives the
        // one spelling of the others. A refused path is routed as it came only to pick the
        // error shape and the row's provider; it is refused once the caller is known (2b).
        let rt = call.runtime();
        let checked = provider::normalize_path(uri.path());
        let path = checked.as_deref().unwrap_or(uri.path());
        let (route, rest) = rt.route(path).ok_or(GatewayError::UnknownPrefix)?;
        let provider = &route.provider;
        call.routed(provider.kind, &provider.name);

        // 2 authenticate
        let query = uri.query();
        let caller = {
            let token = auth::credential(&parts.headers, query).ok_or(
                GatewayError::Unauthenticated(auth::AuthError::MissingCredential),
            )?;
            // Waits only for a token naming a key the key set does not hold yet (≤ 2 s).
            rt.verifier
                .verify_with_refresh(&token)
                .await
                .map_err(GatewayError::Unauthenticated)?
        };
        let user = Arc::clone(&caller.user_id);
        let plan = self.plan_of(&rt.config, &caller);
        call.identified(provider.name.clone(), caller, plan);

        // 2b the path: a refusal now has the caller's row (400). From here on `rest` is both
        // what is classified and what is forwarded.
        if let Err(e) = &checked {
            return Err(GatewayError::InvalidPath(*e));
        }
        let endpoint = provider::endpoint(provider.kind, &parts.method, rest);
        if endpoint == Endpoint::Other && provider.unknown_endpoints == UnknownEndpoints::Refuse {
            return Err(GatewayError::UnknownEndpoint);
        }

        // 2c the door: the gateway's calls in flight (this one included), then the user's
        let server = &rt.config.raw.server;
        if self.metrics.in_flight() > i64::try_from(server.max_in_flight).unwrap_or(i64::MAX) {
            return Err(GatewayError::Overloaded);
        }
        let cap = server.max_in_flight_per_user;
        let pass = self
            .gate
            .enter(&user, cap)
            .ok_or(GatewayError::Denied(Denied::Concurrency { limit: cap }))?;
        call.entered(pass);

        // 3 read the body, bounded in size and time
        let body = tokio::time::timeout(
            rt.config.request_body_timeout(),
            read_body(&parts.headers, body, server.max_request_bytes),
        )
        .await
        .map_err(|_| GatewayError::BodyTimeout {
            ms: server.request_body_timeout_ms,
        })??;

        // 4 inspect: a body of a metered endpoint that could be read two ways is refused (400)
        let (mut info, rewritten) =
            match provider::inspect(provider.kind, &parts.method, rest, query, &body) {
                Ok(read) => read,
                Err(refused) => {
                    call.inspected(refused.info);
                    return Err(GatewayError::InvalidBody(refused.reason));
                }
            };
        let mut body = rewritten.unwrap_or(body);

        // 4a the plan: the model it allows and the output it caps (written into the request)
        let plan = call.plan().cloned();
        if let Some(plan) = &plan
            && let Err(refusal) =
                apply_plan(plan, provider.kind, &parts.method, &mut info, &mut body)
        {
            call.inspected(info);
            return Err(GatewayError::Plan(refusal));
        }
        let held = call::held(&rt.config, &info, plan.as_deref());
        call.inspected(info);

        // 4b admit: room for the row (else 503), then blocked 403, quota or rate 429; the
        // upstream is never contacted
        call.row_reserved(self.store.reserve_row().ok_or(GatewayError::StoreFull)?);
        let admit_locally =
            rt.config.raw.store.when_unavailable == crate::config::WhenUnavailable::AdmitLocally;
        let basis = call.basis().ok_or(GatewayError::Internal)?;
        let reservation = self.admit(&user, held.hold(), basis, admit_locally).await?;
        call.admitted(reservation);

        // 4c journal: the call exists durably before the upstream can serve it
        if let Some(jid) = self.store.journal_id()
            && let Some(entry) = call.journal_entry(jid, &held)
        {
            match tokio::time::timeout(JOURNAL_WAIT, self.store.open_call(entry)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(
                        request_id = %call.request_id(),
                        error = %e,
                        "the call journal did not take the call"
                    );
                    return Err(GatewayError::StoreFull);
                }
                Err(_) => {
                    tracing::error!(
                        request_id = %call.request_id(),
                        waited_ms = JOURNAL_WAIT.as_millis() as u64,
                        "the call journal did not commit in time"
                    );
                    return Err(GatewayError::StoreFull);
                }
            }
        }

        // 5 prepare
        let upstream_req = prepare(route, parts, rest, body)?;

        // 6 forward
        let sent = Instant::now();
        call.sent();
        let resp = match tokio::time::timeout(
            rt.config.response_header_timeout(),
            rt.client.request(upstream_req),
        )
        .await
        {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(request_id = %call.request_id(), provider = %provider.name, error = %crate::telemetry::error_chain(&e), "upstream request failed");
                return Err(GatewayError::UpstreamUnreachable);
            }
            Ok(Ok(resp)) => resp,
        };
        let ttfb_ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (mut head, upstream_body) = resp.into_parts();
        let body = self
            .screen_key_refusal(
                &rt.config,
                provider,
                call.request_id(),
                &head,
                upstream_body,
            )
            .await?;

        // 7 meter: the headers go out now
        strip_hop_headers(&mut head.headers);
        let info = call.info().ok_or(GatewayError::Internal)?;
        let tap = ResponseTap::new(provider.kind, info, head.status, &head.headers);
        tap.adjust_headers(&mut head.headers);
        let exact_hint = head.headers.contains_key(header::CONTENT_LENGTH);
        Ok(Answer {
            head,
            body,
            tap,
            ttfb_ms,
            exact_hint,
            idle: rt.config.idle_timeout(),
        })
    }

    /// The plan `caller`'s token puts them on under `config` (see `plan::Plans::choose`). A
    /// claim naming no plan (with plans configured) is counted, and logged once an hour per
    /// value.
    fn plan_of(&self, config: &Config, caller: &auth::Caller) -> Option<Arc<Plan>> {
        let choice = config.plans.choose(caller.plan.as_deref());
        if let Some(value) = choice.unknown
            && !config.plans.is_empty()
        {
            self.metrics.unknown_plan();
            if let Some(held_back) = self.plan_warnings.admit(value) {
                tracing::warn!(
                    claim = %config.raw.auth.plan_claim,
                    value,
                    plan = choice.plan.map_or("-", |p| &*p.name),
                    held_back,
                    "a token's plan claim names no [plans] table: the call gets limits.default_plan \
                     (or [limits] without one)"
                );
            }
        }
        choice.plan.cloned()
    }

    /// An upstream refusing Tollgate's own key is not the client's business, and its body can
    /// echo key fragments: OpenAI and Gemini answer 401/403, Gemini also 400 with reason
    /// `API_KEY_INVALID`. Those become a 502 of Tollgate's own and an error in the operator's
    /// log (with the provider's error code, never its message). Every other answer passes on.
    /// 4b: admit the call in memory — or, when the limits are shared and this gateway's leases
    /// do not cover it, with the store's grant (one round trip, at most [`LEASE_WAIT`]; a
    /// store that cannot answer refuses the call with 503, nothing forwarded).
    async fn admit(
        &self,
        user: &Arc<str>,
        hold: quota::Hold,
        basis: &quota::Basis,
        admit_locally: bool,
    ) -> Result<quota::Reservation, GatewayError> {
        let mut ask = match self.ledger.try_admit_on(user, hold, basis) {
            Ok(reservation) => return Ok(reservation),
            Err(quota::Admission::Denied(d)) => return Err(GatewayError::Denied(d)),
            Err(quota::Admission::Short(ask)) => ask,
        };
        // A grant made for windows that ended meanwhile is asked again, a few times at most.
        for _ in 0..3 {
            let grant = match tokio::time::timeout(LEASE_WAIT, self.store.lease(&ask)).await {
                Ok(Ok(grant)) => {
                    self.metrics.leased(LeaseResult::of(grant.verdict));
                    grant
                }
                Ok(Err(e)) => {
                    self.metrics.leased(LeaseResult::Error);
                    // Nothing was granted nor given back: the leases are this gateway's still.
                    if admit_locally {
                        return self
                            .ledger
                            .admit_offline(&ask, true)
                            .ok_or(GatewayError::StoreFull);
                    }
                    self.ledger.unask(&ask);
                    if let Some(held_back) = self.lease_warnings.admit("error") {
                        tracing::warn!(error = %e, held_back, "no lease on a user's budget: calls refused");
                    }
                    return Err(GatewayError::StoreFull);
                }
                Err(_) => {
                    self.metrics.leased(LeaseResult::Error);
                    // The ask may have been granted and its answer lost: what it gave back
                    // stays out of memory (the store counts it as this gateway's lease).
                    if admit_locally {
                        return self
                            .ledger
                            .admit_offline(&ask, false)
                            .ok_or(GatewayError::StoreFull);
                    }
                    if let Some(held_back) = self.lease_warnings.admit("timeout") {
                        tracing::warn!(
                            waited_ms = LEASE_WAIT.as_millis() as u64,
                            held_back,
                            "no lease on a user's budget in time: calls refused"
                        );
                    }
                    return Err(GatewayError::StoreFull);
                }
            };
            match self.ledger.admit_granted(&ask, &grant) {
                Ok(reservation) => return Ok(reservation),
                Err(quota::Admission::Denied(d)) => return Err(GatewayError::Denied(d)),
                Err(quota::Admission::Short(next)) => ask = next,
            }
        }
        Err(GatewayError::StoreFull)
    }

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

    /// `GET /me/usage`: the caller's own usage, limits and reset times, for the app to show.
    async fn me_usage(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let rt = self.runtime();
        let caller = match auth::credential(req.headers(), req.uri().query()) {
            Some(token) => rt
                .verifier
                .verify_with_refresh(&token)
                .await
                .map_err(GatewayError::Unauthenticated),
            None => Err(GatewayError::Unauthenticated(
                auth::AuthError::MissingCredential,
            )),
        };
        let caller = match caller {
            Ok(c) => c,
            Err(e) => return e.response::<Full<Bytes>>(None).map(Either::Right),
        };
        let plan = self.plan_of(&rt.config, &caller);
        let basis = quota::Basis::new(&rt.config.raw.limits, plan.as_deref());
        let status = self.ledger.status_on(&caller.user_id, &basis);
        let body = me_usage_json(
            &caller.user_id,
            self.ledger.timezone(),
            &status,
            plan.as_deref(),
        );
        let mut resp = crate::error::json_response::<Full<Bytes>>(
            StatusCode::OK,
            Bytes::from(body.to_string()),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        quota_headers(resp.headers_mut(), &status);
        resp.map(Either::Right)
    }
}

/// Phase 4a: hold the request to `plan` — the model must be one it allows (for a call that
/// can spend: not `GET`, `HEAD` or `DELETE`), and its output at most the plan's ceiling: a
/// request asking for more is refused or, with `clamp_max_output_tokens`, lowered; one asking
/// for nothing gets the ceiling written in. `info` and `body` follow a rewrite.
fn apply_plan(
    plan: &Plan,
    kind: ProviderKind,
    method: &Method,
    info: &mut provider::RequestInfo,
    body: &mut Bytes,
) -> Result<(), PlanRefusal> {
    let spends = !matches!(*method, Method::GET | Method::HEAD | Method::DELETE);
    plan.check_model(info.model.as_deref(), info.model_ambiguous, spends)?;
    let OutputCap::Set(total) = plan.output(info.max_output_tokens)? else {
        return Ok(());
    };
    match provider::cap_output(kind, info, body, total) {
        Ok(Some((capped, cap))) => {
            *body = capped;
            info.max_output_tokens = Some(cap);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(CapError::Unreadable) => Err(plan.output_unreadable(total)),
        Err(CapError::TooManyChoices { choices }) => Err(plan.output_over(choices, total)),
    }
}

/// The upstream's answer head, ready to be metered.
struct Answer {
    head: http::response::Parts,
    body: UpstreamBody,
    tap: ResponseTap,
    ttfb_ms: u64,
    exact_hint: bool,
    idle: Duration,
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

fn plain(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
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
        if let Some(v) = reset_value(at) {
            headers.insert(name, v);
        }
    }
}

/// `at` as a header value (RFC 3339). A reset time changes once a day or month, so each thread
/// keeps the last few it wrote and clones them (a reference count) instead of formatting a
/// timestamp twice per call.
fn reset_value(at: jiff::Timestamp) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Vec<(jiff::Timestamp, HeaderValue)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((_, v)) = last.iter().find(|(t, _)| *t == at) {
            return Some(v.clone());
        }
        let v = HeaderValue::from_str(&at.to_string()).ok()?;
        if last.len() >= 4 {
            last.remove(0);
        }
        last.push((at, v.clone()));
        Some(v)
    })
}

/// The body of `GET /me/usage`.
fn me_usage_json(
    user: &str,
    tz: &jiff::tz::TimeZone,
    s: &QuotaStatus,
    plan: Option<&Plan>,
) -> serde_json::Value {
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
        "plan": plan.map(|p| &*p.name),
        "models": {
            "allowed": plan.and_then(|p| p.settings.models.as_ref()),
            "denied": plan.map_or(&[][..], |p| &p.settings.deny_models[..]),
        },
        "max_output_tokens": plan.and_then(|p| p.settings.max_output_tokens),
        "clamp_max_output_tokens": plan.is_some_and(|p| p.settings.clamp_max_output_tokens),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn a_reset_time_is_written_as_rfc3339_and_the_kept_values_never_answer_for_another_time() {
        let times: Vec<jiff::Timestamp> = (0..10)
            .map(|d| jiff::Timestamp::from_second(1_780_000_000 + d * 86_400).unwrap())
            .collect();
        // More distinct times than a thread keeps, then each again: always its own value.
        for round in 0..2 {
            for t in &times {
                let v = reset_value(*t).unwrap();
                assert_eq!(v.to_str().unwrap(), t.to_string(), "round {round}");
            }
        }
        assert_eq!(reset_value(times[3]), reset_value(times[3]));
    }
}
