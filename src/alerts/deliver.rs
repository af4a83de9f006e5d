//! Webhooks: an alert POSTed to every `[[webhooks]]` its rule names, signed, retried with
//! backoff, off the request path.
//!
//! Each delivery (one alert to one webhook) is a task of its own holding a permit of a bounded
//! pool ([`MAX_WAITING`]): a receiver that is down delays only its own deliveries, and a storm
//! of alerts while it is down cannot grow memory without bound — past the bound a delivery is
//! dropped, counted (`tollgate_webhook_deliveries_total{result="dropped"}`) and the alert marked
//! `failed`. Connection errors, timeouts, 408, 429 and 5xx answers are retried after 1 s, 2 s,
//! 4 s … (capped at 5 minutes, [`ATTEMPTS`] in all, about 20 minutes); any other 4xx is final.
//! Each failed attempt is counted on the alert's row as it happens (the row stays `pending`);
//! when the last of an alert's deliveries ends, its row's `delivery` says `delivered` or
//! `failed`.
//!
//! **The body** (`format = "json"`) is the alert as the admin API lists it plus `gateway`
//! (the sending gateway's name) and `fired_at` (RFC 3339). With `secret_env`, the header
//! `X-Tollgate-Signature: sha256=<hex>` is the HMAC-SHA256 of the exact body bytes under that
//! secret (compare it in constant time; reject a `fired_at` too old to stop replays);
//! `X-Tollgate-Alert-Id` repeats the alert's id so a receiver can drop a retried duplicate.
//! `format = "slack"` sends `{"text": "…"}` for Slack-compatible incoming webhooks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::alerts::{WebhookConfig, WebhookFormat};
use crate::config::{Config, Secret};
use crate::metrics::{Metrics, WebhookResult};
use crate::store::Store;
use crate::store::alerts::Delivery;
use crate::upstream::UpstreamClient;

/// Deliveries waiting or in progress, over every webhook.
pub const MAX_WAITING: usize = 1_000;
/// Attempts per delivery before it is given up.
pub const ATTEMPTS: u32 = 12;
/// The first retry's wait; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Most of a receiver's answer read (and then dropped): its status is what counts.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// An alert as a webhook receives it.
#[derive(Clone, Debug, Serialize)]
pub struct AlertBody {
    /// The alert's id in the `alerts` table; `None` while the store could not record it.
    pub id: Option<i64>,
    pub rule: String,
    pub kind: &'static str,
    pub subject: String,
    pub period: String,
    pub level: String,
    pub message: String,
    pub details: serde_json::Value,
    /// The gateway that saw it (`store.replica_id`, or its listen address).
    pub gateway: String,
    /// When it fired, RFC 3339 UTC.
    pub fired_at: String,
}

/// Where one alert's deliveries stand, shared by its delivery tasks: the last to end writes
/// the outcome to the store.
#[derive(Debug, Default)]
pub struct Tracker {
    inner: Mutex<TrackerInner>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    /// The alert's row, once recorded.
    id: Option<i64>,
    waiting: usize,
    failed: bool,
    attempts: u32,
    /// Attempts already added to the row (each failed attempt is, as it happens).
    written: u32,
    /// Set once every delivery ended.
    outcome: Option<Delivery>,
}

impl Tracker {
    /// The outcome and attempts, once every delivery has ended.
    pub fn outcome(&self) -> Option<(Delivery, u32)> {
        let t = self.inner.lock();
        t.outcome.map(|d| (d, t.attempts))
    }

    /// The outcome if every delivery has ended, else remember `id` so that the last one to end
    /// writes it there. For an alert recorded after its deliveries began.
    pub fn recorded(&self, id: i64) -> Option<(Delivery, u32)> {
        let mut t = self.inner.lock();
        match t.outcome {
            Some(d) => Some((d, t.attempts.saturating_sub(t.written))),
            None => {
                t.id = Some(id);
                None
            }
        }
    }
}

