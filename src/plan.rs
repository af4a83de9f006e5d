//! Plans: `[plans.NAME]` in gateway.toml — the limits and the models a tier of the app's users
//! gets, chosen per call by a claim of the user's JWT (`auth.plan_claim`).
//!
//! ```toml
//! [limits]
//! default_plan = "free"          # a token without the claim, or naming no plan, is on "free"
//!
//! [plans.free]
//! daily_tokens = 20000
//! models = ["gpt-4o-mini*", "gemini-2.5-flash*"]
//! max_output_tokens = 1024
//!
//! [plans.pro]
//! daily_tokens = 1000000
//! deny_models = ["o1-pro*"]
//! ```
//!
//! **Limits.** A plan sets any of the per-user limits of `[limits]`; what it leaves out is
//! `[limits]`'s. An operator's override for one user wins over both (see `quota`): override >
//! plan > `[limits]`.
//!
//! **Models.** `models` (allowed) and `deny_models` are glob patterns (`*`, `?`, `[abc]`,
//! `{a,b}`), matched against the whole model name without regard to case, so no spelling of a
//! model the provider resolves alike slips past the policy. A denied model is refused whatever
//! `models` says. With `models`, a call that spends (any method but `GET`, `HEAD`, `DELETE`)
//! must name a model Tollgate can read; a plan with only `deny_models` lets through calls that
//! name none. A body that names its model more than once, or not as a string, is refused by any
//! model policy.
//!
//! **Output ceiling.** `max_output_tokens` caps what one call may produce (all of its choices
//! together). A request asking for more is refused, or lowered to the ceiling with
//! `clamp_max_output_tokens = true`; a request asking for nothing gets the ceiling written in, so
//! the ceiling always holds on the endpoints that generate.
//!
//! This module owns the plan's settings as written ([`PlanConfig`], re-exported by `config`),
//! their checks, the compiled table ([`Plans`]) and its decisions ([`Plan::check_model`],
//! [`Plan::output`], [`PlanRefusal`]). It does no I/O and knows no HTTP: `proxy` applies the
//! decisions, `quota` turns the limits into counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::pricing::{MAX_COST_USD, usd_to_nano_usd};

/// Longest plan name, and longest claim value read as one.
pub const MAX_PLAN_NAME: usize = 64;
/// Most patterns in one list.
const MAX_PATTERNS: usize = 256;
/// Longest model name a refusal message repeats.
const SHOWN_MODEL_CHARS: usize = 100;

/// One `[plans.NAME]` table as written. Every key is optional; a limit left out is `[limits]`'s.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Tokens (input + output) a user of this plan may spend per calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<u64>,
    /// Tokens a user of this plan may spend per calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_tokens: Option<u64>,
    /// Budget per user and day, USD (priced calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cost_usd: Option<f64>,
    /// Budget per user and month, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cost_usd: Option<f64>,
    /// Calls a user may start per minute (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Calls of one user in flight at once (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Output tokens a call's reservation assumes when the request sets no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_output_tokens: Option<u64>,
    /// Allowed models (glob patterns). Absent = every model not denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Refused models (glob patterns), whatever `models` allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_models: Vec<String>,
    /// The most output tokens one call may ask for (all its choices together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Lower a request asking for more than `max_output_tokens` to it, instead of refusing it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clamp_max_output_tokens: bool,
}

impl PlanConfig {
    /// `daily_cost_usd` in nano-USD (valid once [`Plans::new`] accepted it).
    pub fn daily_cost_nano_usd(&self) -> Option<u64> {
        self.daily_cost_usd.and_then(usd_to_nano_usd)
    }
    /// `monthly_cost_usd` in nano-USD.
    pub fn monthly_cost_nano_usd(&self) -> Option<u64> {
        self.monthly_cost_usd.and_then(usd_to_nano_usd)
    }
}

/// A plan setting that cannot be used, naming its key (`plans.free.models[2]`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct PlanError {
    pub key: String,
    pub message: String,
}

