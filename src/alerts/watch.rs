//! The watcher: the task that evaluates `[[alerts]]` rules, off the request path.
//!
//! ```text
//! writer thread ── rows_written ──▶ Tap (users touched, 5 s buckets of calls/failures/refusals)
//!                                     │ wake (at most every PASS_EVERY, and every second anyway)
//!                                     ▼
//! Watcher pass: rules from the configuration in force (hot reload applies at the next pass)
//!   user_limit   → the touched users' recorded totals (one store read) against their limits
//!   spend        → every user's spend today / this month (same read)
//!   upstream_errors, refusals → the Tap's buckets over `minutes`
//!   store_behind → the writer's queue depth and the database's reachability
//!   ──▶ record_alert (the table's unique key: once per rule, subject, period, level)
//!         └─ new row → webhooks (deliver::Sender), metric, log line
//! ```
//!
//! Users' totals come from the store's rollups, not from this gateway's memory, so with several
//! gateways on one PostgreSQL database each sees every gateway's usage, and the first to insert
//! an alert is the only one to deliver it. Rates and the store's backlog are this gateway's own
//! (the alert's subject is the gateway's name). A threshold passed while an alert of the same
//! rule, subject and period is recorded does not fire again; of several thresholds passed at
//! once only the highest fires. Rates and the backlog fire once per episode: the condition must
//! clear before it can fire again (and not within the same minute).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::deliver::{AlertBody, Sender, Tracker};
use crate::config::Config;
use crate::config::alerts::{AlertRule, Span, When};
use crate::metrics::Metrics;
use crate::quota::Ledger;
use crate::reload::Reloader;
use crate::store::alerts::{AlertTotals, Delivery, NewAlert};
use crate::store::{RowObserver, Store, UsageRow};
use crate::usage::Outcome;

/// Passes are at least this far apart, however often rows arrive.
const PASS_EVERY: Duration = Duration::from_millis(250);
/// A pass happens at least this often (rates and the store's backlog change without rows).
const TICK: Duration = Duration::from_secs(1);
/// Users remembered between passes; past it, new users wait for their next call.
const MAX_TOUCHED: usize = 50_000;
/// Width of a rate bucket.
const BUCKET_SECS: i64 = 5;
/// Buckets kept: the longest window a rule may take (60 minutes).
const MAX_BUCKETS: usize = (3_600 / BUCKET_SECS) as usize;
/// Keys remembered as recorded; past it the memory starts over (the table still dedupes).
const MAX_FIRED: usize = 100_000;
/// Alerts the store could not record, kept to record later.
const MAX_UNRECORDED: usize = 256;

/// Sees every written row (on the writer's thread): which users to look at, and the counts the
/// rate rules read. Cheap: one short lock per batch.
#[derive(Debug, Default)]
pub struct Tap {
    inner: Mutex<TapInner>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct TapInner {
    touched: HashSet<Arc<str>>,
    /// Rows seen since the last pass.
    rows: u64,
    buckets: VecDeque<Bucket>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Unix seconds at the bucket's start.
    start: i64,
    calls: u64,
    forwarded: u64,
    upstream_failed: u64,
    refused: u64,
}

/// The calls seen in a window, by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    calls: u64,
    forwarded: u64,
    upstream_failed: u64,
    refused: u64,
}

/// Whether the upstream failed the call: no answer, a timeout, a 5xx or 429, or a stream cut
/// mid-answer. (A 4xx other than 429 is the caller's request, not the upstream's health.)
fn upstream_failed(row: &UsageRow) -> bool {
    match row.outcome {
        Outcome::UpstreamUnreachable
        | Outcome::UpstreamTimeout
        | Outcome::IdleTimeout
        | Outcome::UpstreamRejectedKey => true,
        Outcome::UpstreamError => row.status >= 500 || row.status == 429 || row.status < 400,
        _ => false,
    }
}

fn refused(row: &UsageRow) -> bool {
    row.outcome.as_str().starts_with("refused_")
}

