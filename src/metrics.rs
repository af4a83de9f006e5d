//! Prometheus metrics: what `GET /metrics` on the admin listener shows.
//!
//! This module owns the metric definitions, their labels and the text exposition
//! ([`Metrics::render`], Prometheus text format 0.0.4 — [`CONTENT_TYPE`] — which every Prometheus
//! version and most agents scrape; OpenMetrics is not needed for anything shown here).
//!
//! **Where each figure is counted, and why there:**
//!
//! - Per-call counters and histograms (`tollgate_calls_total`, `tollgate_input_tokens_total`,
//!   `tollgate_output_tokens_total`, `tollgate_cost_nano_usd_total`,
//!   `tollgate_upstream_latency_seconds`, `tollgate_upstream_ttfb_seconds`) are updated by the
//!   store's writer thread as it writes each batch ([`RowObserver`]), off the request path. They
//!   count every usage row that reached the writer, whether SQLite then took it or not; a row
//!   the queue dropped never reaches them and is counted by
//!   `tollgate_store_rows_dropped_total` instead (which must stay 0). Calls Tollgate refused
//!   before it knew the caller (401, 404) have no row: they are in `tollgate_refusals_total`.
//! - `tollgate_invalid_usage_total{provider}` counts the rows whose provider report was refused
//!   as impossible (`usage_source = 'invalid'`: a field above
//!   [`MAX_TOKENS_PER_CALL`](crate::usage::MAX_TOKENS_PER_CALL)), fed the same way; it should
//!   stay 0, and a rise means a provider (or what poses as one) reports garbage.
//! - `tollgate_unpriced_calls_total{provider,model}` counts the rows that used tokens of a model
//!   without a price (cost NULL), fed the same way; the access log names such a model only once
//!   every 10 minutes, so this is where an operator sees how many calls it concerns.
//! - `tollgate_log_lines_dropped_total` is read from the log thread at each render: lines dropped
//!   because stderr did not keep up.
//! - `tollgate_in_flight_calls` and `tollgate_refusals_total{reason}` are updated by the proxy
//!   on the request path with plain atomics: each refusal reason has its counter created up
//!   front ([`Refusal::ALL`]), so counting one takes no lock and allocates nothing.
//! - The writer's gauges (`tollgate_store_*`) are read from the [`Store`] when the page is
//!   rendered; `tollgate_config_reloads_total{result}` is counted by `reload`.
//! - `tollgate_unknown_plan_claims_total` counts the calls whose JWT plan claim named no
//!   `[plans.NAME]` (they got `limits.default_plan`), counted by `proxy` with an atomic.
//! - `tollgate_jwks_refreshes_total{result}` counts the fetches of `auth.jwks_url`'s key set
//!   (`ok`, `error`: the keys in use stayed), told by the key set's refresh task
//!   ([`RefreshObserver`]).
//!
//! **Cardinality is bounded.** `provider` comes from gateway.toml and `status` is an HTTP status,
//! but `model` comes from the client's request (or the provider's answer): the first
//! [`MAX_MODEL_LABELS`] distinct model names get their own label value, every later one (and any
//! name longer than [`MAX_MODEL_LABEL_LEN`] bytes) is counted as `model="other"`; a call without
//! a model is `model="none"`. Histograms are labelled by provider only.
//!
//! Nothing here does I/O, and nothing here decides what a call costs or how it ended.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::auth::{RefreshObserver, RefreshResult};
use crate::error::GatewayError;
use crate::plan::PlanRefusal;
use crate::quota::{Denied, LimitKind, Window};
use crate::store::{RowObserver, Store, UsageRow};
use crate::usage::UsageSource;

/// The `Content-Type` of [`Metrics::render`]'s output: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Distinct `model` label values kept; later models are counted as `model="other"`.
pub const MAX_MODEL_LABELS: usize = 200;
/// Longest model name kept as a label value (bytes); longer names count as `other`.
pub const MAX_MODEL_LABEL_LEN: usize = 128;

