//! Per-user limits: counters and calendar windows, reservations, the request rate, concurrent
//! calls and blocking — decided in memory, on every call, before anything is forwarded.
//!
//! ```text
//! Hold { tokens, cost_nano_usd }                    what the call may consume at most (the
//!                                                   caller's prompt estimate + output cap, priced)
//!   → Ledger::admit(&user, hold)                    blocked? quota? concurrency? rate?
//!        ├─ Err(Denied)                             403 / 429: the upstream is never called
//!        └─ Ok(Reservation)                         hold reserved in today's and this month's
//!                                                   windows; one more call in flight
//!   … the call runs; the reservation lives in the response body …
//!   → reservation.settle(actual_tokens, actual_cost_nano_usd)
//!                                                   reserved → recorded, in the windows the call
//!                                                   was admitted in (even after midnight)
//!     or drop(reservation)                          released as if nothing was consumed
//! ```
//!
//! **The rule.** A call is refused when, in its day or month window, the user's recorded usage
//! plus what their in-flight calls reserved has *reached* a limit (`used + reserved >= limit`);
//! otherwise it is admitted and reserves its whole hold, however close to the limit that
//! takes the user. So a call is never refused because its hold (which counts the full
//! `max_tokens`) would cross the limit, and a burst of concurrent calls cannot spend past a
//! limit by more than one call: every admitted call saw the others' usage or reservations, so
//! the recorded total ends below `limit + the last admitted call's usage` — provided each call's
//! usage stays within its hold (`max_tokens` bounds the output; the prompt estimate is
//! rough). Tokens are input + output as recorded; costs count priced calls only.
//!
//! **Checks, in order**: blocked (`Denied::Blocked`, 403) → quota windows, month before day so
//! the refusal names the window whose reset actually helps (`Denied::Quota`, 429, not
//! retryable) → concurrent calls (`Denied::Concurrency`, 429, retry after 1 s) → request rate
//! (`Denied::Rate`, 429, retryable; governor GCRA, `requests_per_minute` as both burst and
//! rate). Only an admitted call takes a rate token, so a refused call costs the user nothing.
//!
//! **Windows** are the calendar day and month in `limits.timezone`: `[local midnight, next local
//! midnight)`, so a day across a DST change lasts 23 or 25 hours, and where midnight itself is
//! skipped the day starts at the first instant that exists. They roll lazily, on the user's next
//! access, and never move backwards if the wall clock does. A call counts in the windows it was
//! admitted in — as its usage row does (`ts` = admission) — so a settle after midnight adds to
//! the old day, which is over and no longer limits anyone.
//!
//! **Limits in force** are the `[limits]` defaults ([`Limits::from_config`]), the limits of the
//! call's plan on top ([`Basis`], given with each admission by [`Ledger::try_admit_on`]: the
//! plan its token names, `[plans.NAME]`), and the user's overrides on top of both
//! ([`UserOverrides`], `None` = the plan's or the default; an override always wins, higher or
//! lower). A new basis never touches the counters: a plan change resets no day. An override of 0 tokens or 0 USD refuses every call with a quota refusal (429) until
//! it is changed; a rate or concurrency override must be at least 1 (block the user instead).
//!
//! **State** is a sharded map from user id to a small per-user record behind its own mutex;
//! an admission takes the shard lock for one hash lookup, then the user's lock for the checks,
//! and allocates nothing unless the user is new. [`Ledger::seed`] restores today's and this
//! month's totals and every user's controls at start (from a [`QuotaSeed`] the store loads);
//! [`Ledger::apply_controls`] makes an operator's change — committed by the store first, with
//! its audit row — apply to the user's next call.
//!
//! This module does no I/O at all: `admit`, `settle` and `status` touch only memory and two
//! clocks ([`Clock`] for the calendar, a governor clock for the rate). It never reads or writes
//! the store (the store's writer records usage; `admin` persists controls and then applies them
//! here), and never decides an HTTP status or body (that is `error`'s job; [`Denied`] says which
//! refusal it was). What a control or a seed *is* lives in [`controls`], which names no
//! database either.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use foldhash::fast::RandomState;
use governor::clock::{Clock as GovernorClock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use parking_lot::Mutex;

use crate::calendar::{self, Windows, secs_until, timestamp};
use crate::config::LimitsConfig;
use crate::plan::{Plan, PlanConfig};
pub use controls::{
    Change, InvalidPatch, OverridesPatch, QuotaSeed, SeedTotals, SeedUser, UserControls,
    UserOverrides, validate_patch,
};

pub use lease::{Admission, Fence, LeaseAsk, LeaseGrant, LeaseReturn, Shared, Verdict};

pub mod controls;
pub mod lease;
#[cfg(test)]
mod tests;

/// Limiters of a user's earlier rates kept besides the one in force (see
/// `UserState::other_limiters`).
const KEPT_LIMITERS: usize = 3;

/// Shards of the user map (a power of two). Far more than cores, so two calls rarely meet on
/// one shard lock, which is held for a single hash lookup anyway.
const SHARDS: usize = 64;

// === clocks ===

/// Wall-clock time, which decides the calendar windows. Tests drive a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// `now` in unix milliseconds.
    fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A wall clock that moves only when told to; clones share the time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock {
            ms: Arc::new(AtomicI64::new(at.as_millisecond())),
        }
    }
    pub fn set(&self, at: Timestamp) {
        self.ms.store(at.as_millisecond(), Ordering::SeqCst);
    }
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        timestamp(self.now_ms())
    }
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// The monotonic clock of the rate limiters: governor's [`DefaultClock`] in production,
/// `governor::clock::FakeRelativeClock` in tests.
pub trait RateClock: GovernorClock + Clone + Send + Sync + 'static {}

impl<T: GovernorClock + Clone + Send + Sync + 'static> RateClock for T {}

type Limiter<R> =
    RateLimiter<NotKeyed, InMemoryState, R, NoOpMiddleware<<R as GovernorClock>::Instant>>;

// === limits ===

/// The limits in force for a user: the defaults, or the defaults with their overrides applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub daily_tokens: u64,
    pub monthly_tokens: u64,
    /// `None` = no budget.
    pub daily_cost_nano_usd: Option<u64>,
    pub monthly_cost_nano_usd: Option<u64>,
    pub requests_per_minute: NonZeroU32,
    /// `None` = no cap.
    pub max_concurrent: Option<NonZeroU32>,
}

