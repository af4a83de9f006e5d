//! The admin API's documented shapes of stored values: what a client of the API sees, mapped
//! from the store's plain results. A change of a query's shape changes nothing here unless it is
//! mapped here; a change here is a change of the API (and of its OpenAPI document).

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::plan::{Plan, PlanConfig};
use crate::quota::{Limits, QuotaStatus, UserControls, UserOverrides, WindowStatus};
use crate::store;
use crate::usage::Totals;

/// Sums over a set of calls, from the daily rollups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = UsageTotals)]
pub struct TotalsView {
    pub calls: i64,
    pub input_tokens: i64,
    /// Included in `input_tokens`.
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    /// Included in `output_tokens`.
    pub reasoning_tokens: i64,
    /// input + output, the figure token limits count.
    pub total_tokens: i64,
    /// Priced calls only (see `unpriced_calls`); 1e-9 USD.
    pub cost_nano_usd: i64,
    /// Calls whose tokens are Tollgate's estimate: `usage_source` `estimated`, or `invalid`
    /// (the provider's report was impossible and replaced by the estimate).
    pub estimated_calls: i64,
    /// Calls of a model without a price (their cost is not in `cost_nano_usd`).
    pub unpriced_calls: i64,
    /// Calls answered with a status >= 400.
    pub errors: i64,
    /// Sum of the calls' latencies: mean latency = `latency_ms_sum / calls`.
    pub latency_ms_sum: i64,
}

impl From<Totals> for TotalsView {
    fn from(t: Totals) -> TotalsView {
        TotalsView {
            calls: t.calls,
            input_tokens: t.input_tokens,
            cached_input_tokens: t.cached_input_tokens,
            output_tokens: t.output_tokens,
            reasoning_tokens: t.reasoning_tokens,
            total_tokens: t.total_tokens,
            cost_nano_usd: t.cost_nano_usd,
            estimated_calls: t.estimated_calls,
            unpriced_calls: t.unpriced_calls,
            errors: t.errors,
            latency_ms_sum: t.latency_ms_sum,
        }
    }
}

/// A user's own limits, set by an operator. `None` = the `[limits]` default from gateway.toml.
/// Stored in the `users` columns of the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = UserOverrides)]
pub struct OverridesView {
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub daily_cost_nano_usd: Option<u64>,
    pub monthly_cost_nano_usd: Option<u64>,
    pub requests_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
}

impl From<UserOverrides> for OverridesView {
    fn from(o: UserOverrides) -> OverridesView {
        OverridesView {
            daily_tokens: o.daily_tokens,
            monthly_tokens: o.monthly_tokens,
            daily_cost_nano_usd: o.daily_cost_nano_usd,
            monthly_cost_nano_usd: o.monthly_cost_nano_usd,
            requests_per_minute: o.requests_per_minute,
            max_concurrent: o.max_concurrent,
        }
    }
}

/// The operator-owned columns of a `users` row. A user without a row has the default (not
/// blocked, no overrides).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = UserControls)]
pub struct ControlsView {
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    pub overrides: OverridesView,
}

impl From<UserControls> for ControlsView {
    fn from(c: UserControls) -> ControlsView {
        ControlsView {
            blocked: c.blocked,
            blocked_reason: c.blocked_reason,
            overrides: c.overrides.into(),
        }
    }
}

/// One user with their usage today and this month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = UserSummary)]
pub struct UserSummaryView {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    /// The user's own limits; `None` fields follow the `[limits]` defaults.
    pub overrides: OverridesView,
    /// Unix ms UTC.
    pub created_at: i64,
    /// Unix ms UTC of the latest recorded call; `None` if the user never called.
    pub last_seen_at: Option<i64>,
    pub today: TotalsView,
    /// From the first of the month to today, inclusive.
    pub month: TotalsView,
}

impl From<store::UserSummary> for UserSummaryView {
    fn from(u: store::UserSummary) -> UserSummaryView {
        UserSummaryView {
            id: u.id,
            email: u.email,
            name: u.name,
            blocked: u.controls.blocked,
            blocked_reason: u.controls.blocked_reason,
            overrides: u.controls.overrides.into(),
            created_at: u.created_at,
            last_seen_at: u.last_seen_at,
            today: u.today.into(),
            month: u.month.into(),
        }
    }
}

/// One day of a series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = DayPoint)]
pub struct DayPointView {
    /// `YYYY-MM-DD` in `limits.timezone`.
    pub day: String,
    pub totals: TotalsView,
}