impl RowObserver for Tap {
    fn rows_written(&self, rows: &[UsageRow]) {
        let now = jiff::Timestamp::now().as_second();
        let start = now - now.rem_euclid(BUCKET_SECS);
        {
            let mut t = self.inner.lock();
            t.rows += rows.len() as u64;
            if t.buckets.back().is_none_or(|b| b.start != start) {
                t.buckets.push_back(Bucket {
                    start,
                    ..Bucket::default()
                });
                while t.buckets.len() > MAX_BUCKETS {
                    t.buckets.pop_front();
                }
            }
            for row in rows {
                if let Some(b) = t.buckets.back_mut() {
                    b.calls += 1;
                    if refused(row) {
                        b.refused += 1;
                    } else {
                        b.forwarded += 1;
                        b.upstream_failed += u64::from(upstream_failed(row));
                    }
                }
                if t.touched.len() < MAX_TOUCHED && !t.touched.contains(&row.user_id) {
                    t.touched.insert(Arc::clone(&row.user_id));
                }
            }
        }
        self.wake.notify_one();
    }
}

impl Tap {
    /// Take the users touched since the last pass and the rows seen.
    fn take(&self) -> (Vec<Arc<str>>, u64) {
        let mut t = self.inner.lock();
        let users = t.touched.drain().collect();
        (users, std::mem::take(&mut t.rows))
    }

    /// Put back users whose pass failed (the store could not be read).
    fn put_back(&self, users: Vec<Arc<str>>) {
        let mut t = self.inner.lock();
        for u in users {
            if t.touched.len() >= MAX_TOUCHED {
                break;
            }
            t.touched.insert(u);
        }
    }

    /// The calls seen in the last `minutes` (whole buckets, the current one included).
    fn counts(&self, minutes: u32, now_s: i64) -> Counts {
        let since = now_s - i64::from(minutes) * 60;
        let t = self.inner.lock();
        let mut c = Counts::default();
        for b in t
            .buckets
            .iter()
            .rev()
            .take_while(|b| b.start + BUCKET_SECS > since)
        {
            c.calls += b.calls;
            c.forwarded += b.forwarded;
            c.upstream_failed += b.upstream_failed;
            c.refused += b.refused;
        }
        c
    }
}

/// An ongoing condition of a rate or backlog rule.
#[derive(Clone, Debug)]
struct Episode {
    since: jiff::Timestamp,
    /// When it began, monotonic (for `seconds`).
    began: Instant,
    fired: bool,
}

/// Evaluates the rules; one per gateway.
pub struct Watcher {
    pub(super) store: Arc<dyn Store>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) reloader: Reloader,
    pub(super) metrics: Arc<Metrics>,
    pub(super) sender: Sender,
    pub(super) tap: Arc<Tap>,
    /// This gateway's name: the subject of rate and backlog alerts.
    pub(super) gateway: String,
    /// Keys recorded (or found recorded) in the current day, so that a user past 80 % all day
    /// costs no insert per pass. Cleared when the day changes.
    fired: HashSet<String>,
    fired_day: String,
    episodes: std::collections::HashMap<String, Episode>,
    unrecorded: Vec<(NewAlert, Option<Arc<Tracker>>)>,
}

/// An alert about to fire: what to record and whom to send it to.
struct Firing<'a> {
    rule: &'a AlertRule,
    subject: String,
    period: String,
    level: String,
    message: String,
    details: serde_json::Value,
}

impl Watcher {
    pub(super) fn new(
        store: Arc<dyn Store>,
        ledger: Arc<Ledger>,
        reloader: Reloader,
        metrics: Arc<Metrics>,
        sender: Sender,
        tap: Arc<Tap>,
        gateway: String,
    ) -> Watcher {
        Watcher {
            store,
            ledger,
            reloader,
            metrics,
            sender,
            tap,
            gateway,
            fired: HashSet::new(),
            fired_day: String::new(),
            episodes: std::collections::HashMap::new(),
            unrecorded: Vec::new(),
        }
    }

    /// Run passes until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let tap = Arc::clone(&self.tap);
        loop {
            tokio::select! {
                () = tap.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.pass().await;
            tokio::time::sleep(PASS_EVERY).await;
        }
    }

