//! `[[alerts]]` and `[[webhooks]]` as written in gateway.toml, and their validation;
//! `Config::from_raw` reads the webhooks' secrets from the environment. The watcher and the
//! webhook sender that give the rules their meaning are `crate::alerts`.

use serde::{Deserialize, Serialize};

/// One `[[alerts]]` rule as written: `kind` says what it watches, and which of the other keys
/// apply (a key another kind uses is refused, so a typo never silently does nothing).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The rule's name: in the alert, the dashboard and the webhook body. Default: its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `user_limit`, `spend`, `upstream_errors`, `refusals` or `store_behind`.
    pub kind: Kind,
    /// `user_limit`: shares of the limit, e.g. `[80, 100]` (default); `upstream_errors` and
    /// `refusals`: the share of calls, e.g. `20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
    /// `user_limit`: `["day", "month"]` (default) or one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<Span>>,
    /// `spend`: `"day"` or `"month"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Span>,
    /// `spend`: the amount, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// `upstream_errors`, `refusals`: the window the share is taken over. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u32>,
    /// `upstream_errors`, `refusals`: fewer calls in the window never fire. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// `store_behind`: rows waiting for the writer. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// `store_behind`: how long the queue stays that long (or the database away). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// Names of the `[[webhooks]]` to deliver to; default: every webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<String>>,
}

/// `[[alerts]] kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    UserLimit,
    Spend,
    UpstreamErrors,
    Refusals,
    StoreBehind,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::UserLimit => "user_limit",
            Kind::Spend => "spend",
            Kind::UpstreamErrors => "upstream_errors",
            Kind::Refusals => "refusals",
            Kind::StoreBehind => "store_behind",
        }
    }
}

/// `percent`: one share, or a list of them.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Percent {
    One(f64),
    Many(Vec<f64>),
}

impl AlertRule {
    /// The name alerts carry: `name`, or the kind.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// Whether `webhook` delivers this rule's alerts.
    pub fn sends_to(&self, webhook: &str) -> bool {
        self.webhooks
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == webhook))
    }

    /// What the rule watches, with every default filled in. Call it on a validated rule; an
    /// unvalidated one gets defaults where its values are missing.
    pub fn when(&self) -> When {
        let percents = || match &self.percent {
            Some(Percent::One(p)) => vec![*p],
            Some(Percent::Many(p)) => p.clone(),
            None => vec![80.0, 100.0],
        };
        let share = || match &self.percent {
            Some(Percent::One(p)) => *p,
            Some(Percent::Many(p)) => p.first().copied().unwrap_or(100.0),
            None => 100.0,
        };
        match self.kind {
            Kind::UserLimit => When::UserLimit {
                percent: percents(),
                windows: self
                    .windows
                    .clone()
                    .unwrap_or_else(|| vec![Span::Day, Span::Month]),
            },
            Kind::Spend => When::Spend {
                window: self.window.unwrap_or(Span::Day),
                usd: self.usd.unwrap_or(f64::INFINITY),
            },
            Kind::UpstreamErrors => When::UpstreamErrors {
                percent: share(),
                minutes: self.minutes.unwrap_or(5),
                min_calls: self.min_calls.unwrap_or(20),
            },
            Kind::Refusals => When::Refusals {
                percent: share(),
                minutes: self.minutes.unwrap_or(5),
                min_calls: self.min_calls.unwrap_or(20),
            },
            Kind::StoreBehind => When::StoreBehind {
                rows: self.rows.unwrap_or(10_000),
                seconds: self.seconds.unwrap_or(30),
            },
        }
    }
}