impl From<store::DayPoint> for DayPointView {
    fn from(p: store::DayPoint) -> DayPointView {
        DayPointView {
            day: p.day,
            totals: p.totals.into(),
        }
    }
}

/// Usage of one model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ModelUsage)]
pub struct ModelUsageView {
    pub provider: String,
    /// `None` for calls whose request named no model.
    pub model: Option<String>,
    pub totals: TotalsView,
}

impl From<store::ModelUsage> for ModelUsageView {
    fn from(m: store::ModelUsage) -> ModelUsageView {
        ModelUsageView {
            provider: m.provider,
            model: m.model,
            totals: m.totals.into(),
        }
    }
}

/// Usage of one provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ProviderUsage)]
pub struct ProviderUsageView {
    pub provider: String,
    pub totals: TotalsView,
}

impl From<store::ProviderUsage> for ProviderUsageView {
    fn from(p: store::ProviderUsage) -> ProviderUsageView {
        ProviderUsageView {
            provider: p.provider,
            totals: p.totals.into(),
        }
    }
}

/// One recorded call: a `token_usage` row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = CallRow)]
pub struct CallView {
    pub id: i64,
    pub request_id: String,
    /// Unix ms UTC, when the call was admitted.
    pub ts: i64,
    pub user_id: String,
    pub provider: String,
    pub model: Option<String>,
    pub endpoint: String,
    pub streamed: bool,
    pub status: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost_nano_usd: Option<i64>,
    /// Where the tokens come from: `reported` (the provider's report), `estimated` (the call
    /// ended before a report), `invalid` (the report was impossible — a count above 10⁹ — and
    /// the tokens are the estimate) or `none` (nothing consumed).
    #[schema(value_type = UsageSourceView)]
    pub usage_source: String,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    /// How the call ended: `complete`, `upstream_error` (an error status relayed, or the
    /// upstream failing mid-answer), `stream_error`, `client_gone`, `refused_quota`, … (the list
    /// is in ARCHITECTURE.md).
    pub outcome: String,
}

/// The values of `usage_source` (`usage::UsageSource`), for the OpenAPI document: a call row
/// serves the stored string, which the database constrains to these.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = UsageSource)]
#[expect(
    dead_code,
    reason = "a schema only: a call row serves the stored string"
)]
pub enum UsageSourceView {
    Reported,
    Estimated,
    None,
    Invalid,
}

impl From<store::CallRow> for CallView {
    fn from(c: store::CallRow) -> CallView {
        CallView {
            id: c.id,
            request_id: c.request_id,
            ts: c.ts,
            user_id: c.user_id,
            provider: c.provider,
            model: c.model,
            endpoint: c.endpoint,
            streamed: c.streamed,
            status: c.status,
            input_tokens: c.input_tokens,
            cached_input_tokens: c.cached_input_tokens,
            output_tokens: c.output_tokens,
            reasoning_tokens: c.reasoning_tokens,
            total_tokens: c.total_tokens,
            cost_nano_usd: c.cost_nano_usd,
            usage_source: c.usage_source,
            latency_ms: c.latency_ms,
            ttfb_ms: c.ttfb_ms,
            outcome: c.outcome,
        }
    }
}

/// System statistics.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[schema(as = Stats)]
pub struct StatsFigures {
    pub users_total: i64,
    /// Users whose latest call is from today.
    pub users_active_today: i64,
    /// Users whose latest call is from the last 7 days.
    pub users_active_7d: i64,
    pub users_blocked: i64,
    pub today: TotalsView,
    pub month: TotalsView,
    /// This month, most tokens first.
    pub by_model: Vec<ModelUsageView>,
    /// This month, most tokens first.
    pub by_provider: Vec<ProviderUsageView>,
    /// Share of today's calls whose tokens are estimated (`usage_source` `estimated` or
    /// `invalid`), 0..=1.
    pub estimated_share_today: f64,
    /// The same share over this month.
    pub estimated_share_month: f64,
}

impl From<store::Stats> for StatsFigures {
    fn from(s: store::Stats) -> StatsFigures {
        StatsFigures {
            users_total: s.users_total,
            users_active_today: s.users_active_today,
            users_active_7d: s.users_active_7d,
            users_blocked: s.users_blocked,
            estimated_share_today: s.today.estimated_share(),
            estimated_share_month: s.month.estimated_share(),
            today: s.today.into(),
            month: s.month.into(),
            by_model: s.by_model.into_iter().map(Into::into).collect(),
            by_provider: s.by_provider.into_iter().map(Into::into).collect(),
        }
    }
}