/// One plan, compiled: its name, its settings and its model patterns.
#[derive(Debug)]
pub struct Plan {
    pub name: Arc<str>,
    pub settings: PlanConfig,
    allow: Option<GlobSet>,
    deny: Option<GlobSet>,
}

/// Why a plan refuses a call (HTTP 403, nothing forwarded). `Display` is the client's message:
/// it names the plan, and the model as the request spelt it (cut to 100 characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanRefusal {
    /// The model is denied, or not among the allowed ones.
    #[error("the model `{}` is not available on the `{plan}` plan", shown(model))]
    Model { plan: Arc<str>, model: String },
    /// The plan allows only some models and the request names none Tollgate can read.
    #[error(
        "the `{plan}` plan allows only some models, and this request does not name one the gateway can read"
    )]
    NoModel { plan: Arc<str> },
    /// The request asks for more output than the plan's ceiling (and the plan does not clamp).
    #[error(
        "this request asks for up to {asked} output tokens; the `{plan}` plan allows at most {ceiling} per call"
    )]
    Output {
        plan: Arc<str>,
        asked: u64,
        ceiling: u64,
    },
    /// The plan's ceiling must be written into the request, and its output settings cannot be
    /// read (e.g. a `generationConfig` that is not an object).
    #[error(
        "the `{plan}` plan caps output at {ceiling} tokens per call, and this request's output settings cannot be read"
    )]
    OutputUnreadable { plan: Arc<str>, ceiling: u64 },
}

impl PlanRefusal {
    /// A stable machine-readable name (the OpenAI error body's `code`).
    pub fn code(&self) -> &'static str {
        match self {
            PlanRefusal::Model { .. } => "model_not_in_plan",
            PlanRefusal::NoModel { .. } => "model_required_by_plan",
            PlanRefusal::Output { .. } | PlanRefusal::OutputUnreadable { .. } => {
                "max_output_tokens_over_plan"
            }
        }
    }
}

fn shown(model: &str) -> String {
    model
        .chars()
        .take(SHOWN_MODEL_CHARS)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// What [`Plan::output`] says to do with a request's output cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputCap {
    /// Forward the request as it is.
    Keep,
    /// Write this cap (for all choices together) into the request.
    Set(u64),
}

impl Plan {
    /// Whether the plan restricts models at all.
    pub fn restricts_models(&self) -> bool {
        self.allow.is_some() || self.deny.is_some()
    }

    /// Whether the plan names the models allowed (then a spending call must name one).
    pub fn has_allow_list(&self) -> bool {
        self.allow.is_some()
    }

    /// Check the model a call names. `model` is `None` when it names none Tollgate can read;
    /// `ambiguous` when the body names it more than once or not as a string; `spends` when the
    /// call can spend (its method is not `GET`, `HEAD` or `DELETE`).
    pub fn check_model(
        &self,
        model: Option<&str>,
        ambiguous: bool,
        spends: bool,
    ) -> Result<(), PlanRefusal> {
        if !self.restricts_models() {
            return Ok(());
        }
        let no_model = || PlanRefusal::NoModel {
            plan: Arc::clone(&self.name),
        };
        if ambiguous {
            return Err(no_model());
        }
        let Some(model) = model else {
            return if self.allow.is_some() && spends {
                Err(no_model())
            } else {
                Ok(())
            };
        };
        let bare = bare_model(model);
        let trimmed = bare.trim();
        let denied = self
            .deny
            .as_ref()
            .is_some_and(|d| d.is_match(bare) || d.is_match(trimmed));
        let allowed = self.allow.as_ref().is_none_or(|a| a.is_match(bare));
        if denied || !allowed {
            return Err(PlanRefusal::Model {
                plan: Arc::clone(&self.name),
                model: model.to_owned(),
            });
        }
        Ok(())
    }