/// What a rule watches, as the watcher uses it.
#[derive(Clone, Debug, PartialEq)]
pub enum When {
    /// A user passing a share of a daily or monthly token limit or cost budget.
    UserLimit {
        percent: Vec<f64>,
        windows: Vec<Span>,
    },
    /// The whole gateway's spend (every user) for the day or the month passing an amount.
    Spend { window: Span, usd: f64 },
    /// Calls the upstream failed (5xx, 429, unreachable, timed out) as a share of the calls
    /// forwarded over the last `minutes`.
    UpstreamErrors {
        percent: f64,
        minutes: u32,
        min_calls: u32,
    },
    /// Calls refused before forwarding as a share of all calls over the last `minutes`.
    Refusals {
        percent: f64,
        minutes: u32,
        min_calls: u32,
    },
    /// Rows waiting for the store's writer at or above `rows`, or the database unreachable,
    /// for `seconds`.
    StoreBehind { rows: u64, seconds: u64 },
}

/// A calendar window in `limits.timezone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    Day,
    Month,
}

impl Span {
    pub fn as_str(self) -> &'static str {
        match self {
            Span::Day => "day",
            Span::Month => "month",
        }
    }
}

/// One `[[webhooks]]` receiver.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// How rules name it. Default: `"default"`.
    #[serde(default = "default_webhook_name")]
    pub name: String,
    /// Where alerts are POSTed: `https://…`, or `http://…`. Shown everywhere (check-config, the
    /// admin API, reload logs) as its scheme and host only: a Slack-style URL is itself a
    /// credential. Give `url_env` instead to keep it out of the file too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Environment variable holding the URL, in place of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// Environment variable holding the secret of the `X-Tollgate-Signature` header (HMAC-SHA256
    /// over the body). Without it the body is sent unsigned.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `"json"` (Tollgate's body) or `"slack"` (`{"text": …}`, for Slack-compatible incoming
    /// webhooks).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Time allowed for one attempt, connection included (ms).
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_webhook_name() -> String {
    "default".into()
}
fn default_webhook_timeout_ms() -> u64 {
    5_000
}

/// A webhook's body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// Why `[[alerts]]` or `[[webhooks]]` cannot be used: the key at fault and the problem.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleError {
    pub key: String,
    pub message: String,
}

fn err(key: String, message: impl Into<String>) -> RuleError {
    RuleError {
        key,
        message: message.into(),
    }
}

/// Check that `url` is an http(s) URL with a host; the error names `key` and never echoes the
/// URL (it may be a credential).
pub fn check_url(key: &str, url: &str) -> Result<(), RuleError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| err(key.to_string(), "is not a URL"))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => {
            return Err(err(key.to_string(), "must start with https:// or http://"));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(err(key.to_string(), "has no host"));
    }
    Ok(())
}

/// `url` as it may be shown: scheme and host, the rest hidden (`https://hooks.slack.com/…`).
pub fn shown_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                let host = authority.as_str().rsplit('@').next().unwrap_or_default();
                format!("{scheme}://{host}/…")
            }
            _ => "…".into(),
        },
        Err(_) => "…".into(),
    }
}