impl Limits {
    /// The `[limits]` defaults. Values `Config::from_raw` would refuse are made safe rather than
    /// refused here: a rate of 0 becomes 1, a concurrency cap of 0 becomes 1.
    pub fn from_config(config: &LimitsConfig) -> Limits {
        Limits {
            daily_tokens: config.daily_tokens,
            monthly_tokens: config.monthly_tokens,
            daily_cost_nano_usd: config.daily_cost_nano_usd(),
            monthly_cost_nano_usd: config.monthly_cost_nano_usd(),
            requests_per_minute: at_least_one(config.requests_per_minute),
            max_concurrent: config.max_concurrent.map(at_least_one),
        }
    }

    /// `[limits]` with a plan's limits on top: each limit the plan sets wins over `[limits]`'s
    /// (`plan = None`: `[limits]` alone, as [`Limits::from_config`]).
    pub fn for_plan(config: &LimitsConfig, plan: Option<&PlanConfig>) -> Limits {
        let base = Limits::from_config(config);
        let Some(p) = plan else {
            return base;
        };
        Limits {
            daily_tokens: p.daily_tokens.unwrap_or(base.daily_tokens),
            monthly_tokens: p.monthly_tokens.unwrap_or(base.monthly_tokens),
            daily_cost_nano_usd: p.daily_cost_nano_usd().or(base.daily_cost_nano_usd),
            monthly_cost_nano_usd: p.monthly_cost_nano_usd().or(base.monthly_cost_nano_usd),
            requests_per_minute: p
                .requests_per_minute
                .map_or(base.requests_per_minute, at_least_one),
            max_concurrent: p.max_concurrent.map(at_least_one).or(base.max_concurrent),
        }
    }

    /// These limits with `overrides` on top: each override set wins over its default.
    pub fn with_overrides(&self, overrides: &UserOverrides) -> Limits {
        Limits {
            daily_tokens: overrides.daily_tokens.unwrap_or(self.daily_tokens),
            monthly_tokens: overrides.monthly_tokens.unwrap_or(self.monthly_tokens),
            daily_cost_nano_usd: overrides.daily_cost_nano_usd.or(self.daily_cost_nano_usd),
            monthly_cost_nano_usd: overrides
                .monthly_cost_nano_usd
                .or(self.monthly_cost_nano_usd),
            requests_per_minute: overrides
                .requests_per_minute
                .map_or(self.requests_per_minute, at_least_one),
            max_concurrent: overrides
                .max_concurrent
                .map(at_least_one)
                .or(self.max_concurrent),
        }
    }

    fn tokens(&self, window: Window) -> u64 {
        match window {
            Window::Day => self.daily_tokens,
            Window::Month => self.monthly_tokens,
        }
    }

    fn cost(&self, window: Window) -> Option<u64> {
        match window {
            Window::Day => self.daily_cost_nano_usd,
            Window::Month => self.monthly_cost_nano_usd,
        }
    }
}

/// The limits a call is admitted under before the user's own overrides: `[limits]` with the
/// plan of the caller's token on top ([`Limits::for_plan`]), and the plan's name. The proxy
/// builds it from the configuration the call started with, so an edited plan applies to the
/// next call of every user on it, and a user whose token names another plan is on it from
/// their next call; the counters are never touched by a change of basis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basis {
    /// `None`: no plan (`[limits]` alone).
    pub plan: Option<Arc<str>>,
    pub limits: Limits,
}