    /// The ceiling on a call's output, given what the request asks for (`asked`: its cap over
    /// all choices, `None` when it sets none). Call only for endpoints that generate.
    pub fn output(&self, asked: Option<u64>) -> Result<OutputCap, PlanRefusal> {
        let Some(ceiling) = self.settings.max_output_tokens else {
            return Ok(OutputCap::Keep);
        };
        match asked {
            None => Ok(OutputCap::Set(ceiling)),
            Some(n) if n <= ceiling => Ok(OutputCap::Keep),
            Some(_) if self.settings.clamp_max_output_tokens => Ok(OutputCap::Set(ceiling)),
            Some(n) => Err(PlanRefusal::Output {
                plan: Arc::clone(&self.name),
                asked: n,
                ceiling,
            }),
        }
    }

    /// The refusal for a request whose output settings cannot be rewritten to `ceiling`.
    pub fn output_unreadable(&self, ceiling: u64) -> PlanRefusal {
        PlanRefusal::OutputUnreadable {
            plan: Arc::clone(&self.name),
            ceiling,
        }
    }

    /// The refusal for a request whose choices alone ask for more than `ceiling` (one token
    /// each).
    pub fn output_over(&self, asked: u64, ceiling: u64) -> PlanRefusal {
        PlanRefusal::Output {
            plan: Arc::clone(&self.name),
            asked,
            ceiling,
        }
    }
}

/// A model as the patterns see it: Gemini's `models/` resource prefix removed.
fn bare_model(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// The plan a call is on, as [`Plans::choose`] picked it.
#[derive(Clone, Copy, Debug)]
pub struct Choice<'a> {
    /// `None`: no plan (no `[plans]`, or no claim and no `limits.default_plan`): `[limits]`.
    pub plan: Option<&'a Arc<Plan>>,
    /// The claim named no configured plan: its first value (to be logged and counted).
    pub unknown: Option<&'a str>,
}

/// Every `[plans.NAME]`, compiled, and `limits.default_plan`.
#[derive(Debug, Default)]
pub struct Plans {
    by_name: HashMap<Box<str>, Arc<Plan>>,
    default: Option<Arc<Plan>>,
}

impl Plans {
    /// Check and compile `plans` (as gateway.toml names them) with `default_plan` (the key
    /// `limits.default_plan`). The first problem found is returned, naming its key.
    pub fn new(
        plans: &BTreeMap<String, PlanConfig>,
        default_plan: Option<&str>,
    ) -> Result<Plans, PlanError> {
        let mut by_name = HashMap::with_capacity(plans.len());
        for (name, settings) in plans {
            let plan = compile(name, settings)?;
            by_name.insert(Box::from(name.as_str()), Arc::new(plan));
        }
        let default = match default_plan {
            None => None,
            Some(name) => Some(Arc::clone(by_name.get(name).ok_or_else(|| PlanError {
                key: "limits.default_plan".into(),
                message: if plans.is_empty() {
                    format!("names the plan {name:?}, but gateway.toml has no [plans.{name}]")
                } else {
                    format!(
                        "names the plan {name:?}, which is not one of the [plans] tables ({})",
                        plans.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
            })?)),
        };
        Ok(Plans { by_name, default })
    }

    /// Whether any plan is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The plan named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plan>> {
        self.by_name.get(name)
    }

    /// `limits.default_plan`.
    pub fn default_plan(&self) -> Option<&Arc<Plan>> {
        self.default.as_ref()
    }

    /// The plan of a caller whose plan claim holds `claim` (its values in order; `None` or
    /// empty when the token carries none): the first value naming a plan, else the default
    /// plan. Values are compared exactly (case included).
    pub fn choose<'a>(&'a self, claim: Option<&'a [Box<str>]>) -> Choice<'a> {
        let values = claim.unwrap_or_default();
        if let Some(plan) = values.iter().find_map(|v| self.by_name.get(&**v)) {
            return Choice {
                plan: Some(plan),
                unknown: None,
            };
        }
        Choice {
            plan: self.default.as_ref(),
            unknown: values.first().map(|v| &**v),
        }
    }

    /// The plan a user was last seen on (the store's `users.plan`), as it applies now: the
    /// plan of that name, else the default plan.
    pub fn for_name(&self, name: Option<&str>) -> Option<&Arc<Plan>> {
        name.and_then(|n| self.by_name.get(n))
            .or(self.default.as_ref())
    }

    /// Every plan, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plan>> {
        let mut all: Vec<&Arc<Plan>> = self.by_name.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.into_iter()
    }
}

