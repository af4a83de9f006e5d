//! What a batch of call rows adds to the rollups and to the users table, summed in memory per
//! key, so that a backend writes one upsert per key and table whatever the batch holds. Both
//! stores use it; it decides the keys (a rollup's day in `limits.timezone`, `''` for a row
//! without a model), the backends only decide the SQL.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::calendar::DayCache;
use crate::store::UsageRow;
use crate::usage::{CallFigures, Totals};

/// `usage_daily`'s key: day, user, provider, model (`''` for none), endpoint.
pub type DetailKey<'a> = (Arc<str>, &'a str, &'a str, &'a str, &'a str);

/// The sums of one batch, per rollup table and key.
#[derive(Debug, Default)]
pub struct Rollups<'a> {
    /// `usage_daily`: one user's figures per day, provider, model and endpoint.
    pub detail: HashMap<DetailKey<'a>, Totals>,
    /// `usage_user_daily`: (day, user).
    pub user_day: HashMap<(Arc<str>, &'a str), Totals>,
    /// `usage_user_monthly`: (month's first day, user).
    pub user_month: HashMap<(String, &'a str), Totals>,
    /// `usage_model_daily`: (day, provider, model).
    pub model_day: HashMap<(Arc<str>, &'a str, &'a str), Totals>,
}

impl<'a> Rollups<'a> {
    /// Sum `batch` per key of every rollup table; `days` turns a row's `ts` into its day.
    pub fn of(days: &mut DayCache, batch: &'a [UsageRow]) -> Rollups<'a> {
        let mut r = Rollups::default();
        for row in batch {
            let day = days.day(row.ts_ms);
            let model = row.model.as_deref().unwrap_or("");
            let f = figures(row);
            r.detail
                .entry((
                    Arc::clone(&day),
                    &row.user_id,
                    &row.provider,
                    model,
                    row.endpoint,
                ))
                .or_default()
                .add_call(f);
            r.user_day
                .entry((Arc::clone(&day), &row.user_id))
                .or_default()
                .add_call(f);
            r.model_day
                .entry((day, &row.provider, model))
                .or_default()
                .add_call(f);
        }
        for ((day, user), t) in &r.user_day {
            r.user_month
                .entry((crate::calendar::month_start(day), user))
                .or_default()
                .add(t);
        }
        r
    }
}

/// A row's figures as the rollups add them.
pub fn figures(row: &UsageRow) -> CallFigures<'_> {
    CallFigures {
        usage: &row.usage,
        source: row.usage_source,
        status: row.status,
        cost_nano_usd: row.cost_nano_usd,
        latency_ms: row.latency_ms,
    }
}

/// One user as a batch saw them: the first email and name any of their rows carried, their
/// first and last call. A backend creates the user on first sight with these, never overwrites
/// a stored email or name, and moves `last_seen_at` forward only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The plan of the user's latest call in the batch that knew it (`None` inside: no plan),
    /// with that call's `ts`; `None` when every row is a recovered one (which carry no plan). A
    /// backend makes it the user's `plan` unless a later call is already recorded.
    pub plan: Option<(Option<&'a str>, i64)>,
}

/// Whether a row says which plan its call was on: every row but a recovered one (the journal
/// does not keep the plan).
fn knows_plan(row: &UsageRow) -> bool {
    row.outcome != crate::usage::Outcome::Recovered
}

/// The users a batch names.
pub fn users_seen(batch: &[UsageRow]) -> HashMap<&str, Seen<'_>> {
    let mut users: HashMap<&str, Seen<'_>> = HashMap::new();
    for row in batch {
        match users.entry(&row.user_id) {
            Entry::Vacant(v) => {
                v.insert(Seen {
                    email: row.user_email.as_deref(),
                    name: row.user_name.as_deref(),
                    first_ms: row.ts_ms,
                    last_ms: row.ts_ms,
                    plan: knows_plan(row).then_some((row.plan.as_deref(), row.ts_ms)),
                });
            }
            Entry::Occupied(mut o) => {
                let seen = o.get_mut();
                seen.email = seen.email.or(row.user_email.as_deref());
                seen.name = seen.name.or(row.user_name.as_deref());
                seen.first_ms = seen.first_ms.min(row.ts_ms);
                seen.last_ms = seen.last_ms.max(row.ts_ms);
                if knows_plan(row) && seen.plan.is_none_or(|(_, at)| row.ts_ms >= at) {
                    seen.plan = Some((row.plan.as_deref(), row.ts_ms));
                }
            }
        }
    }
    users
}