impl Basis {
    /// `[limits]` (`config`) with `plan`'s limits on top.
    pub fn new(config: &LimitsConfig, plan: Option<&Plan>) -> Basis {
        Basis {
            plan: plan.map(|p| Arc::clone(&p.name)),
            limits: Limits::for_plan(config, plan.map(|p| &p.settings)),
        }
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A calendar window in `limits.timezone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    Day,
    Month,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

/// What a quota limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Input + output tokens.
    Tokens,
    /// Cost of priced calls, nano-USD.
    Cost,
}

// === holds ===

/// What an admitted call reserves until it settles: the most it may consume (its prompt
/// estimate plus its output cap, priced by the caller). Not a usage: the call's usage replaces
/// it when the call settles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hold {
    pub tokens: u64,
    pub cost_nano_usd: u64,
}

// === refusals ===

/// Why a call was refused before forwarding. `Display` is written for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The operator blocked this user (HTTP 403). `reason` is the operator's note; whether the
    /// client may see it is the caller's choice (the message here never includes it).
    #[error("this user has been blocked by the gateway's operator")]
    Blocked { reason: Option<String> },
    /// Recorded plus reserved usage has reached a limit (HTTP 429, `x-should-retry: false`,
    /// `Retry-After` = `retry_after_secs`, the time to `reset_at`).
    #[error("{}", quota_message(*window, *kind, *limit, *reset_at))]
    Quota {
        window: Window,
        kind: LimitKind,
        limit: u64,
        /// Recorded usage in the window at the refusal.
        used: u64,
        /// Reserved by the user's calls in flight at the refusal.
        reserved: u64,
        /// When the window ends (next local midnight, or the first of next month).
        reset_at: Timestamp,
        retry_after_secs: u64,
    },
    /// Over the request rate (HTTP 429, retryable after `retry_after_secs`).
    #[error(
        "too many requests: at most {limit_per_minute} calls per minute; retry in {retry_after_secs} s"
    )]
    Rate {
        limit_per_minute: u32,
        retry_after_secs: u64,
    },
    /// Over the cap on calls in flight (HTTP 429, retryable; `Retry-After: 1`).
    #[error("too many calls in flight for this user: at most {limit} at once")]
    Concurrency { limit: u32 },
}

impl Denied {
    /// Seconds for `Retry-After`: `None` for a blocked user, 1 for concurrency.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Denied::Blocked { .. } => None,
            Denied::Quota {
                retry_after_secs, ..
            }
            | Denied::Rate {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Denied::Concurrency { .. } => Some(1),
        }
    }

    /// Whether retrying soon can succeed (false → `x-should-retry: false`).
    pub fn should_retry(&self) -> bool {
        match self {
            Denied::Blocked { .. } | Denied::Quota { .. } => false,
            Denied::Rate { .. } | Denied::Concurrency { .. } => true,
        }
    }

    /// A stable machine-readable name, e.g. for an error body's `code` or a log field.
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Blocked { .. } => "user_blocked",
            Denied::Quota { window, kind, .. } => match (window, kind) {
                (Window::Day, LimitKind::Tokens) => "daily_token_limit_reached",
                (Window::Month, LimitKind::Tokens) => "monthly_token_limit_reached",
                (Window::Day, LimitKind::Cost) => "daily_cost_budget_reached",
                (Window::Month, LimitKind::Cost) => "monthly_cost_budget_reached",
            },
            Denied::Rate { .. } => "rate_limited",
            Denied::Concurrency { .. } => "too_many_concurrent_calls",
        }
    }
}

fn quota_message(window: Window, kind: LimitKind, limit: u64, reset_at: Timestamp) -> String {
    let period = match window {
        Window::Day => "daily",
        Window::Month => "monthly",
    };
    match kind {
        LimitKind::Tokens => {
            format!(
                "{period} token limit of {limit} reached for this user; it resets at {reset_at}"
            )
        }
        LimitKind::Cost => format!(
            "{period} cost budget of {} reached for this user; it resets at {reset_at}",
            usd(limit)
        ),
    }
}

/// nano-USD as `$1.23` (cents, truncated).
fn usd(nano: u64) -> String {
    format!(
        "${}.{:02}",
        nano / 1_000_000_000,
        nano % 1_000_000_000 / 10_000_000
    )
}

// === per-user state ===

/// One window's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    /// `[start_ms, end_ms)` of the window these count; identifies it.
    start_ms: i64,
    end_ms: i64,
    used_tokens: u64,
    used_cost: u64,
    reserved_tokens: u64,
    reserved_cost: u64,
    /// What this gateway's leases on the window still allow (limits shared by several
    /// gateways, [`lease`]): granted, less the holds reserved and the usage settled since.
    /// Below 0 after a last call, or usage above a hold.
    left_tokens: i64,
    left_cost: i64,
}

impl Counters {
    fn new(start_ms: i64, end_ms: i64) -> Counters {
        Counters {
            start_ms,
            end_ms,
            ..Counters::default()
        }
    }

    /// Move to the window `[start_ms, end_ms)` if it is later than this one.
    fn roll(&mut self, start_ms: i64, end_ms: i64) {
        if start_ms > self.start_ms {
            *self = Counters::new(start_ms, end_ms);
        }
    }

    /// The first limit of this window that recorded + reserved usage has reached.
    fn reached(&self, window: Window, limits: &Limits, now_ms: i64) -> Option<Denied> {
        let refuse = |kind, limit, used, reserved| Denied::Quota {
            window,
            kind,
            limit,
            used,
            reserved,
            reset_at: timestamp(self.end_ms),
            retry_after_secs: secs_until(now_ms, self.end_ms),
        };
        let tokens = limits.tokens(window);
        if self.used_tokens.saturating_add(self.reserved_tokens) >= tokens {
            return Some(refuse(
                LimitKind::Tokens,
                tokens,
                self.used_tokens,
                self.reserved_tokens,
            ));
        }
        match limits.cost(window) {
            Some(cost) if self.used_cost.saturating_add(self.reserved_cost) >= cost => Some(
                refuse(LimitKind::Cost, cost, self.used_cost, self.reserved_cost),
            ),
            _ => None,
        }
    }

    fn reserve(&mut self, hold: Hold) {
        self.reserved_tokens = self.reserved_tokens.saturating_add(hold.tokens);
        self.reserved_cost = self.reserved_cost.saturating_add(hold.cost_nano_usd);
        self.left_tokens = self.left_tokens.saturating_sub(signed(hold.tokens));
        self.left_cost = self.left_cost.saturating_sub(signed(hold.cost_nano_usd));
    }

    /// Whether this gateway's leases cover `hold` in this window under `limits`: every budget
    /// the window has leaves at least the hold, and more than nothing.
    fn covers(&self, window: Window, limits: &Limits, hold: Hold) -> bool {
        let fits = |left: i64, hold: u64| left > 0 && left >= signed(hold);
        fits(self.left_tokens, hold.tokens)
            && (limits.cost(window).is_none() || fits(self.left_cost, hold.cost_nano_usd))
    }

    /// Take the unspent part of the leases out (to give it back): tokens, cost. A lease
    /// overspent (a call used more than its hold) starts again from 0: the store counts that
    /// usage once its row is written.
    fn take_left(&mut self) -> [u64; 2] {
        let take = |left: &mut i64| {
            let back = u64::try_from(*left).unwrap_or(0);
            *left = 0;
            back
        };
        [take(&mut self.left_tokens), take(&mut self.left_cost)]
    }

    /// A grant for this window: the leases grow, and the recorded usage is at least what the
    /// written rows say (it may be more: calls settled here whose rows are not written yet).
    fn granted(&mut self, granted: [u64; 2], used: [u64; 2]) {
        self.left_tokens = self.left_tokens.saturating_add(signed(granted[0]));
        self.left_cost = self.left_cost.saturating_add(signed(granted[1]));
        self.used_tokens = self.used_tokens.max(used[0]);
        self.used_cost = self.used_cost.max(used[1]);
    }

    /// Release `hold` and record the actual usage, if this is still the window it was
    /// reserved in.
    fn settle(&mut self, start_ms: i64, hold: Hold, tokens: u64, cost: u64) {
        if self.start_ms != start_ms {
            // The window rolled since admission: the old one is over and the new one never
            // held this reservation.
            return;
        }
        self.reserved_tokens = self.reserved_tokens.saturating_sub(hold.tokens);
        self.reserved_cost = self.reserved_cost.saturating_sub(hold.cost_nano_usd);
        self.used_tokens = self.used_tokens.saturating_add(tokens);
        self.used_cost = self.used_cost.saturating_add(cost);
        self.left_tokens = self
            .left_tokens
            .saturating_add(signed(hold.tokens))
            .saturating_sub(signed(tokens));
        self.left_cost = self
            .left_cost
            .saturating_add(signed(hold.cost_nano_usd))
            .saturating_sub(signed(cost));
    }

    fn status(&self, window: Window, limits: &Limits) -> WindowStatus {
        let tokens = limits.tokens(window);
        let cost = limits.cost(window);
        let spent_tokens = self.used_tokens.saturating_add(self.reserved_tokens);
        let spent_cost = self.used_cost.saturating_add(self.reserved_cost);
        WindowStatus {
            window,
            start: timestamp(self.start_ms),
            reset_at: timestamp(self.end_ms),
            used_tokens: self.used_tokens,
            reserved_tokens: self.reserved_tokens,
            token_limit: tokens,
            remaining_tokens: tokens.saturating_sub(spent_tokens),
            used_cost_nano_usd: self.used_cost,
            reserved_cost_nano_usd: self.reserved_cost,
            cost_limit_nano_usd: cost,
            remaining_cost_nano_usd: cost.map(|c| c.saturating_sub(spent_cost)),
        }
    }
}

struct UserState<R: RateClock> {
    controls: UserControls,
    day: Counters,
    month: Counters,
    in_flight: u32,
    /// The limits changed since the leases were granted: the next call asks the store (giving
    /// them back) rather than spending them; cleared by the next grant.
    must_ask: bool,
    /// The local allowance of an outage of the shared store was added to the leases
    /// ([`Ledger::admit_offline`]); cleared by the next grant.
    offline: bool,
    /// When this gateway last admitted or asked for this user (ledger clock, ms): leases of a
    /// user idle for a while are given back.
    touched_ms: i64,
    limiter: Limiter<R>,
    /// The rate `limiter` was built for; replaced when the rate in force changes.
    limiter_rpm: NonZeroU32,
    /// Limiters of the user's other recent rates (at most [`KEPT_LIMITERS`], the latest first),
    /// taken back with their state when that rate is in force again: a user holding tokens of
    /// two plans (an old one still valid after an upgrade) who alternates them gets at most
    /// both rates together, not a fresh burst at every switch.
    other_limiters: Vec<(NonZeroU32, Limiter<R>)>,
    /// The basis of the user's latest call ([`Ledger::try_admit_on`]); `None` until then: the
    /// ledger's defaults.
    basis: Option<Basis>,
}

type Cell<R> = Arc<Mutex<UserState<R>>>;

impl<R: RateClock> UserState<R> {
    fn new(defaults: &Limits, calendar: &Windows, rate_clock: &R) -> UserState<R> {
        let rpm = defaults.requests_per_minute;
        UserState {
            controls: UserControls::default(),
            day: Counters::new(calendar.day_start, calendar.day_end),
            month: Counters::new(calendar.month_start, calendar.month_end),
            in_flight: 0,
            must_ask: false,
            offline: false,
            touched_ms: 0,
            limiter: RateLimiter::direct_with_clock(Quota::per_minute(rpm), rate_clock.clone()),
            limiter_rpm: rpm,
            other_limiters: Vec::new(),
            basis: None,
        }
    }

    /// Make `rpm` the rate in force: its limiter taken back from `other_limiters` with its
    /// state, or a new one (a full burst); the one it replaces is kept among the others.
    fn switch_rate(&mut self, rpm: NonZeroU32, rate_clock: &R) {
        let next = match self.other_limiters.iter().position(|(r, _)| *r == rpm) {
            Some(i) => self.other_limiters.remove(i).1,
            None => RateLimiter::direct_with_clock(Quota::per_minute(rpm), rate_clock.clone()),
        };
        let old = std::mem::replace(&mut self.limiter, next);
        self.other_limiters.insert(0, (self.limiter_rpm, old));
        self.other_limiters.truncate(KEPT_LIMITERS);
        self.limiter_rpm = rpm;
    }

    /// The limits before overrides: the latest call's basis, else the ledger's defaults.
    fn base(&self, defaults: &Limits) -> Limits {
        self.basis.as_ref().map_or(*defaults, |b| b.limits)
    }

    /// The limits in force: the base with the user's overrides on top.
    fn limits(&self, defaults: &Limits) -> Limits {
        self.base(defaults).with_overrides(&self.controls.overrides)
    }

    /// Take `basis` as the user's from this call on. A change of limits while the limits are
    /// shared makes the next admission ask the store again (the leases were granted under the
    /// old ones); the counters stay.
    fn adopt(&mut self, basis: &Basis, shared: bool) {
        if self.basis.as_ref() == Some(basis) {
            return;
        }
        if shared && self.basis.as_ref().map(|b| b.limits) != Some(basis.limits) {
            self.must_ask = true;
        }
        self.basis = Some(basis.clone());
    }

    /// What refuses a call that waited for the store (a lease): the checks that can change
    /// meanwhile — a block, the cap on calls in flight. Its rate token is already taken.
    fn refused_meanwhile(&self, limits: &Limits) -> Option<Denied> {
        if self.controls.blocked {
            return Some(Denied::Blocked {
                reason: self.controls.blocked_reason.clone(),
            });
        }
        limits
            .max_concurrent
            .filter(|cap| self.in_flight >= cap.get())
            .map(|cap| Denied::Concurrency { limit: cap.get() })
    }

    fn roll(&mut self, calendar: &Windows) {
        self.day.roll(calendar.day_start, calendar.day_end);
        self.month.roll(calendar.month_start, calendar.month_end);
    }

    fn status(&self, defaults: &Limits) -> QuotaStatus {
        let plan = self.basis.as_ref().and_then(|b| b.plan.clone());
        self.status_with(self.base(defaults), plan)
    }

    /// The status as if the limits before overrides were `base`, on `plan`.
    fn status_with(&self, base: Limits, plan: Option<Arc<str>>) -> QuotaStatus {
        let limits = base.with_overrides(&self.controls.overrides);
        QuotaStatus {
            plan,
            blocked: self.controls.blocked,
            blocked_reason: self.controls.blocked_reason.clone(),
            limits,
            overrides: self.controls.overrides,
            day: self.day.status(Window::Day, &limits),
            month: self.month.status(Window::Month, &limits),
            in_flight: self.in_flight,
        }
    }
}

// === status ===

/// A user's quota as the app may show it (response headers, `GET /me/usage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaStatus {
    /// The plan of the user's latest call through this gateway (`None`: no plan, or no call
    /// since the start).
    pub plan: Option<Arc<str>>,
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    /// The limits in force: `[limits]`, the plan's on top, the user's overrides on top of both.
    pub limits: Limits,
    /// The user's own overrides (`None` = the default applies).
    pub overrides: UserOverrides,
    pub day: WindowStatus,
    pub month: WindowStatus,
    /// Calls admitted and not yet settled.
    pub in_flight: u32,
}

/// One window of a [`QuotaStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowStatus {
    pub window: Window,
    /// Local midnight (of the day, or of the month's first day) in `limits.timezone`.
    pub start: Timestamp,
    /// When the window ends and the counters start again from zero.
    pub reset_at: Timestamp,
    pub used_tokens: u64,
    pub reserved_tokens: u64,
    pub token_limit: u64,
    /// `token_limit - used - reserved`, at least 0.
    pub remaining_tokens: u64,
    pub used_cost_nano_usd: u64,
    pub reserved_cost_nano_usd: u64,
    /// `None` = no budget.
    pub cost_limit_nano_usd: Option<u64>,
    pub remaining_cost_nano_usd: Option<u64>,
}

impl WindowStatus {
    /// The written rows say `tokens` and `cost` (nano-USD) were used in this window: the usage
    /// shown is at least that (several gateways: this one counted only its own calls since its
    /// start or its last grant), and what remains follows.
    pub fn recorded(&mut self, tokens: i64, cost: i64) {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        self.used_tokens = self.used_tokens.max(count(tokens));
        self.used_cost_nano_usd = self.used_cost_nano_usd.max(count(cost));
        self.remaining_tokens = self
            .token_limit
            .saturating_sub(self.used_tokens.saturating_add(self.reserved_tokens));
        self.remaining_cost_nano_usd = self.cost_limit_nano_usd.map(|c| {
            c.saturating_sub(
                self.used_cost_nano_usd
                    .saturating_add(self.reserved_cost_nano_usd),
            )
        });
    }
}

// === the ledger ===

#[repr(align(128))]
struct Shard<R: RateClock> {
    inner: Mutex<ShardInner<R>>,
}

struct ShardInner<R: RateClock> {
    /// foldhash: user ids come from verified tokens, and SipHash would be a fifth of the
    /// cost of an admission. Seeded per process.
    users: HashMap<Arc<str>, Cell<R>, RandomState>,
    /// The current windows, kept per shard so that no lock is shared by all calls; recomputed
    /// when the clock passes the day's end.
    calendar: Windows,
    defaults: Limits,
}

/// Every user's counters, controls and rate limiter. Share it as `Arc<Ledger>`.
pub struct Ledger<C: Clock = SystemClock, R: RateClock = DefaultClock> {
    shards: Box<[Shard<R>]>,
    hasher: RandomState,
    tz: TimeZone,
    clock: C,
    rate_clock: R,
    /// Set when several gateways share the limits ([`Ledger::share`]).
    shared: OnceLock<Arc<Shared>>,
}

impl Ledger {
    /// A ledger on the system clocks with the `[limits]` defaults, windows in `tz`
    /// (`Config::timezone`).
    pub fn new(limits: &LimitsConfig, tz: TimeZone) -> Ledger {
        Ledger::with_clocks(
            Limits::from_config(limits),
            tz,
            SystemClock,
            DefaultClock::default(),
        )
    }
}

impl<C: Clock, R: RateClock> Ledger<C, R> {
    /// A ledger on the given clocks (tests: [`ManualClock`], `FakeRelativeClock`).
    pub fn with_clocks(defaults: Limits, tz: TimeZone, clock: C, rate_clock: R) -> Ledger<C, R> {
        let calendar = Windows::at(clock.now_ms(), &tz);
        let shards = (0..SHARDS)
            .map(|_| Shard {
                inner: Mutex::new(ShardInner {
                    users: HashMap::with_hasher(RandomState::default()),
                    calendar,
                    defaults,
                }),
            })
            .collect();
        Ledger {
            shards,
            hasher: RandomState::default(),
            tz,
            clock,
            rate_clock,
            shared: OnceLock::new(),
        }
    }