/// One (day, model or provider) point of a usage series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = SeriesPoint)]
pub struct SeriesPointView {
    pub day: String,
    /// The model (`""` for calls that named none) or the provider.
    pub key: String,
    /// The provider of the model (the key itself when the series is by provider).
    pub provider: String,
    pub totals: TotalsView,
}

impl From<store::SeriesPoint> for SeriesPointView {
    fn from(p: store::SeriesPoint) -> SeriesPointView {
        SeriesPointView {
            day: p.day,
            key: p.key,
            provider: p.provider,
            totals: p.totals.into(),
        }
    }
}

/// One `admin_audit` row as read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = AuditRow)]
pub struct AuditView {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub detail: Option<String>,
}

impl From<store::AuditRow> for AuditView {
    fn from(a: store::AuditRow) -> AuditView {
        AuditView {
            id: a.id,
            ts: a.ts,
            actor: a.actor,
            action: a.action,
            target: a.target,
            before_json: a.before_json,
            after_json: a.after_json,
            detail: a.detail,
        }
    }
}

// === the API's own answers ===

/// The limits in force for a user: `[limits]` defaults with the user's overrides applied.
#[derive(Serialize, ToSchema)]
pub struct LimitsView {
    pub daily_tokens: u64,
    pub monthly_tokens: u64,
    /// Nano-USD (1e-9 USD); absent = no budget.
    pub daily_cost_nano_usd: Option<u64>,
    pub monthly_cost_nano_usd: Option<u64>,
    pub requests_per_minute: u32,
    /// Absent = no cap.
    pub max_concurrent: Option<u32>,
}

impl From<Limits> for LimitsView {
    fn from(l: Limits) -> LimitsView {
        LimitsView {
            daily_tokens: l.daily_tokens,
            monthly_tokens: l.monthly_tokens,
            daily_cost_nano_usd: l.daily_cost_nano_usd,
            monthly_cost_nano_usd: l.monthly_cost_nano_usd,
            requests_per_minute: l.requests_per_minute.get(),
            max_concurrent: l.max_concurrent.map(std::num::NonZeroU32::get),
        }
    }
}

/// Where a limit in force comes from: the user's own override (admin API), their plan
/// (`[plans.NAME]`), or `[limits]`. Override > plan > limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    Override,
    Plan,
    Limits,
}

/// For each limit of a [`LimitsView`], where its value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct LimitSourcesView {
    pub daily_tokens: LimitSource,
    pub monthly_tokens: LimitSource,
    pub daily_cost_nano_usd: LimitSource,
    pub monthly_cost_nano_usd: LimitSource,
    pub requests_per_minute: LimitSource,
    pub max_concurrent: LimitSource,
}

/// What is in force for a user on `plan` with `overrides`: the limits and where each comes
/// from.
#[derive(Debug)]
pub struct Effective {
    pub limits: Limits,
    pub sources: LimitSourcesView,
}

impl Effective {
    /// `[limits]` of `config`, `plan`'s limits on top, `overrides` on top of both.
    pub fn of(config: &Config, plan: Option<&Plan>, overrides: &UserOverrides) -> Effective {
        let settings = plan.map(|p| &p.settings);
        let limits = Limits::for_plan(&config.raw.limits, settings).with_overrides(overrides);
        let source = |over: bool, in_plan: fn(&PlanConfig) -> bool| {
            if over {
                LimitSource::Override
            } else if settings.is_some_and(in_plan) {
                LimitSource::Plan
            } else {
                LimitSource::Limits
            }
        };
        let o = overrides;
        Effective {
            limits,
            sources: LimitSourcesView {
                daily_tokens: source(o.daily_tokens.is_some(), |p| p.daily_tokens.is_some()),
                monthly_tokens: source(o.monthly_tokens.is_some(), |p| p.monthly_tokens.is_some()),
                daily_cost_nano_usd: source(o.daily_cost_nano_usd.is_some(), |p| {
                    p.daily_cost_usd.is_some()
                }),
                monthly_cost_nano_usd: source(o.monthly_cost_nano_usd.is_some(), |p| {
                    p.monthly_cost_usd.is_some()
                }),
                requests_per_minute: source(o.requests_per_minute.is_some(), |p| {
                    p.requests_per_minute.is_some()
                }),
                max_concurrent: source(o.max_concurrent.is_some(), |p| p.max_concurrent.is_some()),
            },
        }
    }
}

