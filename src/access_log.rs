//! The access log: one line per call, written from the call's row once the store's writer is
//! done with its batch — on the writer's thread, never on the request path. A row the disk kept
//! refusing (`tollgate_store_rows_failed_total`) is still logged: the line is then the only
//! record of the call.
//!
//! A thread that serves calls writes no log line for a call that goes well: the line is
//! formatted here, from the [`UsageRow`] the writer hands its [`RowObserver`]s, and queued to
//! the log thread of [`telemetry`](crate::telemetry). It carries what the row does (request id,
//! user, provider, model, endpoint, status, outcome, tokens, cost, how the usage was known,
//! latencies); it is the `tollgate::access` target at `info`, so `log.level = "warn"` or
//! `"info,tollgate::access=off"` turns it off while keeping the rest.
//!
//! Warnings that every call could repeat are throttled here too ([`Throttle`]): a model without
//! a price, or whose cost reached the per-call ceiling, is named once per model every
//! [`REPEAT_WARNING_INTERVAL`]; `tollgate_unpriced_calls_total` (in `metrics`) counts every
//! such call.

use std::time::Duration;

use crate::store::{RowObserver, UsageRow};
use crate::telemetry::Throttle;
use crate::usage::MAX_COST_NANO_USD_PER_CALL;

/// How often a warning about the same model is repeated at most.
pub const REPEAT_WARNING_INTERVAL: Duration = Duration::from_secs(600);

/// The target of the per-call lines.
pub const TARGET: &str = "tollgate::access";

/// Writes the per-call lines and the throttled per-model warnings.
#[derive(Debug)]
pub struct AccessLog {
    unpriced: Throttle,
    at_ceiling: Throttle,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog::new()
    }
}

impl AccessLog {
    pub fn new() -> AccessLog {
        AccessLog {
            unpriced: Throttle::new(REPEAT_WARNING_INTERVAL),
            at_ceiling: Throttle::new(REPEAT_WARNING_INTERVAL),
        }
    }

    fn warn_about_price(&self, row: &UsageRow) {
        let model = row.model.as_deref().unwrap_or("-");
        match row.cost_nano_usd {
            None if row.usage.total() > 0 => {
                if let Some(held_back) = self.unpriced.admit(model) {
                    tracing::warn!(
                        provider = &*row.provider,
                        model,
                        request_id = row.request_id.as_str(),
                        calls_not_logged = held_back,
                        "no price for this model: cost recorded as NULL (said once per model \
                         every 10 minutes; tollgate_unpriced_calls_total counts every call)"
                    );
                }
            }
            Some(c) if c >= MAX_COST_NANO_USD_PER_CALL => {
                if let Some(held_back) = self.at_ceiling.admit(model) {
                    tracing::warn!(
                        provider = &*row.provider,
                        model,
                        request_id = row.request_id.as_str(),
                        max_cost_nano_usd = MAX_COST_NANO_USD_PER_CALL,
                        calls_not_logged = held_back,
                        "the call's cost reached the ceiling of one call: check this model's \
                         [pricing]"
                    );
                }
            }
            _ => {}
        }
    }
}

impl RowObserver for AccessLog {
    fn rows_written(&self, rows: &[UsageRow]) {
        let lines = tracing::enabled!(target: TARGET, tracing::Level::INFO);
        for row in rows {
            if lines {
                tracing::info!(
                    target: TARGET,
                    request_id = row.request_id.as_str(),
                    user = &*row.user_id,
                    provider = &*row.provider,
                    model = row.model.as_deref().unwrap_or("-"),
                    endpoint = row.endpoint,
                    streamed = row.streamed,
                    status = row.status,
                    outcome = row.outcome.as_str(),
                    input_tokens = row.usage.input_tokens,
                    cached_input_tokens = row.usage.cached_input_tokens,
                    output_tokens = row.usage.output_tokens,
                    reasoning_tokens = row.usage.reasoning_tokens,
                    cost_nano_usd = row.cost_nano_usd,
                    usage_source = row.usage_source.as_str(),
                    latency_ms = row.latency_ms,
                    ttfb_ms = row.ttfb_ms,
                    "call"
                );
            }
            self.warn_about_price(row);
        }
    }
}