/// Whether `name` can name a plan: 1 to 64 of `A-Z a-z 0-9 _ - .`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PLAN_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn compile(name: &str, s: &PlanConfig) -> Result<Plan, PlanError> {
    let err = |key: &str, message: String| PlanError {
        key: format!("plans.{name}.{key}"),
        message,
    };
    if !valid_name(name) {
        return Err(PlanError {
            key: format!("plans.{name}"),
            message: format!(
                "a plan's name is 1 to {MAX_PLAN_NAME} letters, digits, `_`, `-` or `.` (the value of the JWT's plan claim)"
            ),
        });
    }
    if s.requests_per_minute == Some(0) {
        return Err(err(
            "requests_per_minute",
            "must be at least 1 (remove the key for [limits]'s)".into(),
        ));
    }
    if s.max_concurrent == Some(0) {
        return Err(err(
            "max_concurrent",
            "must be at least 1 (remove the key for [limits]'s)".into(),
        ));
    }
    for (key, usd) in [
        ("daily_cost_usd", s.daily_cost_usd),
        ("monthly_cost_usd", s.monthly_cost_usd),
    ] {
        if let Some(usd) = usd
            && usd_to_nano_usd(usd).is_none()
        {
            return Err(err(
                key,
                format!("must be an amount in USD between 0 and {MAX_COST_USD:e}"),
            ));
        }
    }
    for (key, n) in [
        ("daily_tokens", s.daily_tokens),
        ("monthly_tokens", s.monthly_tokens),
    ] {
        if n.is_some_and(|n| i64::try_from(n).is_err()) {
            return Err(err(key, "is too large".into()));
        }
    }
    if s.max_output_tokens == Some(0) {
        return Err(err(
            "max_output_tokens",
            "must be at least 1 (remove the key for no ceiling)".into(),
        ));
    }
    if s.clamp_max_output_tokens && s.max_output_tokens.is_none() {
        return Err(err(
            "clamp_max_output_tokens",
            "has no effect without max_output_tokens in the same plan".into(),
        ));
    }
    if s.default_max_output_tokens == Some(0) {
        return Err(err(
            "default_max_output_tokens",
            "must be at least 1 (remove the key for [limits]'s)".into(),
        ));
    }
    let allow = match &s.models {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(err(
                "models",
                "lists no model, so it would refuse every call; list at least one pattern, or remove the key to allow every model".into(),
            ));
        }
        Some(list) => Some(patterns(list, |i| format!("plans.{name}.models[{i}]"))?),
    };
    let deny = if s.deny_models.is_empty() {
        None
    } else {
        Some(patterns(&s.deny_models, |i| {
            format!("plans.{name}.deny_models[{i}]")
        })?)
    };
    Ok(Plan {
        name: Arc::from(name),
        settings: s.clone(),
        allow,
        deny,
    })
}

