//! What an operator controls for a user — a block and per-user limit overrides — as plain values.
//!
//! The ledger applies them to admissions; the store persists them (with their audit row) and
//! hands them back at start; the admin API shows them. This module does no I/O and names no
//! database. `Serialize` is the audit trail's record of a change (`before_json`, `after_json`),
//! not the admin API's documented shape (that is the admin module's own).

use serde::Serialize;

/// A user's own limits, set by an operator. `None` = the `[limits]` default from gateway.toml.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserOverrides {
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub daily_cost_nano_usd: Option<u64>,
    pub monthly_cost_nano_usd: Option<u64>,
    pub requests_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
}

impl UserOverrides {
    /// Whether no limit is overridden.
    pub fn is_empty(&self) -> bool {
        *self == UserOverrides::default()
    }
}

/// A change to some of a user's overrides: for each field, `None` leaves it as it is,
/// `Some(None)` clears it (back to the default) and `Some(Some(v))` sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverridesPatch {
    pub daily_tokens: Option<Option<u64>>,
    pub monthly_tokens: Option<Option<u64>>,
    pub daily_cost_nano_usd: Option<Option<u64>>,
    pub monthly_cost_nano_usd: Option<Option<u64>>,
    pub requests_per_minute: Option<Option<u32>>,
    pub max_concurrent: Option<Option<u32>>,
}

impl OverridesPatch {
    /// `current` with this patch applied.
    pub fn apply(&self, current: &UserOverrides) -> UserOverrides {
        UserOverrides {
            daily_tokens: self.daily_tokens.unwrap_or(current.daily_tokens),
            monthly_tokens: self.monthly_tokens.unwrap_or(current.monthly_tokens),
            daily_cost_nano_usd: self
                .daily_cost_nano_usd
                .unwrap_or(current.daily_cost_nano_usd),
            monthly_cost_nano_usd: self
                .monthly_cost_nano_usd
                .unwrap_or(current.monthly_cost_nano_usd),
            requests_per_minute: self
                .requests_per_minute
                .unwrap_or(current.requests_per_minute),
            max_concurrent: self.max_concurrent.unwrap_or(current.max_concurrent),
        }
    }
}

/// The operator-owned part of a user. A user the operator never touched has the default (not
/// blocked, no overrides).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserControls {
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    pub overrides: UserOverrides,
}

impl UserControls {
    /// Whether these are the defaults (nothing for the quota ledger to remember).
    pub fn is_default(&self) -> bool {
        !self.blocked && self.blocked_reason.is_none() && self.overrides.is_empty()
    }
}

/// What an operator's action did to a user, for the audit trail and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<T> {
    pub before: T,
    pub after: T,
    /// The user was unknown to the store and was created (`before` is then the default).
    pub created: bool,
}

/// An overrides patch the ledger cannot use, naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct InvalidPatch {
    pub key: &'static str,
    pub message: String,
}

/// Check an overrides patch before it is stored: a rate or concurrency cap of 0 is refused (block
/// the user instead), and no value may exceed what a store keeps (`i64::MAX`).
pub fn validate_patch(patch: &OverridesPatch) -> Result<(), InvalidPatch> {
    let invalid = |key, message: &str| InvalidPatch {
        key,
        message: message.to_string(),
    };
    for (key, value) in [
        ("daily_tokens", patch.daily_tokens),
        ("monthly_tokens", patch.monthly_tokens),
        ("daily_cost_nano_usd", patch.daily_cost_nano_usd),
        ("monthly_cost_nano_usd", patch.monthly_cost_nano_usd),
    ] {
        if value.flatten().is_some_and(|v| i64::try_from(v).is_err()) {
            return Err(invalid(key, "is too large"));
        }
    }
    for (key, value) in [
        ("requests_per_minute", patch.requests_per_minute),
        ("max_concurrent", patch.max_concurrent),
    ] {
        if value.flatten() == Some(0) {
            return Err(invalid(
                key,
                "must be at least 1 (block the user to stop all of their calls; null returns to the default)",
            ));
        }
    }
    Ok(())
}

/// A user's usage summed over a window, as the ledger is seeded with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedTotals {
    /// input + output tokens, the figure limits count.
    pub tokens: i64,
    /// Priced calls only.
    pub cost_nano_usd: i64,
    pub calls: i64,
}

/// One user as the quota ledger starts with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedUser {
    pub controls: UserControls,
    /// Usage of the seed's `day`.
    pub day: SeedTotals,
    /// Usage from the seed's `month_start` on.
    pub month: SeedTotals,
}

/// What the quota ledger needs at start: every user with controls set or usage this month.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaSeed {
    /// The local day (`YYYY-MM-DD`) the `day` totals are for.
    pub day: String,
    /// The first day of the month (`YYYY-MM-01`) the `month` totals start at.
    pub month_start: String,
    pub users: std::collections::BTreeMap<String, SeedUser>,
}
