//! Limits shared by several gateways: what a ledger asks of the shared store when its lease on a
//! user's budget does not cover a call, what it gets back, and what it gives back later.
//!
//! ```text
//! Ledger::try_admit(user, hold)
//!   ├─ the user's leases cover the hold → admitted in memory (the common case)
//!   └─ Admission::Short(LeaseAsk)       → the caller asks the store (one round trip):
//!        Store::lease(&ask) → LeaseGrant → Ledger::admit_granted(ask, grant)
//!          fit      granted ≥ hold in each budget (and some more for the next calls)
//!          last     some room in each budget, not all of the hold: the hold is granted all
//!                   the same, and every gateway's next ask is refused until this call's row
//!                   shows what it used — the one call past the limit, as on one gateway
//!          refused  a budget has no room: 429, as on one gateway
//! ```
//!
//! A lease is kept per window (the day and the month in `limits.timezone`) and per measure
//! (tokens, cost), four budgets in all, in the [`Slot`] order the store's arrays use. This
//! module holds the vocabulary only: it does no I/O (the store grants), and the ledger applies.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::{LimitKind, Window};

/// The four budgets a call draws on, in the order of the store's arrays.
pub const SLOTS: [Slot; 4] = [
    Slot(Window::Day, LimitKind::Tokens),
    Slot(Window::Day, LimitKind::Cost),
    Slot(Window::Month, LimitKind::Tokens),
    Slot(Window::Month, LimitKind::Cost),
];

/// One budget: a window and what it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub Window, pub LimitKind);

/// Four values, one per [`SLOTS`] entry.
pub type PerSlot<T> = [T; 4];

/// What a gateway asks the store for when its leases do not cover a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseAsk {
    pub user: std::sync::Arc<str>,
    /// The day's and the month's key, as the rollups name them (`YYYY-MM-DD`, `YYYY-MM-01`).
    pub day: String,
    pub month: String,
    /// What the call holds in each budget.
    pub hold: PerSlot<u64>,
    /// The unspent part of this gateway's leases, given back first (taken out of memory).
    pub back: PerSlot<u64>,
    /// The limits in force; `None` = no budget.
    pub limit: PerSlot<Option<u64>>,
    /// How much more than the hold this gateway would like, so that the next calls need no
    /// round trip: a sixteenth of the limit, at least four holds.
    pub want: PerSlot<u64>,
    /// The windows the ask was made in (their starts, unix ms).
    pub(super) day_start: i64,
    pub(super) month_start: i64,
}

/// The store's answer to a [`LeaseAsk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub verdict: Verdict,
    /// Added to this gateway's leases.
    pub granted: PerSlot<u64>,
    /// What the written rows count in each budget.
    pub used: PerSlot<u64>,
    /// What the other gateways' leases and this gateway's own calls in flight hold.
    pub elsewhere: PerSlot<u64>,
}

/// How a [`LeaseGrant`] came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every budget had room for the hold.
    Fit,
    /// Every budget had some room, not all of the hold: the hold was granted all the same,
    /// and the call may go over (the store refuses everyone's next ask meanwhile).
    Last,
    /// The budget of this slot (an index into [`SLOTS`]) had no room.
    Refused(usize),
}

/// Why [`super::Ledger::try_admit`] did not admit a call.
#[derive(Debug)]
pub enum Admission {
    /// Refused; nothing to ask anyone.
    Denied(super::Denied),
    /// The leases do not cover the call: ask the store, then
    /// [`super::Ledger::admit_granted`].
    Short(Box<LeaseAsk>),
}

impl From<super::Denied> for Admission {
    fn from(d: super::Denied) -> Admission {
        Admission::Denied(d)
    }
}

/// Unspent lease given back by a gateway whose user went idle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseReturn {
    pub user: std::sync::Arc<str>,
    pub day: String,
    pub month: String,
    pub back: PerSlot<u64>,
}

/// The state of a ledger whose limits are shared ([`super::Ledger::share`]).
#[derive(Debug)]
pub struct Shared {
    pub fence: Fence,
}

impl Shared {
    pub fn new(fence: Fence) -> Shared {
        Shared { fence }
    }
}

/// Whether this gateway's leases still count: the store renews them with every heartbeat, and
/// the other gateways stop counting them when the renewals stop. The fence lapses a quarter of
/// the lease time before that, on this gateway's own monotonic clock, so a gateway cut off from
/// the database stops spending its leases before anyone else may hand them out again.
#[derive(Debug)]
pub struct Fence {
    origin: Instant,
    /// Until when (ms since `origin`) the leases hold; `i64::MAX` = always (tests).
    until_ms: AtomicI64,
}

impl Fence {
    /// A fence that has not been renewed yet: leases do not hold until the first renewal.
    pub fn new() -> Fence {
        Fence {
            origin: Instant::now(),
            until_ms: AtomicI64::new(0),
        }
    }

    /// A fence that always holds (one gateway in tests).
    pub fn always() -> Fence {
        Fence {
            origin: Instant::now(),
            until_ms: AtomicI64::new(i64::MAX),
        }
    }

    /// A renewal sent at `sent` succeeded: the leases hold for `valid` from then.
    pub fn renew(&self, sent: Instant, valid: Duration) {
        let until = sent.saturating_duration_since(self.origin) + valid;
        let until = i64::try_from(until.as_millis()).unwrap_or(i64::MAX);
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// The leases no longer hold (another process took this gateway's name).
    pub fn lapse(&self) {
        self.until_ms.store(0, Ordering::Release);
    }

    pub fn holds(&self) -> bool {
        let now = i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        now < self.until_ms.load(Ordering::Acquire)
    }
}

impl Default for Fence {
    fn default() -> Fence {
        Fence::new()
    }
}
