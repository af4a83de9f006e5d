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

/// The overrides as a store keeps them: six nullable integer columns, in the order
/// `daily_tokens, monthly_tokens, daily_cost_nano_usd, monthly_cost_nano_usd,
/// requests_per_minute, max_concurrent`.
pub type StoredOverrides = [Option<i64>; 6];

impl UserOverrides {
    /// Whether no limit is overridden.
    pub fn is_empty(&self) -> bool {
        *self == UserOverrides::default()
    }

    /// These overrides as a store's integers ([`StoredOverrides`]). A limit past `i64::MAX`
    /// cannot be stored: it is refused, naming it, and the caller writes nothing.
    pub fn to_stored(&self) -> Result<StoredOverrides, InvalidPatch> {
        let count = |key: &'static str, v: Option<u64>| {
            v.map(|v| {
                i64::try_from(v).map_err(|_| InvalidPatch {
                    key,
                    message: "is too large".into(),
                })
            })
            .transpose()
        };
        Ok([
            count("daily_tokens", self.daily_tokens)?,
            count("monthly_tokens", self.monthly_tokens)?,
            count("daily_cost_nano_usd", self.daily_cost_nano_usd)?,
            count("monthly_cost_nano_usd", self.monthly_cost_nano_usd)?,
            self.requests_per_minute.map(i64::from),
            self.max_concurrent.map(i64::from),
        ])
    }

    /// Overrides read back from a store's integers ([`StoredOverrides`]). Values an operator
    /// could only have put there by hand are read leniently rather than failing the read: a
    /// negative limit as 0, a rate or cap past `u32` as `u32::MAX`.
    pub fn from_stored(stored: StoredOverrides) -> UserOverrides {
        let [daily, monthly, daily_cost, monthly_cost, rpm, concurrent] = stored;
        let count = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
        let small = |v: Option<i64>| v.map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX));
        UserOverrides {
            daily_tokens: count(daily),
            monthly_tokens: count(monthly),
            daily_cost_nano_usd: count(daily_cost),
            monthly_cost_nano_usd: count(monthly_cost),
            requests_per_minute: small(rpm),
            max_concurrent: small(concurrent),
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn overrides_go_to_a_stores_integers_and_back() {
        let o = UserOverrides {
            daily_tokens: Some(5),
            monthly_tokens: None,
            daily_cost_nano_usd: Some(u64::try_from(i64::MAX).unwrap()),
            monthly_cost_nano_usd: Some(0),
            requests_per_minute: Some(u32::MAX),
            max_concurrent: None,
        };
        let stored = o.to_stored().unwrap();
        assert_eq!(
            stored,
            [
                Some(5),
                None,
                Some(i64::MAX),
                Some(0),
                Some(i64::from(u32::MAX)),
                None
            ]
        );
        assert_eq!(UserOverrides::from_stored(stored), o);
        let too_large = UserOverrides {
            monthly_tokens: Some(u64::MAX),
            ..o
        };
        assert_eq!(too_large.to_stored().unwrap_err().key, "monthly_tokens");
        // Hand-edited values read leniently.
        let lenient =
            UserOverrides::from_stored([Some(-5), None, None, None, Some(1 << 40), Some(-1)]);
        assert_eq!(lenient.daily_tokens, Some(0));
        assert_eq!(lenient.requests_per_minute, Some(u32::MAX));
        assert_eq!(lenient.max_concurrent, Some(0));
    }
}