/// Sends alerts to webhooks. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    client: UpstreamClient,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    first_backoff: Duration,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("waiting", &(MAX_WAITING - self.permits.available_permits()))
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub fn new(client: UpstreamClient, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Sender {
        Sender {
            client,
            store,
            metrics,
            permits: Arc::new(Semaphore::new(MAX_WAITING)),
            first_backoff: FIRST_BACKOFF,
        }
    }

    /// Deliver `alert` to every webhook of `config` that `rule` sends to; returns its tracker,
    /// or `None` when no webhook takes it. Never waits: each delivery is a task of its own.
    pub fn send(
        &self,
        config: &Config,
        rule: &crate::config::alerts::AlertRule,
        alert: &AlertBody,
    ) -> Option<Arc<Tracker>> {
        let targets: Vec<(WebhookConfig, Secret, Option<Secret>)> = config
            .raw
            .webhooks
            .iter()
            .zip(&config.webhook_urls)
            .zip(&config.webhook_secrets)
            .filter(|((w, _), _)| rule.sends_to(&w.name))
            .map(|((w, url), s)| (w.clone(), url.clone(), s.clone()))
            .collect();
        if targets.is_empty() {
            return None;
        }
        let tracker = Arc::new(Tracker::default());
        {
            let mut t = tracker.inner.lock();
            t.id = alert.id;
            t.waiting = targets.len();
        }
        for (hook, url, secret) in targets {
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                tracing::warn!(
                    webhook = %hook.name,
                    rule = %alert.rule,
                    waiting = MAX_WAITING,
                    "alerts: too many webhook deliveries waiting; this one is dropped"
                );
                self.metrics.webhook(WebhookResult::Dropped);
                self.ended(&tracker, false, 0);
                continue;
            };
            let body = match body(hook.format, alert) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = %e, "alerts: the webhook body could not be made");
                    self.ended(&tracker, false, 0);
                    continue;
                }
            };
            let sender = self.clone();
            let tracker = Arc::clone(&tracker);
            let id = alert.id;
            tokio::spawn(async move {
                let (ok, attempts) = sender
                    .deliver(&hook, &url, secret.as_ref(), id, body, &tracker)
                    .await;
                sender.ended(&tracker, ok, attempts);
                drop(permit);
            });
        }
        Some(tracker)
    }

    /// One delivery with its retries: whether it was taken, and the attempts made.
    async fn deliver(
        &self,
        hook: &WebhookConfig,
        url: &Secret,
        secret: Option<&Secret>,
        id: Option<i64>,
        body: Bytes,
        tracker: &Tracker,
    ) -> (bool, u32) {
        let signature = secret.map(|s| sign(s.expose().as_bytes(), &body));
        let mut backoff = self.first_backoff;
        for attempt in 1..=ATTEMPTS {
            let result = self
                .attempt(hook, url, signature.as_deref(), id, attempt, body.clone())
                .await;
            match result {
                Ok(()) => {
                    self.metrics.webhook(WebhookResult::Delivered);
                    return (true, attempt);
                }
                Err(Failure { retry, reason }) => {
                    let last = !retry || attempt == ATTEMPTS;
                    if last {
                        self.metrics.webhook(WebhookResult::Failed);
                        tracing::warn!(
                            webhook = %hook.name,
                            attempts = attempt,
                            reason = %reason,
                            "alerts: a webhook did not take an alert; given up"
                        );
                        return (false, attempt);
                    }
                    self.metrics.webhook(WebhookResult::Retry);
                    self.attempt_failed(tracker);
                    tracing::info!(
                        webhook = %hook.name,
                        attempt,
                        retry_in_ms = backoff.as_millis() as u64,
                        reason = %reason,
                        "alerts: a webhook delivery failed; trying again"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        (false, ATTEMPTS)
    }

    async fn attempt(
        &self,
        hook: &WebhookConfig,
        url: &Secret,
        signature: Option<&str>,
        id: Option<i64>,
        attempt: u32,
        body: Bytes,
    ) -> Result<(), Failure> {
        let mut request = http::Request::post(url.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("tollgate/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-tollgate-delivery-attempt", attempt);
        if let Some(signature) = signature {
            request = request.header("x-tollgate-signature", format!("sha256={signature}"));
        }
        if let Some(id) = id {
            request = request.header("x-tollgate-alert-id", id);
        }
        let request = request.body(Full::new(body)).map_err(|e| Failure {
            retry: false,
            reason: format!("the request could not be made: {e}"),
        })?;
        let timeout = Duration::from_millis(hook.timeout_ms);
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| Failure {
                retry: true,
                reason: format!("no answer: {}", crate::telemetry::error_chain(&e)),
            })?;
            let status = response.status();
            // Read a little of the answer so the connection can be reused, then drop it.
            let mut body = response.into_body();
            let mut read = 0usize;
            while read < MAX_ANSWER_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
            Ok::<_, Failure>(status)
        };
        let status = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Failure {
                retry: true,
                reason: format!("no answer within {} ms", hook.timeout_ms),
            })??;
        if status.is_success() {
            return Ok(());
        }
        let retry = status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT;
        Err(Failure {
            retry,
            reason: format!("answered {status}"),
        })
    }

    /// A failed attempt that will be retried: the row counts it now (still `pending`), so an
    /// operator sees a receiver that keeps failing before the retries run out.
    fn attempt_failed(&self, tracker: &Tracker) {
        let id = {
            let mut t = tracker.inner.lock();
            let Some(id) = t.id else { return };
            t.written += 1;
            id
        };
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let now = jiff::Timestamp::now().as_millisecond();
            if let Err(e) = store.alert_delivered(id, Delivery::Pending, 1, now).await {
                tracing::debug!(error = %e, alert = id, "alerts: an attempt could not be counted");
            }
        });
    }

    /// One delivery of the alert ended; the last one writes the outcome.
    fn ended(&self, tracker: &Arc<Tracker>, ok: bool, attempts: u32) {
        let done = {
            let mut t = tracker.inner.lock();
            t.waiting = t.waiting.saturating_sub(1);
            t.failed |= !ok;
            t.attempts += attempts;
            if t.waiting > 0 {
                return;
            }
            let outcome = if t.failed {
                Delivery::Failed
            } else {
                Delivery::Delivered
            };
            t.outcome = Some(outcome);
            t.id.map(|id| (id, outcome, t.attempts.saturating_sub(t.written)))
        };
        if let Some((id, outcome, attempts)) = done {
            let store = Arc::clone(&self.store);
            tokio::spawn(async move {
                let now = jiff::Timestamp::now().as_millisecond();
                if let Err(e) = store.alert_delivered(id, outcome, attempts, now).await {
                    tracing::warn!(error = %e, alert = id, "alerts: the delivery state could not be stored");
                }
            });
        }
    }

    /// Tests: retry sooner.
    #[doc(hidden)]
    pub fn with_first_backoff(mut self, first: Duration) -> Sender {
        self.first_backoff = first;
        self
    }
}