    /// Admit a call by `user` that may consume `hold`, or say why not. Checks, in order:
    /// blocked, quota (month, then day; tokens, then cost), calls in flight, request rate. An
    /// admitted call reserves `hold` in the current day and month and counts as in flight
    /// until its [`Reservation`] settles or is dropped. Memory only; allocates only for a user
    /// seen for the first time (or for a refusal's reason). Decides on this gateway's counters
    /// alone, whether or not the limits are shared: the proxy calls [`Ledger::try_admit`].
    pub fn admit(&self, user: &Arc<str>, hold: Hold) -> Result<Reservation<R>, Denied> {
        self.admit_on(user, hold, None)
    }

    /// [`Ledger::admit`] under `basis` (the call's plan), when given: it becomes the user's.
    fn admit_on(
        &self,
        user: &Arc<str>,
        hold: Hold,
        basis: Option<&Basis>,
    ) -> Result<Reservation<R>, Denied> {
        let now_ms = self.clock.now_ms();
        let (cell, calendar, defaults) = self.cell(user, now_ms);
        let mut state = cell.lock();
        state.roll(&calendar);
        if let Some(basis) = basis {
            state.adopt(basis, false);
        }
        self.check(&mut state, &defaults, now_ms)?;
        Ok(self.reserve(&mut state, &cell, hold, now_ms))
    }