    /// One evaluation of every rule.
    pub async fn pass(&mut self) {
        let config = self.reloader.config();
        let (users, rows) = self.tap.take();
        if config.raw.alerts.is_empty() {
            self.episodes.clear();
            return;
        }
        self.record_waiting().await;
        let (today, month_start) = self.ledger.seed_days();
        if self.fired_day != today || self.fired.len() > MAX_FIRED {
            self.fired.clear();
            self.fired_day.clone_from(&today);
        }
        let needs_totals = config.raw.alerts.iter().any(|r| match r.when() {
            When::UserLimit { .. } => !users.is_empty(),
            When::Spend { .. } => rows > 0,
            _ => false,
        });
        if needs_totals {
            let user_rules = config
                .raw
                .alerts
                .iter()
                .any(|r| matches!(r.when(), When::UserLimit { .. }));
            let ids = if user_rules {
                users.iter().map(|u| u.to_string()).collect()
            } else {
                Vec::new()
            };
            match self.store.alert_totals(ids, &today, &month_start).await {
                Ok(totals) => {
                    self.limits_and_spend(&config, &totals, &today, &month_start)
                        .await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "alerts: usage totals could not be read; next pass");
                    self.tap.put_back(users);
                }
            }
        }
        self.episodes_pass(&config).await;
    }

    async fn limits_and_spend(
        &mut self,
        config: &Config,
        totals: &AlertTotals,
        today: &str,
        month_start: &str,
    ) {
        let month = month_start.get(..7).unwrap_or(month_start).to_string();
        let mut firings = Vec::new();
        for rule in &config.raw.alerts {
            match rule.when() {
                When::UserLimit { percent, windows } => {
                    for user in &totals.users {
                        let limits = self.ledger.status(&user.user_id).limits;
                        for span in &windows {
                            let (period, tokens, cost, token_limit, cost_limit) = match span {
                                Span::Day => (
                                    today,
                                    user.day_tokens,
                                    user.day_cost_nano_usd,
                                    limits.daily_tokens,
                                    limits.daily_cost_nano_usd,
                                ),
                                Span::Month => (
                                    month.as_str(),
                                    user.month_tokens,
                                    user.month_cost_nano_usd,
                                    limits.monthly_tokens,
                                    limits.monthly_cost_nano_usd,
                                ),
                            };
                            let measures = [
                                ("tokens", tokens, Some(token_limit)),
                                ("budget", cost, cost_limit),
                            ];
                            for (measure, used, limit) in measures {
                                let Some(limit) = limit.filter(|l| *l > 0) else {
                                    continue;
                                };
                                let Some(p) = highest_passed(&percent, used, limit) else {
                                    continue;
                                };
                                firings.push(user_firing(
                                    rule,
                                    &user.user_id,
                                    *span,
                                    period,
                                    measure,
                                    p,
                                    used,
                                    limit,
                                ));
                            }
                        }
                    }
                }
                When::Spend { window, usd } => {
                    let (period, spent) = match window {
                        Span::Day => (today, totals.day_cost_nano_usd),
                        Span::Month => (month.as_str(), totals.month_cost_nano_usd),
                    };
                    let limit = crate::config::usd_to_nano_usd(usd).unwrap_or(u64::MAX);
                    if u64::try_from(spent).unwrap_or(0) >= limit {
                        let when = match window {
                            Span::Day => "today",
                            Span::Month => "this month",
                        };
                        firings.push(Firing {
                            rule,
                            subject: "gateway".into(),
                            period: period.to_string(),
                            level: format!("{} spend ${usd:.2}", window.as_str()),
                            message: format!(
                                "Spend {when} passed ${usd:.2}: ${:.2} over every user.",
                                usd_of(spent)
                            ),
                            details: serde_json::json!({
                                "window": window.as_str(),
                                "spent_usd": usd_of(spent),
                                "threshold_usd": usd,
                            }),
                        });
                    }
                }
                _ => {}
            }
        }
        for firing in firings {
            self.fire(config, firing).await;
        }
    }

    async fn episodes_pass(&mut self, config: &Config) {
        let now = jiff::Timestamp::now();
        let mut firings = Vec::new();
        let mut live = HashSet::new();
        for rule in &config.raw.alerts {
            let condition = match rule.when() {
                When::UpstreamErrors {
                    percent,
                    minutes,
                    min_calls,
                } => {
                    let c = self.tap.counts(minutes, now.as_second());
                    rate(c.upstream_failed, c.forwarded, percent, min_calls).map(|share| {
                        (
                            format!(
                                "{} of {} calls forwarded in the last {minutes} min failed upstream ({share:.0}%, threshold {percent}%).",
                                c.upstream_failed, c.forwarded
                            ),
                            serde_json::json!({
                                "failed": c.upstream_failed,
                                "forwarded": c.forwarded,
                                "percent": share,
                                "threshold_percent": percent,
                                "minutes": minutes,
                            }),
                            Duration::ZERO,
                            format!("{percent}% of calls over {minutes} min"),
                        )
                    })
                }
                When::Refusals {
                    percent,
                    minutes,
                    min_calls,
                } => {
                    let c = self.tap.counts(minutes, now.as_second());
                    rate(c.refused, c.calls, percent, min_calls).map(|share| {
                        (
                            format!(
                                "{} of {} calls in the last {minutes} min were refused before forwarding ({share:.0}%, threshold {percent}%).",
                                c.refused, c.calls
                            ),
                            serde_json::json!({
                                "refused": c.refused,
                                "calls": c.calls,
                                "percent": share,
                                "threshold_percent": percent,
                                "minutes": minutes,
                            }),
                            Duration::ZERO,
                            format!("{percent}% of calls over {minutes} min"),
                        )
                    })
                }
                When::StoreBehind { rows, seconds } => {
                    let stats = self.store.writer_stats();
                    let depth = stats.queue_depth as u64;
                    (stats.unavailable || depth >= rows).then(|| {
                        let message = if stats.unavailable {
                            format!(
                                "The database has been unreachable for {seconds} s or more; {depth} rows wait in the queue and the call journal."
                            )
                        } else {
                            format!(
                                "{depth} rows have waited for the store's writer for {seconds} s or more (threshold {rows})."
                            )
                        };
                        (
                            message,
                            serde_json::json!({
                                "queue_rows": depth,
                                "unavailable": stats.unavailable,
                                "threshold_rows": rows,
                                "seconds": seconds,
                            }),
                            Duration::from_secs(seconds),
                            format!("{rows} rows or unreachable for {seconds} s"),
                        )
                    })
                }
                _ => continue,
            };
            let name = rule.name().to_string();
            let Some((message, details, hold, level)) = condition else {
                self.episodes.remove(&name);
                continue;
            };
            live.insert(name.clone());
            let episode = self.episodes.entry(name).or_insert_with(|| Episode {
                since: now,
                began: Instant::now(),
                fired: false,
            });
            if episode.fired || episode.began.elapsed() < hold {
                continue;
            }
            episode.fired = true;
            let period = episode.since.strftime("%Y-%m-%dT%H:%MZ").to_string();
            firings.push(Firing {
                rule,
                subject: self.gateway.clone(),
                period,
                level,
                message,
                details,
            });
        }
        self.episodes.retain(|name, _| live.contains(name));
        for firing in firings {
            self.fire(config, firing).await;
        }
    }

    /// Record the alert (unless its key is there) and send it. An episode alert the store
    /// cannot record (the database away is one) is sent anyway and recorded later.
    async fn fire(&mut self, config: &Config, f: Firing<'_>) {
        let key = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            f.rule.name(),
            f.subject,
            f.period,
            f.level
        );
        if self.fired.contains(&key) {
            return;
        }
        let kind = f.rule.kind.as_str();
        let has_hooks = config.raw.webhooks.iter().any(|w| f.rule.sends_to(&w.name));
        let now = jiff::Timestamp::now();
        let alert = NewAlert {
            ts_ms: now.as_millisecond(),
            rule: f.rule.name().to_string(),
            kind,
            subject: f.subject,
            period: f.period,
            level: f.level,
            message: f.message,
            details: f.details,
            delivery: if has_hooks {
                Delivery::Pending
            } else {
                Delivery::None
            },
        };
        let episode = matches!(kind, "upstream_errors" | "refusals" | "store_behind");
        let id = match self.store.record_alert(alert.clone()).await {
            Ok(Some(id)) => Some(id),
            Ok(None) => {
                // Recorded before (a restart, or another gateway): it has been sent.
                self.fired.insert(key);
                return;
            }
            Err(e) if episode => {
                tracing::warn!(error = %e, "alerts: an alert could not be recorded; sent now, recorded later");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "alerts: an alert could not be recorded; next pass");
                return;
            }
        };
        self.fired.insert(key);
        self.metrics.alert_fired(kind);
        tracing::warn!(
            rule = %alert.rule,
            kind,
            subject = %alert.subject,
            level = %alert.level,
            "alert: {}",
            alert.message
        );
        let body = AlertBody {
            id,
            rule: alert.rule.clone(),
            kind,
            subject: alert.subject.clone(),
            period: alert.period.clone(),
            level: alert.level.clone(),
            message: alert.message.clone(),
            details: alert.details.clone(),
            gateway: self.gateway.clone(),
            fired_at: jiff::Timestamp::from_second(now.as_second())
                .unwrap_or(now)
                .to_string(),
        };
        let tracker = self.sender.send(config, f.rule, &body);
        if id.is_none() && self.unrecorded.len() < MAX_UNRECORDED {
            self.unrecorded.push((alert, tracker));
        }
    }

    /// Record the alerts sent while the store could not take them.
    async fn record_waiting(&mut self) {
        let mut waiting = std::mem::take(&mut self.unrecorded).into_iter();
        while let Some((mut alert, tracker)) = waiting.next() {
            if let Some((delivery, _)) = tracker.as_ref().and_then(|t| t.outcome()) {
                alert.delivery = delivery;
            }
            match self.store.record_alert(alert.clone()).await {
                Ok(Some(id)) => {
                    // Deliveries that ended before the row existed: write their outcome now;
                    // those still going write it themselves.
                    if let Some((delivery, attempts)) = tracker.and_then(|t| t.recorded(id)) {
                        let now = jiff::Timestamp::now().as_millisecond();
                        if let Err(e) = self
                            .store
                            .alert_delivered(id, delivery, attempts, now)
                            .await
                        {
                            tracing::debug!(error = %e, "alerts: a delivery state could not be stored");
                        }
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    self.unrecorded.push((alert, tracker));
                    self.unrecorded.extend(waiting);
                    return;
                }
            }
        }
    }
}

