//! What the store keeps of alerts (the `alerts` table) and the totals the alert rules read.
//!
//! An alert is recorded once per rule, subject, period and level: the table's unique key is
//! what makes a rule fire once per user and window even across restarts and across several
//! gateways on one PostgreSQL database ([`Store::record_alert`](super::Store::record_alert)
//! answers `None` for a key already there, and only the gateway whose insert went in delivers
//! it). The delivery state is updated by the webhook sender as it goes.

use serde::Serialize;

/// An alert to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAlert {
    /// Unix ms UTC, when it fired.
    pub ts_ms: i64,
    /// The rule's name (`[[alerts]] name`).
    pub rule: String,
    /// The rule's kind: `user_limit`, `spend`, `upstream_errors`, `refusals`, `store_behind`.
    pub kind: &'static str,
    /// Whom it is about: a user id, or the gateway (its `store.replica_id`).
    pub subject: String,
    /// The window it fired in: a day (`2026-12-04`), a month (`2026-12`), or for a rate or the
    /// store, the minute the episode began (`2026-12-04T10:31Z`).
    pub period: String,
    /// Which threshold was passed, e.g. `day tokens 80%`.
    pub level: String,
    /// One sentence for people.
    pub message: String,
    /// The figures, as JSON (what the webhook body carries under `details`).
    pub details: serde_json::Value,
    /// `pending` when webhooks will deliver it, `none` when there is no webhook.
    pub delivery: Delivery,
}

/// Where an alert's delivery to its webhooks stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// No webhook was configured for the rule.
    None,
    /// Being delivered (or waiting for a retry).
    Pending,
    /// Every webhook answered 2xx.
    Delivered,
    /// At least one webhook never took it (retries exhausted, or the queue was full).
    Failed,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::None => "none",
            Delivery::Pending => "pending",
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Delivery {
        match s {
            "pending" => Delivery::Pending,
            "delivered" => Delivery::Delivered,
            "failed" => Delivery::Failed,
            _ => Delivery::None,
        }
    }
}

/// One `alerts` row.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub ts_ms: i64,
    pub rule: String,
    pub kind: String,
    pub subject: String,
    pub period: String,
    pub level: String,
    pub message: String,
    pub details: serde_json::Value,
    pub delivery: Delivery,
    /// Delivery attempts made, over every webhook.
    pub attempts: i64,
    /// When the last webhook took it (unix ms UTC).
    pub delivered_ms: Option<i64>,
}

/// A page of alerts, newest first, and how many fired since `since_ms` (the dashboard's badge).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertsPage {
    pub alerts: Vec<AlertRow>,
    pub recent: i64,
}

/// A user's recorded usage in the current day and month (from the rollups: every gateway's
/// rows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserTotals {
    pub user_id: String,
    pub day_tokens: i64,
    pub day_cost_nano_usd: i64,
    pub month_tokens: i64,
    pub month_cost_nano_usd: i64,
}

/// What the alert rules read from the store on a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertTotals {
    /// The users asked about who have usage in the day or the month.
    pub users: Vec<UserTotals>,
    /// The whole gateway's (every user's) spend today and this month, nano-USD.
    pub day_cost_nano_usd: i64,
    pub month_cost_nano_usd: i64,
}