/// A user as listed: their row, usage today and this month, their plan, and the limits in force
/// with where each comes from.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    #[serde(flatten)]
    pub summary: UserSummaryView,
    /// The plan the user is on: their latest call's (as it applies now: a plan since removed
    /// from gateway.toml gives way to `limits.default_plan`); `None`: no plan.
    pub plan: Option<String>,
    /// The limits in force: `[limits]`, the plan's on top, the user's overrides on top of both.
    pub limits: LimitsView,
    /// Where each of `limits` comes from.
    pub limit_sources: LimitSourcesView,
}

/// One `[plans.NAME]` as it applies now.
#[derive(Serialize, ToSchema)]
pub struct PlanView {
    pub name: String,
    /// Whether this is `limits.default_plan`.
    pub default: bool,
    /// The plan's limits: its own, `[limits]`'s for the others.
    pub limits: LimitsView,
    /// `plan` or `limits`, for each of `limits`.
    pub limit_sources: LimitSourcesView,
    /// Output tokens a call's reservation assumes when it sets no cap.
    pub default_max_output_tokens: u64,
    /// Allowed models (glob patterns); `None`: every model not denied.
    pub models: Option<Vec<String>>,
    /// Refused models (glob patterns).
    pub deny_models: Vec<String>,
    /// The most output tokens one call may ask for; `None`: no ceiling.
    pub max_output_tokens: Option<u64>,
    /// A request asking for more is lowered to the ceiling rather than refused.
    pub clamp_max_output_tokens: bool,
}

/// The plans in force.
#[derive(Serialize, ToSchema)]
pub struct PlansView {
    /// The JWT claim that names a user's plan (`auth.plan_claim`).
    pub plan_claim: String,
    /// The plan of a token without the claim or naming no plan (`limits.default_plan`).
    pub default_plan: Option<String>,
    /// `[limits]`: what a user on no plan gets, and what each plan inherits.
    pub limits: LimitsView,
    /// Every plan, by name.
    pub plans: Vec<PlanView>,
}

impl PlansView {
    pub fn of(config: &Config) -> PlansView {
        let default = config.plans.default_plan().map(|p| p.name.to_string());
        let plans = config
            .plans
            .iter()
            .map(|p| {
                let e = Effective::of(config, Some(p), &UserOverrides::default());
                PlanView {
                    name: p.name.to_string(),
                    default: default.as_deref() == Some(&*p.name),
                    limits: e.limits.into(),
                    limit_sources: e.sources,
                    default_max_output_tokens: p
                        .settings
                        .default_max_output_tokens
                        .unwrap_or(config.raw.limits.default_max_output_tokens),
                    models: p.settings.models.clone(),
                    deny_models: p.settings.deny_models.clone(),
                    max_output_tokens: p.settings.max_output_tokens,
                    clamp_max_output_tokens: p.settings.clamp_max_output_tokens,
                }
            })
            .collect();
        PlansView {
            plan_claim: config.raw.auth.plan_claim.clone(),
            default_plan: default,
            limits: Limits::from_config(&config.raw.limits).into(),
            plans,
        }
    }
}

/// A page of users.
#[derive(Serialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserView>,
    /// Users matching the search, over all pages.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    /// `YYYY-MM-DD` in `limits.timezone`: what "today" means in the figures.
    pub today: String,
    pub timezone: String,
}

/// One window of a user's live quota (the proxy's counters: recorded plus in flight).
#[derive(Serialize, ToSchema)]
pub struct WindowView {
    /// `day` or `month`.
    pub window: String,
    /// When the window started and when it resets (unix ms).
    pub start: i64,
    pub reset_at: i64,
    pub used_tokens: u64,
    pub reserved_tokens: u64,
    pub token_limit: u64,
    pub remaining_tokens: u64,
    pub used_cost_nano_usd: u64,
    pub cost_limit_nano_usd: Option<u64>,
    pub remaining_cost_nano_usd: Option<u64>,
}

impl From<&WindowStatus> for WindowView {
    fn from(w: &WindowStatus) -> WindowView {
        WindowView {
            window: w.window.as_str().to_string(),
            start: w.start.as_millisecond(),
            reset_at: w.reset_at.as_millisecond(),
            used_tokens: w.used_tokens,
            reserved_tokens: w.reserved_tokens,
            token_limit: w.token_limit,
            remaining_tokens: w.remaining_tokens,
            used_cost_nano_usd: w.used_cost_nano_usd,
            cost_limit_nano_usd: w.cost_limit_nano_usd,
            remaining_cost_nano_usd: w.remaining_cost_nano_usd,
        }
    }
}

/// A user's live quota.
#[derive(Serialize, ToSchema)]
pub struct QuotaView {
    pub day: WindowView,
    pub month: WindowView,
    /// Calls admitted and not finished yet.
    pub in_flight: u32,
}