/// Glob patterns, case-insensitive, `*` crossing `/` (a model name is one word).
fn patterns(list: &[String], key: impl Fn(usize) -> String) -> Result<GlobSet, PlanError> {
    if list.len() > MAX_PATTERNS {
        return Err(PlanError {
            key: key(MAX_PATTERNS),
            message: format!("at most {MAX_PATTERNS} patterns"),
        });
    }
    let mut set = GlobSetBuilder::new();
    for (i, p) in list.iter().enumerate() {
        if p.trim().is_empty() {
            return Err(PlanError {
                key: key(i),
                message: "is empty".into(),
            });
        }
        let glob: Glob = GlobBuilder::new(p)
            .case_insensitive(true)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| PlanError {
                key: key(i),
                message: format!("not a glob pattern: {}", e.kind()),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| PlanError {
        key: key(0),
        message: format!("the patterns cannot be compiled: {}", e.kind()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn plans(toml_src: &str, default: Option<&str>) -> Result<Plans, PlanError> {
        let table: BTreeMap<String, PlanConfig> = toml::from_str(toml_src).unwrap();
        Plans::new(&table, default)
    }

    const TIERS: &str = r#"
        [free]
        daily_tokens = 1000
        models = ["gpt-4o-mini*", "gemini-2.5-flash*"]
        max_output_tokens = 100
        [pro]
        deny_models = ["o1-pro*", "gpt-4.5*"]
        max_output_tokens = 5000
        clamp_max_output_tokens = true
        [team]
    "#;

    fn claim(values: &[&str]) -> Vec<Box<str>> {
        values.iter().map(|v| Box::from(*v)).collect()
    }

    #[test]
    fn the_claim_picks_the_first_value_naming_a_plan_else_the_default() {
        let p = plans(TIERS, Some("free")).unwrap();
        let name = |c: Option<&[Box<str>]>| p.choose(c).plan.map(|p| p.name.to_string());
        assert_eq!(name(Some(&claim(&["pro"]))), Some("pro".into()));
        assert_eq!(
            name(Some(&claim(&["staff", "team", "pro"]))),
            Some("team".into())
        );
        assert_eq!(name(None), Some("free".into()));
        assert_eq!(p.choose(None).unknown, None);
        let unknown = claim(&["Pro"]);
        let c = p.choose(Some(&unknown));
        assert_eq!(c.plan.unwrap().name.as_ref(), "free", "case matters");
        assert_eq!(c.unknown, Some("Pro"));

        let no_default = plans(TIERS, None).unwrap();
        assert!(no_default.choose(Some(&claim(&["gold"]))).plan.is_none());
        assert!(no_default.choose(None).plan.is_none());
        assert!(Plans::default().choose(None).plan.is_none());
    }

    #[test]
    fn a_default_plan_must_exist() {
        let e = plans(TIERS, Some("gold")).unwrap_err();
        assert_eq!(e.key, "limits.default_plan");
        assert!(e.message.contains("free, pro, team"), "{e}");
        let e = plans("", Some("free")).unwrap_err();
        assert!(e.message.contains("no [plans.free]"), "{e}");
    }

    #[test]
    fn models_are_matched_whole_without_regard_to_case() {
        let p = plans(TIERS, None).unwrap();
        let free = p.get("free").unwrap();
        let ok = |m: &str| free.check_model(Some(m), false, true).is_ok();
        assert!(ok("gpt-4o-mini"));
        assert!(ok("gpt-4o-mini-2024-07-18"));
        assert!(ok("GPT-4o-MINI"));
        assert!(ok("models/gemini-2.5-flash"), "Gemini's resource prefix");
        assert!(ok("gemini-2.5-flash-lite"));
        assert!(!ok("gpt-4o"));
        assert!(!ok("xgpt-4o-mini"), "the whole name");
        assert!(!ok("gemini-2.5-pro"));
        assert!(
            !ok(" gpt-4o-mini"),
            "an allow-list takes the name as written"
        );
        let e = free.check_model(Some("gpt-4o"), false, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the model `gpt-4o` is not available on the `free` plan"
        );
        assert_eq!(e.code(), "model_not_in_plan");
    }

    #[test]
    fn a_denied_model_is_refused_in_any_spelling() {
        let p = plans(TIERS, None).unwrap();
        let pro = p.get("pro").unwrap();
        let ok = |m: &str| pro.check_model(Some(m), false, true).is_ok();
        assert!(ok("gpt-4o"));
        assert!(!ok("o1-pro"));
        assert!(!ok("O1-PRO-2025-03-19"));
        assert!(!ok(" o1-pro "), "padded");
        assert!(!ok("gpt-4.5-preview"));
        assert!(ok("gpt-4x5"), "`.` is literal");
        // No model: a deny list lets it through, an allow list does not (when it spends).
        assert!(pro.check_model(None, false, true).is_ok());
        let free = p.get("free").unwrap();
        assert_eq!(
            free.check_model(None, false, true).unwrap_err().code(),
            "model_required_by_plan"
        );
        assert!(free.check_model(None, false, false).is_ok(), "a GET");
        // Named twice, or not as a string: refused by any policy.
        assert!(pro.check_model(None, true, true).is_err());
        assert!(free.check_model(Some("gpt-4o-mini"), true, true).is_err());
        // No policy at all: anything goes.
        let team = p.get("team").unwrap();
        assert!(!team.restricts_models());
        assert!(team.check_model(None, true, true).is_ok());
    }

    #[test]
    fn the_output_ceiling_refuses_or_clamps_and_fills_in_a_missing_cap() {
        let p = plans(TIERS, None).unwrap();
        let free = p.get("free").unwrap();
        assert_eq!(free.output(Some(100)), Ok(OutputCap::Keep));
        assert_eq!(free.output(Some(5)), Ok(OutputCap::Keep));
        assert_eq!(free.output(None), Ok(OutputCap::Set(100)));
        let e = free.output(Some(101)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "this request asks for up to 101 output tokens; the `free` plan allows at most 100 per call"
        );
        let pro = p.get("pro").unwrap();
        assert_eq!(pro.output(Some(9000)), Ok(OutputCap::Set(5000)));
        assert_eq!(pro.output(Some(4000)), Ok(OutputCap::Keep));
        let team = p.get("team").unwrap();
        assert_eq!(team.output(None), Ok(OutputCap::Keep));
        assert_eq!(team.output(Some(u64::MAX)), Ok(OutputCap::Keep));
    }

    #[test]
    fn bad_settings_are_refused_naming_their_key() {
        let key = |src: &str| plans(src, None).unwrap_err().key;
        assert_eq!(key("[free]\nmodels = []"), "plans.free.models");
        assert_eq!(
            key("[free]\nmodels = [\"gpt-4o\", \"gpt-[\"]"),
            "plans.free.models[1]"
        );
        assert_eq!(
            key("[free]\ndeny_models = [\" \"]"),
            "plans.free.deny_models[0]"
        );
        assert_eq!(
            key("[free]\nrequests_per_minute = 0"),
            "plans.free.requests_per_minute"
        );
        assert_eq!(
            key("[free]\nmax_concurrent = 0"),
            "plans.free.max_concurrent"
        );
        assert_eq!(
            key("[free]\ndaily_cost_usd = -1.0"),
            "plans.free.daily_cost_usd"
        );
        assert_eq!(
            key("[free]\nmax_output_tokens = 0"),
            "plans.free.max_output_tokens"
        );
        assert_eq!(
            key("[free]\nclamp_max_output_tokens = true"),
            "plans.free.clamp_max_output_tokens"
        );
        assert_eq!(
            key("[free]\ndaily_tokens = 18446744073709551615"),
            "plans.free.daily_tokens"
        );
        assert_eq!(key("[\"free tier\"]\ndaily_tokens = 1"), "plans.free tier");
        let unknown: Result<BTreeMap<String, PlanConfig>, _> =
            toml::from_str("[free]\ndaily_tokenz = 1");
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn a_model_in_a_refusal_is_cut_and_has_no_control_characters() {
        let p = plans(TIERS, None).unwrap();
        let long = format!("gpt-4o\n{}", "x".repeat(500));
        let e = p
            .get("free")
            .unwrap()
            .check_model(Some(&long), false, true)
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'));
        assert!(e.len() < 200, "{e}");
    }
}