/// Check every rule and webhook: thresholds in range, names unique, rules naming webhooks that
/// exist, URLs that are http(s) with a host.
pub fn validate(rules: &[AlertRule], webhooks: &[WebhookConfig]) -> Result<(), RuleError> {
    let mut names = std::collections::HashSet::new();
    for (i, w) in webhooks.iter().enumerate() {
        let key = |k: &str| format!("webhooks[{i}].{k}");
        if w.name.trim().is_empty() {
            return Err(err(key("name"), "must not be empty"));
        }
        if !names.insert(w.name.as_str()) {
            return Err(err(key("name"), format!("\"{}\" is used twice", w.name)));
        }
        match (&w.url, &w.url_env) {
            (Some(_), Some(_)) => {
                return Err(err(key("url_env"), "give url or url_env, not both"));
            }
            (None, None) => return Err(err(key("url"), "must be set (or url_env)")),
            (Some(url), None) => check_url(&key("url"), url)?,
            (None, Some(_)) => {}
        }
        if !(100..=60_000).contains(&w.timeout_ms) {
            return Err(err(key("timeout_ms"), "must be between 100 and 60000"));
        }
    }
    let mut rule_names = std::collections::HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let key = |k: &str| format!("alerts[{i}].{k}");
        if rule.name().trim().is_empty() || rule.name().len() > 100 {
            return Err(err(key("name"), "must be 1 to 100 characters"));
        }
        if !rule_names.insert(rule.name()) {
            return Err(err(
                key("name"),
                format!(
                    "\"{}\" names two rules (give each rule of a kind its own name)",
                    rule.name()
                ),
            ));
        }
        if let Some(hooks) = &rule.webhooks {
            for h in hooks {
                if !webhooks.iter().any(|w| &w.name == h) {
                    return Err(err(
                        key("webhooks"),
                        format!("no [[webhooks]] is named \"{h}\""),
                    ));
                }
            }
        }
        let kind = rule.kind;
        let applies: &[&str] = match kind {
            Kind::UserLimit => &["percent", "windows"],
            Kind::Spend => &["window", "usd"],
            Kind::UpstreamErrors | Kind::Refusals => &["percent", "minutes", "min_calls"],
            Kind::StoreBehind => &["rows", "seconds"],
        };
        let given = [
            ("percent", rule.percent.is_some()),
            ("windows", rule.windows.is_some()),
            ("window", rule.window.is_some()),
            ("usd", rule.usd.is_some()),
            ("minutes", rule.minutes.is_some()),
            ("min_calls", rule.min_calls.is_some()),
            ("rows", rule.rows.is_some()),
            ("seconds", rule.seconds.is_some()),
        ];
        for (k, set) in given {
            if set && !applies.contains(&k) {
                return Err(err(
                    key(k),
                    format!("does not apply to kind = \"{}\"", kind.as_str()),
                ));
            }
        }
        match kind {
            Kind::UserLimit => {
                if let Some(Percent::One(_)) = rule.percent {
                    return Err(err(key("percent"), "must be a list, e.g. [80, 100]"));
                }
            }
            Kind::UpstreamErrors | Kind::Refusals => {
                if !matches!(rule.percent, Some(Percent::One(_))) {
                    return Err(err(key("percent"), "must be one share of calls, e.g. 20"));
                }
            }
            Kind::Spend => {
                if rule.window.is_none() {
                    return Err(err(key("window"), "must be \"day\" or \"month\""));
                }
                if rule.usd.is_none() {
                    return Err(err(key("usd"), "must be set (the amount, USD)"));
                }
            }
            Kind::StoreBehind => {}
        }
        match rule.when() {
            When::UserLimit { percent, windows } => {
                if percent.is_empty() || percent.iter().any(|p| !(*p >= 1.0 && *p <= 1000.0)) {
                    return Err(err(
                        key("percent"),
                        "must list shares between 1 and 1000 (percent)",
                    ));
                }
                if windows.is_empty() {
                    return Err(err(key("windows"), "must name \"day\", \"month\" or both"));
                }
            }
            When::Spend { usd, .. } => {
                if !(usd.is_finite() && usd > 0.0 && usd < 1e9) {
                    return Err(err(key("usd"), "must be a positive amount"));
                }
            }
            When::UpstreamErrors {
                percent,
                minutes,
                min_calls,
            }
            | When::Refusals {
                percent,
                minutes,
                min_calls,
            } => {
                if !(percent.is_finite() && percent > 0.0 && percent <= 100.0) {
                    return Err(err(key("percent"), "must be above 0 and at most 100"));
                }
                if !(1..=60).contains(&minutes) {
                    return Err(err(key("minutes"), "must be between 1 and 60"));
                }
                if min_calls == 0 {
                    return Err(err(key("min_calls"), "must be at least 1"));
                }
            }
            When::StoreBehind { rows, seconds } => {
                if rows == 0 {
                    return Err(err(key("rows"), "must be at least 1"));
                }
                if !(1..=86_400).contains(&seconds) {
                    return Err(err(key("seconds"), "must be between 1 and 86400"));
                }
            }
        }
    }
    Ok(())
}