/// Bucket bounds of the latency and time-to-first-byte histograms, in seconds: from a fast
/// cached answer to a long reasoning stream.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Why Tollgate answered a call itself: the `reason` label of `tollgate_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 404: no provider at this prefix.
    NotFound,
    /// 401: missing or invalid credential.
    Unauthenticated,
    /// 400: a path or body that could be read two ways.
    InvalidRequest,
    /// 404: an endpoint not in the table, refused by `unknown_endpoints = "refuse"`.
    UnknownEndpoint,
    /// 413: request body over `server.max_request_bytes`.
    TooLarge,
    /// 400: the request body could not be read.
    BodyUnreadable,
    /// 408: the request body did not arrive in time.
    BodyTimeout,
    /// 503: more calls in flight than `server.max_in_flight`.
    Overloaded,
    /// 503: the store's queue had no room for the call's row.
    StoreFull,
    /// 403: blocked user.
    Blocked,
    /// 429: daily token limit.
    DailyTokens,
    /// 429: monthly token limit.
    MonthlyTokens,
    /// 429: daily cost budget.
    DailyCost,
    /// 429: monthly cost budget.
    MonthlyCost,
    /// 429: request rate.
    Rate,
    /// 429: calls in flight.
    Concurrency,
    /// 403: a model outside the caller's plan (or none the plan can check).
    PlanModel,
    /// 403: more output than the plan's `max_output_tokens`.
    PlanOutput,
    /// 502: upstream unreachable.
    UpstreamUnreachable,
    /// 504: no upstream answer in time.
    UpstreamTimeout,
    /// 502: the upstream refused Tollgate's own provider key.
    UpstreamRejectedKey,
    /// 500: a bug of Tollgate's.
    Internal,
}

impl Refusal {
    /// Every reason, in the order of their counters.
    pub const ALL: [Refusal; 22] = [
        Refusal::NotFound,
        Refusal::Unauthenticated,
        Refusal::InvalidRequest,
        Refusal::UnknownEndpoint,
        Refusal::TooLarge,
        Refusal::BodyUnreadable,
        Refusal::BodyTimeout,
        Refusal::Overloaded,
        Refusal::StoreFull,
        Refusal::Blocked,
        Refusal::DailyTokens,
        Refusal::MonthlyTokens,
        Refusal::DailyCost,
        Refusal::MonthlyCost,
        Refusal::Rate,
        Refusal::Concurrency,
        Refusal::PlanModel,
        Refusal::PlanOutput,
        Refusal::UpstreamUnreachable,
        Refusal::UpstreamTimeout,
        Refusal::UpstreamRejectedKey,
        Refusal::Internal,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::InvalidRequest => "invalid_request",
            Refusal::UnknownEndpoint => "unknown_endpoint",
            Refusal::TooLarge => "too_large",
            Refusal::BodyUnreadable => "body_unreadable",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::Overloaded => "overloaded",
            Refusal::StoreFull => "store_full",
            Refusal::Blocked => "blocked",
            Refusal::DailyTokens => "daily_tokens",
            Refusal::MonthlyTokens => "monthly_tokens",
            Refusal::DailyCost => "daily_cost",
            Refusal::MonthlyCost => "monthly_cost",
            Refusal::Rate => "rate",
            Refusal::Concurrency => "concurrency",
            Refusal::PlanModel => "plan_model",
            Refusal::PlanOutput => "plan_max_output",
            Refusal::UpstreamUnreachable => "upstream_unreachable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::UpstreamRejectedKey => "upstream_rejected_key",
            Refusal::Internal => "internal",
        }
    }

    /// The reason of a refusal or failure Tollgate answered itself.
    pub fn of(e: &GatewayError) -> Refusal {
        match e {
            GatewayError::UnknownPrefix => Refusal::NotFound,
            GatewayError::Unauthenticated(_) => Refusal::Unauthenticated,
            GatewayError::InvalidPath(_) | GatewayError::InvalidBody(_) => Refusal::InvalidRequest,
            GatewayError::UnknownEndpoint => Refusal::UnknownEndpoint,
            GatewayError::BodyTooLarge { .. } => Refusal::TooLarge,
            GatewayError::BodyRead => Refusal::BodyUnreadable,
            GatewayError::BodyTimeout { .. } => Refusal::BodyTimeout,
            GatewayError::Overloaded => Refusal::Overloaded,
            GatewayError::StoreFull => Refusal::StoreFull,
            GatewayError::Denied(Denied::Blocked { .. }) => Refusal::Blocked,
            GatewayError::Denied(Denied::Quota { window, kind, .. }) => match (window, kind) {
                (Window::Day, LimitKind::Tokens) => Refusal::DailyTokens,
                (Window::Month, LimitKind::Tokens) => Refusal::MonthlyTokens,
                (Window::Day, LimitKind::Cost) => Refusal::DailyCost,
                (Window::Month, LimitKind::Cost) => Refusal::MonthlyCost,
            },
            GatewayError::Denied(Denied::Rate { .. }) => Refusal::Rate,
            GatewayError::Denied(Denied::Concurrency { .. }) => Refusal::Concurrency,
            GatewayError::Plan(PlanRefusal::Model { .. } | PlanRefusal::NoModel { .. }) => {
                Refusal::PlanModel
            }
            GatewayError::Plan(
                PlanRefusal::Output { .. } | PlanRefusal::OutputUnreadable { .. },
            ) => Refusal::PlanOutput,
            GatewayError::UpstreamUnreachable => Refusal::UpstreamUnreachable,
            GatewayError::UpstreamTimeout => Refusal::UpstreamTimeout,
            GatewayError::UpstreamRejectedKey => Refusal::UpstreamRejectedKey,
            GatewayError::Internal => Refusal::Internal,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The result of a configuration reload: the `result` label of `tollgate_config_reloads_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// A changed, valid file was applied.
    Ok,
    /// An invalid file was refused; the running configuration stayed.
    Refused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: Arc<str>,
    model: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    provider: Arc<str>,
    model: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// How a webhook delivery attempt ended (`tollgate_webhook_deliveries_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookResult {
    /// The receiver answered 2xx.
    Delivered = 0,
    /// It failed and will be tried again.
    Retry = 1,
    /// It failed for good (retries used up, or a 4xx answer).
    Failed = 2,
    /// Never attempted: too many deliveries were already waiting.
    Dropped = 3,
}

impl WebhookResult {
    const ALL: [WebhookResult; 4] = [
        WebhookResult::Delivered,
        WebhookResult::Retry,
        WebhookResult::Failed,
        WebhookResult::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Delivered => "delivered",
            WebhookResult::Retry => "retry",
            WebhookResult::Failed => "failed",
            WebhookResult::Dropped => "dropped",
        }
    }
}

type HistogramFamily = Family<ProviderLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// How a lease request to the shared store ended (`tollgate_lease_requests_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseResult {
    Fit = 0,
    Last = 1,
    Refused = 2,
    Error = 3,
}