    /// [`Ledger::admit`] for a gateway whose limits may be shared: when they are and this
    /// gateway's leases on the user's budgets do not cover `hold`, the call is
    /// [`Admission::Short`] — the caller asks the store and comes back with
    /// [`Ledger::admit_granted`]. The checks that need no one else (blocked, the usage this
    /// gateway knows of, calls in flight, rate) come first, so a refused user costs the store
    /// nothing; a short call has taken its rate token.
    pub fn try_admit(&self, user: &Arc<str>, hold: Hold) -> Result<Reservation<R>, Admission> {
        self.try_admit_basis(user, hold, None)
    }

    /// [`Ledger::try_admit`] under `basis`, the limits of the call's plan before the user's
    /// overrides (see [`Basis`]); it becomes the user's basis, shown by [`Ledger::status`].
    pub fn try_admit_on(
        &self,
        user: &Arc<str>,
        hold: Hold,
        basis: &Basis,
    ) -> Result<Reservation<R>, Admission> {
        self.try_admit_basis(user, hold, Some(basis))
    }

    fn try_admit_basis(
        &self,
        user: &Arc<str>,
        hold: Hold,
        basis: Option<&Basis>,
    ) -> Result<Reservation<R>, Admission> {
        let Some(shared) = self.shared.get() else {
            return self.admit_on(user, hold, basis).map_err(Admission::Denied);
        };
        let now_ms = self.clock.now_ms();
        let (cell, calendar, defaults) = self.cell(user, now_ms);
        let mut state = cell.lock();
        state.roll(&calendar);
        if let Some(basis) = basis {
            state.adopt(basis, true);
        }
        let limits = self.check(&mut state, &defaults, now_ms)?;
        if shared.fence.holds()
            && !state.must_ask
            && state.day.covers(Window::Day, &limits, hold)
            && state.month.covers(Window::Month, &limits, hold)
        {
            return Ok(self.reserve(&mut state, &cell, hold, now_ms));
        }
        state.touched_ms = now_ms;
        let [day_tokens, day_cost] = state.day.take_left();
        let [month_tokens, month_cost] = state.month.take_left();
        let limit = [
            Some(limits.daily_tokens),
            limits.daily_cost_nano_usd,
            Some(limits.monthly_tokens),
            limits.monthly_cost_nano_usd,
        ];
        let held = [
            hold.tokens,
            hold.cost_nano_usd,
            hold.tokens,
            hold.cost_nano_usd,
        ];
        let want = std::array::from_fn(|i| {
            limit[i].map_or(0, |l| (l / 16).max(held[i].saturating_mul(4)))
        });
        Err(Admission::Short(Box::new(LeaseAsk {
            user: Arc::clone(user),
            day: calendar::local_day(state.day.start_ms, &self.tz),
            month: calendar::local_day(state.month.start_ms, &self.tz),
            hold: held,
            back: [day_tokens, day_cost, month_tokens, month_cost],
            limit,
            want,
            day_start: state.day.start_ms,
            month_start: state.month.start_ms,
        })))
    }

