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
//! **Limits in force** are the `[limits]` defaults ([`Limits::from_config`]) with the user's
//! overrides on top ([`UserOverrides`], `None` = default; an override always wins, higher or
//! lower). An override of 0 tokens or 0 USD refuses every call with a quota refusal (429) until
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
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
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
pub use controls::{
    Change, InvalidPatch, OverridesPatch, QuotaSeed, SeedTotals, SeedUser, UserControls,
    UserOverrides, validate_patch,
};

pub mod controls;
#[cfg(test)]
mod tests;

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
    limiter: Limiter<R>,
    /// The rate `limiter` was built for; rebuilt when the rate in force changes.
    limiter_rpm: NonZeroU32,
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
            limiter: RateLimiter::direct_with_clock(Quota::per_minute(rpm), rate_clock.clone()),
            limiter_rpm: rpm,
        }
    }

    fn roll(&mut self, calendar: &Windows) {
        self.day.roll(calendar.day_start, calendar.day_end);
        self.month.roll(calendar.month_start, calendar.month_end);
    }

    fn status(&self, defaults: &Limits) -> QuotaStatus {
        let limits = defaults.with_overrides(&self.controls.overrides);
        QuotaStatus {
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
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    /// The limits in force: defaults with the user's overrides applied.
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
        }
    }

    /// Admit a call by `user` that may consume `hold`, or say why not. Checks, in order:
    /// blocked, quota (month, then day; tokens, then cost), calls in flight, request rate. An
    /// admitted call reserves `hold` in the current day and month and counts as in flight
    /// until its [`Reservation`] settles or is dropped. Memory only; allocates only for a user
    /// seen for the first time (or for a refusal's reason).
    pub fn admit(&self, user: &Arc<str>, hold: Hold) -> Result<Reservation<R>, Denied> {
        let now_ms = self.clock.now_ms();
        let (cell, calendar, defaults) = self.cell(user, now_ms);
        let mut state = cell.lock();
        state.roll(&calendar);
        if state.controls.blocked {
            return Err(Denied::Blocked {
                reason: state.controls.blocked_reason.clone(),
            });
        }
        let limits = defaults.with_overrides(&state.controls.overrides);
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
            state.limiter = RateLimiter::direct_with_clock(
                Quota::per_minute(limits.requests_per_minute),
                self.rate_clock.clone(),
            );
            state.limiter_rpm = limits.requests_per_minute;
        }
        if let Err(not_until) = state.limiter.check() {
            let wait = not_until.wait_time_from(self.rate_clock.now());
            return Err(Denied::Rate {
                limit_per_minute: limits.requests_per_minute.get(),
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            });
        }
        state.in_flight = state.in_flight.saturating_add(1);
        state.day.reserve(hold);
        state.month.reserve(hold);
        let (day_start, month_start) = (state.day.start_ms, state.month.start_ms);
        drop(state);
        Ok(Reservation {
            cell,
            hold,
            day_start,
            month_start,
            admitted_ms: now_ms,
            open: true,
        })
    }

    /// `user`'s quota now: usage, reservations, limits in force, what remains and when each
    /// window resets. A user never seen gets the defaults and zeros (and is not added).
    pub fn status(&self, user: &str) -> QuotaStatus {
        let now_ms = self.clock.now_ms();
        let (cell, calendar, defaults) = self.lookup(user, now_ms);
        match cell {
            Some(cell) => {
                let mut state = cell.lock();
                state.roll(&calendar);
                state.status(&defaults)
            }
            None => {
                let limits = defaults;
                QuotaStatus {
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
    /// are kept; a user whose rate changes starts with a full burst.
    pub fn set_defaults(&self, defaults: Limits) {
        for shard in &*self.shards {
            shard.inner.lock().defaults = defaults;
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