impl LeaseResult {
    const ALL: [LeaseResult; 4] = [
        LeaseResult::Fit,
        LeaseResult::Last,
        LeaseResult::Refused,
        LeaseResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaseResult::Fit => "fit",
            LeaseResult::Last => "last",
            LeaseResult::Refused => "refused",
            LeaseResult::Error => "error",
        }
    }

    /// The result of a grant's verdict.
    pub fn of(verdict: crate::quota::Verdict) -> LeaseResult {
        match verdict {
            crate::quota::Verdict::Fit => LeaseResult::Fit,
            crate::quota::Verdict::Last => LeaseResult::Last,
            crate::quota::Verdict::Refused(_) => LeaseResult::Refused,
        }
    }
}

impl RefreshObserver for Metrics {
    fn jwks_refreshed(&self, result: RefreshResult) {
        self.jwks_refreshes[result as usize].inc();
    }
}

/// Every metric of the gateway. Create one with [`Metrics::new`], share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    input_tokens: Family<ModelLabels, Counter>,
    output_tokens: Family<ModelLabels, Counter>,
    cost_nano_usd: Family<ModelLabels, Counter>,
    invalid_usage: Family<ProviderLabels, Counter>,
    unpriced_calls: Family<ModelLabels, Counter>,
    latency: HistogramFamily,
    ttfb: HistogramFamily,
    in_flight: Gauge,
    /// One counter per [`Refusal`], indexed by `Refusal as usize`.
    refusals: Vec<Counter>,
    reloads_ok: Counter,
    reloads_refused: Counter,
    /// Lease requests to a shared store, by [`LeaseResult`].
    leases: [Counter; 4],
    /// Alerts fired (recorded), by rule kind.
    alerts: Family<KindLabels, Counter>,
    /// Webhook delivery attempts, by [`WebhookResult`].
    webhooks: [Counter; 4],
    /// Fetches of the key set of `auth.jwks_url`: ok, error.
    jwks_refreshes: [Counter; 2],
    /// Calls whose plan claim named no configured plan.
    unknown_plans: Counter,
    /// Model names given a label value of their own, and their shared label strings.
    models: Mutex<HashMap<Box<str>, Arc<str>>>,
    other_model: Arc<str>,
    no_model: Arc<str>,
    /// Read at render time for the writer's gauges; set once the store is open.
    store: Arc<OnceLock<Arc<dyn Store>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("in_flight", &self.in_flight.get())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tollgate");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls recorded, by provider, model and the HTTP status the client got",
            calls.clone(),
        );
        let input_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "input_tokens",
            "Input tokens (cached included), reported or estimated",
            input_tokens.clone(),
        );
        let output_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "output_tokens",
            "Output tokens (reasoning included), reported or estimated",
            output_tokens.clone(),
        );
        let cost_nano_usd = Family::<ModelLabels, Counter>::default();
        registry.register(
            "cost_nano_usd",
            "Cost of priced calls in nano-USD (1e-9 USD)",
            cost_nano_usd.clone(),
        );
        let invalid_usage = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "invalid_usage",
            "Calls whose provider reported an impossible token usage, recorded with the estimate \
             instead (usage_source = invalid)",
            invalid_usage.clone(),
        );
        let unpriced_calls = Family::<ModelLabels, Counter>::default();
        registry.register(
            "unpriced_calls",
            "Calls that used tokens of a model without a price in [pricing] (cost recorded as \
             NULL); the log names such a model once every 10 minutes",
            unpriced_calls.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_latency_seconds",
            "Duration of calls that got an upstream answer, from admission to the end of the answer",
            latency.clone(),
        );
        let ttfb: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_ttfb_seconds",
            "Time from forwarding a call to the upstream's response head",
            ttfb.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_calls",
            "Calls being served now (a streamed answer counts until its body ends)",
            in_flight.clone(),
        );
        let refusal_family = Family::<ReasonLabels, Counter>::default();
        let refusals = Refusal::ALL
            .iter()
            .map(|r| refusal_family.get_or_create_owned(&ReasonLabels { reason: r.as_str() }))
            .collect();
        registry.register(
            "refusals",
            "Calls Tollgate answered itself instead of relaying an upstream answer, by reason",
            refusal_family,
        );
        let reload_family = Family::<ResultLabels, Counter>::default();
        let reloads_ok = reload_family.get_or_create_owned(&ResultLabels { result: "ok" });
        let reloads_refused =
            reload_family.get_or_create_owned(&ResultLabels { result: "refused" });
        registry.register(
            "config_reloads",
            "Configuration reloads: ok = a changed file applied, refused = an invalid file kept out",
            reload_family,
        );
        let lease_family = Family::<ResultLabels, Counter>::default();
        let leases = LeaseResult::ALL
            .map(|r| lease_family.get_or_create_owned(&ResultLabels { result: r.as_str() }));
        registry.register(
            "lease_requests",
            "Round trips to the shared store for a lease on a user's budget (several gateways on \
             one PostgreSQL database), by result: fit, last (the call past the limit), refused, \
             error (the call was refused with 503); per recorded call, the round trips a call \
             costs",
            lease_family,
        );
        let alerts = Family::<KindLabels, Counter>::default();
        registry.register(
            "alerts",
            "Alerts fired by the [[alerts]] rules (each once per subject and window), by kind",
            alerts.clone(),
        );
        let webhook_family = Family::<ResultLabels, Counter>::default();
        let webhooks = WebhookResult::ALL
            .map(|r| webhook_family.get_or_create_owned(&ResultLabels { result: r.as_str() }));
        registry.register(
            "webhook_deliveries",
            "Attempts to deliver an alert to a webhook, by result: delivered, retry (failed, \
             tried again with backoff), failed (for good), dropped (too many waiting)",
            webhook_family,
        );
        let jwks_family = Family::<ResultLabels, Counter>::default();
        let jwks_refreshes = [RefreshResult::Ok, RefreshResult::Error]
            .map(|r| jwks_family.get_or_create_owned(&ResultLabels { result: r.as_str() }));
        registry.register(
            "jwks_refreshes",
            "Fetches of the login provider's key set (auth.jwks_url), at start, on schedule and \
             for unknown kids, by result: ok, error (the keys fetched before stayed in use)",
            jwks_family,
        );
        let unknown_plans = Counter::default();
        registry.register(
            "unknown_plan_claims",
            "Calls whose JWT plan claim (auth.plan_claim) named no [plans.NAME]: they got \
             limits.default_plan (or [limits]); the log names each value once an hour",
            unknown_plans.clone(),
        );
        registry.register(
            "build",
            "The running Tollgate",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let store = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(StoreGauges {
            store: Arc::clone(&store),
        }));
        registry.register_collector(Box::new(LogCounters));
        Metrics {
            registry,
            calls,
            input_tokens,
            output_tokens,
            cost_nano_usd,
            invalid_usage,
            unpriced_calls,
            latency,
            ttfb,
            in_flight,
            refusals,
            reloads_ok,
            reloads_refused,
            leases,
            alerts,
            webhooks,
            jwks_refreshes,
            unknown_plans,
            models: Mutex::new(HashMap::new()),
            other_model: Arc::from("other"),
            no_model: Arc::from("none"),
            store,
        }
    }

    /// Read the writer's gauges from `store` at each render. The first store attached stays.
    pub fn attach_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    /// The text exposition of every metric ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            // Writing to a String does not fail; say so rather than serve half a page.
            tracing::error!(error = %e, "metrics could not be encoded");
            out.clear();
        }
        out
    }

    /// A call started: it counts in `tollgate_in_flight_calls` until the guard is dropped.
    pub fn call_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Tollgate answered a call itself (refusal or upstream failure).
    pub fn refused(&self, e: &GatewayError) {
        if let Some(c) = self.refusals.get(Refusal::of(e).index()) {
            c.inc();
        }
    }

    /// A configuration reload happened.
    pub fn reloaded(&self, result: ReloadResult) {
        match result {
            ReloadResult::Ok => self.reloads_ok.inc(),
            ReloadResult::Refused => self.reloads_refused.inc(),
        };
    }

    /// Fetches of the key set so far that ended with `result`.
    pub fn jwks_refreshes(&self, result: RefreshResult) -> u64 {
        self.jwks_refreshes[result as usize].get()
    }

    /// A lease request to the shared store ended with `result`.
    pub fn leased(&self, result: LeaseResult) {
        self.leases[result as usize].inc();
    }

    /// Lease requests so far that ended with `result`.
    pub fn leases(&self, result: LeaseResult) -> u64 {
        self.leases[result as usize].get()
    }

    /// An alert of `kind` fired.
    pub fn alert_fired(&self, kind: &'static str) {
        self.alerts.get_or_create(&KindLabels { kind }).inc();
    }

    /// A call's plan claim named no configured plan.
    pub fn unknown_plan(&self) {
        self.unknown_plans.inc();
    }

    /// Calls so far whose plan claim named no configured plan.
    pub fn unknown_plans(&self) -> u64 {
        self.unknown_plans.get()
    }

    /// A webhook delivery attempt ended with `result`.
    pub fn webhook(&self, result: WebhookResult) {
        self.webhooks[result as usize].inc();
    }

    /// Webhook delivery attempts so far that ended with `result`.
    pub fn webhooks(&self, result: WebhookResult) -> u64 {
        self.webhooks[result as usize].get()
    }

    /// The current count of refusals for `reason` (tests, the admin API's stats).
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.refusals.get(reason.index()).map_or(0, Counter::get)
    }

    /// Calls now in flight.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// The `model` label value for `model`, keeping at most [`MAX_MODEL_LABELS`] distinct values.
    fn model_label(&self, model: Option<&str>) -> Arc<str> {
        let Some(model) = model else {
            return Arc::clone(&self.no_model);
        };
        if model.len() > MAX_MODEL_LABEL_LEN {
            return Arc::clone(&self.other_model);
        }
        let mut models = self.models.lock();
        if let Some(label) = models.get(model) {
            return Arc::clone(label);
        }
        if models.len() >= MAX_MODEL_LABELS {
            return Arc::clone(&self.other_model);
        }
        let label: Arc<str> = Arc::from(model);
        models.insert(Box::from(model), Arc::clone(&label));
        label
    }

    /// Count one usage row (the writer calls this through [`RowObserver`]).
    fn count_row(&self, row: &UsageRow) {
        let model = self.model_label(row.model.as_deref());
        let provider = Arc::clone(&row.provider);
        self.calls
            .get_or_create(&CallLabels {
                provider: Arc::clone(&provider),
                model: Arc::clone(&model),
                status: row.status,
            })
            .inc();
        let by_model = ModelLabels {
            provider: Arc::clone(&provider),
            model,
        };
        if row.usage.input_tokens > 0 {
            self.input_tokens
                .get_or_create(&by_model)
                .inc_by(row.usage.input_tokens);
        }
        if row.usage.output_tokens > 0 {
            self.output_tokens
                .get_or_create(&by_model)
                .inc_by(row.usage.output_tokens);
        }
        if let Some(cost) = row.cost_nano_usd.filter(|c| *c > 0) {
            self.cost_nano_usd
                .get_or_create(&by_model)
                .inc_by(cost.unsigned_abs());
        }
        if row.cost_nano_usd.is_none() && row.usage.total() > 0 {
            self.unpriced_calls.get_or_create(&by_model).inc();
        }
        if row.usage_source == UsageSource::Invalid {
            self.invalid_usage
                .get_or_create(&ProviderLabels {
                    provider: Arc::clone(&provider),
                })
                .inc();
        }
        if let Some(ttfb_ms) = row.ttfb_ms {
            let by_provider = ProviderLabels { provider };
            self.ttfb
                .get_or_create(&by_provider)
                .observe(seconds(ttfb_ms));
            self.latency
                .get_or_create(&by_provider)
                .observe(seconds(row.latency_ms));
        }
    }
}