impl From<&QuotaStatus> for QuotaView {
    fn from(s: &QuotaStatus) -> QuotaView {
        QuotaView {
            day: (&s.day).into(),
            month: (&s.month).into(),
            in_flight: s.in_flight,
        }
    }
}

/// One user's usage.
#[derive(Serialize, ToSchema)]
pub struct UserUsage {
    pub user: UserView,
    pub days: u32,
    /// One point per day, oldest first, days without calls included as zeros.
    pub daily: Vec<DayPointView>,
    /// Per provider and model over the same days.
    pub models: Vec<ModelUsageView>,
    /// The most recent calls, newest first.
    pub calls: Vec<CallView>,
    /// Pass as `cursor` for the next page of calls; absent on the last page.
    pub next_cursor: Option<i64>,
    pub quota: QuotaView,
    pub timezone: String,
}

/// A user's controls after an action, and what they were before.
#[derive(Serialize, ToSchema)]
pub struct ControlsChange {
    pub user: String,
    pub before: ControlsView,
    pub after: ControlsView,
    /// The limits in force from the user's next call on (on the plan of their latest call
    /// through this gateway, else the default plan).
    pub limits: LimitsView,
    /// Where each of `limits` comes from.
    pub limit_sources: LimitSourcesView,
}

/// System statistics.
#[derive(Serialize, ToSchema)]
pub struct StatsView {
    #[serde(flatten)]
    pub stats: StatsFigures,
    /// What "today" means in the figures: `YYYY-MM-DD` in `limits.timezone`.
    pub day: String,
    pub month_start: String,
    pub timezone: String,
    /// When the figures were read (unix ms).
    pub generated_at: i64,
}

/// Usage per day, split by model or provider.
#[derive(Serialize, ToSchema)]
pub struct Series {
    pub days: u32,
    /// `model` or `provider`.
    pub by: String,
    pub since: String,
    pub today: String,
    pub points: Vec<SeriesPointView>,
    pub timezone: String,
}

/// A page of the audit trail, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<i64>,
}

/// The effective configuration; secrets are never in it.
#[derive(Serialize, ToSchema)]
pub struct ConfigView {
    /// gateway.toml as in force (defaults filled in), as JSON. It names the environment
    /// variables that hold secrets, never their values.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// For each secret's environment variable: whether it is set.
    pub secrets: std::collections::BTreeMap<String, bool>,
    /// The same configuration as TOML, as `tollgate check-config` prints it.
    pub toml: String,
}

/// What a reload did: `{"result": "unchanged"}` or `{"result": "applied", "changes": [{"key",
/// "before", "after", "needs_restart"}], "needs_restart": [keys], "audit_id"}`.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ReloadView(pub crate::reload::ReloadOutcome);

/// One alert a `[[alerts]]` rule fired.
#[derive(Serialize, ToSchema)]
pub struct AlertView {
    pub id: i64,
    /// When it fired (unix ms UTC).
    pub ts: i64,
    /// The rule's name.
    pub rule: String,
    /// `user_limit`, `spend`, `upstream_errors`, `refusals` or `store_behind`.
    pub kind: String,
    /// A user id, `gateway` (spend), or the gateway's name (rates, the store).
    pub subject: String,
    /// The day (`YYYY-MM-DD`), the month (`YYYY-MM`), or the minute an episode began.
    pub period: String,
    /// The threshold passed, e.g. `day tokens 80%`.
    pub level: String,
    pub message: String,
    /// The figures behind it.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// `none` (no webhook), `pending`, `delivered` or `failed`.
    pub delivery: String,
    /// Delivery attempts over every webhook.
    pub attempts: i64,
    /// When the last webhook took it (unix ms UTC).
    pub delivered_at: Option<i64>,
}

impl From<crate::store::alerts::AlertRow> for AlertView {
    fn from(a: crate::store::alerts::AlertRow) -> AlertView {
        AlertView {
            id: a.id,
            ts: a.ts_ms,
            rule: a.rule,
            kind: a.kind,
            subject: a.subject,
            period: a.period,
            level: a.level,
            message: a.message,
            details: a.details,
            delivery: a.delivery.as_str().to_string(),
            attempts: a.attempts,
            delivered_at: a.delivered_ms,
        }
    }
}

/// A page of alerts, newest first.
#[derive(Serialize, ToSchema)]
pub struct AlertsPageView {
    pub alerts: Vec<AlertView>,
    /// Pass it as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<i64>,
    /// Alerts fired in the last 24 hours (the dashboard's badge).
    pub last_24h: i64,
}