/// The highest of `percent` that `used` has reached of `limit`.
fn highest_passed(percent: &[f64], used: i64, limit: u64) -> Option<f64> {
    let used = used.max(0) as f64;
    let limit = limit as f64;
    percent
        .iter()
        .copied()
        .filter(|p| used * 100.0 >= limit * p)
        .fold(None, |best: Option<f64>, p| {
            Some(best.map_or(p, |b| b.max(p)))
        })
}

/// `part` as a percentage of `whole`, when it reaches `percent` over at least `min_calls`.
fn rate(part: u64, whole: u64, percent: f64, min_calls: u32) -> Option<f64> {
    if whole < u64::from(min_calls) || whole == 0 {
        return None;
    }
    let share = part as f64 * 100.0 / whole as f64;
    (share >= percent).then_some(share)
}

fn usd_of(nano: i64) -> f64 {
    nano as f64 / 1e9
}

#[allow(clippy::too_many_arguments, reason = "one alert's figures")]
fn user_firing<'a>(
    rule: &'a AlertRule,
    user: &str,
    span: Span,
    period: &str,
    measure: &str,
    percent: f64,
    used: i64,
    limit: u64,
) -> Firing<'a> {
    let window = match span {
        Span::Day => "daily",
        Span::Month => "monthly",
    };
    let (what, figures, details) = if measure == "tokens" {
        (
            "token limit",
            format!("{used} of {limit} tokens"),
            serde_json::json!({
                "window": span.as_str(), "measure": "tokens",
                "used_tokens": used, "limit_tokens": limit, "percent": percent,
            }),
        )
    } else {
        let limit_nano = i64::try_from(limit).unwrap_or(i64::MAX);
        (
            "cost budget",
            format!("${:.4} of ${:.4}", usd_of(used), usd_of(limit_nano)),
            serde_json::json!({
                "window": span.as_str(), "measure": "budget",
                "used_usd": usd_of(used), "limit_usd": usd_of(limit_nano), "percent": percent,
            }),
        )
    };
    Firing {
        rule,
        subject: user.to_string(),
        period: period.to_string(),
        level: format!("{} {measure} {percent}%", span.as_str()),
        message: format!("User {user} passed {percent}% of their {window} {what}: {figures}."),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_highest_threshold_passed_fires() {
        assert_eq!(highest_passed(&[80.0, 100.0], 79, 100), None);
        assert_eq!(highest_passed(&[80.0, 100.0], 80, 100), Some(80.0));
        assert_eq!(highest_passed(&[100.0, 80.0], 150, 100), Some(100.0));
        assert_eq!(highest_passed(&[50.0], -5, 100), None);
    }

    #[test]
    fn a_rate_needs_enough_calls() {
        assert_eq!(rate(5, 10, 20.0, 20), None);
        assert_eq!(rate(5, 20, 20.0, 20), Some(25.0));
        assert_eq!(rate(3, 20, 20.0, 20), None);
        assert_eq!(rate(0, 0, 20.0, 1), None);
    }
}