fn seconds(ms: u64) -> f64 {
    Duration::from_millis(ms).as_secs_f64()
}

impl RowObserver for Metrics {
    fn rows_written(&self, rows: &[UsageRow]) {
        for row in rows {
            self.count_row(row);
        }
    }
}

/// Counts a call in `tollgate_in_flight_calls` while it lives.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The log thread's dropped lines, read at each render.
#[derive(Debug)]
struct LogCounters;

impl Collector for LogCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let dropped = ConstCounter::new(crate::telemetry::dropped_lines());
        dropped.encode(encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because stderr did not keep up (the log queue was full).",
            None,
            dropped.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The writer's figures, read from the store at each render.
#[derive(Debug)]
struct StoreGauges {
    store: Arc<OnceLock<Arc<dyn Store>>>,
}

impl Collector for StoreGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self
            .store
            .get()
            .map(|s| s.writer_stats())
            .unwrap_or_default();
        let (depth, dropped, failed, committed) = (
            stats.queue_depth,
            stats.rows_dropped,
            stats.rows_failed,
            stats.rows_committed,
        );
        let (journal_commits, journal_entries) = (stats.journal_commits, stats.journal_entries);
        let unavailable = ConstGauge::new(i64::from(stats.unavailable));
        unavailable.encode(encoder.encode_descriptor(
            "store_unavailable",
            "1 while the database cannot be reached (PostgreSQL): new calls are refused with 503.",
            None,
            unavailable.metric_type(),
        )?)?;
        let depth = ConstGauge::new(i64::try_from(depth).unwrap_or(i64::MAX));
        depth.encode(encoder.encode_descriptor(
            "store_queue_depth",
            "Usage rows handed to the store writer and not yet committed.",
            None,
            depth.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "store_rows_dropped",
                "Usage rows lost because the writer's queue was full or closing (must stay 0).",
                dropped,
            ),
            (
                "store_rows_failed",
                "Usage rows the writer accepted but SQLite never took.",
                failed,
            ),
            (
                "store_rows_committed",
                "Usage rows committed to the database.",
                committed,
            ),
            (
                "store_journal_commits",
                "Fsyncs of the call journal (store.journal = durable; none with process).",
                journal_commits,
            ),
            (
                "store_journal_entries",
                "Call-journal entries written (per fsync: the calls one fsync covers).",
                journal_entries,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::auth::AuthError;
    use crate::provider::{Usage, UsageSource};

    fn row(provider: &str, model: Option<&str>, status: u16) -> UsageRow {
        UsageRow {
            request_id: "r".into(),
            ts_ms: 0,
            user_id: Arc::from("u"),
            user_email: None,
            user_name: None,
            provider: Arc::from(provider),
            model: model.map(str::to_string),
            endpoint: "chat_completions",
            streamed: false,
            status,
            usage: Usage {
                input_tokens: 100,
                output_tokens: 20,
                ..Default::default()
            },
            cost_nano_usd: Some(1_500),
            usage_source: UsageSource::Reported,
            latency_ms: 300,
            ttfb_ms: Some(40),
            outcome: crate::usage::Outcome::Complete,
            journal_id: None,
            plan: None,
        }
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn an_empty_registry_renders_every_metric_with_its_type() {
        let m = Metrics::new();
        let text = m.render();
        // Families without a label set yet are left out until their first call.
        assert!(!text.contains("tollgate_calls_total"), "{text}");
        for line in [
            "# TYPE tollgate_in_flight_calls gauge",
            "tollgate_in_flight_calls 0",
            "# TYPE tollgate_refusals_total counter",
            "tollgate_refusals_total{reason=\"daily_tokens\"} 0",
            "tollgate_refusals_total{reason=\"unauthenticated\"} 0",
            "tollgate_config_reloads_total{result=\"ok\"} 0",
            "tollgate_config_reloads_total{result=\"refused\"} 0",
            "tollgate_store_queue_depth 0",
            "tollgate_store_rows_dropped_total 0",
            "tollgate_store_rows_failed_total 0",
            "tollgate_store_rows_committed_total 0",
            "tollgate_lease_requests_total{result=\"fit\"} 0",
            "tollgate_lease_requests_total{result=\"error\"} 0",
            "# TYPE tollgate_log_lines_dropped_total counter",
            "tollgate_log_lines_dropped_total 0",
        ] {
            assert!(has_line(&text, line), "missing `{line}` in:\n{text}");
        }
        let build = format!(
            "tollgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(has_line(&text, &build), "{text}");
        for reason in Refusal::ALL {
            let line = format!(
                "tollgate_refusals_total{{reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(has_line(&text, &line), "missing `{line}`");
        }
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn rows_count_calls_tokens_cost_and_latencies() {
        let m = Metrics::new();
        m.rows_written(&[
            row("openai", Some("gpt-4o"), 200),
            row("openai", Some("gpt-4o"), 200),
            row("openai", Some("gpt-4o"), 429),
            row("gemini", None, 200),
        ]);
        let text = m.render();
        for line in [
            "# TYPE tollgate_calls_total counter",
            "# TYPE tollgate_input_tokens_total counter",
            "# TYPE tollgate_output_tokens_total counter",
            "# TYPE tollgate_cost_nano_usd_total counter",
            "# TYPE tollgate_upstream_latency_seconds histogram",
            "# TYPE tollgate_upstream_ttfb_seconds histogram",
            "tollgate_calls_total{provider=\"openai\",model=\"gpt-4o\",status=\"200\"} 2",
            "tollgate_calls_total{provider=\"openai\",model=\"gpt-4o\",status=\"429\"} 1",
            "tollgate_calls_total{provider=\"gemini\",model=\"none\",status=\"200\"} 1",
            "tollgate_input_tokens_total{provider=\"openai\",model=\"gpt-4o\"} 300",
            "tollgate_output_tokens_total{provider=\"openai\",model=\"gpt-4o\"} 60",
            "tollgate_cost_nano_usd_total{provider=\"openai\",model=\"gpt-4o\"} 4500",
            "tollgate_upstream_ttfb_seconds_count{provider=\"openai\"} 3",
            "tollgate_upstream_ttfb_seconds_bucket{provider=\"openai\",le=\"0.025\"} 0",
            "tollgate_upstream_ttfb_seconds_bucket{provider=\"openai\",le=\"0.05\"} 3",
            "tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.25\"} 0",
            "tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.5\"} 3",
            "tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"+Inf\"} 3",
            "tollgate_upstream_latency_seconds_count{provider=\"gemini\"} 1",
        ] {
            assert!(has_line(&text, line), "missing `{line}` in:\n{text}");
        }
        let sum = text
            .lines()
            .find(|l| l.starts_with("tollgate_upstream_latency_seconds_sum{provider=\"openai\"}"))
            .unwrap();
        let sum: f64 = sum.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((sum - 0.9).abs() < 1e-9, "{sum}");
        assert!(!text.contains("tollgate_unpriced_calls_total{"), "{text}");
    }

    #[test]
    fn calls_that_used_tokens_of_a_model_without_a_price_are_counted() {
        let m = Metrics::new();
        let unpriced = || UsageRow {
            cost_nano_usd: None,
            ..row("openai", Some("mystery"), 200)
        };
        let nothing_used = UsageRow {
            usage: Usage::default(),
            ..unpriced()
        };
        m.rows_written(&[unpriced(), unpriced(), nothing_used]);
        let text = m.render();
        let line = "tollgate_unpriced_calls_total{provider=\"openai\",model=\"mystery\"} 2";
        assert!(has_line(&text, line), "missing `{line}` in:\n{text}");
    }

    #[test]
    fn rows_with_an_impossible_report_are_counted_by_provider() {
        let m = Metrics::new();
        let invalid = |provider| UsageRow {
            usage_source: UsageSource::Invalid,
            ..row(provider, Some("gpt-4o"), 200)
        };
        m.rows_written(&[
            invalid("openai"),
            invalid("openai"),
            invalid("gemini"),
            row("openai", Some("gpt-4o"), 200),
        ]);
        let text = m.render();
        for line in [
            "# TYPE tollgate_invalid_usage_total counter",
            "tollgate_invalid_usage_total{provider=\"openai\"} 2",
            "tollgate_invalid_usage_total{provider=\"gemini\"} 1",
            "tollgate_calls_total{provider=\"openai\",model=\"gpt-4o\",status=\"200\"} 3",
        ] {
            assert!(has_line(&text, line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn a_row_without_an_upstream_answer_has_no_latency() {
        let m = Metrics::new();
        let mut refused = row("openai", Some("gpt-4o"), 429);
        refused.ttfb_ms = None;
        refused.cost_nano_usd = None;
        refused.usage = Usage::default();
        m.rows_written(&[refused]);
        let text = m.render();
        assert!(has_line(
            &text,
            "tollgate_calls_total{provider=\"openai\",model=\"gpt-4o\",status=\"429\"} 1"
        ));
        assert!(
            !text.contains("tollgate_upstream_latency_seconds_count"),
            "{text}"
        );
        assert!(!text.contains("tollgate_input_tokens_total{"), "{text}");
        assert!(!text.contains("tollgate_cost_nano_usd_total{"), "{text}");
    }

    #[test]
    fn model_labels_are_capped_and_long_names_are_other() {
        let m = Metrics::new();
        let rows: Vec<UsageRow> = (0..MAX_MODEL_LABELS + 50)
            .map(|i| row("openai", Some(&format!("model-{i}")), 200))
            .collect();
        m.rows_written(&rows);
        // A model seen before the cap keeps its label after it.
        m.rows_written(&[row("openai", Some("model-0"), 200)]);
        m.rows_written(&[row(
            "openai",
            Some(&"x".repeat(MAX_MODEL_LABEL_LEN + 1)),
            200,
        )]);
        let text = m.render();
        let distinct = text
            .lines()
            .filter(|l| l.starts_with("tollgate_calls_total{"))
            .count();
        assert_eq!(distinct, MAX_MODEL_LABELS + 1, "the cap plus `other`");
        assert!(has_line(
            &text,
            "tollgate_calls_total{provider=\"openai\",model=\"other\",status=\"200\"} 51"
        ));
        assert!(has_line(
            &text,
            "tollgate_calls_total{provider=\"openai\",model=\"model-0\",status=\"200\"} 2"
        ));
    }

    #[test]
    fn refusals_in_flight_and_reloads_count() {
        let m = Metrics::new();
        m.refused(&GatewayError::Unauthenticated(AuthError::MissingCredential));
        m.refused(&GatewayError::Unauthenticated(AuthError::MissingCredential));
        m.refused(&GatewayError::UnknownPrefix);
        m.refused(&GatewayError::Denied(Denied::Rate {
            limit_per_minute: 1,
            retry_after_secs: 1,
        }));
        m.reloaded(ReloadResult::Ok);
        m.reloaded(ReloadResult::Refused);
        m.reloaded(ReloadResult::Refused);
        let a = m.call_started();
        let b = m.call_started();
        assert_eq!(m.in_flight(), 2);
        drop(a);
        let text = m.render();
        for line in [
            "tollgate_refusals_total{reason=\"unauthenticated\"} 2",
            "tollgate_refusals_total{reason=\"not_found\"} 1",
            "tollgate_refusals_total{reason=\"rate\"} 1",
            "tollgate_refusals_total{reason=\"blocked\"} 0",
            "tollgate_config_reloads_total{result=\"ok\"} 1",
            "tollgate_config_reloads_total{result=\"refused\"} 2",
            "tollgate_in_flight_calls 1",
        ] {
            assert!(has_line(&text, line), "missing `{line}` in:\n{text}");
        }
        drop(b);
        assert_eq!(m.in_flight(), 0);
        assert_eq!(m.refusals(Refusal::Unauthenticated), 2);
    }

    #[test]
    fn every_refusal_reason_has_its_own_counter() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Refusal::ALL.len());
    }

    #[test]
    fn the_store_gauges_come_from_the_attached_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(
            &dir.path().join("t.db"),
            jiff::tz::TimeZone::UTC,
            crate::store::sqlite::Options::default(),
        )
        .unwrap();
        let m = Metrics::new();
        m.attach_store(Arc::clone(&store) as Arc<dyn Store>);
        assert!(store.record(row("openai", Some("gpt-4o"), 200)));
        store.close_blocking();
        assert!(!store.record(row("openai", Some("gpt-4o"), 200)), "closed");
        let text = m.render();
        for line in [
            "tollgate_store_rows_committed_total 1",
            "tollgate_store_rows_dropped_total 1",
            "tollgate_store_queue_depth 0",
        ] {
            assert!(has_line(&text, line), "missing `{line}` in:\n{text}");
        }
    }
}