    /// Admit the call of a [`LeaseAsk`] with the store's answer: the grant joins this
    /// gateway's leases (and what the rows count joins its view of the usage) whatever the
    /// verdict; then a refusal is a quota refusal, and a fit or the last call is admitted if the
    /// user is still not blocked and not at the cap on calls in flight. A grant for windows
    /// that ended meanwhile (midnight) is not used: the call is tried again for the new ones.
    pub fn admit_granted(
        &self,
        ask: &LeaseAsk,
        grant: &LeaseGrant,
    ) -> Result<Reservation<R>, Admission> {
        let hold = Hold {
            tokens: ask.hold[0],
            cost_nano_usd: ask.hold[1],
        };
        if self.shared.get().is_none() {
            return self.admit(&ask.user, hold).map_err(Admission::Denied);
        }
        let now_ms = self.clock.now_ms();
        let (cell, calendar, defaults) = self.cell(&ask.user, now_ms);
        let mut state = cell.lock();
        state.roll(&calendar);
        if state.day.start_ms != ask.day_start || state.month.start_ms != ask.month_start {
            drop(state);
            return self.try_admit(&ask.user, hold);
        }
        state.offline = false;
        state.must_ask = false;
        let (g, u) = (grant.granted, grant.used);
        state.day.granted([g[0], g[1]], [u[0], u[1]]);
        state.month.granted([g[2], g[3]], [u[2], u[3]]);
        match grant.verdict {
            Verdict::Fit | Verdict::Last => {}
            Verdict::Refused(slot) => {
                let lease::Slot(window, kind) = lease::SLOTS[slot.min(3)];
                let end_ms = match window {
                    Window::Day => state.day.end_ms,
                    Window::Month => state.month.end_ms,
                };
                return Err(Admission::Denied(Denied::Quota {
                    window,
                    kind,
                    limit: ask.limit[slot.min(3)].unwrap_or(0),
                    used: u[slot.min(3)],
                    reserved: grant.elsewhere[slot.min(3)],
                    reset_at: timestamp(end_ms),
                    retry_after_secs: secs_until(now_ms, end_ms),
                }));
            }
        };
        let limits = state.limits(&defaults);
        if let Some(denied) = state.refused_meanwhile(&limits) {
            return Err(Admission::Denied(denied));
        }
        Ok(self.reserve(&mut state, &cell, hold, now_ms))
    }

    /// Admit the call of a [`LeaseAsk`] the store could not answer (`store.when_unavailable =
    /// "admit_locally"`): out of what this gateway's leases still hold, after adding — once per
    /// outage, until the store grants again — the ask's `want` (a sixteenth of each limit, at
    /// least four holds) as a local allowance. `restore`: the store surely did not take what
    /// the ask gave back (it failed, rather than not answering in time). `None` when the
    /// allowance is spent too, or the user is blocked or at the cap on calls in flight.
    pub fn admit_offline(&self, ask: &LeaseAsk, restore: bool) -> Option<Reservation<R>> {
        let hold = Hold {
            tokens: ask.hold[0],
            cost_nano_usd: ask.hold[1],
        };
        let now_ms = self.clock.now_ms();
        let (cell, calendar, defaults) = self.cell(&ask.user, now_ms);
        let mut state = cell.lock();
        state.roll(&calendar);
        if state.day.start_ms != ask.day_start || state.month.start_ms != ask.month_start {
            return None;
        }
        if restore {
            // What the ask took out of the leases is this gateway's still.
            let b = ask.back;
            state.day.granted([b[0], b[1]], [0, 0]);
            state.month.granted([b[2], b[3]], [0, 0]);
        }
        if !state.offline {
            state.offline = true;
            let w = ask.want;
            state.day.granted([w[0], w[1]], [0, 0]);
            state.month.granted([w[2], w[3]], [0, 0]);
        }
        let limits = state.limits(&defaults);
        let covered = state.day.covers(Window::Day, &limits, hold)
            && state.month.covers(Window::Month, &limits, hold);
        (covered && state.refused_meanwhile(&limits).is_none())
            .then(|| self.reserve(&mut state, &cell, hold, now_ms))
    }

    /// The checks of every admission, in order: blocked, quota (month, then day, on the usage
    /// this gateway knows of), calls in flight, request rate (which takes a token). Returns the
    /// limits in force.
    fn check(
        &self,
        state: &mut UserState<R>,
        defaults: &Limits,
        now_ms: i64,
    ) -> Result<Limits, Denied> {
        if state.controls.blocked {
            return Err(Denied::Blocked {
                reason: state.controls.blocked_reason.clone(),
            });
        }
        let limits = state.limits(defaults);
        if let Some(denied) = state
            .month
            .reached(Window::Month, &limits, now_ms)
            .or_else(|| state.day.reached(Window::Day, &limits, now_ms))
        {
            return Err(denied);
        }
        if let Some(cap) = limits.max_concurrent
            && state.in_flight >= cap.get()
        {
            return Err(Denied::Concurrency { limit: cap.get() });
        }
        if state.limiter_rpm != limits.requests_per_minute {
            state.switch_rate(limits.requests_per_minute, &self.rate_clock);
        }
        if let Err(not_until) = state.limiter.check() {
            let wait = not_until.wait_time_from(self.rate_clock.now());
            return Err(Denied::Rate {
                limit_per_minute: limits.requests_per_minute.get(),
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            });
        }
        Ok(limits)
    }