struct Failure {
    retry: bool,
    reason: String,
}

/// The body `format` sends for `alert`.
pub fn body(format: WebhookFormat, alert: &AlertBody) -> Result<Bytes, serde_json::Error> {
    match format {
        WebhookFormat::Json => serde_json::to_vec(alert).map(Bytes::from),
        WebhookFormat::Slack => serde_json::to_vec(&serde_json::json!({
            "text": format!(
                ":rotating_light: Tollgate alert ({rule}) on {gateway}: {message}",
                rule = alert.rule,
                gateway = alert.gateway,
                message = alert.message
            )
        }))
        .map(Bytes::from),
    }
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`: the `X-Tollgate-Signature` value after
/// `sha256=`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_slack_body_is_one_text_field() {
        let alert = AlertBody {
            id: Some(3),
            rule: "near".into(),
            kind: "user_limit",
            subject: "alice".into(),
            period: "2026-12-04".into(),
            level: "day tokens 80%".into(),
            message: "alice passed 80%".into(),
            details: serde_json::json!({}),
            gateway: "gw-1".into(),
            fired_at: "2026-12-04T10:00:00Z".into(),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&body(WebhookFormat::Slack, &alert).unwrap_or_default())
                .unwrap_or_default();
        let text = v["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("alice passed 80%") && text.contains("gw-1"),
            "{v}"
        );
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
        let v: serde_json::Value =
            serde_json::from_slice(&body(WebhookFormat::Json, &alert).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(v["id"], 3);
        assert_eq!(v["level"], "day tokens 80%");
    }
}