    /// Reserve `hold` for an admitted call: one more in flight, the hold in the day and month
    /// (and out of this gateway's leases on them).
    fn reserve(
        &self,
        state: &mut UserState<R>,
        cell: &Cell<R>,
        hold: Hold,
        now_ms: i64,
    ) -> Reservation<R> {
        state.in_flight = state.in_flight.saturating_add(1);
        state.touched_ms = now_ms;
        state.day.reserve(hold);
        state.month.reserve(hold);
        Reservation {
            cell: Arc::clone(cell),
            hold,
            day_start: state.day.start_ms,
            month_start: state.month.start_ms,
            admitted_ms: now_ms,
            open: true,
        }
    }

    /// Share this ledger's limits with other gateways: from now on [`Ledger::try_admit`]
    /// admits in memory only what this gateway's leases cover. Once; later calls are ignored.
    pub fn share(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(shared);
    }

    /// The shared state, when the limits are shared.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.get()
    }

    /// Take back the unspent leases of every user with no call in flight and none admitted or
    /// asked for in `idle`, for the store to give back (they are this gateway's no longer).
    /// All of them when this gateway's fence has lapsed.
    pub fn idle_leases(&self, idle: Duration) -> Vec<LeaseReturn> {
        let now_ms = self.clock.now_ms();
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let lapsed = self.shared.get().is_some_and(|s| !s.fence.holds());
        let mut out = Vec::new();
        for shard in &*self.shards {
            let shard = shard.inner.lock();
            for (user, cell) in &shard.users {
                let mut s = cell.lock();
                let idle = s.in_flight == 0 && now_ms.saturating_sub(s.touched_ms) >= idle_ms;
                let unspent = [s.day, s.month]
                    .iter()
                    .any(|c| c.left_tokens > 0 || c.left_cost > 0);
                if !unspent || !(idle || lapsed) {
                    continue;
                }
                let [dt, dc] = s.day.take_left();
                let [mt, mc] = s.month.take_left();
                out.push(LeaseReturn {
                    user: Arc::clone(user),
                    day: calendar::local_day(s.day.start_ms, &self.tz),
                    month: calendar::local_day(s.month.start_ms, &self.tz),
                    back: [dt, dc, mt, mc],
                });
            }
        }
        out
    }

    /// Give back to the leases what [`Ledger::idle_leases`] took, when the store could not
    /// take it (the windows must still be the same).
    pub fn restore_leases(&self, returns: &[LeaseReturn]) {
        let now_ms = self.clock.now_ms();
        for r in returns {
            let (cell, calendar, _) = self.cell(&r.user, now_ms);
            let mut s = cell.lock();
            s.roll(&calendar);
            if calendar::local_day(s.day.start_ms, &self.tz) == r.day {
                s.day.granted([r.back[0], r.back[1]], [0, 0]);
            }
            if calendar::local_day(s.month.start_ms, &self.tz) == r.month {
                s.month.granted([r.back[2], r.back[3]], [0, 0]);
            }
        }
    }

    /// Put back what a [`LeaseAsk`] took out of the leases, when the store never got it.
    pub fn unask(&self, ask: &LeaseAsk) {
        self.restore_leases(&[LeaseReturn {
            user: Arc::clone(&ask.user),
            day: ask.day.clone(),
            month: ask.month.clone(),
            back: ask.back,
        }]);
    }

    /// Make `all` every user's controls (a user not in it has none): the periodic re-read of
    /// a shared store, which heals a change whose notice was missed. Returns the users whose
    /// controls changed.
    pub fn replace_controls(&self, all: &HashMap<String, UserControls>) -> usize {
        let mut changed = 0;
        for shard in &*self.shards {
            let shard = shard.inner.lock();
            for (user, cell) in &shard.users {
                let mut s = cell.lock();
                let now = all.get(&**user).cloned().unwrap_or_default();
                if s.controls != now {
                    s.must_ask |= s.controls.overrides != now.overrides;
                    s.controls = now;
                    changed += 1;
                }
            }
        }
        for (user, controls) in all {
            if self.controls(user) != *controls {
                self.apply_controls(user, controls);
                changed += 1;
            }
        }
        changed
    }

    /// `user`'s quota now: usage, reservations, limits in force, what remains and when each
    /// window resets. A user never seen gets the defaults and zeros (and is not added).
    pub fn status(&self, user: &str) -> QuotaStatus {
        self.status_basis(user, None)
    }

    /// [`Ledger::status`] under `basis` (the plan of the token asking, `GET /me/usage`) rather
    /// than the basis of the user's latest call. The user's basis is not changed.
    pub fn status_on(&self, user: &str, basis: &Basis) -> QuotaStatus {
        self.status_basis(user, Some(basis))
    }

    fn status_basis(&self, user: &str, basis: Option<&Basis>) -> QuotaStatus {
        let now_ms = self.clock.now_ms();
        let (cell, calendar, defaults) = self.lookup(user, now_ms);
        match cell {
            Some(cell) => {
                let mut state = cell.lock();
                state.roll(&calendar);
                match basis {
                    Some(b) => state.status_with(b.limits, b.plan.clone()),
                    None => state.status(&defaults),
                }
            }
            None => {
                let limits = basis.map_or(defaults, |b| b.limits);
                QuotaStatus {
                    plan: basis.and_then(|b| b.plan.clone()),
                    blocked: false,
                    blocked_reason: None,
                    limits,
                    overrides: UserOverrides::default(),
                    day: Counters::new(calendar.day_start, calendar.day_end)
                        .status(Window::Day, &limits),
                    month: Counters::new(calendar.month_start, calendar.month_end)
                        .status(Window::Month, &limits),
                    in_flight: 0,
                }
            }
        }
    }

    /// The defaults in force (from `[limits]`).
    pub fn defaults(&self) -> Limits {
        self.shards[0].inner.lock().defaults
    }

    /// Replace the defaults (a configuration reload); each user's next call uses them. Counters
    /// are kept; a user whose rate changes to one they have not had recently starts with a full burst.
    pub fn set_defaults(&self, defaults: Limits) {
        for shard in &*self.shards {
            let mut shard = shard.inner.lock();
            let changed = shard.defaults != defaults;
            shard.defaults = defaults;
            if changed && self.shared.get().is_some() {
                // Leases were granted under the old limits: each user's next call asks again
                // (giving its lease back), and the store judges it by the new ones.
                for cell in shard.users.values() {
                    cell.lock().must_ask = true;
                }
            }
        }
    }

    /// The time zone of the windows.
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// The ledger's wall-clock time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Users the ledger holds state for.
    pub fn tracked_users(&self) -> usize {
        self.shards.iter().map(|s| s.inner.lock().users.len()).sum()
    }

    /// The days to load a [`QuotaSeed`] for: today (`YYYY-MM-DD`, local) and the first of this
    /// month, as the store's `quota_seed` takes them.
    pub fn seed_days(&self) -> (String, String) {
        let today = calendar::local_day(self.clock.now_ms(), &self.tz);
        let month = calendar::month_start(&today);
        (today, month)
    }

    /// Start from the store: each seeded user's controls, and their recorded usage of today and
    /// this month (replacing what the ledger counted). Totals for a day or month that is no
    /// longer current (midnight passed since the seed was loaded) are skipped. Call before
    /// serving; returns the users seeded.
    pub fn seed(&self, seed: &QuotaSeed) -> usize {
        let (today, month) = self.seed_days();
        let day_current = seed.day == today;
        let month_current = seed.month_start == month;
        if !day_current || !month_current {
            tracing::warn!(
                seed_day = %seed.day,
                today = %today,
                "quota seed loaded for an earlier day or month: its totals for it are skipped"
            );
        }
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let now_ms = self.clock.now_ms();
        for (id, user) in &seed.users {
            let (cell, calendar, _) = self.cell(&Arc::from(id.as_str()), now_ms);
            let mut state = cell.lock();
            state.roll(&calendar);
            state.controls = user.controls.clone();
            if day_current {
                state.day.used_tokens = count(user.day.tokens);
                state.day.used_cost = count(user.day.cost_nano_usd);
            }
            if month_current {
                state.month.used_tokens = count(user.month.tokens);
                state.month.used_cost = count(user.month.cost_nano_usd);
            }
        }
        seed.users.len()
    }

    /// `user`'s controls as the ledger holds them (the defaults for a user never seen).
    pub fn controls(&self, user: &str) -> UserControls {
        let (cell, _, _) = self.lookup(user, self.clock.now_ms());
        cell.map(|c| c.lock().controls.clone()).unwrap_or_default()
    }

    /// Make `controls` the user's from their next call on, in memory only — for a caller that
    /// committed the change to the store first. Calls already admitted are not affected.
    pub fn apply_controls(&self, user: &str, controls: &UserControls) {
        let now_ms = self.clock.now_ms();
        let (cell, calendar, _) = self.cell(&Arc::from(user), now_ms);
        let mut state = cell.lock();
        state.roll(&calendar);
        if state.controls.overrides != controls.overrides {
            // A lease granted under other limits: the next call asks again (see set_defaults).
            state.must_ask = true;
        }
        state.controls = controls.clone();
    }

    fn shard(&self, user: &str) -> &Shard<R> {
        // `SHARDS` is a power of two: the low bits pick the shard.
        let hash = self.hasher.hash_one(user);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "only the low bits are used"
        )]
        &self.shards[(hash as usize) & (SHARDS - 1)]
    }

    /// The user's cell (created on first sight), the current windows and the defaults.
    fn cell(&self, user: &Arc<str>, now_ms: i64) -> (Cell<R>, Windows, Limits) {
        let mut shard = self.shard(user).inner.lock();
        let calendar = shard.calendar(now_ms, &self.tz);
        let defaults = shard.defaults;
        let cell = match shard.users.get(&**user) {
            Some(cell) => Arc::clone(cell),
            None => {
                let cell = Arc::new(Mutex::new(UserState::new(
                    &defaults,
                    &calendar,
                    &self.rate_clock,
                )));
                shard.users.insert(Arc::clone(user), Arc::clone(&cell));
                cell
            }
        };
        (cell, calendar, defaults)
    }

    /// Like `cell`, without creating the user.
    fn lookup(&self, user: &str, now_ms: i64) -> (Option<Cell<R>>, Windows, Limits) {
        let mut shard = self.shard(user).inner.lock();
        let calendar = shard.calendar(now_ms, &self.tz);
        (shard.users.get(user).cloned(), calendar, shard.defaults)
    }
}

impl<R: RateClock> ShardInner<R> {
    /// The current windows; they move forward only (a wall clock stepped back stays in the
    /// later window until it catches up).
    fn calendar(&mut self, now_ms: i64, tz: &TimeZone) -> Windows {
        if now_ms >= self.calendar.day_end {
            let next = Windows::at(now_ms, tz);
            if next.day_start > self.calendar.day_start {
                self.calendar = next;
            }
        }
        self.calendar
    }
}

impl<C: Clock, R: RateClock> fmt::Debug for Ledger<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("timezone", &self.tz.iana_name())
            .field("defaults", &self.defaults())
            .field("tracked_users", &self.tracked_users())
            .finish_non_exhaustive()
    }
}

// === reservations ===

/// An admitted call's reservation of its [`Hold`]. Settle it with the call's actual usage when the
/// call ends; dropping it unsettled releases it as if the call consumed nothing (for paths
/// where nothing was forwarded). `Send + 'static`, so it can live in a response body.
#[must_use = "dropping a reservation releases it as if the call consumed nothing"]
pub struct Reservation<R: RateClock = DefaultClock> {
    cell: Cell<R>,
    hold: Hold,
    /// The windows the call was admitted in, by their start.
    day_start: i64,
    month_start: i64,
    admitted_ms: i64,
    open: bool,
}

impl<R: RateClock> Reservation<R> {
    /// What was reserved.
    pub fn hold(&self) -> Hold {
        self.hold
    }

    /// When the call was admitted (the ledger's clock): the usage row's `ts`, so that the row's
    /// daily rollup and the counters agree on the day.
    pub fn admitted_at(&self) -> Timestamp {
        timestamp(self.admitted_ms)
    }

    /// The call ended having consumed `tokens` (input + output) costing `cost_nano_usd` (0 when
    /// unpriced): release the reservation and record the usage in the day and month the call
    /// was admitted in. Usage above the hold is recorded as it is.
    pub fn settle(mut self, tokens: u64, cost_nano_usd: u64) {
        self.close(tokens, cost_nano_usd);
    }

    fn close(&mut self, tokens: u64, cost: u64) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        let mut state = self.cell.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.day.settle(self.day_start, self.hold, tokens, cost);
        state
            .month
            .settle(self.month_start, self.hold, tokens, cost);
    }
}

impl<R: RateClock> Drop for Reservation<R> {
    fn drop(&mut self) {
        self.close(0, 0);
    }
}

impl<R: RateClock> fmt::Debug for Reservation<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("hold", &self.hold)
            .field("admitted_at", &self.admitted_at())
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}
